//! Per-decision feature attributions.
//!
//! Attributions are computed from the model as ONNX Runtime runs it: tree
//! ensembles are read straight from the ONNX graph ([`trees`]) and explained
//! with exact TreeSHAP ([`treeshap`]).

pub mod trees;
pub mod treeshap;

/// The ONNX IR schema, for reading model graphs. This is a file format, not
/// the gRPC API: its types never cross the crate's boundary.
#[allow(clippy::all, missing_docs)]
pub(crate) mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
