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
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::ProtoCodec")
        .compile_fds(features_as_entries(fds))?;
    Ok(())
}

/// The descriptors the Rust code is generated from, with each feature map
/// (`map<string, FeatureValue> features`) read as the list of entries it is
/// on the wire. Building a map from ~80 entries cost a scoring call more
/// than the model did; the gateway looks each name up in its schema once
/// anyway. The three maps share one entry type, and clients still see
/// maps: reflection serves the descriptors as written.
fn features_as_entries(mut fds: prost_types::FileDescriptorSet) -> prost_types::FileDescriptorSet {
    const SHARED: &str = ".candor.v1.ScoreRequest.FeaturesEntry";
    for file in fds.file.iter_mut().filter(|f| f.package() == "candor.v1") {
        let mut undocumented = Vec::new();
        for (m, message) in file.message_type.iter_mut().enumerate() {
            if !matches!(
                message.name(),
                "ScoreRequest" | "BatchRow" | "ExplainRequest"
            ) {
                continue;
            }
            let owner = message.name().to_owned();
            message.nested_type.retain_mut(|nested| {
                if nested.name() != "FeaturesEntry" {
                    return true;
                }
                if let Some(options) = nested.options.as_mut() {
                    options.map_entry = None;
                }
                owner == "ScoreRequest"
            });
            for field in message.field.iter_mut().filter(|f| f.name() == "features") {
                field.type_name = Some(SHARED.to_owned());
            }
            if let Some(n) = message
                .nested_type
                .iter()
                .position(|t| t.name() == "FeaturesEntry")
            {
                // A map's entry type is synthetic: it has no place in the
                // source, which the generator looks every message up by.
                let at = vec![4, m as i32, 3, n as i32];
                undocumented.extend([
                    at.clone(),
                    [&at[..], &[2, 0]].concat(),
                    [&at[..], &[2, 1]].concat(),
                ]);
            }
        }
        if let Some(info) = file.source_code_info.as_mut() {
            info.location.extend(undocumented.into_iter().map(|path| {
                prost_types::source_code_info::Location {
                    path,
                    span: vec![0, 0, 0],
                    ..Default::default()
                }
            }));
            info.location.sort_by(|a, b| a.path.cmp(&b.path));
        }
    }
    fds
}
