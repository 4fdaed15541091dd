//! Redis streams with a consumer group, for comparison runs.
//!
//! Layout: one stream (`XADD stream * p <payload>`), one consumer group, consumer `i` reads as `c{i}` with
//! `XREADGROUP ... STREAMS stream >`, so every entry goes to exactly one consumer and sits in the group's
//! pending entries list (PEL) until acknowledged.
//!
//! Connections:
//! - a producer owns one [`MultiplexedConnection`]; clones share it and their requests pipeline on it;
//! - a consumer owns a dedicated connection for the blocking `XREADGROUP ... BLOCK`: a blocking command stalls
//!   every request queued behind it on the same socket, so nothing else may use that connection;
//! - its acker owns another multiplexed connection, so acks never wait behind a blocking read.
//!
//! The group is created at id `0` (with `MKSTREAM`) by both [`Backend::producer`] and [`Backend::consumer`]
//! (idempotent, `BUSYGROUP` is ignored), so it exists before the first `XADD` whichever side starts first;
//! creating it at `$` once producers have added entries would make the group skip those entries.
//! [`Redis::reset`] deletes a previous run's stream first: entries a previous run added but never read would
//! otherwise be delivered to the next one (with send times from another clock).
//!
//! What the replies mean (durability):
//! - `XADD` answering an entry id: the entry is in the server's memory. It reaches disk only through
//!   persistence: with `appendonly yes` it is in the AOF buffer, fsynced per `appendfsync` (`everysec` by
//!   default: up to about a second lost on a crash; `always`: fsynced before the reply is sent); with RDB
//!   snapshots only at the next snapshot; with `--save "" --appendonly no` never. Replicas only with `WAIT`.
//! - `XACK` answering `n`: `n` of the ids were in the group's PEL and are removed from it (ids acked twice,
//!   or never delivered to the group, do not count).
//! - `XDEL` answering `n`: `n` entries were removed from the stream.

use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Value};
use bytes::Bytes;

use crate::backend::{Acker, Backend, Consumer, Delivery, LoadError, Producer};

/// Consumer group used by [`Redis::new`].
pub const DEFAULT_GROUP: &str = "pm-loadtest";
/// Field name of the payload in each stream entry.
const FIELD: &str = "p";
/// How long one `XREADGROUP` blocks server-side before answering nil; `next` then simply asks again. Short
/// enough that a dead server is noticed, long enough that an idle consumer costs next to nothing.
const BLOCK_MS: u64 = 1000;
/// Reply deadline for producer and acker requests. The client's default (500 ms) is too tight for a loaded
/// 2-core machine, and a request that times out leaves the load generator unable to tell what happened.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connection (TCP + handshake) deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Redis streams as a task queue: one stream, one consumer group.
#[derive(Debug, Clone)]
pub struct Redis {
    /// `HOST:PORT` of the Redis server.
    pub addr: String,
    /// Stream key the tasks go to.
    pub stream: String,
    /// Consumer group the consumers read through.
    pub group: String,
}

impl Redis {
    /// A backend for `stream` on the server at `addr` (`HOST:PORT`), read through group [`DEFAULT_GROUP`].
    pub fn new(addr: impl Into<String>, stream: impl Into<String>) -> Self {
        Self { addr: addr.into(), stream: stream.into(), group: DEFAULT_GROUP.to_string() }
    }

    fn client(&self) -> Result<Client, LoadError> {
        Client::open(format!("redis://{}/", self.addr)).map_err(|e| self.connect_err(e))
    }

    fn connect_err(&self, e: ::redis::RedisError) -> LoadError {
        LoadError::Connect { addr: self.addr.clone(), message: e.to_string() }
    }

    /// Opens a multiplexed connection; `response_timeout` `None` waits for replies forever (blocking reads).
    async fn connect(&self, response_timeout: Option<Duration>) -> Result<MultiplexedConnection, LoadError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(response_timeout);
        self.client()?.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| self.connect_err(e))
    }

    /// Deletes the stream (and with it the group and any leftovers of a previous run), then creates the group
    /// again. Call before a run, never while producers or consumers are active.
    pub async fn reset(&self) -> Result<(), LoadError> {
        let mut con = self.connect(Some(RESPONSE_TIMEOUT)).await?;
        let _: i64 = ::redis::cmd("DEL").arg(&self.stream).query_async(&mut con).await.map_err(backend_err)?;
        ensure_group(&mut con, &self.stream, &self.group).await
    }
}

