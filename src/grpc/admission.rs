//! The admission layer: every gRPC call passes here before its handler.
//!
//! In order, it gives the call a request id (the caller's `x-request-id`, or
//! a new one), answers HTTP 405 or 415 to a request that is not a gRPC
//! call (not POST, or not gRPC with protobuf), finds the
//! call's rule in [`super::auth::RULES`] (no rule, no
//! entry), identifies the caller from its bearer credential or client
//! certificate and checks the rule, then waits for the request message
//! itself ([`RECEIVE_TIMEOUT`] at most, or the call's deadline; health
//! checks too; not a stream of requests, which reflection keeps open), and
//! only then sheds the call with RESOURCE_EXHAUSTED when the global in-flight
//! limit is reached (queueing without bound would only turn overload into
//! timeouts). Who may not call learns it whatever the load, and the check
//! costs a hash. A caller that opens calls and never sends their messages
//! holds no in-flight permit, so it cannot starve the others. What it
//! established travels to the handler as [`Admitted`].
//!
//! It owns the call's deadline (`grpc-timeout`): an admitted call still
//! running when it expires is answered DEADLINE_EXCEEDED. An answer holds
//! the call's place until its client has read it; one still unread past
//! what was left of its deadline (1 s to [`UNREAD_TIMEOUT`]) is overdue,
//! and when the limit sheds a call, the connections of overdue answers are
//! cut, so that a client that never reads cannot hold the gateway's places
//! for ever. It also counts
//! and times every call, however it ends (answered, expired, or abandoned
//! by the client), and runs it inside a span that carries the request id
//! into every log line.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Status, body::Body, transport::server::TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument;

use super::{
    auth::{self, Admitted},
    deadline::Deadline,
    io::{Cutoff, Peer},
};
use crate::{access::Caller, gateway::Gateway};

const REQUEST_ID: &str = "x-request-id";

/// How long a call's request message may take to arrive once its headers
/// have (unless its deadline is sooner). Every method takes one message,
/// which a client sends at once; a call still waiting for it after this is
/// refused rather than left holding a place.
pub const RECEIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Room for the gRPC framing (a 5-byte prefix) around a message of
/// `max_message_bytes`: a request larger than that cannot be one message
/// the decoder would take.
const FRAMING_BYTES: usize = 5;

/// The largest message of a call that needs no credential (health).
pub(super) const PUBLIC_MESSAGE_BYTES: usize = 4096;

/// How long an answer may wait for its client to read it before it is
/// overdue: what is left of its call's deadline, within these bounds (a
/// deadline hours away must not let an unread answer keep its place, nor
/// one just expired make a fresh answer overdue at once).
pub const UNREAD_TIMEOUT: Duration = Duration::from_secs(30);
const UNREAD_GRACE: Duration = Duration::from_secs(1);
/// Shed calls look for overdue answers at most this often.
const CUT_INTERVAL: Duration = Duration::from_millis(100);

/// The health service's stream, which needs no credential and has no end.
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

#[derive(Clone)]
pub struct Admission {
    gateway: Arc<Gateway>,
    in_flight: Arc<Semaphore>,
    /// Open health Watch streams: a place is held until the stream ends.
    watches: Arc<Semaphore>,
    /// Request bytes being received, one permit a byte
    /// (`limits.max_receiving_mb`).
    receiving: Arc<Semaphore>,
    /// Turns true when the server starts to shut down: Watch streams then
    /// end, or the drain would wait for them for ever.
    closing: tokio::sync::watch::Receiver<bool>,
    unread: Arc<Unread>,
}

/// The answers handed to their connections and not yet delivered: when
/// each is overdue, and how to cut its connection.
struct Unread {
    /// When a shed call last looked for overdue answers (ms since `epoch`).
    scanned_ms: AtomicU64,
    epoch: Instant,
    next: AtomicU64,
    answers: Mutex<HashMap<u64, (Instant, Arc<Cutoff>)>>,
    /// `candor_rpc_answers_unread`.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Unread {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, Arc<Cutoff>)>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an answer in until the returned entry is dropped.
    fn enter(self: &Arc<Self>, overdue_at: Instant, cutoff: Arc<Cutoff>) -> UnreadEntry {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, (overdue_at, cutoff));
        self.gauge.inc();
        UnreadEntry {
            unread: self.clone(),
            key,
        }
    }

    /// Cuts the connections of overdue answers; their places come back as
    /// the server drops them. Returns how many it cut. Looks at most every
    /// [`CUT_INTERVAL`]: every shed call would otherwise scan the table
    /// that every answer needs.
    fn cut_overdue(&self, now: Instant) -> usize {
        let at = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.scanned_ms.load(Ordering::Relaxed);
        let due = last == 0 || at >= last.saturating_add(CUT_INTERVAL.as_millis() as u64);
        if !due
            || self
                .scanned_ms
                .compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return 0;
        }
        let mut answers = self.lock();
        let before = answers.len();
        answers.retain(|_, (overdue_at, cutoff)| {
            let overdue = *overdue_at <= now;
            if overdue {
                cutoff.cut();
            }
            !overdue
        });
        before - answers.len()
    }
}

