//! Gateway configuration: built-in defaults, overridden by an optional TOML
//! file, then by `CANDOR_*` environment variables, then by command-line flags.
//!
//! Every field has a default that runs the gateway with the bundled models and
//! no external service, so `candor serve` needs no configuration at all.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

use crate::{consent::policy::UnknownJurisdiction, decisions::Durability};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Folder holding `<name>/<version>/` model packages.
    pub models_dir: PathBuf,
    /// Reload the models folder when it changes (a new version folder, an
    /// edited `rollout.toml`), as the admin `ReloadModels` call does.
    pub watch_models: bool,
    /// Hold every package to the validation gate at start-up too, as on a
    /// deploy while serving: a restart is a deploy, and the same bytes are
    /// served or refused alike whenever they arrive.
    pub gate_at_startup: bool,
    /// Path of `libonnxruntime.so.1.31.1`.
    pub ort_lib: PathBuf,
    /// Inference threads (each runs one single-threaded ORT session per model).
    pub inference_threads: usize,
    /// Inference requests that may wait for a thread before new ones are shed.
    pub inference_queue: usize,
    /// The share of their time the deferred and shadow attribution threads
    /// may compute while live work keeps them off their cores; on cores
    /// live work leaves idle they compute without pause.
    pub background_share: Share,
    /// Most rows one `ScoreBatch` call may carry.
    pub max_batch_rows: usize,
    /// Largest encoded gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// `text` for people, `json` for log pipelines.
    pub log_format: LogFormat,
    /// The embedded SQLite database (consent ledger and decision record).
    pub database: PathBuf,
    /// Cap on the database file, in MiB: beyond it writes fail as on a full
    /// disk (RESOURCE_EXHAUSTED) and the rest of the disk stays free.
    pub database_max_mb: Option<u64>,
    pub consent: ConsentConfig,
    pub decisions: DecisionsConfig,
    pub access: AccessConfig,
    pub limits: LimitsConfig,
    pub fairness: FairnessConfig,
    /// TLS for the gRPC port; without it the gateway serves plaintext, which
    /// it allows on a loopback address only unless `allow_plaintext` is set.
    pub tls: Option<TlsConfig>,
    /// Serve plaintext gRPC on a non-loopback address (behind a TLS-
    /// terminating proxy, say).
    pub allow_plaintext: bool,
    /// Serve with no staff credential configured (every call open) on a
    /// non-loopback address: a trusted development network only.
    pub allow_open_access: bool,
    /// Where `/metrics` (Prometheus text) and `/healthz` are served over
    /// HTTP; no metrics endpoint when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds a stop keeps serving calls after health turns NOT_SERVING,
    /// so that load balancers that poll health move traffic away before
    /// connections are refused.
    pub shutdown_grace_secs: u64,
}

/// A fraction of time, in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Share(f64);

impl TryFrom<f64> for Share {
    type Error = String;

    fn try_from(share: f64) -> Result<Self, String> {
        if share > 0.0 && share <= 1.0 {
            Ok(Self(share))
        } else {
            Err(format!("{share} is not a share of time in (0, 1]"))
        }
    }
}

impl From<Share> for f64 {
    fn from(share: Share) -> f64 {
        share.0
    }
}

/// Bounds that keep an overloaded gateway answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// gRPC calls admitted at once, over all connections; beyond it calls
    /// are shed with RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// HTTP/2 streams one connection may hold open.
    pub max_concurrent_streams: u32,
    /// `grpc.health.v1.Health/Watch` streams open at once over all
    /// connections. Watch needs no credential and never ends on its own,
    /// so it has its own bound; health `Check` is never limited.
    pub max_health_watches: usize,
    /// Request bytes held at once, over all calls, while their messages
    /// arrive (at least `max_message_bytes`); beyond it a call is refused
    /// with RESOURCE_EXHAUSTED. Calls whose messages come slowly, or never
    /// whole, cannot fill the memory.
    pub max_receiving_mb: u64,
    /// Client connections open at once; a connection beyond it is closed
    /// as it is accepted. Keep it under the process's open-file limit
    /// (`ulimit -n`), so that the database and the metrics port always
    /// have descriptors.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            // Generous enough for bursts from many ad servers. Under
            // sustained overload admitted calls queue behind up to this
            // many: set it near capacity × the latency you promise (the
            // overload bench uses 64 on two cores).
            max_in_flight: 512,
            max_concurrent_streams: 128,
            max_health_watches: 1024,
            max_receiving_mb: 256,
            max_connections: 8192,
        }
    }
}

/// The online fairness monitor: selection rates per audit group over a
/// sliding window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FairnessConfig {
    /// The sliding window, in seconds (counted in buckets of a sixtieth of
    /// it, at least a second).
    pub window_secs: u64,
    /// Flag a model when a group's selection rate falls below this share
    /// of the most favoured group's (the four-fifths rule by default).
    pub min_disparate_impact: f64,
    /// Groups with fewer decisions in the window are reported but neither
    /// compared nor flagged: their rates are noise.
    pub min_group_decisions: u64,
    /// Audit attributes counted for every model, beside the columns each
    /// model's manifest audits (`[[fairness.groups]] column`).
    pub attributes: Vec<String>,
}

