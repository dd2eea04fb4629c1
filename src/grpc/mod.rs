//! The gRPC edge: the only module that knows protobuf types.
//!
//! Handlers are thin: they convert messages into domain requests with
//! `TryFrom` (see [`convert`]), call the [`Gateway`], and convert the result
//! back. Every domain error becomes a status in one place ([`status`]).

mod admin;
mod admission;
mod auth;
pub mod client;
mod codec;
mod consent;
mod convert;
pub(crate) use convert::MAX_ID_BYTES;
mod deadline;
mod explain;
mod health;
mod io;
mod models;
mod oip;
mod page;
mod reflection;
mod scoring;
mod status;
mod why;

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::{
    codec::CompressionEncoding,
    transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::ServingStatus;

use crate::gateway::{Gateway, Readiness};

pub use io::connect;
pub use oip::Infer;

/// Generated protobuf and gRPC code for `candor.v1`.
pub mod pb {
    tonic::include_proto!("candor.v1");

    /// Encoded descriptors of every served file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/candor_descriptor.bin"));

    /// One named feature of a request: an entry of its `features` map, as
    /// it travels on the wire (see `build.rs`).
    pub use score_request::FeaturesEntry as Feature;

    /// A request's `features` from (name, value) pairs.
    pub fn features<K: Into<String>>(
        entries: impl IntoIterator<Item = (K, FeatureValue)>,
    ) -> Vec<Feature> {
        entries
            .into_iter()
            .map(|(key, value)| Feature {
                key: key.into(),
                value: Some(value),
            })
            .collect()
    }
}

/// Generated code for the Open Inference Protocol v2 (`inference`).
pub mod inference {
    tonic::include_proto!("inference");
}

use inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use pb::{
    admin_service_server::AdminServiceServer, consent_service_server::ConsentServiceServer,
    explain_service_server::ExplainServiceServer,
    explanation_service_server::ExplanationServiceServer, model_service_server::ModelServiceServer,
    scoring_service_server::ScoringServiceServer,
};

/// Why the gRPC server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("tls.{field}: {path}: {message}")]
    TlsFile {
        field: &'static str,
        path: std::path::PathBuf,
        message: String,
    },
    #[error(
        "listen: {0} is not a loopback address and no [tls] is configured; configure TLS, or set allow_plaintext = true behind a TLS-terminating proxy"
    )]
    Plaintext(std::net::SocketAddr),
    #[error(
        "listen: {0} is not a loopback address and access has no api_keys or clients, so every call would be open to anyone who can reach it; configure access.api_keys or access.clients, or set allow_open_access = true on a trusted development network"
    )]
    OpenAccess(std::net::SocketAddr),
    #[error("tls: {0}")]
    Tls(tonic::transport::Error),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// The TLS settings for the gRPC port, from PEM files.
/// Refuses to serve off loopback in clear, or open to anyone, unless the
/// configuration says so. `candor serve` asks before it binds or opens
/// anything; [`serve`] again on the address it was given.
pub fn check_exposure(
    config: &crate::config::Config,
    addr: std::net::SocketAddr,
) -> Result<(), ServeError> {
    let exposed = !addr.ip().is_loopback();
    if exposed && config.tls.is_none() && !config.allow_plaintext {
        return Err(ServeError::Plaintext(addr));
    }
    let open = config.access.api_keys.is_empty() && config.access.clients.is_empty();
    if exposed && open && !config.allow_open_access {
        return Err(ServeError::OpenAccess(addr));
    }
    Ok(())
}

fn tls(config: &crate::config::Config) -> Result<Option<ServerTlsConfig>, ServeError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let error = |field, path: &std::path::Path, message: String| ServeError::TlsFile {
        field,
        path: path.to_owned(),
        message,
    };
    let read = |field, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| error(field, path, format!("cannot read: {e}")))
    };
    // tonic reports a bad file only as "transport error": each file is
    // checked here first, so the message names it and what is wrong.
    let certificates = |field, path: &std::path::Path, pem: &[u8]| {
        let chain = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(field, path, format!("is not PEM certificates: {e}")))?;
        if chain.is_empty() {
            return Err(error(field, path, "holds no PEM certificate".into()));
        }
        Ok(chain)
    };
    let (cert, key) = (read("cert", &tls.cert)?, read("key", &tls.key)?);
    let chain = certificates("cert", &tls.cert, &cert)?;
    let private = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        error(
            "key",
            &tls.key,
            format!("is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| {
            error(
                "key",
                &tls.key,
                format!("does not go with tls.cert {}: {e}", tls.cert.display()),
            )
        })?;
    let mut server = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(io::OPENING_TIMEOUT);
    if let Some(ca) = &tls.client_ca {
        let pem = read("client_ca", ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for root in certificates("client_ca", ca, &pem)? {
            roots.add(root).map_err(|e| {
                error(
                    "client_ca",
                    ca,
                    format!("holds an unusable certificate: {e}"),
                )
            })?;
        }
        server = server
            .client_ca_root(Certificate::from_pem(pem))
            .client_auth_optional(tls.client_auth_optional);
    }
    Ok(Some(server))
}

