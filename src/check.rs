//! `harbor-iam-webhook check`: whether an install works, one line per check.
//!
//! The judgements here are pure functions of the objects read from the cluster, so they are
//! tested without one; `gather` does the reading (get, list and server-side dry runs only) and
//! `cert` the certificate verification.

pub mod cert;
pub mod gather;
pub mod learn;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, Pod, PodTemplateSpec, Secret, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Serialize;

use crate::consts::{
    EKS_ROLE_ARN_ANNOTATION, IAM_FEATURE_GATE, NAMESPACE_OPT_IN_LABEL, REGION_ANNOTATION,
    STATUS_ANNOTATION, STATUS_INJECTED,
};
use crate::mutate::{IdentityMode, MutateConfig, Target};

/// The mutating webhook's name in every configuration that installs it.
pub const MUTATING_WEBHOOK: &str = "mutate.harbor-iam-webhook.io";
/// The validating webhook's name (optional component).
pub const VALIDATING_WEBHOOK: &str = "validate.harbor-iam-webhook.io";
/// A serving certificate expiring sooner than this is a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn symbol(self) -> &'static str {
        match self {
            Status::Ok => "✔",
            Status::Warn => "⚠",
            Status::Fail => "✘",
        }
    }
}

/// One line of the report. `hint` is the command (or values change) that fixes it, empty when
/// there is nothing to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub message: String,
    pub hint: String,
}

impl Check {
    pub fn ok(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, message, "")
    }
    pub fn warn(
        name: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Warn, message, hint)
    }
    pub fn fail(
        name: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Fail, message, hint)
    }
    fn new(
        name: impl Into<String>,
        status: Status,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Check {
            name: name.into(),
            status,
            message: message.into(),
            hint: hint.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn push(&mut self, c: Check) {
        self.checks.push(c);
    }

    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    fn count(&self, s: Status) -> usize {
        self.checks.iter().filter(|c| c.status == s).count()
    }

    /// One line per check; further lines of a message and the fix indented below it.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let mut lines = c.message.lines();
            out.push_str(&format!(
                "{} {}: {}\n",
                c.status.symbol(),
                c.name,
                lines.next().unwrap_or("")
            ));
            for l in lines {
                out.push_str(&format!("    {l}\n"));
            }
            if !c.hint.is_empty() {
                out.push_str(&format!("    fix: {}\n", c.hint));
            }
        }
        out.push_str(&format!(
            "{} ok, {} warning(s), {} failed\n",
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail)
        ));
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

/// A check that could not be made because an API call failed: for a permission error, the
/// verb and resource that are missing.
pub fn api_failure(
    name: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    err: &kube::Error,
) -> Check {
    let scope = namespace
        .map(|n| format!(" in namespace {n}"))
        .unwrap_or_default();
    let ns_flag = namespace.map(|n| format!(" -n {n}")).unwrap_or_default();
    match err {
        kube::Error::Api(s) if is_rbac_denial(s) => Check::fail(
            name,
            format!("cannot check: no permission to {verb} {resource}{scope}"),
            format!(
                "grant {verb} on {resource}{scope} to the identity running check (kubectl auth can-i {verb} {resource}{ns_flag})"
            ),
        ),
        kube::Error::Api(s) => Check::fail(
            name,
            format!(
                "cannot check: {verb} {resource}{scope}: {} ({})",
                s.message, s.code
            ),
            "",
        ),
        other => Check::fail(
            name,
            format!("cannot check: {verb} {resource}{scope}: {other}"),
            "",
        ),
    }
}

/// A 403 from RBAC (admission plugins answer 403 too, with their own reason).
pub fn is_rbac_denial(s: &kube::core::Status) -> bool {
    s.code == 403 && s.message.contains("User \"") && s.message.contains(" cannot ")
}

/// One webhook of ours or of someone else, from either kind of configuration.
#[derive(Debug, Clone)]
pub struct WebhookRef {
    pub kind: &'static str,
    pub resource: &'static str,
    pub config: String,
    pub index: usize,
    pub name: String,
    pub client: WebhookClientConfig,
    pub side_effects: String,
    pub failure_policy: String,
    pub namespace_selector: Option<LabelSelector>,
    pub rules: Vec<RuleWithOperations>,
}