/// `XGROUP CREATE stream group 0 MKSTREAM`, treating `BUSYGROUP` (the group exists) as success.
async fn ensure_group(con: &mut MultiplexedConnection, stream: &str, group: &str) -> Result<(), LoadError> {
    let created: Result<(), _> =
        ::redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg("0").arg("MKSTREAM").query_async(con).await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(backend_err(e)),
    }
}

fn backend_err(e: ::redis::RedisError) -> LoadError {
    LoadError::Backend(format!("redis: {e}"))
}

impl Backend for Redis {
    type Producer = RedisProducer;
    type Consumer = RedisConsumer;

    async fn producer(&self, _i: usize) -> Result<RedisProducer, LoadError> {
        let mut con = self.connect(Some(RESPONSE_TIMEOUT)).await?;
        // Producers may start before any consumer: the group must exist (at 0) before the first XADD.
        ensure_group(&mut con, &self.stream, &self.group).await?;
        Ok(RedisProducer { con, stream: self.stream.clone() })
    }

    async fn consumer(&self, i: usize, prefetch: u32) -> Result<RedisConsumer, LoadError> {
        let mut acker_con = self.connect(Some(RESPONSE_TIMEOUT)).await?;
        ensure_group(&mut acker_con, &self.stream, &self.group).await?;
        // No response timeout: the reply to a blocking read comes up to BLOCK_MS later, and a client-side
        // timeout would drop entries the server has already moved to our PEL.
        let reader = self.connect(None).await?;
        Ok(RedisConsumer {
            reader,
            stream: self.stream.clone(),
            group: self.group.clone(),
            name: format!("c{i}"),
            prefetch: usize::try_from(prefetch).unwrap_or(usize::MAX),
            acker: RedisAcker { con: acker_con, stream: self.stream.clone(), group: self.group.clone() },
        })
    }
}

/// Adds entries to the stream; clones share (and pipeline on) one connection.
#[derive(Clone)]
pub struct RedisProducer {
    con: MultiplexedConnection,
    stream: String,
}

impl std::fmt::Debug for RedisProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisProducer").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl Producer for RedisProducer {
    /// One pipeline of `XADD stream * p <payload>`; counts the entries that got an id.
    async fn submit(&self, payloads: Vec<Bytes>) -> Result<usize, LoadError> {
        if payloads.is_empty() {
            return Ok(0);
        }
        let mut pipe = ::redis::pipe();
        // Per-command results: one failed XADD must not hide the others that succeeded.
        pipe.ignore_errors();
        for payload in &payloads {
            pipe.cmd("XADD").arg(&self.stream).arg("*").arg(FIELD).arg(payload.as_ref());
        }
        let mut con = self.con.clone();
        let replies: Vec<Value> = pipe.query_async(&mut con).await.map_err(backend_err)?;
        Ok(replies.iter().filter(|v| matches!(v, Value::BulkString(_) | Value::SimpleString(_))).count())
    }
}

/// Reads entries through the consumer group as consumer `c{i}`.
pub struct RedisConsumer {
    /// Used for the blocking `XREADGROUP` only.
    reader: MultiplexedConnection,
    stream: String,
    group: String,
    name: String,
    /// Caps `COUNT` per read; Redis has no credit window, so this is the only use of the prefetch.
    prefetch: usize,
    acker: RedisAcker,
}

