//! Command line and environment, turned once into validated configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::consts;
use crate::mutate::{
    Component, IdentityMode, MutateConfig, OnMissingRole, Selector, is_valid_region,
};

#[derive(Debug, Parser)]
#[command(
    name = "harbor-iam-webhook",
    version,
    about = "Switches Harbor pods to AWS RDS IAM database authentication at admission time"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTPS admission webhook.
    Serve(ServeArgs),
    /// Print the mutation of a Pod or AdmissionReview file, as the server would do it.
    Mutate(MutateArgs),
    /// List Harbor DB pods in opted-in namespaces that were not injected or still carry a
    /// static secret (exit 1 when there are any).
    Audit(AuditArgs),
    /// Check an install end to end: webhook configuration, endpoints, certificate, namespace,
    /// ServiceAccount, a server-side dry run of every Harbor workload, pods, Secrets
    /// (read-only; exit 1 when a check fails, 2 when it could not run).
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Harbor's namespace.
    #[arg(short = 'n', long = "namespace", default_value = "harbor")]
    pub namespace: String,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = AuditOutput::Text)]
    pub output: AuditOutput,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Namespaces to audit (default: every namespace labelled harbor-iam-webhook/inject=enabled); repeatable.
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = AuditOutput::Text)]
    pub output: AuditOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditOutput {
    Text,
    Json,
}

