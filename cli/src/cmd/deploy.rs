//! The app deployer.

pub mod spec;