impl std::fmt::Debug for RedisConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConsumer")
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Consumer for RedisConsumer {
    /// The stream entry id.
    type Token = String;
    type Acker = RedisAcker;

    /// `XREADGROUP GROUP g c{i} COUNT max BLOCK 1000 STREAMS stream >`, repeated while it times out. The
    /// stream never ends: a broken connection is an error, never `Ok(None)`.
    async fn next(&mut self, max: usize) -> Result<Option<Vec<Delivery<String>>>, LoadError> {
        let count = max.min(self.prefetch).max(1);
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.group).arg(&self.name).arg("COUNT").arg(count).arg("BLOCK").arg(BLOCK_MS);
        cmd.arg("STREAMS").arg(&self.stream).arg(">");
        loop {
            let reply: Value = cmd.query_async(&mut self.reader).await.map_err(backend_err)?;
            let entries = parse_read_reply(reply)?;
            if !entries.is_empty() {
                // `>` only ever returns entries new to the group, never ones from the PEL.
                let deliveries =
                    entries.into_iter().map(|(id, payload)| Delivery { payload, token: id, redelivered: false });
                return Ok(Some(deliveries.collect()));
            }
        }
    }

    fn acker(&self) -> RedisAcker {
        self.acker.clone()
    }
}

/// Acknowledges and deletes entries, on its own connection.
///
/// Each ack is one pipeline of `XACK stream group id...` and `XDEL stream id...`: the XDEL keeps the stream
/// from growing without bound over a long run (acking only removes the entry from the group's PEL, the entry
/// itself stays in the stream). Deleting right after the ack is only right because this stream has a single
/// consumer group; another group would lose entries it has not read yet.
#[derive(Clone)]
pub struct RedisAcker {
    con: MultiplexedConnection,
    stream: String,
    group: String,
}

impl std::fmt::Debug for RedisAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAcker").field("stream", &self.stream).field("group", &self.group).finish_non_exhaustive()
    }
}

impl Acker for RedisAcker {
    type Token = String;

    /// All `true` when `XACK` counts every id. Otherwise XACK's count does not say which ids failed: the
    /// first `count` are reported `true` and the rest `false`, so totals are exact but attribution is not.
    async fn ack(&self, tokens: Vec<String>) -> Result<Vec<bool>, LoadError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        pipe.cmd("XACK").arg(&self.stream).arg(&self.group).arg(&tokens);
        pipe.cmd("XDEL").arg(&self.stream).arg(&tokens);
        let mut con = self.con.clone();
        let (acked, _deleted): (i64, i64) = pipe.query_async(&mut con).await.map_err(backend_err)?;
        let acked = usize::try_from(acked).unwrap_or(0);
        Ok((0..tokens.len()).map(|i| i < acked).collect())
    }
}

/// Entries `(id, payload)` of an `XREADGROUP` reply on one stream; empty on nil (the block timed out).
///
/// Parsed by hand instead of through `StreamReadReply`: that builds a `HashMap<String, Value>` per entry and
/// copies the payload, where here the payload's buffer becomes the `Bytes` as is.
fn parse_read_reply(reply: Value) -> Result<Vec<(String, Bytes)>, LoadError> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        // RESP2: [[stream, entries]]; RESP3: {stream: entries}.
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop().ok_or_else(|| unexpected("stream", &Value::Nil)),
                other => Err(unexpected("stream", &other)),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(unexpected("XREADGROUP reply", &other)),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else { return Err(unexpected("entries", &entries)) };
        out.reserve(entries.len());
        for entry in entries {
            out.push(parse_entry(entry)?);
        }
    }
    Ok(out)
}

/// `[id, [field, value, ...]]` → `(id, value of FIELD)`.
fn parse_entry(entry: Value) -> Result<(String, Bytes), LoadError> {
    let Value::Array(parts) = entry else { return Err(unexpected("entry", &entry)) };
    let mut parts = parts.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(LoadError::Backend("redis: stream entry is not [id, fields]".into()));
    };
    let id = match id {
        Value::BulkString(b) => {
            String::from_utf8(b).map_err(|_| LoadError::Backend("redis: entry id not UTF-8".into()))?
        }
        Value::SimpleString(s) => s,
        other => return Err(unexpected("entry id", &other)),
    };
    let fields = match fields {
        Value::Array(f) => f,
        // An entry deleted while pending comes back with nil fields; `>` reads never see one.
        other => return Err(unexpected("entry fields", &other)),
    };
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if matches!(&name, Value::BulkString(n) if n == FIELD.as_bytes()) {
            return match value {
                Value::BulkString(v) => Ok((id, Bytes::from(v))),
                other => Err(unexpected("payload", &other)),
            };
        }
    }
    Err(LoadError::Backend(format!("redis: entry {id} has no field {FIELD:?}")))
}

