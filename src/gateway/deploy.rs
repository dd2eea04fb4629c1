//! Deploying while serving: reloading the models folder (on an admin call or
//! when the folder changes), loading and unloading versions, and changing a
//! model's rollout.
//!
//! Every change goes the same way: the model's `rollout.toml` is written
//! (when the change is to the rollout), the folder is read again into a new
//! registry, and the registry is swapped in one atomic store. Calls already
//! running hold their package and finish on the version they started with;
//! packages that did not change are carried over with their sessions, and a
//! package that was not served before must pass the validation gate
//! (`candor models validate`) first. One change runs at a time.

use std::{path::PathBuf, sync::Arc, time::Duration};

use semver::Version;

use super::{Gateway, ModelIdentity};
use crate::{
    error::Error,
    models::{
        ModelVersions, PackageError, Registry,
        package::MANIFEST_FILE,
        rollout::{Canary, Rollout},
        validate::validate_package_alone,
    },
};

/// How long the folder must stay quiet before a watched change is loaded,
/// so a package being copied in is read once, whole.
const WATCH_SETTLE: Duration = Duration::from_millis(500);

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reloaded {
    pub loaded: Vec<ModelIdentity>,
    pub unloaded: Vec<ModelIdentity>,
    /// Packages and rollout entries that were refused, with the reason.
    pub refused: Vec<String>,
}

/// The rollout an admin asks for. It replaces production, canary and
/// shadows as a whole; the versions unloaded stay unloaded.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutChange {
    pub model: String,
    pub production: Option<Version>,
    pub canary: Option<Canary>,
    pub shadows: Vec<Version>,
}

impl Gateway {
    /// Reads the models folder again and swaps in what it holds now.
    pub async fn reload_models(&self) -> Result<Reloaded, Error> {
        let _one_at_a_time = self.deploying.lock().await;
        self.reload_locked().await
    }

    /// Serves `<models_dir>/<model>/<version>` again after `unload_model`,
    /// or for the first time (it must pass the validation gate).
    pub async fn load_model(&self, model: &str, version: &Version) -> Result<Reloaded, Error> {
        let _one_at_a_time = self.deploying.lock().await;
        let model_dir = self.model_dir(model)?;
        if !model_dir.is_dir() {
            return Err(Error::NotFound(format!(
                "model: there is no model {model} in the models folder"
            )));
        }
        if !model_dir
            .join(version.to_string())
            .join(MANIFEST_FILE)
            .is_file()
        {
            return Err(Error::NotFound(format!(
                "version: there is no package {model}/{version} in the models folder"
            )));
        }
        let mut rollout = Rollout::read(&model_dir)?;
        if rollout.unloaded.contains(version) {
            rollout.unloaded.retain(|v| v != version);
            self.write_rollout(&model_dir, &rollout)?;
        }
        let reloaded = self.reload_locked().await?;
        let dir = model_dir.join(version.to_string());
        let refusal = reloaded
            .refused
            .iter()
            .find(|r| names_folder(r, &dir.to_string_lossy()))
            .cloned();
        let serving = self
            .registry()?
            .model(model)
            .is_ok_and(|m| m.versions.contains_key(version));
        match (refusal, serving) {
            (None, true) => Ok(reloaded),
            // The package as it is now failed; what serves is the version
            // as it loaded before, which this call did not deploy.
            (Some(reason), true) => Err(Error::FailedPrecondition(format!(
                "version: {model} {version} as it is in the models folder is not deployed: {reason}; the version loaded before it keeps serving"
            ))),
            (reason, false) => Err(Error::FailedPrecondition(format!(
                "version: {model} {version} is not deployed: {}",
                reason.unwrap_or_else(|| "it did not load".into())
            ))),
        }
    }

    /// Stops serving one version. The production version, the canary and
    /// shadows must be moved off it first.
    pub async fn unload_model(&self, model: &str, version: &Version) -> Result<Reloaded, Error> {
        let _one_at_a_time = self.deploying.lock().await;
        let registry = self.registry()?;
        let served = registry.model_in("model", model)?;
        if !served.versions.contains_key(version) {
            return Err(Error::NotFound(format!(
                "version: {model} {version} is not loaded"
            )));
        }
        if let Some(role) = role_of(served, version) {
            return Err(Error::FailedPrecondition(format!(
                "version: {model} {version} is {role}; change the rollout first"
            )));
        }
        let model_dir = self.model_dir(model)?;
        let mut rollout = Rollout::read(&model_dir)?;
        rollout.unloaded.push(version.clone());
        self.write_rollout(&model_dir, &rollout)?;
        self.reload_locked().await
    }

