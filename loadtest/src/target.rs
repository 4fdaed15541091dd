//! The system under test (`--target`): pm, Redis streams or beanstalkd, and where it listens.

/// A system under test and where it listens.
#[derive(Debug, Clone)]
pub enum Target {
    /// pm-scheduler.
    Pm {
        /// HOST:PORT.
        addr: String,
        /// Queue.
        queue: String,
        /// Token for Hello (empty: none).
        token: String,
    },
    /// Redis streams.
    Redis {
        /// HOST:PORT.
        addr: String,
        /// Stream name.
        stream: String,
    },
    /// beanstalkd.
    Beanstalk {
        /// HOST:PORT.
        addr: String,
        /// Tube.
        tube: String,
    },
}

impl Target {
    pub(crate) fn parse(url: &str, queue: &str, token: &str) -> Result<Target, String> {
        let (scheme, addr) = url.split_once("://").unwrap_or(("pm", url));
        if addr.is_empty() || addr.contains('/') {
            return Err(format!("--target {url:?}: expected SCHEME://HOST:PORT"));
        }
        let (addr, q) = (addr.to_string(), queue.to_string());
        match scheme {
            "pm" => Ok(Target::Pm { addr, queue: q, token: token.to_string() }),
            "redis" => Ok(Target::Redis { addr, stream: q }),
            "beanstalk" | "beanstalkd" => Ok(Target::Beanstalk { addr, tube: q }),
            other => Err(format!("--target {url:?}: unknown system {other:?} (pm, redis or beanstalk)")),
        }
    }

    #[cfg(test)]
    pub(crate) fn parse_test(url: &str, queue: &str) -> Result<Target, String> {
        Self::parse(url, queue, "")
    }

    /// HOST:PORT.
    pub fn addr(&self) -> &str {
        match self {
            Target::Pm { addr, .. } | Target::Redis { addr, .. } | Target::Beanstalk { addr, .. } => addr,
        }
    }

    pub(crate) fn system(&self) -> &'static str {
        match self {
            Target::Pm { .. } => "pm",
            Target::Redis { .. } => "redis",
            Target::Beanstalk { .. } => "beanstalkd",
        }
    }
}
