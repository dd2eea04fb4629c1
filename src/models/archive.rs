//! A copy of every package that has served, kept by its artefact's SHA-256
//! beside the database, so that a decision stays explainable ("why am I
//! seeing this?", the access export) after its version is unloaded and its
//! folder removed or replaced: a decision owes its attributions to the
//! exact artefact that scored it, and the models folder is the engineers'
//! to change. A copy goes once no decision or shadow output on record cites
//! its artefact and no loaded version is it.

use std::{
    collections::HashSet,
    fs, io,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{
    ModelPackage,
    package::{MANIFEST_FILE, MODEL_FILE},
};

#[derive(Debug, Clone)]
pub struct Archive {
    root: PathBuf,
    /// The artefacts kept since the last prune began (and those loaded
    /// then): a version loaded and unloaded between two prunes may have
    /// decisions the record does not hold yet when the next one reads it.
    served: std::sync::Arc<std::sync::Mutex<HashSet<String>>>,
}

impl Archive {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            served: std::sync::Arc::default(),
        }
    }

    fn served(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.served.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the copy of `sha256` as `name` `version` lives: the package
    /// layout (`<name>/<version>/`) under its artefact's folder.
    fn place(&self, sha256: &str, name: &str, version: &str) -> PathBuf {
        self.root.join(sha256).join(name).join(version)
    }

    /// Copies `package` unless a copy of its artefact under its name and
    /// version is kept already. The manifest is written as loaded, and the
    /// copied artefact must hash as loaded, so an edit of the folder since
    /// does not go into the copy.
    pub fn keep(&self, package: &ModelPackage) -> io::Result<()> {
        self.served().insert(package.sha256.clone());
        let place = self.place(
            &package.sha256,
            package.name(),
            &package.version().to_string(),
        );
        if place.join(MODEL_FILE).is_file() {
            return Ok(());
        }
        let parent = place.parent().expect("the place has a parent");
        fs::create_dir_all(parent)?;
        let draft = parent.join(format!(".{:016x}.new", rand::random::<u64>()));
        let copied = copy_package(package, &draft).and_then(|()| fs::rename(&draft, &place));
        if copied.is_err() {
            let _ = fs::remove_dir_all(&draft);
        }
        match copied {
            // Another gateway or reload kept it meanwhile.
            Err(_) if place.join(MODEL_FILE).is_file() => Ok(()),
            other => other,
        }
    }

    /// The kept copy of `sha256` as `name` `version`, if any.
    pub fn find(&self, sha256: &str, name: &str, version: &str) -> Option<PathBuf> {
        let plain = |s: &str| !s.is_empty() && !s.contains(['/', '\\']) && s != "." && s != "..";
        if ![sha256, name, version].into_iter().all(plain) {
            return None;
        }
        Some(self.place(sha256, name, version)).filter(|p| p.join(MODEL_FILE).is_file())
    }

    /// Removes the copies of artefacts neither in `cited` nor kept since
    /// the last prune, and starts the next count from `loaded`, the
    /// artefacts that serve now; how many went.
    pub fn prune(&self, cited: &HashSet<String>, loaded: HashSet<String>) -> io::Result<usize> {
        let served = std::mem::replace(&mut *self.served(), loaded);
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if cited.contains(&name) || served.contains(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// The package's files into `to`: every file of its folder and its
/// subfolders (a link to a file, such as an artefact kept in a store, as
/// the file it names), the manifest as loaded, and the artefact only if it
/// still hashes as loaded.
fn copy_package(package: &ModelPackage, to: &Path) -> io::Result<()> {
    copy_tree(&package.dir, to, true)?;
    fs::write(to.join(MANIFEST_FILE), &package.manifest_toml)?;
    let artefact = fs::read(to.join(MODEL_FILE))?;
    if hex::encode(Sha256::digest(&artefact)) != package.sha256 {
        return Err(io::Error::other(
            "the artefact changed on disk since it was loaded",
        ));
    }
    Ok(())
}

/// `from`'s files into the new folder `to`, the manifest aside at the top.
/// A link to a folder is not followed: it could lead back up.
fn copy_tree(from: &Path, to: &Path, top: bool) -> io::Result<()> {
    let named =
        |path: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    fs::create_dir(to).map_err(|e| named(to, e))?;
    for entry in fs::read_dir(from).map_err(|e| named(from, e))? {
        let entry = entry.map_err(|e| named(from, e))?;
        let (path, name) = (entry.path(), entry.file_name());
        if top && name == MANIFEST_FILE {
            continue;
        }
        if entry.file_type().map_err(|e| named(&path, e))?.is_dir() {
            copy_tree(&path, &to.join(&name), false)?;
        } else if fs::metadata(&path).map_err(|e| named(&path, e))?.is_file() {
            fs::copy(&path, to.join(&name)).map_err(|e| named(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_go_once_uncited_and_are_found_only_by_plain_names() {
        let root = tempfile::tempdir().unwrap();
        let archive = Archive::new(root.path().to_owned());
        for sha in ["cited", "stale"] {
            let place = archive.place(sha, "m", "1.0.0");
            fs::create_dir_all(&place).unwrap();
            fs::write(place.join(MODEL_FILE), b"onnx").unwrap();
        }
        assert_eq!(
            archive.find("cited", "m", "1.0.0"),
            Some(archive.place("cited", "m", "1.0.0"))
        );
        assert_eq!(archive.find("cited", "m", "2.0.0"), None);
        assert_eq!(archive.find("..", "cited/m", "1.0.0"), None);
        let cited = HashSet::from(["cited".to_owned()]);
        // Served since the last prune (loaded then, or kept since): kept
        // this time, whatever the record says.
        archive.served().insert("stale".to_owned());
        assert_eq!(archive.prune(&cited, HashSet::new()).unwrap(), 0);
        assert_eq!(archive.prune(&cited, HashSet::new()).unwrap(), 1);
        assert!(archive.find("stale", "m", "1.0.0").is_none());
        assert!(archive.find("cited", "m", "1.0.0").is_some());
        assert_eq!(archive.prune(&cited, HashSet::new()).unwrap(), 0);
    }

    /// A file the package links to (an artefact store) is copied as the
    /// file it names, and so are the package's subfolders.
    #[cfg(unix)]
    #[test]
    fn linked_files_and_subfolders_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let (package, store) = (dir.path().join("package"), dir.path().join("store"));
        fs::create_dir_all(package.join("fairness")).unwrap();
        fs::create_dir(&store).unwrap();
        fs::write(store.join("model.onnx"), b"onnx").unwrap();
        std::os::unix::fs::symlink(store.join("model.onnx"), package.join(MODEL_FILE)).unwrap();
        std::os::unix::fs::symlink(&package, package.join("fairness").join("up")).unwrap();
        fs::write(package.join("fairness").join("audit.csv"), b"a,b").unwrap();
        fs::write(package.join(MANIFEST_FILE), b"as on disk").unwrap();
        let copy = dir.path().join("copy");
        copy_tree(&package, &copy, true).unwrap();
        assert_eq!(fs::read(copy.join(MODEL_FILE)).unwrap(), b"onnx");
        assert!(
            !fs::symlink_metadata(copy.join(MODEL_FILE))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(fs::read(copy.join("fairness/audit.csv")).unwrap(), b"a,b");
        assert!(
            !copy.join(MANIFEST_FILE).exists(),
            "written as loaded instead"
        );
        assert!(
            !copy.join("fairness/up").exists(),
            "a folder link is not followed"
        );
    }
}
