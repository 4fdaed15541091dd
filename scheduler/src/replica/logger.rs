//! raft-rs logs through `slog`; this drain hands its records to `tracing`, the node's logging.
//!
//! raft-rs logs every vote and term change at info level, once per group, which for tens of partitions per
//! node is noise: its info becomes our debug. The driver logs the changes an operator needs (a partition's
//! new leader) itself.

use std::fmt::{self, Write as _};

use slog::{Drain, Level, OwnedKVList, Record, KV};

/// The `slog` logger raft-rs's groups are given.
pub(crate) fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}

struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = Pairs(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let (msg, kv) = (record.msg(), kv.0);
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "pm_scheduler::raft", "{msg}{kv}"),
            Level::Warning => tracing::warn!(target: "pm_scheduler::raft", "{msg}{kv}"),
            Level::Info | Level::Debug => tracing::debug!(target: "pm_scheduler::raft", "{msg}{kv}"),
            Level::Trace => tracing::trace!(target: "pm_scheduler::raft", "{msg}{kv}"),
        }
        Ok(())
    }
}

/// Key-value pairs as ` key=value` text.
struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}