fn unexpected(what: &str, v: &Value) -> LoadError {
    LoadError::Backend(format!("redis: unexpected {what} in XREADGROUP reply: {v:?}"))
}

#[cfg(test)]
mod tests {
    use crate::backend::conformance;
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use super::*;

    /// A `redis-server` on a free loopback port, killed (and its directory removed) on drop.
    struct Server {
        child: Child,
        dir: PathBuf,
        port: u16,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Starts the server, or `None` (with a notice) when `redis-server` is not installed.
    async fn start_server() -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let dir = std::env::temp_dir().join(format!("pm-loadtest-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("NOTICE: redis-server not installed, skipping the Redis backend test");
                let _ = std::fs::remove_dir_all(&dir);
                return None;
            }
            Err(e) => panic!("spawn redis-server: {e}"),
        };
        let server = Server { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }

    #[tokio::test]
    async fn submit_consume_ack_roundtrip() {
        let Some(server) = start_server().await else { return };
        let backend = Redis { group: "g".into(), ..Redis::new(format!("127.0.0.1:{}", server.port), "pm-loadtest") };
        backend.reset().await.expect("reset");

        // Producers first: the group created at 0 must still see entries added before the consumer exists.
        let acker = conformance::round_trip(&backend, 100).await;

        // A second ack of a deleted entry is reported as not accepted.
        assert_eq!(acker.ack(vec!["0-1".to_string()]).await.expect("ack"), vec![false]);

        let mut con = backend.connect(Some(RESPONSE_TIMEOUT)).await.expect("connect");
        let len: i64 = ::redis::cmd("XLEN").arg(&backend.stream).query_async(&mut con).await.expect("XLEN");
        assert_eq!(len, 0, "acked entries are deleted");
        let pending: Value = ::redis::cmd("XPENDING")
            .arg(&backend.stream)
            .arg(&backend.group)
            .query_async(&mut con)
            .await
            .expect("XPENDING");
        let Value::Array(summary) = pending else { panic!("XPENDING reply {pending:?}") };
        assert_eq!(summary.first(), Some(&Value::Int(0)), "nothing pending: {summary:?}");
    }

    #[tokio::test]
    async fn next_waits_for_late_entries() {
        let Some(server) = start_server().await else { return };
        let backend = Redis::new(format!("127.0.0.1:{}", server.port), "late");
        let mut consumer = backend.consumer(3, 10).await.expect("consumer");
        let producer = backend.producer(0).await.expect("producer");
        let reader = tokio::spawn(async move { consumer.next(10).await });
        // Longer than one BLOCK period: `next` must keep asking rather than return empty.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(producer.submit(vec![Bytes::from_static(b"late")]).await.expect("submit"), 1);
        let batch = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("delivered")
            .expect("join")
            .expect("next")
            .expect("some");
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].payload, Bytes::from_static(b"late"));
    }

    #[test]
    fn parse_nil_and_resp2_reply() {
        assert!(parse_read_reply(Value::Nil).expect("nil").is_empty());
        let entry = |id: &str, v: &[u8]| {
            Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                Value::Array(vec![Value::BulkString(b"p".to_vec()), Value::BulkString(v.to_vec())]),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![entry("1-0", b"a\r\n"), entry("1-1", &[0xff])]),
        ])]);
        let got = parse_read_reply(reply).expect("parse");
        assert_eq!(
            got,
            vec![("1-0".into(), Bytes::from_static(b"a\r\n")), ("1-1".into(), Bytes::from_static(&[0xff]))]
        );
        let missing_field = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![Value::Array(vec![Value::BulkString(b"1-0".to_vec()), Value::Array(vec![])])]),
        ])]);
        assert!(parse_read_reply(missing_field).is_err());
        assert!(parse_read_reply(Value::Int(3)).is_err());
    }
}
