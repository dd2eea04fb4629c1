//! Shadow outputs and attribution drift.
//!
//! A shadow version scores the same requests as production without its
//! answer going anywhere but here: each output is stored beside the live
//! decision's id with both versions' attributions for that request, so the
//! drift report can compare them pairwise. A canary serves its own subjects,
//! so its drift is read from the decision record instead: each version's
//! recorded attributions over the same window.
//!
//! Shadow rows carry the subject's pseudonym and the decision's retention,
//! so erasure and the purge remove them with the decision.

use std::collections::BTreeMap;

use rusqlite::{Connection, params, types::ValueRef};

use super::{Explanation, crypto::InputCipher, json, stored};
use crate::store::StoreError;

pub(crate) const DDL: &str = "
CREATE TABLE IF NOT EXISTS shadow_outputs (
    decision_id     TEXT NOT NULL,
    model_name      TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    model_sha256    TEXT NOT NULL,
    subject_ref     TEXT,
    decided_at      INTEGER NOT NULL,
    score           REAL NOT NULL,
    -- Binary (decisions::stored); JSON text in rows written before it.
    explanation     BLOB NOT NULL,
    -- Sealed (seal_live); JSON text in rows written before it.
    live_contributions BLOB NOT NULL,
    retain_until    INTEGER NOT NULL,
    PRIMARY KEY (decision_id, model_version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shadow_model ON shadow_outputs(model_name, model_version, decided_at);
CREATE INDEX IF NOT EXISTS shadow_subject ON shadow_outputs(subject_ref);
CREATE INDEX IF NOT EXISTS shadow_retention ON shadow_outputs(retain_until);
";

/// Per-feature contributions by feature name.
pub type Contributions = BTreeMap<String, f64>;

/// What one shadow version answered for one live decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowRow {
    pub decision_id: String,
    pub model_name: String,
    pub model_version: String,
    pub model_sha256: String,
    pub subject_ref: Option<String>,
    pub decided_at_ms: i64,
    pub score: f64,
    pub explanation: Explanation,
    /// The live version's attributions for the same request.
    pub live: Contributions,
    pub retain_until_ms: i64,
}

pub fn contributions(e: &Explanation) -> Contributions {
    e.features
        .iter()
        .map(|f| (f.name.clone(), f.contribution))
        .collect()
}

pub(crate) fn insert(
    conn: &Connection,
    rows: &[ShadowRow],
    cipher: Option<&InputCipher>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO shadow_outputs (decision_id, model_name, model_version,
           model_sha256, subject_ref, decided_at, score, explanation, live_contributions,
           retain_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for r in rows {
        stmt.execute(params![
            r.decision_id,
            r.model_name,
            r.model_version,
            r.model_sha256,
            r.subject_ref,
            r.decided_at_ms,
            r.score,
            stored::seal(
                &stored::encode(&r.explanation),
                &r.decision_id,
                cipher.ok_or(StoreError::NoInputKey)?
            ),
            seal_live(
                &r.decision_id,
                &r.live,
                cipher.ok_or(StoreError::NoInputKey)?
            ),
            r.retain_until_ms,
        ])?;
    }
    Ok(())
}

pub(crate) fn erase_subject(conn: &Connection, subject: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM shadow_outputs WHERE subject_ref = ?1")?
        .execute([subject])?;
    Ok(())
}

/// Deletes up to `at_once` shadow outputs past their retention.
pub(crate) fn purge(conn: &Connection, now_ms: i64, at_once: usize) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM shadow_outputs WHERE (decision_id, model_version) IN
         (SELECT decision_id, model_version FROM shadow_outputs
          WHERE retain_until < ?1 ORDER BY retain_until LIMIT ?2)",
    )?
    .execute(params![now_ms, at_once as i64])?;
    Ok(())
}

fn corrupt(id: &str, message: String) -> StoreError {
    StoreError::Corrupt {
        record_id: id.to_owned(),
        message,
    }
}

/// The live decision's attributions, sealed like the shadow's own: for a
/// linear model they give back the inputs (φᵢ = wᵢ(xᵢ − μᵢ)). Bound to the
/// decision and to this column, so that neither stands in for the other.
fn seal_live(id: &str, live: &Contributions, cipher: &InputCipher) -> Vec<u8> {
    cipher.seal_bytes(&live_aad(id), json(live).as_bytes())
}

fn live_aad(id: &str) -> String {
    format!("{id} live contributions")
}

