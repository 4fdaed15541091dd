//! What every `pmctl` command uses: the [`Failure`] that carries an exit code, the flags that say where the
//! scheduler is ([`ServerArgs`]) and the connections made from them, and [`read_input`] for files given on
//! the command line (`-` reads stdin).
//!
//! Invariant: a command never exits the process nor prints its own error line; it returns a [`Failure`], and
//! `main` prints it as one line on stderr (`pmctl: MESSAGE`) and exits with its code.

use std::fmt::Display;
use std::io::Read;

use pm_client::{Client, Cluster, ClusterOptions, ConnectOptions};

pub use pm_client::cli::EXIT_USAGE;

/// Exit code when the server or the connection failed, or a request was refused or not carried out.
pub const EXIT_FAILED: u8 = 1;
/// Exit code when a task file or application spec is invalid (then nothing was submitted or applied).
pub const EXIT_INVALID: u8 = 65;

/// A failure: the exit code, and the one-line message `main` prints.
#[derive(Debug)]
pub struct Failure(pub u8, pub String);

impl Failure {
    /// A failed request or connection ([`EXIT_FAILED`]).
    pub fn failed(e: impl Display) -> Failure {
        Failure(EXIT_FAILED, e.to_string())
    }

    /// A failed application request: [`EXIT_INVALID`] when the server refused the definition, else
    /// [`EXIT_FAILED`].
    pub fn of_app_request(e: pm_client::Error) -> Failure {
        let code = if e.code() == Some(pm_protocol::ErrorCode::InvalidTask) { EXIT_INVALID } else { EXIT_FAILED };
        Failure(code, e.to_string())
    }
}

/// Where the scheduler is and how to reach it: the global flags of every command.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Scheduler address; for a cluster, one or more member addresses, comma-separated (the first that answers
    /// tells the others). Every command takes a list: what concerns the whole cluster (stats, dead letters,
    /// listings, queues) is asked of every member.
    #[arg(long, global = true, env = "PM_SERVER", default_value = "127.0.0.1:7070")]
    server: String,
    /// Bearer token for the scheduler. A producer token submits, reads and cancels (submit, status, wait, why,
    /// flow, cancel, ls, stats, dead-letter list, cluster status, app list|show); an admin token does that
    /// too, and also changes applications (app create|put-pipeline|delete), queues (queue pause|resume|purge)
    /// and dead letters (dead-letter redrive). See docs/security.md.
    #[arg(long, global = true, env = "PM_TOKEN", default_value = "", hide_env_values = true)]
    token: String,
    #[command(flatten)]
    tls: pm_client::tls::TlsArgs,
}

impl ServerArgs {
    /// The token and TLS settings of the command line applied to `opts` (a bad TLS flag is [`EXIT_USAGE`]).
    /// A command connects once and does not reconnect unless it says so.
    pub fn options(&self, opts: ConnectOptions) -> Result<ConnectOptions, Failure> {
        let opts = opts.client_id("pmctl").token(self.token.clone()).reconnect(false);
        match self.tls.config().map_err(|e| Failure(EXIT_USAGE, e.to_string()))? {
            Some(tls) => Ok(opts.tls(tls)),
            None => Ok(opts),
        }
    }

    /// The `--server` addresses, in order.
    fn seeds(&self) -> Vec<String> {
        self.server.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    }

    /// Connects to the first of the `--server` addresses that answers (for requests any member answers for
    /// the whole cluster, such as applications, which every member holds). If none answers, the error is the
    /// last one's.
    pub async fn connect(&self, opts: ConnectOptions) -> Result<Client, Failure> {
        let opts = self.options(opts)?;
        let mut last = Failure(EXIT_FAILED, "no --server address given".into());
        for seed in self.seeds() {
            match Client::connect(&seed, opts.clone()).await {
                Ok(client) => return Ok(client),
                Err(e) => last = Failure::failed(e),
            }
        }
        Err(last)
    }

    /// Connects to the first of the `--server` addresses that answers, routing by key when it is a cluster.
    pub async fn connect_cluster(&self, opts: ConnectOptions) -> Result<Cluster, Failure> {
        let opts = self.options(opts)?;
        Cluster::connect(&self.seeds(), opts, ClusterOptions::default()).await.map_err(Failure::failed)
    }
}

/// The text of a file named on the command line (`-`: stdin); a file that cannot be read is [`EXIT_FAILED`].
pub fn read_input(file: &str) -> Result<String, Failure> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| Failure(EXIT_FAILED, format!("stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure(EXIT_FAILED, format!("{file}: {e}")))
    }
}
