//! The admission layer: every gRPC call passes here before its handler.
//!
//! In order, it gives the call a request id (the caller's `x-request-id`, or
//! a new one), finds the call's rule in [`super::auth::RULES`] (no rule, no
//! entry), sheds it with RESOURCE_EXHAUSTED when the global in-flight limit
//! is reached (queueing without bound would only turn overload into
//! timeouts), identifies the caller from its bearer credential or client
//! certificate, and checks the rule. What it established travels to the
//! handler as [`Admitted`]. It also counts and times every call, and runs
//! it inside a span that carries the request id into every log line.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, Request, Response};
use tokio::sync::Semaphore;
use tonic::{
    Status,
    body::Body,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::{Layer, Service};
use tracing::Instrument;

use super::auth::{self, Admitted};
use crate::{access::Caller, gateway::Gateway};

const REQUEST_ID: &str = "x-request-id";

#[derive(Clone)]
pub struct Admission {
    gateway: Arc<Gateway>,
    in_flight: Arc<Semaphore>,
}

impl Admission {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        let limit = gateway.config().limits.max_in_flight;
        Self {
            gateway,
            in_flight: Arc::new(Semaphore::new(limit)),
        }
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

impl<S> Service<Request<Body>> for AdmissionService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

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
        // Every served method has a rule, so a path without one is a
        // method this gateway does not have.
        let Some((rpc, rule)) = auth::rule_for(request.uri().path()) else {
            let status = Status::unimplemented(format!(
                "{}: this gateway serves no such method",
                request.uri().path()
            ));
            return refuse(status, request_id);
        };
        let refused = |status: Status| {
            gateway.metrics().refused(rpc, code_name(status.code()));
            tracing::debug!(rpc, request_id = %request_id, code = ?status.code(), message = status.message(), "refused");
            refuse(status, request_id.clone())
        };
        // Health checks are never shed: a loaded gateway is still alive.
        let permit = if rule.public {
            None
        } else {
            match self.admission.in_flight.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return refused(Status::resource_exhausted(format!(
                        "overloaded: {} calls are in flight (limits.max_in_flight); retry with backoff",
                        gateway.config().limits.max_in_flight
                    )));
                }
            }
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
        request
            .extensions_mut()
            .insert(Admitted { caller, rule, rpc });

        let span = tracing::info_span!("rpc", rpc, request_id = %request_id);
        Box::pin(
            async move {
                let metrics = gateway.metrics();
                metrics.in_flight().inc();
                let result = inner.call(request).await;
                metrics.in_flight().dec();
                drop(permit);
                result.map(|mut response| {
                    tracing::debug!(
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "answered"
                    );
                    // A trailers-only response (every error) carries its
                    // status in the headers; a success in the trailers.
                    let mut code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map(tonic::Code::from);
                    if code == Some(tonic::Code::OutOfRange)
                        && oversized_is_resource_exhausted(
                            &mut response,
                            gateway.config().max_message_bytes,
                        )
                    {
                        code = Some(tonic::Code::ResourceExhausted);
                    }
                    metrics.rpc(rpc, code.map_or("OK", code_name), started);
                    if let Ok(id) = HeaderValue::from_str(&request_id) {
                        response.headers_mut().insert(REQUEST_ID, id);
                    }
                    response
                })
            }
            .instrument(span),
        )
    }
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

fn identify(gateway: &Gateway, request: &Request<Body>) -> Result<Caller, Status> {
    let bearer =
        match request.headers().get(http::header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(value.to_str().ok().and_then(bearer_credential).ok_or_else(
                || Status::unauthenticated("authorization: expected `Bearer <credential>`"),
            )?),
        };
    let certs = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs);
    let cert = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
    gateway
        .access()
        .identify(bearer, cert)
        .map_err(|e| Status::from(crate::Error::from(e)))
}

/// tonic refuses a request message over the size limit with OUT_OF_RANGE;
/// gRPC's status-code guide gives RESOURCE_EXHAUSTED for a message larger
/// than the server accepts, the code clients handle as "send less". Called
/// for OUT_OF_RANGE answers only; true when it rewrote this one.
fn oversized_is_resource_exhausted(response: &mut Response<Body>, limit: usize) -> bool {
    let oversized = tonic::Status::from_header_map(response.headers())
        .is_some_and(|s| s.message().contains("message length too large"));
    if !oversized {
        return false;
    }
    let status = tonic::Status::resource_exhausted(format!(
        "request: the message is larger than the {limit} bytes the gateway accepts (max_message_bytes); send fewer rows per call"
    ));
    let headers = response.headers_mut();
    headers.remove("grpc-message");
    if let Err(e) = status.add_header(headers) {
        tracing::warn!(error = %e, "could not rewrite an oversized message's status");
    }
    true
}

/// The credential of an `authorization: Bearer <credential>` value. The
/// scheme is case-insensitive (RFC 9110 §11.1), and clients spell it
/// `bearer` as often as `Bearer`.
fn bearer_credential(value: &str) -> Option<&str> {
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

fn refuse<E: Send + 'static>(
    status: Status,
    request_id: String,
) -> BoxFuture<Result<Response<Body>, E>> {
    let mut response = status.into_http::<Body>();
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    Box::pin(std::future::ready(Ok(response)))
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
    use super::bearer_credential;

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