/// The live attributions stored beside a shadow output, sealed or (written
/// before they were sealed) in clear.
fn read_live(
    id: &str,
    value: ValueRef<'_>,
    cipher: &InputCipher,
) -> Result<Contributions, StoreError> {
    let plain = match value {
        ValueRef::Blob(sealed) => cipher
            .open_bytes(&live_aad(id), sealed)
            .map_err(|e| corrupt(id, e.to_string()))?,
        ValueRef::Text(text) => text.to_vec(),
        other => {
            return Err(corrupt(
                id,
                format!("live contributions of type {:?}", other.data_type()),
            ));
        }
    };
    serde_json::from_slice(&plain).map_err(|e| corrupt(id, e.to_string()))
}

/// Seals the live attributions that shadow outputs written before they
/// were sealed still hold in clear; once, then a marker says it is done.
pub(crate) fn seal_clear_live(
    conn: &Connection,
    cipher: &InputCipher,
) -> Result<usize, StoreError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let done: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'shadow_live_sealed')",
        [],
        |r| r.get(0),
    )?;
    if done {
        return Ok(0);
    }
    let clear: Vec<(String, String, String)> = tx
        .prepare(
            "SELECT decision_id, model_version, live_contributions FROM shadow_outputs
             WHERE typeof(live_contributions) = 'text'",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (id, version, live) in &clear {
        let live: Contributions =
            serde_json::from_str(live).map_err(|e| corrupt(id, e.to_string()))?;
        tx.execute(
            "UPDATE shadow_outputs SET live_contributions = ?1
             WHERE decision_id = ?2 AND model_version = ?3",
            params![seal_live(id, &live, cipher), id, version],
        )?;
    }
    tx.execute_batch("CREATE TABLE shadow_live_sealed (id INTEGER PRIMARY KEY)")?;
    tx.commit()?;
    Ok(clear.len())
}

/// An explanation column the query guarantees is set.
fn recorded_explanation(
    id: &str,
    value: ValueRef<'_>,
    cipher: &InputCipher,
) -> Result<Explanation, StoreError> {
    stored::read(value, id, cipher)
        .and_then(|e| e.ok_or_else(|| "no explanation".to_owned()))
        .map_err(|message| corrupt(id, message))
}

/// Every shadow output recorded for one decision, by version.
pub fn for_decision(
    conn: &Connection,
    id: &str,
    cipher: &InputCipher,
) -> Result<Vec<ShadowRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT model_name, model_version, model_sha256, subject_ref, decided_at, score,
                explanation, live_contributions, retain_until
         FROM shadow_outputs WHERE decision_id = ?1 AND retain_until > ?2
         ORDER BY model_version",
    )?;
    // Past its retention an output is gone, whether or not the purge has
    // deleted it yet.
    let rows = stmt.query_map(params![id, crate::store::now_ms()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, f64>(5)?,
            recorded_explanation(id, r.get_ref(6)?, cipher),
            read_live(id, r.get_ref(7)?, cipher),
            r.get::<_, i64>(8)?,
        ))
    })?;
    rows.map(|r| {
        let (name, version, sha, subject, at, score, explanation, live, retain) = r?;
        Ok(ShadowRow {
            decision_id: id.to_owned(),
            model_name: name,
            model_version: version,
            model_sha256: sha,
            subject_ref: subject,
            decided_at_ms: at,
            score,
            explanation: explanation?,
            live: live?,
            retain_until_ms: retain,
        })
    })
    .collect()
}

/// Rows a drift report reads at most, newest first: enough for stable
/// means, bounded in time.
pub const DRIFT_ROWS: usize = 50_000;

/// Running sums of |φ| per feature.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MeanAbs {
    pub count: u64,
    sums: BTreeMap<String, f64>,
}

impl MeanAbs {
    pub fn add(&mut self, contributions: &Contributions) {
        self.count += 1;
        for (name, phi) in contributions {
            *self.sums.entry(name.clone()).or_default() += phi.abs();
        }
    }

    fn means(&self) -> BTreeMap<&str, f64> {
        let n = self.count.max(1) as f64;
        self.sums.iter().map(|(k, s)| (k.as_str(), s / n)).collect()
    }
}

