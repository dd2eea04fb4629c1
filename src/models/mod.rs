//! Model packages and the registry that serves them.
//!
//! A package is a folder `models/<name>/<version>/` holding `model.onnx`, a
//! `manifest.toml`, a background sample and golden rows. Versions of one model
//! live side by side; exactly one is the default for requests that name no
//! version.

pub mod archive;
pub mod card;
pub mod manifest;
pub mod package;
pub mod rollout;
pub mod schema;
pub mod validate;

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use semver::Version;
use sha2::{Digest, Sha256};

pub use package::{ModelIdentity, ModelPackage, PackageError};

use self::{
    package::MANIFEST_FILE,
    rollout::{ROLLOUT_FILE, Rollout},
};

/// Which model a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSelector {
    pub name: String,
    /// `None`: routed by the rollout (production, or the canary for the
    /// subjects in its share).
    pub version: Option<VersionRef>,
}

/// A version named by number or by alias.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionRef {
    Exact(Version),
    Production,
    Canary,
}

impl std::str::FromStr for VersionRef {
    type Err = semver::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "production" => Self::Production,
            "canary" => Self::Canary,
            v => Self::Exact(Version::parse(v)?),
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LookupError {
    /// `field`: where the request names the model (`model.name` in a
    /// scoring request, `model` in an admin one).
    #[error("{field}: no model named {name:?} is loaded")]
    UnknownModel { field: &'static str, name: String },
    #[error("model.version: model {name:?} has no version {version} (loaded: {loaded})")]
    UnknownVersion {
        name: String,
        version: Version,
        loaded: String,
    },
    #[error("model.version: model {0:?} has no canary")]
    NoCanary(String),
    /// The rollout names a production version that did not load. Serving
    /// another in its place would put a version nobody promoted into
    /// production, so only requests that name a loaded version are served.
    #[error(
        "model.version: the production version of {name:?}, {version} (its {ROLLOUT_FILE}), is not loaded, so a request must name a loaded version ({loaded}); fix and reload that version, or set the rollout's production to a loaded one"
    )]
    ProductionNotLoaded {
        name: String,
        version: Version,
        loaded: String,
    },
}

/// All versions of one model and how they share its traffic.
#[derive(Debug)]
pub struct ModelVersions {
    pub versions: BTreeMap<Version, Arc<ModelPackage>>,
    /// The production version: what requests naming no version get. It is
    /// not loaded when the rollout names one that failed to load; such
    /// requests are then refused ([`LookupError::ProductionNotLoaded`]).
    pub default: Version,
    /// As in effect: every version it names is loaded.
    pub rollout: Rollout,
    /// The audit columns any loaded version declares (`[[fairness.groups]]
    /// column`), sorted: the attributes the fairness monitor counts for the
    /// model, whichever version serves a request.
    pub audited: Vec<String>,
}

impl ModelVersions {
    /// The production version when the rollout names none.
    pub fn manifest_default(&self) -> Version {
        manifest_default(&self.versions.values().cloned().collect::<Vec<_>>())
    }

    /// Whether the production version (of the model called `name`) is
    /// loaded, which requests naming no version need.
    fn check_production(&self, name: &str) -> Result<(), LookupError> {
        if self.versions.contains_key(&self.default) {
            return Ok(());
        }
        Err(LookupError::ProductionNotLoaded {
            name: name.to_owned(),
            version: self.default.clone(),
            loaded: self.loaded(),
        })
    }

