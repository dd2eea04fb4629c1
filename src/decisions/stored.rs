//! The record's form of an explanation: binary (postcard) and without what
//! can be derived, about a quarter of its JSON.
//!
//! The writer rewrites a decision's row when its deferred attributions
//! arrive, and each commit writes whole pages: as JSON, an explanation of
//! the Caravan model (85 features) took about 9 kB and spilled over three
//! pages. Left out, because they are rebuilt on reading:
//! - the group of one feature that every feature outside the declared
//!   groups forms, when those come last and in column order (as
//!   [`crate::explain::DecisionAttribution`] makes them);
//! - the standard errors of exact methods, which are all zero.
//!
//! Explanations recorded before this form are JSON text and still read.
//!
//! An explanation holds the values the model saw, the person's data, so
//! the record keeps it sealed as it keeps a decision's inputs (AES-256-GCM
//! under the input key, bound to the decision id): [`seal`] and [`read`].
//! Those recorded before sealing still read.

use std::collections::{HashMap, HashSet};

use rusqlite::types::ValueRef;
use serde::{Deserialize, Serialize};

use super::{ExplainedFeature, ExplainedGroup, Explanation, crypto::InputCipher};

/// The first byte of a sealed explanation. An unsealed one starts with its
/// method's length as a varint, a name far shorter than 128 bytes, so its
/// first byte is below 0x80 and never this.
const SEALED: u8 = 0xA5;

#[derive(Serialize, Deserialize)]
struct Stored {
    method: String,
    method_version: String,
    output_space: String,
    base_value: f64,
    margin: f64,
    base_score: f64,
    residual: f64,
    ort_difference: f64,
    sample_pairs: u64,
    names: Vec<String>,
    values: Vec<f64>,
    contributions: Vec<f64>,
    /// Empty when every one is zero.
    standard_errors: Vec<f64>,
    /// Positions of the masked features.
    masked: Vec<u32>,
    groups: Vec<StoredGroup>,
    /// Whether every feature in none of `groups` gets its own group after
    /// them, in column order.
    own_groups_follow: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredGroup {
    name: String,
    contribution: f64,
    members: Vec<Member>,
}

#[derive(Serialize, Deserialize)]
enum Member {
    /// A position in `names`.
    At(u32),
    /// A name that is no feature's (explanations of other origins).
    Named(String),
}

/// The features, in column order, that no group in `groups` holds.
fn outside<'a>(
    features: &'a [ExplainedFeature],
    groups: &[ExplainedGroup],
) -> Vec<&'a ExplainedFeature> {
    let grouped: HashSet<&str> = groups
        .iter()
        .flat_map(|g| g.features.iter().map(String::as_str))
        .collect();
    features
        .iter()
        .filter(|f| !grouped.contains(f.name.as_str()))
        .collect()
}

fn own_group(f: &ExplainedFeature) -> ExplainedGroup {
    ExplainedGroup {
        name: f.name.clone(),
        contribution: f.contribution,
        features: vec![f.name.clone()],
    }
}

/// How many of the last groups are exactly the own groups that reading
/// rebuilds.
fn derived_tail(e: &Explanation) -> usize {
    let own = |g: &ExplainedGroup| g.features.len() == 1 && g.features[0] == g.name;
    let tail = e.groups.iter().rev().take_while(|g| own(g)).count();
    let (kept, last) = e.groups.split_at(e.groups.len() - tail);
    let alone = outside(&e.features, kept);
    let same = alone.len() == tail
        && alone
            .iter()
            .zip(last)
            .all(|(f, g)| f.name == g.name && f.contribution.to_bits() == g.contribution.to_bits());
    if same { tail } else { 0 }
}

