//! Typed validation of named request features into a model's input row.
//!
//! Every value is checked against the manifest before it can reach a model:
//! unknown, missing, wrongly typed, out-of-range and non-finite values are
//! rejected with the feature's name, so clients learn exactly what to fix.

use rustc_hash::FxHashMap;

use super::manifest::{FeatureGroup, FeatureSpec, FeatureType, Manifest};

/// A feature value as a client sent it, before it is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue {
    Number(f64),
    Integer(i64),
    Category(String),
    Missing,
}

/// Named feature values for one row, in any order.
pub type Features = Vec<(String, FeatureValue)>;

/// One row as a client gave it: by name, or by position in column order.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureRow {
    Named(Features),
    /// Values in the model's column order; NaN means missing.
    Positional(Vec<f64>),
}

/// What is wrong with one feature value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureProblem {
    #[error("is not an input of this model")]
    Unknown,
    #[error("values: {got} positional values given, the model has {want} features")]
    Width { got: usize, want: usize },
    #[error("is missing, and this model does not accept a missing value for it")]
    Missing,
    #[error("has the wrong type: expected {expected}, got {got}")]
    WrongType {
        expected: &'static str,
        got: &'static str,
    },
    #[error("is not finite")]
    NonFinite,
    #[error(
        "value {} does not fit the model's float32 input (largest magnitude 3.4028235e38)",
        Number(*value)
    )]
    BeyondFloat32 { value: f64 },
    #[error(
        "value {} is outside the allowed range [{}, {}]",
        Number(*value),
        Number(*min),
        Number(*max)
    )]
    OutOfRange { value: f64, min: f64, max: f64 },
    #[error("value {value} is not one of the allowed categories")]
    UnknownCategory { value: String },
}

/// A number as a message shows it: plainly, unless its plain form runs to
/// hundreds of digits (1e300 is sent by clients probing the limits).
struct Number(f64);

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let magnitude = self.0.abs();
        if magnitude != 0.0 && !(1e-6..1e15).contains(&magnitude) {
            write!(f, "{:e}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// A rejected feature, named.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureError {
    pub name: String,
    /// The column, when the row came as positional values: the client's
    /// field is then `values[column]`.
    pub column: Option<usize>,
    pub problem: FeatureProblem,
}

impl std::fmt::Display for FeatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.problem, self.column) {
            (FeatureProblem::Width { .. }, _) => write!(f, "{}", self.problem),
            (_, Some(column)) => write!(f, "values[{column}] ({}) {}", self.name, self.problem),
            (_, None) => write!(f, "features[{:?}] {}", self.name, self.problem),
        }
    }
}

impl std::error::Error for FeatureError {}

/// The checked input layout of one model.
#[derive(Debug)]
pub struct FeatureSchema {
    /// Features in tensor column order.
    columns: Vec<FeatureSpec>,
    by_name: FxHashMap<String, usize>,
    /// The view explanations sum attributions by, worked out once here
    /// rather than by name on every decision: the manifest's groups, then
    /// one group for each column in none, in column order.
    groups: Vec<ColumnGroup>,
}

/// A group of columns whose attributions an explanation sums.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnGroup {
    pub name: String,
    /// Positions, in the manifest's order.
    pub members: Vec<usize>,
}

impl FeatureSchema {
    pub fn new(manifest: &Manifest) -> Self {
        let columns: Vec<FeatureSpec> = manifest
            .features_by_position()
            .into_iter()
            .cloned()
            .collect();
        Self::grouped(columns, &manifest.groups)
    }

    /// `columns` in position order; `groups` validated (members declared,
    /// in one group at most).
    fn grouped(columns: Vec<FeatureSpec>, declared: &[FeatureGroup]) -> Self {
        let by_name = columns
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect::<FxHashMap<String, usize>>();
        let mut groups: Vec<ColumnGroup> = declared
            .iter()
            .map(|g| ColumnGroup {
                name: g.name.clone(),
                // Validation made every member a declared feature.
                members: g
                    .features
                    .iter()
                    .filter_map(|f| by_name.get(f).copied())
                    .collect(),
            })
            .collect();
        let grouped: Vec<usize> = groups.iter().flat_map(|g| g.members.clone()).collect();
        groups.extend(
            (0..columns.len())
                .filter(|i| !grouped.contains(i))
                .map(|i| ColumnGroup {
                    name: columns[i].name.clone(),
                    members: vec![i],
                }),
        );
        Self {
            columns,
            by_name,
            groups,
        }
    }

    pub fn groups(&self) -> &[ColumnGroup] {
        &self.groups
    }

