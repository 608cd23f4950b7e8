//! Generates the prost messages and tonic services from `proto/`.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs
//! no system protoc (and a system one is never picked up by accident).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts run single-threaded: nothing else reads the environment.
    std::env::set_var("PROTOC", protoc);
    let files = [
        "proto/tern/cluster/v1/state.proto",
        "proto/tern/cluster/v1/raft.proto",
        "proto/tern/cluster/v1/forward.proto",
        "proto/tern/cluster/v1/session.proto",
        "proto/tern/cluster/v1/admin.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_build::configure()
        // Payloads and properties are `bytes::Bytes`: a forwarded payload is
        // handed to the broker without a copy.
        .bytes(["."])
        .compile_protos(&files, &["proto"])?;
    Ok(())
}