pub fn encode(e: &Explanation) -> Vec<u8> {
    let tail = derived_tail(e);
    let groups = &e.groups[..e.groups.len() - tail];
    let positions: HashMap<&str, u32> = e
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i as u32))
        .collect();
    let member = |name: &String| match positions.get(name.as_str()) {
        Some(&i) => Member::At(i),
        None => Member::Named(name.clone()),
    };
    let stored = Stored {
        method: e.method.clone(),
        method_version: e.method_version.clone(),
        output_space: e.output_space.clone(),
        base_value: e.base_value,
        margin: e.margin,
        base_score: e.base_score,
        residual: e.residual,
        ort_difference: e.ort_difference,
        sample_pairs: e.sample_pairs as u64,
        names: e.features.iter().map(|f| f.name.clone()).collect(),
        values: e.features.iter().map(|f| f.value).collect(),
        contributions: e.features.iter().map(|f| f.contribution).collect(),
        standard_errors: if e.features.iter().all(|f| f.standard_error.to_bits() == 0) {
            Vec::new()
        } else {
            e.features.iter().map(|f| f.standard_error).collect()
        },
        masked: (0..e.features.len() as u32)
            .filter(|&i| e.features[i as usize].masked)
            .collect(),
        groups: groups
            .iter()
            .map(|g| StoredGroup {
                name: g.name.clone(),
                contribution: g.contribution,
                members: g.features.iter().map(member).collect(),
            })
            .collect(),
        own_groups_follow: tail > 0,
    };
    postcard::to_allocvec(&stored).expect("plain data serialises")
}

