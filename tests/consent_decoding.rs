//! Candor's TCF and GPP decoders against golden vectors encoded by IAB's own
//! reference libraries (`tests/consent_vectors/`), and a property test that
//! no input makes them panic.

use std::{path::PathBuf, sync::LazyLock};

use candor::consent::{
    gpp::{GppString, Tri, UsCa, UsNat},
    tcf::{PublisherTc, RestrictionType, TcString, VendorSet, ids},
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn vectors() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/consent/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn set(v: &VendorSet) -> Vec<u16> {
    v.ids().collect()
}

/// Our decoding in the fixtures' shape (everything but `encodings`).
fn tcf_json(t: &TcString) -> Value {
    let mut restrictions: Vec<Value> = t
        .publisher_restrictions
        .iter()
        .map(|r| {
            let mut vendors: Vec<u16> = r.vendors.iter().flat_map(|&(s, e)| s..=e).collect();
            vendors.sort_unstable();
            vendors.dedup();
            json!({
                "purpose": r.purpose,
                "restriction_type": match r.restriction {
                    RestrictionType::NotAllowed => 0,
                    RestrictionType::RequireConsent => 1,
                    RestrictionType::RequireLegitimateInterest => 2,
                },
                "vendors": vendors,
            })
        })
        .collect();
    restrictions.sort_by_key(|r| (r["purpose"].as_u64(), r["restriction_type"].as_u64()));
    json!({
        "version": t.version,
        "created_ms": t.created_ds * 100,
        "last_updated_ms": t.last_updated_ds * 100,
        "cmp_id": t.cmp_id,
        "cmp_version": t.cmp_version,
        "consent_screen": t.consent_screen,
        "consent_language": t.consent_language,
        "vendor_list_version": t.vendor_list_version,
        "policy_version": t.policy_version,
        "is_service_specific": t.is_service_specific,
        "use_non_standard_texts": t.use_non_standard_texts,
        "special_feature_opt_ins": ids(u64::from(t.special_feature_opt_ins), 12),
        "purpose_consents": ids(u64::from(t.purpose_consents), 24),
        "purpose_legitimate_interests": ids(u64::from(t.purpose_legitimate_interests), 24),
        "purpose_one_treatment": t.purpose_one_treatment,
        "publisher_cc": t.publisher_cc,
        "vendor_consents": set(&t.vendor_consents),
        "vendor_legitimate_interests": set(&t.vendor_legitimate_interests),
        "publisher_restrictions": restrictions,
        "disclosed_vendors": t.disclosed_vendors.as_ref().map(set),
        "publisher_tc": t.publisher_tc.as_ref().map(|p: &PublisherTc| json!({
            "purpose_consents": ids(u64::from(p.purpose_consents), 24),
            "purpose_legitimate_interests": ids(u64::from(p.purpose_legitimate_interests), 24),
            "num_custom_purposes": p.num_custom_purposes,
            "custom_purpose_consents": ids(p.custom_purpose_consents, p.num_custom_purposes),
            "custom_purpose_legitimate_interests":
                ids(p.custom_purpose_legitimate_interests, p.num_custom_purposes),
        })),
    })
}

fn codes(v: &[Tri]) -> Vec<u8> {
    v.iter().map(|t| t.code()).collect()
}

fn usnat_json(s: &UsNat) -> Value {
    let mut v = json!({
        "Version": s.version,
        "SharingNotice": s.sharing_notice.code(),
        "SaleOptOutNotice": s.sale_opt_out_notice.code(),
        "SharingOptOutNotice": s.sharing_opt_out_notice.code(),
        "TargetedAdvertisingOptOutNotice": s.targeted_advertising_opt_out_notice.code(),
        "SensitiveDataProcessingOptOutNotice": s.sensitive_data_processing_opt_out_notice.code(),
        "SensitiveDataLimitUseNotice": s.sensitive_data_limit_use_notice.code(),
        "SaleOptOut": s.sale_opt_out.code(),
        "SharingOptOut": s.sharing_opt_out.code(),
        "TargetedAdvertisingOptOut": s.targeted_advertising_opt_out.code(),
        "SensitiveDataProcessing": codes(&s.sensitive_data_processing),
        "KnownChildSensitiveDataConsents": codes(&s.known_child_sensitive_data_consents),
        "PersonalDataConsents": s.personal_data_consents.code(),
        "MspaCoveredTransaction": s.mspa_covered_transaction.code(),
        "MspaOptOutOptionMode": s.mspa_opt_out_option_mode.code(),
        "MspaServiceProviderMode": s.mspa_service_provider_mode.code(),
    });
    if let Some(gpc) = s.gpc {
        v["Gpc"] = json!(gpc);
    }
    v
}

fn usca_json(s: &UsCa) -> Value {
    let mut v = json!({
        "Version": s.version,
        "SaleOptOutNotice": s.sale_opt_out_notice.code(),
        "SharingOptOutNotice": s.sharing_opt_out_notice.code(),
        "SensitiveDataLimitUseNotice": s.sensitive_data_limit_use_notice.code(),
        "SaleOptOut": s.sale_opt_out.code(),
        "SharingOptOut": s.sharing_opt_out.code(),
        "SensitiveDataProcessing": codes(&s.sensitive_data_processing),
        "KnownChildSensitiveDataConsents": codes(&s.known_child_sensitive_data_consents),
        "PersonalDataConsents": s.personal_data_consents.code(),
        "MspaCoveredTransaction": s.mspa_covered_transaction.code(),
        "MspaOptOutOptionMode": s.mspa_opt_out_option_mode.code(),
        "MspaServiceProviderMode": s.mspa_service_provider_mode.code(),
    });
    if let Some(gpc) = s.gpc {
        v["Gpc"] = json!(gpc);
    }
    v
}

fn without_encodings(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("encodings");
    v
}

/// Words the error message must contain for each kind of defect: a rejection
/// must say what is wrong.
fn names_the_defect(defect: &str) -> &'static str {
    match defect {
        "base64" => "URL-safe base64",
        "truncated" => "truncated",
        "version" => "Version is",
        "is_service_specific" => "IsServiceSpecific",
        "policy_version" => "TcfPolicyVersion",
        "li_purpose" => "PurposesLITransparency",
        "range" => "before it starts",
        "max_vendor_id" => "MaxVendorId",
        "restriction_type" => "RestrictionType 3",
        "segment_type" => "segment type",
        "duplicate_segment" => "appears twice",
        "disclosed_vendors" => "DisclosedVendors segment is missing",
        "empty" => "is empty",
        "gpp_header" => "Type is",
        "gpp_version" => "Version is",
        "gpp_sections" => "section(s)",
        "gpp_section" => "section us",
        other => panic!("unknown defect {other}"),
    }
}