/// Serves the gateway's gRPC API on `listener` until `shutdown` resolves,
/// then reports NOT_SERVING for `shutdown_grace_secs` while still serving,
/// then drains in-flight calls. Health reports NOT_SERVING until the
/// gateway's models are loaded. Every call passes the admission layer
/// first.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let tls = tls(gateway.config())?;
    check_exposure(gateway.config(), addr)?;
    let health = tonic_health::server::HealthReporter::new();
    // Health answers without credentials: a compressed request may not
    // inflate past what admission lets such a call send.
    let health_service = health::HealthServer::new(health::Health::new(health.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(admission::PUBLIC_MESSAGE_BYTES);
    // Subscribed before the first reading, so that no change after it is
    // missed; a wake with nothing new sets nothing.
    let mut changes = (gateway.readiness(), gateway.commits_succeed());
    let mut ready = gateway.readiness();
    let mut recording = gateway.commits_succeed();
    let mut now = move || (*ready.borrow_and_update(), *recording.borrow_and_update());
    // Set the first status before accepting calls, so no client can see the
    // reporter's own initial SERVING while the models are still loading.
    let mut before = now();
    set_health(&health, before, None).await;
    // Told once health says NOT_SERVING for the stop.
    let (down, health_down) = tokio::sync::oneshot::channel();
    let health_task = tokio::spawn(async move {
        loop {
            // Each receiver only wakes the loop; `now` reads both.
            let changed = tokio::select! {
                r = changes.0.changed() => r,
                r = changes.1.changed() => r,
            };
            if changed.is_err() {
                break;
            }
            let after = now();
            set_health(&health, after, Some(before)).await;
            if after.0 == Readiness::Draining {
                let _ = down.send(());
                break;
            }
            before = after;
        }
    });
    // v1alpha too: grpcurl and many language runtimes' reflection clients
    // still ask it first, or only it.
    // Each lists both versions of itself: a client that asks one learns
    // that the other is there too.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1alpha = reflection::v1alpha::Reflection::new(
        reflection()
            .build_v1alpha()
            .expect("the embedded descriptor sets are valid"),
    )
    .accept_compressed(CompressionEncoding::Gzip);
    let reflection = reflection::v1::Reflection::new(
        reflection()
            .build_v1()
            .expect("the embedded descriptor sets are valid"),
    )
    .accept_compressed(CompressionEncoding::Gzip);

    let max = gateway.config().max_message_bytes;
    // Every service (health and reflection too, above) takes
    // gzip-compressed requests: a client set to compress every call would
    // otherwise get only UNIMPLEMENTED. The candor services take messages up
    // to `max_message_bytes` each way. Answers are compressed for clients
    // that accept gzip where they are large (models, explanations, consent
    // histories, rollouts); scoring answers are small and wanted fast.
    macro_rules! service {
        ($server:ident, $handler:expr) => {
            $server::new($handler)
                .max_decoding_message_size(admission::with_deflate(max))
                .max_encoding_message_size(max)
                .accept_compressed(CompressionEncoding::Gzip)
        };
        ($server:ident, $handler:expr, compressed) => {
            service!($server, $handler).send_compressed(CompressionEncoding::Gzip)
        };
    }
    let scoring = service!(ScoringServiceServer, scoring::Scoring::new(gateway.clone()));
    let oip = service!(GrpcInferenceServiceServer, oip::Oip::new(gateway.clone()));
    let models = service!(
        ModelServiceServer,
        models::Models::new(gateway.clone()),
        compressed
    );
    let explain = service!(
        ExplainServiceServer,
        explain::Explain::new(gateway.clone()),
        compressed
    );
    let consent = service!(
        ConsentServiceServer,
        consent::Consent::new(gateway.clone()),
        compressed
    );
    let why = service!(
        ExplanationServiceServer,
        why::Why::new(gateway.clone()),
        compressed
    );
    let admin = service!(
        AdminServiceServer,
        admin::Admin::new(gateway.clone()),
        compressed
    );

    // A stop first turns health NOT_SERVING, on every service and Watch,
    // and keeps serving for `shutdown_grace_secs`, so that load balancers
    // send new calls elsewhere before connections are refused. Then health
    // Watch streams end (see `admission`) and tonic drains.
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let mut draining = closing_rx.clone();
    let grace = std::time::Duration::from_secs(gateway.config().shutdown_grace_secs);
    let stopping = gateway.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.drain();
        let _ = health_down.await;
        if !grace.is_zero() {
            tracing::info!(
                ?grace,
                "stopping: health is NOT_SERVING; calls are served until the grace ends (a second signal ends it now)"
            );
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                () = stopping.grace_ended() => {}
            }
        }
        let _ = closing.send(true);
    };
    let max_connections = gateway.config().limits.max_connections;
    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let (full, failing) = (OncePerMinute::default(), OncePerMinute::default());
    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).map_err(ServeError::Tls)?;
    }
    let serving = server
        .max_concurrent_streams(gateway.config().limits.max_concurrent_streams)
        // A peer that has gone without closing (or never answers) is
        // found by the PING it does not acknowledge, and its connection
        // closed; live clients acknowledge without being asked to.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // A client resets the streams of calls past their deadline, many
        // at once under load. h2 ends the whole connection, every other
        // call on it too, once 20 streams reset before the server took
        // them (its guard against rapid-reset floods); as many as a
        // connection may open is no flood.
        .http2_max_pending_accept_reset_streams(Some(
            gateway.config().limits.max_concurrent_streams as usize,
        ))
        // The admission layer owns deadlines. tonic also arms a timer from
        // `grpc-timeout`, outside every layer and not removable, that
        // answers CANCELLED without our headers; ours is set a moment
        // earlier from the same header and answers first. No
        // `Server::timeout`: its expiry would be tonic's again.
        .layer(admission::Admission::new(gateway.clone(), closing_rx))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(scoring)
        .add_service(models)
        .add_service(explain)
        .add_service(consent)
        .add_service(why)
        .add_service(admin)
        .add_service(oip)
        .serve_with_incoming_shutdown(
            // Small replies must not wait for Nagle's algorithm and the
            // peer's delayed ACK: that stalls a call for ~40 ms.
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .filter_map(move |accepted| match accepted {
                    Ok(stream) => match connections.clone().try_acquire_owned() {
                        Ok(place) => Some(Ok(io::Coalescing::accepted(
                            stream,
                            io::OPENING_TIMEOUT,
                            place,
                        ))),
                        // Dropped, so closed: past the limit a connection
                        // would take descriptors the open ones need.
                        Err(_) => {
                            if full.due() {
                                tracing::warn!(
                                    limit = max_connections,
                                    "connections are being closed as they are accepted: limits.max_connections are open"
                                );
                            }
                            None
                        }
                    },
                    Err(e) => {
                        // Out of descriptors, say, while clients wait: said
                        // where operators look, not at debug.
                        if failing.due() {
                            tracing::warn!(error = %e, "cannot accept connections (out of open files? see limits.max_connections and ulimit -n)");
                        }
                        Some(Err(e))
                    }
                }),
            shutdown,
        );
    // Draining waits for every open call; one that does not end (a client
    // that stops reading its answer) must not hold the process, and its
    // database lock, for ever.
    let result = tokio::select! {
        result = serving => result,
        () = async move {
            let _ = draining.wait_for(|&c| c).await;
            tokio::time::sleep(DRAIN_LIMIT).await;
        } => {
            tracing::warn!(limit = ?DRAIN_LIMIT, "calls still open when draining ran out of time; their connections are closed");
            Ok(())
        }
    };
    health_task.abort();
    Ok(result?)
}

