//! Reliability under load: certificate rotation without a failed request, and SIGTERM
//! without losing an accepted request.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harbor_iam_webhook::config::Limits;
use harbor_iam_webhook::facts::Facts;
use harbor_iam_webhook::{server, tls};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use common::install_crypto_provider as install_provider;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        issuer: Issuer::new(params, key),
        pem: cert.pem(),
    }
}

/// A serving certificate for localhost signed by `ca`: (cert PEM, key PEM, cert DER).
fn leaf(ca: &Ca) -> (String, String, Vec<u8>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Lay out certificate files the way the kubelet projects a Secret: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<version>`, and a new version swapped in by renaming the `..data` symlink.
fn project_secret(dir: &Path, version: &str, cert: &str, key: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), cert).unwrap();
    std::fs::write(data.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if !dir.join(f).exists() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

fn client(ca_pem: &str, addr: SocketAddr, alpn: &[u8], reuse: bool) -> reqwest::Client {
    common::tls_client(ca_pem, addr, &[alpn], reuse)
}

/// The certificate a fresh TLS handshake is shown.
async fn presented_certificate(ca_pem: &str, addr: SocketAddr) -> Vec<u8> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn review(uid: String) -> Value {
    let pod = common::read_object(&common::fixtures().join("pods/harbor-helm-1.16-core.yaml"));
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "harbor", "operation": "CREATE", "object": pod}
    })
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    refused: AtomicUsize,
    lost: AtomicUsize,
}

/// One load worker: reviews in a loop until `stop`; every answer must be a correct review.
async fn load(
    client: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    refusals_end_it: bool,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let uid = format!("{url}-{n}-{:?}", std::thread::current().id());
        match client.post(&url).json(&review(uid.clone())).send().await {
            Ok(res) => {
                let status = res.status();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                if status.is_success()
                    && body["response"]["uid"] == uid.as_str()
                    && body["response"]["patch"].is_string()
                {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("bad answer: {status} {body}");
                    tally.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.is_connect() => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                if refusals_end_it {
                    return;
                }
            }
            Err(e) => {
                eprintln!("request failed: {e:?}");
                tally.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() {
    install_provider();
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert1, key1, der1) = leaf(&ca);
    let (cert2, key2, der2) = leaf(&ca);
    project_secret(dir.path(), "v1", &cert1, &key1);

    let mut files = tls::CertFiles::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let resolver = tls::CertResolver::new(files.load().unwrap());
    let reloads = Arc::new(AtomicUsize::new(0));
    let counter = reloads.clone();
    tokio::spawn(tls::watch_files(
        files,
        resolver.clone(),
        Duration::from_millis(50),
        move |r| {
            assert!(matches!(r, tls::Reload::Reloaded(_)), "{r:?}");
            counter.fetch_add(1, Ordering::SeqCst);
        },
    ));
    let limits = Limits::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server::AppState::new(common::config(), Facts::default(), &limits);
    let app = server::router(state.clone());
    let tls_config = tls::server_config(resolver).unwrap();
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        tls_config,
        app,
        state,
        harbor_iam_webhook::config::ServeOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    assert_eq!(presented_certificate(&ca.pem, addr).await, der1);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let url = format!("https://localhost:{}/mutate", addr.port());
    let mut workers = Vec::new();
    for (alpn, reuse) in [
        (&b"h2"[..], true),
        (b"http/1.1", true),
        (b"h2", false),
        (b"http/1.1", false),
    ] {
        let c = client(&ca.pem, addr, alpn, reuse);
        workers.push(tokio::spawn(load(
            c,
            url.clone(),
            stop.clone(),
            tally.clone(),
            false,
        )));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    project_secret(dir.path(), "v2", &cert2, &key2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the rotation was not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        presented_certificate(&ca.pem, addr).await,
        der2,
        "new handshakes present the new certificate"
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, lost) = (
        tally.ok.load(Ordering::Relaxed),
        tally.lost.load(Ordering::Relaxed),
    );
    eprintln!("rotation under load: {ok} reviews answered, {lost} failed");
    assert_eq!(lost, 0);
    assert_eq!(tally.refused.load(Ordering::Relaxed), 0);
    assert!(ok > 20, "too little load to mean anything: {ok}");
    assert_eq!(reloads.load(Ordering::SeqCst), 1);
    let _ = stop_server.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_accepted_request() {
    let mut webhook = common::Webhook::start(
        &[
            "--drain-delay-seconds",
            "1",
            "--shutdown-timeout-seconds",
            "5",
        ],
        &[],
        std::process::Stdio::null(),
    )
    .await;
    let (port, addr, ca_pem) = (webhook.port, webhook.addr(), webhook.ca_pem.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let url = format!("https://localhost:{port}/mutate");
    let mut workers = Vec::new();
    for (alpn, reuse) in [
        (&b"h2"[..], true),
        (b"http/1.1", true),
        (b"h2", false),
        (b"http/1.1", false),
    ] {
        for _ in 0..2 {
            let c = client(&ca_pem, addr, alpn, reuse);
            workers.push(tokio::spawn(load(
                c,
                url.clone(),
                stop.clone(),
                tally.clone(),
                true,
            )));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = tally.ok.load(Ordering::Relaxed);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &webhook.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // Draining: unready, but still answering.
    let probe = client(&ca_pem, addr, b"http/1.1", false);
    let readyz = probe
        .get(format!("https://localhost:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);

    let exit_deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = webhook.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < exit_deadline,
            "did not exit within drain + shutdown timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    for w in workers {
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .unwrap()
            .unwrap();
    }
    let (ok, lost, refused) = (
        tally.ok.load(Ordering::Relaxed),
        tally.lost.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    );
    eprintln!(
        "SIGTERM under load: {ok} answered ({} after the signal), {lost} lost, {refused} refused after close",
        ok - before
    );
    assert_eq!(lost, 0, "accepted requests were lost");
    assert!(ok > before, "nothing was served during the drain");
    assert!(refused > 0, "the listener never closed");
}
