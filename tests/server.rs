//! The HTTPS server on 127.0.0.1:0, driven by a real TLS client (reqwest over rustls).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::Duration;

use base64::Engine as _;
use harbor_iam_webhook::config::Limits;
use harbor_iam_webhook::facts::Facts;
use harbor_iam_webhook::{server, tls};
use reqwest::{StatusCode, Version};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static PROVIDER: Once = Once::new();

fn install_provider() {
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

struct TestServer {
    addr: SocketAddr,
    ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(limits: Limits) -> Self {
        start_with_limits(limits).await.0
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    fn client(&self, alpn: &[&[u8]]) -> reqwest::Client {
        client_for(&self.ca_pem, self.addr, alpn)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn client_for(ca_pem: &str, addr: SocketAddr, alpn: &[&[u8]]) -> reqwest::Client {
    common::tls_client(ca_pem, addr, alpn, true)
}

const H2: &[&[u8]] = &[b"h2"];
const H1: &[&[u8]] = &[b"http/1.1"];

fn review(object: &Value, uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": object["metadata"]["namespace"].as_str().unwrap_or("harbor"),
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

fn apply_response(pod: &Value, response: &Value) -> Value {
    let mut out = pod.clone();
    if let Some(p) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    out
}

#[tokio::test]
async fn every_fixture_over_http1_and_http2() {
    let srv = TestServer::start(Limits::default()).await;
    let exp = common::expectations();
    for (alpn, version) in [(H2, Version::HTTP_2), (H1, Version::HTTP_11)] {
        let client = srv.client(alpn);
        for (file, expectation) in &exp.pods {
            let pod = common::read_object(&common::fixtures().join("pods").join(file));
            let uid = format!("uid-{file}");
            let res = client
                .post(srv.url("/mutate"))
                .json(&review(&pod, &uid))
                .send()
                .await
                .unwrap();
            assert_eq!(res.version(), version);
            assert_eq!(res.status(), StatusCode::OK, "{file}");
            assert_eq!(res.headers()["content-type"], "application/json", "{file}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(body["kind"], "AdmissionReview");
            let response = &body["response"];
            assert_eq!(response["uid"], uid.as_str());
            assert_eq!(response["allowed"], true, "{file}");
            let mutated = apply_response(&pod, response);
            // The server's answer is the engine's answer (the golden pod).
            let golden = {
                let eval = harbor_iam_webhook::admission::evaluate(
                    &pod.to_string(),
                    Some("harbor"),
                    &common::config(),
                    &Facts::default(),
                );
                let mut p = pod.clone();
                json_patch::patch(&mut p, &eval.patch).unwrap();
                p
            };
            assert_eq!(mutated, golden, "{file}");
            if expectation.mutated {
                common::check_pod(&mutated, expectation);
                common::assert_no_static_password(&mutated);
                assert_eq!(response["auditAnnotations"]["decision"], "mutated");
            } else {
                assert!(response.get("patch").is_none(), "{file}");
            }
        }
    }
    srv.stop().await;
}

/// The router alone (no socket) answers a review as [`server::serve`], which answers reviews
/// without going through it, does: the same bytes, the same refusals.
#[tokio::test]
async fn the_router_alone_answers_reviews_as_the_server_does() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Default::default()
    };
    let srv = TestServer::start(limits).await;
    let client = srv.client(H1);
    let state = server::AppState::new(common::config(), Facts::default(), &limits);
    let core = common::read_object(&common::fixtures().join("pods/harbor-helm-1.16-core.yaml"));
    let mut big = review(&core, "big");
    big["request"]["object"]["metadata"]["annotations"]["padding"] =
        Value::String("x".repeat(100 * 1024));
    let cases = [
        (
            "/mutate",
            serde_json::to_vec(&review(&core, "core")).unwrap(),
        ),
        (
            "/validate",
            serde_json::to_vec(&review(&core, "core")).unwrap(),
        ),
        ("/mutate", b"{not json".to_vec()),
        ("/mutate", serde_json::to_vec(&big).unwrap()),
    ];
    for (path, body) in cases {
        let served = client
            .post(srv.url(path))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (status, bytes) = (served.status(), served.bytes().await.unwrap());
        let routed = server::router(state.clone())
            .oneshot(
                axum::http::Request::post(path)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(routed.status().as_u16(), status.as_u16(), "{path}");
        let routed = routed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(routed, bytes, "{path}: {}", String::from_utf8_lossy(&bytes));
    }
    srv.stop().await;
}

async fn post_raw(client: &reqwest::Client, url: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn bad_inputs_get_clear_answers_and_the_server_keeps_serving() {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let srv = TestServer::start(limits).await;
    let client = srv.client(H2);
    let url = srv.url("/mutate");
    let core = common::read_object(&common::fixtures().join("pods/harbor-helm-1.16-core.yaml"));

    let (status, body) = post_raw(&client, &url, b"{not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );

    let (status, body) = post_raw(&client, &url, serde_json::to_vec(&core).unwrap()).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a Pod is not a review"
    );
    assert!(
        body["error"].as_str().unwrap().contains("AdmissionReview"),
        "{body}"
    );

    let (status, body) = post_raw(
        &client,
        &url,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no request")
    );

    // Not a pod: allowed unchanged.
    let mut r = review(
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        "cm",
    );
    r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    let (status, body) = post_raw(&client, &url, serde_json::to_vec(&r).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());

    // A Pod review whose object is something else entirely: not Harbor, allowed.
    let r = review(&json!({"kind": "ConfigMap", "data": {"a": "b"}}), "odd");
    let (_, body) = post_raw(&client, &url, serde_json::to_vec(&r).unwrap()).await;
    assert_eq!(body["response"]["allowed"], true);

    // An invalid non-Harbor pod is not ours to reject.
    let r = review(
        &json!({"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"containers": 7}}),
        "bad",
    );
    let (_, body) = post_raw(&client, &url, serde_json::to_vec(&r).unwrap()).await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());

    // Oversized body: 413 with the limit named.
    let mut big = review(&core, "big");
    big["request"]["object"]["metadata"]["annotations"]["padding"] =
        Value::String("x".repeat(100 * 1024));
    let (status, body) = post_raw(&client, &url, serde_json::to_vec(&big).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].as_str().unwrap().contains("65536"), "{body}");

    // Wrong method and path.
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        client.post(srv.url("/nope")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // Plain HTTP on the TLS port gets a readable 400.
    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tcp.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("HTTPS"), "{answer}");

    // A client that connects and says nothing is dropped after the handshake timeout without
    // blocking anyone else (checked by the requests below succeeding meanwhile).
    let _idle = tokio::net::TcpStream::connect(srv.addr).await.unwrap();

    // Still serving, same client and a new one.
    let res = client
        .post(&url)
        .json(&review(&core, "after"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["response"]["uid"], "after");
    let fresh = srv.client(H1);
    assert_eq!(
        fresh
            .get(srv.url("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(
        fresh.get(srv.url("/readyz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    srv.stop().await;
}

#[tokio::test]
async fn untrusted_clients_fail_the_handshake() {
    let srv = TestServer::start(Limits::default()).await;
    let other = tls::dev_certificate(&["localhost"]).unwrap();
    let stranger = client_for(&other.ca_pem, srv.addr, H2);
    assert!(stranger.get(srv.url("/healthz")).send().await.is_err());
    assert!(
        srv.client(H2)
            .get(srv.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    srv.stop().await;
}

// --- The real binary, as a user runs it.

use common::free_port;

#[test]
fn binary_refuses_to_start_without_a_region() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harbor-iam-webhook"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--cluster-facts",
            "off",
        ])
        .env_remove("AWS_REGION")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no AWS region"), "{stderr}");
    assert!(stderr.contains("--aws-region"), "{stderr}");
}

#[tokio::test]
async fn binary_serves_with_a_dev_certificate_and_never_logs_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log.txt");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut webhook = common::Webhook::start(
        &["--log-format", "json", "--drain-delay-seconds", "0"],
        &[("HARBOR_IAM_WEBHOOK_LOG", "trace")],
        log.into(),
    )
    .await;
    let (client, port) = (webhook.client(H2, true), webhook.port);
    const PLANTED: &str = "Planted-S3cret-Value-7f3a";
    let mut pod = common::read_object(
        &common::fixtures().join("pods/harbor-helm-1.16-core-existing-secret.yaml"),
    );
    pod["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "POSTGRESQL_PASSWORD", "value": PLANTED}));
    let res = client
        .post(format!("https://localhost:{port}/mutate"))
        .json(&review(&pod, "planted"))
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    assert!(!text.contains(PLANTED));
    let body: Value = serde_json::from_str(&text).unwrap();
    let mutated = apply_response(&pod, &body["response"]);
    common::assert_no_static_password(&mutated);
    // A URL with the password: denied, and the message does not repeat it.
    pod["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "POSTGRESQL_URL", "value": format!("postgres://harbor:{PLANTED}@db/registry")}));
    let res = client
        .post(format!("https://localhost:{port}/mutate"))
        .json(&review(&pod, "url"))
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    assert!(text.contains("\"allowed\":false"), "{text}");
    assert!(!text.contains(PLANTED));

    // One JSON log line per review, with the fields an operator needs and no value. Review
    // lines are written in batches; a stopping webhook writes what is left.
    assert!(webhook.stop().success());
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(!logs.contains(PLANTED), "secret value in the logs");
    let reviews: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "review")
        .collect();
    assert_eq!(reviews.len(), 2, "{logs}");
    assert_eq!(reviews[0]["uid"], "planted");
    assert_eq!(reviews[0]["decision"], "mutated");
    assert_eq!(reviews[0]["component"], "core");
    assert_eq!(reviews[0]["namespace"], "harbor");
    assert_eq!(reviews[0]["name"], "harbor-core-fsldgj44tj-");
    assert!(reviews[0]["patch_ops"].as_u64().unwrap() > 0);
    assert!(reviews[0]["latency_us"].is_u64());
    assert_eq!(reviews[1]["decision"], "denied");
}

/// In a pod stderr is a pipe to the log collector: plain text there, no colour codes.
/// POST a review of the Harbor core fixture pod to the running binary over HTTP/2.
async fn review_core_pod(webhook: &common::Webhook, uid: &str) -> StatusCode {
    let core = common::read_object(&common::fixtures().join("pods/harbor-helm-1.16-core.yaml"));
    webhook
        .client(H2, true)
        .post(format!("https://localhost:{}/mutate", webhook.port))
        .json(&review(&core, uid))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn text_logs_to_a_file_carry_no_escape_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log.txt");
    let log = std::fs::File::create(&log_path).unwrap();
    let webhook = common::Webhook::start(&[], &[], log.into()).await;
    assert_eq!(review_core_pod(&webhook, "plain").await, StatusCode::OK);
    // Written by the batch timer while the webhook runs on, idle (see `telemetry`).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (logs, line) = loop {
        let logs = std::fs::read_to_string(&log_path).unwrap();
        let line = logs
            .lines()
            .find(|l| l.contains(" review ") && l.contains("uid=plain"))
            .map(str::to_owned);
        match line {
            Some(line) => break (logs, line),
            None if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            None => panic!("no review line within 5 s in {logs}"),
        }
    };
    assert!(!logs.contains('\u{1b}'), "escape sequences in {logs:?}");
    assert!(line.contains("decision=\"mutated\""), "{line}");
}

// --- Limits: each answers with the right status.

/// [`start_with`] the default options but `limits`.
async fn start_with_limits(limits: Limits) -> (TestServer, Arc<server::AppState>) {
    start_with(harbor_iam_webhook::config::ServeOptions {
        limits,
        ..Default::default()
    })
    .await
}

async fn start_with(
    options: harbor_iam_webhook::config::ServeOptions,
) -> (TestServer, Arc<server::AppState>) {
    install_provider();
    let dev = tls::dev_certificate(&["localhost", "127.0.0.1"]).unwrap();
    let tls_config = tls::server_config(tls::CertResolver::new(
        dev.identity.certified_key().unwrap(),
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server::AppState::new(common::config(), Facts::default(), &options.limits);
    let app = server::router(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let task = tokio::spawn(async move {
        server::serve(listener, tls_config, app, st, options, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (
        TestServer {
            addr,
            ca_pem: dev.ca_pem,
            stop: Some(tx),
            task,
        },
        state,
    )
}

async fn tls_stream(srv: &TestServer) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tls_over(srv, tcp).await.unwrap()
}

/// A TLS client (HTTP/1.1 by ALPN) over `io`, trusting the server's certificate.
async fn tls_over<IO>(
    srv: &TestServer,
    io: IO,
) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(srv.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            io,
        )
        .await
}

#[tokio::test]
async fn too_many_connections_get_503() {
    let options = harbor_iam_webhook::config::ServeOptions {
        max_connections: 1,
        ..Default::default()
    };
    let (srv, state) = start_with(options).await;
    let first = srv.client(H1);
    assert_eq!(
        first
            .get(srv.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // The first client keeps its connection (keep-alive): a second connection is over the limit.
    let second = srv.client(H1);
    let res = second.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["connection"], "close");
    assert!(res.text().await.unwrap().contains("too many connections"));
    assert_eq!(
        first
            .get(srv.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(
        state
            .metrics
            .encode()
            .contains("harbor_iam_webhook_errors_total{kind=\"too_many_connections\"} 1")
    );
    drop(first);
    srv.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (srv, state) = start_with_limits(limits).await;

    // Headers that never end: the connection is closed after the header read timeout.
    let mut slow = tls_stream(&srv).await;
    slow.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "slow headers were not cut off");

    // A body that never arrives: 408.
    let mut slow = tls_stream(&srv).await;
    slow.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");

    // Meanwhile everyone else is served.
    assert_eq!(
        srv.client(H2)
            .get(srv.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(
        state
            .metrics
            .encode()
            .contains("harbor_iam_webhook_errors_total{kind=\"request_timeout\"} 1")
    );
    srv.stop().await;
}

/// A TCP stream whose first write sends one byte, then waits `pause` before the rest: the
/// server sees a ClientHello arrive in two reads.
struct HesitantStart {
    tcp: tokio::net::TcpStream,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    started: bool,
}

impl tokio::io::AsyncRead for HesitantStart {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for HesitantStart {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if !this.started {
            this.started = true;
            this.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
            return std::pin::Pin::new(&mut this.tcp).poll_write(cx, &buf[..1]);
        }
        if let Some(pause) = &mut this.pause {
            std::task::ready!(pause.as_mut().poll(cx));
            this.pause = None;
        }
        std::pin::Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn handshakes_are_bounded_from_connect_and_may_arrive_in_pieces() {
    let limits = Limits {
        handshake_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (srv, state) = start_with_limits(limits).await;
    let timeouts = || {
        let text = state.metrics.encode();
        let line = "harbor_iam_webhook_errors_total{kind=\"handshake_timeout\"} ";
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };

    // A ClientHello whose first byte comes alone: the server reads that byte itself and rustls
    // must still see the whole record.
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut tls = tls_over(
        &srv,
        HesitantStart {
            tcp,
            pause: None,
            started: false,
        },
    )
    .await
    .expect("a ClientHello in two pieces completes the handshake");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(timeouts(), 0);

    // Silent, and stalled after a TLS record header sent late: both are closed once the
    // handshake timeout has passed since connect (not since the first byte), and counted.
    let connected = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    for (what, tcp) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a {what} connection was left open");
    }
    let elapsed = connected.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(1500),
        "closed {elapsed:?} after connect, with a handshake timeout of 1 s"
    );
    assert_eq!(timeouts(), 2);
    srv.stop().await;
}

#[tokio::test]
async fn binary_serves_metrics_on_their_own_port() {
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let webhook = common::Webhook::start(
        &["--metrics-listen", &metrics],
        &[],
        std::process::Stdio::null(),
    )
    .await;
    assert_eq!(review_core_pod(&webhook, "m").await, StatusCode::OK);
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "harbor_iam_webhook_admission_reviews_total{component=\"core\",outcome=\"mutated\"} 1",
        "harbor_iam_webhook_admission_review_duration_seconds_count 1",
        "harbor_iam_webhook_ready 1",
        "harbor_iam_webhook_certificate_expiry_timestamp_seconds ",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Reviews are never served on the plain port.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{metrics_port}/mutate"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::NOT_FOUND);
}
