//! [`ConnectOptions`]: every knob of a client connection, with documented defaults.

use std::time::Duration;

use pm_protocol::Role;

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
        }
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
}
