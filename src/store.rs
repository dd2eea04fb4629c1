//! The embedded database: one SQLite file in WAL mode that holds the consent
//! ledger and the decision record.
//!
//! SQLite allows one writer at a time, so one thread owns the write
//! connection and runs every write: it takes whatever jobs are queued, runs
//! them inside one transaction (each under its own savepoint where it needs
//! one) and commits once (group commit). A second thread, the flusher, then
//! makes the commit durable with one fsync of the WAL and only then answers
//! each job, while the writer already runs the next batch. Reads use a
//! small pool of connections, which WAL lets run beside the writer.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::{
    access::audit::{self, StaffRead},
    consent::ledger::{self, Actor, Draft, Erasure, GENESIS, LedgerRef},
    decisions::{self, RecordBatch, StoredProvenances, crypto::InputCipher, shadow::ShadowRow},
};

const READERS: usize = 4;
/// Most jobs in one transaction; the rest wait for the next.
const MAX_GROUP: usize = 1024;
/// How long the writer remembers an erasure to refuse work begun before it.
/// Such work is in flight for at most a call's deadline, or a retry while
/// the database is failing; a day is far beyond either, and keeps the
/// memory of erasures from growing for as long as the process runs.
const ERASURE_MEMORY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("database is busy (locked by another process): {0}")]
    Busy(String),
    #[error(
        "database cannot grow (the disk is full, or the file has reached database_max_mb): {0}"
    )]
    Full(String),
    #[error("database: {0}")]
    Sqlite(String),
    #[error("database is damaged ({0}); the gateway's operators must restore it from a backup")]
    Damaged(String),
    #[error("{setting}: key file {path}: {message}")]
    Key {
        setting: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("stored record {record_id}: {message}")]
    Corrupt { record_id: String, message: String },
    #[error("the database writer has stopped")]
    ShutDown,
    #[error("the subject was erased while this call ran; nothing of it was kept")]
    Erased,
    #[error(
        "database {0}: the file was deleted or replaced while the gateway ran, so nothing more can be recorded; restart the gateway (and restore the file if it was not meant to go)"
    )]
    Replaced(PathBuf),
    #[error("an explanation cannot be recorded before the input key that seals it is set")]
    NoInputKey,
    #[error(
        "purpose {tcf_id} is under an objection (record {record_id}, made by {author}) that an ad system cannot change: only the person's own token, or staff acting for them (support, admin), can"
    )]
    ObjectionStands {
        tcf_id: u8,
        record_id: String,
        author: String,
    },
}

impl StoreError {
    /// A lock or a full disk: the same write may succeed later, so work
    /// already acknowledged is kept and retried rather than dropped.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy(_) | Self::Full(_))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match e.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked) => Self::Busy(e.to_string()),
            Some(DiskFull) => Self::Full(e.to_string()),
            Some(DatabaseCorrupt | NotADatabase) => Self::Damaged(e.to_string()),
            _ => Self::Sqlite(e.to_string()),
        }
    }
}

/// Bytes SQLite holds on the C heap (page caches, statements, schema) for
/// every connection of the process; Rust's allocator does not see them.
pub fn sqlite_memory_bytes() -> i64 {
    // SAFETY: a read of SQLite's own counter, safe from any thread.
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads a hex key file, creating a random 32-byte key (mode 0600) on first
/// start so that embedded defaults work without setup. Gateways starting
/// together (tests, a restart racing its predecessor) agree on one key: it
/// is written whole under a temporary name and then linked into place,
/// which fails for all but the first.
/// `setting` names the configuration key that gave `path`.
pub fn load_or_create_key(path: &Path, setting: &'static str) -> Result<Vec<u8>, StoreError> {
    let err = |message: String| StoreError::Key {
        setting,
        path: path.to_owned(),
        message,
    };
    if !path.exists() {
        let key: [u8; 32] = rand::random();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let mut draft = path.as_os_str().to_owned();
        draft.push(format!(".{:016x}.new", rand::random::<u64>()));
        let draft = PathBuf::from(draft);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&draft).and_then(|mut file| {
            std::io::Write::write_all(&mut file, hex::encode(key).as_bytes())?;
            file.sync_all()
        });
        let linked = written.and_then(|()| std::fs::hard_link(&draft, path));
        let _ = std::fs::remove_file(&draft);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), setting, "created a new key");
                return Ok(key.to_vec());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e.to_string())),
        }
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(err("is not a regular file".into()));
    }
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                setting,
                mode = format!("{mode:o}"),
                "the key file is readable by other users; make it the gateway user's alone (chmod 600)"
            );
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let key = hex::decode(text.trim()).map_err(|_| err("is not hex".into()))?;
    if key.len() < 32 {
        return Err(err(format!(
            "holds {} bytes; at least 32 are required",
            key.len()
        )));
    }
    // 32 random bytes hold about 30 different values, and fewer than 16
    // has a chance below 1e-12; fewer is a made-up key (zeros, a repeated
    // pattern), which anyone could guess and then compute every
    // pseudonym, or open every sealed input, with.
    let distinct = key.iter().collect::<std::collections::HashSet<_>>().len();
    if distinct < 16 {
        return Err(err(format!(
            "holds a key of only {distinct} different byte values, which anyone could guess; make a random one (head -c 32 /dev/urandom | xxd -p -c 64)"
        )));
    }
    Ok(key)
}

/// Each key's check value, so that a database is never read or written
/// under a key other than the one its pseudonyms and sealed inputs were
/// made with (a lost key file would otherwise be replaced in silence).
const KEY_CHECKS_DDL: &str = "
CREATE TABLE IF NOT EXISTS key_checks (
    setting         TEXT PRIMARY KEY,
    check_value     TEXT NOT NULL
) WITHOUT ROWID;
";

/// The record's layout, in `PRAGMA user_version`: raised by a change that
/// an older Candor would misread (a new stored format), so that one refuses
/// the file rather than serve errors for every record it cannot read.
const SCHEMA_VERSION: i64 = 1;

/// Refuses a database a newer Candor wrote; marks one of this layout.
fn check_schema_version(conn: &Connection) -> Result<(), String> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if found > SCHEMA_VERSION {
        return Err(format!(
            "it was written by a newer Candor (record layout {found}; this build reads up to {SCHEMA_VERSION}): run that version or a later one, or restore a backup from before the upgrade"
        ));
    }
    if found < SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Warns of a database file others may read: it holds consent evidence
/// and decisions about people. (A new file is created the user's alone.)
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the database is readable by other users (SQLite gives its WAL the same mode); make it the gateway user's alone (chmod 600, and its -wal and -shm files)"
            );
        }
    }
}

/// Whether a key opens what a database sealed with it (true when it holds
/// nothing sealed): [`Store::bound_key`]'s proof for a database without the
/// key's check value.
pub type KeyProof = fn(&Connection, &[u8]) -> Result<bool, StoreError>;

/// A value that tells whether two keys are the same without telling the
/// key: an HMAC of a constant under it.
fn key_check(key: &[u8], setting: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"candor key check v1\0");
    mac.update(setting.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// How long a statement waits for a lock another process holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The writer's wait while commits fail: the last attempt has already
/// waited out [`BUSY_TIMEOUT`], so the callers queued behind it are
/// answered at once rather than after a wait of their own each.
const FAILING_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open = |e: rusqlite::Error| StoreError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let conn = Connection::open(path).map_err(open)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open)?;
    // Erasure must not leave removed content in free space on disk.
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(open)?;
    Ok(conn)
}

/// Takes the database's lock file (`<database>.lock`), which the process
/// holds until it ends: a second gateway on the same database would
/// interleave its own ledger chain with this one's.
fn lock(path: &Path) -> Result<std::fs::File, String> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let name = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| format!("cannot open its lock file {}: {e}", name.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another process holds its lock file {} (a second gateway on the same database?); give each gateway its own `database`",
            name.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", name.display())),
    }
}

/// Locks the database file itself, as the lock file cannot: a hard link
/// reaches the same file under a name of its own, beside which a second
/// gateway would take a lock file and keep a WAL of its own, and the
/// records it acknowledged would be lost. (SQLite's locks are POSIX record
/// locks, which this lock does not touch.)
fn lock_database_file(path: &Path) -> Result<std::fs::File, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(
            "another process holds the file under another name (a hard link: a second gateway on the same database?); give each gateway its own `database`"
                .to_owned(),
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock it: {e}")),
    }
}

/// The database file the store opened, to notice it being deleted or
/// replaced underneath a running gateway.
struct FileIdentity {
    path: PathBuf,
    #[cfg(unix)]
    id: (u64, u64),
}

impl FileIdentity {
    fn of(path: &Path) -> Result<Self, String> {
        let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
        #[cfg(not(unix))]
        let _ = metadata;
        Ok(Self {
            path: path.to_owned(),
            #[cfg(unix)]
            id: {
                use std::os::unix::fs::MetadataExt;
                (metadata.dev(), metadata.ino())
            },
        })
    }

    /// The file at the path is still the one opened.
    fn check(&self) -> Result<(), StoreError> {
        let now = Self::of(&self.path).map_err(|_| StoreError::Replaced(self.path.clone()))?;
        #[cfg(unix)]
        if now.id != self.id {
            return Err(StoreError::Replaced(self.path.clone()));
        }
        #[cfg(not(unix))]
        let _ = now;
        Ok(())
    }
}

/// How often a run of failing commits is logged: a full disk fails every
/// commit, and one line per commit would fill the log's disk next.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// The failed commits since commits last succeeded.
#[derive(Default)]
struct Failures {
    total: u64,
    /// When a failure was last logged, kept across recoveries: a database
    /// at its size cap fails and recovers with every other commit.
    logged_at: Option<std::time::Instant>,
    since_logged: u64,
    /// Whether this run of failures was logged, so that its end is too.
    announced: bool,
}

impl Failures {
    fn log(&mut self, error: &StoreError, kept_for_retry: usize) {
        self.total += 1;
        self.since_logged += 1;
        if self
            .logged_at
            .is_some_and(|at| at.elapsed() < FAILURE_LOG_EVERY)
        {
            return;
        }
        tracing::error!(
            error = %error,
            failed_commits = self.since_logged,
            acknowledged_writes_kept_for_retry = kept_for_retry,
            "database commits fail: calls that wait for their commit get its error; writes already acknowledged (async) are kept and retried. Logged at most every {} s",
            FAILURE_LOG_EVERY.as_secs()
        );
        self.logged_at = Some(std::time::Instant::now());
        self.since_logged = 0;
        self.announced = true;
    }

    /// Commits succeed again: the run ends, said if its start was.
    fn ended(&mut self) {
        if self.announced {
            tracing::info!(
                failed_commits = self.total,
                "database commits succeed again"
            );
        }
        *self = Self {
            logged_at: self.logged_at,
            ..Self::default()
        };
    }
}

