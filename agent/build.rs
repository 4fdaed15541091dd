//! Compiles the direct-run gRPC API (`proto/pm/agent/v1/agent.proto`) with `protox` (pure Rust, no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("CARGO_FEATURE_API").is_none() {
        return Ok(());
    }
    let file = "proto/pm/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure().build_transport(false).compile_fds(fds)?;
    Ok(())
}
