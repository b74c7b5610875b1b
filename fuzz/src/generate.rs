//! Harbor-ish pods built from `arbitrary` input: labels, annotations, containers and env from
//! small vocabularies (so that the fuzzer reaches the engine's rules quickly), plus arbitrary
//! strings as env values and region annotations, `valueFrom`/`envFrom` references, nulls where
//! the API allows them, and unknown fields (`future*`) at every level.

use arbitrary::Arbitrary;
use serde_json::{Map, Value, json};

use crate::{FactsChoice, OWN_ROLE, ROLE, SECRET_MARK, secret};
use harbor_iam_webhook::mutate::Component;

const MAX_CONTAINERS: usize = 4;
const MAX_INIT_CONTAINERS: usize = 2;
const MAX_ENV: usize = 8;
const MAX_ENV_FROM: usize = 4;

const CAPABLE_PREFIX: &str = "8gears.container-registry.com/8gcr/harbor-";

#[derive(Arbitrary, Debug)]
pub struct PodInput {
    harbor_label: Option<HarborLabel>,
    component_label: Option<ComponentValue>,
    recommended_component_label: Option<ComponentValue>,
    extra_labels: Vec<ExtraLabel>,
    annotations: Annotations,
    name: PodName,
    namespace: Option<Namespace>,
    /// The request's namespace (the object often has none at CREATE).
    request_namespace: Option<Namespace>,
    containers: Vec<ContainerInput>,
    init_containers: Option<Vec<ContainerInput>>,
    service_account_name: Option<ServiceAccount>,
    service_account: Option<ServiceAccount>,
    no_spec: bool,
    volumes: Option<Vec<VolumeInput>>,
    windows_node: bool,
    /// `eks.amazonaws.com/skip-pod-identity-webhook` label.
    skip_pod_identity: bool,
    /// Which levels get an unknown field: bit 0 pod, 1 metadata, 2 spec, 3 labels.
    future_fields: u8,
    pub config: ConfigInput,
}