pub fn decode(bytes: &[u8]) -> Result<Explanation, String> {
    let s: Stored = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    let n = s.names.len();
    if s.values.len() != n
        || s.contributions.len() != n
        || !(s.standard_errors.is_empty() || s.standard_errors.len() == n)
    {
        return Err(format!("{n} features, but other lengths"));
    }
    let name = |m: &Member| match m {
        Member::At(i) => s
            .names
            .get(*i as usize)
            .cloned()
            .ok_or_else(|| format!("a group names feature {i} of {n}")),
        Member::Named(name) => Ok(name.clone()),
    };
    let mut groups = s
        .groups
        .iter()
        .map(|g| {
            Ok(ExplainedGroup {
                name: g.name.clone(),
                contribution: g.contribution,
                features: g.members.iter().map(name).collect::<Result<_, String>>()?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let features: Vec<ExplainedFeature> = (0..n)
        .map(|i| ExplainedFeature {
            name: s.names[i].clone(),
            value: s.values[i],
            contribution: s.contributions[i],
            standard_error: s.standard_errors.get(i).copied().unwrap_or(0.0),
            masked: s.masked.contains(&(i as u32)),
        })
        .collect();
    if s.own_groups_follow {
        let own: Vec<ExplainedGroup> = outside(&features, &groups)
            .into_iter()
            .map(own_group)
            .collect();
        groups.extend(own);
    }
    Ok(Explanation {
        method: s.method,
        method_version: s.method_version,
        output_space: s.output_space,
        base_value: s.base_value,
        margin: s.margin,
        base_score: s.base_score,
        residual: s.residual,
        ort_difference: s.ort_difference,
        sample_pairs: usize::try_from(s.sample_pairs).map_err(|e| e.to_string())?,
        features,
        groups,
    })
}

/// An explanation column as read: binary, or JSON text from before the
/// binary form.
/// An explanation's [`encode`]d form, sealed for decision `id`.
pub fn seal(encoded: &[u8], id: &str, cipher: &InputCipher) -> Vec<u8> {
    let sealed = cipher.seal_bytes(id, encoded);
    let mut out = Vec::with_capacity(1 + sealed.len());
    out.push(SEALED);
    out.extend_from_slice(&sealed);
    out
}

/// The explanation stored for decision `id`, sealed or not.
pub fn read(
    value: ValueRef<'_>,
    id: &str,
    cipher: &InputCipher,
) -> Result<Option<Explanation>, String> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Blob([SEALED, sealed @ ..]) => {
            let plain = cipher.open_bytes(id, sealed).map_err(|e| e.to_string())?;
            decode(&plain).map(Some)
        }
        ValueRef::Blob(b) => decode(b).map(Some),
        ValueRef::Text(t) => serde_json::from_slice(t)
            .map(Some)
            .map_err(|e| e.to_string()),
        other => Err(format!("an explanation of type {:?}", other.data_type())),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn feature(i: usize, contribution: f64, standard_error: f64, masked: bool) -> ExplainedFeature {
        ExplainedFeature {
            name: format!("f{i}"),
            value: i as f64 * 0.5,
            contribution,
            standard_error,
            masked,
        }
    }

    fn explained(features: Vec<ExplainedFeature>, groups: Vec<ExplainedGroup>) -> Explanation {
        Explanation {
            method: "tree_shap_path_dependent".into(),
            method_version: "1".into(),
            output_space: "log_odds".into(),
            base_value: -2.5,
            margin: 0.25,
            base_score: 0.1,
            residual: 1e-12,
            ort_difference: 3e-8,
            sample_pairs: 0,
            features,
            groups,
        }
    }

    /// Explanations as attributions make them (declared groups, then one
    /// per remaining feature) and shapes they never take.
    fn explanation() -> impl Strategy<Value = Explanation> {
        (
            prop::collection::vec(
                (
                    -5.0..5.0f64,
                    prop_oneof![Just(0.0), 0.0..1.0f64],
                    any::<bool>(),
                ),
                0..12,
            ),
            prop::collection::vec(
                (prop::collection::vec(0..12usize, 0..4), any::<bool>()),
                0..4,
            ),
            0..3usize,
        )
            .prop_map(|(fs, declared, shape)| {
                let features: Vec<ExplainedFeature> = fs
                    .iter()
                    .enumerate()
                    .map(|(i, &(c, se, m))| feature(i, c, se, m))
                    .collect();
                let n = features.len();
                let mut groups: Vec<ExplainedGroup> = declared
                    .iter()
                    .enumerate()
                    .filter(|_| n > 0)
                    .map(|(k, (members, own_name))| {
                        // Position 11 stands for a name that is no feature's.
                        let names: Vec<String> = members
                            .iter()
                            .map(|&i| {
                                if i == 11 {
                                    "elsewhere".to_owned()
                                } else {
                                    features[i % n].name.clone()
                                }
                            })
                            .collect();
                        ExplainedGroup {
                            // A declared group may bear its only member's name.
                            name: if *own_name && names.len() == 1 {
                                names[0].clone()
                            } else {
                                format!("g{k}")
                            },
                            contribution: members
                                .iter()
                                .map(|&i| features[i % n].contribution)
                                .sum(),
                            features: names,
                        }
                    })
                    .collect();
                let own: Vec<ExplainedGroup> = outside(&features, &groups)
                    .into_iter()
                    .map(own_group)
                    .collect();
                match shape {
                    0 => groups.extend(own),
                    // Out of column order: nothing may be left out.
                    1 => groups.extend(own.into_iter().rev()),
                    _ => {}
                }
                Explanation {
                    sample_pairs: shape * 64,
                    ..explained(features, groups)
                }
            })
    }

    proptest! {
        #[test]
        fn every_explanation_reads_back_exactly(e in explanation()) {
            prop_assert_eq!(decode(&encode(&e)).unwrap(), e);
        }

        #[test]
        fn any_bytes_decode_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let _ = read(ValueRef::Blob(&bytes), "d", &InputCipher::new(&[1; 32]));
        }

        /// Sealed, an explanation reads back only for its own decision and
        /// under its key; one stored before sealing still reads.
        #[test]
        fn a_sealed_explanation_reads_back_for_its_decision_only(e in explanation()) {
            let cipher = InputCipher::new(&[3; 32]);
            let sealed = seal(&encode(&e), "d1", &cipher);
            prop_assert_eq!(read(ValueRef::Blob(&sealed), "d1", &cipher).unwrap(), Some(e.clone()));
            prop_assert!(read(ValueRef::Blob(&sealed), "d2", &cipher).is_err());
            prop_assert!(read(ValueRef::Blob(&sealed), "d1", &InputCipher::new(&[4; 32])).is_err());
            prop_assert_eq!(read(ValueRef::Blob(&encode(&e)), "d1", &cipher).unwrap(), Some(e));
        }
    }

    #[test]
    fn an_attribution_of_many_features_takes_a_quarter_of_its_json() {
        let features: Vec<ExplainedFeature> = (0..85)
            .map(|i| feature(i, 0.01 * i as f64, 0.0, false))
            .collect();
        let groups = features.iter().map(own_group).collect();
        let e = explained(features, groups);
        let binary = encode(&e).len();
        let json = serde_json::to_string(&e).unwrap().len();
        assert!(binary * 4 <= json, "{binary} bytes against {json} as JSON");
    }
}
