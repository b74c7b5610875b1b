//! The HTTPS server: hyper-util's auto (HTTP/1.1 + HTTP/2) builder over tokio-rustls, every
//! request through one axum [`router`], and a drain phase on shutdown. A review is read (at
//! most `--max-body-bytes`), answered by [`admission`] with the facts it needs, logged in one
//! line and counted, all within `--request-timeout-seconds`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::admission::{self, Answer, Decision, Endpoint, ReviewError, Step};
use crate::cluster::FactsCache;
use crate::config::{Limits, ServeOptions};
use crate::facts::Facts;
use crate::metrics::{ErrorKind, Metrics};
use crate::mutate::MutateConfig;

/// Everything a request handler may read.
pub struct AppState {
    pub config: MutateConfig,
    /// Facts handed in at start (none in production); used when there are no cluster facts.
    pub facts: Facts,
    pub metrics: Metrics,
    cluster: OnceLock<Arc<FactsCache>>,
    limits: Limits,
    ready: AtomicBool,
}

impl AppState {
    pub fn new(config: MutateConfig, facts: Facts, limits: &Limits) -> Arc<Self> {
        Arc::new(AppState {
            config,
            facts,
            metrics: Metrics::new(),
            cluster: OnceLock::new(),
            limits: *limits,
            ready: AtomicBool::new(false),
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.set_ready(ready);
    }

    /// Ready once serving and, with cluster facts, once the API server has answered.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.cluster.get().is_none_or(|c| c.is_synced())
    }

    /// Look facts up in the cluster from now on.
    pub fn set_facts_cache(&self, cluster: Arc<FactsCache>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn facts_cache(&self) -> Option<&Arc<FactsCache>> {
        self.cluster.get()
    }
}

/// The routes, public so tests can drive them without a socket.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/mutate", review_route(Endpoint::Mutate))
        .route("/validate", review_route(Endpoint::Validate))
        .with_state(state)
}

fn review_route(endpoint: Endpoint) -> MethodRouter<Arc<AppState>> {
    post(move |State(app), body: Body| serve_review(app, endpoint, body))
}

/// The metrics routes (plain HTTP, their own port).
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, kind)], app.metrics.encode()).into_response()
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let ready = app.is_ready();
    app.metrics.set_ready(ready);
    match ready {
        true => (StatusCode::OK, "ok"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "not ready"),
    }
    .into_response()
}

fn client_error(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Answer a review request: read the body (at most `--max-body-bytes`, else 413), review it,
/// all within `--request-timeout-seconds` (else 408).
async fn serve_review(app: Arc<AppState>, endpoint: Endpoint, body: Body) -> Response {
    let answer = async {
        let body = match read_body(&app, body).await {
            Ok(b) => b,
            Err((status, message)) => return client_error(status, message),
        };
        let started = Instant::now();
        let result = review(&app, endpoint, &body).await;
        respond(&app, endpoint, started, result)
    };
    match tokio::time::timeout(app.limits.request_timeout, answer).await {
        Ok(res) => res,
        Err(_) => {
            app.metrics.error(ErrorKind::RequestTimeout);
            warn!(
                endpoint = endpoint.as_str(),
                status = 408,
                "review timed out"
            );
            StatusCode::REQUEST_TIMEOUT.into_response()
        }
    }
}

/// A review, answered at once or once the cluster facts it needs are known.
async fn review(app: &AppState, endpoint: Endpoint, body: &[u8]) -> Result<Answer, ReviewError> {
    let pending = match admission::start(body, endpoint, &app.config)? {
        Step::Answered(answer) => return Ok(answer),
        Step::Pending(pending) => pending,
    };
    let looked_up = match app.facts_cache() {
        Some(cluster) => Some(cluster.facts_for(pending.needs()).await),
        None => None,
    };
    Ok(pending.finish(&app.config, looked_up.as_ref().unwrap_or(&app.facts)))
}

/// The body, or the status and message that refuse it.
async fn read_body(app: &AppState, body: Body) -> Result<Bytes, (StatusCode, String)> {
    let err = match Limited::new(body, app.limits.max_body_bytes)
        .collect()
        .await
    {
        Ok(collected) => return Ok(collected.to_bytes()),
        Err(err) => err,
    };
    let (status, message) = if err.is::<LengthLimitError>() {
        app.metrics.error(ErrorKind::PayloadTooLarge);
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than the limit of {} bytes (--max-body-bytes)",
                app.limits.max_body_bytes
            ),
        )
    } else {
        app.metrics.error(ErrorKind::BadRequest);
        (
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {err}"),
        )
    };
    warn!(status = status.as_u16(), error = %message, "review rejected");
    Err((status, message))
}