impl Default for FairnessConfig {
    fn default() -> Self {
        Self {
            window_secs: 3600,
            min_disparate_impact: 0.8,
            min_group_decisions: 30,
            attributes: Vec::new(),
        }
    }
}

/// PEM files for the gRPC port's TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Verify client certificates against this CA (mutual TLS); clients
    /// then authenticate by certificate (`access.clients`).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`, also accept clients without a certificate (they
    /// then need an API key or a token).
    #[serde(default)]
    pub client_auth_optional: bool,
}

/// Staff credentials. With no API key configured the gateway is open to
/// every caller, which suits a development machine only (it listens on
/// loopback by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    pub api_keys: Vec<ApiKey>,
    /// mTLS client certificates and the roles they carry.
    pub clients: Vec<ClientCert>,
    /// Days a staff read stays in the staff-read log: long enough to
    /// account for it, not for ever (GDPR Art. 5(1)(e)).
    pub staff_read_retention_days: u32,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            clients: Vec::new(),
            staff_read_retention_days: 365,
        }
    }
}

/// A client certificate (verified against `tls.client_ca`) that
/// authenticates a service, by the SHA-256 of its DER encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCert {
    pub name: String,
    pub role: Role,
    /// Lower-case hex SHA-256 of the certificate's DER bytes.
    pub cert_sha256: String,
}

/// An API key, stored as the SHA-256 of the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: String,
    pub role: Role,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
    /// When the key stops working (RFC 3339); never, when absent.
    #[serde(default)]
    pub expires: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ad systems.
    Scorer,
    /// Customer-support staff.
    Support,
    /// ML engineers.
    Engineer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Scorer => "scorer",
            Role::Support => "support",
            Role::Engineer => "engineer",
            Role::Admin => "admin",
        }
    }
}

/// The decision record and its explanation cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsConfig {
    /// `sync` (a response waits for its record's commit), `async` or `off`.
    pub durability: Durability,
    /// In `async` durability, how long the writer gathers records before
    /// it commits them together: the longer, the less each record costs,
    /// and the more a crash of the process can lose.
    pub async_commit_window_ms: u64,
    /// In `async` durability, how many decisions may be acknowledged and
    /// not yet committed (what a crash of the process can lose); beyond
    /// it, responses wait for their commit as in `sync`.
    pub async_max_uncommitted: usize,
    /// Days a decision is kept.
    pub retention_days: u32,
    /// Per-model retention in days, overriding `retention_days`.
    pub model_retention_days: BTreeMap<String, u32>,
    /// Seconds between purges of decisions past their retention.
    pub purge_interval_secs: u64,
    /// Hex AES-256 key (≥ 32 bytes) sealing stored inputs. Created with a
    /// random key on first start when missing.
    pub input_key_file: PathBuf,
    /// Upper bound of the explanation cache, in (estimated) bytes.
    pub cache_max_bytes: u64,
    /// Seconds an explanation stays cached.
    pub cache_ttl_secs: u64,
    /// The consumer view never shows a reason that describes fewer than
    /// this many people in the model's background sample's population.
    pub min_segment_size: u32,
}

impl Default for DecisionsConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            async_commit_window_ms: 10,
            async_max_uncommitted: 10_000,
            retention_days: 90,
            model_retention_days: BTreeMap::new(),
            purge_interval_secs: 3600,
            input_key_file: PathBuf::from("data/inputs.key"),
            cache_max_bytes: 64 * 1024 * 1024,
            cache_ttl_secs: 24 * 3600,
            min_segment_size: 50,
        }
    }
}