struct UnreadEntry {
    unread: Arc<Unread>,
    key: u64,
}

impl Drop for UnreadEntry {
    fn drop(&mut self) {
        self.unread.lock().remove(&self.key);
        self.unread.gauge.dec();
    }
}

impl Admission {
    pub fn new(gateway: Arc<Gateway>, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        let limits = &gateway.config().limits;
        let (in_flight, watches) = (limits.max_in_flight, limits.max_health_watches);
        let receiving =
            usize::try_from(limits.max_receiving_mb << 20).unwrap_or(Semaphore::MAX_PERMITS);
        Self {
            in_flight: Arc::new(Semaphore::new(in_flight)),
            watches: Arc::new(Semaphore::new(watches)),
            receiving: Arc::new(Semaphore::new(receiving.min(Semaphore::MAX_PERMITS))),
            closing,
            unread: Arc::new(Unread {
                scanned_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                next: AtomicU64::new(0),
                answers: Mutex::default(),
                gauge: gateway.metrics().answers_unread().clone(),
            }),
            gateway,
        }
    }
}

/// The body of an answer stream with no end of its own (a health Watch,
/// server reflection): it ends with UNAVAILABLE when the server shuts down,
/// since graceful shutdown waits for every open stream, and one client
/// left open would hold the process, and its database lock, for ever; and
/// with DEADLINE_EXCEEDED when the call's deadline passes, which bounds the
/// whole call, its stream too. A Watch also holds its place among
/// `limits.max_health_watches`.
struct Unending {
    inner: Body,
    /// The status the stream ends with from outside: the first of the
    /// server's stop and the call's deadline.
    ending: std::pin::Pin<Box<dyn std::future::Future<Output = Status> + Send>>,
    ended: bool,
    _place: Option<OwnedSemaphorePermit>,
    max_message_bytes: usize,
    rpc: &'static str,
    /// The call, counted under the status its trailers carry when they
    /// pass, or as cancelled if the stream goes first.
    uncounted: Option<Arc<Gateway>>,
}

impl Unending {
    /// Says the trailers' status as an answer at once says it (a message
    /// of the stream's over the limit, one that does not decode), and
    /// counts the call under it.
    fn ending_with(&mut self, trailers: &mut http::HeaderMap) {
        let code = answered_code(trailers, self.max_message_bytes, self.rpc);
        if let Some(gateway) = self.uncounted.take() {
            gateway.metrics().count(self.rpc, code_name(code));
        }
    }
}

impl Drop for Unending {
    fn drop(&mut self) {
        if let Some(gateway) = self.uncounted.take() {
            gateway.metrics().count(self.rpc, "CANCELLED");
        }
    }
}

impl http_body::Body for Unending {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // What the stream has ready goes first: a Watch is told NOT_SERVING
        // as the stop begins, before it ends.
        let frame = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if frame.is_pending()
            && let Poll::Ready(status) = this.ending.as_mut().poll(cx)
        {
            this.ended = true;
            let mut trailers = http::HeaderMap::new();
            if let Err(e) = status.add_header(&mut trailers) {
                tracing::warn!(error = %e, "could not end an open stream with its status");
            }
            this.ending_with(&mut trailers);
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        if let Poll::Ready(Some(Ok(f))) = frame {
            return Poll::Ready(Some(Ok(match f.into_trailers() {
                Ok(mut trailers) => {
                    this.ending_with(&mut trailers);
                    http_body::Frame::trailers(trailers)
                }
                Err(data) => data,
            })));
        }
        frame
    }

    // A stream refused at once (a Watch whose request does not decode) is
    // a trailers-only answer: its end must show, or the stream would end
    // without a status.
    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }
}

/// The body of a one-message answer: it holds the call's in-flight permit
/// until the answer has been handed to the connection whole, or its stream
/// ends. An answer a client does not read (its HTTP/2 window left shut)
/// stays in memory while it waits, so it counts against
/// `limits.max_in_flight` for as long as it does: a client cannot make the
/// gateway hold more answers than it would compute.
struct Delivering {
    inner: Body,
    _permit: OwnedSemaphorePermit,
    /// Counted among the answers awaiting their clients, when the
    /// connection can be cut.
    _unread: Option<UnreadEntry>,
}