    /// Replaces a model's production version, canary and shadows. Every
    /// version named must be loaded.
    pub async fn set_rollout(&self, change: RolloutChange) -> Result<Rollout, Error> {
        let _one_at_a_time = self.deploying.lock().await;
        let registry = self.registry()?;
        let served = registry.model_in("model", &change.model)?;
        let named = change
            .production
            .iter()
            .map(|v| ("production".to_owned(), v))
            .chain(
                change
                    .canary
                    .iter()
                    .map(|c| ("canary".to_owned(), &c.version)),
            )
            .chain(
                change
                    .shadows
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("shadows[{i}]"), v)),
            );
        for (field, v) in named {
            let Some(package) = served.versions.get(v) else {
                return Err(Error::FailedPrecondition(format!(
                    "{field}: {} {v} is not loaded; load it first",
                    change.model
                )));
            };
            // A canary or a shadow scores production's requests, live or
            // in the shadow: neither may take special-category data. Nor
            // may production, while the production it would replace makes
            // ad decisions: every request naming no version would be
            // refused. (A measurement model's production is its own.)
            let Some(why) = package.barred_from_ads() else {
                continue;
            };
            if field != "production" {
                return Err(Error::FailedPrecondition(format!("{field}: {why}")));
            }
            if let Some(current) = served.versions.get(&served.default)
                && current.special_categories.is_empty()
            {
                return Err(Error::FailedPrecondition(format!(
                    "{field}: {why}, and production {} makes ad decisions: every request naming no version would be refused",
                    current.version()
                )));
            }
        }
        let model_dir = self.model_dir(&change.model)?;
        let named_production = change.production.is_some();
        // An empty production is resolved now, and written so: a canary or
        // shadow cannot be the version production turns out to be, and a
        // version that arrives later does not take production unasked.
        let rollout = Rollout {
            production: change
                .production
                .or_else(|| Some(served.manifest_default())),
            canary: change.canary,
            shadows: change.shadows,
            unloaded: Rollout::read(&model_dir)?.unloaded,
        };
        rollout.check().map_err(|(key, message)| {
            // Named as the request names them, not as rollout.toml does.
            let field = match key.as_str() {
                "canary.version" => "canary",
                "canary.percent" => "canary_percent",
                other => other,
            };
            let resolved = if named_production {
                ""
            } else {
                " (production is empty: the manifest's default version, else the highest loaded)"
            };
            Error::InvalidArgument(format!("{field}: {message}{resolved}"))
        })?;
        self.write_rollout(&model_dir, &rollout)?;
        self.reload_locked().await?;
        Ok(self
            .registry()?
            .model_in("model", &change.model)?
            .rollout
            .clone())
    }

    async fn reload_locked(&self) -> Result<Reloaded, Error> {
        let previous = self.registry()?;
        let dir = self.config.models_dir.clone();
        let slots = self.session_slots();
        let before = previous.clone();
        let (registry, failed) = tokio::task::spawn_blocking(move || {
            Registry::load_dir(&dir, slots, Some(&before), Some(&deployment_gate))
        })
        .await
        .map_err(|e| Error::Internal(format!("model reload panicked: {e}")))??;
        // A production the reload kept in place of a newer arrival is
        // written down, so that a restart keeps it too.
        for (name, model) in registry.models() {
            let Some(production) = &model.rollout.production else {
                continue;
            };
            let model_dir = self.config.models_dir.join(name);
            if let Ok(mut file) = Rollout::read(&model_dir)
                && file.production.is_none()
            {
                file.production = Some(production.clone());
                self.write_rollout(&model_dir, &file)?;
                tracing::info!(model = %name, %production, "a new version is staged, not promoted: production stays until SetRollout changes it (rollout.toml)");
            }
        }
        let reloaded = Reloaded {
            loaded: identities(&registry)
                .filter(|id| !identities(&previous).any(|p| &p == id))
                .collect(),
            unloaded: identities(&previous)
                .filter(|id| !identities(&registry).any(|n| &n == id))
                .collect(),
            refused: failed.iter().map(PackageError::to_string).collect(),
        };
        let registry = Arc::new(registry);
        self.keep_packages(&registry).await;
        super::shadow::warn_unscored(&registry);
        let count = registry.models().map(|(_, m)| m.versions.len()).sum();
        self.registry.store(Some(registry));
        self.note_models(count);
        for id in &reloaded.loaded {
            tracing::info!(model = %id.name, version = %id.version, sha256 = %id.sha256, "model deployed");
        }
        for id in &reloaded.unloaded {
            tracing::info!(model = %id.name, version = %id.version, "model unloaded");
        }
        for reason in &reloaded.refused {
            tracing::error!(error = %reason, "not deployed or not applied; everything else serves as before");
        }
        Ok(reloaded)
    }

    /// `<models_dir>/<model>`, for a name that is one plain path segment.
    fn model_dir(&self, model: &str) -> Result<PathBuf, Error> {
        let plain = !model.is_empty()
            && model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !model.starts_with('.');
        if !plain {
            return Err(Error::InvalidArgument(format!(
                "model: {model:?} is not a model name (letters, digits, '-', '_', '.')"
            )));
        }
        Ok(self.config.models_dir.join(model))
    }

    fn write_rollout(&self, model_dir: &std::path::Path, rollout: &Rollout) -> Result<(), Error> {
        rollout.write(model_dir).map_err(|e| {
            Error::Package(PackageError {
                file: model_dir.join(crate::models::rollout::ROLLOUT_FILE),
                field: None,
                message: format!("cannot write: {e}"),
            })
        })
    }

    /// Reloads the models folder whenever it changes and then settles.
    /// Holds the gateway weakly, so it ends when the gateway does.
    ///
    /// The folder's parent is watched too, for the folder itself: one
    /// removed and made anew (a sync tool, a swap of folders, a mounted
    /// volume's update) is a new folder, which the watch follows.
    pub(super) fn watch_models(self: &Arc<Self>) -> Result<(), Error> {
        use notify::Watcher as _;
        let dir = std::fs::canonicalize(&self.config.models_dir)
            .map_err(|e| watch_error(&self.config.models_dir, notify::Error::io(e)))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let within = dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // The parent's other entries (a database beside the folder)
                // are not the models'. Whether the folder itself went is
                // told along: one made anew may even get its inode back.
                if let Ok(e) = event
                    && !e.kind.is_access()
                    && e.paths.iter().any(|p| p.starts_with(&within))
                {
                    let _ = tx.send(e.kind.is_remove() && e.paths.contains(&within));
                }
            })
            .map_err(|e| watch_error(&dir, e))?;
        watcher
            .watch(&dir, notify::RecursiveMode::Recursive)
            .map_err(|e| watch_error(&dir, e))?;
        if let Some(parent) = dir.parent() {
            watcher
                .watch(parent, notify::RecursiveMode::NonRecursive)
                .map_err(|e| watch_error(parent, e))?;
        }
        let mut watched = folder_identity(&dir);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(mut removed) = rx.recv().await {
                while let Ok(Some(again)) = tokio::time::timeout(WATCH_SETTLE, rx.recv()).await {
                    removed |= again;
                }
                if removed {
                    watched = None;
                }
                let now = folder_identity(&dir);
                if now.is_some() && now != watched {
                    let _ = watcher.unwatch(&dir);
                    match watcher.watch(&dir, notify::RecursiveMode::Recursive) {
                        Ok(()) => {
                            watched = now;
                            tracing::info!(dir = %dir.display(), "the models folder was made anew; watching the new one");
                        }
                        Err(e) => {
                            tracing::error!(error = %watch_error(&dir, e), "the new models folder is not watched; deploy with ReloadModels")
                        }
                    }
                }
                let Some(gateway) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = gateway.reload_models().await {
                    tracing::error!(error = %e, "reloading the changed models folder failed");
                }
            }
        });
        Ok(())
    }
}