/// The operator's flags, and which facts the engine is shown.
#[derive(Arbitrary, Debug, Default)]
pub struct ConfigInput {
    pub strict_images: bool,
    pub per_component_service_accounts: bool,
    pub pod_identity: bool,
    pub warn_on_missing_role: bool,
    pub force_service_account: bool,
    pub no_web_identity: bool,
    pub regional_sts: bool,
    pub registry_s3: bool,
    pub facts: FactsChoice,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum VolumeInput {
    /// A projected token volume already there (another webhook ran first).
    AwsIamToken,
    Data,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum MountInput {
    AwsIamToken,
    Data,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum HarborLabel {
    App,
    Name,
    NameNext,
    PartOf,
    /// `app: harbor-next` (not one of the defaults).
    AppWrongValue,
    /// `app.kubernetes.io/name: Harbor` (case matters).
    NameWrongCase,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ComponentValue {
    Core,
    Jobservice,
    Exporter,
    Migrator,
    Portal,
    Registry,
    Trivy,
    Empty,
    CoreUpperCase,
}

impl ComponentValue {
    fn as_str(self) -> &'static str {
        match self {
            ComponentValue::Core => "core",
            ComponentValue::Jobservice => "jobservice",
            ComponentValue::Exporter => "exporter",
            ComponentValue::Migrator => "migrator",
            ComponentValue::Portal => "portal",
            ComponentValue::Registry => "registry",
            ComponentValue::Trivy => "trivy",
            ComponentValue::Empty => "",
            ComponentValue::CoreUpperCase => "Core",
        }
    }

    /// The component the webhook acts on (the registry only with the S3 opt-in).
    fn target(self, registry_s3: bool) -> Option<Component> {
        match self {
            ComponentValue::Core => Some(Component::Core),
            ComponentValue::Jobservice => Some(Component::Jobservice),
            ComponentValue::Exporter => Some(Component::Exporter),
            ComponentValue::Migrator => Some(Component::Migrator),
            ComponentValue::Registry if registry_s3 => Some(Component::Registry),
            _ => None,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ExtraLabel {
    Release,
    Heritage,
    PodTemplateHash,
    AppKubernetesIoInstance,
}

#[derive(Arbitrary, Debug)]
enum Annotations {
    Absent,
    Null,
    Map {
        inject: Option<Inject>,
        region: Option<RegionAnnotation>,
        status_injected: bool,
        checksum: bool,
        skip_containers: Option<u8>,
        token_expiration: Option<u8>,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Inject {
    Disabled,
    Enabled,
    False,
}

#[derive(Arbitrary, Debug)]
enum RegionAnnotation {
    UsEast1,
    ApSoutheast2,
    UsGovWest1,
    UpperCase,
    TooShort,
    Empty,
    Text(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PodName {
    Neither,
    Name,
    GenerateName,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Namespace {
    Harbor,
    Other,
    Empty,
}

impl Namespace {
    fn as_str(self) -> &'static str {
        match self {
            Namespace::Harbor => crate::NAMESPACE,
            Namespace::Other => "registry",
            Namespace::Empty => "",
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ServiceAccount {
    Default,
    HarborSa,
    HarborCoreIrsa,
    /// Has a role of its own.
    Own,
    EmptyRole,
    Gone,
    Unknown,
    Empty,
}

impl ServiceAccount {
    fn as_str(self) -> &'static str {
        match self {
            ServiceAccount::Default => "default",
            ServiceAccount::HarborSa => "harbor-sa",
            ServiceAccount::HarborCoreIrsa => "harbor-core-irsa",
            ServiceAccount::Own => "harbor",
            ServiceAccount::EmptyRole => "empty-role",
            ServiceAccount::Gone => "gone",
            ServiceAccount::Unknown => "someone-else",
            ServiceAccount::Empty => "",
        }
    }
}

#[derive(Arbitrary, Debug)]
struct ContainerInput {
    name: u8,
    image: Image,
    env: EnvList,
    env_from: Option<Vec<EnvFromInput>>,
    volume_mounts: Option<Vec<MountInput>>,
    future_field: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Image {
    CapableCore,
    CapableExporter,
    UpstreamCore,
    UpstreamExporter,
    /// The capable prefix without the trailing dash: not a match.
    AlmostCapable,
    Missing,
}

impl Image {
    fn as_str(self) -> Option<&'static str> {
        match self {
            Image::CapableCore => Some("8gears.container-registry.com/8gcr/harbor-core:v2.15.0"),
            Image::CapableExporter => {
                Some("8gears.container-registry.com/8gcr/harbor-exporter:v2.15.0")
            }
            Image::UpstreamCore => Some("goharbor/harbor-core:v2.12.4"),
            Image::UpstreamExporter => Some("goharbor/harbor-exporter:v2.12.4"),
            Image::AlmostCapable => Some("8gears.container-registry.com/8gcr/harbor"),
            Image::Missing => None,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum EnvList {
    Absent,
    Null,
    Entries(Vec<EnvInput>),
}

#[derive(Arbitrary, Debug)]
struct EnvInput {
    name: EnvName,
    value: Option<EnvValue>,
    value_from: Option<Reference>,
    /// `"value": null` when there is no value.
    null_value: bool,
    future_field: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum EnvName {
    PostgresqlPassword,
    HarborDatabasePassword,
    PostgresqlUrl,
    PostgresqlSslmode,
    HarborDatabaseSslmode,
    PostgresqlUseIamAuth,
    HarborDatabaseUseIamAuth,
    PostgresqlAwsRegion,
    HarborDatabaseAwsRegion,
    FeatureGate,
    PostgresqlHost,
    CoreSecret,
    LogLevel,
    S3AccessKey,
    S3SecretKey,
    AwsRoleArn,
    AwsWebIdentityTokenFile,
    AwsRegion,
    AwsStsRegionalEndpoints,
}

impl EnvName {
    fn as_str(self) -> &'static str {
        match self {
            EnvName::PostgresqlPassword => "POSTGRESQL_PASSWORD",
            EnvName::HarborDatabasePassword => "HARBOR_DATABASE_PASSWORD",
            EnvName::PostgresqlUrl => "POSTGRESQL_URL",
            EnvName::PostgresqlSslmode => "POSTGRESQL_SSLMODE",
            EnvName::HarborDatabaseSslmode => "HARBOR_DATABASE_SSLMODE",
            EnvName::PostgresqlUseIamAuth => "POSTGRESQL_USE_IAM_AUTH",
            EnvName::HarborDatabaseUseIamAuth => "HARBOR_DATABASE_USE_IAM_AUTH",
            EnvName::PostgresqlAwsRegion => "POSTGRESQL_AWS_REGION",
            EnvName::HarborDatabaseAwsRegion => "HARBOR_DATABASE_AWS_REGION",
            EnvName::FeatureGate => "HARBOR_ENABLE_COMMERCIAL_AWS_RDS_IAM_AUTH",
            EnvName::PostgresqlHost => "POSTGRESQL_HOST",
            EnvName::CoreSecret => "CORE_SECRET",
            EnvName::LogLevel => "LOG_LEVEL",
            EnvName::S3AccessKey => "REGISTRY_STORAGE_S3_ACCESSKEY",
            EnvName::S3SecretKey => "REGISTRY_STORAGE_S3_SECRETKEY",
            EnvName::AwsRoleArn => "AWS_ROLE_ARN",
            EnvName::AwsWebIdentityTokenFile => "AWS_WEB_IDENTITY_TOKEN_FILE",
            EnvName::AwsRegion => "AWS_REGION",
            EnvName::AwsStsRegionalEndpoints => "AWS_STS_REGIONAL_ENDPOINTS",
        }
    }
}

const VALUES: &[&str] = &[
    "",
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
    "Require",
    "true",
    "True",
    "TRUE",
    "1",
    "t",
    "false",
    "0",
    "eu-west-1",
    "us-east-1",
    "postgres://harbor@db:5432/registry?sslmode=require",
    "postgres://db/registry",
    "postgres://harbor:@db/registry",
    "postgres://db/registry?application_name=a:b@c",
    "host=db user=harbor dbname=registry",
    "host=db password='' user=harbor",
    "host=db passwordfile=/x",
    "regional",
    "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
];

#[derive(Arbitrary, Debug)]
enum EnvValue {
    /// A role ARN: the pod's own account's, or the default IRSA account's.
    Role(bool),
    Word(u8),
    /// A planted password.
    Secret,
    /// A connection string with a planted password, in one of the forms libpq accepts.
    SecretUrl(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Reference {
    SecretKey { secret: u8, key: u8 },
    ConfigMapKey { config_map: u8, key: u8 },
    Field,
    Resource,
    Empty,
}

const SECRETS: &[&str] = &["harbor-core", "harbor-database", "db"];
const SECRET_KEYS: &[&str] = &["password", "POSTGRESQL_PASSWORD", "url"];
const CONFIG_MAPS: &[&str] = &[
    "harbor-core",
    "harbor-exporter-env",
    "cm-strong",
    "cm-weak",
    "cm-url",
    "cm-any-namespace",
    "cm-unseen",
];
const CONFIG_MAP_KEYS: &[&str] = &[
    "POSTGRESQL_SSLMODE",
    "HARBOR_DATABASE_SSLMODE",
    "SSLMODE",
    "POSTGRESQL_URL",
    "MISSING",
];
const PREFIXES: &[&str] = &["", "POSTGRESQL_", "HARBOR_DATABASE_", "X_"];

#[derive(Arbitrary, Debug)]
struct EnvFromInput {
    secret: Option<u8>,
    config_map: Option<u8>,
    prefix: Option<u8>,
    future_field: bool,
}

fn pick(list: &'static [&'static str], i: u8) -> &'static str {
    list[usize::from(i) % list.len()]
}

/// Arbitrary text never spells the planted-secret mark (only planted secrets do).
fn text(s: &str) -> String {
    s.replace(SECRET_MARK, "fuzz-secret")
}

/// What [`PodInput::build`] made, with what the generator knows about it.
pub struct Generated {
    pub pod: Value,
    pub request_namespace: Option<String>,
    /// The component the webhook must act on, if labels and annotations make it one.
    pub component: Option<Component>,
    /// Whether the region annotation (if any) names a region; `None` for arbitrary text.
    pub region_valid: Option<bool>,
}

struct Builder {
    secrets: usize,
}

impl Builder {
    fn secret(&mut self) -> String {
        self.secrets += 1;
        secret(self.secrets)
    }

    fn value(&mut self, v: &EnvValue) -> String {
        match v {
            EnvValue::Role(own) => if *own { OWN_ROLE } else { ROLE }.to_owned(),
            EnvValue::Word(i) => pick(VALUES, *i).to_owned(),
            EnvValue::Secret => self.secret(),
            EnvValue::SecretUrl(i) => {
                let s = self.secret();
                match i % 4 {
                    0 => format!("postgres://harbor:{s}@db:5432/registry"),
                    1 => format!("postgresql://db/registry?sslmode=require&password={s}"),
                    2 => format!("host=db user=harbor password={s} dbname=registry"),
                    _ => format!("host=db password = '{s}'"),
                }
            }
            EnvValue::Text(t) => text(t),
        }
    }

    fn reference(r: &Reference) -> Value {
        match r {
            Reference::SecretKey { secret, key } => json!({
                "secretKeyRef": {"name": pick(SECRETS, *secret), "key": pick(SECRET_KEYS, *key)}
            }),
            Reference::ConfigMapKey { config_map, key } => json!({
                "configMapKeyRef": {
                    "name": pick(CONFIG_MAPS, *config_map),
                    "key": pick(CONFIG_MAP_KEYS, *key),
                }
            }),
            Reference::Field => json!({"fieldRef": {"fieldPath": "metadata.name"}}),
            Reference::Resource => json!({"resourceFieldRef": {"resource": "limits.cpu"}}),
            Reference::Empty => json!({}),
        }
    }

    fn env(&mut self, e: &EnvInput) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(e.name.as_str()));
        match &e.value {
            Some(v) => {
                m.insert("value".into(), json!(self.value(v)));
            }
            None if e.null_value => {
                m.insert("value".into(), Value::Null);
            }
            None => {}
        }
        if let Some(r) = &e.value_from {
            m.insert("valueFrom".into(), Self::reference(r));
        }
        if e.future_field {
            m.insert("futureEnvField".into(), json!({"kept": true}));
        }
        Value::Object(m)
    }

    fn container(&mut self, c: &ContainerInput, list: &str) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(format!("{list}{}", c.name % 3)));
        if let Some(image) = c.image.as_str() {
            m.insert("image".into(), json!(image));
        }
        match &c.env {
            EnvList::Absent => {}
            EnvList::Null => {
                m.insert("env".into(), Value::Null);
            }
            EnvList::Entries(es) => {
                let env: Vec<Value> = es.iter().take(MAX_ENV).map(|e| self.env(e)).collect();
                m.insert("env".into(), Value::Array(env));
            }
        }
        if let Some(sources) = &c.env_from {
            let env_from: Vec<Value> = sources
                .iter()
                .take(MAX_ENV_FROM)
                .map(|s| {
                    let mut src = Map::new();
                    if let Some(i) = s.secret {
                        src.insert("secretRef".into(), json!({"name": pick(SECRETS, i)}));
                    }
                    if let Some(i) = s.config_map {
                        src.insert("configMapRef".into(), json!({"name": pick(CONFIG_MAPS, i)}));
                    }
                    if let Some(i) = s.prefix {
                        src.insert("prefix".into(), json!(pick(PREFIXES, i)));
                    }
                    if s.future_field {
                        src.insert("futureSourceField".into(), json!(1));
                    }
                    Value::Object(src)
                })
                .collect();
            m.insert("envFrom".into(), Value::Array(env_from));
        }
        if let Some(mounts) = &c.volume_mounts {
            let mounts: Vec<Value> = mounts
                .iter()
                .take(2)
                .map(|m| match m {
                    MountInput::AwsIamToken => json!({
                        "name": "aws-iam-token",
                        "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount",
                        "readOnly": true,
                    }),
                    MountInput::Data => json!({"name": "data", "mountPath": "/data"}),
                })
                .collect();
            m.insert("volumeMounts".into(), Value::Array(mounts));
        }
        if c.future_field {
            m.insert("futureContainerField".into(), json!([1, "two"]));
        }
        Value::Object(m)
    }
}

impl PodInput {
    pub fn build(&self) -> Generated {
        let mut b = Builder { secrets: 0 };
        let mut labels = Map::new();
        for l in &self.extra_labels {
            let (k, v) = match l {
                ExtraLabel::Release => ("release", "harbor"),
                ExtraLabel::Heritage => ("heritage", "Helm"),
                ExtraLabel::PodTemplateHash => ("pod-template-hash", "z2xsjqdknc"),
                ExtraLabel::AppKubernetesIoInstance => ("app.kubernetes.io/instance", "harbor"),
            };
            labels.insert(k.into(), json!(v));
        }
        let is_harbor = match self.harbor_label {
            None => false,
            Some(h) => {
                let (k, v, ok) = match h {
                    HarborLabel::App => ("app", "harbor", true),
                    HarborLabel::Name => ("app.kubernetes.io/name", "harbor", true),
                    HarborLabel::NameNext => ("app.kubernetes.io/name", "harbor-next", true),
                    HarborLabel::PartOf => ("app.kubernetes.io/part-of", "harbor", true),
                    HarborLabel::AppWrongValue => ("app", "harbor-next", false),
                    HarborLabel::NameWrongCase => ("app.kubernetes.io/name", "Harbor", false),
                };
                labels.insert(k.into(), json!(v));
                ok
            }
        };
        if let Some(c) = self.component_label {
            labels.insert("component".into(), json!(c.as_str()));
        }
        if let Some(c) = self.recommended_component_label {
            labels.insert("app.kubernetes.io/component".into(), json!(c.as_str()));
        }
        // `app.kubernetes.io/component` beats `component`.
        let component = self.recommended_component_label.or(self.component_label);
        if self.future_fields & 8 != 0 {
            labels.insert("future-label".into(), json!("x"));
        }
        if self.skip_pod_identity {
            labels.insert(
                "eks.amazonaws.com/skip-pod-identity-webhook".into(),
                json!("true"),
            );
        }

        let mut metadata = Map::new();
        match self.name {
            PodName::Neither => {}
            PodName::Name => {
                metadata.insert("name".into(), json!("harbor-core-0"));
            }
            PodName::GenerateName => {
                metadata.insert("generateName".into(), json!("harbor-core-z2xsjqdknc-"));
            }
        }
        if let Some(ns) = self.namespace {
            metadata.insert("namespace".into(), json!(ns.as_str()));
        }
        metadata.insert("labels".into(), Value::Object(labels));
        let mut opted_out = false;
        let mut region_valid = Some(true);
        match &self.annotations {
            Annotations::Absent => {}
            Annotations::Null => {
                metadata.insert("annotations".into(), Value::Null);
            }
            Annotations::Map {
                inject,
                region,
                status_injected,
                checksum,
                skip_containers,
                token_expiration,
            } => {
                let mut a = Map::new();
                if let Some(i) = inject {
                    opted_out = matches!(i, Inject::Disabled);
                    let v = match i {
                        Inject::Disabled => "disabled",
                        Inject::Enabled => "enabled",
                        Inject::False => "false",
                    };
                    a.insert("harbor-iam-webhook/inject".into(), json!(v));
                }
                if let Some(r) = region {
                    region_valid = match r {
                        RegionAnnotation::UsEast1
                        | RegionAnnotation::ApSoutheast2
                        | RegionAnnotation::UsGovWest1 => Some(true),
                        RegionAnnotation::Text(_) => None,
                        _ => Some(false),
                    };
                    let v = match r {
                        RegionAnnotation::UsEast1 => "us-east-1".to_owned(),
                        RegionAnnotation::ApSoutheast2 => "ap-southeast-2".to_owned(),
                        RegionAnnotation::UsGovWest1 => "us-gov-west-1".to_owned(),
                        RegionAnnotation::UpperCase => "EU-WEST-1".to_owned(),
                        RegionAnnotation::TooShort => "eu-west".to_owned(),
                        RegionAnnotation::Empty => String::new(),
                        RegionAnnotation::Text(t) => text(t),
                    };
                    a.insert("harbor-iam-webhook/aws-region".into(), json!(v));
                }
                if *status_injected {
                    a.insert("harbor-iam-webhook/status".into(), json!("injected"));
                }
                if let Some(i) = skip_containers {
                    let v = pick(&["c0", "c1,init0", "init0", ""], *i);
                    a.insert("eks.amazonaws.com/skip-containers".into(), json!(v));
                }
                if let Some(i) = token_expiration {
                    let v = pick(&["7200", "60", "999999", "soon"], *i);
                    a.insert("eks.amazonaws.com/token-expiration".into(), json!(v));
                }
                if *checksum {
                    a.insert(
                        "checksum/configmap".into(),
                        json!("aa9587e40d47eb3f92618369ad10372a"),
                    );
                }
                metadata.insert("annotations".into(), Value::Object(a));
            }
        }
        if self.future_fields & 2 != 0 {
            metadata.insert("futureMetaField".into(), json!({"m": [1, 2]}));
        }

        let mut pod = Map::new();
        pod.insert("apiVersion".into(), json!("v1"));
        pod.insert("kind".into(), json!("Pod"));
        pod.insert("metadata".into(), Value::Object(metadata));
        if !self.no_spec {
            let mut spec = Map::new();
            let containers: Vec<Value> = self
                .containers
                .iter()
                .take(MAX_CONTAINERS)
                .map(|c| b.container(c, "c"))
                .collect();
            spec.insert("containers".into(), Value::Array(containers));
            if let Some(init) = &self.init_containers {
                let init: Vec<Value> = init
                    .iter()
                    .take(MAX_INIT_CONTAINERS)
                    .map(|c| b.container(c, "init"))
                    .collect();
                spec.insert("initContainers".into(), Value::Array(init));
            }
            if let Some(sa) = self.service_account_name {
                spec.insert("serviceAccountName".into(), json!(sa.as_str()));
            }
            if let Some(sa) = self.service_account {
                spec.insert("serviceAccount".into(), json!(sa.as_str()));
            }
            if let Some(volumes) = &self.volumes {
                let volumes: Vec<Value> = volumes
                    .iter()
                    .take(2)
                    .map(|v| match v {
                        VolumeInput::AwsIamToken => json!({
                            "name": "aws-iam-token",
                            "projected": {"sources": [{"serviceAccountToken": {
                                "audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"
                            }}]}
                        }),
                        VolumeInput::Data => json!({"name": "data", "emptyDir": {}}),
                    })
                    .collect();
                spec.insert("volumes".into(), Value::Array(volumes));
            }
            if self.windows_node {
                spec.insert(
                    "nodeSelector".into(),
                    json!({"kubernetes.io/os": "windows"}),
                );
            }
            if self.future_fields & 4 != 0 {
                spec.insert("futurePodField".into(), json!({"a": "b"}));
            }
            pod.insert("spec".into(), Value::Object(spec));
        }
        if self.future_fields & 1 != 0 {
            pod.insert("futureTopLevel".into(), json!(true));
        }
        Generated {
            pod: Value::Object(pod),
            request_namespace: self.request_namespace.map(|n| n.as_str().to_owned()),
            component: component
                .and_then(|c| c.target(self.config.registry_s3))
                .filter(|_| is_harbor && !opted_out),
            region_valid,
        }
    }

    /// Whether `--strict-images` must leave this pod alone: a container whose image is not
    /// known to be IAM-capable.
    pub fn strict_skip(&self) -> bool {
        self.config.strict_images
            && !self.no_spec
            && self.containers.iter().take(MAX_CONTAINERS).any(|c| {
                !c.image
                    .as_str()
                    .is_some_and(|i| i.starts_with(CAPABLE_PREFIX))
            })
    }
}
