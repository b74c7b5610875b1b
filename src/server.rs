//! The HTTPS server: a thin axum router over [`admission::review`], served by hyper-util's
//! auto (HTTP/1.1 + HTTP/2) builder over tokio-rustls.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

use crate::admission::{self, Decision};
use crate::config::Limits;
use crate::facts::Facts;
use crate::mutate::MutateConfig;

/// Everything a request handler may read.
pub struct AppState {
    pub config: MutateConfig,
    pub facts: Facts,
    pub max_body_bytes: usize,
    ready: AtomicBool,
}

impl AppState {
    pub fn new(config: MutateConfig, facts: Facts, limits: &Limits) -> Arc<Self> {
        Arc::new(AppState {
            config,
            facts,
            max_body_bytes: limits.max_body_bytes,
            ready: AtomicBool::new(false),
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The routes, public so tests can drive them without a socket.
pub fn router(state: Arc<AppState>, limits: &Limits) -> Router {
    let reviews = Router::new()
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(reviews)
        .with_state(state)
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.is_ready() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

fn client_error(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

async fn mutate(State(app): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "request body is larger than the limit of {} bytes (--max-body-bytes)",
                    app.max_body_bytes
                )
            } else {
                rejection.body_text()
            };
            warn!(status = status.as_u16(), error = %message, "review rejected");
            return client_error(status, message);
        }
    };
    match admission::review(&body, &app.config, &app.facts) {
        Ok((review, s)) => {
            let decision = s.decision.unwrap_or(Decision::Invalid);
            info!(
                uid = %s.uid,
                namespace = %s.namespace,
                name = %s.name,
                operation = %s.operation,
                component = s.component.map(|c| c.as_str()).unwrap_or(""),
                decision = decision.as_str(),
                reason = s.reason,
                patch_ops = s.patch_ops,
                latency_us = started.elapsed().as_micros() as u64,
                "review"
            );
            axum::Json(review).into_response()
        }
        Err(err) => {
            let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            warn!(status = status.as_u16(), error = %err, "review rejected");
            client_error(status, err.to_string())
        }
    }
}

/// A plain-HTTP request on the TLS port gets a readable answer instead of a reset.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 56\r\n\r\nthis port speaks HTTPS only: use https:// to reach it.\r\n";

/// Serve `app` over TLS on `listener` until `shutdown` resolves, then drain in-flight
/// connections for at most `limits.shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250)
        .keep_alive_interval(None);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    // Connections still in their TLS handshake are dropped at shutdown rather than waited for.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    state.set_ready(true);
    info!(addr = %listener.local_addr()?, "serving HTTPS");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %err, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let conn = Connection {
                    acceptor: acceptor.clone(),
                    builder: builder.clone(),
                    app: app.clone(),
                    watcher: graceful.watcher(),
                    stopping: stopping.clone(),
                    limits,
                };
                tokio::spawn(conn.run(tcp, peer));
            }
            () = &mut shutdown => break,
        }
    }
    state.set_ready(false);
    let _ = stopping_tx.send(true);
    drop(listener);
    info!("shutting down: draining connections");
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after the shutdown timeout; closing them");
    }
    Ok(())
}

struct Connection {
    acceptor: TlsAcceptor,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
    stopping: tokio::sync::watch::Receiver<bool>,
    limits: Limits,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream, peer: SocketAddr) {
        let mut stopping = self.stopping.clone();
        let tls = tokio::select! {
            tls = self.handshake(tcp, peer) => tls,
            _ = stopping.wait_for(|s| *s) => None,
        };
        let Some(tls) = tls else { return };
        let service = TowerToHyperService::new(self.app);
        let conn = self.builder.serve_connection(TokioIo::new(tls), service);
        if let Err(err) = self.watcher.watch(conn.into_owned()).await {
            debug!(%peer, error = %err, "connection ended with an error");
        }
    }

    /// Plain-HTTP detection and the TLS handshake, under the handshake timeout.
    async fn handshake(
        &mut self,
        mut tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        // Without TCP_NODELAY HTTP/2 responses stall on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let deadline = self.limits.handshake_timeout;
        let mut first = [0u8; 1];
        match tokio::time::timeout(deadline, tcp.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] != 0x16 => {
                if first[0].is_ascii_uppercase() {
                    debug!(%peer, "plain HTTP on the TLS port");
                    let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
                    let _ = tcp.shutdown().await;
                }
                return None;
            }
            Ok(Ok(1)) => {}
            _ => return None,
        }
        match tokio::time::timeout(deadline, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(err)) => {
                debug!(%peer, error = %err, "TLS handshake failed");
                None
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out");
                None
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    info!("shutdown signal received");
}