impl http_body::Body for Delivering {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S> Layer<S> for Admission {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Admission,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

// tonic's router never fails: every failure is a response with a status,
// which is what lets every call be counted by its code.
impl<S> Service<Request<Body>> for AdmissionService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        // The service polled ready is the one that must serve this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gateway = self.admission.gateway.clone();

        let request_id = request_id(&mut request);
        // gRPC answers its errors with HTTP 200 and a status in the
        // trailers, which a plain HTTP client would read as success: a
        // request that is not gRPC is refused at the HTTP level instead, as
        // the gRPC-over-HTTP/2 specification says a server should.
        if request.method() != http::Method::POST {
            return not_grpc(
                &request,
                request_id,
                http::StatusCode::METHOD_NOT_ALLOWED,
                format!("method {}; gRPC calls are POST", request.method()),
            );
        }
        if !is_grpc(&request) {
            let sent = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map_or("no content-type".to_owned(), |v| {
                    format!("content-type {:?}", String::from_utf8_lossy(v.as_bytes()))
                });
            return not_grpc(
                &request,
                request_id,
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "{sent}; this server speaks gRPC with protobuf messages only (content-type application/grpc or application/grpc+proto)"
                ),
            );
        }
        // Every served method has a rule, so a path without one is a
        // method this gateway does not have.
        let Some((rpc, rule)) = auth::rule_for(request.uri().path()) else {
            let status = Status::unimplemented(format!(
                "{}: this gateway serves no such method",
                request.uri().path()
            ));
            // Counted under one name whatever the path, so that method
            // scans show in the metrics without a series per path.
            gateway
                .metrics()
                .count(UNKNOWN_METHOD, code_name(status.code()));
            return refuse(status, request_id);
        };
        let refused = |status: Status| -> Self::Future {
            let response = refusal(&gateway, rpc, &request_id, status);
            Box::pin(std::future::ready(Ok(response)))
        };
        let caller = if rule.public {
            Caller::Open
        } else {
            match identify(&gateway, &request) {
                Ok(caller) => caller,
                Err(status) => return refused(status),
            }
        };
        if let Err(status) = auth::check(&caller, rule) {
            return refused(status);
        }
        // Anyone may watch the gateway's health, but not without bound: a
        // stream's place goes with its response body, so it is held for as
        // long as the stream is open.
        let watch = if request.uri().path() == HEALTH_WATCH {
            match self.admission.watches.clone().try_acquire_owned() {
                Ok(place) => Some(place),
                Err(_) => {
                    return refused(Status::resource_exhausted(format!(
                        "health: {} Watch streams are open (limits.max_health_watches); use Check, or retry later",
                        gateway.config().limits.max_health_watches
                    )));
                }
            }
        } else {
            None
        };
        let deadline = match Deadline::from_headers(request.headers(), started) {
            Ok(deadline) => deadline,
            Err(message) => return refused(Status::invalid_argument(message)),
        };
        // A deadline already past is answered now: tonic's own timer for
        // it wraps this layer and would answer CANCELLED, without the
        // request id, the moment the call waits for its message.
        if let Some(d) = deadline.filter(|d| d.expires() <= Instant::now()) {
            return refused(Status::deadline_exceeded(unanswered(&d, "")));
        }
        request.extensions_mut().insert(Admitted {
            caller,
            rule,
            rpc,
            deadline,
        });
        let in_flight = self.admission.in_flight.clone();
        let unread = self.admission.unread.clone();
        let cutoff = peer(&request).map(|p| p.cutoff.clone());
        let receiving = self.admission.receiving.clone();
        let closing = self.admission.closing.clone();
        let span = tracing::info_span!("rpc", rpc, request_id = %request_id);
        Box::pin(
            async move {
                // Every call with one request message waits for it here, a
                // health check too: a call whose message never comes is
                // ended, not held. A client that streams its requests
                // (reflection) is admitted on its headers.
                if !rule.streams_requests {
                    // A health check's message is a service name: no one
                    // may make the gateway hold megabytes without a
                    // credential.
                    let limit = if rule.public {
                        Err(PUBLIC_MESSAGE_BYTES)
                    } else {
                        Ok(gateway.config().max_message_bytes)
                    };
                    request = match receive(request, rpc, limit, deadline, &receiving).await {
                        Ok(request) => request,
                        Err(status) => return Ok(refusal(&gateway, rpc, &request_id, status)),
                    };
                }
                // Health checks are not shed: a loaded gateway is still
                // alive, and a Watch has no end.
                let permit = if rule.public {
                    None
                } else {
                    match in_flight.try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            let cut = unread.cut_overdue(Instant::now());
                            if cut > 0 {
                                tracing::warn!(
                                    connections = cut,
                                    "cut connections that left answers unread past their time (what was left of the call's deadline, 1 s to {UNREAD_TIMEOUT:?}) while the in-flight limit was full"
                                );
                            }
                            let status = Status::resource_exhausted(format!(
                                "overloaded: {} calls are in flight or delivering their answers (limits.max_in_flight); retry with backoff",
                                gateway.config().limits.max_in_flight
                            ));
                            return Ok(refusal(&gateway, rpc, &request_id, status));
                        }
                    }
                };
                let mut call = Call::start(gateway.clone(), rpc, started, deadline, permit);
                // The deadline first: once the caller has stopped waiting,
                // its call is not worth another step.
                let mut response = tokio::select! {
                    biased;
                    // A decision made before the deadline may already be
                    // on record: ListDecisions shows it with this call's id.
                    deadline = expiry(deadline) => Status::deadline_exceeded(unanswered(
                        &deadline,
                        &if rule.decides {
                            format!("; a decision it made before then is listed with request_id {request_id}")
                        } else {
                            String::new()
                        },
                    ))
                    .into_http(),
                    answer = inner.call(request) => {
                        let Ok(response) = answer;
                        response
                    }
                };
                let max_message_bytes = gateway.config().max_message_bytes;
                let code = answered_code(response.headers_mut(), max_message_bytes, rpc);
                tracing::debug!(
                    elapsed_us = started.elapsed().as_micros() as u64,
                    code = code_name(code),
                    "answered"
                );
                // A stream's status comes in its trailers, after its
                // messages; an error at once is final in its headers.
                let streams = (watch.is_some() || rule.streams_requests) && code == tonic::Code::Ok;
                call.streamed = streams;
                let permit = call.answered(code_name(code));
                stamp(&mut response, &request_id);
                if let Some(permit) = permit.filter(|_| !rule.streams_requests) {
                    let now = Instant::now();
                    let wait = deadline.map_or(UNREAD_TIMEOUT, |d| {
                        d.expires()
                            .saturating_duration_since(now)
                            .clamp(UNREAD_GRACE, UNREAD_TIMEOUT)
                    });
                    let overdue_at = now + wait;
                    let entry = cutoff.map(|cutoff| unread.enter(overdue_at, cutoff));
                    response = response.map(|inner| {
                        Body::new(Delivering {
                            inner,
                            _permit: permit,
                            _unread: entry,
                        })
                    });
                } else if watch.is_some() || rule.streams_requests {
                    let mut closing = closing;
                    response = response.map(|inner| {
                        Body::new(Unending {
                            inner,
                            ending: Box::pin(async move {
                                tokio::select! {
                                    // A dropped sender means the server is gone.
                                    _ = closing.wait_for(|&c| c) => Status::unavailable(
                                        "the gateway is shutting down; open the stream on another instance",
                                    ),
                                    d = expiry(deadline) => Status::deadline_exceeded(format!(
                                        "deadline: the stream's grpc-timeout of {:?} has passed",
                                        d.timeout()
                                    )),
                                }
                            }),
                            ended: false,
                            _place: watch,
                            max_message_bytes,
                            rpc,
                            uncounted: streams.then(|| gateway.clone()),
                        })
                    });
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// An admitted call, from admission until it is answered: it holds the
/// call's in-flight permit (then handed to its answer, [`Delivering`]) and
/// its place in `candor_rpc_in_flight`. A call
/// can also end unanswered, when its future is dropped because the client
/// reset the stream or the connection closed; dropping it then still
/// releases both and counts the call, so the gauge always comes back down.
struct Call {
    gateway: Arc<Gateway>,
    rpc: &'static str,
    started: Instant,
    deadline: Option<Deadline>,
    permit: Option<OwnedSemaphorePermit>,
    code: Option<&'static str>,
    /// Answered with a stream, which counts the call at its end.
    streamed: bool,
}

impl Call {
    fn start(
        gateway: Arc<Gateway>,
        rpc: &'static str,
        started: Instant,
        deadline: Option<Deadline>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        gateway.metrics().in_flight().inc();
        Self {
            gateway,
            rpc,
            started,
            deadline,
            permit,
            code: None,
            streamed: false,
        }
    }

    /// Counts the call as answered with `code`, and hands over its
    /// in-flight permit, which the answer holds until it is delivered
    /// ([`Delivering`]).
    fn answered(mut self, code: &'static str) -> Option<OwnedSemaphorePermit> {
        self.code = Some(code);
        self.permit.take()
    }

    /// The code a call that was never answered is counted under: what its
    /// client saw. A client whose deadline passed reports DEADLINE_EXCEEDED;
    /// its own timer started before ours, by the time the request took to
    /// reach us and wait for a worker (milliseconds under load), and ends
    /// the call (with a reset) that much before ours would. So a call
    /// abandoned within the last quarter of its timeout (at least the last
    /// 5 ms, at most the last second), or from [`Deadline::reply_by`] on,
    /// is counted as expired. Any other abandoned call was cancelled by its
    /// client.
    fn abandoned_code(&self) -> &'static str {
        let now = Instant::now();
        match self.deadline {
            Some(deadline)
                if now >= deadline.reply_by()
                    || now + expiry_slack(&deadline) >= deadline.expires() =>
            {
                "DEADLINE_EXCEEDED"
            }
            _ => "CANCELLED",
        }
    }
}

/// Resolves when `deadline` passes; never without one.
async fn expiry(deadline: Option<Deadline>) -> Deadline {
    match deadline {
        Some(deadline) => {
            deadline.expired().await;
            deadline
        }
        None => std::future::pending().await,
    }
}

/// The message of a call its deadline ended, with `more` to say.
fn unanswered(deadline: &Deadline, more: &str) -> String {
    format!(
        "deadline: the call was not answered within its grpc-timeout of {:?}{more}",
        deadline.timeout()
    )
}

/// How much sooner than ours a client's timer may run out: see
/// [`Call::abandoned_code`]. A quarter of the timeout, between 5 ms and a
/// second: a call cancelled minutes before an hour-long deadline was
/// cancelled.
fn expiry_slack(deadline: &Deadline) -> Duration {
    (deadline.timeout() / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or_else(|| {
            let code = self.abandoned_code();
            tracing::debug!(
                elapsed_us = self.started.elapsed().as_micros() as u64,
                code,
                "abandoned by the client"
            );
            code
        });
        let metrics = self.gateway.metrics();
        metrics.in_flight().dec();
        if self.streamed {
            metrics.rpc_latency(self.rpc, self.started);
        } else {
            metrics.rpc(self.rpc, code, self.started);
        }
    }
}

/// The status a header block carries (headers of a trailers-only answer,
/// or trailers); none is OK.
fn status_in(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

/// The code of an answer, as the client will read it, once tonic's
/// OUT_OF_RANGE for an oversized message and INTERNAL for a request that
/// does not decode are rewritten in `status` (the headers of a
/// trailers-only response, which every error at once is, or a stream's
/// trailers).
fn answered_code(status: &mut http::HeaderMap, max_message_bytes: usize, rpc: &str) -> tonic::Code {
    let code = status_in(status);
    let rewritten = match code {
        tonic::Code::OutOfRange => rewrite(status, |message| {
            message
                .contains("message length too large")
                .then(|| oversized(max_message_bytes, rpc))
        }),
        tonic::Code::Internal => rewrite(status, undecodable),
        tonic::Code::ResourceExhausted => rewrite(status, |message| {
            inflates_too_far(message, max_message_bytes)
        }),
        _ => None,
    };
    rewritten.unwrap_or(code)
}

/// Replaces the status in `headers` with what `better` makes of its
/// message, if anything; returns the new code.
fn rewrite(
    headers: &mut http::HeaderMap,
    better: impl FnOnce(&str) -> Option<Status>,
) -> Option<tonic::Code> {
    let status = better(tonic::Status::from_header_map(headers)?.message())?;
    headers.remove("grpc-message");
    if let Err(e) = status.add_header(headers) {
        tracing::warn!(error = %e, "could not rewrite an answer's status");
    }
    Some(status.code())
}

/// tonic answers a request message that is not valid protobuf for its
/// method with INTERNAL, the code of a server fault, which clients and
/// dashboards treat as the gateway's failure. It is the caller's: the
/// answer is INVALID_ARGUMENT, keeping prost's account of where decoding
/// failed (`ScoreRequest.context: RequestContext.tc_string: invalid string
/// value ...`).
fn undecodable(message: &str) -> Option<Status> {
    if let Some(detail) = message.strip_prefix("failed to decode Protobuf message: ") {
        return Some(Status::invalid_argument(format!(
            "request: the message is not valid protobuf for this method: {detail}"
        )));
    }
    // A compressed flag without `grpc-encoding` stays INTERNAL, as the
    // gRPC compression specification requires, but is told as the
    // caller's framing, not in tonic's words.
    if message.contains("compressed-flag but no grpc-encoding") {
        return Some(Status::internal(
            "request: the message's compressed flag is 1 but the call's grpc-encoding is absent or identity (send flag 0, or grpc-encoding: gzip); the gRPC compression specification answers this INTERNAL",
        ));
    }
    // The client's own framing: tonic answers INTERNAL, as if the gateway
    // had failed.
    if let Some(detail) = message
        .strip_prefix("Error decompressing: ")
        .and_then(|m| m.strip_suffix(", while sending request"))
    {
        return Some(Status::invalid_argument(format!(
            "request: the compressed message does not decompress ({detail})"
        )));
    }
    message.contains("invalid compression flag").then(|| {
        Status::invalid_argument(
            "request: a message's compressed flag must be 0 or 1 (gRPC's length-prefixed framing)",
        )
    })
}

/// tonic's refusal of a compressed message that inflates past the limit,
/// said as the gateway says an oversized message.
fn inflates_too_far(message: &str, max_message_bytes: usize) -> Option<Status> {
    let limit: usize = message
        .strip_prefix("Error decompressing: size limit, of ")?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let setting = if limit == max_message_bytes {
        "max_message_bytes"
    } else {
        "the limit of this method"
    };
    Some(Status::resource_exhausted(format!(
        "request: the compressed message inflates to more than the {limit} bytes the gateway accepts ({setting})"
    )))
}

/// The caller's `x-request-id` when it is a sensible token, else a new
/// UUIDv7, written back into the request so the handler and the decision
/// record see the same id.
fn request_id(request: &mut Request<Body>) -> String {
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
    match given {
        Some(id) => id.to_owned(),
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            request.headers_mut().insert(
                REQUEST_ID,
                HeaderValue::from_str(&id).expect("a UUID is a valid header value"),
            );
            id
        }
    }
}

/// The connection a call came on, over TCP or TLS.
fn peer<B>(request: &Request<B>) -> Option<&Peer> {
    let extensions = request.extensions();
    extensions.get::<Peer>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<Peer>>()
            .map(TlsConnectInfo::get_ref)
    })
}

