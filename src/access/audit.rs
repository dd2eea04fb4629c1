//! The staff-read log: who read which person's decisions or consent
//! history, when, through which call, and why (GDPR Art. 5(2)
//! accountability). It is append-only and outlives a subject's erasure,
//! because the controller must still account for past reads; the erasure
//! replaces the subject's pseudonym with its tombstone's record id, the one
//! change the log allows. A read leaves the log only once its retention
//! (`access.staff_read_retention_days`) has passed: the purge first
//! declares the time before which reads have expired, and the log refuses
//! to delete any read made since.

use rusqlite::{Connection, params};

use crate::store::{Job, Store, StoreError};

pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS staff_reads (
    id          INTEGER PRIMARY KEY,
    read_at     INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    rpc         TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    reason      TEXT NOT NULL,
    request_id  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS staff_reads_subject ON staff_reads (subject_ref, read_at);
CREATE TRIGGER IF NOT EXISTS staff_reads_no_update BEFORE UPDATE ON staff_reads
WHEN NEW.subject_ref NOT LIKE 'erased:%'
  OR NEW.read_at IS NOT OLD.read_at OR NEW.actor IS NOT OLD.actor OR NEW.role IS NOT OLD.role
  OR NEW.rpc IS NOT OLD.rpc OR NEW.reason IS NOT OLD.reason OR NEW.request_id IS NOT OLD.request_id
BEGIN SELECT RAISE(ABORT, 'the staff-read log is append-only'); END;
CREATE TABLE IF NOT EXISTS staff_reads_expired (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    expired_before  INTEGER NOT NULL
);
-- Replaced by staff_reads_keep_unexpired; dropping what is not there
-- writes nothing, so an open of a full disk's database still succeeds.
DROP TRIGGER IF EXISTS staff_reads_no_delete;
CREATE TRIGGER IF NOT EXISTS staff_reads_keep_unexpired BEFORE DELETE ON staff_reads
WHEN OLD.read_at >= COALESCE((SELECT expired_before FROM staff_reads_expired), 0)
BEGIN SELECT RAISE(ABORT, 'the staff-read log is append-only'); END;
";

/// Reads deleted per transaction by [`expire`], so that a purge of a long
/// log does not hold the writer (and every record waiting for it) at once.
pub(crate) const EXPIRED_AT_ONCE: usize = 10_000;

/// Deletes up to [`EXPIRED_AT_ONCE`] reads made before `before_ms`, oldest
/// first, and returns how many.
pub(crate) fn expire(conn: &Connection, before_ms: i64) -> Result<u64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO staff_reads_expired (id, expired_before) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET expired_before = excluded.expired_before",
    )?
    .execute([before_ms])?;
    let deleted = conn
        .prepare_cached(
            "DELETE FROM staff_reads WHERE id IN
             (SELECT id FROM staff_reads WHERE read_at < ?1 ORDER BY id LIMIT ?2)",
        )?
        .execute(params![before_ms, EXPIRED_AT_ONCE as i64])?;
    Ok(deleted as u64)
}

/// One read of a person's data by someone other than that person.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StaffRead {
    pub read_at_ms: i64,
    pub actor: String,
    pub role: String,
    /// The gRPC method, e.g. `/candor.v1.ExplanationService/ListDecisions`.
    pub rpc: String,
    pub subject_ref: String,
    pub reason: String,
    pub request_id: String,
}

/// Records `read` and returns once it is committed: data is shown only
/// after its reading is on record.
pub async fn record(store: &Store, read: StaffRead) -> Result<(), StoreError> {
    store.submit(|tx| Job::StaffRead(read, tx)).await
}

pub(crate) fn insert(conn: &Connection, r: &StaffRead) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO staff_reads (read_at, actor, role, rpc, subject_ref, reason, request_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        r.read_at_ms,
        r.actor,
        r.role,
        r.rpc,
        r.subject_ref,
        r.reason,
        r.request_id
    ])?;
    Ok(())
}

/// Unlinks an erased subject's reads from their pseudonym: they now name
/// the erasure's tombstone record.
pub(crate) fn erase_subject(
    conn: &Connection,
    subject_ref: &str,
    tombstone_record_id: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE staff_reads SET subject_ref = ?2 WHERE subject_ref = ?1")?
        .execute(params![
            subject_ref,
            format!("erased:{tombstone_record_id}")
        ])?;
    Ok(())
}

/// Every recorded read of one subject's data, oldest first.
pub fn reads_of(store: &Store, subject_ref: &str) -> Result<Vec<StaffRead>, StoreError> {
    store.read(|conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT read_at, actor, role, rpc, subject_ref, reason, request_id
             FROM staff_reads WHERE subject_ref = ?1 ORDER BY read_at, id",
        )?;
        let rows = stmt.query_map([subject_ref], |r| {
            Ok(StaffRead {
                read_at_ms: r.get(0)?,
                actor: r.get(1)?,
                role: r.get(2)?,
                rpc: r.get(3)?,
                subject_ref: r.get(4)?,
                reason: r.get(5)?,
                request_id: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_are_recorded_and_cannot_be_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let read = StaffRead {
            read_at_ms: 1,
            actor: "alice".into(),
            role: "support".into(),
            rpc: "/candor.v1.ExplanationService/ListDecisions".into(),
            subject_ref: "s".into(),
            reason: "ticket 42".into(),
            request_id: "r".into(),
        };
        record(&store, read.clone()).await.unwrap();
        assert_eq!(reads_of(&store, "s").unwrap(), vec![read]);
        assert!(reads_of(&store, "t").unwrap().is_empty());
        for tamper in [
            "DELETE FROM staff_reads",
            "UPDATE staff_reads SET subject_ref = 'someone-else'",
            "UPDATE staff_reads SET subject_ref = 'erased:x', reason = 'rewritten'",
        ] {
            let tampered = store.read(|c| Ok(c.execute(tamper, [])?));
            assert!(tampered.is_err(), "{tamper}: {tampered:?}");
        }
        store.read(|c| erase_subject(c, "s", "t")).unwrap();
        assert!(reads_of(&store, "s").unwrap().is_empty());
        assert_eq!(reads_of(&store, "erased:t").unwrap()[0].reason, "ticket 42");
    }

    #[tokio::test]
    async fn reads_past_their_retention_are_deleted_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        for read_at_ms in [10, 20, 30] {
            let read = StaffRead {
                read_at_ms,
                actor: "alice".into(),
                role: "support".into(),
                rpc: "/candor.v1.ConsentService/GetConsentHistory".into(),
                subject_ref: "s".into(),
                reason: format!("ticket {read_at_ms}"),
                request_id: "r".into(),
            };
            record(&store, read).await.unwrap();
        }
        let expire = |before| store.submit(move |tx| Job::ExpireStaffReads(before, tx));
        assert_eq!(expire(25).await.unwrap(), 2);
        let kept: Vec<i64> = reads_of(&store, "s")
            .unwrap()
            .iter()
            .map(|r| r.read_at_ms)
            .collect();
        assert_eq!(kept, [30]);
        // The log still refuses to lose a read its retention keeps.
        let deleted = store.read(|c| Ok(c.execute("DELETE FROM staff_reads", [])?));
        assert!(deleted.is_err(), "{deleted:?}");
        assert_eq!(expire(25).await.unwrap(), 0);
        // A retention lengthened since keeps what is left.
        assert_eq!(expire(5).await.unwrap(), 0);
        assert_eq!(reads_of(&store, "s").unwrap().len(), 1);
    }
}
