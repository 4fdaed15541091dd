//! Compiles the gRPC definitions with `protox` (pure Rust, no `protoc`): the direct-run API
//! (`proto/pm/agent/v1/agent.proto`, feature `api`) and the original executors' service
//! (`proto/exec/exec.proto`, feature `exec-grpc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos =
        [("CARGO_FEATURE_API", "proto/pm/agent/v1/agent.proto"), ("CARGO_FEATURE_EXEC_GRPC", "proto/exec/exec.proto")];
    for (feature, file) in protos {
        if std::env::var_os(feature).is_none() {
            continue;
        }
        println!("cargo:rerun-if-changed={file}");
        let fds = protox::compile([file], ["proto"])?;
        tonic_prost_build::configure().build_transport(false).compile_fds(fds)?;
    }
    Ok(())
}
