//! Compiles the gRPC API with protox (pure Rust, no `protoc`) and keeps the
//! encoded descriptor set for server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/candor/v1/common.proto",
        "proto/candor/v1/scoring.proto",
        "proto/candor/v1/models.proto",
        "proto/candor/v1/explain.proto",
        "proto/candor/v1/consent.proto",
        "proto/candor/v1/why.proto",
        "proto/candor/v1/admin.proto",
        // The Open Inference Protocol v2, served beside the native API.
        "proto/inference/grpc_service.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    // The ONNX schema: messages only, kept out of the reflection descriptors.
    let onnx = protox::compile(["proto/onnx/onnx-ml.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(onnx)?;
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("candor_descriptor.bin"), fds.encode_to_vec())?;
    // Feature maps decode into BTreeMaps: no rehashing while ~80 entries
    // arrive, and a stable order for logs and clients.
    tonic_prost_build::configure()
        .btree_map(".candor.v1.ScoreRequest.features")
        .btree_map(".candor.v1.BatchRow.features")
        .btree_map(".candor.v1.ExplainRequest.features")
        .compile_fds(fds)?;
    Ok(())
}
