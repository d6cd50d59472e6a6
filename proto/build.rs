//! Compiles the .proto files with the vendored protoc, so a fresh machine needs nothing installed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY (edition 2021: set_var is safe): build scripts are single-threaded.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/ray.proto");
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["proto/ray.proto"], &["proto"])?;
    Ok(())
}