/// Refuses an answer larger than the gateway sends (attributions make a
/// row's answer some kilobytes), saying how many of its `rows` rows (sent
/// in `field`) would fit: tonic would otherwise fail it as OUT_OF_RANGE,
/// naming nothing.
fn fits(
    answer: &impl prost::Message,
    rows: usize,
    field: &str,
    limit: usize,
) -> Result<(), crate::error::Error> {
    let size = answer.encoded_len();
    if size <= limit {
        return Ok(());
    }
    Err(crate::error::Error::answer_too_large(
        field, rows, size, limit,
    ))
}

/// An answer that is one whole (no rows or pages to send fewer of) and
/// must fit `max_message_bytes`: tonic would otherwise fail it in the
/// trailers, as OUT_OF_RANGE naming nothing of ours. `what` names it.
fn fits_whole(
    answer: &impl prost::Message,
    what: &str,
    limit: usize,
) -> Result<(), crate::error::Error> {
    let size = answer.encoded_len();
    if size <= limit {
        return Ok(());
    }
    Err(crate::error::Error::TooLarge(format!(
        "{what} is {size} bytes, over the {limit} the gateway sends (max_message_bytes); raise max_message_bytes"
    )))
}

/// The call's request id, which the admission layer settled: it follows the
/// decision into the record and the logs.
fn request_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// When work that can be cut short must stop for the call's answer to
/// reach the caller before its deadline, which the admission layer read
/// from `grpc-timeout` when the call arrived.
fn reply_by<T>(request: &tonic::Request<T>) -> Option<std::time::Instant> {
    request
        .extensions()
        .get::<auth::Admitted>()?
        .deadline
        .map(|deadline| deadline.reply_by())
}