/// The live and candidate attributions a drift report compares.
pub fn shadow_pairs(
    conn: &Connection,
    model: &str,
    live_version: &str,
    version: &str,
    since_ms: i64,
    cipher: &InputCipher,
) -> Result<(MeanAbs, MeanAbs), StoreError> {
    // Only pairs whose live side `live_version` made: those recorded under
    // an earlier production are another comparison, perhaps in other units.
    let mut stmt = conn.prepare_cached(
        "SELECT s.decision_id, s.explanation, s.live_contributions FROM shadow_outputs s
         JOIN decisions d ON d.decision_id = s.decision_id AND d.model_version = ?6
         WHERE s.model_name = ?1 AND s.model_version = ?2 AND s.decided_at >= ?3
           AND s.retain_until > ?5
         ORDER BY s.decided_at DESC LIMIT ?4",
    )?;
    let mut rows = stmt.query(params![
        model,
        version,
        since_ms,
        DRIFT_ROWS as i64,
        crate::store::now_ms(),
        live_version
    ])?;
    let (mut live, mut candidate) = (MeanAbs::default(), MeanAbs::default());
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let explanation = recorded_explanation(&id, r.get_ref(1)?, cipher)?;
        candidate.add(&contributions(&explanation));
        live.add(&read_live(&id, r.get_ref(2)?, cipher)?);
    }
    Ok((live, candidate))
}

/// One version's recorded attributions over the window.
pub fn recorded(
    conn: &Connection,
    model: &str,
    version: &str,
    since_ms: i64,
    cipher: &InputCipher,
) -> Result<MeanAbs, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT decision_id, explanation FROM decisions
         WHERE model_name = ?1 AND model_version = ?2 AND decided_at >= ?3
           AND explanation IS NOT NULL AND retain_until > ?5
         ORDER BY decided_at DESC LIMIT ?4",
    )?;
    let mut rows = stmt.query(params![
        model,
        version,
        since_ms,
        DRIFT_ROWS as i64,
        crate::store::now_ms()
    ])?;
    let mut means = MeanAbs::default();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let explanation = recorded_explanation(&id, r.get_ref(1)?, cipher)?;
        means.add(&contributions(&explanation));
    }
    Ok(means)
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDrift {
    pub feature: String,
    pub live_mean_abs: f64,
    pub candidate_mean_abs: f64,
    /// 1 is the largest mean |φ|; a feature one version lacks ranks last.
    pub live_rank: u32,
    pub candidate_rank: u32,
}

impl FeatureDrift {
    /// Positive when the feature matters more to the candidate.
    pub fn rank_change(&self) -> i32 {
        self.live_rank as i32 - self.candidate_rank as i32
    }
}

