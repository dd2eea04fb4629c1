//! How a model's versions share its traffic: which version is `production`,
//! which is the `canary` and for what share of subjects, which versions score
//! in the shadow of production, and which versions are switched off although
//! their folders remain.
//!
//! The state lives in `models/<name>/rollout.toml`, beside the versions it
//! speaks of, so that it survives restarts, can be reviewed like any other
//! deployment file, and is picked up by the folder watch when edited by hand.
//! The admin RPCs write the same file.

use std::{fs, io::Write as _, path::Path};

use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::PackageError;

pub const ROLLOUT_FILE: &str = "rollout.toml";

/// Canary shares are resolved to this many buckets, so a share is exact to
/// 0.01 percentage points.
pub const BUCKETS: u32 = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Serves requests that name no version; when absent, the version whose
    /// manifest says `default = true`, else the highest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub production: Option<Version>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Score production's requests too; recorded, never returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<Version>,
    /// Not served, although the folder is still there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unloaded: Vec<Version>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub version: Version,
    /// Share of subjects, 0 to 100.
    pub percent: f64,
}

impl Rollout {
    /// Reads `<model_dir>/rollout.toml`; no file means the defaults.
    pub fn read(model_dir: &Path) -> Result<Self, PackageError> {
        let file = model_dir.join(ROLLOUT_FILE);
        if fs::symlink_metadata(&file).is_err() {
            return Ok(Self::default());
        }
        // Read as a package's own files are: a link out of the model's
        // folder would quote what it leads to in the parse error.
        let text = super::package::read_text_in_package(model_dir, &file)?;
        let rollout: Self = toml::from_str(&text).map_err(|e| PackageError {
            file: file.clone(),
            field: None,
            message: e.to_string(),
        })?;
        rollout.check().map_err(|(field, message)| PackageError {
            file,
            field: Some(field),
            message,
        })?;
        Ok(rollout)
    }

    /// Replaces `<model_dir>/rollout.toml` atomically, so the folder watch
    /// and a crash never see half a file.
    pub fn write(&self, model_dir: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(model_dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(model_dir.join(ROLLOUT_FILE))
            .map_err(|e| e.error)?;
        Ok(())
    }

    /// The checks that need no loaded package; the failing field and why.
    pub fn check(&self) -> Result<(), (String, String)> {
        if let Some(c) = &self.canary {
            if !(0.0..=100.0).contains(&c.percent) {
                return Err((
                    "canary.percent".into(),
                    format!("{} is not a share between 0 and 100", c.percent),
                ));
            }
            if self.production.as_ref() == Some(&c.version) {
                return Err((
                    "canary.version".into(),
                    format!("{} is already the production version", c.version),
                ));
            }
        }
        for (i, v) in self.shadows.iter().enumerate() {
            let role = if self.production.as_ref() == Some(v) {
                Some("production")
            } else if self.canary.as_ref().is_some_and(|c| &c.version == v) {
                Some("canary")
            } else if self.shadows[..i].contains(v) {
                Some("shadow")
            } else {
                None
            };
            if let Some(role) = role {
                // Its own shadow only doubles inference and attribution work.
                return Err((
                    format!("shadows[{i}]"),
                    format!("{v} is already the {role} version"),
                ));
            }
        }
        let served = self
            .production
            .iter()
            .chain(self.canary.as_ref().map(|c| &c.version))
            .chain(&self.shadows);
        for v in served {
            if self.unloaded.contains(v) {
                return Err((
                    "unloaded".into(),
                    format!("{v} is in use and cannot be unloaded"),
                ));
            }
        }
        Ok(())
    }

    /// Whether a subject in `bucket` (see [`bucket`]) gets the canary.
    pub fn takes_canary(&self, bucket: u32) -> Option<&Version> {
        let c = self.canary.as_ref()?;
        // Rounded to whole buckets: raising the share only adds subjects.
        let cut = (c.percent * f64::from(BUCKETS) / 100.0).round() as u32;
        (bucket < cut).then_some(&c.version)
    }
}

/// A subject's fixed place in `0..BUCKETS` for one model, from its
/// pseudonym: the same person always lands in the same bucket, so the
/// canary is sticky, and different models split people independently.
pub fn bucket(model: &str, subject_ref: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(model.as_bytes())
        .chain_update([0])
        .chain_update(subject_ref.as_bytes())
        .finalize();
    let head = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (head % u64::from(BUCKETS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Rollout::read(dir.path()).unwrap(), Rollout::default());
        let r = Rollout {
            production: Some(v("1.0.0")),
            canary: Some(Canary {
                version: v("1.1.0"),
                percent: 12.5,
            }),
            shadows: vec![v("1.2.0")],
            unloaded: vec![v("0.9.0")],
        };
        r.write(dir.path()).unwrap();
        assert_eq!(Rollout::read(dir.path()).unwrap(), r);
    }

    #[test]
    fn refuses_inconsistent_files_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        for (text, field) in [
            (
                "[canary]\nversion = \"1.1.0\"\npercent = 120.0\n",
                "canary.percent",
            ),
            (
                "production = \"1.1.0\"\n[canary]\nversion = \"1.1.0\"\npercent = 5.0\n",
                "canary.version",
            ),
            (
                "shadows = [\"1.1.0\"]\nunloaded = [\"1.1.0\"]\n",
                "unloaded",
            ),
            (
                "production = \"1.1.0\"\nshadows = [\"1.1.0\"]\n",
                "shadows[0]",
            ),
            (
                "shadows = [\"1.0.0\"]\n[canary]\nversion = \"1.0.0\"\npercent = 5.0\n",
                "shadows[0]",
            ),
            ("shadows = [\"1.2.0\", \"1.2.0\"]\n", "shadows[1]"),
        ] {
            fs::write(dir.path().join(ROLLOUT_FILE), text).unwrap();
            let e = Rollout::read(dir.path()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{text}");
        }
        fs::write(dir.path().join(ROLLOUT_FILE), "canary_share = 3\n").unwrap();
        assert!(Rollout::read(dir.path()).is_err());
    }

    #[test]
    fn buckets_are_stable_and_spread_evenly() {
        assert_eq!(bucket("m", "s"), bucket("m", "s"));
        let n = 20_000;
        let low = (0..n)
            .filter(|i| bucket("m", &format!("subject-{i}")) < BUCKETS / 4)
            .count();
        // 25% ± 5 standard deviations of a binomial share.
        let share = low as f64 / f64::from(n);
        assert!((share - 0.25).abs() < 5.0 * (0.25 * 0.75 / f64::from(n)).sqrt());
    }

    #[test]
    fn raising_the_share_keeps_every_canary_subject() {
        let mut r = Rollout {
            canary: Some(Canary {
                version: v("2.0.0"),
                percent: 10.0,
            }),
            ..Rollout::default()
        };
        let before: Vec<bool> = (0..BUCKETS).map(|b| r.takes_canary(b).is_some()).collect();
        r.canary.as_mut().unwrap().percent = 30.0;
        for (b, was) in before.iter().enumerate() {
            assert!(!was || r.takes_canary(b as u32).is_some());
        }
        assert_eq!(before.iter().filter(|x| **x).count(), 1000);
    }
}
