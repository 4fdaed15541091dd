//! The commands of `pmctl`.

pub mod apps;
pub mod deploy;
pub mod status;
