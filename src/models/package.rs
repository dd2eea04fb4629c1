//! Loading one model package (`models/<name>/<version>/`) and checking that its
//! parts agree: the manifest with the ONNX graph, and the background and golden
//! rows with the manifest.

use std::{
    collections::{BTreeMap, HashMap},
    fmt, fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use sha2::{Digest, Sha256};

use super::{
    manifest::{FeatureSpec, FeatureType, FieldError, Manifest},
    schema::FeatureSchema,
};
use crate::{
    audit,
    explain::{ExplainError, Explainer},
    inference::{Backend, InferenceError, OrtBackend, runtime::RuntimeError},
};

pub const MANIFEST_FILE: &str = "manifest.toml";
pub const MODEL_FILE: &str = "model.onnx";
pub const BACKGROUND_FILE: &str = "background.csv";
pub const GOLDEN_FILE: &str = "golden.csv";
/// Optional node covers of a tree model, exported from the native model:
/// `tree_id,node_id,cover` keyed by the ONNX graph's ids.
pub const COVERS_FILE: &str = "covers.csv";

/// A package problem, naming the file and, where there is one, the field.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PackageError {
    pub file: PathBuf,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl PackageError {
    fn new(file: &Path, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    fn field(file: &Path, e: FieldError) -> Self {
        Self::new(file, Some(&e.field), e.message)
    }
}

impl From<RuntimeError> for PackageError {
    fn from(e: RuntimeError) -> Self {
        Self {
            file: PathBuf::new(),
            field: None,
            message: e.to_string(),
        }
    }
}

/// Rows of numeric feature values in model column order.
#[derive(Debug, Clone)]
pub struct Rows {
    pub width: usize,
    pub values: Vec<f32>,
}

impl Rows {
    /// Each column's mean over its non-missing values (NaN when a column is
    /// all missing), accumulated in f64.
    /// What stands in for each column when consent masks it: a value the
    /// feature's own schema accepts, typical of the background sample. A
    /// float's mean; an integer's mean, rounded; a category's most common
    /// code (the lowest among equals), since the mean of codes is no
    /// category at all. NaN where the sample holds no value.
    pub fn substitutes(&self, columns: &[FeatureSpec]) -> Vec<f32> {
        columns
            .iter()
            .enumerate()
            .map(|(c, spec)| {
                let known = self
                    .values
                    .iter()
                    .skip(c)
                    .step_by(self.width.max(1))
                    .copied()
                    .filter(|v| !v.is_nan());
                match spec.kind {
                    FeatureType::Categorical => {
                        let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
                        for v in known {
                            *counts.entry(v as i64).or_default() += 1;
                        }
                        // max_by_key keeps the last of equals: walk codes downwards.
                        counts
                            .into_iter()
                            .rev()
                            .max_by_key(|&(_, n)| n)
                            .map_or(f32::NAN, |(code, _)| code as f32)
                    }
                    FeatureType::Float | FeatureType::Integer => {
                        let (sum, n) =
                            known.fold((0.0f64, 0u32), |(s, n), v| (s + f64::from(v), n + 1));
                        let mean = sum / f64::from(n);
                        match (n, spec.kind) {
                            (0, _) => f32::NAN,
                            (_, FeatureType::Integer) => mean.round() as f32,
                            _ => mean as f32,
                        }
                    }
                }
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.values.len() / self.width.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }
}

/// Golden rows with the scores Python onnxruntime produced for them.
#[derive(Debug, Clone)]
pub struct Golden {
    pub rows: Rows,
    pub scores: Vec<f64>,
}

/// A loaded, checked model version, ready to serve.
pub struct ModelPackage {
    pub dir: PathBuf,
    /// Name, version and hash, as every decision it makes carries them.
    pub identity: ModelIdentity,
    pub manifest: Manifest,
    pub manifest_toml: String,
    pub sha256: String,
    /// SHA-256 over every file this load read, as it read them
    /// ([`Files`]): what the validation gate checked, to compare with what
    /// serves.
    pub content_sha256: String,
    pub schema: FeatureSchema,
    pub background: Rows,
    /// What the consent policy substitutes for a masked feature
    /// ([`Rows::substitutes`]).
    pub substitutes: Vec<f32>,
    pub golden: Option<Golden>,
    pub backend: Arc<OrtBackend>,
    /// How this graph's decisions are attributed.
    pub explainer: Explainer,
    /// The committed fairness audit of this model (`fairness.json`), for
    /// its model card.
    pub fairness: Option<audit::Report>,
    /// Its special-category features ([`Manifest::special_categories`]),
    /// read once: a package with any makes no ad decision.
    pub special_categories: Vec<String>,
}

/// Exactly which artefact made a decision. Shared, not copied: every
/// decision of a package carries the same three strings.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIdentity {
    pub name: Arc<str>,
    pub version: Arc<str>,
    pub sha256: Arc<str>,
}

impl fmt::Debug for ModelPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelPackage")
            .field("name", &self.manifest.model.name)
            .field("version", &self.manifest.model.version.to_string())
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl ModelPackage {
    /// Loads the package in `dir` with `slots` inference sessions.
    pub fn load(dir: &Path, slots: usize) -> Result<Self, PackageError> {
        Self::load_with(dir, slots, true)
    }

    /// Loads the package to audit it: the committed report, which the audit
    /// is about to replace, is neither read nor checked.
    pub fn load_to_audit(dir: &Path) -> Result<Self, PackageError> {
        Self::load_with(dir, 1, false)
    }

    fn load_with(dir: &Path, slots: usize, report: bool) -> Result<Self, PackageError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let mut files = Files::new(dir);
        let manifest_toml = files.text(&manifest_path)?;
        let manifest = Manifest::from_toml(&manifest_toml)
            .map_err(|e| PackageError::field(&manifest_path, e))?;
        check_location(dir, &manifest_path, &manifest)?;

        let model_path = dir.join(MODEL_FILE);
        let model = files.read(&model_path)?;
        let sha256 = hex::encode(Sha256::digest(&model));
        if let Some(tensor) =
            external_tensor(&model).map_err(|e| PackageError::new(&model_path, None, e))?
        {
            return Err(PackageError::new(
                &model_path,
                None,
                format!(
                    "tensor {tensor:?} keeps its data outside model.onnx (ONNX external data): a package's model is one self-contained file, so that its SHA-256 covers every weight and nothing outside the package is read; save it whole (onnx.save_model(model, path, save_as_external_data=False))"
                ),
            ));
        }
        let schema = FeatureSchema::new(&manifest);
        // Before ONNX Runtime reads the graph, here or in check_graph.
        crate::explain::trees::Ensemble::check_depth(&model, schema.width())
            .map_err(|e| PackageError::new(&model_path, None, e.to_string()))?;
        let output_columns = check_graph(&model, &model_path, &manifest_path, &manifest)?;
        let mut backend = OrtBackend::load(
            &model,
            slots,
            &manifest.model.input.tensor,
            schema.width(),
            &manifest.model.output.tensor,
            manifest.model.output.index,
            output_columns,
        )
        .map_err(|e| {
            PackageError::new(
                &model_path,
                None,
                format!("ONNX Runtime cannot load it: {e}"),
            )
        })?;

        let background = read_rows(&mut files, &dir.join(BACKGROUND_FILE), &schema, false)?.0;
        if background.is_empty() {
            return Err(PackageError::new(
                &dir.join(BACKGROUND_FILE),
                None,
                "needs at least one row",
            ));
        }
        let chunk_rows = backend.calibrate(&background.values).map_err(|e| {
            PackageError::new(
                &model_path,
                None,
                format!("fails on the background rows: {e}"),
            )
        })?;
        tracing::debug!(model = %dir.display(), chunk_rows, "calibrated ORT batch size");
        let background_scores = backend.predict(0, &background.values).map_err(|e| {
            PackageError::new(
                &model_path,
                None,
                format!("fails on the background rows: {e}"),
            )
        })?;
        check_missing_values(&backend, &schema, &background, &manifest_path)?;
        let covers_path = dir.join(COVERS_FILE);
        let covers = if covers_path.exists() {
            Some(read_covers(&mut files, &covers_path)?)
        } else {
            None
        };
        let (explainer, inexact) = Explainer::for_graph(
            &model,
            schema.width(),
            &manifest.model.output.tensor,
            manifest.model.output.index,
            &background.values,
            &background_scores,
            covers.as_ref(),
        )
        .map_err(|e| match e {
            // The sidecar's own fault is told against it.
            ExplainError::Covers(e) => PackageError::new(&covers_path, None, e),
            e => PackageError::new(&model_path, None, format!("cannot be explained: {e}")),
        })?;
        if let Some(reason) = inexact {
            tracing::warn!(
                model = %manifest.model.name,
                version = %manifest.model.version,
                %reason,
                exact_up_to_features = crate::explain::sampling::EXACT_MAX_FEATURES,
                "no tree or linear attributions for this graph: its decisions are explained through ONNX Runtime by model-agnostic Shapley values (every coalition enumerated up to exact_up_to_features, sampled beyond)"
            );
        }
        let explainer = explainer.with_sample_pairs(manifest.explanation.sample_pairs);
        let golden_path = dir.join(GOLDEN_FILE);
        let golden = if golden_path.exists() {
            let (rows, scores) = read_rows(&mut files, &golden_path, &schema, true)?;
            Some(Golden { rows, scores })
        } else {
            None
        };
        let fairness = if report {
            read_fairness(&mut files, &sha256, &manifest)?
        } else {
            None
        };
        let substitutes = background.substitutes(schema.columns());
        let special_categories = manifest.special_categories();
        Ok(Self {
            dir: dir.to_path_buf(),
            identity: ModelIdentity {
                name: manifest.model.name.as_str().into(),
                version: manifest.model.version.to_string().into(),
                sha256: sha256.as_str().into(),
            },
            manifest,
            manifest_toml,
            sha256,
            content_sha256: hex::encode(files.digest.finalize()),
            schema,
            substitutes,
            background,
            golden,
            backend: Arc::new(backend),
            explainer,
            fairness,
            special_categories,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.model.name
    }

    /// Why no ad decision may rest on this package, if it takes
    /// special-category data (it is loaded for its other purposes only).
    pub fn barred_from_ads(&self) -> Option<String> {
        (!self.special_categories.is_empty()).then(|| {
            format!(
                "{} {} takes special-category data ({}), which no ad decision may use",
                self.name(),
                self.version(),
                self.special_categories.join(", ")
            )
        })
    }

    pub fn version(&self) -> &semver::Version {
        &self.manifest.model.version
    }
}

/// A feature the manifest lets requests leave out reaches the model as NaN:
/// the graph must score a row without it, or every request that leaves it
/// out would fail. Tried on the first background row, one such feature
/// missing at a time.
fn check_missing_values(
    backend: &OrtBackend,
    schema: &FeatureSchema,
    background: &Rows,
    manifest_path: &Path,
) -> Result<(), PackageError> {
    let optional: Vec<&FeatureSpec> = schema
        .columns()
        .iter()
        .filter(|c| c.missing_allowed)
        .collect();
    if optional.is_empty() {
        return Ok(());
    }
    let first = background.row(0);
    let mut rows = Vec::with_capacity(optional.len() * first.len());
    for spec in &optional {
        rows.extend_from_slice(first);
        let at = rows.len() - first.len() + spec.position;
        rows[at] = f32::NAN;
    }
    let refused = |spec: &FeatureSpec, outcome: String| {
        PackageError::new(
            manifest_path,
            Some("features"),
            format!(
                "{}: missing_allowed = true, but with it missing from background row 1 the model {outcome}; impute it in the graph, or set missing_allowed = false",
                spec.name
            ),
        )
    };
    match backend.predict(0, &rows).and_then(crate::inference::finite) {
        Ok(_) => Ok(()),
        Err(InferenceError::NonFinite { row, value }) => {
            Err(refused(optional[row], format!("scores {value}")))
        }
        Err(e) => Err(match optional.as_slice() {
            [only] => refused(only, format!("fails: {e}")),
            _ => PackageError::new(
                manifest_path,
                Some("features"),
                format!(
                    "the model fails on background row 1 with a feature that may be missing left out: {e}"
                ),
            ),
        }),
    }
}

/// The first tensor anywhere in the model (initializers, constants,
/// subgraphs, functions, training graphs) whose data lies outside the file
/// (ONNX external data). ONNX Runtime would read it from a path the graph
/// names, resolved against the process's working directory since Candor
/// loads models from memory: any file the gateway can read, outside the
/// artefact its SHA-256 identifies.
///
/// A file that does not decode as ONNX is refused here, not left to ONNX
/// Runtime, whose parser is more lenient (it takes a string field that is
/// not UTF-8): a tensor this check cannot see would be read all the same.
fn external_tensor(model: &[u8]) -> Result<Option<String>, String> {
    use crate::explain::onnx::{
        AttributeProto, GraphProto, ModelProto, NodeProto, SparseTensorProto, TensorProto,
        tensor_proto::DataLocation,
    };
    fn tensor(t: &TensorProto) -> Option<String> {
        (t.data_location() == DataLocation::External || !t.external_data.is_empty())
            .then(|| t.name().to_owned())
    }
    fn sparse(s: &SparseTensorProto) -> Option<String> {
        s.values.iter().chain(&s.indices).find_map(tensor)
    }
    fn attribute(a: &AttributeProto) -> Option<String> {
        a.t.iter()
            .chain(&a.tensors)
            .find_map(tensor)
            .or_else(|| {
                a.sparse_tensor
                    .iter()
                    .chain(&a.sparse_tensors)
                    .find_map(sparse)
            })
            .or_else(|| a.g.iter().chain(&a.graphs).find_map(graph))
    }
    fn nodes(nodes: &[NodeProto]) -> Option<String> {
        nodes.iter().flat_map(|n| &n.attribute).find_map(attribute)
    }
    fn graph(g: &GraphProto) -> Option<String> {
        g.initializer
            .iter()
            .find_map(tensor)
            .or_else(|| g.sparse_initializer.iter().find_map(sparse))
            .or_else(|| nodes(&g.node))
    }
    let model: ModelProto = prost::Message::decode(model).map_err(|e| {
        format!(
            "does not decode as an ONNX model ({e}); Candor reads every graph it serves, so the file must be valid ONNX (re-save it with onnx.save, which also checks its strings are UTF-8)"
        )
    })?;
    Ok(model
        .graph
        .iter()
        .chain(
            model
                .training_info
                .iter()
                .flat_map(|t| t.initialization.iter().chain(&t.algorithm)),
        )
        .find_map(graph)
        .or_else(|| {
            model.functions.iter().find_map(|f| {
                nodes(&f.node).or_else(|| f.attribute_proto.iter().find_map(attribute))
            })
        }))
}

/// The bytes of a package's file: a regular file inside the package's
/// folder (a link may point within it, as a mounted volume's do). Anything
/// else is refused before it is read: a link out of the package would let
/// whoever places a package read any file the gateway can (its keys), and
/// an error quoting a line of it would show it; a pipe would hang the load,
/// a device feed it without end.
pub fn read_in_package(dir: &Path, path: &Path) -> Result<Vec<u8>, PackageError> {
    use std::io::Read;
    let refuse = |message: String| PackageError::new(path, None, message);
    let cannot = |e: std::io::Error| refuse(format!("cannot read: {e}"));
    let root = fs::canonicalize(dir).map_err(cannot)?;
    let real = fs::canonicalize(path).map_err(cannot)?;
    if !real.starts_with(&root) {
        return Err(refuse(
            "is a link to a file outside the package; a package's files must be its own".into(),
        ));
    }
    let regular = |m: fs::Metadata| m.is_file();
    if !fs::metadata(&real).is_ok_and(regular) {
        return Err(refuse(
            "is not a regular file (a pipe, a device or a folder)".into(),
        ));
    }
    let mut options = fs::OpenOptions::new();
    options.read(true);
    // Non-blocking, so that a pipe put in its place meanwhile does not
    // hold the open waiting for a writer.
    #[cfg(target_os = "linux")]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let mut file = options.open(&real).map_err(cannot)?;
    if !file.metadata().is_ok_and(regular) {
        return Err(refuse(
            "is not a regular file (a pipe, a device or a folder)".into(),
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(bytes)
}

/// [`read_in_package`] for a text file.
pub fn read_text_in_package(dir: &Path, path: &Path) -> Result<String, PackageError> {
    text(path, read_in_package(dir, path)?)
}

fn text(path: &Path, bytes: Vec<u8>) -> Result<String, PackageError> {
    String::from_utf8(bytes).map_err(|_| PackageError::new(path, None, "is not UTF-8 text"))
}

/// A package's files as one load reads them, each once, with a digest of
/// everything read: the validation gate and the load that serves after it
/// compare digests, so that what serves is exactly what the gate checked,
/// even if a file changes in between.
struct Files<'a> {
    dir: &'a Path,
    digest: Sha256,
}

impl<'a> Files<'a> {
    fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            digest: Sha256::new(),
        }
    }

    fn read(&mut self, path: &Path) -> Result<Vec<u8>, PackageError> {
        let bytes = read_in_package(self.dir, path)?;
        let name = path.strip_prefix(self.dir).unwrap_or(path);
        self.digest.update(name.as_os_str().as_encoded_bytes());
        self.digest.update([0]);
        self.digest.update((bytes.len() as u64).to_le_bytes());
        self.digest.update(&bytes);
        Ok(bytes)
    }

    fn text(&mut self, path: &Path) -> Result<String, PackageError> {
        let bytes = self.read(path)?;
        text(path, bytes)
    }
}

/// The folder layout is part of the contract: `<name>/<version>/`.
fn check_location(
    dir: &Path,
    manifest_path: &Path,
    manifest: &Manifest,
) -> Result<(), PackageError> {
    let names = |dir: &Path| {
        let version = dir.file_name().and_then(|s| s.to_str())?.to_owned();
        let name = dir
            .parent()?
            .file_name()
            .and_then(|s| s.to_str())?
            .to_owned();
        Some((name, version))
    };
    // The folders as given, which a link into an artefact store keeps;
    // `.` or `../1.0.0` name them only once resolved.
    let (name_dir, version_dir) = names(dir)
        .or_else(|| dir.canonicalize().ok().as_deref().and_then(names))
        .unwrap_or_default();
    if name_dir != manifest.model.name {
        return Err(PackageError::new(
            manifest_path,
            Some("model.name"),
            format!(
                "{:?} does not match the package folder {name_dir:?}",
                manifest.model.name
            ),
        ));
    }
    if version_dir != manifest.model.version.to_string() {
        return Err(PackageError::new(
            manifest_path,
            Some("model.version"),
            format!(
                "{} does not match the package folder {version_dir:?}",
                manifest.model.version
            ),
        ));
    }
    Ok(())
}

/// Checks the feature order the ONNX file was trained on, where it says so
/// (Candor's training scripts stamp `candor.input.features`), against the
/// manifest's: a file whose columns are in another order would score every
/// row with its features misread. (The name and version stamps are not
/// held against the manifest: re-releasing an artefact under a new version
/// is a legitimate change.)
fn check_metadata(
    model: &[u8],
    model_path: &Path,
    manifest: &Manifest,
) -> Result<(), PackageError> {
    const FEATURES: &str = "candor.input.features";
    let Ok(proto) = <crate::explain::onnx::ModelProto as prost::Message>::decode(model) else {
        // ORT loaded it; a schema this reader does not know carries no
        // stamp it could check.
        return Ok(());
    };
    let Some(stamped) = proto.metadata_props.iter().find(|e| e.key() == FEATURES) else {
        return Ok(());
    };
    let mut columns: Vec<&FeatureSpec> = manifest.features.iter().collect();
    columns.sort_by_key(|f| f.position);
    let stamped: Vec<&str> = stamped.value().split(',').collect();
    let declared: Vec<&str> = columns.iter().map(|f| f.name.as_str()).collect();
    if stamped == declared {
        return Ok(());
    }
    let at = stamped
        .iter()
        .zip(&declared)
        .position(|(s, d)| s != d)
        .unwrap_or(stamped.len().min(declared.len()));
    Err(PackageError::new(
        model_path,
        Some(&format!("metadata {FEATURES}")),
        format!(
            "the model was trained on {} columns with {:?} in column {}, but the manifest puts {:?} there",
            stamped.len(),
            stamped.get(at).copied().unwrap_or("nothing"),
            at + 1,
            declared.get(at).copied().unwrap_or("nothing"),
        ),
    ))
}

/// Checks the manifest against the graph's declared inputs and outputs and
/// returns the number of score columns in the output.
fn check_graph(
    model: &[u8],
    model_path: &Path,
    manifest_path: &Path,
    manifest: &Manifest,
) -> Result<usize, PackageError> {
    let (inputs, outputs) = OrtBackend::inspect(model).map_err(|e| {
        PackageError::new(
            model_path,
            None,
            format!("ONNX Runtime cannot load it: {e}"),
        )
    })?;
    let want_in = &manifest.model.input.tensor;
    let input = inputs.iter().find(|t| &t.name == want_in).ok_or_else(|| {
        let names: Vec<_> = inputs.iter().map(|t| t.name.as_str()).collect();
        PackageError::new(
            manifest_path,
            Some("model.input.tensor"),
            format!("{want_in:?} is not a graph input (graph has {names:?})"),
        )
    })?;
    if inputs.len() != 1 {
        return Err(PackageError::new(
            model_path,
            None,
            format!(
                "the graph has {} inputs; Candor serves graphs with exactly one float32 [N, features] input",
                inputs.len()
            ),
        ));
    }
    if input.element != "Float32" {
        return Err(PackageError::new(
            manifest_path,
            Some("model.input.tensor"),
            format!(
                "is {}, expected Float32: convert with a float input (skl2onnx: initial_types=[({want_in:?}, FloatTensorType([None, {}]))]), or cast in the graph",
                input.element,
                manifest.features.len()
            ),
        ));
    }
    let width = manifest.features.len() as i64;
    if input.shape.len() != 2 {
        return Err(PackageError::new(
            model_path,
            None,
            format!(
                "the graph input {want_in:?} has shape {:?}, of rank {}; Candor serves rows: a [N, features] input of rank 2",
                input.shape,
                input.shape.len()
            ),
        ));
    }
    if !(input.shape[1] == width || input.shape[1] < 0) {
        return Err(PackageError::new(
            manifest_path,
            Some("features"),
            format!(
                "declares {width} features but the graph input {want_in:?} has shape {:?}",
                input.shape
            ),
        ));
    }
    // A dimension below zero is dynamic (or symbolic): any batch size.
    if input.shape[0] >= 0 {
        return Err(PackageError::new(
            model_path,
            None,
            format!(
                "the graph input {want_in:?} has shape {:?}: a fixed batch size of {}; Candor runs rows in batches, so its first dimension must be dynamic (e.g. \"N\")",
                input.shape, input.shape[0]
            ),
        ));
    }
    let want_out = &manifest.model.output.tensor;
    let output = outputs
        .iter()
        .find(|t| &t.name == want_out)
        .ok_or_else(|| {
            let names: Vec<_> = outputs.iter().map(|t| t.name.as_str()).collect();
            PackageError::new(
                manifest_path,
                Some("model.output.tensor"),
                format!("{want_out:?} is not a graph output (graph has {names:?})"),
            )
        })?;
    if output.element != "Float32" {
        // Classifier converters wrap probabilities in a ZipMap by default.
        let hint = if output.element.contains("Map") {
            "; a sequence of maps is a ZipMap: convert without it (skl2onnx: options={\"zipmap\": False}; onnxmltools: zipmap=False), or remove the node where the exporter has no such option (CatBoost; models/README.md, \"Removing a ZipMap\"), and name the float probability tensor"
        } else {
            ""
        };
        return Err(PackageError::new(
            manifest_path,
            Some("model.output.tensor"),
            format!("is {}, expected Float32{hint}", output.element),
        ));
    }
    let columns = match output.shape.as_slice() {
        [_] => 1,
        [_, c] if *c > 0 => *c as usize,
        _ => {
            return Err(PackageError::new(
                manifest_path,
                Some("model.output.tensor"),
                format!(
                    "has shape {:?}; expected [N] or [N, classes] with a fixed class count",
                    output.shape
                ),
            ));
        }
    };
    if manifest.model.output.index >= columns {
        return Err(PackageError::new(
            manifest_path,
            Some("model.output.index"),
            format!(
                "{} is outside the output's {columns} columns",
                manifest.model.output.index
            ),
        ));
    }
    // Once the shapes agree: a width that differs is named above.
    check_metadata(model, model_path, manifest)?;
    Ok(columns)
}

/// Reads a CSV of feature columns (header = feature names in model order),
/// plus a trailing `score` column when `with_score`.
fn read_rows(
    files: &mut Files<'_>,
    path: &Path,
    schema: &FeatureSchema,
    with_score: bool,
) -> Result<(Rows, Vec<f64>), PackageError> {
    let bytes = files.read(path)?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let header = reader
        .headers()
        .map_err(|e| PackageError::new(path, None, format!("bad header: {e}")))?
        .clone();
    let expected: Vec<&str> = schema
        .columns()
        .iter()
        .map(|f| f.name.as_str())
        .chain(with_score.then_some("score"))
        .collect();
    let got: Vec<&str> = header.iter().collect();
    if got != expected {
        // Name the first place they part: a wide package is otherwise
        // hard to fix.
        let at = got
            .iter()
            .zip(&expected)
            .position(|(g, e)| g != e)
            .unwrap_or(got.len().min(expected.len()));
        let found = match got.get(at) {
            Some(name) => format!("{name:?}"),
            None => "nothing".to_owned(),
        };
        let wanted = match expected.get(at) {
            Some(name) => format!("{name:?}"),
            None => "no further column".to_owned(),
        };
        return Err(PackageError::new(
            path,
            Some("header"),
            format!(
                "columns must be the features in model order{} ({} expected, {} found); column {} is {found} where {wanted} belongs",
                if with_score { " then score" } else { "" },
                expected.len(),
                got.len(),
                at + 1,
            ),
        ));
    }
    let width = schema.width();
    let (mut values, mut scores) = (Vec::new(), Vec::new());
    for (r, record) in reader.records().enumerate() {
        let record =
            record.map_err(|e| PackageError::new(path, None, format!("row {}: {e}", r + 1)))?;
        for (c, cell) in record.iter().enumerate() {
            let field = || Some(format!("row {}, column {}", r + 1, expected[c]));
            let value: f64 = if cell.is_empty() || cell.eq_ignore_ascii_case("nan") {
                f64::NAN
            } else {
                cell.trim().parse().map_err(|_| {
                    PackageError::new(
                        path,
                        field().as_deref(),
                        format!("{cell:?} is not a number"),
                    )
                })?
            };
            if c < width {
                schema
                    .check_numeric(c, value)
                    .map_err(|p| PackageError::new(path, field().as_deref(), p.to_string()))?;
                values.push(value as f32);
            } else if value.is_nan() {
                return Err(PackageError::new(
                    path,
                    field().as_deref(),
                    "is empty or NaN; a golden score is what the model must answer",
                ));
            } else {
                scores.push(value);
            }
        }
    }
    Ok((Rows { width, values }, scores))
}

/// The committed audit, which must be of this very model.
/// The package's committed audit report, if it has one. It must audit this
/// `model.onnx`, at the manifest's decision threshold, the declared data
/// set as it is now and the declared thresholds: the model card and
/// `DescribeModel` show it as the package's audit.
fn read_fairness(
    files: &mut Files<'_>,
    sha256: &str,
    manifest: &Manifest,
) -> Result<Option<audit::Report>, PackageError> {
    let path = &files.dir.join(audit::REPORT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = files.text(path)?;
    let report: audit::Report = serde_json::from_str(&text)
        .map_err(|e| PackageError::new(path, None, format!("is not an audit report: {e}")))?;
    if report.sha256 != sha256 {
        return Err(PackageError::new(
            path,
            Some("sha256"),
            "audits another model than model.onnx; rerun `candor audit --out` on this package",
        ));
    }
    if let Some((field, differs)) = stale_audit(&report, files, manifest) {
        return Err(PackageError::new(
            path,
            Some(field),
            format!("{differs}; rerun `candor audit --out` on this package"),
        ));
    }
    Ok(Some(report))
}

/// Where an audit report no longer describes the package, if anywhere.
fn stale_audit(
    report: &audit::Report,
    files: &mut Files<'_>,
    manifest: &Manifest,
) -> Option<(&'static str, String)> {
    let Some(declared) = &manifest.fairness else {
        return Some((
            "fairness",
            "the manifest declares no [fairness] audit for it to report".into(),
        ));
    };
    if Some(report.decision_threshold) != manifest.model.output.decision_threshold {
        return Some((
            "decision_threshold",
            format!(
                "audits at decision threshold {}, not the manifest's",
                report.decision_threshold
            ),
        ));
    }
    let data = files.dir.join(&declared.data);
    let data_now = files
        .read(&data)
        .map(|bytes| hex::encode(Sha256::digest(bytes)));
    // The report names the data set by its file name alone.
    let named = Path::new(&declared.data)
        .file_name()
        .is_some_and(|n| n.to_string_lossy() == report.data);
    if !named || data_now.ok().as_deref() != Some(&report.data_sha256) {
        return Some((
            "data_sha256",
            format!(
                "audits {} as it was, not the manifest's fairness.data as it is",
                report.data
            ),
        ));
    }
    let same_groups = report.attributes.len() == declared.groups.len()
        && report
            .attributes
            .iter()
            .zip(&declared.groups)
            .all(|(a, g)| {
                a.column == g.column
                    && a.bands == g.bands
                    && a.min_disparate_impact == g.min_disparate_impact
                    && a.max_equal_opportunity_difference == g.max_equal_opportunity_difference
            });
    if !same_groups || report.label_column != declared.label_column {
        return Some((
            "attributes",
            "audits other groups, thresholds or labels than the manifest's [fairness] declares"
                .into(),
        ));
    }
    None
}

fn read_covers(
    files: &mut Files<'_>,
    path: &Path,
) -> Result<HashMap<(i64, i64), f64>, PackageError> {
    let bytes = files.read(path)?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| PackageError::new(path, None, e.to_string()))?
        .iter()
        .map(str::to_owned)
        .collect();
    if header != ["tree_id", "node_id", "cover"] {
        return Err(PackageError::new(
            path,
            Some("header"),
            "columns must be tree_id,node_id,cover",
        ));
    }
    let mut covers = HashMap::new();
    for (r, record) in reader.records().enumerate() {
        let record =
            record.map_err(|e| PackageError::new(path, None, format!("row {}: {e}", r + 1)))?;
        let bad = |what: &str| {
            PackageError::new(
                path,
                Some(&format!("row {}", r + 1)),
                format!("{what} is not a number"),
            )
        };
        let tree: i64 = record[0].parse().map_err(|_| bad("tree_id"))?;
        let node: i64 = record[1].parse().map_err(|_| bad("node_id"))?;
        let cover: f64 = record[2].parse().map_err(|_| bad("cover"))?;
        if !(cover.is_finite() && cover >= 0.0) {
            return Err(PackageError::new(
                path,
                Some(&format!("row {}", r + 1)),
                "cover must be finite and non-negative",
            ));
        }
        if covers.insert((tree, node), cover).is_some() {
            return Err(PackageError::new(
                path,
                Some(&format!("row {}", r + 1)),
                format!("tree {tree} node {node} is given a cover twice"),
            ));
        }
    }
    Ok(covers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(name: &str, position: usize, kind: &str, extra: &str) -> String {
        format!(
            "[[features]]\nname = \"{name}\"\nposition = {position}\ntype = \"{kind}\"\n{extra}\nmissing_allowed = true\ndescription = \"d\"\ncategory = \"device\"\nsource = \"first_party\"\n"
        )
    }

    /// A tree too deep for ONNX Runtime is refused before ONNX Runtime
    /// reads the graph (the first to do so inspects its inputs): one a
    /// hundred thousand deep overflowed its stack and ended the process.
    #[test]
    fn a_tree_too_deep_is_refused_before_onnx_runtime_reads_it() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let package = dir.path().join("caravan-lgbm/1.2.0");
        fs::create_dir_all(&package).unwrap();
        for file in [MANIFEST_FILE, BACKGROUND_FILE] {
            fs::copy(
                root.join("models/caravan-lgbm/1.2.0").join(file),
                package.join(file),
            )
            .unwrap();
        }
        fs::write(
            package.join(MODEL_FILE),
            crate::explain::trees::tests::chain(100_000),
        )
        .unwrap();
        let e = ModelPackage::load(&package, 1).unwrap_err().to_string();
        assert!(e.contains("tree 0 is 100000 splits deep"), "{e}");
    }

    /// A weight kept in a file beside the graph (ONNX external data) would
    /// be read from wherever the graph says, outside the artefact: a
    /// package carrying one is refused, whether the tensor is an
    /// initializer or a constant inside a subgraph.
    #[test]
    fn a_model_with_external_data_is_refused() {
        use crate::explain::onnx::{
            AttributeProto, GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto,
            tensor_proto::DataLocation,
        };
        use prost::Message;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let original = root.join("models/caravan-logreg/1.0.0");
        let external = |name: &str| TensorProto {
            name: Some(name.into()),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![StringStringEntryProto {
                key: Some("location".into()),
                value: Some("data/inputs.key".into()),
            }],
            ..Default::default()
        };
        let in_subgraph = |model: &mut ModelProto| {
            let then_branch = GraphProto {
                node: vec![NodeProto {
                    op_type: Some("Constant".into()),
                    attribute: vec![AttributeProto {
                        name: Some("value".into()),
                        t: Some(external("K")),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            let graph = model.graph.as_mut().unwrap();
            graph.node.push(NodeProto {
                op_type: Some("If".into()),
                attribute: vec![AttributeProto {
                    name: Some("then_branch".into()),
                    g: Some(then_branch),
                    ..Default::default()
                }],
                ..Default::default()
            });
        };
        let as_initializer = |model: &mut ModelProto| {
            model
                .graph
                .as_mut()
                .unwrap()
                .initializer
                .push(external("K"))
        };
        for alter in [&as_initializer as &dyn Fn(&mut ModelProto), &in_subgraph] {
            let dir = tempfile::tempdir().unwrap();
            let package = dir.path().join("caravan-logreg/1.0.0");
            fs::create_dir_all(&package).unwrap();
            for file in [MANIFEST_FILE, BACKGROUND_FILE] {
                fs::copy(original.join(file), package.join(file)).unwrap();
            }
            let mut model =
                ModelProto::decode(&*fs::read(original.join(MODEL_FILE)).unwrap()).unwrap();
            alter(&mut model);
            fs::write(package.join(MODEL_FILE), model.encode_to_vec()).unwrap();
            let e = ModelPackage::load(&package, 1).unwrap_err().to_string();
            assert!(
                e.contains("tensor \"K\" keeps its data outside model.onnx"),
                "{e}"
            );
            // A doc string that is not UTF-8 kept prost from reading the
            // graph, while ONNX Runtime loads it and reads the file.
            let mut hidden = model.encode_to_vec();
            hidden.extend([0x32, 0x01, 0xFF]);
            fs::write(package.join(MODEL_FILE), hidden).unwrap();
            let e = ModelPackage::load(&package, 1).unwrap_err().to_string();
            assert!(e.contains("does not decode as an ONNX model"), "{e}");
        }
    }

    /// A masked feature is replaced by a value its own schema accepts.
    #[test]
    fn substitutes_are_values_the_schema_accepts() {
        let manifest = Manifest::from_toml(&format!(
            crate::models::manifest::test_manifest!("{}{}{}{}"),
            feature("f", 0, "float", ""),
            feature("i", 1, "integer", "min = 0\nmax = 10"),
            feature("c", 2, "categorical", "categories = [1, 2, 3, 4]"),
            feature("empty", 3, "categorical", "categories = [1, 2]"),
        ))
        .unwrap();
        let nan = f32::NAN;
        let rows = Rows {
            width: 4,
            values: vec![
                1.0, 1.0, 4.0, nan, //
                2.0, 4.0, 2.0, nan, //
                2.5, 4.0, 2.0, nan, //
                nan, nan, 4.0, nan, //
            ],
        };
        let s = rows.substitutes(&manifest.features);
        assert!((s[0] - 11.0 / 6.0).abs() < 1e-6, "{s:?}");
        // Mean 3: an integer, not 3.0000x.
        assert_eq!(s[1], 3.0);
        // Codes 2 and 4 twice each (mean 3 is a code too, but no one's):
        // the lowest of the most common.
        assert_eq!(s[2], 2.0);
        assert!(s[3].is_nan());
    }
}