impl WebhookRef {
    pub fn is_ours(&self) -> bool {
        self.name == MUTATING_WEBHOOK || self.name == VALIDATING_WEBHOOK
    }
}

pub fn webhooks_of(
    mutating: &[MutatingWebhookConfiguration],
    validating: &[ValidatingWebhookConfiguration],
) -> Vec<WebhookRef> {
    let mut out = Vec::new();
    for c in mutating {
        for (index, w) in c.webhooks.iter().flatten().enumerate() {
            out.push(WebhookRef {
                kind: "MutatingWebhookConfiguration",
                resource: "mutatingwebhookconfiguration",
                config: c.metadata.name.clone().unwrap_or_default(),
                index,
                name: w.name.clone(),
                client: w.client_config.clone(),
                side_effects: w.side_effects.clone(),
                failure_policy: w.failure_policy.clone().unwrap_or_else(|| "Fail".into()),
                namespace_selector: w.namespace_selector.clone(),
                rules: w.rules.clone().unwrap_or_default(),
            });
        }
    }
    for c in validating {
        for (index, w) in c.webhooks.iter().flatten().enumerate() {
            out.push(WebhookRef {
                kind: "ValidatingWebhookConfiguration",
                resource: "validatingwebhookconfiguration",
                config: c.metadata.name.clone().unwrap_or_default(),
                index,
                name: w.name.clone(),
                client: w.client_config.clone(),
                side_effects: w.side_effects.clone(),
                failure_policy: w.failure_policy.clone().unwrap_or_else(|| "Fail".into()),
                namespace_selector: w.namespace_selector.clone(),
                rules: w.rules.clone().unwrap_or_default(),
            });
        }
    }
    out
}

fn dry_run_safe(side_effects: &str) -> bool {
    matches!(side_effects, "None" | "NoneOnDryRun")
}

/// Our webhook's configuration: it must let dry runs through.
pub fn judge_configuration(w: &WebhookRef) -> Check {
    let name = "webhook configuration";
    let what = format!(
        "{} {}: webhook {}, sideEffects {}, failurePolicy {}",
        w.kind, w.config, w.name, w.side_effects, w.failure_policy
    );
    if dry_run_safe(&w.side_effects) {
        Check::ok(name, what)
    } else {
        Check::fail(
            name,
            format!("{what}: the API server refuses server-side dry runs in its namespaces"),
            format!(
                "kubectl patch {} {} --type=json -p '[{{\"op\":\"replace\",\"path\":\"/webhooks/{}/sideEffects\",\"value\":\"None\"}}]'",
                w.resource, w.config, w.index
            ),
        )
    }
}

/// The mutating webhook is missing altogether.
pub fn no_configuration() -> Check {
    Check::fail(
        "webhook configuration",
        format!("no MutatingWebhookConfiguration has the webhook {MUTATING_WEBHOOK}"),
        "kubectl apply -k manifests/ && certs/gen-certs.sh --apply",
    )
}

/// Whether `labels` satisfy `selector` (a missing selector matches everything); the error names
/// the first requirement that excludes them.
pub fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<(), String> {
    let Some(sel) = selector else { return Ok(()) };
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Err(format!("matchLabels {k}={v}"));
        }
    }
    for req in sel.match_expressions.iter().flatten() {
        let values = req.values.clone().unwrap_or_default();
        let have = labels.get(&req.key);
        let ok = match req.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "matchExpressions {} {} [{}]",
                req.key,
                req.operator,
                values.join(", ")
            ));
        }
    }
    Ok(())
}