/// The consent policy's settings and the ledger's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentConfig {
    /// Our IAB Global Vendor List id. Vendor consent and publisher
    /// restrictions are read for it; without one only purpose signals count.
    pub tcf_vendor_id: Option<u16>,
    /// Where no known regime applies: `refuse` (the default) or `contextual`.
    pub unknown_jurisdiction: UnknownJurisdiction,
    /// Hex key (≥ 32 bytes) for pseudonymising subject ids with HMAC-SHA256.
    /// Created with a random key on first start when missing.
    pub subject_key_file: PathBuf,
    /// The controller named in consent records.
    pub controller: String,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        Self {
            tcf_vendor_id: None,
            unknown_jurisdiction: UnknownJurisdiction::Refuse,
            subject_key_file: PathBuf::from("data/subject.key"),
            controller: "Candor demo publisher <privacy@candor.example>".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Why the configuration was refused: one line per problem, each naming
/// the setting as a file spells it, what is wrong, and where the value came
/// from (the file, the environment variable or the flag). A value given is
/// never echoed: a mistyped setting may hold a key.
#[derive(Debug)]
pub struct ConfigError(Box<figment::Error>);

impl ConfigError {
    fn setting(message: String) -> Self {
        Self(Box::new(figment::Error::from(message)))
    }

    /// A refused value of `key`; [`ConfigError::sourced`] then names where
    /// it came from.
    fn at(key: &str, message: String) -> Self {
        Self(Box::new(figment::Error::from(message).with_path(key)))
    }

    /// Names the source of the refused setting's value (the file, the
    /// variable, the flag), as extraction errors do. The setting is the
    /// error's path, or the head of its message up to an index or a colon
    /// (`access.api_keys[0].sha256: ...` is `access.api_keys`).
    fn sourced(mut self, figment: &Figment) -> Self {
        let key = setting_of(&self.0).join(".");
        if self.0.metadata.is_none() && !key.is_empty() {
            self.0.metadata = figment.find_metadata(&key).cloned();
        }
        self
    }
}

/// The setting an error is about, by its parts: the error's path, or the
/// head of a refusal's message up to an index or a colon
/// (`access.api_keys[0].sha256: ...` is `access.api_keys`).
fn setting_of(e: &figment::Error) -> Vec<String> {
    match (&e.path[..], &e.kind) {
        ([], figment::error::Kind::Message(m)) => m
            .split([':', '['])
            .next()
            .filter(|head| !head.is_empty() && !head.contains(' '))
            .map(|head| head.split('.').map(str::to_owned).collect())
            .unwrap_or_default(),
        (path, _) => path.to_vec(),
    }
}

impl std::error::Error for ConfigError {}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use figment::{Source, error::Kind};
        let lines: Vec<String> = (*self.0)
            .clone()
            .into_iter()
            .map(|e| {
                let what = match &e.kind {
                    Kind::InvalidType(actual, expected) => {
                        format!("expected {expected}, found {}", kind_of(actual))
                    }
                    Kind::InvalidValue(actual, expected) => {
                        format!("expected {expected}, found another {}", kind_of(actual))
                    }
                    Kind::UnknownVariant(_, expected) => {
                        format!("expected {}", figment::error::OneOf(expected))
                    }
                    // Named by the path the message starts with.
                    Kind::UnknownField(_, expected) => format!(
                        "no such setting, expected {}",
                        figment::error::OneOf(expected)
                    ),
                    // A file that is not TOML: the parser quotes the line,
                    // which may hold a key; its position and verdict do not.
                    Kind::Message(m) => m
                        .lines()
                        .filter(|l| !l.trim_start().starts_with('|') && !is_quoted_line(l))
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                };
                let setting = setting_of(&e);
                let source = e
                    .metadata
                    .as_ref()
                    .map_or_else(String::new, |md| match &md.source {
                        Some(Source::File(path)) => format!(" (in {})", path.display()),
                        Some(Source::Code(_)) => {
                            format!(" (flag --{})", setting.join("-").replace('_', "-"))
                        }
                        _ if md.name.contains("environment") => format!(
                            " (environment variable CANDOR_{})",
                            setting.join("__").to_uppercase()
                        ),
                        _ => format!(" (in {})", md.name),
                    });
                if e.path.is_empty() {
                    format!("{what}{source}")
                } else {
                    format!("{}: {what}{source}", e.path.join(".").to_lowercase())
                }
            })
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A line of a file quoted in a parser's message: `12 | text`.
fn is_quoted_line(line: &str) -> bool {
    line.trim_start()
        .split_once(" |")
        .is_some_and(|(number, _)| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

/// What kind of value was given, without the value.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "integer",
        Actual::Float(_) => "number",
        Actual::Char(_) | Actual::Str(_) => "string",
        Actual::Bytes(_) => "byte string",
        Actual::Seq => "list",
        Actual::Map | Actual::StructVariant => "table",
        _ => "value",
    }
}

/// Whether `key` (a `CANDOR_` variable less its prefix) is one of the
/// variables Kubernetes gives every pod for each Service in its namespace
/// (`<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_50051_TCP_ADDR`, ...): a
/// Service named `candor`, or `candor-metrics`, makes `CANDOR_` ones, which
/// are not settings and must not stop the gateway from starting.
fn kubernetes_service_link(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    let parts: Vec<&str> = key.split('_').collect();
    let tail = |n: usize| parts.len().checked_sub(n).map(|at| &parts[at..]);
    let is_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let is_protocol = |p: &str| matches!(p, "TCP" | "UDP" | "SCTP");
    // <SERVICE>_SERVICE_HOST, <SERVICE>_SERVICE_PORT[_<PORT NAME>]
    // (A Service named `candor-service` makes CANDOR_SERVICE_SERVICE_HOST.)
    let service = (0..parts.len())
        .any(|at| parts[at] == "SERVICE" && matches!(&parts[at + 1..], ["HOST"] | ["PORT", ..]));
    // <SERVICE>_PORT, <SERVICE>_PORT_<N>_<PROTOCOL>[_PROTO|_PORT|_ADDR]
    let port = tail(1) == Some(&["PORT"][..])
        || tail(3).is_some_and(|t| t[0] == "PORT" && is_port(t[1]) && is_protocol(t[2]))
        || tail(4).is_some_and(|t| {
            t[0] == "PORT"
                && is_port(t[1])
                && is_protocol(t[2])
                && matches!(t[3], "PROTO" | "PORT" | "ADDR")
        });
    service || port
}

impl Config {
    /// Credentials that could never match, or match twice, and settings
    /// that admit nobody, would start a gateway that fails every call of
    /// theirs, or serves them with the wrong role, without a word.
    fn check_access(&self) -> Result<(), ConfigError> {
        let refuse = |message: String| Err(ConfigError::setting(message));
        let is_digest =
            |h: &str| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let mut seen = std::collections::HashMap::new();
        let digests = (self.access.api_keys.iter().enumerate())
            .map(|(i, k)| (format!("access.api_keys[{i}].sha256"), &k.sha256))
            .chain(
                (self.access.clients.iter().enumerate())
                    .map(|(i, c)| (format!("access.clients[{i}].cert_sha256"), &c.cert_sha256)),
            );
        // A staff read is recorded under its credential's name: one without
        // a name would be nobody's.
        let names = (self.access.api_keys.iter().enumerate())
            .map(|(i, k)| (format!("access.api_keys[{i}].name"), &k.name))
            .chain(
                (self.access.clients.iter().enumerate())
                    .map(|(i, c)| (format!("access.clients[{i}].name"), &c.name)),
            );
        for (field, name) in names {
            if name.trim().is_empty() || name.chars().any(crate::printable::unprintable) {
                return refuse(format!(
                    "{field}: names who holds the credential, as staff reads are recorded: printable and not empty"
                ));
            }
        }
        for (field, digest) in digests {
            if !is_digest(digest) {
                return refuse(format!(
                    "{field}: not a SHA-256 in lower-case hex (64 characters); give the digest of the credential, never the credential itself"
                ));
            }
            if let Some(first) = seen.insert(digest, field.clone()) {
                return refuse(format!(
                    "{field}: the same credential as {first}; one credential has one name and role"
                ));
            }
        }
        let client_ca = self.tls.as_ref().and_then(|t| t.client_ca.as_ref());
        if !self.access.clients.is_empty() && client_ca.is_none() {
            return refuse(
                "access.clients: client certificates are verified against tls.client_ca, which is not configured; no client could present one".into(),
            );
        }
        if self.tls.as_ref().is_some_and(|t| t.client_auth_optional) && client_ca.is_none() {
            return refuse(
                "tls.client_auth_optional: applies to client certificates, which need tls.client_ca".into(),
            );
        }
        // The file each names, through links and `..`, whether it exists
        // yet or not: the first would create it for both.
        let resolved = |p: &std::path::Path| {
            std::fs::canonicalize(p)
                .or_else(|e| {
                    let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
                    match (dir, p.file_name()) {
                        (dir, Some(name)) => Ok(std::fs::canonicalize(
                            dir.unwrap_or(std::path::Path::new(".")),
                        )?
                        .join(name)),
                        _ => Err(e),
                    }
                })
                .or_else(|_| std::path::absolute(p))
                .unwrap_or_else(|_| p.to_owned())
        };
        if resolved(&self.consent.subject_key_file) == resolved(&self.decisions.input_key_file) {
            return refuse(format!(
                "decisions.input_key_file: {} is also consent.subject_key_file; each key has one use",
                self.decisions.input_key_file.display()
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            models_dir: PathBuf::from("models"),
            watch_models: true,
            gate_at_startup: true,
            ort_lib: PathBuf::from(".ort/libonnxruntime.so.1.31.1"),
            inference_threads: std::thread::available_parallelism().map_or(2, usize::from),
            inference_queue: 4096,
            background_share: Share(0.02),
            max_batch_rows: 1024,
            max_message_bytes: 4 * 1024 * 1024,
            log_format: LogFormat::Text,
            database: PathBuf::from("data/candor.db"),
            database_max_mb: None,
            consent: ConsentConfig::default(),
            decisions: DecisionsConfig::default(),
            limits: LimitsConfig::default(),
            fairness: FairnessConfig::default(),
            tls: None,
            allow_plaintext: false,
            allow_open_access: false,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            shutdown_grace_secs: 0,
            access: AccessConfig::default(),
        }
    }
}

impl Config {
    /// Merges defaults, the optional file, the environment and `overrides`
    /// (flags), later sources winning.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: impl Serialize,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let figment = figment
            .merge(
                // The client commands' variables, not settings: a shell
                // that exported them must still start the gateway.
                Env::prefixed("CANDOR_")
                    .ignore(&["CONFIG", "ADDR", "TOKEN", "REASON", "TIMEOUT_SECS"])
                    .filter(|key| !kubernetes_service_link(key.as_str()))
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides));
        let mut config = figment
            .extract::<Self>()
            .map_err(|e| ConfigError(Box::new(e)))?;
        config
            .resolve_against_file(&figment)
            .map_err(|e| e.sourced(&figment))?;
        config.check().map_err(|e| e.sourced(&figment))?;
        Ok(config)
    }

    /// A relative path written in the configuration file names a file
    /// beside it, wherever the gateway is started from; one given by a
    /// flag or a variable, or left at its default, names one in the
    /// working directory, as a shell's would.
    /// An empty path is refused: relative to the file it would name the
    /// file's folder, and elsewhere the working directory.
    fn resolve_against_file(&mut self, figment: &Figment) -> Result<(), ConfigError> {
        let mut paths = vec![
            ("models_dir", &mut self.models_dir),
            ("ort_lib", &mut self.ort_lib),
            ("database", &mut self.database),
            (
                "consent.subject_key_file",
                &mut self.consent.subject_key_file,
            ),
            (
                "decisions.input_key_file",
                &mut self.decisions.input_key_file,
            ),
        ];
        if let Some(tls) = self.tls.as_mut() {
            paths.extend([("tls.cert", &mut tls.cert), ("tls.key", &mut tls.key)]);
            paths.extend(tls.client_ca.as_mut().map(|ca| ("tls.client_ca", ca)));
        }
        for (key, path) in paths {
            if path.to_string_lossy().trim().is_empty() {
                return Err(ConfigError::at(key, "is empty; give a path".into()));
            }
            let from = figment.find_metadata(key).and_then(|m| m.source.as_ref());
            if let (Some(figment::Source::File(file)), true) = (from, path.is_relative())
                && let Some(folder) = file.parent()
            {
                *path = folder.join(&*path);
            }
        }
        Ok(())
    }

    /// Refuses settings that would start a gateway unable to serve, or one
    /// that fails later where nobody sees it (a purge that never runs).
    pub fn check(&self) -> Result<(), ConfigError> {
        const DAY: u64 = 24 * 3600;
        let d = &self.decisions;
        let mut checks: Vec<(&str, u64, u64, u64, &str)> = vec![
            (
                "inference_threads",
                self.inference_threads as u64,
                1,
                1024,
                "",
            ),
            (
                "inference_queue",
                self.inference_queue as u64,
                1,
                1 << 20,
                "",
            ),
            ("max_batch_rows", self.max_batch_rows as u64, 1, 1 << 20, ""),
            // An access request must always be answerable, one item per
            // page at worst, and a ledger record can hold two 16 KiB
            // consent strings.
            (
                "max_message_bytes",
                self.max_message_bytes as u64,
                64 * 1024,
                1 << 30,
                " bytes",
            ),
            (
                "database_max_mb",
                self.database_max_mb.unwrap_or(1),
                1,
                1 << 30,
                " MiB",
            ),
            (
                "limits.max_in_flight",
                self.limits.max_in_flight as u64,
                1,
                1 << 20,
                "",
            ),
            (
                "limits.max_health_watches",
                self.limits.max_health_watches as u64,
                1,
                1 << 20,
                "",
            ),
            (
                "limits.max_concurrent_streams",
                self.limits.max_concurrent_streams.into(),
                1,
                1 << 20,
                "",
            ),
            // A message of max_message_bytes must be receivable.
            (
                "limits.max_receiving_mb",
                self.limits.max_receiving_mb,
                (self.max_message_bytes as u64).div_ceil(1 << 20),
                1 << 20,
                " MiB",
            ),
            (
                "shutdown_grace_secs",
                self.shutdown_grace_secs,
                0,
                600,
                " s",
            ),
            (
                "limits.max_connections",
                self.limits.max_connections as u64,
                1,
                1 << 20,
                "",
            ),
            (
                "decisions.async_commit_window_ms",
                d.async_commit_window_ms,
                0,
                100,
                " ms",
            ),
            (
                "decisions.async_max_uncommitted",
                d.async_max_uncommitted as u64,
                1,
                10_000_000,
                " decisions",
            ),
            // Zero days would record decisions nobody can ever read back:
            // `durability = "off"` is how to keep none.
            (
                "decisions.retention_days",
                d.retention_days.into(),
                1,
                100 * 365,
                " days",
            ),
            (
                "access.staff_read_retention_days",
                self.access.staff_read_retention_days.into(),
                1,
                100 * 365,
                " days",
            ),
            (
                "decisions.purge_interval_secs",
                d.purge_interval_secs,
                1,
                7 * DAY,
                " s",
            ),
            (
                "decisions.cache_ttl_secs",
                d.cache_ttl_secs,
                1,
                365 * DAY,
                " s",
            ),
            // An explanation cache that holds nothing sends every look-up
            // to the record.
            (
                "decisions.cache_max_bytes",
                d.cache_max_bytes,
                1 << 20,
                1 << 40,
                " bytes",
            ),
            // A segment of one person singles that person out: the rule
            // the consumer view keeps needs at least two.
            (
                "decisions.min_segment_size",
                d.min_segment_size.into(),
                2,
                u32::MAX.into(),
                "",
            ),
            // A group of no decisions would be compared: the ratio of
            // empty selection rates means nothing.
            (
                "fairness.min_group_decisions",
                self.fairness.min_group_decisions,
                1,
                1 << 40,
                "",
            ),
            (
                "fairness.window_secs",
                self.fairness.window_secs,
                60,
                31 * DAY,
                " s",
            ),
        ];
        let per_model: Vec<(String, u64)> = d
            .model_retention_days
            .iter()
            .map(|(model, days)| {
                (
                    format!("decisions.model_retention_days.{model}"),
                    (*days).into(),
                )
            })
            .collect();
        checks.extend(
            per_model
                .iter()
                .map(|(key, days)| (key.as_str(), *days, 1, 100 * 365, " days")),
        );
        // The Global Vendor List numbers vendors from 1.
        if let Some(id) = self.consent.tcf_vendor_id {
            checks.push(("consent.tcf_vendor_id", id.into(), 1, u16::MAX.into(), ""));
        }
        for (key, value, least, most, unit) in checks {
            if !(least..=most).contains(&value) {
                return Err(ConfigError::at(
                    key,
                    format!("{value}{unit} is out of range; it must be {least} to {most}{unit}"),
                ));
            }
        }
        self.check_access()?;
        // Every consent record names who is accountable for it.
        if self.consent.controller.trim().is_empty()
            || self
                .consent
                .controller
                .chars()
                .any(crate::printable::unprintable)
        {
            return Err(ConfigError::at(
                "consent.controller",
                "names the controller every consent record is made for: printable and not empty"
                    .into(),
            ));
        }
        for name in &self.fairness.attributes {
            crate::monitor::check_name(name)
                .map_err(|e| ConfigError::at("fairness.attributes", format!("{name:?}: {e}")))?;
        }
        let ratio = self.fairness.min_disparate_impact;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::at(
                "fairness.min_disparate_impact",
                format!("{ratio} is not a selection-rate ratio in [0, 1]"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        max_batch_rows: Option<usize>,
    }

    /// A Service named `candor` (or `candor-metrics`) gives every pod
    /// `CANDOR_` variables that are not settings; the gateway starts, and a
    /// mistyped setting is still refused.
    #[test]
    fn kubernetes_service_links_are_not_settings() {
        figment::Jail::expect_with(|jail| {
            for (name, value) in [
                ("CANDOR_SERVICE_HOST", "10.0.0.12"),
                ("CANDOR_SERVICE_PORT", "50051"),
                ("CANDOR_SERVICE_PORT_GRPC", "50051"),
                ("CANDOR_PORT", "tcp://10.0.0.12:50051"),
                ("CANDOR_PORT_50051_TCP", "tcp://10.0.0.12:50051"),
                ("CANDOR_PORT_50051_TCP_PROTO", "tcp"),
                ("CANDOR_PORT_50051_TCP_PORT", "50051"),
                ("CANDOR_PORT_50051_TCP_ADDR", "10.0.0.12"),
                ("CANDOR_METRICS_SERVICE_HOST", "10.0.0.13"),
                ("CANDOR_SERVICE_SERVICE_HOST", "10.0.0.14"),
                ("CANDOR_SERVICE_PORT_50051_TCP_ADDR", "10.0.0.14"),
                ("CANDOR_METRICS_PORT_9464_TCP_ADDR", "10.0.0.13"),
            ] {
                jail.set_env(name, value);
            }
            jail.set_env("CANDOR_INFERENCE_QUEUE", "8");
            let c = Config::load(None, Flags::default()).unwrap();
            assert_eq!(c.inference_queue, 8);
            jail.set_env("CANDOR_PORTS", "1");
            let e = Config::load(None, Flags::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("CANDOR_PORTS"), "{e}");
            assert!(
                e.starts_with("ports: no such setting, expected one of `listen`, "),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn later_sources_win() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "candor.toml",
                "max_batch_rows = 10\ninference_queue = 7\nlisten = \"0.0.0.0:1\"",
            )?;
            jail.set_env("CANDOR_INFERENCE_QUEUE", "8");
            // The client commands' variables are not settings.
            for client in [
                "CANDOR_ADDR",
                "CANDOR_TOKEN",
                "CANDOR_REASON",
                "CANDOR_TIMEOUT_SECS",
            ] {
                jail.set_env(client, "x");
            }
            let c = Config::load(
                Some("candor.toml".as_ref()),
                Flags {
                    max_batch_rows: Some(11),
                },
            )
            .unwrap();
            assert_eq!((c.max_batch_rows, c.inference_queue), (11, 8));
            assert_eq!(c.listen, "0.0.0.0:1".parse().unwrap());
            assert_eq!(c.models_dir, PathBuf::from("models"));
            Ok(())
        });
    }

    #[test]
    fn relative_paths_in_the_file_are_taken_from_its_folder() {
        figment::Jail::expect_with(|jail| {
            jail.create_dir("etc")?;
            jail.create_file(
                "etc/candor.toml",
                "database = \"db/candor.db\"\n\
                 [decisions]\ninput_key_file = \"/keys/inputs.key\"\n\
                 [tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\nclient_ca = \"ca.pem\"",
            )?;
            jail.set_env("CANDOR_MODELS_DIR", "packages");
            let c = Config::load(Some("etc/candor.toml".as_ref()), Flags::default()).unwrap();
            assert_eq!(c.database, PathBuf::from("etc/db/candor.db"));
            let tls = c.tls.unwrap();
            assert_eq!(
                [tls.cert, tls.key, tls.client_ca.unwrap()],
                ["etc/tls/cert.pem", "etc/tls/key.pem", "etc/ca.pem"].map(PathBuf::from)
            );
            // Absolute, from a variable, or a default: as given.
            assert_eq!(
                c.decisions.input_key_file,
                PathBuf::from("/keys/inputs.key")
            );
            assert_eq!(c.models_dir, PathBuf::from("packages"));
            assert_eq!(
                c.consent.subject_key_file,
                PathBuf::from("data/subject.key")
            );
            Ok(())
        });
    }

    #[test]
    fn a_share_outside_zero_to_one_is_refused_by_name() {
        figment::Jail::expect_with(|jail| {
            for bad in ["0", "1.5", "-0.1", "nan"] {
                jail.create_file("candor.toml", &format!("background_share = {bad}"))?;
                let err = Config::load(Some("candor.toml".as_ref()), Flags::default()).unwrap_err();
                let msg = err.to_string();
                assert!(msg.contains("background_share"), "{msg}");
                assert!(msg.contains("(0, 1]"), "{msg}");
            }
            jail.create_file("candor.toml", "background_share = 1")?;
            let c = Config::load(Some("candor.toml".as_ref()), Flags::default()).unwrap();
            assert_eq!(f64::from(c.background_share), 1.0);
            Ok(())
        });
    }

    /// Each of these used to start a gateway that refused every call,
    /// hung, or panicked later (a zero purge interval killed the purge).
    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        figment::Jail::expect_with(|jail| {
            for (setting, key) in [
                (
                    "decisions.purge_interval_secs = 0",
                    "decisions.purge_interval_secs",
                ),
                (
                    "decisions.cache_ttl_secs = 9223372036854775807",
                    "decisions.cache_ttl_secs",
                ),
                ("decisions.retention_days = 0", "decisions.retention_days"),
                (
                    "access.staff_read_retention_days = 0",
                    "access.staff_read_retention_days",
                ),
                (
                    "decisions.model_retention_days.m = 0",
                    "decisions.model_retention_days.m",
                ),
                (
                    "decisions.async_commit_window_ms = 101",
                    "decisions.async_commit_window_ms",
                ),
                (
                    "decisions.async_max_uncommitted = 0",
                    "decisions.async_max_uncommitted",
                ),
                ("limits.max_in_flight = 0", "limits.max_in_flight"),
                ("limits.max_health_watches = 0", "limits.max_health_watches"),
                ("limits.max_receiving_mb = 3", "limits.max_receiving_mb"),
                ("limits.max_connections = 0", "limits.max_connections"),
                ("models_dir = \"\"", "models_dir"),
                ("database = \"\"", "database"),
                (
                    "decisions.input_key_file = \"  \"",
                    "decisions.input_key_file",
                ),
                ("consent.controller = \" \"", "consent.controller"),
                (
                    "limits.max_concurrent_streams = 0",
                    "limits.max_concurrent_streams",
                ),
                ("max_message_bytes = 65535", "max_message_bytes"),
                ("inference_threads = 0", "inference_threads"),
                ("inference_queue = 0", "inference_queue"),
                ("max_batch_rows = 0", "max_batch_rows"),
                ("database_max_mb = 0", "database_max_mb"),
                ("fairness.window_secs = 0", "fairness.window_secs"),
                ("decisions.cache_max_bytes = 0", "decisions.cache_max_bytes"),
                (
                    r#"access.api_keys = [{ name = "a", role = "admin", sha256 = "key-itself" }]"#,
                    "access.api_keys[0].sha256",
                ),
                (
                    &format!(
                        r#"access.api_keys = [{{ name = " ", role = "admin", sha256 = "{}" }}]"#,
                        "ab".repeat(32)
                    ),
                    "access.api_keys[0].name",
                ),
                (
                    &format!(
                        r#"access.api_keys = [{{ name = "a", role = "admin", sha256 = "{d}" }}, {{ name = "b", role = "scorer", sha256 = "{d}" }}]"#,
                        d = "ab".repeat(32)
                    ),
                    "access.api_keys[1].sha256",
                ),
                (
                    &format!(
                        r#"access.clients = [{{ name = "dsp", role = "scorer", cert_sha256 = "{}" }}]"#,
                        "ab".repeat(32)
                    ),
                    "access.clients",
                ),
                (
                    r#"consent.subject_key_file = "k"
decisions.input_key_file = "k""#,
                    "decisions.input_key_file",
                ),
                (
                    "decisions.min_segment_size = 1",
                    "decisions.min_segment_size",
                ),
                ("consent.tcf_vendor_id = 0", "consent.tcf_vendor_id"),
                (
                    "fairness.min_group_decisions = 0",
                    "fairness.min_group_decisions",
                ),
                (
                    "fairness.min_disparate_impact = 1.5",
                    "fairness.min_disparate_impact",
                ),
                (
                    "fairness.min_disparate_impact = nan",
                    "fairness.min_disparate_impact",
                ),
            ] {
                // TOML takes dotted keys at the top level.
                jail.create_file("candor.toml", setting)?;
                let err = Config::load(Some("candor.toml".as_ref()), Flags::default()).unwrap_err();
                assert!(
                    err.to_string().starts_with(&format!("{key}: ")),
                    "{setting}: {err}"
                );
                // And where the value came from.
                assert!(
                    err.to_string().ends_with("candor.toml)"),
                    "{setting}: {err}"
                );
            }
            jail.create_file("candor.toml", "")?;
            Config::load(Some("candor.toml".as_ref()), Flags::default()).unwrap();
            jail.set_env("CANDOR_MAX_MESSAGE_BYTES", "1");
            let err = Config::load(Some("candor.toml".as_ref()), Flags::default()).unwrap_err();
            assert_eq!(
                err.to_string(),
                "max_message_bytes: 1 bytes is out of range; it must be 65536 to 1073741824 bytes (environment variable CANDOR_MAX_MESSAGE_BYTES)"
            );
            Ok(())
        });
    }

    /// Each refusal names the setting and where its value came from, and
    /// never echoes the value: a key pasted into the wrong setting stays
    /// out of the terminal and the logs.
    /// The two keys are different files, however the paths spell them; a
    /// refusal names the variable that set the one refused.
    #[test]
    fn each_key_file_has_one_use_through_links_and_dot_dot() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("subject.key", &"ab".repeat(32))?;
            std::os::unix::fs::symlink("subject.key", jail.directory().join("link.key"))
                .map_err(|e| e.to_string())?;
            std::fs::create_dir(jail.directory().join("d")).map_err(|e| e.to_string())?;
            jail.set_env("CANDOR_CONSENT__SUBJECT_KEY_FILE", "subject.key");
            for other in ["link.key", "d/../subject.key", "d/../fresh.key"] {
                let subject = if other.ends_with("fresh.key") {
                    "fresh.key"
                } else {
                    "subject.key"
                };
                jail.set_env("CANDOR_CONSENT__SUBJECT_KEY_FILE", subject);
                jail.set_env("CANDOR_DECISIONS__INPUT_KEY_FILE", other);
                let err = Config::load(None, Flags::default())
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("each key has one use"), "{other}: {err}");
                assert!(
                    err.ends_with("(environment variable CANDOR_DECISIONS__INPUT_KEY_FILE)"),
                    "{other}: {err}"
                );
            }
            Ok(())
        });
    }

    #[test]
    fn refusals_name_the_setting_and_its_source_but_not_the_value() {
        #[derive(Serialize)]
        struct BadFlag {
            log_format: &'static str,
        }
        figment::Jail::expect_with(|jail| {
            jail.set_env("CANDOR_ACCESS__API_KEYS", "key-admin-RAWSECRET");
            let err = Config::load(None, Flags::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("access.api_keys: expected a sequence, found string"),
                "{err}"
            );
            assert!(
                err.contains("environment variable CANDOR_ACCESS__API_KEYS"),
                "{err}"
            );
            assert!(!err.contains("RAWSECRET"), "{err}");
            jail.clear_env();

            jail.create_file("candor.toml", "max_batch_rows = \"x-SECRET\"")?;
            let err = Config::load(Some("candor.toml".as_ref()), Flags::default())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("max_batch_rows: expected usize"), "{err}");
            assert!(
                err.contains("candor.toml") && !err.contains("SECRET"),
                "{err}"
            );

            let err = Config::load(None, BadFlag { log_format: "xml" })
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("log_format: "), "{err}");
            assert!(err.ends_with("(flag --log-format)"), "{err}");
            assert!(!err.contains("xml"), "{err}");

            // Not TOML at all: the position, not the line.
            jail.create_file("candor.toml", "max_batch_rows = sk-live-SECRET")?;
            let err = Config::load(Some("candor.toml".as_ref()), Flags::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("line 1"), "{err}");
            assert!(!err.contains("SECRET"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("candor.toml", "max_batch_rowz = 10")?;
            let err = Config::load(Some("candor.toml".as_ref()), Flags::default()).unwrap_err();
            assert!(err.to_string().contains("max_batch_rowz"), "{err}");
            Ok(())
        });
    }
}