/// One log line and the metrics for a review, then the response.
fn respond(
    app: &AppState,
    endpoint: Endpoint,
    started: Instant,
    result: Result<Answer, ReviewError>,
) -> Response {
    let endpoint = endpoint.as_str();
    match result {
        Ok((review, s)) => {
            let decision = s.decision.unwrap_or(Decision::Invalid);
            let component = s.component.map(|c| c.as_str()).unwrap_or("");
            let elapsed = started.elapsed();
            app.metrics.observe_review(
                component,
                decision.as_str(),
                s.patch_ops,
                elapsed.as_secs_f64(),
            );
            info!(
                endpoint,
                uid = %s.uid,
                namespace = %s.namespace,
                name = %s.name,
                operation = %s.operation,
                component,
                decision = decision.as_str(),
                reason = s.reason.as_str(),
                patch_ops = s.patch_ops,
                latency_us = elapsed.as_micros() as u64,
                "review"
            );
            axum::Json(review).into_response()
        }
        Err(err) => {
            let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            app.metrics.error(if status == StatusCode::BAD_REQUEST {
                ErrorKind::BadRequest
            } else {
                ErrorKind::Unprocessable
            });
            warn!(endpoint, status = status.as_u16(), error = %err, "review rejected");
            client_error(status, err.to_string())
        }
    }
}

/// A server-side TLS connection.
type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A plain-HTTP request on the TLS port gets a readable answer instead of a reset.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 56\r\n\r\nthis port speaks HTTPS only: use https:// to reach it.\r\n";

/// Shared by the accept loop and every connection task.
struct Shared {
    acceptor: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    state: Arc<AppState>,
    options: ServeOptions,
    permits: Arc<Semaphore>,
    /// true from the shutdown signal on.
    draining: watch::Receiver<bool>,
    /// true once the listener has closed: open connections finish and end.
    stopping: watch::Receiver<bool>,
}

/// Serve `app` over TLS on `listener` until `shutdown` resolves, drain, then stop.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    state: Arc<AppState>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.limits.handshake_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.max_concurrent_streams);
    let (draining_tx, draining) = watch::channel(false);
    let (stopping_tx, stopping) = watch::channel(false);
    let shared = Arc::new(Shared {
        acceptor: TlsAcceptor::from(tls),
        builder,
        app,
        state: state.clone(),
        options,
        permits: Arc::new(Semaphore::new(options.max_connections)),
        draining,
        stopping,
    });
    let tracker = TaskTracker::new();
    let addr = listener.local_addr()?;
    state.set_ready(true);
    info!(%addr, "serving HTTPS");

    accept_until(&listener, &shared, &tracker, shutdown).await;

    state.set_ready(false);
    let _ = draining_tx.send(true);
    if !options.drain_delay.is_zero() {
        info!(
            delay_ms = options.drain_delay.as_millis() as u64,
            "draining: unready, still serving"
        );
        accept_until(
            &listener,
            &shared,
            &tracker,
            tokio::time::sleep(options.drain_delay),
        )
        .await;
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    tracker.close();
    info!(
        open = tracker.len(),
        "listener closed; finishing open connections"
    );
    if tokio::time::timeout(options.limits.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            open = tracker.len(),
            "connections still open after the shutdown timeout; closing them"
        );
    }
    Ok(())
}

/// Accept connections, each served in its own task, until `until` resolves.
async fn accept_until(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    until: impl Future<Output = ()>,
) {
    tokio::pin!(until);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Boxed: the connection's future is several KiB (rustls and hyper state
                    // inline), which spawning would otherwise copy more than once.
                    tracker.spawn(Box::pin(shared.clone().connection(tcp, peer)));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut until => return,
        }
    }
}