/// The Harbor namespace carries the opt-in label and the webhook's selector picks it.
pub fn judge_namespace(name: &str, ns: Option<&Namespace>, webhook: Option<&WebhookRef>) -> Check {
    let title = format!("namespace {name}");
    let Some(ns) = ns else {
        return Check::fail(
            title,
            "does not exist",
            "pass Harbor's namespace with -n NAMESPACE",
        );
    };
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels
        .entry("kubernetes.io/metadata.name".into())
        .or_insert_with(|| name.to_owned());
    if labels.get(NAMESPACE_OPT_IN_LABEL).map(String::as_str) != Some("enabled") {
        return Check::fail(
            title,
            format!(
                "not labelled {NAMESPACE_OPT_IN_LABEL}=enabled: the webhook never sees its pods"
            ),
            format!("kubectl label namespace {name} {NAMESPACE_OPT_IN_LABEL}=enabled"),
        );
    }
    if let Some(w) = webhook
        && let Err(term) = selector_matches(w.namespace_selector.as_ref(), &labels)
    {
        return Check::fail(
            title,
            format!(
                "labelled {NAMESPACE_OPT_IN_LABEL}=enabled, but the namespaceSelector of {} excludes it ({term})",
                w.name
            ),
            format!(
                "kubectl edit {} {} (namespaceSelector of webhook {})",
                w.resource, w.config, w.name
            ),
        );
    }
    Check::ok(
        title,
        format!("labelled {NAMESPACE_OPT_IN_LABEL}=enabled and selected by {MUTATING_WEBHOOK}"),
    )
}

/// The ServiceAccount Harbor's DB pods are switched to exists, and (IRSA) carries a role.
pub fn judge_service_account(
    namespace: &str,
    name: &str,
    sa: Option<&ServiceAccount>,
    mode: IdentityMode,
) -> Check {
    let title = format!("ServiceAccount {namespace}/{name}");
    let annotate = format!(
        "kubectl -n {namespace} annotate serviceaccount {name} {EKS_ROLE_ARN_ANNOTATION}=arn:aws:iam::<account-id>:role/<role>"
    );
    let Some(sa) = sa else {
        let create = format!("kubectl -n {namespace} create serviceaccount {name}");
        return Check::fail(
            title,
            "does not exist: the API server refuses Harbor's DB pods once they are switched to it",
            match mode {
                IdentityMode::Irsa => format!("{create} && {annotate}"),
                IdentityMode::PodIdentity => create,
            },
        );
    };
    if mode == IdentityMode::PodIdentity {
        return Check::ok(
            title,
            "exists; pod-identity mode: credentials come from an EKS Pod Identity association (not visible to the Kubernetes API)",
        );
    }
    let role = sa
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EKS_ROLE_ARN_ANNOTATION))
        .map(|r| r.trim())
        .filter(|r| !r.is_empty());
    match role {
        None => Check::fail(
            title,
            format!("has no {EKS_ROLE_ARN_ANNOTATION}: pods get no AWS credentials"),
            annotate,
        ),
        Some(r) if !looks_like_role_arn(r) => Check::warn(
            title,
            format!("{EKS_ROLE_ARN_ANNOTATION} is {r:?}, which is not an IAM role ARN"),
            annotate,
        ),
        Some(r) => Check::ok(title, format!("{EKS_ROLE_ARN_ANNOTATION}: {r}")),
    }
}

/// `arn:<partition>:iam::<12 digits>:role/<name>`.
fn looks_like_role_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("role/")
            .is_some_and(|n| !n.is_empty())
}

/// Ready endpoints of a Service, from its EndpointSlices (a missing `ready` counts as ready).
pub fn ready_in_slices(slices: &[EndpointSlice]) -> usize {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .map(|e| e.addresses.len())
        .sum()
}

/// Ready addresses of a (legacy) Endpoints object.
#[allow(deprecated)]
pub fn ready_in_endpoints(ep: &Endpoints) -> usize {
    ep.subsets
        .iter()
        .flatten()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
        .sum()
}

pub fn judge_endpoints(
    namespace: &str,
    service: &str,
    exists: bool,
    ready: usize,
    deployment: Option<&str>,
) -> Check {
    let title = "webhook endpoints";
    let watch = match deployment {
        Some(d) => format!("kubectl -n {namespace} rollout status deployment/{d}"),
        None => format!("kubectl -n {namespace} get pods"),
    };
    if !exists {
        return Check::fail(
            title,
            format!("Service {namespace}/{service} does not exist"),
            "kubectl apply -k manifests/",
        );
    }
    if ready == 0 {
        return Check::fail(
            title,
            format!(
                "Service {namespace}/{service} has no ready endpoints: the webhook is down; with failurePolicy Fail no pod is created in opted-in namespaces"
            ),
            watch,
        );
    }
    Check::ok(
        title,
        format!("Service {namespace}/{service}: {ready} ready endpoint(s)"),
    )
}

