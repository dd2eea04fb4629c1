//! Reading an audit data set: a CSV with the model's features by name, the
//! group columns and, optionally, a 0/1 label. Features are checked against
//! the manifest exactly as a request's would be; group columns are read as
//! text and never reach the model.

use std::{collections::HashMap, path::Path};

use sha2::{Digest, Sha256};

use super::{AuditError, GroupColumn};
use crate::models::{package::Rows, schema::FeatureSchema};

/// The rows of an audit data set, split into what the model sees and what
/// only the audit sees.
#[derive(Debug)]
pub struct AuditData {
    pub rows: Rows,
    /// One value per row for each group column, in the order asked for.
    pub groups: Vec<Vec<String>>,
    pub labels: Option<Vec<bool>>,
    pub sha256: String,
}

/// How data sets write a missing value ("NA" is left out: it may be North
/// America).
const MISSING: [&str; 3] = ["n/a", "nan", "null"];

/// Reads `path`; `label` names the label column, if any.
pub fn read(
    path: &Path,
    within: Option<&Path>,
    schema: &FeatureSchema,
    group_columns: &[GroupColumn],
    label: Option<&str>,
) -> Result<AuditData, AuditError> {
    let bytes = match within {
        Some(package) => crate::models::package::read_in_package(package, path)
            .map_err(|e| AuditError::data(path, e.message))?,
        // A pipe would wait for a writer for ever.
        None if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) => {
            return Err(AuditError::data(path, "is not a regular file".into()));
        }
        None => {
            std::fs::read(path).map_err(|e| AuditError::data(path, format!("cannot read: {e}")))?
        }
    };
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let mut header: HashMap<String, usize> = HashMap::new();
    for (i, name) in reader
        .headers()
        .map_err(|e| AuditError::data(path, format!("bad header: {e}")))?
        .iter()
        .enumerate()
    {
        // Which of two columns of one name the audit read would be a guess.
        if let Some(first) = header.insert(name.to_owned(), i) {
            return Err(AuditError::data(
                path,
                format!(
                    "column {name:?} is named twice (columns {} and {})",
                    first + 1,
                    i + 1
                ),
            ));
        }
    }
    let column = |name: &str| {
        header
            .get(name)
            .copied()
            .ok_or_else(|| AuditError::data(path, format!("has no column {name:?}")))
    };
    let features = schema
        .columns()
        .iter()
        .map(|f| column(&f.name))
        .collect::<Result<Vec<_>, _>>()?;
    let group_at = group_columns
        .iter()
        .map(|g| column(&g.column))
        .collect::<Result<Vec<_>, _>>()?;
    let label_at = label.map(column).transpose()?;

    let mut values = Vec::new();
    let mut groups = vec![Vec::new(); group_columns.len()];
    let mut labels = label_at.map(|_| Vec::new());
    for (r, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let detail = match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!("has {len} fields, the header {expected_len}"),
                _ => e.to_string(),
            };
            AuditError::data(path, format!("row {}: {detail}", r + 1))
        })?;
        let at = |c: &str| format!("row {}, column {c}", r + 1);
        for (c, (&i, spec)) in features.iter().zip(schema.columns()).enumerate() {
            let cell = record[i].trim();
            let value = if cell.is_empty() || cell.eq_ignore_ascii_case("nan") {
                f64::NAN
            } else {
                cell.parse().map_err(|_| {
                    AuditError::data(
                        path,
                        format!("{}: {cell:?} is not a number", at(&spec.name)),
                    )
                })?
            };
            schema
                .check_numeric(c, value)
                .map_err(|p| AuditError::data(path, format!("{}: {p}", at(&spec.name))))?;
            values.push(value as f32);
        }
        for ((&i, out), g) in group_at.iter().zip(&mut groups).zip(group_columns) {
            let cell = record[i].trim();
            // A missing value is no group: counted as one, it would be
            // compared with the people whose group is known.
            if cell.is_empty() || MISSING.iter().any(|m| cell.eq_ignore_ascii_case(m)) {
                return Err(AuditError::data(
                    path,
                    format!("{}: no group ({cell:?})", at(&g.column)),
                ));
            }
            if cell.chars().any(crate::printable::unprintable) {
                return Err(AuditError::data(
                    path,
                    format!(
                        "{}: a group name holds a control or invisible character",
                        at(&g.column)
                    ),
                ));
            }
            out.push(cell.to_owned());
        }
        if let (Some(i), Some(out), Some(name)) = (label_at, labels.as_mut(), label) {
            // A label column written from a float column reads 0.0 / 1.0.
            out.push(match record[i].trim() {
                "1" | "1.0" => true,
                "0" | "0.0" => false,
                other => {
                    return Err(AuditError::data(
                        path,
                        format!("{}: label {other:?} is not 0 or 1", at(name)),
                    ));
                }
            });
        }
    }
    if values.is_empty() {
        return Err(AuditError::data(path, "has no rows".to_owned()));
    }
    Ok(AuditData {
        rows: Rows {
            width: schema.width(),
            values,
        },
        groups,
        labels,
        sha256,
    })
}