/// Work for the writer thread.
pub(crate) enum Job {
    Append(
        Vec<Draft>,
        oneshot::Sender<Result<Vec<LedgerRef>, StoreError>>,
    ),
    /// A subject's erasure: when, and at whose request.
    Erase(
        String,
        i64,
        Option<Actor>,
        oneshot::Sender<Result<Erasure, StoreError>>,
    ),
    /// One step of a subject's erasure: some of its decisions
    /// ([`decisions::erase_step`]).
    EraseDecisions(String, oneshot::Sender<Result<u64, StoreError>>),
    /// Shared so that an acknowledged batch can be kept for a retry
    /// without copying it.
    Record(
        Arc<RecordBatch>,
        Option<oneshot::Sender<Result<(), StoreError>>>,
    ),
    /// A decision's id and its explanation in [`decisions::stored`] form.
    Attach(
        String,
        Vec<u8>,
        Option<oneshot::Sender<Result<bool, StoreError>>>,
    ),
    Purge(i64, oneshot::Sender<Result<u64, StoreError>>),
    /// Empties evidence records made before this time, a batch at a time
    /// ([`ledger::expire_evidence`]).
    ExpireEvidence(i64, oneshot::Sender<Result<u64, StoreError>>),
    /// Deletes staff reads made before this time, a batch at a time
    /// ([`audit::expire`]).
    ExpireStaffReads(i64, oneshot::Sender<Result<u64, StoreError>>),
    /// From now on, note the provenances decisions cite
    /// ([`decisions::StoredProvenances::track`]).
    TrackProvenances(oneshot::Sender<Result<(), StoreError>>),
    /// Deletes these provenances unless a decision cited one since the
    /// tracking began ([`decisions::forget_provenances`]); the last of a
    /// purge's ends the tracking, whether or not it commits.
    ForgetProvenances(Vec<String>, bool, oneshot::Sender<Result<u64, StoreError>>),
    /// Stop owing these decisions deferred attributions.
    Forgo(Vec<String>),
    StaffRead(StaffRead, oneshot::Sender<Result<(), StoreError>>),
    /// Nobody waits for shadow outputs; kept for a retry like `Record`.
    Shadow(Arc<Vec<ShadowRow>>),
    /// Writes nothing: answered once the jobs queued before it are
    /// committed, so a read after it sees them.
    Committed(oneshot::Sender<Result<(), StoreError>>),
}

impl Job {
    /// The answer for a job that never ran because its batch's transaction
    /// failed: the batch's error.
    fn refusal(self) -> Reply {
        Box::new(move |committed| {
            let e = committed
                .err()
                .unwrap_or_else(|| StoreError::Sqlite("the write was not attempted".into()));
            match self {
                Job::Append(_, tx) => drop(tx.send(Err(e))),
                Job::Erase(.., tx) => drop(tx.send(Err(e))),
                Job::Record(_, Some(tx)) | Job::StaffRead(_, tx) => drop(tx.send(Err(e))),
                Job::Attach(_, _, Some(tx)) => drop(tx.send(Err(e))),
                Job::Purge(_, tx)
                | Job::ExpireEvidence(_, tx)
                | Job::ExpireStaffReads(_, tx)
                | Job::EraseDecisions(_, tx) => drop(tx.send(Err(e))),
                Job::Committed(tx) | Job::TrackProvenances(tx) => drop(tx.send(Err(e))),
                Job::ForgetProvenances(.., tx) => drop(tx.send(Err(e))),
                // Kept for a retry by `retry_copy`.
                Job::Record(_, None) | Job::Attach(_, _, None) | Job::Forgo(_) | Job::Shadow(_) => {
                }
            }
        })
    }

    /// Whether the job deletes or empties records (an erasure or one of the
    /// retention purges): such jobs go first, since they free room a full
    /// disk needs, and the WAL is emptied after them.
    fn deletes(&self) -> bool {
        matches!(
            self,
            Job::Erase(..)
                | Job::EraseDecisions(..)
                | Job::Purge(..)
                | Job::ExpireEvidence(..)
                | Job::ExpireStaffReads(..)
                | Job::ForgetProvenances(..)
        )
    }

    /// Whether the job needs a savepoint to be undone alone. A job that
    /// changes one row with one statement does not: SQLite undoes a failed
    /// statement by itself (a record's provenance, written first, is
    /// content-addressed and harmless to keep). Skipping the savepoint
    /// matters because SQLite copies every page a savepoint touches first
    /// into its journal: several pages, each larger than the row.
    fn needs_savepoint(&self) -> bool {
        match self {
            Job::Record(batch, _) => batch.rows.len() > 1,
            Job::Attach(..) | Job::StaffRead(..) | Job::Committed(_) | Job::TrackProvenances(_) => {
                false
            }
            Job::Append(..)
            | Job::Erase(..)
            | Job::EraseDecisions(..)
            | Job::Purge(..)
            | Job::ExpireEvidence(..)
            | Job::ExpireStaffReads(..)
            | Job::ForgetProvenances(..)
            | Job::Forgo(..)
            | Job::Shadow(..) => true,
        }
    }

    /// What must be written again if this job's commit fails: work nobody
    /// waits for was already acknowledged, so it is never dropped. Work a
    /// caller waits for is answered with the error instead.
    fn retry_copy(&self) -> Option<Job> {
        match self {
            Job::Record(batch, None) => Some(Job::Record(batch.clone(), None)),
            Job::Attach(id, json, None) => Some(Job::Attach(id.clone(), json.clone(), None)),
            Job::Forgo(ids) => Some(Job::Forgo(ids.clone())),
            Job::Shadow(rows) => Some(Job::Shadow(rows.clone())),
            _ => None,
        }
    }
}

/// How the database is opened.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    /// Caps the database file: a write beyond it fails as a full disk
    /// would, and leaves room on the real disk for everything else.
    pub max_bytes: Option<u64>,
    /// How long a batch of only asynchronous records waits for company
    /// before it commits. Part of what an `async` crash can lose.
    pub async_commit_window: Duration,
    /// Decisions that may be acknowledged without waiting (`async`) and
    /// not yet committed: the most a crash of the process can lose.
    pub async_max_uncommitted: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            max_bytes: None,
            async_commit_window: Duration::from_millis(10),
            async_max_uncommitted: 10_000,
        }
    }
}

pub struct Store {
    /// The database file, for messages.
    path: PathBuf,
    /// Seals the explanations the writer records (they hold the values
    /// the model saw); set once the input key is bound.
    cipher: Arc<std::sync::OnceLock<Arc<InputCipher>>>,
    /// Held for the store's life: one gateway per database (the lock file
    /// beside the path, and the database file itself, which a hard link
    /// reaches under another name).
    _lock: (std::fs::File, std::fs::File),
    jobs: Option<Sender<Job>>,
    /// Set while commits fail; cleared once a commit succeeds with nothing
    /// left to retry.
    failing: Arc<AtomicBool>,
    /// Jobs the writer holds for a retry after a failed commit.
    retrying: Arc<AtomicUsize>,
    /// The same, for watchers: true while commits succeed.
    commits_succeed: tokio::sync::watch::Receiver<bool>,
    /// Decisions acknowledged without waiting and not yet committed, and
    /// how many there may be ([`Store::send_unwaited`]).
    uncommitted: Arc<AtomicUsize>,
    max_uncommitted: usize,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Woken when a job someone waits for arrives while the writer
    /// gathers asynchronous records (`gathering`).
    writer_thread: std::thread::Thread,
    gathering: Arc<AtomicBool>,
    readers: (Sender<Connection>, Receiver<Connection>),
    erasures: Arc<Erasures>,
}

