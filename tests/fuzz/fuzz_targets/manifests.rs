//! Coverage-guided fuzz target for model manifests.
//!
//! `manifest.toml` comes with a model package, which may come from outside
//! the team: `Manifest::from_toml` (strict TOML deserialisation, then
//! `validate`) must reject a bad manifest with a `FieldError`, never panic.
//! The input, as UTF-8 (lossily), goes to `from_toml`; a manifest that
//! parses is validated again (which must still pass: `from_toml` already
//! validated it), and its features are listed in column order. Seeds are the
//! bundled manifests, the fixture packages' manifests and small variants
//! `make_seeds.py` derives from them. See `README.md`.
#![no_main]

use candor::models::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Manifest::from_toml(&text) {
        Ok(manifest) => {
            assert_eq!(
                manifest.validate(),
                Ok(()),
                "from_toml accepted a manifest that validate() rejects"
            );
            std::hint::black_box(manifest.features_by_position());
            std::hint::black_box(format!("{manifest:?}"));
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
});