/// NOT_SERVING until the models are loaded and once a stop begins; for the
/// services that score, also while no model is loaded; and,
/// while the database's commits fail, for the whole server and the
/// services that must record (every decision and consent change is
/// recorded before it is answered or acknowledged), so that a load
/// balancer sends their calls elsewhere.
/// Reading explanations, models and rollouts still works then. Only the
/// services whose status differs from `before` are set: a Watch is sent a
/// status when it changes, not again.
async fn set_health(
    health: &tonic_health::server::HealthReporter,
    (readiness, recording_now): (Readiness, bool),
    before: Option<(Readiness, bool)>,
) {
    let status = |serving: bool| {
        if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    // Whether each group serves, given readiness and whether commits succeed.
    let scoring = |(r, c): (Readiness, bool)| r == Readiness::Ready && c;
    let recording =
        |(r, c): (Readiness, bool)| matches!(r, Readiness::Ready | Readiness::NoModel) && c;
    let reading = |(r, _): (Readiness, bool)| matches!(r, Readiness::Ready | Readiness::NoModel);
    let now = (readiness, recording_now);
    let groups: [(&[&str], bool, Option<bool>); 3] = [
        (
            &["", SCORING_SERVICE, OIP_SERVICE],
            scoring(now),
            before.map(scoring),
        ),
        (&[CONSENT_SERVICE], recording(now), before.map(recording)),
        (
            &[
                MODEL_SERVICE,
                EXPLAIN_SERVICE,
                EXPLANATION_SERVICE,
                ADMIN_SERVICE,
            ],
            reading(now),
            before.map(reading),
        ),
    ];
    for (services, serving, was) in groups {
        if was == Some(serving) {
            continue;
        }
        for service in services {
            health.set_service_status(service, status(serving)).await;
        }
    }
}

/// Lets a warning through at most once a minute: a flood of refused or
/// failed connections must not flood the log too.
#[derive(Default)]
struct OncePerMinute {
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl OncePerMinute {
    fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }
}

/// How often a connection is pinged, and how long its peer has to answer
/// before the connection is closed.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// How long shutdown waits for open calls: under the 30 s a container
/// orchestrator commonly allows before SIGKILL, so that the record is
/// closed cleanly first.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(25);

const SCORING_SERVICE: &str =
    <ScoringServiceServer<scoring::Scoring> as tonic::server::NamedService>::NAME;
const EXPLAIN_SERVICE: &str =
    <ExplainServiceServer<explain::Explain> as tonic::server::NamedService>::NAME;
const CONSENT_SERVICE: &str =
    <ConsentServiceServer<consent::Consent> as tonic::server::NamedService>::NAME;
const EXPLANATION_SERVICE: &str =
    <ExplanationServiceServer<why::Why> as tonic::server::NamedService>::NAME;
const ADMIN_SERVICE: &str = <AdminServiceServer<admin::Admin> as tonic::server::NamedService>::NAME;
const MODEL_SERVICE: &str =
    <ModelServiceServer<models::Models> as tonic::server::NamedService>::NAME;
const OIP_SERVICE: &str =
    <GrpcInferenceServiceServer<oip::Oip> as tonic::server::NamedService>::NAME;
