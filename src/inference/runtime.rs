//! Loading the ONNX Runtime shared library.
//!
//! Candor links ONNX Runtime dynamically (`ort`'s `load-dynamic`) so that no
//! build step downloads binaries: the library comes from the official
//! `onnxruntime` wheel on PyPI (`make ort`). The library is process-global, so
//! it is loaded once and every later call is a no-op.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use ort::environment::Environment;

/// The ONNX Runtime release this build is written against (`ort` api-31).
pub const ORT_VERSION: &str = "1.31.1";

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime {ORT_VERSION} was not found at {0}. Get it with `make ort` (it downloads the \
         onnxruntime=={ORT_VERSION} wheel from PyPI and extracts libonnxruntime.so.{ORT_VERSION} into .ort/), \
         then point Candor at it with --ort-lib or CANDOR_ORT_LIB if it lives elsewhere"
    )]
    Missing(PathBuf),
    #[error("ONNX Runtime has not been loaded yet")]
    NotInitialised,
    #[error("ONNX Runtime at {path} could not be loaded: {reason}")]
    Load { path: PathBuf, reason: String },
}

static ENVIRONMENT: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();

/// Loads ONNX Runtime from `path` and creates the global environment. Only
/// the first call's path counts.
pub fn init(path: &Path) -> Result<(), RuntimeError> {
    ENVIRONMENT
        .get_or_init(|| {
            if !path.is_file() {
                return Err(RuntimeError::Missing(path.to_path_buf()));
            }
            let load = |reason: String| RuntimeError::Load {
                path: path.to_path_buf(),
                reason,
            };
            ort::init_from(path)
                .map_err(|e| load(e.to_string()))?
                .with_name("candor")
                .with_telemetry(false)
                .build()
                .map_err(|e| load(e.to_string()))
        })
        .as_ref()
        .map(|_| ())
        .map_err(Clone::clone)
}

/// The environment sessions are created in, once [`init`] has succeeded.
pub fn environment() -> Result<&'static Environment, RuntimeError> {
    match ENVIRONMENT.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(e)) => Err(e.clone()),
        None => Err(RuntimeError::NotInitialised),
    }
}