    /// The loaded versions, for messages.
    fn loaded(&self) -> String {
        self.versions
            .keys()
            .map(Version::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every loaded model, by name.
#[derive(Debug, Default)]
pub struct Registry {
    models: BTreeMap<String, ModelVersions>,
    /// Each loaded package folder's content hash, so a reload keeps the
    /// packages that did not change (and their ONNX Runtime sessions).
    fingerprints: HashMap<PathBuf, String>,
    /// Each refused package folder's content hash and refusal, so a reload
    /// does not run the gate again on bytes it already refused.
    refused: HashMap<PathBuf, (String, PackageError)>,
}

/// Decides whether a package that was not served before may be deployed:
/// the digest of the content it checked ([`ModelPackage::content_sha256`]),
/// or the reason, for the log and the caller.
pub type Gate<'a> = &'a (dyn Fn(&Path) -> Result<Option<String>, String> + Sync);

impl Registry {
    /// Loads every package under `root` (`<root>/<name>/<version>/manifest.toml`)
    /// and each model's `rollout.toml`. Folders without a manifest, such as
    /// training scripts, are skipped, and so are versions the rollout lists
    /// as unloaded. Packages unchanged since `previous` are kept as they are;
    /// any other package must pass `gate` first. A package that fails is
    /// returned beside the registry rather than stopping the others; only
    /// when none loads is it an error.
    ///
    /// What serves keeps serving: a version of `previous` whose folder now
    /// fails to load (edited into something the gate refuses) or is gone is
    /// kept as loaded until the rollout unloads it, and a `rollout.toml` that
    /// does not read keeps the model's rollout in effect. Only an explicit
    /// change takes traffic away from a version.
    pub fn load_dir(
        root: &Path,
        slots: usize,
        previous: Option<&Registry>,
        gate: Option<Gate<'_>>,
    ) -> Result<(Self, Vec<PackageError>), PackageError> {
        let mut packages = Vec::new();
        let mut rollouts = BTreeMap::new();
        let mut fingerprints = HashMap::new();
        let mut refused = HashMap::new();
        let mut failed = Vec::new();
        // Each model folder's rollout as read (or kept), by model name.
        let mut read_rollouts: HashMap<String, Rollout> = HashMap::new();
        for name_dir in sorted_subdirs(root)? {
            let name = name_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let in_effect = previous.and_then(|p| p.in_effect(&name));
            let rollout = Rollout::read(&name_dir).unwrap_or_else(|mut e| {
                if in_effect.is_some() {
                    e.message.push_str("; the rollout in effect stays");
                }
                failed.push(e);
                in_effect.unwrap_or_default()
            });
            read_rollouts.insert(name, rollout.clone());
            for version_dir in sorted_subdirs(&name_dir)? {
                if !version_dir.join(MANIFEST_FILE).is_file() || is_unloaded(&rollout, &version_dir)
                {
                    continue;
                }
                let fingerprint = match fingerprint(&version_dir) {
                    Ok(f) => f,
                    Err(e) => {
                        failed.push(e);
                        continue;
                    }
                };
                let kept = previous.and_then(|p| p.unchanged(&version_dir, &fingerprint));
                let refused_before = previous
                    .and_then(|p| p.refused.get(&version_dir))
                    .filter(|(f, _)| *f == fingerprint)
                    .map(|(_, e)| e.clone());
                let package = match (kept, refused_before) {
                    (Some(p), _) => Ok(p),
                    (None, Some(e)) => {
                        refused.insert(version_dir.clone(), (fingerprint.clone(), e.clone()));
                        Err(e)
                    }
                    (None, None) => {
                        match gate.map_or(Ok(None), |gate| gate(&version_dir)) {
                            Err(report) => {
                                // Only the gate's verdict on these bytes is
                                // kept: a load that failed for want of memory
                                // or descriptors is tried again next time.
                                let refusal = PackageError {
                                    file: version_dir.clone(),
                                    field: None,
                                    message: format!("refused by the validation gate: {report}"),
                                };
                                refused.insert(
                                    version_dir.clone(),
                                    (fingerprint.clone(), refusal.clone()),
                                );
                                Err(refusal)
                            }
                            Ok(checked) => ModelPackage::load(&version_dir, slots)
                                .and_then(|p| same_as_checked(p, checked.as_deref()))
                                .map(Arc::new),
                        }
                    }
                };
                match package {
                    Ok(p) => {
                        rollouts
                            .entry(p.name().to_owned())
                            .or_insert(rollout.clone());
                        fingerprints.insert(version_dir, fingerprint);
                        packages.push(p);
                    }
                    Err(e) => failed.push(e),
                }
            }
        }
        if let Some(previous) = previous {
            previous.keep_serving(
                &read_rollouts,
                &mut packages,
                &mut rollouts,
                &mut fingerprints,
                &mut failed,
            );
            previous.keep_production(&packages, &mut rollouts);
            previous.refuse_unloaded_production(&packages, &mut rollouts, &mut failed);
        }
        if packages.is_empty() && !failed.is_empty() {
            return Err(failed.remove(0));
        }
        let mut registry = Self::from_packages(packages, rollouts, previous, &mut failed)?;
        registry.fingerprints = fingerprints;
        registry.refused = refused;
        Ok((registry, failed))
    }

    /// The rollout in effect for `name`, with its production version
    /// named even where the manifests chose it or it failed to load: what
    /// a `rollout.toml` that does not stand is replaced by, so that
    /// traffic stays where it was.
    fn in_effect(&self, name: &str) -> Option<Rollout> {
        self.models.get(name).map(|m| Rollout {
            production: Some(m.default.clone()),
            ..m.rollout.clone()
        })
    }

    /// Keeps a model's rollout in effect where its edited `rollout.toml`
    /// names a production version that is not loaded, as `SetRollout`
    /// refuses one: a typo in the file must not refuse every request that
    /// names no version. A restart has no rollout in effect and refuses
    /// them instead (`from_packages`).
    fn refuse_unloaded_production(
        &self,
        packages: &[Arc<ModelPackage>],
        rollouts: &mut BTreeMap<String, Rollout>,
        failed: &mut Vec<PackageError>,
    ) {
        for (name, rollout) in rollouts.iter_mut() {
            let (Some(wanted), Some(before)) = (&rollout.production, self.models.get(name)) else {
                continue;
            };
            let loaded = packages
                .iter()
                .any(|p| p.name() == name && p.version() == wanted);
            if loaded || *wanted == before.default {
                continue;
            }
            failed.push(PackageError {
                file: packages
                    .iter()
                    .find(|p| p.name() == name)
                    .and_then(|p| p.dir.parent())
                    .map_or_else(|| PathBuf::from(ROLLOUT_FILE), |d| d.join(ROLLOUT_FILE)),
                field: Some("production".into()),
                message: format!(
                    "version {wanted} of {name:?} is not loaded; load it first; the rollout in effect stays (production {})",
                    before.default
                ),
            });
            if let Some(kept) = self.in_effect(name) {
                *rollout = kept;
            }
        }
    }

    /// Keeps each model's production version where no rollout names one
    /// and the manifests' choice (the marked default, else the highest)
    /// would now fall on another: a version that arrives is staged, not
    /// promoted, until `SetRollout` says so. The pin is written to the
    /// model's `rollout.toml` by the deployer, so a restart agrees.
    fn keep_production(
        &self,
        packages: &[Arc<ModelPackage>],
        rollouts: &mut BTreeMap<String, Rollout>,
    ) {
        for (name, rollout) in rollouts.iter_mut() {
            let Some(before) = self.models.get(name) else {
                continue;
            };
            let own: Vec<Arc<ModelPackage>> = packages
                .iter()
                .filter(|p| p.name() == name)
                .cloned()
                .collect();
            let still_loaded = own.iter().any(|p| *p.version() == before.default);
            if rollout.production.is_none()
                && still_loaded
                && manifest_default(&own) != before.default
            {
                rollout.production = Some(before.default.clone());
            }
        }
    }

    /// Carries over this registry's versions that did not load again, unless
    /// their model's rollout now unloads them: a failed edit or a removed
    /// folder must not move traffic.
    fn keep_serving(
        &self,
        read_rollouts: &HashMap<String, Rollout>,
        packages: &mut Vec<Arc<ModelPackage>>,
        rollouts: &mut BTreeMap<String, Rollout>,
        fingerprints: &mut HashMap<PathBuf, String>,
        failed: &mut Vec<PackageError>,
    ) {
        for (name, model) in &self.models {
            let rollout = read_rollouts.get(name).unwrap_or(&model.rollout);
            for (version, package) in &model.versions {
                let reloaded = packages
                    .iter()
                    .any(|p| p.name() == name && p.version() == version);
                if reloaded || rollout.unloaded.contains(version) {
                    continue;
                }
                let kept = format!("{name} {version} keeps serving as loaded");
                match failed.iter_mut().find(|e| e.file.starts_with(&package.dir)) {
                    Some(e) => e.message = format!("{}; {kept}", e.message),
                    None => failed.push(PackageError {
                        file: package.dir.clone(),
                        field: None,
                        message: if package.dir.exists() {
                            format!(
                                "the package folder is there but did not load again (can the gateway read it?); {kept} until the rollout unloads it"
                            )
                        } else {
                            format!(
                                "the package is gone from disk; {kept} until the rollout unloads it"
                            )
                        },
                    }),
                }
                rollouts
                    .entry(name.clone())
                    .or_insert_with(|| rollout.clone());
                if let Some(f) = self.fingerprints.get(&package.dir) {
                    fingerprints.insert(package.dir.clone(), f.clone());
                }
                packages.push(package.clone());
            }
        }
    }

    fn unchanged(&self, dir: &Path, fingerprint: &str) -> Option<Arc<ModelPackage>> {
        if self.fingerprints.get(dir).map(String::as_str) != Some(fingerprint) {
            return None;
        }
        self.models
            .values()
            .flat_map(|m| m.versions.values())
            .find(|p| p.dir == dir)
            .cloned()
    }

    /// Groups packages by model and settles each model's production version,
    /// canary and shadows. A rollout entry naming a version that is not
    /// loaded is dropped and reported in `failed`.
    /// `previous`, the registry serving until now, keeps the default claim
    /// with a version it serves; so does a production `rollouts` names.
    pub fn from_packages(
        packages: Vec<Arc<ModelPackage>>,
        mut rollouts: BTreeMap<String, Rollout>,
        previous: Option<&Registry>,
        failed: &mut Vec<PackageError>,
    ) -> Result<Self, PackageError> {
        let mut grouped: BTreeMap<String, Vec<Arc<ModelPackage>>> = BTreeMap::new();
        for p in packages {
            grouped.entry(p.name().to_owned()).or_default().push(p);
        }
        let mut models = BTreeMap::new();
        for (name, mut packages) in grouped {
            // The version in service keeps the claim; at a start, the
            // production `rollout.toml` names (a reload pinned it there).
            let pinned = rollouts.get(&name).and_then(|r| r.production.clone());
            let served = |p: &ModelPackage| {
                pinned.as_ref() == Some(p.version())
                    || previous
                        .and_then(|r| r.models.get(&name))
                        .is_some_and(|m| m.versions.contains_key(p.version()))
            };
            refuse_second_defaults(&name, &mut packages, served, failed);
            let mut versions = BTreeMap::new();
            for p in &packages {
                let version = p.version().clone();
                if versions.insert(version.clone(), p.clone()).is_some() {
                    return Err(PackageError {
                        file: p.dir.join(MANIFEST_FILE),
                        field: Some("model.version".into()),
                        message: format!("{name:?} version {version} is packaged twice"),
                    });
                }
            }
            let mut rollout = rollouts.remove(&name).unwrap_or_default();
            let rollout_file = packages[0]
                .dir
                .parent()
                .map_or_else(|| PathBuf::from(ROLLOUT_FILE), |d| d.join(ROLLOUT_FILE));
            // While a version may make ad decisions, one that takes
            // special-category data may not take its traffic: not as
            // production (a hand-edited file), which would refuse every
            // request naming no version, nor as canary. SetRollout refuses
            // both; the file is refused as it would be.
            let serves_ads = packages.iter().any(|p| p.special_categories.is_empty());
            let mut barred = |field: &str, v: &Version, consequence: &str| {
                let why = versions
                    .get(v)
                    .and_then(|p| p.barred_from_ads())
                    .filter(|_| serves_ads)?;
                failed.push(PackageError {
                    file: rollout_file.clone(),
                    field: Some(field.into()),
                    message: format!(
                        "{why}, and other versions of {name:?} make ad decisions; {consequence}"
                    ),
                });
                Some(())
            };
            if let Some(v) = rollout.production.clone()
                && barred(
                    "production",
                    &v,
                    "one of them serves requests that name no version",
                )
                .is_some()
            {
                rollout.production = None;
            }
            if let Some(c) = rollout.canary.clone()
                && barred("canary.version", &c.version, "no canary").is_some()
            {
                rollout.canary = None;
            }
            let mut missing = |field: &str, v: &Version, consequence: &str| {
                failed.push(PackageError {
                    file: rollout_file.clone(),
                    field: Some(field.into()),
                    message: format!("version {v} of {name:?} is not loaded; {consequence}"),
                });
            };
            // A production version that did not load stays production: its
            // traffic is refused, not moved to a version nobody promoted.
            let mut unloaded_production = None;
            if let Some(v) = rollout.production.take() {
                if versions.contains_key(&v) {
                    rollout.production = Some(v);
                } else {
                    missing(
                        "production",
                        &v,
                        "requests that name no version are refused until it loads or the rollout names another",
                    );
                    unloaded_production = Some(v);
                }
            }
            if let Some(c) = rollout.canary.take() {
                if versions.contains_key(&c.version) {
                    rollout.canary = Some(c);
                } else {
                    missing(
                        "canary.version",
                        &c.version,
                        "no canary until it loads; then it takes its share, as rollout.toml says",
                    );
                }
            }
            let shadows = std::mem::take(&mut rollout.shadows);
            for v in shadows {
                if versions.contains_key(&v) {
                    rollout.shadows.push(v);
                } else {
                    missing(
                        "shadows",
                        &v,
                        "not shadowing until it loads; then it shadows, as rollout.toml says",
                    );
                }
            }
            let default = rollout
                .production
                .clone()
                .or(unloaded_production)
                .unwrap_or_else(|| {
                    let highest = manifest_default(&packages);
                    // Nobody chose it: say so, since a version that was
                    // production and left the folder hands its traffic to
                    // it at the next start.
                    if packages.len() > 1 && !packages.iter().any(|p| p.manifest.model.default) {
                        tracing::warn!(
                            model = %name,
                            version = %highest,
                            "no rollout.toml names production and no version is marked default = true: the highest version serves; pin production with AdminService.SetRollout"
                        );
                    }
                    highest
                });
            let mut audited: Vec<String> = versions
                .values()
                .flat_map(|p| p.manifest.fairness.iter())
                .flat_map(|f| f.groups.iter().map(|g| g.column.clone()))
                .collect();
            audited.sort_unstable();
            audited.dedup();
            models.insert(
                name,
                ModelVersions {
                    versions,
                    default,
                    rollout,
                    audited,
                },
            );
        }
        Ok(Self {
            models,
            fingerprints: HashMap::new(),
            refused: HashMap::new(),
        })
    }

    /// The package that serves `selector`; `subject_ref`, the subject's
    /// pseudonym, places a request that names no version in or out of the
    /// canary.
    pub fn resolve(
        &self,
        selector: &ModelSelector,
        subject_ref: Option<&str>,
    ) -> Result<Arc<ModelPackage>, LookupError> {
        let model = self.model(&selector.name)?;
        if matches!(selector.version, None | Some(VersionRef::Production)) {
            model.check_production(&selector.name)?;
        }
        let version = match &selector.version {
            Some(VersionRef::Exact(v)) => v,
            Some(VersionRef::Production) => &model.default,
            Some(VersionRef::Canary) => model
                .rollout
                .canary
                .as_ref()
                .map(|c| &c.version)
                .ok_or_else(|| LookupError::NoCanary(selector.name.clone()))?,
            // The bucket is a SHA-256: only worth it when there is a canary.
            None => subject_ref
                .filter(|_| model.rollout.canary.is_some())
                .and_then(|s| {
                    model
                        .rollout
                        .takes_canary(rollout::bucket(&selector.name, s))
                })
                .unwrap_or(&model.default),
        };
        model
            .versions
            .get(version)
            .cloned()
            .ok_or_else(|| LookupError::UnknownVersion {
                name: selector.name.clone(),
                version: version.clone(),
                loaded: model.loaded(),
            })
    }

    /// The package serving `name`'s production traffic.
    pub fn production(&self, name: &str) -> Result<Arc<ModelPackage>, LookupError> {
        let model = self.model(name)?;
        model.check_production(name)?;
        Ok(model.versions[&model.default].clone())
    }

    pub fn model(&self, name: &str) -> Result<&ModelVersions, LookupError> {
        self.model_in("model.name", name)
    }

    /// [`Registry::model`] for a request that names the model in `field`.
    pub fn model_in(&self, field: &'static str, name: &str) -> Result<&ModelVersions, LookupError> {
        self.models
            .get(name)
            .ok_or_else(|| LookupError::UnknownModel {
                field,
                name: name.to_owned(),
            })
    }

    /// The versions scoring in the shadow of `name`'s production traffic.
    /// The shadow versions of `name` that may score its requests: one that
    /// takes special-category data never does (SetRollout refuses to name
    /// it; a hand-edited `rollout.toml` may, and [`Registry::unscored_shadows`]
    /// says so).
    pub fn shadows(&self, name: &str) -> Vec<Arc<ModelPackage>> {
        self.models.get(name).map_or_else(Vec::new, |m| {
            m.rollout
                .shadows
                .iter()
                .filter_map(|v| m.versions.get(v))
                .filter(|p| p.special_categories.is_empty())
                .cloned()
                .collect()
        })
    }

    /// The shadow versions a rollout names that [`Registry::shadows`]
    /// leaves out, for a warning.
    pub fn unscored_shadows(&self) -> impl Iterator<Item = &ModelPackage> {
        self.models.values().flat_map(|m| {
            (m.rollout.shadows.iter())
                .filter_map(|v| m.versions.get(v))
                .filter(|p| !p.special_categories.is_empty())
                .map(|p| &**p)
        })
    }

    pub fn models(&self) -> impl Iterator<Item = (&String, &ModelVersions)> {
        self.models.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// Only one version may claim to be the default: one already `served`
/// keeps it, else the lowest (a copied manifest usually brings the flag
/// along to a newer version), and the others are refused, not loaded,
/// rather than stopping every model, or the version in service.
fn refuse_second_defaults(
    name: &str,
    packages: &mut Vec<Arc<ModelPackage>>,
    served: impl Fn(&ModelPackage) -> bool,
    failed: &mut Vec<PackageError>,
) {
    let Some(first) = packages
        .iter()
        .filter(|p| p.manifest.model.default)
        .min_by_key(|p| (!served(p), p.version().clone()))
        .map(|p| p.version().clone())
    else {
        return;
    };
    packages.retain(|p| {
        let second = p.manifest.model.default && *p.version() != first;
        if second {
            failed.push(PackageError {
                file: p.dir.join(MANIFEST_FILE),
                field: Some("model.default".into()),
                message: second_default(name, &first),
            });
        }
        !second
    });
}

/// Why a version that claims to be the default is refused: `first`, a
/// version of the model served or lower, claims it too.
pub(crate) fn second_default(name: &str, first: &Version) -> String {
    format!(
        "version {first} of {name:?} already claims to be the default; this version is not loaded"
    )
}

/// The version the manifests call the default, else the highest: among
/// the versions that may make ad decisions, where any may (one that takes
/// special-category data would refuse every request naming no version).
fn manifest_default(packages: &[Arc<ModelPackage>]) -> Version {
    let serving: Vec<&Arc<ModelPackage>> = packages
        .iter()
        .filter(|p| p.special_categories.is_empty())
        .collect();
    let candidates = if serving.is_empty() {
        packages.iter().collect()
    } else {
        serving
    };
    candidates
        .iter()
        .find(|p| p.manifest.model.default)
        .or_else(|| {
            candidates
                .iter()
                .max_by(|a, b| a.version().cmp(b.version()))
        })
        .map(|p| p.version().clone())
        .expect("a model has at least one version")
}

/// Version folders are named by their version (the package loader checks).
fn is_unloaded(rollout: &Rollout, version_dir: &Path) -> bool {
    version_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| Version::parse(n).ok())
        .is_some_and(|v| rollout.unloaded.contains(&v))
}

/// `package` if it is what the validation gate checked (`checked`, its
/// content's digest; `None` when the gate checked nothing it loaded): a
/// file changed while the gate ran would otherwise serve unchecked. The
/// change itself makes the next reload read it again.
fn same_as_checked(
    package: ModelPackage,
    checked: Option<&str>,
) -> Result<ModelPackage, PackageError> {
    match checked {
        Some(digest) if digest != package.content_sha256 => Err(PackageError {
            file: package.dir.clone(),
            field: None,
            message: "changed while the validation gate checked it; it is checked again as it is now at the next reload".into(),
        }),
        _ => Ok(package),
    }
}

/// SHA-256 over every file of a package folder and its subfolders (an
/// audit data set may sit in one), paths and contents.
fn fingerprint(dir: &Path) -> Result<String, PackageError> {
    let unreadable = |path: &Path, e: std::io::Error| PackageError {
        file: path.to_path_buf(),
        field: None,
        message: format!("cannot read it: {e}"),
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder)
            .map_err(|e| unreadable(&folder, e))?
            .filter_map(Result::ok)
        {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hasher = Sha256::new();
    for f in files {
        let name = f.strip_prefix(dir).unwrap_or(&f);
        hasher.update(name.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(fs::read(&f).map_err(|e| unreadable(&f, e))?);
    }
    Ok(hex::encode(hasher.finalize()))
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