fn identify(gateway: &Gateway, request: &Request<Body>) -> Result<Caller, Status> {
    let mut given = request
        .headers()
        .get_all(http::header::AUTHORIZATION)
        .iter();
    // Two credentials are one too many: which of them is the caller's?
    let bearer = match (given.next(), given.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(Status::unauthenticated(
                "authorization: given more than once; send one credential",
            ));
        }
        (Some(value), None) => Some(value.to_str().ok().and_then(bearer_credential).ok_or_else(
            || Status::unauthenticated("authorization: expected `Bearer <credential>`"),
        )?),
    };
    let certs = request
        .extensions()
        .get::<TlsConnectInfo<Peer>>()
        .and_then(TlsConnectInfo::peer_certs);
    let cert = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
    gateway
        .access()
        .identify(bearer, cert)
        .map_err(|e| Status::from(crate::Error::from(e)))
}

/// A request over the message limit, however it was found out. tonic
/// refuses one it finds with OUT_OF_RANGE; gRPC's status-code guide gives
/// RESOURCE_EXHAUSTED for a message larger than the server accepts, the
/// code clients handle as "send less".
fn oversized(limit: usize, rpc: &str) -> Status {
    // Only calls that carry rows can be made smaller by sending fewer.
    let carries_rows = ["Batch", "/ModelInfer"].iter().any(|m| rpc.contains(m));
    Status::resource_exhausted(format!(
        "request: the message is larger than the {limit} bytes the gateway accepts (max_message_bytes){}",
        if carries_rows {
            "; send fewer rows per call"
        } else {
            ""
        }
    ))
}

