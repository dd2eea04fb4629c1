//! Coverage-guided fuzz target for bearer credentials.
//!
//! The `authorization: Bearer …` header is untrusted text: a JWT consumer
//! token goes to `Tokens::verify` (jsonwebtoken, HS256, with candor's issuer,
//! audience and lifetime checks), anything else is hashed and looked up among
//! the configured API keys by `Access::identify`. Neither may panic. The
//! input, as UTF-8 (lossily), goes to `Tokens::verify` directly and, as the
//! bearer credential, to `Access::identify` with the input bytes as the
//! client certificate (which a bearer credential overrides); the bytes alone
//! also go to `identify` as a client certificate's DER. The key and API
//! keys below are the ones `make_seeds.py` mints its seed tokens with, so
//! the seeds reach the signature, claim and key-expiry checks. See
//! `README.md`.
#![no_main]

use std::sync::LazyLock;

use candor::{
    access::{Access, Role, tokens::Tokens},
    config::{AccessConfig, ApiKey},
};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

/// Signs the seed tokens (`make_seeds.py`, `TOKEN_KEY`).
const TOKEN_KEY: &[u8] = b"candor-fuzz token key";
/// A valid API key and an expired one (`make_seeds.py`, `API_KEYS`).
const API_KEY: &str = "fuzz-api-key";
const EXPIRED_API_KEY: &str = "fuzz-expired-api-key";

static TOKENS: LazyLock<Tokens> = LazyLock::new(|| Tokens::new(TOKEN_KEY));

static ACCESS: LazyLock<Access> = LazyLock::new(|| {
    let key = |name: &str, secret: &str, expires| ApiKey {
        name: name.into(),
        role: Role::Support,
        sha256: hex::encode(Sha256::digest(secret)),
        expires,
    };
    Access::new(
        AccessConfig {
            api_keys: vec![
                key("fuzz", API_KEY, None),
                key("expired", EXPIRED_API_KEY, Some(jiff::Timestamp::UNIX_EPOCH)),
            ],
            ..AccessConfig::default()
        },
        TOKEN_KEY,
    )
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    match TOKENS.verify(&text) {
        Ok(subject) => std::hint::black_box(subject),
        Err(e) => std::hint::black_box(e.to_string()),
    };
    match ACCESS.identify(Some(&text), Some(data)) {
        Ok(caller) => std::hint::black_box(format!("{caller:?} {:?}", caller.actor())),
        Err(e) => std::hint::black_box(e.to_string()),
    };
    let _ = std::hint::black_box(ACCESS.identify(None, Some(data)));
});
