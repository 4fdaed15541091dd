//! Configuration: flags, `PM_*` environment variables (a flag wins over its variable), validated before any
//! port is bound. Every limit is here; `docs/config.md` lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use pm_protocol::limits::{DEFAULT_MAX_BATCH, DEFAULT_MAX_FRAME_BYTES, MIN_MAX_FRAME_BYTES};
use pm_task::ring::Ring;

use crate::store::FsyncMode;

mod parse;
pub use parse::{parse_client_role, parse_duration, parse_fsync, parse_queue_limit};

/// Which storage backend keeps the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// Our segmented write-ahead log with group commit (default).
    Wal,
    /// The sled embedded database.
    Sled,
}

/// Log output format (shared by every binary: `pm-logging`).
pub use pm_logging::LogFormat;

/// `pm-scheduler`: a pipeline-manager scheduler node.
///
/// Accepts tasks from producers, writes each to a durable log before acknowledging it, leases tasks to agents
/// and redelivers them until they are acknowledged.
#[derive(Debug, Clone, Parser)]
#[command(name = "pm-scheduler", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port; the bound address is printed as `listening on ADDR`.
    #[arg(long, env = "PM_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Address of the HTTP endpoint, or `off`: `/metrics`, `/healthz`, `/readyz` (no token), and the HTTP API
    /// under `/api/` (applications, submits by parameters, task status, queues, dead letters; tokens as on
    /// the protocol, and without token files only on a loopback address or with --insecure; see
    /// docs/http-api.md). Port 0 picks a free port; the bound address is printed as `http listening on ADDR`,
    /// after the `listening on ADDR` line.
    #[arg(long, env = "PM_HTTP_LISTEN", default_value = "127.0.0.1:7072")]
    pub http_listen: String,
    /// Time an HTTP client has to send its request headers, ms (slowloris bound).
    #[arg(long, env = "PM_HTTP_HEADER_TIMEOUT_MS", default_value_t = 5000)]
    pub http_header_timeout_ms: u64,
    /// Open HTTP connections at once; more wait to be accepted.
    #[arg(long, env = "PM_HTTP_MAX_CONNECTIONS", default_value_t = 64)]
    pub http_max_connections: usize,
    /// Address of the probe endpoint, or `off`: only `/healthz` and `/readyz`, on a listener of their own with
    /// its own connection limit, so that clients holding every connection of --http-listen (slow or unfinished
    /// requests) never delay a probe. Point the kubelet's probes here. Port 0 picks a free port, printed as
    /// `probe listening on ADDR` after the other `listening` lines.
    #[arg(long, env = "PM_PROBE_LISTEN", default_value = "off")]
    pub probe_listen: String,
    /// Open connections at once on --probe-listen; more wait to be accepted (a probe's connection lasts one
    /// request, bounded by --http-header-timeout-ms).
    #[arg(long, env = "PM_PROBE_MAX_CONNECTIONS", default_value_t = 16)]
    pub probe_max_connections: usize,
    /// Data directory (created if missing). One process per directory.
    #[arg(long, env = "PM_DATA", default_value = "./pm-data")]
    pub data: PathBuf,
    /// Storage backend.
    #[arg(long, env = "PM_STORE", value_enum, default_value_t = StoreKind::Wal)]
    pub store: StoreKind,
    /// When to fsync: `always` (before every ack; default), `batch=<ms>` (gather up to ms, then fsync before
    /// acking), or `none` (never fsync: UNSAFE, a machine crash loses acknowledged tasks).
    #[arg(long, env = "PM_FSYNC", default_value = "always", value_parser = parse_fsync)]
    pub fsync: FsyncMode,
    /// Lease a new task only once its submit is durable. By default it is leased as soon as it is written,
    /// while its sync runs (the `SubmitAck` waits for the sync either way): one sync less on every task's
    /// path, and an agent may then start a task whose submit fails after all (a failed sync, or a machine
    /// crash before it ended), which its producer submits again (docs/architecture.md).
    #[arg(long, env = "PM_LEASE_AFTER_SYNC")]
    pub lease_after_sync: bool,
    /// Shard actors (0 = one per core).
    #[arg(long, env = "PM_SHARDS", default_value_t = 0)]
    pub shards: usize,
    /// Node name announced in Welcome (default: `$HOSTNAME`, else `node-0`).
    #[arg(long, env = "PM_NODE_ID")]
    pub node_id: Option<String>,
    /// Cluster mode: every scheduler node's address, in ordinal order, comma-separated (e.g. the StatefulSet
    /// names `scheduler-0.scheduler:7070,scheduler-1.scheduler:7070`). Task keys are placed on them by
    /// rendezvous hashing; members are only appended, never reordered. Empty = a single node.
    /// `dns:NAME` instead reads them at start from the DNS SRV records NAME (a headless Service's, e.g.
    /// `dns:_pm._tcp.scheduler.NAMESPACE.svc.cluster.local`), in ordinal order; needs --advertise
    /// (docs/cluster.md#membership-from-dns).
    #[arg(long, env = "PM_MEMBERS", value_delimiter = ',', num_args = 0..)]
    pub members: Vec<String>,
    /// Cluster mode: this node's own entry in `--members` (default: `--listen`).
    #[arg(long, env = "PM_ADVERTISE")]
    pub advertise: Option<String>,
    /// Cluster mode with `--members dns:NAME`: the DNS server to ask (`IP:PORT`; default: the system's, from
    /// /etc/resolv.conf).
    #[arg(long, env = "PM_MEMBERS_DNS_SERVER")]
    pub members_dns_server: Option<SocketAddr>,
    /// Cluster mode with `--members dns:NAME` and StatefulSet names (`PREFIX-N.REST:PORT`): ordinals below
    /// this are members from the start, even before DNS lists them (the StatefulSet's replicas; 0 = none).
    #[arg(long, env = "PM_MEMBERS_DNS_MIN", default_value_t = 0)]
    pub members_dns_min: u32,
    /// Cluster mode with `--members dns:NAME`: how long a starting node asks again (every second) while the
    /// lookup fails or does not list this node; then it starts with what it found and remembered, if any.
    #[arg(long, env = "PM_MEMBERS_DNS_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub members_dns_wait: Duration,
    /// Cluster mode with `--members dns:NAME`: how often a running node looks the members up again, to warn
    /// when DNS lists members it does not use (the StatefulSet was scaled up: restart the older members).
    /// `0` = never.
    #[arg(long, env = "PM_MEMBERS_DNS_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub members_dns_interval: Duration,
    /// Cluster mode: how often a node whose agents idle looks for backlog at its peers to take work from
    /// (work stealing; `0` = never steal).
    #[arg(long, env = "PM_STEAL_INTERVAL", default_value = "50ms", value_parser = parse_duration)]
    pub steal_interval: Duration,
    /// Cluster mode: replicas of each partition (1: none, each node's tasks live on its own disk). Above 1,
    /// every partition's consensus group runs between its replicas and elects a leader; tasks do not go
    /// through the groups yet (docs/notes/replication.md).
    #[arg(long, env = "PM_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: u32,
    /// Cluster mode with `--replication-factor` above 1: the number of partitions keys fall into, fixed for
    /// the cluster's life.
    #[arg(long, env = "PM_PARTITIONS", default_value_t = pm_task::partition::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// One tick of the partitions' raft clock: a follower that hears nothing from its leader for 10–20 ticks
    /// starts an election, and a leader sends heartbeats every 2.
    #[arg(long, env = "PM_RAFT_TICK", default_value = "50ms", value_parser = parse_duration)]
    pub raft_tick: Duration,
    /// File of producer tokens (one per line, optionally `not-after=<RFC 3339 time>`; reloaded on change).
    /// Once any token file is given, every connection needs a token valid for its role.
    #[arg(long, env = "PM_PRODUCER_TOKEN_FILE")]
    pub producer_token_file: Option<PathBuf>,
    /// File of agent tokens (as `--producer-token-file`).
    #[arg(long, env = "PM_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// File of admin tokens (as `--producer-token-file`).
    #[arg(long, env = "PM_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File of peer-node tokens (cluster mode; this node presents the first unexpired one to its peers).
    #[arg(long, env = "PM_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// Listen on a non-loopback address without any token file (anyone who can connect may submit commands
    /// that agents run).
    #[arg(long, env = "PM_INSECURE")]
    pub insecure: bool,
    /// Serve TLS with this certificate chain (PEM, leaf first; re-read when it changes). Needs --tls-key-file.
    #[arg(long, env = "PM_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, env = "PM_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Mutual TLS: every client must present a certificate signed by a CA of this file (PEM).
    #[arg(long, env = "PM_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Mutual TLS: `ROLE=NAME` (repeatable) gives a client whose certificate has NAME as its subject Common
    /// Name, a DNS name or a URI (exact match) role ROLE (producer, agent, admin or peer) without a token; a
    /// token it sends must be valid for that role. Clients whose certificate matches no rule need a token as
    /// usual.
    #[arg(
        long = "tls-client-role",
        env = "PM_TLS_CLIENT_ROLES",
        value_delimiter = ';',
        value_parser = parse_client_role,
        requires = "tls_client_ca_file"
    )]
    pub tls_client_roles: Vec<(pm_protocol::Role, String)>,
    /// Cluster mode with TLS: the CAs (PEM) that signed the other nodes' certificates; this node presents its
    /// own certificate to them.
    #[arg(long, env = "PM_TLS_CA_FILE", requires = "tls_cert_file")]
    pub tls_ca_file: Option<PathBuf>,
    /// Largest frame accepted or sent, in bytes.
    #[arg(long, env = "PM_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Most tasks in one Submit.
    #[arg(long, env = "PM_MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH)]
    pub max_batch: usize,
    /// Largest task payload, in bytes (must leave room in a frame).
    #[arg(long, env = "PM_MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    pub max_payload_bytes: usize,
    /// Most open connections; more are refused with TOO_MANY_CONNECTIONS.
    #[arg(long, env = "PM_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Most open connections from one source IP address (0 = no limit); more are refused with
    /// TOO_MANY_CONNECTIONS.
    #[arg(long, env = "PM_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// A connection with more than this many bytes of output unwritten (replies, pushed tasks) whose socket
    /// takes nothing for --write-stall-timeout (its peer stopped reading) is closed; an agent's leases return
    /// to their queues at once (0 = no limit).
    #[arg(long, env = "PM_MAX_WRITE_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_write_buffer_bytes: usize,
    /// See --max-write-buffer-bytes. The check runs when the connection wakes (a read, a reply, a push); a peer
    /// that sends nothing either is closed by --idle-timeout.
    #[arg(long, env = "PM_WRITE_STALL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_stall_timeout: Duration,
    /// Submits in flight per connection before the server stops reading from it.
    #[arg(long, env = "PM_MAX_INFLIGHT", default_value_t = 1024)]
    pub max_inflight_per_conn: usize,
    /// Credits plus unacked leases one agent connection may hold, over all its queues (0 = no limit); credits
    /// granted past it are dropped and counted as pm_refused_total{reason="lease_cap"}.
    #[arg(long, env = "PM_MAX_LEASES_PER_CONN", default_value_t = 65536)]
    pub max_leases_per_conn: u32,
    /// Time allowed for the Hello frame.
    #[arg(long, env = "PM_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// A connection silent this long is closed (0 = never). Clients ping to stay open.
    #[arg(long, env = "PM_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Lease duration for tasks that name none.
    #[arg(long, env = "PM_DEFAULT_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub default_lease: Duration,
    /// Deliveries before dead-lettering, for tasks that name none.
    #[arg(long, env = "PM_DEFAULT_MAX_ATTEMPTS", default_value_t = 5)]
    pub default_max_attempts: u32,
    /// How long an idempotency key is remembered (across restarts).
    #[arg(long, env = "PM_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_window: Duration,
    /// How long the outcome of a finished task (state, attempts, times, the agent's result) is kept for
    /// `pmctl status` and `Watch`, across restarts (0 = not kept).
    #[arg(long, env = "PM_RESULT_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub result_retention: Duration,
    /// Most outcomes kept by this node; beyond it, the oldest are forgotten first.
    #[arg(long, env = "PM_MAX_RESULTS", default_value_t = 100_000)]
    pub max_results: usize,
    /// Most bytes of kept outcomes held in memory by the node; beyond it, the oldest are forgotten first.
    #[arg(long, env = "PM_MAX_RESULTS_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_results_bytes: usize,
    /// Largest result document an agent may report that is kept with an outcome (a larger one is left out,
    /// and the outcome says so).
    #[arg(long, env = "PM_MAX_RESULT_BYTES", default_value_t = 64 * 1024)]
    pub max_result_bytes: usize,
    /// Most payload bytes of live tasks held in memory by the node, shared by its shards. The payload of a
    /// task queued beyond it stays only in the store and is read back when the task is leased, so a backlog is
    /// bound by disk, not memory (0 = every payload is read back).
    #[arg(long, env = "PM_RESIDENT_PAYLOAD_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub resident_payload_bytes: usize,
    /// Limits of a queue, `NAME:max-per-key=N,rate=R[,burst=B]` (repeat the flag per queue; in the variable,
    /// separate queues with `;`): at most N leases at once per task key (tasks of other keys go on), at most R
    /// leases started per second (bursts of B, default R).
    #[arg(long = "queue-limit", env = "PM_QUEUE_LIMITS", value_delimiter = ';', value_parser = parse_queue_limit)]
    pub queue_limits: Vec<(String, crate::shard::QueueLimits)>,
    /// Most applications the node stores (`pmctl app create`, `POST /api/applications`).
    #[arg(long, env = "PM_MAX_APPS", default_value_t = 1000)]
    pub max_apps: usize,
    /// Most pipelines in one application.
    #[arg(long, env = "PM_MAX_PIPELINES_PER_APP", default_value_t = 100)]
    pub max_pipelines_per_app: usize,
    /// Largest application document (all its pipeline definitions), in bytes; lowered to --max-frame-bytes
    /// less 1 KiB when that is smaller (a document travels in one frame).
    #[arg(long, env = "PM_MAX_APP_BYTES", default_value_t = 1024 * 1024)]
    pub max_app_bytes: usize,
    /// Cluster mode: how often a node asks the other members for the applications they hold and copies the
    /// newer ones (at start too; 0 = only at start). Changes are also sent to every member when made.
    #[arg(long, env = "PM_CATALOG_SYNC_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub catalog_sync_interval: Duration,
    /// Cluster mode: how long a starting node waits for the other members' applications before it serves
    /// (all members are asked at once; one that is down answers at once, one that cannot be reached may take
    /// the 5 s peer timeout). What is not copied by then comes with the next periodic pull.
    #[arg(long, env = "PM_CATALOG_START_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub catalog_start_timeout: Duration,
    /// Largest value of one template parameter, in bytes.
    #[arg(long, env = "PM_MAX_PARAM_BYTES", default_value_t = 64 * 1024)]
    pub max_param_bytes: usize,
    /// Largest request body the HTTP API reads, in bytes (a larger one is refused with 413).
    #[arg(long, env = "PM_HTTP_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub http_max_body_bytes: usize,
    /// Time an HTTP API request has for its body to arrive (408 after it), and then for the node's answer.
    #[arg(long, env = "PM_HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_request_timeout: Duration,
    /// How long a disconnected agent's leases are kept before redelivery (0 = at once).
    #[arg(long, env = "PM_DISCONNECT_GRACE", default_value = "0s", value_parser = parse_duration)]
    pub disconnect_grace: Duration,
    /// After startup, how long (ms) tasks that were probably running when the node stopped (recovered with at
    /// least one attempt) are kept for their agents to reclaim before they are delivered to anyone (0 = off).
    #[arg(long, env = "PM_RECLAIM_GRACE_MS", default_value_t = 5000)]
    pub reclaim_grace_ms: u64,
    /// WAL segment size in bytes (preallocated).
    #[arg(long, env = "PM_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub segment_bytes: u64,
    /// Unsynced WAL bytes after which a thread of its own (`pm-wal-flush`) writes them back with an
    /// `fdatasync`; the commit thread neither waits for it nor counts on it for any acknowledgement. Keeps the
    /// sync that seals a segment short when the log is rarely synced (`--fsync none`). 0 = off.
    #[arg(long, env = "PM_WAL_WRITEBACK_BYTES", default_value_t = 1024 * 1024)]
    pub wal_writeback_bytes: u64,
    /// On SIGTERM/SIGINT: how long to wait for in-flight writes and replies before exiting.
    #[arg(long, env = "PM_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format on stderr: `text` (colours only on a terminal) or `json`, one object per line (level via
    /// `RUST_LOG`, default `info`).
    #[arg(long, env = "PM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Let the kernel back the heap with transparent huge pages. Off by default: khugepaged fills partly used
    /// 2 MiB regions, which made the resident memory of an idle agent connection vary from run to run
    /// (652-1,007 bytes with them, 702-740 without, at 19,000 connections; docs/notes/connections.md).
    #[arg(long, env = "PM_HUGE_PAGES")]
    pub huge_pages: bool,
}