    pub fn width(&self) -> usize {
        self.columns.len()
    }

    pub fn columns(&self) -> &[FeatureSpec] {
        &self.columns
    }

    /// Appends one validated row, in column order, to `out`; `out` is left as
    /// it was on error.
    pub fn encode_row(&self, row: &FeatureRow, out: &mut Vec<f32>) -> Result<(), FeatureError> {
        match row {
            FeatureRow::Named(features) => self.encode_into(features, out),
            FeatureRow::Positional(values) => self.encode_positional(values, out),
        }
    }

    fn encode_positional(&self, values: &[f64], out: &mut Vec<f32>) -> Result<(), FeatureError> {
        if values.len() != self.columns.len() {
            let problem = FeatureProblem::Width {
                got: values.len(),
                want: self.columns.len(),
            };
            return Err(FeatureError {
                name: String::new(),
                column: None,
                problem,
            });
        }
        let start = out.len();
        for (column, (spec, &v)) in self.columns.iter().zip(values).enumerate() {
            let value = if v.is_nan() {
                FeatureValue::Missing
            } else {
                FeatureValue::Number(v)
            };
            match encode_value(spec, &value) {
                Ok(x) => out.push(x),
                Err(problem) => {
                    out.truncate(start);
                    return Err(FeatureError {
                        name: spec.name.clone(),
                        column: Some(column),
                        problem,
                    });
                }
            }
        }
        Ok(())
    }

    /// Appends one validated row, in column order, to `out`. A name given
    /// more than once counts with its last value, as in a protobuf map. On
    /// error `out` is left as it was. When several features are wrong, the
    /// one reported is chosen deterministically (unknown names first, then
    /// by position), so the same request always gets the same answer.
    pub fn encode_into(&self, features: &Features, out: &mut Vec<f32>) -> Result<(), FeatureError> {
        let start = out.len();
        out.resize(start + self.columns.len(), f32::NAN);
        let row = &mut out[start..];
        // Per column: not given, given a valid value, or given a bad one.
        let mut given: Vec<Option<bool>> = vec![None; self.columns.len()];
        let mut ok = true;
        for (name, value) in features {
            let Some(&col) = self.by_name.get(name.as_str()) else {
                ok = false;
                break;
            };
            let valid = encode_value(&self.columns[col], value).map(|v| row[col] = v);
            given[col] = Some(valid.is_ok());
        }
        for (col, spec) in self.columns.iter().enumerate() {
            match given[col] {
                Some(valid) => ok &= valid,
                None if ok => match encode_value(spec, &FeatureValue::Missing) {
                    Ok(v) => row[col] = v,
                    Err(_) => ok = false,
                },
                None => {}
            }
        }
        if ok {
            return Ok(());
        }
        out.truncate(start);
        Err(self.first_error(features))
    }

    /// The error to report for a row the fast path rejected.
    fn first_error(&self, features: &Features) -> FeatureError {
        let error = |name: &str, problem| FeatureError {
            name: name.to_owned(),
            column: None,
            problem,
        };
        if let Some((name, _)) = features
            .iter()
            .filter(|(n, _)| !self.by_name.contains_key(n.as_str()))
            .min_by(|a, b| a.0.cmp(&b.0))
        {
            return error(name, FeatureProblem::Unknown);
        }
        let mut given: Vec<Option<&FeatureValue>> = vec![None; self.columns.len()];
        for (name, value) in features {
            given[self.by_name[name.as_str()]] = Some(value);
        }
        for (col, spec) in self.columns.iter().enumerate() {
            if let Err(problem) = encode_value(spec, given[col].unwrap_or(&FeatureValue::Missing)) {
                return error(&spec.name, problem);
            }
        }
        unreachable!("first_error is only called for a row the fast path rejected")
    }

    /// Checks an already numeric value, e.g. from a background or golden file.
    pub fn check_numeric(&self, column: usize, value: f64) -> Result<(), FeatureProblem> {
        let value = if value.is_nan() {
            FeatureValue::Missing
        } else {
            FeatureValue::Number(value)
        };
        encode_value(&self.columns[column], &value).map(|_| ())
    }
}