impl Shared {
    async fn connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.state.metrics.error(ErrorKind::TooManyConnections);
            warn!(%peer, limit = self.options.max_connections, "too many connections: answering 503");
        }
        let Some(tls) = self.handshake(tcp, peer).await else {
            return;
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        self.state.metrics.connection_opened();
        self.serve_connection(tls, peer, h2, permit.is_some()).await;
        self.state.metrics.connection_closed();
        drop(permit);
    }

    /// From connect to the end of the TLS handshake, within `--handshake-timeout-seconds`: one
    /// deadline for the whole of it, one timer per connection. A connection that has sent
    /// nothing is dropped when the listener closes; one that has started its handshake finishes
    /// it and is served.
    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<TlsStream> {
        let deadline = tokio::time::sleep(self.options.limits.handshake_timeout);
        tokio::pin!(deadline);
        let mut stopping = self.stopping.clone();
        let first = tokio::select! {
            first = self.first_bytes(tcp, peer) => first?,
            _ = stopping.wait_for(|s| *s) => return None,
            () = &mut deadline => {
                return self.timed_out(peer, "no TLS handshake before the handshake timeout");
            }
        };
        tokio::select! {
            accepted = self.acceptor.accept(first) => match accepted {
                Ok(tls) => Some(tls),
                Err(err) => {
                    self.state.metrics.error(ErrorKind::TlsHandshake);
                    debug!(%peer, error = %err, "TLS handshake failed");
                    None
                }
            },
            () = &mut deadline => self.timed_out(peer, "TLS handshake timed out"),
        }
    }

    /// A connection whose handshake deadline passed: counted, logged, dropped.
    fn timed_out<T>(&self, peer: SocketAddr, what: &str) -> Option<T> {
        self.state.metrics.error(ErrorKind::HandshakeTimeout);
        debug!(%peer, "{what}");
        None
    }

    /// A connection whose first byte starts a TLS record goes on to rustls; plain HTTP gets a
    /// readable 400.
    async fn first_bytes(&self, tcp: TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        // Without TCP_NODELAY HTTP/2 responses stall on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(1) if first[0] == 0x16 => Some(tcp),
            Ok(1) if first[0].is_ascii_uppercase() => {
                let mut tcp = tcp;
                self.state.metrics.error(ErrorKind::PlainHttp);
                debug!(%peer, "plain HTTP on the TLS port");
                let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
                let _ = tcp.shutdown().await;
                None
            }
            _ => None,
        }
    }

    async fn serve_connection(
        self: &Arc<Self>,
        tls: TlsStream,
        peer: SocketAddr,
        h2: bool,
        admitted: bool,
    ) {
        // Flips to true when the first request arrives: a connection is told to go away only
        // after that, or a client's first request could meet a closed connection.
        let (first_tx, first_rx) = watch::channel(false);
        let service = {
            let shared = self.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                first_tx.send_if_modified(|seen| !std::mem::replace(seen, true));
                let shared = shared.clone();
                async move {
                    let http1 = req.version() < Version::HTTP_2;
                    let mut res = if admitted {
                        shared.app.clone().oneshot(req.map(Body::new)).await?
                    } else {
                        client_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too many connections to the webhook; retry".into(),
                        )
                    };
                    if http1 && (!admitted || *shared.draining.borrow()) {
                        res.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, std::convert::Infallible>(res)
                }
            })
        };
        let conn = self.builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        let grace = self.options.limits.handshake_timeout;
        // HTTP/2 is told (GOAWAY, sent twice by hyper so streams already opened are served) when
        // draining starts; HTTP/1 is told per response (`Connection: close`).
        let drain = {
            let (mut first, mut draining) = (first_rx.clone(), self.draining.clone());
            async move {
                let _ = first.wait_for(|f| *f).await;
                let _ = draining.wait_for(|d| *d).await;
            }
        };
        // Once the listener is closed every connection is told; one that never sent a request
        // gets the handshake timeout to do so.
        let stop = {
            let (mut first, mut stopping) = (first_rx, self.stopping.clone());
            async move {
                let _ = stopping.wait_for(|s| *s).await;
                let _ = tokio::time::timeout(grace, first.wait_for(|f| *f)).await;
            }
        };
        tokio::pin!(drain, stop);
        let mut told = false;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(err) = res {
                        debug!(%peer, error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = &mut drain, if h2 && !told => {
                    conn.as_mut().graceful_shutdown();
                    told = true;
                }
                () = &mut stop, if !told => {
                    conn.as_mut().graceful_shutdown();
                    told = true;
                }
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => s.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
    info!("shutdown signal received");
}