/// A configuration error (the binary exits with 64).
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// `--max-app-bytes`, lowered so that a document fits in one frame.
    pub fn app_bytes(&self) -> usize {
        self.max_app_bytes.min(self.max_frame_bytes.saturating_sub(1024)).max(1)
    }

    /// How many outcomes the store keeps: `--max-results`, or none with `--result-retention 0`.
    pub fn kept_results(&self) -> usize {
        if self.result_retention.is_zero() {
            0
        } else {
            self.max_results
        }
    }

    /// Checks every value and relation between values. Call before binding anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |s: String| Err(ConfigError(s));
        if self.listen_addr().is_err() {
            return err(format!("--listen {:?} is not an address like 127.0.0.1:7070", self.listen));
        }
        if self.http_addr().is_err() {
            return err(format!(
                "--http-listen {:?} is not an address like 127.0.0.1:7072, or `off`",
                self.http_listen
            ));
        }
        if self.http_header_timeout_ms == 0 || self.http_max_connections == 0 {
            return err("--http-header-timeout-ms and --http-max-connections must be at least 1".into());
        }
        if self.probe_addr().is_err() {
            return err(format!(
                "--probe-listen {:?} is not an address like 0.0.0.0:7073, or `off`",
                self.probe_listen
            ));
        }
        if self.probe_max_connections == 0 {
            return err("--probe-max-connections must be at least 1".into());
        }
        if self.max_frame_bytes < MIN_MAX_FRAME_BYTES || self.max_frame_bytes > u32::MAX as usize {
            return err(format!("--max-frame-bytes must be between {MIN_MAX_FRAME_BYTES} and {}", u32::MAX));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes + 1024 > self.max_frame_bytes {
            return err("--max-payload-bytes must be at least 1 and 1 KiB below --max-frame-bytes".into());
        }
        if self.max_batch == 0 || self.max_connections == 0 || self.max_inflight_per_conn == 0 {
            return err("--max-batch, --max-connections and --max-inflight must be at least 1".into());
        }
        if self.replication_factor == 0 {
            return err("--replication-factor must be at least 1".into());
        }
        if self.partitions == 0 || self.partitions > pm_task::partition::MAX_PARTITIONS {
            return err(format!("--partitions must be between 1 and {}", pm_task::partition::MAX_PARTITIONS));
        }
        if self.raft_tick.is_zero() || self.raft_tick > Duration::from_secs(10) {
            return err("--raft-tick must be more than 0 and at most 10s".into());
        }
        if self.default_max_attempts == 0 {
            return err("--default-max-attempts must be at least 1".into());
        }
        if self.default_lease.is_zero() || self.handshake_timeout.is_zero() {
            return err("--default-lease and --handshake-timeout must be more than 0".into());
        }
        if self.max_write_buffer_bytes != 0 && self.max_write_buffer_bytes < self.max_frame_bytes {
            return err("--max-write-buffer-bytes must be 0 or at least --max-frame-bytes".into());
        }
        if self.segment_bytes < 4 * self.max_frame_bytes as u64 {
            return err("--segment-bytes must be at least 4 x --max-frame-bytes".into());
        }
        if self.max_app_bytes == 0 {
            return err("--max-app-bytes must be at least 1".into());
        }
        if self.max_apps == 0 || self.max_pipelines_per_app == 0 || self.max_param_bytes == 0 {
            return err("--max-apps, --max-pipelines-per-app and --max-param-bytes must be at least 1".into());
        }
        if self.http_max_body_bytes == 0 || self.http_request_timeout.is_zero() {
            return err("--http-max-body-bytes and --http-request-timeout must be more than 0".into());
        }
        if self.reclaim_grace_ms > 3_600_000 {
            return err("--reclaim-grace-ms must be at most 3600000 (one hour)".into());
        }
        if self.shards > 256 {
            return err("--shards must be at most 256".into());
        }
        let clustered = match self.members_dns_name() {
            Some(Err(e)) => return Err(e),
            Some(Ok(_)) if self.advertise.is_none() => {
                return err("--members dns:NAME needs --advertise, this node's own name among them".into())
            }
            Some(Ok(_)) => true,
            None => self.cluster()?.0.len() > 1,
        };
        if self.tls_cert_file.is_some() && clustered && self.tls_ca_file.is_none() {
            return err("cluster mode with TLS: give --tls-ca-file, the CA of the other nodes' certificates".into());
        }
        // The token files are read now, not when the node starts: a missing file, a malformed line or a token
        // under 16 characters is a bad value like any other (exit 64), not a failure to start (exit 1).
        crate::auth::Auth::load(self.token_files()).map_err(|e| ConfigError(e.to_string()))?;
        let listen_loopback = self.listen_addr().is_ok_and(|a| a.ip().is_loopback());
        if !self.token_files().enabled() && !listen_loopback && !self.insecure {
            return err(format!(
                "--listen {} is not a loopback address and no token file is set: agents run the commands that \
                 producers submit, so give --producer-token-file, --agent-token-file, --admin-token-file (and \
                 --peer-token-file in a cluster), or --insecure to accept anyone who can connect",
                self.listen
            ));
        }
        Ok(())
    }

    /// The TLS files, if the node serves TLS.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
            client_ca: self.tls_client_ca_file.clone(),
            client_roles: crate::tls::ClientRoles::new(self.tls_client_roles.clone()),
            peer_ca: self.tls_ca_file.clone(),
        })
    }

    /// The token files per role.
    pub fn token_files(&self) -> crate::auth::TokenFiles {
        crate::auth::TokenFiles {
            producer: self.producer_token_file.clone(),
            agent: self.agent_token_file.clone(),
            admin: self.admin_token_file.clone(),
            peer: self.peer_token_file.clone(),
        }
    }

    /// The NAME of `--members dns:NAME`: `None` for a list of addresses, an error when a `dns:` entry is not
    /// the only one.
    pub fn members_dns_name(&self) -> Option<Result<&str, ConfigError>> {
        let dns = self.members.iter().map(|m| m.trim()).find_map(|m| m.strip_prefix("dns:"))?;
        let listed = self.members.iter().filter(|m| !m.trim().is_empty()).count();
        Some(match dns.trim() {
            _ if listed > 1 => Err(ConfigError("--members dns:NAME must be the only entry".into())),
            "" => Err(ConfigError("--members dns: names no DNS name".into())),
            name => Ok(name),
        })
    }

    /// The ring of `--members` and this node's ordinal in it (`None` for a single node).
    pub fn cluster(&self) -> Result<(Ring, Option<usize>), ConfigError> {
        let members = self.members.iter().map(|m| m.trim()).filter(|m| !m.is_empty());
        let ring = Ring::new(members).map_err(|e| ConfigError(format!("--members: {e}")))?;
        if ring.is_empty() {
            return Ok((ring, None));
        }
        let me = self.advertise();
        match ring.ordinal(&me) {
            Some(i) => Ok((ring, Some(i))),
            None => Err(ConfigError(format!(
                "--advertise {me:?} (default: --listen) is not one of --members {:?}",
                ring.members()
            ))),
        }
    }

    /// This node's member address: `--advertise`, else `--listen`.
    pub fn advertise(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.clone())
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        self.listen.parse()
    }

    /// The HTTP endpoint's address; `None` when it is `off`.
    pub fn http_addr(&self) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        match self.http_listen.trim() {
            "off" => Ok(None),
            a => a.parse().map(Some),
        }
    }

    /// The probe endpoint's address; `None` when it is `off`.
    pub fn probe_addr(&self) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        match self.probe_listen.trim() {
            "off" => Ok(None),
            a => a.parse().map(Some),
        }
    }

    /// Shard count with 0 resolved to the number of cores.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }

    /// The node id with its default applied.
    pub fn node_id(&self) -> String {
        self.node_id.clone().or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_else(|| "node-0".into())
    }

    /// Idle timeout with 0 meaning "never".
    pub fn idle_timeout(&self) -> Duration {
        if self.idle_timeout.is_zero() {
            Duration::from_secs(100 * 365 * 86400)
        } else {
            self.idle_timeout
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_catches_bad_relations() {
        let mut c = Config::parse_from(["pm-scheduler"]);
        assert!(c.validate().is_ok());
        c.max_payload_bytes = c.max_frame_bytes;
        assert!(c.validate().is_err());
        let c = Config::parse_from(["pm-scheduler", "--listen", "nowhere"]);
        assert!(c.validate().unwrap_err().to_string().contains("--listen"));
        let c = Config::parse_from(["pm-scheduler", "--http-listen", "off"]);
        assert_eq!(c.http_addr().unwrap(), None);
        let c = Config::parse_from(["pm-scheduler", "--http-listen", "localhost"]);
        assert!(c.validate().unwrap_err().to_string().contains("--http-listen"));
        let c = Config::parse_from(["pm-scheduler", "--members", "a:1,b:1", "--advertise", "b:1"]);
        assert_eq!(c.cluster().unwrap().1, Some(1));
        let c = Config::parse_from(["pm-scheduler", "--members", "a:1,b:1"]);
        assert!(c.validate().unwrap_err().to_string().contains("--advertise"));
        let c = Config::parse_from(["pm-scheduler", "--members", "a:1,a:1", "--advertise", "a:1"]);
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        assert_eq!(Config::parse_from(["pm-scheduler"]).cluster().unwrap().1, None);
        let c = Config::parse_from(["pm-scheduler", "--members", "dns:_pm._tcp.pm.test", "--advertise", "a:1"]);
        assert!(c.validate().is_ok());
        assert_eq!(c.members_dns_name().unwrap().unwrap(), "_pm._tcp.pm.test");
        let c = Config::parse_from(["pm-scheduler", "--members", "dns:_pm._tcp.pm.test"]);
        assert!(c.validate().unwrap_err().to_string().contains("--advertise"));
        let c = Config::parse_from(["pm-scheduler", "--members", "dns:x,a:1", "--advertise", "a:1"]);
        assert!(c.validate().unwrap_err().to_string().contains("only entry"));
        let c = Config::parse_from(["pm-scheduler", "--listen", "0.0.0.0:7070"]);
        assert!(c.validate().unwrap_err().to_string().contains("--insecure"));
        assert!(Config::parse_from(["pm-scheduler", "--listen", "0.0.0.0:7070", "--insecure"]).validate().is_ok());
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "a-token-of-16-chars-or-more\n").unwrap();
        let file = tokens.to_str().unwrap();
        let c = Config::parse_from(["pm-scheduler", "--listen", "0.0.0.0:7070", "--agent-token-file", file]);
        assert!(c.validate().is_ok());
        // The token files are read by validate(): a missing file or a short token is a bad value (exit 64).
        let c = Config::parse_from(["pm-scheduler", "--agent-token-file", "/nonexistent/tokens"]);
        assert!(c.validate().unwrap_err().to_string().contains("/nonexistent/tokens"));
        std::fs::write(&tokens, "short\n").unwrap();
        let c = Config::parse_from(["pm-scheduler", "--agent-token-file", file]);
        assert!(c.validate().unwrap_err().to_string().contains("16 characters"));
    }
}