/// The credential of an `authorization: Bearer <credential>` value. The
/// scheme is case-insensitive (RFC 9110 §11.1), and clients spell it
/// `bearer` as often as `Bearer`.
fn bearer_credential(value: &str) -> Option<&str> {
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

/// Whether the request says it carries gRPC with protobuf messages
/// (`application/grpc` or `application/grpc+proto`, with or without
/// `;parameters`): the only codec this server speaks, so a `+json` body is
/// refused rather than parsed as protobuf.
fn is_grpc(request: &Request<Body>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .map(|rest| rest.strip_prefix("+proto").unwrap_or(rest))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(';'))
}

/// An HTTP refusal (415 for a request that is not gRPC, 405 for one that is
/// not POST) of a request that is not a gRPC call, saying what it sent.
fn not_grpc(
    request: &Request<Body>,
    request_id: String,
    code: http::StatusCode,
    sent: String,
) -> BoxFuture<Result<Response<Body>, Infallible>> {
    tracing::debug!(path = request.uri().path(), %sent, "not a gRPC request");
    // An answer to HEAD has no content (RFC 9110 9.3.2).
    let text = if request.method() == http::Method::HEAD {
        String::new()
    } else {
        format!("{}: the request had {sent}\n", request.uri().path())
    };
    let mut response = Response::new(Body::new(Full::new(Bytes::from(text))));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if code == http::StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
    }
    stamp(&mut response, &request_id);
    Box::pin(std::future::ready(Ok(response)))
}