/// Per feature, both versions' mean |φ| and ranks, in live rank order.
pub fn drift(live: &MeanAbs, candidate: &MeanAbs) -> Vec<FeatureDrift> {
    let (l, c) = (live.means(), candidate.means());
    let names: Vec<&str> = {
        let mut n: Vec<&str> = l.keys().chain(c.keys()).copied().collect();
        n.sort_unstable();
        n.dedup();
        n
    };
    let ranks = |means: &BTreeMap<&str, f64>| -> BTreeMap<String, u32> {
        let mut order: Vec<&str> = names.clone();
        // Largest first; ties and absent features by name, so ranks are
        // stable between runs.
        order.sort_by(|a, b| {
            let (x, y) = (means.get(a).copied(), means.get(b).copied());
            y.unwrap_or(-1.0)
                .total_cmp(&x.unwrap_or(-1.0))
                .then(a.cmp(b))
        });
        order
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n.to_owned(), i as u32 + 1))
            .collect()
    };
    let (lr, cr) = (ranks(&l), ranks(&c));
    let mut out: Vec<FeatureDrift> = names
        .iter()
        .map(|&n| FeatureDrift {
            feature: n.to_owned(),
            live_mean_abs: l.get(n).copied().unwrap_or(0.0),
            candidate_mean_abs: c.get(n).copied().unwrap_or(0.0),
            live_rank: lr[n],
            candidate_rank: cr[n],
        })
        .collect();
    out.sort_by_key(|d| d.live_rank);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phi(pairs: &[(&str, f64)]) -> Contributions {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    /// A shadow output of version 2.0.0 of model "m" for decision `id`.
    fn output(id: &str, retain_until_ms: i64) -> ShadowRow {
        ShadowRow {
            decision_id: id.into(),
            model_name: "m".into(),
            model_version: "2.0.0".into(),
            model_sha256: "0".repeat(64),
            subject_ref: None,
            decided_at_ms: crate::store::now_ms() - 10,
            score: 0.5,
            explanation: Explanation {
                method: "m".into(),
                method_version: "1".into(),
                output_space: "probability".into(),
                base_value: 0.0,
                margin: 0.0,
                base_score: 0.0,
                residual: 0.0,
                ort_difference: 0.0,
                sample_pairs: 0,
                features: vec![],
                groups: vec![],
            },
            live: phi(&[("x", 1.0)]),
            retain_until_ms,
        }
    }

    /// An output past its retention answers no more, whether or not the
    /// purge has deleted it yet; drift pairs only those of the live
    /// version asked about.
    #[test]
    fn an_output_past_its_retention_is_gone_before_the_purge() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(DDL).unwrap();
        conn.execute_batch(crate::decisions::DDL).unwrap();
        // The live decisions, by production 1.0.0 (model "m").
        let mut stored = crate::decisions::StoredProvenances::default();
        for id in ["kept", "expired", "earlier"] {
            let mut batch = crate::decisions::sample_batch(id, None);
            if id == "earlier" {
                batch.rows[0].model.version = "0.9.0".into();
            }
            crate::decisions::insert(
                &conn,
                &batch,
                &mut stored,
                Some(&crate::decisions::crypto::test_cipher()),
            )
            .unwrap();
        }
        let now = crate::store::now_ms();
        insert(
            &conn,
            &[
                output("kept", now + 60_000),
                output("expired", now - 1),
                output("earlier", now + 60_000),
            ],
            Some(&crate::decisions::crypto::test_cipher()),
        )
        .unwrap();
        assert_eq!(
            for_decision(&conn, "kept", &crate::decisions::crypto::test_cipher())
                .unwrap()
                .len(),
            1
        );
        assert!(
            for_decision(&conn, "expired", &crate::decisions::crypto::test_cipher())
                .unwrap()
                .is_empty()
        );
        // The pair whose live side an earlier production made is not one
        // of 1.0.0's.
        let (live, _) = shadow_pairs(
            &conn,
            "m",
            "1.0.0",
            "2.0.0",
            0,
            &crate::decisions::crypto::test_cipher(),
        )
        .unwrap();
        assert_eq!(live.count, 1);
    }

    #[test]
    fn means_of_absolute_values_and_rank_moves() {
        let mut live = MeanAbs::default();
        live.add(&phi(&[("a", 2.0), ("b", -1.0), ("c", 0.1)]));
        live.add(&phi(&[("a", -4.0), ("b", 1.0), ("c", -0.1)]));
        let mut cand = MeanAbs::default();
        cand.add(&phi(&[("a", 0.5), ("b", -3.0), ("d", 1.0)]));
        let d = drift(&live, &cand);
        let by = |n: &str| d.iter().find(|x| x.feature == n).unwrap().clone();
        assert_eq!(by("a").live_mean_abs, 3.0);
        assert_eq!(by("b").live_mean_abs, 1.0);
        assert_eq!((by("a").live_rank, by("a").candidate_rank), (1, 3));
        assert_eq!(by("b").rank_change(), 1);
        // Absent from live: ranks last there.
        assert_eq!(by("d").live_rank, 4);
        assert_eq!(by("d").candidate_rank, 2);
        assert_eq!(d[0].feature, "a");
    }

    #[test]
    fn identical_attributions_do_not_drift() {
        let mut m = MeanAbs::default();
        m.add(&phi(&[("a", 1.0), ("b", 2.0)]));
        assert!(
            drift(&m, &m.clone())
                .iter()
                .all(|d| d.rank_change() == 0 && d.live_mean_abs == d.candidate_mean_abs)
        );
    }

    /// The live attributions beside a shadow output are sealed, and those
    /// written in clear before are sealed once at start: for a linear model
    /// they give back the person's inputs.
    #[test]
    fn live_attributions_are_sealed_and_clear_ones_sealed_once() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(DDL).unwrap();
        let cipher = crate::decisions::crypto::test_cipher();
        let sealed = |conn: &Connection| -> String {
            conn.query_row(
                "SELECT typeof(live_contributions) FROM shadow_outputs",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        insert(&conn, &[output("d", i64::MAX)], Some(&cipher)).unwrap();
        assert_eq!(sealed(&conn), "blob");
        conn.execute(
            "UPDATE shadow_outputs SET live_contributions = '{\"x\":1.0}'",
            [],
        )
        .unwrap();
        assert_eq!(seal_clear_live(&conn, &cipher).unwrap(), 1);
        assert_eq!(sealed(&conn), "blob");
        let read = for_decision(&conn, "d", &cipher).unwrap();
        assert_eq!(read[0].live, phi(&[("x", 1.0)]));
        // Once: a clear value written since (by an older version) stays
        // readable, and the next start does not scan again.
        conn.execute(
            "UPDATE shadow_outputs SET live_contributions = '{\"x\":2.0}'",
            [],
        )
        .unwrap();
        assert_eq!(seal_clear_live(&conn, &cipher).unwrap(), 0);
        assert_eq!(
            for_decision(&conn, "d", &cipher).unwrap()[0].live,
            phi(&[("x", 2.0)])
        );
    }
}