fn encode_value(spec: &FeatureSpec, value: &FeatureValue) -> Result<f32, FeatureProblem> {
    let number = match (spec.kind, value) {
        (_, FeatureValue::Missing) => {
            return if spec.missing_allowed {
                Ok(f32::NAN)
            } else {
                Err(FeatureProblem::Missing)
            };
        }
        (FeatureType::Float, FeatureValue::Number(v)) => *v,
        (_, FeatureValue::Integer(v)) => *v as f64,
        (FeatureType::Integer | FeatureType::Categorical, FeatureValue::Number(v)) => {
            if !v.is_finite() {
                return Err(FeatureProblem::NonFinite);
            }
            if v.fract() != 0.0 {
                return Err(FeatureProblem::WrongType {
                    expected: spec.kind.as_str(),
                    got: "a fractional number",
                });
            }
            *v
        }
        // Manifests declare categories as integer codes: a label is a
        // code's decimal text.
        (FeatureType::Categorical, FeatureValue::Category(label)) => match label.parse::<i64>() {
            Ok(code) => code as f64,
            Err(_) => {
                return Err(FeatureProblem::UnknownCategory {
                    value: format!("{label:?}"),
                });
            }
        },
        (_, FeatureValue::Category(_)) => {
            return Err(FeatureProblem::WrongType {
                expected: spec.kind.as_str(),
                got: "a category label",
            });
        }
    };
    if !number.is_finite() {
        return Err(FeatureProblem::NonFinite);
    }
    if spec.kind == FeatureType::Categorical {
        // Codes are integral here, so the exact comparison is sound.
        return if spec.categories.iter().any(|&c| c as f64 == number) {
            Ok(number as f32)
        } else {
            Err(FeatureProblem::UnknownCategory {
                value: number.to_string(),
            })
        };
    }
    let (min, max) = (spec.min.unwrap_or(f64::MIN), spec.max.unwrap_or(f64::MAX));
    if number < min || number > max {
        return Err(FeatureProblem::OutOfRange {
            value: number,
            min,
            max,
        });
    }
    let narrowed = number as f32;
    if !narrowed.is_finite() {
        return Err(FeatureProblem::BeyondFloat32 { value: number });
    }
    Ok(narrowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::manifest::{DataCategory, DataSource};

    #[test]
    fn out_of_range_values_are_shown_readably() {
        let shown = |value| {
            FeatureProblem::OutOfRange {
                value,
                min: 1.0,
                max: 10.0,
            }
            .to_string()
        };
        assert_eq!(shown(99.0), "value 99 is outside the allowed range [1, 10]");
        assert_eq!(
            shown(-0.5),
            "value -0.5 is outside the allowed range [1, 10]"
        );
        assert_eq!(
            shown(1e300),
            "value 1e300 is outside the allowed range [1, 10]"
        );
        assert_eq!(
            shown(-2.5e-9),
            "value -2.5e-9 is outside the allowed range [1, 10]"
        );
    }

    fn spec(name: &str, position: usize, kind: FeatureType) -> FeatureSpec {
        FeatureSpec {
            name: name.into(),
            position,
            kind,
            categories: if kind == FeatureType::Categorical {
                vec![1, 2, 3]
            } else {
                vec![]
            },
            min: (kind != FeatureType::Categorical).then_some(0.0),
            max: (kind != FeatureType::Categorical).then_some(9.0),
            missing_allowed: false,
            description: name.into(),
            category: DataCategory::Income,
            proxy_for: None,
            source: DataSource::FirstParty,
            reason_group: None,
            reason: Default::default(),
        }
    }

    fn schema() -> FeatureSchema {
        let columns = vec![
            spec("f", 0, FeatureType::Float),
            spec("i", 1, FeatureType::Integer),
            spec("c", 2, FeatureType::Categorical),
        ];
        FeatureSchema::grouped(columns, &[])
    }

    /// As in a protobuf map, the last value given for a name is the one that
    /// counts, whether an earlier one was valid or not.
    #[test]
    fn a_name_given_twice_counts_with_its_last_value() {
        let schema = schema();
        let row = |f: &[(&str, FeatureValue)]| -> Features {
            f.iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect()
        };
        let encode = |features: &Features| {
            let mut out = vec![];
            schema.encode_into(features, &mut out).map(|()| out)
        };
        let base = [
            ("i", FeatureValue::Integer(2)),
            ("c", FeatureValue::Integer(3)),
        ];
        let bad_then_good = row(&[
            &base[..],
            &[
                ("f", FeatureValue::Number(99.0)),
                ("f", FeatureValue::Number(1.5)),
            ],
        ]
        .concat());
        assert_eq!(encode(&bad_then_good).unwrap(), [1.5, 2.0, 3.0]);
        let good_then_bad = row(&[
            &base[..],
            &[
                ("f", FeatureValue::Number(1.5)),
                ("f", FeatureValue::Number(99.0)),
            ],
        ]
        .concat());
        let e = encode(&good_then_bad).unwrap_err();
        assert_eq!(e.name, "f");
        assert!(
            matches!(e.problem, FeatureProblem::OutOfRange { value, .. } if value == 99.0),
            "{e:?}"
        );
    }

    /// The group view: declared groups with their members in the
    /// manifest's order, then each ungrouped column alone, in column order.
    #[test]
    fn groups_hold_declared_members_then_each_other_column_alone() {
        let columns = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, name)| spec(name, i, FeatureType::Float))
            .collect();
        let declared = FeatureGroup {
            name: "db".into(),
            description: String::new(),
            features: vec!["d".into(), "b".into()],
        };
        let schema = FeatureSchema::grouped(columns, &[declared]);
        let view: Vec<(&str, &[usize])> = schema
            .groups()
            .iter()
            .map(|g| (g.name.as_str(), g.members.as_slice()))
            .collect();
        assert_eq!(view, [("db", &[3, 1][..]), ("a", &[0]), ("c", &[2])]);
    }

    fn row(f: FeatureValue, i: FeatureValue, c: FeatureValue) -> Features {
        [
            ("f".to_owned(), f),
            ("i".to_owned(), i),
            ("c".to_owned(), c),
        ]
        .into_iter()
        .collect()
    }

    /// A float with no declared range may still be too large for the
    /// model's float32 input: that is said, not "not finite".
    #[test]
    fn a_number_beyond_float32_is_named_as_such() {
        let mut unbounded = spec("f", 0, FeatureType::Float);
        (unbounded.min, unbounded.max) = (None, None);
        let problem = encode_value(&unbounded, &FeatureValue::Number(-1e39)).unwrap_err();
        assert_eq!(problem, FeatureProblem::BeyondFloat32 { value: -1e39 });
        assert_eq!(
            problem.to_string(),
            "value -1e39 does not fit the model's float32 input (largest magnitude 3.4028235e38)"
        );
        assert_eq!(
            encode_value(&unbounded, &FeatureValue::Number(3e38)),
            Ok(3e38)
        );
    }

    #[test]
    fn encodes_in_column_order() {
        let mut out = vec![];
        let features = row(
            FeatureValue::Number(1.5),
            FeatureValue::Number(2.0),
            FeatureValue::Integer(3),
        );
        schema().encode_into(&features, &mut out).unwrap();
        assert_eq!(out, vec![1.5, 2.0, 3.0]);
    }

    #[test]
    fn names_the_bad_feature() {
        use FeatureValue::*;
        let ok = || row(Number(1.0), Integer(1), Integer(1));
        let cases: Vec<(Features, &str, FeatureProblem)> = vec![
            (
                {
                    let mut r = ok();
                    r.push(("zz".into(), Integer(1)));
                    r
                },
                "zz",
                FeatureProblem::Unknown,
            ),
            (
                {
                    let mut r = ok();
                    r.retain(|(n, _)| n != "i");
                    r
                },
                "i",
                FeatureProblem::Missing,
            ),
            (
                row(Number(1.0), Number(1.5), Integer(1)),
                "i",
                FeatureProblem::WrongType {
                    expected: "integer",
                    got: "a fractional number",
                },
            ),
            (
                row(Category("x".into()), Integer(1), Integer(1)),
                "f",
                FeatureProblem::WrongType {
                    expected: "float",
                    got: "a category label",
                },
            ),
            (
                row(Number(f64::NAN), Integer(1), Integer(1)),
                "f",
                FeatureProblem::NonFinite,
            ),
            (
                row(Number(f64::INFINITY), Integer(1), Integer(1)),
                "f",
                FeatureProblem::NonFinite,
            ),
            (
                row(Number(1.0), Integer(10), Integer(1)),
                "i",
                FeatureProblem::OutOfRange {
                    value: 10.0,
                    min: 0.0,
                    max: 9.0,
                },
            ),
            (
                row(Number(1.0), Integer(1), Integer(7)),
                "c",
                FeatureProblem::UnknownCategory { value: "7".into() },
            ),
            (
                row(Number(1.0), Integer(1), Category("seven".into())),
                "c",
                FeatureProblem::UnknownCategory {
                    value: "\"seven\"".into(),
                },
            ),
            (
                row(Number(1.0), Category("1".into()), Integer(1)),
                "i",
                FeatureProblem::WrongType {
                    expected: "integer",
                    got: "a category label",
                },
            ),
        ];
        for (features, name, problem) in cases {
            let mut out = vec![0.5];
            let err = schema().encode_into(&features, &mut out).unwrap_err();
            assert_eq!((err.name.as_str(), &err.problem), (name, &problem));
            assert_eq!(
                out,
                vec![0.5],
                "a rejected row must leave the buffer untouched"
            );
        }
    }

    /// `FeatureValue.category` carries a categorical label: the code's
    /// decimal text, since manifests declare integer codes.
    #[test]
    fn a_category_label_is_its_code() {
        use FeatureValue::*;
        let row = |c: FeatureValue| {
            FeatureRow::Named(
                [("f", Number(1.0)), ("i", Integer(1)), ("c", c)]
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v))
                    .collect(),
            )
        };
        let (mut by_label, mut by_code) = (vec![], vec![]);
        schema()
            .encode_row(&row(Category("1".into())), &mut by_label)
            .unwrap();
        schema().encode_row(&row(Integer(1)), &mut by_code).unwrap();
        assert_eq!(by_label, by_code);
    }

    #[test]
    fn positional_rows_are_checked_like_named_ones() {
        let s = schema();
        let mut out = vec![];
        s.encode_row(&FeatureRow::Positional(vec![1.5, 2.0, 3.0]), &mut out)
            .unwrap();
        assert_eq!(out, vec![1.5, 2.0, 3.0]);
        let err = s
            .encode_row(&FeatureRow::Positional(vec![1.5, 2.5, 3.0]), &mut out)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "values[1] (i) has the wrong type: expected integer, got a fractional number"
        );
        let err = s
            .encode_row(&FeatureRow::Positional(vec![1.5, f64::NAN, 3.0]), &mut out)
            .unwrap_err();
        assert_eq!(err.problem, FeatureProblem::Missing);
        let err = s
            .encode_row(&FeatureRow::Positional(vec![1.0]), &mut out)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "values: 1 positional values given, the model has 3 features"
        );
        assert_eq!(out, vec![1.5, 2.0, 3.0]);
    }

    #[test]
    fn missing_is_nan_where_allowed() {
        let mut s = schema();
        s.columns[0].missing_allowed = true;
        let mut out = vec![];
        s.encode_into(
            &row(
                FeatureValue::Missing,
                FeatureValue::Integer(1),
                FeatureValue::Integer(2),
            ),
            &mut out,
        )
        .unwrap();
        assert!(out[0].is_nan());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn value() -> impl Strategy<Value = FeatureValue> {
            prop_oneof![
                any::<f64>().prop_map(FeatureValue::Number),
                (-20i64..20).prop_map(FeatureValue::Integer),
                any::<i64>().prop_map(FeatureValue::Integer),
                "[a-z]{0,3}".prop_map(FeatureValue::Category),
                Just(FeatureValue::Missing),
            ]
        }

        fn row() -> impl Strategy<Value = Features> {
            proptest::collection::vec(("[a-z]{1}|f|i|c", value()), 0..6)
        }

        fn distinct_row() -> impl Strategy<Value = Features> {
            row().prop_map(|features| {
                let mut seen = std::collections::HashSet::new();
                features
                    .into_iter()
                    .filter(|(name, _)| seen.insert(name.clone()))
                    .collect()
            })
        }

        proptest! {
            /// Any row either encodes to exactly one value per column or is
            /// rejected leaving the buffer untouched; it never panics.
            #[test]
            fn never_panics_and_never_leaves_a_partial_row(features in row()) {
                let s = schema();
                let mut out = vec![7.0];
                match s.encode_row(&FeatureRow::Named(features), &mut out) {
                    Ok(()) => prop_assert_eq!(out.len(), 1 + s.width()),
                    Err(_) => prop_assert_eq!(out, vec![7.0]),
                }
            }

            /// The verdict, and the feature named in an error, do not depend
            /// on the order the client sent the features in (each name once:
            /// a repeated name counts with its last value).
            #[test]
            fn the_answer_does_not_depend_on_feature_order(features in distinct_row(), seed in any::<u64>()) {
                let s = schema();
                let mut shuffled = features.clone();
                let n = shuffled.len();
                if n > 1 {
                    shuffled.rotate_left((seed as usize) % n);
                    shuffled.swap(0, (seed as usize / 7) % n);
                }
                let (mut a, mut b) = (vec![], vec![]);
                let ra = s.encode_row(&FeatureRow::Named(features), &mut a);
                let rb = s.encode_row(&FeatureRow::Named(shuffled), &mut b);
                prop_assert_eq!(ra, rb);
                prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
            }

            #[test]
            fn positional_rows_never_panic(values in proptest::collection::vec(any::<f64>(), 0..6)) {
                let s = schema();
                let mut out = vec![];
                match s.encode_row(&FeatureRow::Positional(values), &mut out) {
                    Ok(()) => prop_assert_eq!(out.len(), s.width()),
                    Err(_) => prop_assert!(out.is_empty()),
                }
            }
        }
    }
}
