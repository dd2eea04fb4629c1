//! Model packages and the registry that serves them.
//!
//! A package is a folder `models/<name>/<version>/` holding `model.onnx`, a
//! `manifest.toml`, a background sample and golden rows. Versions of one model
//! live side by side; exactly one is the default for requests that name no
//! version.

pub mod card;
pub mod manifest;
pub mod package;
pub mod schema;
pub mod validate;

use std::{collections::BTreeMap, fs, path::Path, sync::Arc};

use semver::Version;

pub use package::{ModelPackage, PackageError};

use self::package::MANIFEST_FILE;

/// Which model a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSelector {
    pub name: String,
    pub version: Option<Version>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LookupError {
    #[error("model.name: no model named {0:?} is loaded")]
    UnknownModel(String),
    #[error("model.version: model {name:?} has no version {version} (loaded: {loaded})")]
    UnknownVersion {
        name: String,
        version: Version,
        loaded: String,
    },
}

/// All versions of one model.
#[derive(Debug)]
pub struct ModelVersions {
    pub versions: BTreeMap<Version, Arc<ModelPackage>>,
    pub default: Version,
}

/// Every loaded model, by name.
#[derive(Debug, Default)]
pub struct Registry {
    models: BTreeMap<String, ModelVersions>,
}

impl Registry {
    /// Loads every package under `root` (`<root>/<name>/<version>/manifest.toml`).
    /// Folders without a manifest, such as training scripts, are skipped.
    /// A package that fails to load is returned beside the registry rather
    /// than stopping the others; only when none loads is it an error.
    pub fn load_dir(root: &Path, slots: usize) -> Result<(Self, Vec<PackageError>), PackageError> {
        let mut packages = Vec::new();
        let mut failed = Vec::new();
        for name_dir in sorted_subdirs(root)? {
            for version_dir in sorted_subdirs(&name_dir)? {
                if version_dir.join(MANIFEST_FILE).is_file() {
                    match ModelPackage::load(&version_dir, slots) {
                        Ok(package) => packages.push(package),
                        Err(e) => failed.push(e),
                    }
                }
            }
        }
        if packages.is_empty() && !failed.is_empty() {
            return Err(failed.remove(0));
        }
        Ok((Self::from_packages(packages)?, failed))
    }

    /// Groups packages by model and settles each model's default version.
    pub fn from_packages(packages: Vec<ModelPackage>) -> Result<Self, PackageError> {
        let mut grouped: BTreeMap<String, Vec<ModelPackage>> = BTreeMap::new();
        for p in packages {
            grouped.entry(p.name().to_owned()).or_default().push(p);
        }
        let mut models = BTreeMap::new();
        for (name, packages) in grouped {
            let flagged: Vec<&ModelPackage> = packages
                .iter()
                .filter(|p| p.manifest.model.default)
                .collect();
            let default = match flagged.as_slice() {
                [] => packages
                    .iter()
                    .map(|p| p.version().clone())
                    .max()
                    .expect("a model has at least one version"),
                [one] => one.version().clone(),
                [_, second, ..] => {
                    return Err(PackageError {
                        file: second.dir.join(MANIFEST_FILE),
                        field: Some("model.default".into()),
                        message: format!(
                            "more than one version of {name:?} claims to be the default"
                        ),
                    });
                }
            };
            let mut versions = BTreeMap::new();
            for p in packages {
                let file = p.dir.join(MANIFEST_FILE);
                let version = p.version().clone();
                if versions.insert(version.clone(), Arc::new(p)).is_some() {
                    return Err(PackageError {
                        file,
                        field: Some("model.version".into()),
                        message: format!("{name:?} version {version} is packaged twice"),
                    });
                }
            }
            models.insert(name, ModelVersions { versions, default });
        }
        Ok(Self { models })
    }

    pub fn resolve(&self, selector: &ModelSelector) -> Result<Arc<ModelPackage>, LookupError> {
        let model = self
            .models
            .get(&selector.name)
            .ok_or_else(|| LookupError::UnknownModel(selector.name.clone()))?;
        let version = selector.version.as_ref().unwrap_or(&model.default);
        model
            .versions
            .get(version)
            .cloned()
            .ok_or_else(|| LookupError::UnknownVersion {
                name: selector.name.clone(),
                version: version.clone(),
                loaded: model
                    .versions
                    .keys()
                    .map(Version::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub fn models(&self) -> impl Iterator<Item = (&String, &ModelVersions)> {
        self.models.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<std::path::PathBuf>, PackageError> {
    let entries = fs::read_dir(dir).map_err(|e| PackageError {
        file: dir.to_path_buf(),
        field: None,
        message: format!("cannot list the models folder: {e}"),
    })?;
    let mut dirs: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}