/// A Harbor workload whose pod template the proof dry-runs.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `deployment`, `statefulset` or `job`, as kubectl spells them.
    pub kind: &'static str,
    pub name: String,
    pub template: PodTemplateSpec,
}

impl Workload {
    pub fn subject(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// What the workload's controller would create: a Pod from the template.
    pub fn pod(&self, namespace: &str) -> Pod {
        let meta = self.template.metadata.clone().unwrap_or_default();
        Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", self.name)),
                namespace: Some(namespace.to_owned()),
                labels: meta.labels,
                annotations: meta.annotations,
                ..Default::default()
            },
            spec: self.template.spec.clone(),
            status: None,
        }
    }

    pub fn target(&self, config: &MutateConfig) -> Target {
        let meta = self.template.metadata.as_ref();
        config.target(
            meta.and_then(|m| m.labels.as_ref()),
            meta.and_then(|m| m.annotations.as_ref()),
        )
    }
}

/// Other webhooks that would make a dry run of a pod in this namespace fail: sideEffects
/// Unknown or Some, on pod CREATE, selecting the namespace.
pub fn dry_run_blockers(
    webhooks: &[WebhookRef],
    ns_labels: &BTreeMap<String, String>,
) -> Vec<Check> {
    webhooks
        .iter()
        .filter(|w| !w.is_ours() && !dry_run_safe(&w.side_effects))
        .filter(|w| w.rules.iter().any(rule_matches_pod_create))
        .filter(|w| selector_matches(w.namespace_selector.as_ref(), ns_labels).is_ok())
        .map(|w| {
            Check::warn(
                format!("admission webhook {}", w.name),
                format!(
                    "{} {} has sideEffects {} and applies to pods here: server-side dry runs (kubectl --dry-run=server, this check's proof) fail while it is installed",
                    w.kind, w.config, w.side_effects
                ),
                format!(
                    "ask its owner to declare sideEffects None or NoneOnDryRun (kubectl get {} {} -o yaml)",
                    w.resource, w.config
                ),
            )
        })
        .collect()
}

fn rule_matches_pod_create(r: &RuleWithOperations) -> bool {
    let has = |l: &Option<Vec<String>>, v: &str| l.iter().flatten().any(|x| x == "*" || x == v);
    has(&r.operations, "CREATE")
        && has(&r.api_groups, "")
        && (has(&r.resources, "pods") || r.resources.iter().flatten().any(|x| x == "*/*"))
}

/// Env value of the last entry named `name` in a container (the kubelet uses the last).
fn env_value<'a>(c: &'a k8s_openapi::api::core::v1::Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .rev()
        .find(|e| e.name == name)
        .map(|e| e.value.as_deref().unwrap_or(""))
}