/// How the engine mutates: shared by `serve` and `mutate`.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// AWS region of the RDS instance (a pod annotation harbor-iam-webhook/aws-region overrides it).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// IRSA ServiceAccount that DB components run as.
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_SERVICE_ACCOUNT", default_value = consts::DEFAULT_SERVICE_ACCOUNT)]
    pub service_account: String,
    /// Per-component ServiceAccount, COMPONENT=NAME (core, jobservice, exporter, migrator); repeatable.
    #[arg(long = "component-service-account", env = "HARBOR_IAM_WEBHOOK_COMPONENT_SERVICE_ACCOUNTS",
          value_delimiter = ',', value_parser = parse_component_account, value_name = "COMPONENT=NAME")]
    pub component_service_accounts: Vec<(Component, String)>,
    /// Leave pods alone whose images are not known to support IAM auth, instead of warning.
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_STRICT_IMAGES")]
    pub strict_images: bool,
    /// Image patterns (`*` wildcard) known to support RDS IAM auth; repeatable.
    #[arg(long = "iam-capable-image", env = "HARBOR_IAM_WEBHOOK_IAM_CAPABLE_IMAGES", value_delimiter = ',',
          default_values_t = consts::DEFAULT_IAM_CAPABLE_IMAGES.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
          value_name = "PATTERN")]
    pub iam_capable_images: Vec<String>,
    /// Labels of which any one marks a pod as Harbor, KEY=VALUE; repeatable.
    #[arg(long = "harbor-label", env = "HARBOR_IAM_WEBHOOK_HARBOR_LABELS", value_delimiter = ',',
          value_parser = parse_label,
          default_values_t = consts::DEFAULT_HARBOR_LABELS.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
          value_name = "KEY=VALUE")]
    pub harbor_labels: Vec<String>,
    /// Label keys naming the component, first match wins; repeatable.
    #[arg(long = "component-label", env = "HARBOR_IAM_WEBHOOK_COMPONENT_LABELS", value_delimiter = ',',
          default_values_t = consts::DEFAULT_COMPONENT_LABELS.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
          value_name = "KEY")]
    pub component_labels: Vec<String>,
    /// Where pods get AWS credentials: irsa (ServiceAccount role annotation) or pod-identity (EKS Pod Identity).
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_IDENTITY_MODE", value_enum, default_value_t = IdentityModeArg::Irsa)]
    pub identity_mode: IdentityModeArg,
    /// IRSA ServiceAccount missing or without eks.amazonaws.com/role-arn: deny the pod, or warn.
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_ON_MISSING_ROLE", value_enum, default_value_t = OnMissingRoleArg::Deny)]
    pub on_missing_role: OnMissingRoleArg,
    /// Replace a pod's own ServiceAccount even when it already has a role.
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_FORCE_SERVICE_ACCOUNT")]
    pub force_service_account: bool,
    /// Inject what amazon-eks-pod-identity-webhook would (token volume, AWS_ROLE_ARN, ...), irsa mode.
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_INJECT_WEB_IDENTITY", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub inject_web_identity: bool,
    /// Add AWS_STS_REGIONAL_ENDPOINTS=regional (a ServiceAccount annotation overrides).
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_STS_REGIONAL_ENDPOINTS")]
    pub sts_regional_endpoints: bool,
    /// Default lifetime of the projected web-identity token (raised to 600 when lower, as the EKS webhook does).
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_TOKEN_EXPIRATION_SECONDS",
        default_value_t = 86400
    )]
    pub token_expiration_seconds: i64,
    /// Also switch the registry pod to IRSA and blank its static S3 keys (registry builds on distribution v3 only).
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_REGISTRY_S3_IRSA")]
    pub registry_s3_irsa: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdentityModeArg {
    Irsa,
    PodIdentity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnMissingRoleArg {
    Deny,
    Warn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FactsMode {
    /// On when running in a cluster or when a kubeconfig is found.
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Address to serve HTTPS on.
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: SocketAddr,
    /// Serving certificate chain (PEM). Without --tls-cert/--tls-key a self-signed development
    /// certificate for localhost is generated.
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where to write the CA of the generated development certificate.
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_DEV_CA_OUT", default_value_os_t = std::env::temp_dir().join("harbor-iam-webhook-dev-ca.pem"))]
    pub dev_ca_out: PathBuf,
    /// Largest accepted request body. The API server's objects reach ~3 MiB and a review wraps
    /// them (an UPDATE review two of them).
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time limit for one request, in seconds (the API server waits at most 30).
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub request_timeout_seconds: u64,
    /// Time limit from a client's connect to the end of its TLS handshake, and for reading
    /// request headers, in seconds.
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_HANDSHAKE_TIMEOUT_SECONDS",
        default_value_t = 5
    )]
    pub handshake_timeout_seconds: u64,
    /// Time allowed to finish in-flight requests on shutdown, in seconds.
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_SHUTDOWN_TIMEOUT_SECONDS",
        default_value_t = 20
    )]
    pub shutdown_timeout_seconds: u64,
    /// After SIGTERM: keep serving this long while unready, so endpoints stop routing here
    /// before the listener closes (seconds).
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_DRAIN_DELAY_SECONDS",
        default_value_t = 5
    )]
    pub drain_delay_seconds: u64,
    /// Connections served at once; beyond it requests are answered 503.
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    pub max_connections: usize,
    /// HTTP/2 streams per connection at once; beyond it streams are refused (REFUSED_STREAM).
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_MAX_CONCURRENT_STREAMS",
        default_value_t = 250
    )]
    pub max_concurrent_streams: u32,
    /// How often the certificate files are checked for a rotation (seconds).
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_TLS_RELOAD_INTERVAL_SECONDS",
        default_value_t = 10
    )]
    pub tls_reload_interval_seconds: u64,
    /// Look up ServiceAccounts and ConfigMaps in the cluster (auto: on in a cluster or with a kubeconfig).
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_CLUSTER_FACTS", value_enum, default_value_t = FactsMode::Auto)]
    pub cluster_facts: FactsMode,
    /// How long a looked-up ServiceAccount or ConfigMap is trusted before it is fetched again (seconds).
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_FACTS_TTL_SECONDS",
        default_value_t = 30
    )]
    pub facts_ttl_seconds: u64,
    /// Run the audit in the background every this many seconds and export
    /// harbor_iam_webhook_audit_findings (0: off; needs list on namespaces and pods).
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_AUDIT_INTERVAL_SECONDS",
        default_value_t = 0
    )]
    pub audit_interval_seconds: u64,
    /// Plain-HTTP address for Prometheus metrics (`/metrics`); `off` to disable.
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_METRICS_LISTEN", default_value = "0.0.0.0:9090", value_parser = parse_optional_addr)]
    pub metrics_listen: MaybeAddr,
    /// Log output format.
    #[arg(long, env = "HARBOR_IAM_WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(
        long,
        env = "HARBOR_IAM_WEBHOOK_LOG",
        default_value = "harbor_iam_webhook=info,warn"
    )]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Yaml,
    Json,
    Patch,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Pod or AdmissionReview, YAML or JSON; `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// ConfigMaps (and later ServiceAccounts) the server would know, multi-document YAML; repeatable.
    #[arg(long = "facts", value_name = "FILE")]
    pub facts: Vec<PathBuf>,
    /// What to print: the mutated object, or the JSON Patch.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no AWS region: pass --aws-region or set AWS_REGION (the region of the RDS instance, e.g. eu-west-1)"
    )]
    MissingRegion,
    #[error("--aws-region {0:?} is not an AWS region (expected e.g. eu-west-1)")]
    InvalidRegion(String),
    #[error("--service-account must not be empty")]
    EmptyServiceAccount,
}

fn parse_component_account(s: &str) -> Result<(Component, String), String> {
    let (c, name) = s
        .split_once('=')
        .ok_or_else(|| format!("expected COMPONENT=NAME, got {s:?}"))?;
    if name.is_empty() {
        return Err(format!("empty ServiceAccount name in {s:?}"));
    }
    Ok((c.parse()?, name.to_owned()))
}

/// An address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeAddr(pub Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<MaybeAddr, String> {
    if s.eq_ignore_ascii_case("off") || s.is_empty() {
        return Ok(MaybeAddr(None));
    }
    s.parse()
        .map(|a| MaybeAddr(Some(a)))
        .map_err(|e| format!("{s:?}: {e} (expected ADDRESS:PORT or off)"))
}

fn parse_label(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() => Ok(s.to_owned()),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl EngineArgs {
    pub fn to_config(&self) -> Result<MutateConfig, ConfigError> {
        self.config_with_region(true)
    }

    /// For commands that only classify and check pods (no region is written anywhere).
    pub fn to_check_config(&self) -> Result<MutateConfig, ConfigError> {
        self.config_with_region(false)
    }

    fn config_with_region(&self, required: bool) -> Result<MutateConfig, ConfigError> {
        let region = self
            .aws_region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        let region = match region {
            Some(r) => r,
            None if required => return Err(ConfigError::MissingRegion),
            None => "us-east-1",
        };
        if !is_valid_region(region) {
            return Err(ConfigError::InvalidRegion(region.to_owned()));
        }
        if self.service_account.trim().is_empty() {
            return Err(ConfigError::EmptyServiceAccount);
        }
        Ok(MutateConfig {
            region: region.to_owned(),
            service_account: self.service_account.clone(),
            component_service_accounts: self
                .component_service_accounts
                .iter()
                .cloned()
                .collect::<BTreeMap<_, _>>(),
            iam_capable_images: self
                .iam_capable_images
                .iter()
                .map(|p| wildmatch::WildMatch::new(p))
                .collect(),
            strict_images: self.strict_images,
            selector: Selector {
                harbor_labels: self
                    .harbor_labels
                    .iter()
                    .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                    .collect(),
                component_labels: self.component_labels.clone(),
            },
            identity_mode: match self.identity_mode {
                IdentityModeArg::Irsa => IdentityMode::Irsa,
                IdentityModeArg::PodIdentity => IdentityMode::PodIdentity,
            },
            on_missing_role: match self.on_missing_role {
                OnMissingRoleArg::Deny => OnMissingRole::Deny,
                OnMissingRoleArg::Warn => OnMissingRole::Warn,
            },
            force_service_account: self.force_service_account,
            inject_web_identity: self.inject_web_identity,
            regional_sts: self.sts_regional_endpoints,
            token_expiration: crate::mutate::identity::token_expiration(
                self.token_expiration_seconds,
            ),
            registry_s3_irsa: self.registry_s3_irsa,
        })
    }
}

impl ServeArgs {
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            limits: self.limits(),
            drain_delay: Duration::from_secs(self.drain_delay_seconds),
            max_connections: self.max_connections.max(1),
            max_concurrent_streams: self.max_concurrent_streams.max(1),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_seconds),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_seconds),
        }
    }
}

/// How the listener behaves beyond the per-request limits.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub limits: Limits,
    /// After the shutdown signal: keep serving this long, unready, telling clients to go
    /// elsewhere (`Connection: close`, HTTP/2 GOAWAY), before the listener closes.
    pub drain_delay: Duration,
    /// Connections served at once; beyond, requests get 503 and the connection is closed.
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            limits: Limits::default(),
            drain_delay: Duration::ZERO,
            max_connections: 1024,
            max_concurrent_streams: 250,
        }
    }
}

/// Server limits, each from a flag.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub handshake_timeout: Duration,
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("harbor-iam-webhook").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_and_engine_config() {
        let cli = parse(&[
            "serve",
            "--aws-region",
            "eu-west-1",
            "--component-service-account",
            "core=core-sa",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(a.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(
            a.metrics_listen.0.map(|m| m.to_string()).as_deref(),
            Some("0.0.0.0:9090")
        );
        let c = a.engine.to_config().unwrap();
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.service_account, "harbor-sa");
        assert_eq!(c.service_account_for(Component::Core), "core-sa");
        assert_eq!(c.service_account_for(Component::Jobservice), "harbor-sa");
        assert_eq!(c.selector, Selector::default());
        assert!(!c.strict_images);
    }

    #[test]
    fn region_is_required_and_checked() {
        let engine = |r: Option<&str>| EngineArgs {
            aws_region: r.map(Into::into),
            ..match parse(&["mutate", "-f", "x"]).unwrap().command {
                Command::Mutate(m) => m.engine,
                _ => unreachable!(),
            }
        };
        assert!(matches!(
            engine(None).to_config(),
            Err(ConfigError::MissingRegion)
        ));
        assert!(matches!(
            engine(Some(" ")).to_config(),
            Err(ConfigError::MissingRegion)
        ));
        assert!(matches!(
            engine(Some("Frankfurt")).to_config(),
            Err(ConfigError::InvalidRegion(_))
        ));
        assert!(engine(Some("eu-central-1")).to_config().is_ok());
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["serve", "--component-service-account", "portal=x"]).is_err());
        assert!(parse(&["serve", "--component-service-account", "core"]).is_err());
        assert!(
            parse(&["serve", "--tls-cert", "a.pem"]).is_err(),
            "cert without key"
        );
        assert!(parse(&["serve", "--harbor-label", "novalue"]).is_err());
        assert!(parse(&["mutate", "-f", "x", "-o", "xml"]).is_err());
        assert!(parse(&["serve", "--metrics-listen", "9090"]).is_err());
        let Command::Serve(a) = parse(&["serve", "--metrics-listen", "off"])
            .unwrap()
            .command
        else {
            unreachable!()
        };
        assert_eq!(a.metrics_listen, MaybeAddr(None));
    }
}