/// The folder's device and inode: a folder made anew under the same name
/// is another folder.
fn folder_identity(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

fn watch_error(dir: &std::path::Path, e: notify::Error) -> Error {
    Error::Package(PackageError {
        file: dir.to_path_buf(),
        field: None,
        message: format!("cannot watch the models folder: {e}"),
    })
}

fn identities(registry: &Registry) -> impl Iterator<Item = ModelIdentity> + '_ {
    registry
        .models()
        .flat_map(|(_, m)| m.versions.values().map(|p| p.identity.clone()))
}

/// Whether a refusal names the folder `dir`, or a file in it: "…/1.0.1"
/// is not named by a refusal of "…/1.0.10".
fn names_folder(refusal: &str, dir: &str) -> bool {
    refusal.match_indices(dir).any(|(at, _)| {
        matches!(
            refusal[at + dir.len()..].chars().next(),
            None | Some('/' | ':')
        )
    })
}

/// What a version does in its model's rollout, if anything.
fn role_of(model: &ModelVersions, version: &Version) -> Option<&'static str> {
    if &model.default == version {
        Some("the production version")
    } else if model
        .rollout
        .canary
        .as_ref()
        .is_some_and(|c| &c.version == version)
    {
        Some("the canary")
    } else if model.rollout.shadows.contains(version) {
        Some("a shadow")
    } else {
        None
    }
}

/// The validation gate a package not served before must pass: every rule of
/// `candor models validate` on the package itself (the registry then
/// settles the default claim), the failures as the reason.
pub(super) fn deployment_gate(package: &std::path::Path) -> Result<Option<String>, String> {
    // A large forest takes a minute to check: the log says why nothing
    // moves meanwhile.
    tracing::info!(package = %package.display(), "checking a package against the validation gate before it serves");
    let started = std::time::Instant::now();
    let report = validate_package_alone(package);
    if !report.passed {
        return Err(report.failures());
    }
    for check in &report.checks {
        if let Some((_, note)) = check.detail.split_once(crate::models::validate::NOTE) {
            tracing::warn!(package = %package.display(), rule = check.name, "{note}");
        }
    }
    tracing::info!(package = %package.display(), elapsed = ?started.elapsed(), "the package passed the validation gate");
    Ok(report.content_sha256)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusal_names_its_own_folder_only() {
        let refusal = "/m/caravan/1.0.10/golden.csv: row 1's score differs";
        assert!(super::names_folder(refusal, "/m/caravan/1.0.10"));
        assert!(!super::names_folder(refusal, "/m/caravan/1.0.1"));
        assert!(super::names_folder(
            "/m/caravan/1.0.1: refused by the validation gate",
            "/m/caravan/1.0.1"
        ));
    }
}