impl Store {
    /// Opens (or creates) the database at `path` with every table.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &StoreSettings::default())
    }

    /// Like [`Store::open`], with the given settings.
    pub fn open_with(path: &Path, settings: &StoreSettings) -> Result<Self, StoreError> {
        let StoreSettings {
            max_bytes,
            async_commit_window,
            async_max_uncommitted,
        } = *settings;
        let failed = |message: String| StoreError::Open {
            path: path.to_owned(),
            message,
        };
        // Only the database's own folder is made: a mistyped path fails
        // here instead of starting an empty record somewhere new.
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
        {
            std::fs::create_dir(dir).map_err(|e| {
                failed(match dir.parent() {
                    Some(up) if e.kind() == std::io::ErrorKind::NotFound => format!(
                        "cannot create its folder {}: {} does not exist either; only the database's own folder is made, so that a mistyped path starts no record elsewhere",
                        dir.display(),
                        up.display()
                    ),
                    _ => format!("cannot create its folder {}: {e}", dir.display()),
                })
            })?;
        }
        // SQLite follows links to the database file and keeps its WAL beside
        // the file it reaches: the flusher's fsync and the lock file must
        // name that file too, or commits fail on a WAL that is not there
        // and a second gateway reaching it through another name starts.
        let path = &std::fs::canonicalize(path)
            .or_else(|_| {
                let name = path
                    .file_name()
                    .ok_or_else(|| std::io::Error::other("names a folder, not a database file"))?;
                let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
                Ok::<_, std::io::Error>(
                    std::fs::canonicalize(parent.unwrap_or(Path::new(".")))?.join(name),
                )
            })
            .map_err(|e| failed(format!("cannot resolve the path: {e}")))?;
        let lock = lock(path).map_err(failed)?;
        // The record holds consent evidence and decisions about people:
        // readable by the gateway's user only. SQLite gives the WAL and its
        // index the database file's permissions.
        let mut private = std::fs::OpenOptions::new();
        private.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut private, 0o600);
        match private.open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => warn_if_shared(path),
            Err(e) => return Err(failed(format!("cannot create it: {e}"))),
        }
        let file_lock = lock_database_file(path).map_err(failed)?;
        let mut conn = open_connection(path)?;
        // A damaged file would take new records and then fail reads (an
        // access request) at random: refuse to start on it. Reading every
        // page once costs about a second per gigabyte.
        let checked: Result<Vec<String>, _> = conn
            .prepare("PRAGMA quick_check(3)")
            .and_then(|mut check| check.query_map([], |r| r.get(0))?.collect());
        let problems = match checked {
            Ok(found) if found == ["ok"] => None,
            Ok(found) => Some(found.join("; ")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(problems) = problems {
            return Err(failed(format!(
                "the file is damaged or unreadable ({problems}); restore it from a backup, or move it aside to start an empty record"
            )));
        }
        let file = FileIdentity::of(path).map_err(failed)?;
        if let Some(max) = max_bytes {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = i64::try_from(max).unwrap_or(i64::MAX) / page.max(1);
            conn.pragma_update(None, "max_page_count", pages.max(1))?;
        }
        conn.execute_batch(KEY_CHECKS_DDL)
            .and_then(|()| conn.execute_batch(ledger::DDL))
            .and_then(|()| conn.execute_batch(decisions::DDL))
            .and_then(|()| conn.execute_batch(decisions::shadow::DDL))
            .and_then(|()| conn.execute_batch(audit::DDL))
            .map_err(|e| failed(e.to_string()))?;
        decisions::migrate(&mut conn).map_err(|e| failed(e.to_string()))?;
        check_schema_version(&conn).map_err(failed)?;
        let subject_tail_rows = decisions::subject_tail_rows(&conn)?;
        let head: (i64, String) = conn
            .query_row(
                "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, GENESIS.to_owned()));
        let (readers_tx, readers_rx) = crossbeam_channel::bounded(READERS);
        for _ in 0..READERS {
            readers_tx
                .send(open_connection(path)?)
                .expect("pool has room");
        }
        // The flusher makes the writer's commits durable, so the writer
        // itself need not wait for the disk.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let (commits, committed) = crossbeam_channel::unbounded();
        let (idle, synced) = crossbeam_channel::bounded(1);
        let flusher = Flusher::new(path, idle);
        let flusher = std::thread::Builder::new()
            .name("candor-db-flush".into())
            .spawn(move || flusher.run(committed))
            .map_err(|e| failed(e.to_string()))?;
        let (jobs, rx) = crossbeam_channel::unbounded();
        let failing = Arc::new(AtomicBool::new(false));
        let writer_failing = failing.clone();
        let retrying = Arc::new(AtomicUsize::new(0));
        let writer_retrying = retrying.clone();
        let uncommitted = Arc::new(AtomicUsize::new(0));
        let writer_uncommitted = uncommitted.clone();
        let (committing, commits_succeed) = tokio::sync::watch::channel(true);
        let gathering = Arc::new(AtomicBool::new(false));
        let writer_gathering = gathering.clone();
        let erasures = Arc::new(Erasures::default());
        let writer_erasures = erasures.clone();
        let cipher = Arc::new(std::sync::OnceLock::new());
        let writer_cipher = cipher.clone();
        let writer = std::thread::Builder::new()
            .name("candor-db-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    cipher: writer_cipher,
                    head,
                    erased: writer_erasures,
                    provenances: StoredProvenances::default(),
                    subject_tail_rows,
                    retry: Vec::new(),
                    retrying: writer_retrying,
                    uncommitted: writer_uncommitted,
                    failing: writer_failing,
                    busy_timeout: BUSY_TIMEOUT,
                    locked_lately: false,
                    file,
                    committing,
                    failures: Failures::default(),
                    flusher: commits,
                    synced,
                    syncing: false,
                    async_commit_window,
                    gathering: writer_gathering,
                }
                .run(rx);
                // The writer has gone, and with it the flusher's queue: the
                // flusher answers what it holds and ends.
                let _ = flusher.join();
            })
            .map_err(|e| failed(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            cipher,
            _lock: (lock, file_lock),
            jobs: Some(jobs),
            failing,
            retrying,
            commits_succeed,
            uncommitted,
            max_uncommitted: async_max_uncommitted,
            writer_thread: writer.thread().clone(),
            gathering,
            writer: Mutex::new(Some(writer)),
            readers: (readers_tx, readers_rx),
            erasures,
        })
    }

    /// The erasures work for a subject is checked against.
    pub fn erasures(&self) -> &Erasures {
        &self.erasures
    }

    /// Whether the last commit failed (the database is locked, full, or
    /// broken). Callers then wait for their commits rather than have work
    /// acknowledged that may not land.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Changes when commits start failing (false) and succeed again (true):
    /// health follows it, since a gateway that cannot record cannot score.
    pub fn commits_succeed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.commits_succeed.clone()
    }

    /// Whether records were acknowledged (`async`) and are not committed
    /// yet: a read may not see them.
    pub fn acknowledged_uncommitted(&self) -> bool {
        self.uncommitted.load(Ordering::Relaxed) > 0
    }

    /// Waits until every job queued so far is committed.
    pub async fn committed(&self) -> Result<(), StoreError> {
        self.submit(Job::Committed).await
    }

    /// Jobs not yet committed: queued for the writer, or held by it for a
    /// retry after a failed commit (acknowledged `async` records among them).
    pub fn queued(&self) -> usize {
        self.jobs.as_ref().map_or(0, Sender::len) + self.retrying.load(Ordering::Relaxed)
    }

    /// Queues a job without waiting for it. Records nobody waits for go
    /// through [`Store::send_unwaited`], which counts them.
    pub(crate) fn send(&self, job: Job) -> Result<(), StoreError> {
        debug_assert!(
            !matches!(job, Job::Record(_, None)),
            "an unwaited record must be counted: Store::send_unwaited"
        );
        self.queue(job)
    }

    /// Hands the job to the writer.
    fn queue(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .as_ref()
            .ok_or(StoreError::ShutDown)?
            .send(job)
            .map_err(|_| StoreError::ShutDown)
    }

    /// Queues a record nobody waits for, if the decisions acknowledged
    /// that way and not yet committed leave room for its rows: those are
    /// what a crash of the process loses, so they are bounded. Without
    /// room it queues nothing and says so (false); the caller then waits
    /// for the commit, which slows callers to the writer's pace rather
    /// than letting the queue, and the loss, grow.
    pub(crate) fn send_unwaited(&self, batch: &Arc<RecordBatch>) -> Result<bool, StoreError> {
        let rows = batch.rows.len();
        let before = self.uncommitted.fetch_add(rows, Ordering::Relaxed);
        if before + rows > self.max_uncommitted {
            self.uncommitted.fetch_sub(rows, Ordering::Relaxed);
            return Ok(false);
        }
        if let Err(e) = self.queue(Job::Record(batch.clone(), None)) {
            self.uncommitted.fetch_sub(rows, Ordering::Relaxed);
            return Err(e);
        }
        Ok(true)
    }

    /// Queues a job and waits until its batch is committed.
    pub(crate) async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(job(tx))?;
        // A writer gathering asynchronous records commits now rather than
        // at the end of its window: this caller is waiting. Only then: a
        // wake-up for every job would cost more than writing it.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.gathering.load(Ordering::Relaxed) {
            self.writer_thread.unpark();
        }
        rx.await.map_err(|_| StoreError::ShutDown)?
    }

    /// Gives the writer the cipher that seals explanations, once.
    pub fn seal_with(&self, cipher: Arc<InputCipher>) {
        let _ = self.cipher.set(cipher);
    }

    /// The sizes of the database file and of its write-ahead log, in
    /// bytes (0 for a file not there).
    pub fn file_bytes(&self) -> (u64, u64) {
        let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        (size(&self.path), size(Path::new(&wal)))
    }

    /// The key in `path` (the `setting` that names it), bound to this
    /// database: created on first start, and checked against the key the
    /// database was first used with on every start after. A key file that
    /// is missing or holds another key refuses the start: a new key would
    /// cut every person off from their pseudonymous records (objections
    /// included) and leave their sealed inputs unreadable.
    ///
    /// A database from before it kept check values binds the key it is
    /// first given, after `opens` (when given) has shown that the key opens
    /// what the database sealed with it: a key replaced during the upgrade
    /// would otherwise be bound, and the right one refused ever after.
    pub fn bound_key(
        &self,
        path: &Path,
        setting: &'static str,
        opens: Option<KeyProof>,
    ) -> Result<Vec<u8>, StoreError> {
        let err = |message: String| StoreError::Key {
            setting,
            path: path.to_owned(),
            message,
        };
        let bound: Option<String> = self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT check_value FROM key_checks WHERE setting = ?1",
                    [setting],
                    |r| r.get(0),
                )
                .optional()?)
        })?;
        // A database from before it kept check values holds none, but its
        // records were written under some key all the same.
        let written = bound.is_some()
            || self.read(|conn| {
                Ok(conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM ledger) OR EXISTS (SELECT 1 FROM decisions)",
                    [],
                    |r| r.get::<_, bool>(0),
                )?)
            })?;
        if written && !path.exists() {
            return Err(err(format!(
                "does not exist, but the database {} was written under the key it held; restore the file (a new key would cut every person off from their records)",
                self.path.display()
            )));
        }
        let key = load_or_create_key(path, setting)?;
        let check = key_check(&key, setting);
        match bound {
            Some(b) if b == check => {}
            Some(_) => {
                return Err(err(format!(
                    "holds another key than the one the database {} was written under; restore the original file",
                    self.path.display()
                )));
            }
            None => {
                if written {
                    match opens {
                        Some(opens) if !self.read(|conn| opens(conn, &key))? => {
                            return Err(err(format!(
                                "holds another key than the one the database {} sealed its records with (they do not open under it); restore the original file",
                                self.path.display()
                            )));
                        }
                        Some(_) => {}
                        None => tracing::warn!(
                            setting,
                            path = %path.display(),
                            "the database has records but no check value of this key (it was written before Candor kept them): the key in the file is taken as the one they were written under, and bound to the database from now on"
                        ),
                    }
                }
                self.read(|conn| {
                    conn.execute(
                        "INSERT INTO key_checks (setting, check_value) VALUES (?1, ?2)",
                        [setting, check.as_str()],
                    )?;
                    Ok(())
                })?;
            }
        }
        Ok(key)
    }

    /// Runs a read on a pooled connection. Blocks: call it where blocking
    /// briefly is acceptable.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.1.recv().map_err(|_| StoreError::ShutDown)?;
        let result = f(&conn);
        let _ = self.readers.0.send(conn);
        result
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the queue lets the writer commit what it holds and exit.
        self.jobs.take();
        if let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = writer.join();
        }
    }
}

/// Subject → when it was erased, shared by the writer and the request path.
/// Work for that subject that began then or before (a Score in flight
/// during the erasure) is refused, so nothing of the subject reappears after
/// EraseSubject returns. While an erasure runs, its subject is fenced off
/// entirely ([`Erasures::fence`]); once the gateway no longer judges from
/// the subject's old state, the fence settles at that moment. The retention
/// purge forgets entries older than [`ERASURE_MEMORY_MS`].
#[derive(Debug, Default)]
pub struct Erasures(std::sync::RwLock<HashMap<String, Erased>>);

/// One subject's erasures: when the last was complete, and how many run.
#[derive(Debug, Clone, Copy)]
struct Erased {
    erased_at: i64,
    running: u32,
}

impl Erasures {
    /// Whether work for `subject` begun at `at_ms` began before its erasure.
    pub fn begun_before(&self, subject: &str, at_ms: i64) -> bool {
        self.read()
            .get(subject)
            .is_some_and(|e| e.running > 0 || at_ms <= e.erased_at)
    }

    /// Whether an erasure of `subject` completed at or after `at_ms`, so
    /// that what was recorded of the subject by then is erased.
    pub fn erased_since(&self, subject: &str, at_ms: i64) -> bool {
        self.read()
            .get(subject)
            .is_some_and(|e| at_ms <= e.erased_at)
    }

    /// Refuses all work for `subject` until this erasure settles or fails.
    pub fn fence(&self, subject: &str) {
        self.write()
            .entry(subject.to_owned())
            .or_insert(Erased {
                erased_at: i64::MIN,
                running: 0,
            })
            .running += 1;
    }