/// What the API server returned for the dry run of a Harbor workload's pod.
pub fn judge_dry_run(
    w: &Workload,
    target: &Target,
    admitted: &Pod,
    warnings: &[String],
    config: &MutateConfig,
    has_role: &dyn Fn(&str) -> bool,
) -> Check {
    let title = format!("dry run {}", w.subject());
    let shown = |m: String| {
        if warnings.is_empty() {
            m
        } else {
            let mut m = m;
            for x in warnings {
                m.push_str(&format!("\nwebhook warning: {x}"));
            }
            m
        }
    };
    let component = match target {
        Target::Mutate(c) => *c,
        Target::OptedOut(c) => {
            return Check::warn(
                title,
                shown(format!(
                    "{c}: the template opts out (annotation harbor-iam-webhook/inject: disabled), its pods keep the static password"
                )),
                format!(
                    "remove the annotation from the {} template (Harbor's Helm values: podAnnotations)",
                    w.kind
                ),
            );
        }
        Target::OtherComponent(c) => {
            return Check::ok(
                title,
                shown(format!(
                    "admitted; {} has no database connection, left alone",
                    c.as_deref().unwrap_or("this component")
                )),
            );
        }
        Target::NotHarbor => return Check::ok(title, shown("admitted".into())),
    };
    let annotations = admitted.metadata.annotations.clone().unwrap_or_default();
    if annotations.get(STATUS_ANNOTATION).map(String::as_str) != Some(STATUS_INJECTED) {
        return Check::fail(
            title,
            shown(format!(
                "{component}: admitted without the mutation (no {STATUS_ANNOTATION}: {STATUS_INJECTED}): new pods would keep the static password"
            )),
            "see the namespace and webhook checks above",
        );
    }
    let mut problems = Vec::new();
    if let Some((use_iam, region_env)) = component.iam_env_names() {
        let region = annotations
            .get(REGION_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| config.region.clone());
        for c in admitted.spec.iter().flat_map(|s| s.containers.iter()) {
            if env_value(c, use_iam) != Some("true") {
                problems.push(format!("container {} lacks {use_iam}=true", c.name));
            }
            match env_value(c, region_env) {
                Some(r) if r == region || region.is_empty() => {}
                Some(r) => problems.push(format!(
                    "container {} has {region_env}={r}, the webhook is configured for {region}",
                    c.name
                )),
                None => problems.push(format!("container {} lacks {region_env}", c.name)),
            }
            if env_value(c, IAM_FEATURE_GATE) != Some("true") {
                problems.push(format!(
                    "container {} lacks {IAM_FEATURE_GATE}=true",
                    c.name
                ));
            }
        }
    }
    if let Err(v) = crate::mutate::validate(admitted, config) {
        problems.push(v.problems);
    }
    let sa = admitted
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_default();
    let wanted = config.service_account_for(component);
    if sa != wanted && !(config.identity_mode == IdentityMode::Irsa && has_role(&sa)) {
        problems.push(format!(
            "runs as ServiceAccount {sa:?}, not {wanted:?} (nor an account with a role)"
        ));
    }
    if !problems.is_empty() {
        return Check::fail(
            title,
            shown(format!("{component}: {}", problems.join("; "))),
            "see the webhook configuration and ServiceAccount checks above",
        );
    }
    let what = if component.uses_database() {
        "IAM env set, password blank"
    } else {
        "S3 keys blank"
    };
    Check::ok(
        title,
        shown(format!("{component}: {what}, ServiceAccount {sa}")),
    )
}

/// The API server refused the dry run. `down_hint` is how to look at the webhook's pods.
pub fn judge_dry_run_error(w: &Workload, down_hint: &str, message: &str) -> Check {
    let title = format!("dry run {}", w.subject());
    if message.contains("does not support dry run")
        && let Some(rest) = message.split("admission webhook \"").nth(1)
    {
        let name = rest.split('"').next().unwrap_or(rest);
        return Check::warn(
            title,
            format!(
                "not proven: admission webhook {name} does not support dry run (sideEffects Unknown or Some)"
            ),
            "ask its owner to declare sideEffects None or NoneOnDryRun",
        );
    }
    let calling = message.contains(&format!("failed calling webhook \"{MUTATING_WEBHOOK}\""));
    let hint = if calling && (message.contains("x509:") || message.contains("tls:")) {
        "the API server does not trust the webhook's certificate: see the webhook certificate check above".into()
    } else if calling {
        down_hint.to_owned()
    } else if message.contains(MUTATING_WEBHOOK) {
        "the webhook's message above says what to do".into()
    } else if message.contains("error looking up service account") {
        "create the ServiceAccount (see its check above)".into()
    } else {
        String::new()
    };
    Check::fail(title, format!("refused: {message}"), hint)
}

/// Running Harbor DB pods that the webhook did not inject (what `audit` finds), each with its
/// restart command. Returns the checks and how many pods need a restart.
pub fn judge_pods(namespace: &str, pods: &[Pod], config: &MutateConfig) -> (Vec<Check>, usize) {
    let running: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let db = running
        .iter()
        .filter(|p| {
            matches!(
                config.target(p.metadata.labels.as_ref(), None),
                Target::Mutate(_)
            )
        })
        .count();
    let findings: Vec<_> = running
        .iter()
        .filter_map(|p| crate::audit::audit_pod(p, config))
        .collect();
    if findings.is_empty() {
        let msg = if db == 0 {
            format!("no Harbor DB pod running in {namespace}")
        } else {
            format!("{db} running Harbor DB pod(s), all injected")
        };
        return (vec![Check::ok("running pods", msg)], 0);
    }
    let n = findings.len();
    let checks = findings
        .into_iter()
        .map(|f| {
            Check::warn(
                format!("pod {}/{}", f.namespace, f.pod),
                format!("{}: {}", f.component, f.problems.join("; ")),
                f.fix,
            )
        })
        .collect();
    (checks, n)
}