fn refuse(status: Status, request_id: String) -> BoxFuture<Result<Response<Body>, Infallible>> {
    let mut response = status.into_http::<Body>();
    stamp(&mut response, &request_id);
    Box::pin(std::future::ready(Ok(response)))
}

/// The `rpc` label of calls to methods this gateway does not have.
const UNKNOWN_METHOD: &str = "(unknown)";

/// A refused call's answer, counted and logged under its method.
fn refusal(
    gateway: &Gateway,
    rpc: &'static str,
    request_id: &str,
    status: Status,
) -> Response<Body> {
    gateway.metrics().count(rpc, code_name(status.code()));
    // Credentials refused are a security event (key guessing shows here);
    // shed and malformed calls are the metrics' to count.
    if matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    ) {
        tracing::info!(rpc, request_id = %request_id, code = ?status.code(), reason = status.message(), "refused");
    } else {
        tracing::debug!(rpc, request_id = %request_id, code = ?status.code(), reason = status.message(), "refused");
    }
    let mut response = status.into_http::<Body>();
    stamp(&mut response, request_id);
    response
}

/// The call with its request message received whole: within the receive
/// timeout (or the call's deadline, if sooner) and within the message limit.
/// Receives a call's one request message, of at most `max_message_bytes`
/// (`Ok`), or of a public call's bound (`Err`).
async fn receive(
    request: Request<Body>,
    rpc: &str,
    max_message_bytes: Result<usize, usize>,
    deadline: Option<Deadline>,
    receiving: &Arc<Semaphore>,
) -> Result<Request<Body>, Status> {
    let (parts, mut body) = request.into_parts();
    let wait = match deadline {
        Some(d) => d
            .expires()
            .saturating_duration_since(Instant::now())
            .min(RECEIVE_TIMEOUT),
        None => RECEIVE_TIMEOUT,
    };
    let (Ok(max) | Err(max)) = max_message_bytes;
    let too_large = || match max_message_bytes {
        Ok(max) => oversized(max, rpc),
        Err(max) => Status::resource_exhausted(format!(
            "request: a health check's message (a service name) is at most {max} bytes"
        )),
    };
    // The only encoding the services take; tonic refuses any other.
    let gzip = parts
        .headers
        .get("grpc-encoding")
        .is_some_and(|e| e.as_bytes() == b"gzip");
    let limit = FRAMING_BYTES + if gzip { with_deflate(max) } else { max };
    let mut chunks: Vec<Bytes> = Vec::new();
    // The bytes held are counted against every call's, until the message
    // is whole and handed on.
    let mut held: Option<OwnedSemaphorePermit> = None;
    let collect = async {
        let mut total = 0usize;
        // Whether the prefix has come and been checked.
        let mut prefix_read = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Status::cancelled(format!("request: the message did not arrive whole: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len();
            if total > limit {
                return Err(too_large());
            }
            let permit = u32::try_from(data.len())
                .ok()
                .and_then(|n| receiving.clone().try_acquire_many_owned(n).ok())
                .ok_or_else(|| {
                    Status::resource_exhausted(
                        "overloaded: the gateway is receiving as many request bytes as it holds at once (limits.max_receiving_mb); retry with backoff",
                    )
                })?;
            match held.as_mut() {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
            chunks.push(data);
            // The prefix says how large the message will be: one that cannot
            // fit is refused then, not once its bytes have come (which a slow
            // client may take longer than the receive timeout to send).
            if !prefix_read && let Some((compressed, declared)) = prefix(&chunks) {
                prefix_read = true;
                let most = if gzip && compressed {
                    limit - FRAMING_BYTES
                } else {
                    max
                };
                if declared > most {
                    return Err(too_large());
                }
            }
        }
        Ok(())
    };
    if let Ok(received) = tokio::time::timeout(wait, collect).await {
        received?;
    } else {
        // A client may send its whole message and never end its stream:
        // the wait is then for END_STREAM, not for bytes.
        let late = if arrived_whole(&chunks) {
            "its message had arrived whole, but its stream had not ended (a call that sends one message, as every call here but reflection does, ends its stream, END_STREAM, after it)"
        } else {
            "its request message had not arrived whole"
        };
        return Err(Status::deadline_exceeded(match deadline {
            // The caller's own deadline came first: say so, as for any
            // call it ends, rather than blame a slow client.
            Some(d) if wait < RECEIVE_TIMEOUT => unanswered(&d, &format!("; {late} by then")),
            _ => format!("request: {late} within {wait:?} of the call's headers"),
        }));
    }
    let message = match chunks.len() {
        1 => chunks.pop().expect("one chunk"),
        _ => chunks.concat().into(),
    };
    one_message(&message)?;
    // A gzip call's message may come uncompressed (flag 0), held to the
    // limit as it is, or compressed, held to it once inflated.
    let body = &message[FRAMING_BYTES..];
    let over = gzip
        && match message[0] {
            1 => inflates_past(body, max),
            _ => body.len() > max,
        };
    if over {
        return Err(too_large());
    }
    Ok(Request::from_parts(parts, Body::new(Full::new(message))))
}

/// The most a message of `max` bytes can take gzip-compressed: one that
/// does not compress grows by deflate's block headers and gzip's frame
/// (about 0.03%). tonic holds compressed messages to this, and the
/// admission layer holds what they inflate to to `max` itself
/// ([`inflates_past`]): the limit is on the message, not its encoding.
pub(super) fn with_deflate(max: usize) -> usize {
    max.saturating_add(max / 1024 + 64)
}

/// Whether a gzip message inflates to more than `max` bytes. One that does
/// not inflate at all is left to tonic, whose refusal names the fault.
fn inflates_past(gzip: &[u8], max: usize) -> bool {
    use std::io::Read;
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut inflated = flate2::read::GzDecoder::new(gzip).take(limit);
    std::io::copy(&mut inflated, &mut std::io::sink()).is_ok_and(|n| n == limit)
}

/// Whether `chunks` hold one whole message, by its prefix, without
/// copying them.
fn arrived_whole(chunks: &[Bytes]) -> bool {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    prefix(chunks).is_some_and(|(_, declared)| declared == total - FRAMING_BYTES)
}

/// The message's 5-byte prefix, once it has come: whether the message is
/// compressed, and the length it declares.
fn prefix(chunks: &[Bytes]) -> Option<(bool, usize)> {
    let mut bytes = chunks.iter().flat_map(|c| c.iter()).copied();
    let flag = bytes.next()?;
    let mut length = [0u8; 4];
    for b in &mut length {
        *b = bytes.next()?;
    }
    Some((flag == 1, u32::from_be_bytes(length) as usize))
}

/// Refuses a unary call's body unless it is exactly one gRPC message (a
/// flag byte, a 4-byte length, the message): tonic would answer a message
/// cut short INTERNAL, as if the gateway had failed.
fn one_message(body: &[u8]) -> Result<(), Status> {
    let Some(prefix) = body.get(..FRAMING_BYTES) else {
        return Err(Status::invalid_argument(format!(
            "request: {} bytes arrived, not a whole gRPC message (its 5-byte prefix first)",
            body.len()
        )));
    };
    let declared = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    let arrived = body.len() - FRAMING_BYTES;
    if declared != arrived {
        return Err(Status::invalid_argument(format!(
            "request: the message's prefix declares {declared} bytes but {arrived} arrived; a call takes one whole message"
        )));
    }
    Ok(())
}

/// Every answer carries the call's request id, refusals and expiries too.
fn stamp(response: &mut Response<Body>, request_id: &str) {
    if let Ok(id) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
}

/// The canonical name of a status code, as a metric label.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's timer runs out before ours by the time its request took
    /// to reach a worker: the last quarter of a timeout, and at least 5 ms,
    /// counts as the deadline.
    #[test]
    fn a_call_abandoned_near_its_deadline_counts_as_expired() {
        let slack = |timeout: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", timeout.parse().unwrap());
            let deadline = Deadline::from_headers(&headers, Instant::now())
                .unwrap()
                .unwrap();
            expiry_slack(&deadline)
        };
        assert_eq!(slack("20m"), Duration::from_millis(5));
        assert_eq!(slack("4m"), Duration::from_millis(5));
        assert_eq!(slack("1S"), Duration::from_millis(250));
        assert_eq!(slack("1H"), Duration::from_secs(1));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer k1", "bearer k1", "BEARER k1", "Bearer   k1"] {
            assert_eq!(bearer_credential(value), Some("k1"), "{value}");
        }
        for value in ["Basic k1", "Bearer", "Bearer ", "Bearerk1", "k1"] {
            assert_eq!(bearer_credential(value), None, "{value}");
        }
    }
}