    /// This erasure of `subject` is complete as of `at_ms`.
    pub fn settle(&self, subject: &str, at_ms: i64) {
        self.end(subject, Some(at_ms));
    }

    /// This erasure of `subject` failed: what was remembered stays.
    pub fn restore(&self, subject: &str) {
        self.end(subject, None);
    }

    fn end(&self, subject: &str, at_ms: Option<i64>) {
        let mut map = self.write();
        if let Some(e) = map.get_mut(subject) {
            e.running = e.running.saturating_sub(1);
            e.erased_at = e.erased_at.max(at_ms.unwrap_or(i64::MIN));
            if e.running == 0 && e.erased_at == i64::MIN {
                map.remove(subject);
            }
        }
    }

    fn at_least(&self, subject: &str, at_ms: i64) {
        let mut map = self.write();
        let e = map.entry(subject.to_owned()).or_insert(Erased {
            erased_at: at_ms,
            running: 0,
        });
        e.erased_at = e.erased_at.max(at_ms);
    }

    fn forget_before(&self, cutoff_ms: i64) {
        self.write()
            .retain(|_, e| e.running > 0 || e.erased_at > cutoff_ms);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Erased>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Erased>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one thread that writes: it owns the ledger's chain head.
struct Writer {
    conn: Connection,
    cipher: Arc<std::sync::OnceLock<Arc<InputCipher>>>,
    head: (i64, String),
    erased: Arc<Erasures>,
    provenances: StoredProvenances,
    /// Entries in the subject tail, as far as the writer knows (erasures
    /// and purges may have taken some); merged at
    /// [`decisions::SUBJECT_TAIL_ROWS`].
    subject_tail_rows: usize,
    /// Acknowledged work whose commit failed, written again first.
    retry: Vec<Job>,
    /// `retry`'s length, for [`Store::queued`].
    retrying: Arc<AtomicUsize>,
    /// Lowered by each committed decision nobody waited for.
    uncommitted: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    /// The connection's wait for another process's lock: shorter while
    /// commits fail.
    busy_timeout: Duration,
    /// A merge of the subject tail met the lock or a full disk since the
    /// last commit.
    locked_lately: bool,
    file: FileIdentity,
    committing: tokio::sync::watch::Sender<bool>,
    failures: Failures,
    /// The answers of each committed batch, for the flusher to give once
    /// the commit is on disk.
    flusher: Sender<Vec<Reply>>,
    /// A token from the flusher when it has synced everything handed over.
    synced: Receiver<()>,
    /// A commit handed to the flusher may not be synced yet.
    syncing: bool,
    async_commit_window: Duration,
    /// Up while the writer waits out its commit window.
    gathering: Arc<AtomicBool>,
}

/// Makes commits durable off the writer's path. The writer's connection
/// commits into the WAL without waiting for the disk
/// (`synchronous=NORMAL`); the flusher then fsyncs the WAL once for every
/// commit made before that fsync began, and only then answers their jobs.
/// A caller that waits for its commit so waits for one fsync, and the
/// writer runs the next batch meanwhile instead of waiting too. SQLite
/// itself still syncs the WAL before each checkpoint, and the database
/// file after it. Readers may see a commit a moment before its fsync ends;
/// whatever later depends on it is written after it in the same WAL, so
/// nothing can survive a power loss without it.
struct Flusher {
    wal_path: PathBuf,
    /// Tells the writer the disk has caught up.
    idle: Sender<()>,
    /// Opened on the first commit: SQLite creates the WAL file.
    wal: Option<std::fs::File>,
}

impl Flusher {
    fn new(database: &Path, idle: Sender<()>) -> Self {
        let mut wal_path = database.as_os_str().to_owned();
        wal_path.push("-wal");
        Self {
            wal_path: wal_path.into(),
            idle,
            wal: None,
        }
    }

    fn run(mut self, committed: Receiver<Vec<Reply>>) {
        while let Ok(first) = committed.recv() {
            let mut answers = first;
            answers.extend(committed.try_iter().flatten());
            let synced = self.sync();
            if let Err(e) = &synced {
                tracing::error!(error = %e, "committed writes may not be durable");
            }
            for answer in answers {
                answer(synced.clone());
            }
            if committed.is_empty() {
                // Full when the writer has not taken the last token yet.
                let _ = self.idle.try_send(());
            }
        }
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let wal = match self.wal.take() {
            Some(wal) => wal,
            None => std::fs::File::open(&self.wal_path).map_err(|e| self.failed(&e))?,
        };
        // fdatasync also writes the file's size, which grows with the WAL.
        let synced = wal.sync_data().map_err(|e| self.failed(&e));
        self.wal = Some(wal);
        synced
    }

    fn failed(&self, e: &std::io::Error) -> StoreError {
        StoreError::Sqlite(format!("fsync of {}: {e}", self.wal_path.display()))
    }
}

/// Pause before writing failed work again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Attempts left for failed work once the gateway shuts down (a full disk
/// may be cleared meanwhile): 5 s.
const RETRIES_AT_SHUTDOWN: usize = 50;

/// Answers a job once its batch's fate is known.
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

fn reply<T: Send + 'static>(
    tx: Option<oneshot::Sender<Result<T, StoreError>>>,
    result: Result<T, StoreError>,
) -> (Result<(), StoreError>, Reply) {
    let outcome = result.as_ref().map(drop).map_err(Clone::clone);
    match (&tx, &result) {
        // An answered decision of a subject erased since: dropped as the
        // erasure would have removed it. What was meant to happen.
        (None, Err(e @ StoreError::Erased)) => {
            tracing::debug!(error = %e, "an answered record of an erased subject is not written");
        }
        // Nobody waits for this answer: the log is the only place it
        // shows. (A lock or a full disk is retried, and logged as the
        // commits' failure is.)
        (None, Err(e)) if !e.is_transient() => {
            tracing::error!(error = %e, "an asynchronous write failed");
        }
        _ => {}
    }
    (
        outcome,
        Box::new(move |committed| {
            if let Some(tx) = tx {
                let _ = tx.send(committed.and(result));
            }
        }),
    )
}

impl Writer {
    fn run(mut self, jobs: Receiver<Job>) {
        let mut shutdown_retries = RETRIES_AT_SHUTDOWN;
        loop {
            let mut batch = std::mem::take(&mut self.retry);
            let retried = batch.len();
            if batch.is_empty() {
                match jobs.recv() {
                    Ok(first) => batch.push(first),
                    Err(_) => return,
                }
            } else {
                // Give the lock holder or a full disk time to clear.
                match jobs.recv_timeout(RETRY_PAUSE) {
                    Ok(job) => batch.push(job),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        if shutdown_retries == 0 {
                            // The log is the last place they can be found.
                            let lost: Vec<&str> = batch
                                .iter()
                                .filter_map(|job| match job {
                                    Job::Record(records, None) => Some(records),
                                    _ => None,
                                })
                                .flat_map(|records| &records.rows)
                                .map(|row| row.decision_id.as_str())
                                .collect();
                            tracing::error!(
                                jobs = batch.len(),
                                decisions = ?lost,
                                "shutting down with acknowledged writes the database would not take; these decisions are not recorded"
                            );
                            return;
                        }
                        shutdown_retries -= 1;
                        std::thread::sleep(RETRY_PAUSE);
                    }
                }
            }
            let room = MAX_GROUP.saturating_sub(batch.len());
            batch.extend(jobs.try_iter().take(room));
            // Nobody waits for asynchronous records: give more of them the
            // chance to share this commit (and its fsync), until the window
            // ends or a job somebody waits for arrives ([`Store::submit`]
            // wakes the writer; records that nobody waits for do not, which
            // is what makes them cheap).
            let unwaited = |batch: &[Job]| batch.iter().all(|j| matches!(j, Job::Record(_, None)));
            if batch.len() < MAX_GROUP && unwaited(&batch) {
                self.gathering.store(true, Ordering::Relaxed);
                // A job queued before the flag went up was not announced:
                // look once more before sleeping.
                std::sync::atomic::fence(Ordering::SeqCst);
                let room = MAX_GROUP - batch.len();
                batch.extend(jobs.try_iter().take(room));
                if batch.len() < MAX_GROUP && unwaited(&batch) {
                    std::thread::park_timeout(self.async_commit_window);
                }
                self.gathering.store(false, Ordering::Relaxed);
                let room = MAX_GROUP - batch.len();
                batch.extend(jobs.try_iter().take(room));
            }
            // While the flusher syncs the last commit, the next one takes
            // in what arrives: commits keep pace with the disk, and each
            // fsync covers whatever came during the one before, rather
            // than the writer committing every job or two and rewriting
            // the same pages each time. The writer sleeps through the
            // fsync and then takes the queue at once: waking for each job
            // as it arrives cost more CPU than the inserts themselves.
            if self.syncing && batch.len() < MAX_GROUP {
                // An error means the flusher has gone: nothing to wait for.
                let _ = self.synced.recv();
                self.syncing = false;
                let room = MAX_GROUP - batch.len();
                batch.extend(jobs.try_iter().take(room));
            }
            // Retries go last: an erasure or a purge queued since may free
            // the room they need (and an erasure refuses a retried record
            // of its subject, as it would have refused it new).
            batch.rotate_left(retried);
            // Erasures and purges go first: they free room, so that a full
            // disk does not take them down with the records ahead of them.
            // Work for an erased subject queued before its erasure is then
            // refused as erased, as it would be if it came after.
            batch.sort_by_key(|j| !j.deletes());
            let busy = if self.failing.load(Ordering::Relaxed) || self.locked_lately {
                FAILING_BUSY_TIMEOUT
            } else {
                BUSY_TIMEOUT
            };
            if busy != self.busy_timeout && self.conn.busy_timeout(busy).is_ok() {
                self.busy_timeout = busy;
            }
            self.commit_batch(batch, retried);
        }
    }

