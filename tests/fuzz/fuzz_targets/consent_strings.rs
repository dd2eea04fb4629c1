//! Coverage-guided fuzz target for candor's consent-string decoders.
//!
//! `TcString::decode` (IAB TCF TC strings), `GppString::decode` (IAB GPP
//! strings) and `Signals::decode` (which wraps both and validates the
//! jurisdiction) take untrusted request input and must never panic: an
//! out-of-bounds index, an integer overflow (overflow checks are on in this
//! crate's release profile) or a debug assertion is a bug. proptest in
//! `tests/consent_decoding.rs` samples the input space at random; this
//! target lets libFuzzer steer mutations by coverage, starting from the
//! fixture strings in `seeds/`. See `README.md` for how to run it.
#![no_main]

use candor::consent::{Jurisdiction, Signals, gpp::GppString, tcf::TcString};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // The whole input, as it is, to each decoder. A seed is a bare string,
    // so both decoders see the fixtures unchanged.
    if let Ok(t) = TcString::decode(&text) {
        std::hint::black_box(format!("{t:?}"));
    }
    if let Ok(g) = GppString::decode(&text) {
        std::hint::black_box(format!("{g:?}"));
    }

    // An input with line breaks is a whole request's signals:
    // `tc_string \n gpp_string [\n country [\n region]]`, an empty line
    // meaning "absent". The first byte of the input also picks the flags.
    if text.contains('\n') {
        let mut lines = text.split('\n');
        let field = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
        let tc_string = field(lines.next());
        let gpp_string = field(lines.next());
        let country = field(lines.next());
        let region = field(lines.next());
        let signals = Signals {
            jurisdiction: country.map(|country| Jurisdiction { country, region }),
            tc_string,
            gpp_string,
            gpc: data.first().is_some_and(|b| b & 1 == 1),
            ..Signals::default()
        };
        if let Ok(d) = signals.decode() {
            std::hint::black_box(d);
        }
    }
});