/// A Secret Harbor's DB pods read a password from, and the keys they read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordSource {
    pub keys: BTreeSet<String>,
    pub readers: BTreeSet<String>,
}

/// The Secrets (and keys) the DB components' templates take a password from: `envFrom`
/// Secrets (the password names, less the prefix) and `secretKeyRef`s of the password env.
pub fn password_sources(
    workloads: &[Workload],
    config: &MutateConfig,
) -> BTreeMap<String, PasswordSource> {
    let mut out: BTreeMap<String, PasswordSource> = BTreeMap::new();
    for w in workloads {
        let Target::Mutate(component) = w.target(config) else {
            continue;
        };
        if !component.uses_database() {
            continue;
        }
        let spec = w.template.spec.as_ref();
        let containers = spec.into_iter().flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        });
        for c in containers {
            for ef in c.env_from.iter().flatten() {
                let Some(sr) = &ef.secret_ref else { continue };
                let prefix = ef.prefix.as_deref().unwrap_or("");
                let entry = out.entry(sr.name.clone()).or_default();
                for n in component.password_envs() {
                    if let Some(key) = n.strip_prefix(prefix) {
                        entry.keys.insert(key.to_owned());
                    }
                }
                entry.readers.insert(w.subject());
            }
            for e in c.env.iter().flatten() {
                if !component.password_envs().contains(&e.name.as_str()) {
                    continue;
                }
                if let Some(r) = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                {
                    let entry = out.entry(r.name.clone()).or_default();
                    entry.keys.insert(r.key.clone());
                    entry.readers.insert(w.subject());
                }
            }
        }
    }
    out
}

/// A Secret that still holds a database password (only key names are ever shown), with the
/// change to Harbor's Helm values that keeps it out.
pub fn judge_secret(
    namespace: &str,
    name: &str,
    source: &PasswordSource,
    secret: &Secret,
) -> Option<Check> {
    let data = secret.data.clone().unwrap_or_default();
    let held: Vec<&str> = source
        .keys
        .iter()
        .filter(|k| data.get(*k).is_some_and(|v| !v.0.is_empty()))
        .map(String::as_str)
        .collect();
    if held.is_empty() {
        return None;
    }
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let helm = labels
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str)
        == Some("Helm")
        || labels.get("heritage").map(String::as_str) == Some("Helm")
        || annotations.contains_key("meta.helm.sh/release-name");
    let release = annotations
        .get("meta.helm.sh/release-name")
        .or_else(|| labels.get("app.kubernetes.io/instance"))
        .or_else(|| labels.get("release"))
        .cloned()
        .unwrap_or_else(|| "RELEASE".into());
    let next = labels.get("app.kubernetes.io/name").map(String::as_str) == Some("harbor-next");
    let hint = if helm && next {
        format!(
            "in Harbor's Helm values set database.password: \"\", then helm -n {namespace} upgrade {release} <harbor-next chart> -f values.yaml"
        )
    } else if helm {
        format!(
            "in Harbor's Helm values set database.external.password: \"\" (and no database.external.existingSecret), then helm -n {namespace} upgrade {release} harbor/harbor -f values.yaml"
        )
    } else {
        let ops: Vec<String> = held
            .iter()
            .map(|k| {
                format!(
                    "{{\"op\":\"replace\",\"path\":\"/data/{}\",\"value\":\"\"}}",
                    k.replace('~', "~0").replace('/', "~1")
                )
            })
            .collect();
        format!(
            "kubectl -n {namespace} patch secret {name} --type=json -p '[{}]' (and remove the password wherever this Secret is generated from)",
            ops.join(",")
        )
    };
    Some(Check::warn(
        format!("Secret {namespace}/{name}"),
        format!(
            "still holds a database password in {} (read by {}), though every DB pod uses IAM auth",
            held.join(", "),
            source
                .readers
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
        hint,
    ))
}

#[cfg(test)]
mod tests;