#[test]
fn tcf_decoding_matches_the_iab_reference_library() {
    let vectors = vectors();
    let (mut valid, mut invalid) = (0, 0);
    for v in vectors["tcf"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let decoded = TcString::decode(v["string"].as_str().unwrap());
        if v["valid"].as_bool().unwrap() {
            let tc = decoded.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(tcf_json(&tc), without_encodings(&v["expected"]), "{name}");
            valid += 1;
        } else {
            let err = decoded.expect_err(name).to_string();
            let want = names_the_defect(v["defect"].as_str().unwrap());
            assert!(
                err.contains(want),
                "{name}: {err:?} should mention {want:?}"
            );
            invalid += 1;
        }
    }
    assert!(
        valid >= 30 && invalid >= 15,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn gpp_decoding_matches_the_iab_reference_library() {
    let vectors = vectors();
    let (mut valid, mut invalid) = (0, 0);
    for v in vectors["gpp"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let decoded = GppString::decode(v["string"].as_str().unwrap());
        if v["valid"].as_bool().unwrap() {
            let gpp = decoded.unwrap_or_else(|e| panic!("{name}: {e}"));
            let want = &v["expected"];
            let ids: Vec<u64> = gpp.section_ids.iter().map(|i| u64::from(*i)).collect();
            assert_eq!(json!(ids), want["section_ids"], "{name}");
            assert_eq!(
                gpp.tcfeuv2.as_ref().map(tcf_json),
                want.get("tcfeuv2").map(without_encodings),
                "{name}"
            );
            assert_eq!(
                gpp.usnat.as_ref().map(usnat_json),
                want.get("usnat").cloned(),
                "{name}"
            );
            assert_eq!(
                gpp.usca.as_ref().map(usca_json),
                want.get("usca").cloned(),
                "{name}"
            );
            valid += 1;
        } else {
            let err = decoded.expect_err(name).to_string();
            let defect = v["defect"].as_str().unwrap();
            let want = names_the_defect(defect);
            let tcf_defect = !defect.starts_with("gpp") && defect != "base64" && defect != "empty";
            assert!(
                err.contains(want) && (!tcf_defect || err.contains("section tcfeuv2")),
                "{name}: {err:?} should mention {want:?}"
            );
            invalid += 1;
        }
    }
    assert!(
        valid >= 15 && invalid >= 15,
        "{valid} valid, {invalid} invalid"
    );
}

/// GPP strings with a state section, from the IAB's iabgpp-es test suite
/// (UsVa.test.ts, UsTx.test.ts, UsNj.test.ts) behind a header for their id
/// (9, 16, 21), and all three in one string: the vectors hold none.
const STATE_SEEDS: [&str; 4] = [
    "DBABRg~BVWSSVY",
    "DBABEw~BVWSSVWA.YA",
    "DBABAY~BVWSSRklWA.YA",
    "DBADRlhg~BVWSSVY~BVWSSVWA.YA~BVWSSRklWA.YA",
];

/// Every vector's string, valid or not, and the state strings: the seeds
/// for mutation.
static SEEDS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let vectors = vectors();
    ["tcf", "gpp"]
        .iter()
        .flat_map(|k| vectors[k].as_array().unwrap().clone())
        .map(|v| v["string"].as_str().unwrap().to_owned())
        .chain(STATE_SEEDS.map(str::to_owned))
        .collect()
});

#[test]
fn the_state_seeds_are_valid_state_sections() {
    for seed in STATE_SEEDS {
        let gpp = GppString::decode(seed).unwrap_or_else(|e| panic!("{seed}: {e}"));
        assert!(!gpp.states.is_empty(), "{seed}");
        assert!(gpp.states.iter().all(|s| s.opted_out()), "{seed}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary text in the strings' own alphabet never panics either decoder.
    #[test]
    fn decoders_never_panic_on_arbitrary_input(s in "[A-Za-z0-9_~.+/=-]{0,400}") {
        let _ = TcString::decode(&s);
        let _ = GppString::decode(&s);
    }

    /// Neither do the vectors' strings with characters replaced, inserted or cut.
    #[test]
    fn decoders_never_panic_on_mutated_vectors(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, "[A-Za-z0-9_~.-]"), 1..8),
    ) {
        let mut s: Vec<char> = SEEDS[pick.index(SEEDS.len())].chars().collect();
        for (at, op, c) in edits {
            let c = c.chars().next().unwrap();
            if s.is_empty() { s.push(c); continue; }
            let i = at.index(s.len());
            match op {
                0 => s[i] = c,
                1 => s.insert(i, c),
                _ => s.truncate(i),
            }
        }
        let s: String = s.into_iter().collect();
        let _ = TcString::decode(&s);
        let _ = GppString::decode(&s);
    }
}
