//! Shared by the integration tests: fixtures, hand-written expectations, checks.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use harbor_iam_webhook::facts::Facts;
use harbor_iam_webhook::mutate::MutateConfig;
use serde::Deserialize;
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The one object of a fixture file (header comments and `---` allowed).
pub fn read_object(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("fixture is YAML"))
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(docs.len(), 1, "{}: one object per fixture", path.display());
    docs.into_iter().next().unwrap()
}

pub fn config() -> MutateConfig {
    MutateConfig::new("eu-west-1")
}

pub fn facts(names: &[String]) -> Facts {
    Facts::with_config_maps(names.iter().map(|n| {
        serde_json::from_value(read_object(&fixtures().join("configmaps").join(n)))
            .expect("ConfigMap fixture")
    }))
}

#[derive(Debug, Deserialize)]
pub struct Expectations {
    pub pods: BTreeMap<String, PodExpectation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodExpectation {
    pub mutated: bool,
    #[serde(default)]
    pub service_account_name: Option<String>,
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerExpectation>,
    #[serde(default)]
    pub init_containers: BTreeMap<String, ContainerExpectation>,
    #[serde(default)]
    pub with_facts: Option<WithFacts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithFacts {
    pub facts: Vec<String>,
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerExpectation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerExpectation {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub blank: Vec<String>,
    #[serde(default)]
    pub absent: Vec<String>,
}

pub fn expectations() -> Expectations {
    let text = std::fs::read_to_string(fixtures().join("expectations.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("expectations.yaml parses")
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} entry named {name}"))
}

fn entries<'a>(c: &'a Value, name: &str) -> Vec<&'a Value> {
    c["env"]
        .as_array()
        .map(|e| e.iter().filter(|e| e["name"] == name).collect())
        .unwrap_or_default()
}

pub fn is_blank(entry: &Value) -> bool {
    entry.get("valueFrom").is_none()
        && entry
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
}

/// Check one container of a mutated pod (raw JSON, as the API server would hold it).
pub fn check_container(pod: &Value, list: &str, name: &str, exp: &ContainerExpectation) {
    let c = container(pod, list, name);
    for (k, v) in &exp.env {
        let found = entries(c, k);
        assert_eq!(
            found.len(),
            1,
            "{name}: {k} must appear once, found {found:?}"
        );
        assert!(
            found[0].get("valueFrom").is_none(),
            "{name}: {k} must be literal"
        );
        assert_eq!(found[0]["value"].as_str(), Some(v.as_str()), "{name}: {k}");
    }
    for k in &exp.blank {
        let found = entries(c, k);
        assert!(!found.is_empty(), "{name}: {k} must be present and blank");
        assert!(
            found.iter().all(|e| is_blank(e)),
            "{name}: {k} must be blank: {found:?}"
        );
    }
    for k in &exp.absent {
        assert!(entries(c, k).is_empty(), "{name}: {k} must be absent");
    }
}

pub fn check_pod(pod: &Value, exp: &PodExpectation) {
    if let Some(sa) = &exp.service_account_name {
        assert_eq!(
            pod["spec"]["serviceAccountName"].as_str(),
            Some(sa.as_str())
        );
    }
    if exp.mutated {
        assert_eq!(
            pod["metadata"]["annotations"]["harbor-iam-webhook/status"],
            "injected"
        );
    }
    for (name, c) in &exp.containers {
        check_container(pod, "containers", name, c);
    }
    for (name, c) in &exp.init_containers {
        check_container(pod, "initContainers", name, c);
    }
}

pub const PASSWORD_ENVS: &[&str] = &[
    "POSTGRESQL_PASSWORD",
    "HARBOR_DATABASE_PASSWORD",
    "PGPASSWORD",
];

/// The invariant behind the product: no container of a DB pod receives a password.
pub fn assert_no_static_password(pod: &Value) {
    for list in ["containers", "initContainers"] {
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                let name = e["name"].as_str().unwrap_or("");
                if PASSWORD_ENVS.contains(&name) {
                    assert!(
                        is_blank(e),
                        "container {}: {name} still set: {e}",
                        c["name"]
                    );
                }
            }
            let has_secret_from = c["envFrom"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s.get("secretRef").is_some());
            if has_secret_from {
                let blanked = c["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["name"] == "POSTGRESQL_PASSWORD");
                assert!(
                    blanked,
                    "container {}: envFrom secret without an explicit blank POSTGRESQL_PASSWORD",
                    c["name"]
                );
            }
        }
    }
}

/// What the API server stores: `value: ""` is dropped (omitempty).
pub fn normalise_like_api_server(pod: &mut Value) {
    for list in ["containers", "initContainers"] {
        if let Some(cs) = pod["spec"][list].as_array_mut() {
            for c in cs {
                if let Some(env) = c["env"].as_array_mut() {
                    for e in env {
                        if e["value"] == "" {
                            e.as_object_mut().unwrap().remove("value");
                        }
                    }
                }
            }
        }
    }
}

// --- The webhook binary and TLS clients, for the server and lifecycle tests.

pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client over rustls that trusts only `ca_pem`, reaching `localhost` at `addr`,
/// offering `alpn`; `reuse: false` makes every request a new TLS connection.
pub fn tls_client(
    ca_pem: &str,
    addr: std::net::SocketAddr,
    alpn: &[&[u8]],
    reuse: bool,
) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .resolve("localhost", addr)
        .timeout(std::time::Duration::from_secs(10));
    if !reuse {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `harbor-iam-webhook serve` on a free loopback port with a generated development certificate
/// (cluster facts and metrics off unless `args` name them), ready when `start` returns; killed
/// when dropped.
pub struct Webhook {
    pub child: std::process::Child,
    pub port: u16,
    pub ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Webhook {
    pub async fn start(args: &[&str], envs: &[(&str, &str)], stderr: std::process::Stdio) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        let port = free_port();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_harbor-iam-webhook"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
        for (flag, value) in [("--metrics-listen", "off"), ("--cluster-facts", "off")] {
            if !args.contains(&flag) {
                cmd.args([flag, value]);
            }
        }
        cmd.args(args)
            .env("AWS_REGION", "eu-west-1")
            .env("HARBOR_IAM_WEBHOOK_DEV_CA_OUT", &ca_path)
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        let mut webhook = Webhook {
            child: cmd.spawn().unwrap(),
            port,
            ca_pem: String::new(),
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let pem = std::fs::read_to_string(&ca_path).unwrap_or_default();
            if pem.contains("END CERTIFICATE") {
                let probe = tls_client(&pem, webhook.addr(), &[b"h2"], false);
                let ready = probe.get(webhook.url("/readyz")).send().await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    webhook.ca_pem = pem;
                    return webhook;
                }
            }
            assert!(
                webhook.child.try_wait().unwrap().is_none(),
                "the webhook exited before it was ready"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "webhook not ready in time"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn client(&self, alpn: &[&[u8]], reuse: bool) -> reqwest::Client {
        tls_client(&self.ca_pem, self.addr(), alpn, reuse)
    }
}

impl Webhook {
    /// Stop it as Kubernetes does, with SIGTERM, and wait for the exit: the last log lines
    /// are written then (a killed webhook loses the batch not yet written).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(signalled.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a Go program of the repository's tool modules (`tests/e2e/tools/<module>`, package
/// `package`) with `input` as JSON on stdin, and read its JSON answer: the differential tests'
/// reference implementations (the kubelet's expansion, pgx). Needs `go` and the Go module proxy
/// or a warm module cache, as the end-to-end suite does.
pub fn go_run(module: &str, package: &str, input: &impl serde::Serialize) -> Vec<Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/tools")
        .join(module);
    let mut child = Command::new("go")
        .args(["run", package])
        .current_dir(&dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly -buildvcs=false")
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("`go` runs (the differential tests need Go, as the end-to-end suite does)");
    let input = serde_json::to_vec(input).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "go run {package} in {} failed",
        dir.display()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