    fn run_job(
        conn: &Connection,
        head: &mut (i64, String),
        erased: &Erasures,
        provenances: &mut StoredProvenances,
        cipher: Option<&InputCipher>,
        job: Job,
    ) -> (Result<(), StoreError>, Reply) {
        // Begun at `at` for `subject`, before that subject's erasure?
        let stale =
            |subject: Option<&str>, at: i64| subject.is_some_and(|s| erased.begun_before(s, at));
        match job {
            Job::Append(drafts, tx) => {
                if drafts
                    .iter()
                    .any(|d| stale(d.subject_ref.as_deref(), d.collection.collected_at_ms))
                {
                    return reply(Some(tx), Err(StoreError::Erased));
                }
                let result = drafts
                    .into_iter()
                    .map(|d| ledger::append_one(conn, head, d, Vec::new()))
                    .collect::<Result<Vec<_>, _>>();
                reply(Some(tx), result)
            }
            Job::Erase(subject, at_ms, by, tx) => {
                let result = decisions::erase_subject(conn, &subject)
                    .and_then(|d| ledger::erase_subject(conn, head, &subject, at_ms, by, d))
                    .and_then(|erasure| {
                        audit::erase_subject(conn, &subject, &erasure.tombstone.record_id)
                            .map(|()| erasure)
                    });
                if result.is_ok() {
                    erased.at_least(&subject, at_ms);
                }
                provenances.forget();
                reply(Some(tx), result)
            }
            Job::EraseDecisions(subject, tx) => {
                reply(Some(tx), decisions::erase_step(conn, &subject))
            }
            Job::Record(batch, tx) => {
                let first = batch.rows.first();
                if first.is_some_and(|r| stale(batch.subject_ref.as_deref(), r.decided_at_ms)) {
                    return reply(tx, Err(StoreError::Erased));
                }
                reply(tx, decisions::insert(conn, &batch, provenances, cipher))
            }
            Job::Attach(id, explanation, tx) => {
                reply(tx, decisions::attach(conn, &id, &explanation, cipher))
            }
            Job::Purge(now_ms, tx) => {
                erased.forget_before(now_ms - ERASURE_MEMORY_MS);
                provenances.forget();
                reply(Some(tx), decisions::purge(conn, now_ms))
            }
            Job::ExpireEvidence(before_ms, tx) => reply(
                Some(tx),
                ledger::expire_evidence(conn, head, before_ms, now_ms()),
            ),
            Job::ExpireStaffReads(before_ms, tx) => reply(Some(tx), audit::expire(conn, before_ms)),
            Job::Forgo(ids) => reply::<()>(None, decisions::forgo(conn, &ids)),
            Job::Committed(tx) => reply(Some(tx), Ok(())),
            Job::TrackProvenances(tx) => {
                provenances.track();
                reply(Some(tx), Ok(()))
            }
            Job::ForgetProvenances(shas, last, tx) => {
                let forgotten = decisions::forget_provenances(conn, &shas, provenances);
                if last {
                    provenances.untrack();
                }
                reply(Some(tx), forgotten)
            }
            Job::StaffRead(read, tx) => reply(Some(tx), audit::insert(conn, &read)),
            Job::Shadow(rows) => {
                // A shadow of a subject erased meanwhile is not written.
                let live: Vec<ShadowRow> = rows
                    .iter()
                    .filter(|r| !stale(r.subject_ref.as_deref(), r.decided_at_ms))
                    .cloned()
                    .collect();
                reply::<()>(None, decisions::shadow::insert(conn, &live, cipher))
            }
        }
    }

    /// Moves the subject tail into the subject index. A failure leaves the
    /// tail whole, and every look-up still reads it; the merge is tried
    /// again once as many entries more have come.
    fn merge_subject_tail(&mut self) {
        let merged = self
            .conn
            .transaction()
            .map_err(StoreError::from)
            .and_then(|tx| {
                let moved = decisions::merge_subject_tail(&tx)?;
                tx.commit()?;
                Ok(moved)
            });
        match merged {
            Ok(moved) => tracing::debug!(entries = moved, "subject tail merged into the index"),
            Err(e) => {
                // The next batch would meet the same lock: it waits the
                // shorter time, as while commits fail.
                self.locked_lately |= e.is_transient();
                tracing::warn!(error = %e, "cannot merge the subject tail; look-ups read it whole")
            }
        }
        self.subject_tail_rows = 0;
    }

