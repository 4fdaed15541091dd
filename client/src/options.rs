//! [`ConnectOptions`]: every knob of a client connection, with documented defaults.

use std::sync::Arc;
use std::time::Duration;

use pm_protocol::pb::ReclaimItem;
use pm_protocol::Role;

/// Lists the tasks an agent still runs (task id, the attempt it runs, the lease id it last held). See
/// [`ConnectOptions::reclaim`].
pub type ReclaimProvider = Arc<dyn Fn() -> Vec<ReclaimItem> + Send + Sync>;

/// A [`ReclaimProvider`] with a `Debug` impl, so the options stay printable.
#[derive(Clone)]
pub(crate) struct Reclaimer(pub(crate) ReclaimProvider);

impl std::fmt::Debug for Reclaimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReclaimProvider")
    }
}

/// How to connect. Build with [`ConnectOptions::new`] and the setters.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub(crate) role: Role,
    pub(crate) client_id: String,
    pub(crate) token: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) reconnect: bool,
    pub(crate) max_backoff: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) queues: Vec<String>,
    pub(crate) capabilities: Vec<String>,
    pub(crate) max_frame_bytes: usize,
    pub(crate) reclaim: Option<Reclaimer>,
    pub(crate) failover: Option<(Vec<String>, Duration)>,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl ConnectOptions {
    /// Defaults for `role`: connect timeout 5 s, request timeout 30 s, reconnect on with backoff up to 5 s,
    /// ping every 30 s, max frame 4 MiB, client id `pm-client`.
    pub fn new(role: Role) -> Self {
        ConnectOptions {
            role,
            client_id: "pm-client".into(),
            token: String::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            reconnect: true,
            max_backoff: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
            queues: Vec::new(),
            capabilities: Vec::new(),
            max_frame_bytes: pm_protocol::limits::DEFAULT_MAX_FRAME_BYTES,
            reclaim: None,
            failover: None,
            tls: None,
        }
    }

    /// Connects over TLS with this config (see [`crate::tls::client_config`]); the server's certificate must
    /// name the host of the address connected to. Default: plain TCP.
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Producer defaults.
    pub fn producer() -> Self {
        Self::new(Role::Producer)
    }

    /// Agent defaults.
    pub fn agent() -> Self {
        Self::new(Role::Agent)
    }

    /// Admin defaults.
    pub fn admin() -> Self {
        Self::new(Role::Admin)
    }

    /// Peer-node defaults (a scheduler node taking work for its agents; see `ROLE_PEER`).
    pub fn peer() -> Self {
        Self::new(Role::Peer)
    }

    /// Name shown in server logs.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Bearer token sent in Hello.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// Time allowed to connect and finish the handshake.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Time allowed for each request's reply.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Reconnect after the connection breaks (default on). Requests in flight fail with `Disconnected`.
    pub fn reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

    /// Longest wait between reconnect attempts.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Ping interval that keeps idle connections open through the server's idle timeout.
    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.ping_interval = d;
        self
    }

    /// Agents: queues consumed (informational; credits name the queue).
    pub fn queues(mut self, q: Vec<String>) -> Self {
        self.queues = q;
        self
    }

    /// Agents: executors this agent can run.
    pub fn capabilities(mut self, c: Vec<String>) -> Self {
        self.capabilities = c;
        self
    }

    /// Largest frame this client accepts or sends.
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.max_frame_bytes = n;
        self
    }

    /// Reconnects to `fallbacks` too (alternating with the primary address, in order) once the primary has
    /// been unreachable for `after`. For an agent in a cluster: the other members, so it keeps working while
    /// its home node is down. Tasks it ran for the lost node cannot be reclaimed elsewhere (the reclaim says
    /// so and the agent stops them; the node delivers them again when it returns), so `after` should exceed
    /// a node's usual restart time.
    pub fn failover(mut self, fallbacks: Vec<String>, after: Duration) -> Self {
        self.failover = Some((fallbacks, after));
        self
    }

    /// Agents: reclaim running tasks after a reconnect. At each reconnect, right after the handshake and
    /// before anything else is sent (credits granted again, requests queued meanwhile such as an `Extend`
    /// quoting an old lease id), the connection calls `provider` and, if it lists any task, sends `Reclaim`
    /// and waits for the reply (at most the request timeout; without a reply it reconnects and tries again).
    /// The results are pushed as [`AgentEvent::Reclaimed`](crate::AgentEvent::Reclaimed) before any other
    /// event or reply of the new connection, and [`Client::reclaims_delivered`](crate::Client::reclaims_delivered)
    /// counts them. Without a provider a reconnect only grants the credits again.
    pub fn reclaim(mut self, provider: ReclaimProvider) -> Self {
        self.reclaim = Some(Reclaimer(provider));
        self
    }
}