    /// Runs each job under its own savepoint inside one transaction, commits
    /// once, and only then answers: an acknowledged write is on disk.
    /// Runs `batch` in one transaction and commits it; its last `retried`
    /// jobs are retries of acknowledged work after a lock or a full disk.
    fn commit_batch(&mut self, batch: Vec<Job>, retried: usize) {
        let head_before = self.head.clone();
        // An erasure or a retention purge: afterwards the WAL is emptied.
        let deletes = batch.iter().any(Job::deletes);
        let subject_rows: usize = batch
            .iter()
            .map(|j| match j {
                Job::Record(b, _) if b.subject_ref.is_some() => b.rows.len(),
                _ => 0,
            })
            .sum();
        let mut unwaited_rows = 0;
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        let mut again: Vec<Job> = Vec::new();
        // Retried jobs, and every job while commits fail, run under
        // savepoints of their own, so that one that meets the lock or the
        // full disk is undone alone (and, if acknowledged, kept for the
        // next batch, its rows still uncommitted) while the rest goes on:
        // an erasure or a purge may be what frees room. A job without a
        // savepoint that fails so may have written half of itself: the
        // batch fails, and its acknowledged work is retried.
        // Positions in `again` of the jobs kept alone.
        let (mut held, mut held_rows) = (Vec::new(), 0);
        let mut held_error = None;
        let Writer {
            conn,
            cipher,
            head,
            erased,
            provenances,
            file,
            ..
        } = self;
        let mut failure: Option<StoreError> = None;
        let tx = conn
            .transaction()
            .map_err(|e| failure = Some(e.into()))
            .ok();
        // Savepoints by cached statements: a job's own savepoint costs no
        // SQL parsing.
        let run = |tx: &rusqlite::Transaction<'_>, sql: &str| -> Result<(), StoreError> {
            Ok(tx.prepare_cached(sql)?.execute([]).map(drop)?)
        };
        let first_retry = batch.len() - retried;
        // While commits fail, every job runs under a savepoint: one the
        // lock or the full disk stops is undone alone, and an erasure or
        // purge in the same batch still runs (and may free the room).
        let failing_before = self.failing.load(Ordering::Relaxed);
        // Once the lock or the full disk has stopped a job, the jobs after
        // it would each wait the busy timeout in turn only to be stopped
        // too: they are answered with its error, or kept if acknowledged,
        // without trying.
        let mut stopped: Option<StoreError> = None;
        for (i, job) in batch.into_iter().enumerate() {
            let copy = job.retry_copy().map(|c| {
                again.push(c);
                again.len() - 1
            });
            let rows = match &job {
                Job::Record(b, None) => b.rows.len(),
                _ => 0,
            };
            unwaited_rows += rows;
            if let Some(e) = &stopped {
                if let Some(at) = copy {
                    held.push(at);
                    held_rows += rows;
                }
                let (e, refuse) = (e.clone(), job.refusal());
                replies.push(Box::new(move |_| refuse(Err(e))));
                continue;
            }
            // Once the transaction is lost (a full disk fails even a
            // savepoint), the rest of the batch is answered with its error
            // rather than dropped.
            let Some(tx) = tx.as_ref().filter(|_| failure.is_none()) else {
                replies.push(job.refusal());
                continue;
            };
            let savepoint = job.needs_savepoint() || i >= first_retry || failing_before;
            if savepoint && let Err(e) = run(tx, "SAVEPOINT job") {
                failure = Some(e);
                replies.push(job.refusal());
                continue;
            }
            // Only a savepoint can undo a job's change to the chain head.
            let job_head = savepoint.then(|| head.clone());
            let (outcome, answer) = Self::run_job(
                tx,
                head,
                erased,
                provenances,
                cipher.get().map(|c| &**c),
                job,
            );
            replies.push(answer);
            if outcome.is_err() {
                // Its provenance may have been undone with it.
                provenances.forget();
            }
            let ended = if let Some(job_head) = job_head {
                match &outcome {
                    Ok(()) => Ok(()),
                    Err(_) => {
                        *head = job_head;
                        run(tx, "ROLLBACK TO job")
                    }
                }
                .and_then(|()| run(tx, "RELEASE job"))
            } else if outcome.is_err() && tx.is_autocommit() {
                Err(StoreError::Sqlite("the transaction was rolled back".into()))
            } else {
                Ok(())
            };
            match (ended, outcome, copy) {
                // SQLite rolls a whole transaction back on some errors (a
                // full disk): the job's own error is then the batch's.
                (Err(e), outcome, _) => failure = Some(outcome.err().unwrap_or(e)),
                // Undone alone: acknowledged work is kept for a retry, and
                // a caller who waits has its error. Either way the database
                // refused a write, so commits still fail.
                (Ok(()), Err(e), copy) if e.is_transient() && savepoint => {
                    if let Some(at) = copy {
                        held.push(at);
                        held_rows += rows;
                    }
                    stopped = Some(e.clone());
                    held_error = Some(e);
                }
                (Ok(()), Err(e), _) if e.is_transient() && !savepoint => failure = Some(e),
                _ => {}
            }
        }
        let committed = match (failure, tx) {
            (Some(e), _) => Err(e),
            // A commit to a file that is gone would acknowledge what no
            // restart can find.
            (None, Some(tx)) => file
                .check()
                .and_then(|()| tx.commit().map_err(StoreError::from)),
            (None, None) => Err(StoreError::Sqlite("no transaction".into())),
        };
        // Records kept for a retry stay uncommitted, and stay counted.
        if committed.is_ok() {
            let _ = (self.uncommitted).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(unwaited_rows - held_rows))
            });
        }
        let failed = match &committed {
            Err(e) => {
                self.head = head_before;
                self.provenances.forget();
                Some((e.clone(), again))
            }
            Ok(()) => held_error.map(|e| {
                let kept = (again.into_iter().enumerate())
                    .filter_map(|(i, job)| held.contains(&i).then_some(job))
                    .collect();
                (e, kept)
            }),
        };
        self.retrying.store(
            failed.as_ref().map_or(0, |(_, kept)| kept.len()),
            Ordering::Relaxed,
        );
        self.locked_lately &= failed.is_some();
        if let Some((e, kept)) = failed {
            self.failures.log(&e, kept.len());
            self.retry = kept;
            self.failing.store(true, Ordering::Relaxed);
            self.committing
                .send_if_modified(|ok| std::mem::replace(ok, false));
        } else if self.failing.swap(false, Ordering::Relaxed) {
            self.failures.ended();
            self.committing
                .send_if_modified(|ok| !std::mem::replace(ok, true));
        }
        if committed.is_ok() && deletes {
            // The WAL still holds the pages as they were before the erasure
            // or purge; copying the new ones back and truncating it removes
            // them (the database file's own copies are overwritten by
            // secure_delete).
            match self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                }) {
                Ok(0) => {}
                Ok(_) => tracing::warn!(
                    "checkpoint after an erasure or purge was blocked by a reader; the WAL keeps the deleted pages until the next checkpoint"
                ),
                Err(e) => tracing::warn!(error = %e, "checkpoint after an erasure or purge failed"),
            }
        }
        if committed.is_ok() {
            // Sent even with no one waiting: the fsync bounds what an OS
            // crash can take of asynchronous records.
            // A token left from before this commit would say it is synced.
            while self.synced.try_recv().is_ok() {}
            match self.flusher.send(replies) {
                Ok(()) => self.syncing = true,
                Err(unsent) => {
                    for answer in unsent.into_inner() {
                        answer(Err(StoreError::ShutDown));
                    }
                }
            }
            // After the hand-over, so that the batch's answers do not wait
            // for the merge; the next commit does.
            self.subject_tail_rows += subject_rows;
            if self.subject_tail_rows >= decisions::SUBJECT_TAIL_ROWS {
                self.merge_subject_tail();
            }
        } else {
            for answer in replies {
                answer(committed.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_starting_together_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("inputs.key");
        let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create_key(&path, "test.key_file").unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(keys[0].len(), 32);
        assert!(keys.iter().all(|k| *k == keys[0]));
        assert_eq!(load_or_create_key(&path, "test.key_file").unwrap(), keys[0]);
        // Only the key is left: no drafts.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    /// A ledger record of `kind` for the subject "s", collected at `at`.
    fn draft(
        kind: crate::consent::ledger::RecordKind,
        at: i64,
        purposes: Vec<crate::consent::ledger::PurposeEntry>,
    ) -> Draft {
        Draft {
            kind,
            subject_ref: Some("s".into()),
            controller: String::new(),
            purposes,
            data_categories: vec![],
            collection: crate::consent::ledger::Collection {
                method: "inline_signal".into(),
                collected_at_ms: at,
                jurisdiction: String::new(),
                language: String::new(),
                notice: None,
            },
            withdrawal_method: String::new(),
            evidence: None,
            recorded_by: None,
        }
    }

    /// Evidence past its keeping loses its content and pseudonym; other
    /// records keep theirs, and the chain still verifies, naming the
    /// removal in an erasure record.
    #[tokio::test]
    async fn expired_evidence_is_emptied_and_the_chain_still_verifies() {
        use crate::consent::ledger::{Ledger, PurposeEntry, RecordKind, Status};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let withdrawal = PurposeEntry {
            tcf_id: 3,
            dpv: "dpv:Personalisation".into(),
            status: Status::Withdrawn,
            legal_basis: crate::consent::ledger::LegalBasis::Consent,
        };
        let started = now_ms();
        let drafts = vec![
            draft(RecordKind::Evidence, now_ms(), vec![]),
            draft(RecordKind::Withdrawal, now_ms(), vec![withdrawal]),
            draft(RecordKind::Evidence, now_ms(), vec![]),
        ];
        store.submit(|tx| Job::Append(drafts, tx)).await.unwrap();
        let expire = |before| store.submit(move |tx| Job::ExpireEvidence(before, tx));
        assert_eq!(
            expire(started - 1).await.unwrap(),
            0,
            "none was made before"
        );
        assert_eq!(expire(now_ms() + 1).await.unwrap(), 2);
        assert_eq!(expire(now_ms() + 1).await.unwrap(), 0, "emptied once");
        let held: Vec<(String, bool, bool)> = store
            .read(|c| {
                let mut stmt = c.prepare(
                    "SELECT kind, content IS NOT NULL, subject_ref IS NOT NULL FROM ledger ORDER BY seq",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        let held: Vec<(&str, bool, bool)> =
            held.iter().map(|(k, c, s)| (k.as_str(), *c, *s)).collect();
        assert_eq!(
            held,
            [
                ("evidence", false, false),
                ("withdrawal", true, true),
                ("evidence", false, false),
                ("erasure", true, false),
            ]
        );
        let verified = Ledger::new(store.clone(), vec![7; 32]).verify().unwrap();
        assert!(verified.broken.is_none(), "{:?}", verified.broken);
    }

    /// Work that began before a subject's erasure never lands after it.
    #[tokio::test]
    async fn work_begun_before_an_erasure_is_refused_after_it() {
        use crate::consent::ledger::RecordKind;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let draft = |at| draft(RecordKind::Evidence, at, vec![]);
        let before = now_ms();
        store
            .submit(|tx| Job::Append(vec![draft(before)], tx))
            .await
            .unwrap();
        let erased_at = before + 10;
        store
            .submit(|tx| Job::Erase("s".into(), erased_at, None, tx))
            .await
            .unwrap();
        let late = store
            .submit(|tx| Job::Append(vec![draft(before)], tx))
            .await;
        assert!(matches!(late, Err(StoreError::Erased)), "{late:?}");
        let returning = store
            .submit(|tx| Job::Append(vec![draft(erased_at + 1)], tx))
            .await;
        assert!(
            returning.is_ok(),
            "a person who comes back afterwards is welcome"
        );
        // The scheduled purge forgets erasures older than any work in flight.
        store
            .submit(|tx| Job::Purge(erased_at + ERASURE_MEMORY_MS, tx))
            .await
            .unwrap();
        let backdated = store
            .submit(|tx| Job::Append(vec![draft(before)], tx))
            .await;
        assert!(backdated.is_ok(), "{backdated:?}");

        // While an erasure runs, every work for its subject is refused,
        // however late it began; then what began before it settled.
        store.erasures().fence("s");
        let during = store
            .submit(|tx| Job::Append(vec![draft(now_ms() + 60_000)], tx))
            .await;
        assert!(matches!(during, Err(StoreError::Erased)), "{during:?}");
        // What was recorded before is erased once the erasure settles.
        assert!(!store.erasures().erased_since("s", 0));
        let settled = now_ms();
        store.erasures().settle("s", settled);
        assert!(store.erasures().begun_before("s", settled));
        assert!(!store.erasures().begun_before("s", settled + 1));
        assert!(store.erasures().erased_since("s", settled));
        assert!(!store.erasures().erased_since("s", settled + 1));
        assert!(!store.erasures().begun_before("t", settled));
        // A failed erasure leaves nothing fenced; two at once each hold
        // the fence until their own end.
        store.erasures().fence("u");
        assert!(store.erasures().begun_before("u", i64::MAX - 1));
        store.erasures().restore("u");
        assert!(!store.erasures().begun_before("u", 0));
        store.erasures().fence("v");
        store.erasures().fence("v");
        store.erasures().settle("v", settled);
        assert!(
            store.erasures().begun_before("v", settled + 1),
            "one still runs"
        );
        store.erasures().restore("v");
        assert!(store.erasures().begun_before("v", settled));
        assert!(!store.erasures().begun_before("v", settled + 1));
    }

    /// The writer skips provenances it has stored; one deleted with its
    /// subject's erasure is stored again when the subject comes back, so
    /// their new decisions still read back whole.
    #[tokio::test]
    async fn a_provenance_erased_with_its_subject_is_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let record = |id: &str| {
            let batch = Arc::new(decisions::sample_batch(id, Some("s")));
            store.submit(move |tx| Job::Record(batch, Some(tx)))
        };
        let cipher = decisions::crypto::test_cipher();
        let read = |id: &'static str| store.read(|c| decisions::get(c, id, 0, &cipher));
        record("before").await.unwrap();
        record("again").await.unwrap();
        assert!(read("again").unwrap().is_some());
        let erased_at = now_ms();
        store
            .submit(|tx| Job::Erase("s".into(), erased_at, None, tx))
            .await
            .unwrap();
        assert!(read("before").unwrap().is_none());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        record("after").await.unwrap();
        let after = read("after")
            .unwrap()
            .expect("the decision after the erasure");
        assert_eq!(after.provenance.subject_ref.as_deref(), Some("s"));
    }

    /// Once the subject tail is long enough, the writer moves it into the
    /// subject index, and look-ups find every decision either way.
    #[tokio::test]
    async fn the_writer_merges_a_long_subject_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let record = |ids: std::ops::Range<usize>, subject: Option<&str>| {
            let mut batch = decisions::sample_batch("", subject);
            let row = batch.rows.pop().unwrap();
            batch.rows = ids
                .map(|i| decisions::NewDecision {
                    decision_id: format!("{i:08}"),
                    ..row.clone()
                })
                .collect();
            let batch = Arc::new(batch);
            store.submit(move |tx| Job::Record(batch, Some(tx)))
        };
        let parts = || {
            store.read(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT COUNT(*) FROM subject_index), (SELECT COUNT(*) FROM subject_tail)",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?)
            })
        };
        let last = decisions::SUBJECT_TAIL_ROWS;
        let entries = last as i64;
        record(0..last - 1, Some("s")).await.unwrap();
        assert_eq!(parts().unwrap(), (0, entries - 1));
        record(last - 1..last, Some("s")).await.unwrap();
        // The merge follows that commit; the writer takes this job after it.
        record(last..last + 1, None).await.unwrap();
        assert_eq!(parts().unwrap(), (entries, 0));
        record(last + 1..last + 2, Some("s")).await.unwrap();
        let newest = store
            .read(|c| {
                decisions::list(
                    c,
                    "s",
                    crate::paging::DecisionPosition::NEWEST,
                    last + 2,
                    0,
                    &decisions::crypto::test_cipher(),
                )
            })
            .unwrap();
        assert_eq!(newest.len(), last + 1, "merged and in the tail");
        assert_eq!(newest[0].decision_id, format!("{:08}", last + 1));
    }

    /// A database at its size cap fails and recovers with every other
    /// commit: a failure is logged at most once an interval however often
    /// commits recover in between, and a recovery only when its failures
    /// were.
    #[test]
    fn failures_that_come_and_go_are_logged_once_an_interval() {
        let mut failures = Failures::default();
        failures.log(&StoreError::ShutDown, 0);
        assert!(failures.announced);
        failures.ended();
        failures.log(&StoreError::ShutDown, 0);
        assert!(!failures.announced, "logged again within the interval");
        assert_eq!(failures.since_logged, 1);
    }

    /// A key file that cannot be used is named with the setting that gave
    /// it.
    #[test]
    fn a_bad_key_file_names_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inputs.key");
        std::fs::write(&path, "not hex").unwrap();
        let e = load_or_create_key(&path, "decisions.input_key_file").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("decisions.input_key_file: key file "),
            "{e}"
        );
        assert!(e.to_string().ends_with("is not hex"), "{e}");
        // A made-up key anyone could guess, and a folder where the file
        // belongs (refused before its permissions are judged).
        for (text, says) in [
            ("00".repeat(32), "only 1 different byte values"),
            ("01234567".repeat(8), "only 4 different byte values"),
            ("0123456789abcdef".repeat(4), "only 8 different byte values"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load_or_create_key(&path, "decisions.input_key_file").unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
        let folder = dir.path().join("folder.key");
        std::fs::create_dir(&folder).unwrap();
        let e = load_or_create_key(&folder, "decisions.input_key_file").unwrap_err();
        assert!(e.to_string().ends_with("is not a regular file"), "{e}");
    }

    /// Writes a key (the SHA-256 of `seed`, in hex) to `path`.
    fn write_key(path: &Path, seed: &[u8]) {
        std::fs::write(
            path,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(seed)),
        )
        .unwrap();
    }

    /// A database is bound to the keys it was first used with: a key file
    /// that goes missing is not replaced, and another key is refused.
    #[test]
    fn a_database_refuses_a_lost_or_replaced_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("candor.db");
        let key = dir.path().join("subject.key");
        let setting = "consent.subject_key_file";
        let first = Store::open(&db)
            .unwrap()
            .bound_key(&key, setting, None)
            .unwrap();
        let again = Store::open(&db)
            .unwrap()
            .bound_key(&key, setting, None)
            .unwrap();
        assert_eq!(first, again);

        std::fs::rename(&key, dir.path().join("aside.key")).unwrap();
        let e = Store::open(&db)
            .unwrap()
            .bound_key(&key, setting, None)
            .unwrap_err();
        assert!(e.to_string().starts_with(setting), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!key.exists(), "a new key was made in place of the lost one");

        write_key(&key, b"another key");
        let e = Store::open(&db)
            .unwrap()
            .bound_key(&key, setting, None)
            .unwrap_err();
        assert!(e.to_string().contains("holds another key"), "{e}");

        // Another database takes the key it is first given.
        let other = dir.path().join("other.db");
        Store::open(&other)
            .unwrap()
            .bound_key(&key, setting, None)
            .unwrap();

        // A database from before it kept check values has none, but its
        // records were written under a key: losing that file refuses too.
        let (old, old_key) = (dir.path().join("old.db"), dir.path().join("old.key"));
        {
            let store = Store::open(&old).unwrap();
            store.bound_key(&old_key, setting, None).unwrap();
            let id = "00000000-0000-7000-8000-000000000001";
            let batch = Arc::new(decisions::sample_batch(id, None));
            assert!(store.send_unwaited(&batch).unwrap());
        }
        Connection::open(&old)
            .unwrap()
            .execute("DELETE FROM key_checks", [])
            .unwrap();
        std::fs::remove_file(&old_key).unwrap();
        let e = Store::open(&old)
            .unwrap()
            .bound_key(&old_key, setting, None)
            .unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!old_key.exists());
    }

    /// A database from before it kept check values binds the input key it
    /// is first given only if that key opens the inputs it sealed: a key
    /// replaced during the upgrade is refused, not bound.
    #[test]
    fn an_old_database_binds_only_the_input_key_that_opens_its_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let (db, key) = (dir.path().join("old.db"), dir.path().join("inputs.key"));
        let setting = "decisions.input_key_file";
        let proof = Some(decisions::sealed_with as KeyProof);
        {
            let store = Store::open(&db).unwrap();
            let original = store.bound_key(&key, setting, proof).unwrap();
            let id = "00000000-0000-7000-8000-000000000001";
            let mut batch = decisions::sample_batch(id, None);
            batch.rows[0].inputs = Some(InputCipher::new(&original).seal(id, &[1.0, 2.0]));
            assert!(store.send_unwaited(&Arc::new(batch)).unwrap());
        }
        Connection::open(&db)
            .unwrap()
            .execute("DELETE FROM key_checks", [])
            .unwrap();
        let original = std::fs::read(&key).unwrap();
        write_key(&key, b"a replaced key");
        let e = Store::open(&db)
            .unwrap()
            .bound_key(&key, setting, proof)
            .unwrap_err();
        assert!(e.to_string().contains("do not open under it"), "{e}");
        std::fs::write(&key, original).unwrap();
        Store::open(&db)
            .unwrap()
            .bound_key(&key, setting, proof)
            .unwrap();
    }

    /// `n` decisions for subject "s" in one batch, the i-th kept until
    /// `retain(i)`.
    fn decisions_of_s(n: usize, retain: impl Fn(usize) -> i64) -> Arc<RecordBatch> {
        let mut batch = decisions::sample_batch("00000000-0000-7000-8000-000000000000", Some("s"));
        let row = batch.rows[0].clone();
        batch.rows = (0..n)
            .map(|i| decisions::NewDecision {
                decision_id: format!("00000000-0000-7000-8000-{i:012}"),
                retain_until_ms: retain(i),
                ..row.clone()
            })
            .collect();
        Arc::new(batch)
    }

    /// A backlog of expired decisions goes in steps that each hold the
    /// writer briefly, soonest expired first; then the provenances no
    /// decision cites any more go, but for one a decision cited meanwhile.
    #[tokio::test]
    async fn the_retention_purge_goes_in_bounded_steps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let expired = decisions::PURGED_AT_ONCE + 500;
        // One decision is kept; the others expired in turn.
        let batch = decisions_of_s(expired + 1, |i| {
            if i == expired {
                i64::MAX - 1
            } else {
                1 + i as i64
            }
        });
        store
            .submit(|tx| Job::Record(batch, Some(tx)))
            .await
            .unwrap();
        let count = |sql: &str| -> i64 {
            store
                .read(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
                .unwrap()
        };
        let purge = || store.submit(|tx| Job::Purge(i64::MAX - 1, tx));
        assert_eq!(purge().await.unwrap(), decisions::PURGED_AT_ONCE as u64);
        // The soonest expired went first.
        assert_eq!(
            count("SELECT MIN(retain_until) FROM decisions"),
            1 + decisions::PURGED_AT_ONCE as i64
        );
        assert_eq!(count("SELECT COUNT(*) FROM provenances"), 1);
        assert_eq!(purge().await.unwrap(), 500);
        assert_eq!(count("SELECT COUNT(*) FROM decisions"), 1);
        assert_eq!(purge().await.unwrap(), 0);
        let all = || store.submit(|tx| Job::Purge(i64::MAX, tx));
        assert_eq!(all().await.unwrap(), 1);
        // The provenance no decision cites now goes after the purge.
        let uncited = || store.read(decisions::uncited_provenances).unwrap();
        let forget =
            |shas: Vec<String>| store.submit(move |tx| Job::ForgetProvenances(shas, true, tx));
        assert_eq!(uncited().len(), 1);
        // ... unless a decision recorded since the tracking began cites it.
        store.submit(Job::TrackProvenances).await.unwrap();
        let found = uncited();
        let again = decisions_of_s(1, |_| i64::MAX - 1);
        store
            .submit(|tx| Job::Record(again, Some(tx)))
            .await
            .unwrap();
        assert_eq!(forget(found).await.unwrap(), 0);
        assert_eq!(count("SELECT COUNT(*) FROM provenances"), 1);
        assert_eq!(all().await.unwrap(), 1);
        store.submit(Job::TrackProvenances).await.unwrap();
        assert_eq!(forget(uncited()).await.unwrap(), 1);
        assert_eq!(count("SELECT COUNT(*) FROM provenances"), 0);
    }

    /// A person with many decisions is erased in steps, each a short
    /// transaction.
    #[tokio::test]
    async fn a_subjects_decisions_are_erased_in_bounded_steps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let batch = decisions_of_s(decisions::ERASED_AT_ONCE + 10, |_| i64::MAX);
        store
            .submit(|tx| Job::Record(batch, Some(tx)))
            .await
            .unwrap();
        let step = || store.submit(|tx| Job::EraseDecisions("s".into(), tx));
        assert_eq!(step().await.unwrap(), decisions::ERASED_AT_ONCE as u64);
        assert_eq!(step().await.unwrap(), 10);
        assert_eq!(step().await.unwrap(), 0);
    }

    /// A second open changes nothing in the schema: on a full disk an open
    /// that writes fails, and the gateway could not start to purge.
    #[test]
    fn reopening_a_database_leaves_its_schema_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("candor.db");
        let schema = |db: &Path| -> i64 {
            Connection::open(db)
                .unwrap()
                .query_row("PRAGMA schema_version", [], |r| r.get(0))
                .unwrap()
        };
        drop(Store::open(&db).unwrap());
        let first = schema(&db);
        drop(Store::open(&db).unwrap());
        assert_eq!(schema(&db), first);
    }

    /// A database a newer Candor wrote is refused, naming its layout,
    /// rather than misread record by record.
    #[test]
    fn a_database_from_a_newer_candor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("candor.db");
        drop(Store::open(&db).unwrap());
        let version = |db: &Path| -> i64 {
            Connection::open(db)
                .unwrap()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(version(&db), SCHEMA_VERSION);
        Connection::open(&db)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let e = Store::open(&db).err().expect("refused");
        assert!(e.to_string().contains("written by a newer Candor"), "{e}");
        assert_eq!(version(&db), SCHEMA_VERSION + 1);
    }

    /// One gateway per database: a second store on the same file is
    /// refused, naming the lock, until the first is gone.
    #[test]
    fn a_database_is_opened_by_one_store_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = Store::open(&path).unwrap();
        let Err(second) = Store::open(&path) else {
            panic!("a second store opened the same database");
        };
        assert!(second.to_string().contains("db.lock"), "{second}");
        assert!(second.to_string().contains("a second gateway"), "{second}");
        // Nor through a hard link, which has a lock file of its own.
        let link = dir.path().join("link");
        std::fs::hard_link(&path, &link).unwrap();
        let Err(linked) = Store::open(&link) else {
            panic!("a second store opened the same database through a hard link");
        };
        assert!(linked.to_string().contains("hard link"), "{linked}");
        drop(first);
        Store::open(&path).unwrap();
        // A mistyped path starts no new record in a new folder tree.
        let Err(nowhere) = Store::open(&dir.path().join("no/such/folder/db")) else {
            panic!("a database opened under folders that do not exist");
        };
        assert!(
            nowhere.to_string().contains("cannot create its folder"),
            "{nowhere}"
        );
        assert!(
            nowhere.to_string().contains("does not exist either"),
            "{nowhere}"
        );
    }

    /// A damaged file is refused at start, saying so, rather than taking
    /// new records and failing reads at random.
    #[test]
    fn a_damaged_database_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        drop(conn);
        assert!(pages > 3, "{pages}");
        // Scribble over the second page (the first table's root).
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4096..2 * 4096].fill(0xA5);
        std::fs::write(&path, bytes).unwrap();
        let Err(refused) = Store::open(&path) else {
            panic!("a damaged database opened");
        };
        assert!(
            refused.to_string().contains("the file is damaged"),
            "{refused}"
        );
    }

    /// A database reached through a link commits (SQLite keeps the WAL
    /// beside the file the link reaches, and the fsync must find it there),
    /// and it is still one gateway per database, whatever name it is
    /// reached by.
    #[tokio::test]
    async fn a_database_reached_through_a_link_is_the_file_it_reaches() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::create_dir(dir.path().join("links")).unwrap();
        let real = dir.path().join("real/db");
        drop(Store::open(&real).unwrap());
        let link = dir.path().join("links/db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let store = Store::open(&link).unwrap();
        let batch = Arc::new(decisions::sample_batch("through-a-link", None));
        store
            .submit(move |tx| Job::Record(batch, Some(tx)))
            .await
            .unwrap();
        let Err(second) = Store::open(&real) else {
            panic!("a second store opened the database under its other name");
        };
        assert!(second.to_string().contains("a second gateway"), "{second}");
    }

    /// The record holds consent evidence and decisions about people: a new
    /// database, its WAL and the WAL's index are the gateway user's alone.
    #[tokio::test]
    async fn a_new_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        let batch = Arc::new(decisions::sample_batch("private", Some("s")));
        store
            .submit(move |tx| Job::Record(batch, Some(tx)))
            .await
            .unwrap();
        for name in ["db", "db-wal", "db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{name}: {mode:o}");
        }
    }

    /// A database deleted (or replaced) under a running store is noticed
    /// at the next commit: nothing is acknowledged into a file no restart
    /// would find, and commits fail until then.
    #[tokio::test]
    async fn a_database_deleted_while_running_fails_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        let record = |id: &str| {
            let batch = Arc::new(decisions::sample_batch(id, Some("s")));
            store.submit(move |tx| Job::Record(batch, Some(tx)))
        };
        record("before").await.unwrap();
        for file in ["db", "db-wal", "db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(file));
        }
        let lost = record("after").await.unwrap_err();
        assert!(matches!(lost, StoreError::Replaced(_)), "{lost}");
        assert!(store.is_failing());
        assert!(!*store.commits_succeed().borrow());
        // An acknowledged (async) record is held for a retry, and counted as
        // not yet committed while it is.
        let kept = Arc::new(decisions::sample_batch("acknowledged", None));
        assert!(store.send_unwaited(&kept).unwrap());
        // By then the writer has taken it from its queue and failed to
        // commit it at least once.
        tokio::time::sleep(RETRY_PAUSE * 5).await;
        assert_eq!(store.queued(), 1, "the held record is counted");
    }

    /// An answer of success means the WAL was synced: when it cannot be,
    /// every job of the commit hears of it.
    #[test]
    fn commits_are_answered_after_the_fsync_and_with_its_outcome() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("present.db-wal"), b"frames").unwrap();
        let outcomes = |database: &str| {
            let answers = Arc::new(Mutex::new(Vec::new()));
            let (commits, committed) = crossbeam_channel::unbounded();
            for batch in 0..2 {
                let answer = |job: usize| -> Reply {
                    let answers = answers.clone();
                    Box::new(move |synced: Result<(), StoreError>| {
                        answers.lock().unwrap().push((batch, job, synced.is_ok()));
                    })
                };
                commits.send(vec![answer(0), answer(1)]).unwrap();
            }
            drop(commits);
            let (idle, _synced) = crossbeam_channel::bounded(1);
            Flusher::new(&dir.path().join(database), idle).run(committed);
            Arc::try_unwrap(answers).unwrap().into_inner().unwrap()
        };
        let all = |ok| vec![(0, 0, ok), (0, 1, ok), (1, 0, ok), (1, 1, ok)];
        assert_eq!(outcomes("present.db"), all(true));
        assert_eq!(outcomes("missing.db"), all(false));
    }

    /// A store in `dir` whose writer gathers asynchronous records far
    /// longer than any test waits: only a job somebody waits for ends it.
    fn gathering(dir: &Path, async_max_uncommitted: usize) -> Store {
        Store::open_with(
            &dir.join("db"),
            &StoreSettings {
                async_commit_window: Duration::from_secs(600),
                async_max_uncommitted,
                ..StoreSettings::default()
            },
        )
        .unwrap()
    }

    /// A caller waiting for its commit (a consent change, an erasure, a
    /// staff read) is not held for the window in which the writer gathers
    /// asynchronous records; here the window is far longer than any wait
    /// the test allows.
    #[tokio::test]
    async fn a_waiting_job_ends_the_async_commit_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = gathering(dir.path(), StoreSettings::default().async_max_uncommitted);
        for round in 0..3 {
            let id = format!("00000000-0000-7000-8000-00000000000{round}");
            let batch = Arc::new(decisions::sample_batch(&id, None));
            assert!(store.send_unwaited(&batch).unwrap());
            let purged = tokio::time::timeout(
                Duration::from_secs(60),
                store.submit(|tx| Job::Purge(0, tx)),
            )
            .await;
            assert!(matches!(purged, Ok(Ok(0))), "round {round}: {purged:?}");
        }
    }

    /// What a crash can lose in `async` is bounded: a record that would
    /// take the decisions acknowledged and not yet committed past the
    /// bound is not queued unwaited, and room comes back with each commit.
    #[tokio::test]
    async fn records_nobody_waits_for_are_bounded_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = gathering(dir.path(), 3);
        let batch = |rows: usize, first: usize| {
            let mut batch =
                decisions::sample_batch(&format!("00000000-0000-7000-8000-{first:012}"), None);
            let row = batch.rows[0].clone();
            batch.rows = (first..first + rows)
                .map(|i| decisions::NewDecision {
                    decision_id: format!("00000000-0000-7000-8000-{i:012}"),
                    ..row.clone()
                })
                .collect();
            Arc::new(batch)
        };
        assert!(store.send_unwaited(&batch(2, 0)).unwrap());
        assert!(!store.send_unwaited(&batch(2, 2)).unwrap(), "4 > 3");
        assert!(store.send_unwaited(&batch(1, 4)).unwrap(), "3 fit");
        assert!(
            !store.send_unwaited(&batch(1, 5)).unwrap(),
            "the bound is full"
        );
        // A job that is waited for ends the window; the records queued
        // before it share its commit.
        store.submit(|tx| Job::Purge(0, tx)).await.unwrap();
        assert!(store.send_unwaited(&batch(3, 6)).unwrap(), "room again");
        store.submit(|tx| Job::Purge(0, tx)).await.unwrap();
        let recorded: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM decisions", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(recorded, 6, "every record queued is committed");
    }

    /// A record nobody waits for whose write meets a lock held past the
    /// busy timeout is kept and written once the lock goes: it was
    /// answered, so it is never dropped.
    #[tokio::test]
    async fn an_answered_record_outlasts_a_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let locker = Connection::open(dir.path().join("db")).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let id = "00000000-0000-7000-8000-000000000001";
        let batch = Arc::new(decisions::sample_batch(id, None));
        assert!(store.send_unwaited(&batch).unwrap());
        // Past the writer's 5 s busy timeout.
        tokio::time::sleep(Duration::from_secs(6)).await;
        locker.execute_batch("ROLLBACK").unwrap();
        let flushed = tokio::time::timeout(
            Duration::from_secs(60),
            store.submit(|tx| Job::Purge(0, tx)),
        )
        .await;
        assert!(matches!(flushed, Ok(Ok(0))), "{flushed:?}");
        let recorded: i64 = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM decisions WHERE decision_id = ?1",
                    [id],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(recorded, 1, "the answered record was dropped");
    }

    /// Another process holding the database's lock: a caller who waits
    /// for its commit is answered UNAVAILABLE after one busy timeout, not
    /// one more for every attempt queued ahead of it, and health stays
    /// down until a write lands, even when every job of a batch was undone
    /// alone and the empty transaction could commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_database_fails_callers_once_and_stays_failing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let locker = Connection::open(dir.path().join("db")).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let started = std::time::Instant::now();
        // Two rows each, as a ScoreBatch's: each job runs under a savepoint.
        let waited = |i: usize| {
            let store = store.clone();
            let id = |n: usize| format!("00000000-0000-7000-8000-{n:012}");
            let mut batch = decisions::sample_batch(&id(2 * i), None);
            let second = decisions::sample_batch(&id(2 * i + 1), None).rows.remove(0);
            batch.rows.push(second);
            let batch = Arc::new(batch);
            tokio::spawn(async move {
                let outcome = store.submit(move |tx| Job::Record(batch, Some(tx))).await;
                (outcome, started.elapsed())
            })
        };
        // Several at once, which would each wait the busy timeout in turn
        // if the first stopped did not stop the rest of its batch; then
        // more while the lock stays.
        let mut calls: Vec<_> = (0..4).map(waited).collect();
        for i in 4..7 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            calls.push(waited(i));
        }
        for call in calls {
            let (outcome, after) = call.await.unwrap();
            assert!(matches!(outcome, Err(StoreError::Busy(_))), "{outcome:?}");
            assert!(
                after < BUSY_TIMEOUT + Duration::from_secs(2),
                "answered after {after:?}"
            );
        }
        let mut succeed = store.commits_succeed();
        assert!(store.is_failing() && !*succeed.borrow_and_update());
        for i in 7..11 {
            let (outcome, _) = waited(i).await.unwrap();
            assert!(matches!(outcome, Err(StoreError::Busy(_))), "{outcome:?}");
            assert!(
                store.is_failing(),
                "health came back while the lock was held"
            );
        }
        assert!(!succeed.has_changed().unwrap());
        locker.execute_batch("ROLLBACK").unwrap();
        let (outcome, _) = waited(11).await.unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
        assert!(!store.is_failing() && *succeed.borrow_and_update());
    }

    /// An answered record the full database cannot take is kept and
    /// retried without holding up the rest: an erasure behind it frees
    /// room, and then the record lands too.
    #[tokio::test]
    async fn a_record_kept_for_a_full_disk_does_not_hold_up_an_erasure() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            &dir.path().join("db"),
            &StoreSettings {
                max_bytes: Some(256 * 1024),
                ..StoreSettings::default()
            },
        )
        .unwrap();
        let id = |i: usize| format!("00000000-0000-7000-8000-{i:012}");
        let mut i = 0;
        let full = loop {
            let batch = Arc::new(decisions::sample_batch(&id(i), Some("filler")));
            match store.submit(move |tx| Job::Record(batch, Some(tx))).await {
                Ok(()) => i += 1,
                Err(e) => break e,
            }
            assert!(i < 100_000, "the database never filled");
        };
        assert!(matches!(full, StoreError::Full(_)), "{full}");
        let kept = Arc::new(decisions::sample_batch(&id(i + 1), None));
        assert!(store.send_unwaited(&kept).unwrap());
        tokio::time::sleep(RETRY_PAUSE * 5).await;
        assert_eq!(store.queued(), 1, "the answered record is kept");
        // A Score's record that waits for its commit comes in ahead of the
        // erasure: the erasure goes first and frees room, or the record
        // meets the full disk alone.
        let waited = Arc::new(decisions::sample_batch(&id(i + 2), Some("other")));
        let (scored, erased) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(
                store.submit(move |tx| Job::Record(waited, Some(tx))),
                store.submit(|tx| Job::Erase("filler".into(), now_ms(), None, tx)),
            )
        })
        .await
        .expect("the erasure is not held up");
        assert!(
            matches!(scored, Ok(()) | Err(StoreError::Full(_))),
            "{scored:?}"
        );
        assert!(erased.is_ok(), "{erased:?}");
        for _ in 0..100 {
            if store.queued() == 0 {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let recorded: i64 = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM decisions WHERE decision_id = ?1",
                    [id(i + 1)],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(recorded, 1, "the kept record landed once there was room");
    }

    #[test]
    fn connections_delete_securely() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("l.db")).unwrap();
        let on: i64 = conn
            .query_row("PRAGMA secure_delete", [], |r| r.get(0))
            .unwrap();
        assert_eq!(on, 1);
    }
}
