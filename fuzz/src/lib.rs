//! Shared by the fuzz targets: the engine's configuration and cluster facts, the secrets
//! planted into inputs, and the checks every answer of the engine must pass.
//!
//! The checks panic (that is how libFuzzer learns of a finding); their messages say which
//! property broke.

use harbor_iam_webhook::admission::{self, Decision, Endpoint, Evaluation, Step, evaluate};
use harbor_iam_webhook::facts::{Facts, SaFact};
use harbor_iam_webhook::mutate::effective::{Env, Value as Effective};
use harbor_iam_webhook::mutate::sslmode::is_strong;
use harbor_iam_webhook::mutate::{Component, IdentityMode, MutateConfig, OnMissingRole, validate};
use serde_json::{Value, json};

mod generate;
mod review_target;

pub use generate::{ConfigInput, PodInput};
pub use review_target::review_target;

/// Every planted secret starts with this; none may ever reach a response, a warning, an audit
/// annotation, a denial message or a patch.
pub const SECRET_MARK: &str = "FUZZ-SECRET";
/// The secret held by a ConfigMap fact (never in the pod itself).
pub const CM_SECRET: &str = "FUZZ-SECRET-CM";
/// The region the engine is configured with.
pub const REGION: &str = "eu-west-1";
/// The namespace of the facts (and of most generated pods).
pub const NAMESPACE: &str = "harbor";
/// The role of the default IRSA ServiceAccount, and of a pod's own one.
pub const ROLE: &str = "arn:aws:iam::111122223333:role/harbor-rds";
pub const OWN_ROLE: &str = "arn:aws:iam::111122223333:role/harbor-own";

/// Env names that carry a static secret in some component (planted with secrets).
pub const SECRET_ENVS: [&str; 4] = [
    "POSTGRESQL_PASSWORD",
    "HARBOR_DATABASE_PASSWORD",
    "REGISTRY_STORAGE_S3_ACCESSKEY",
    "REGISTRY_STORAGE_S3_SECRETKEY",
];
pub const URL_ENV: &str = "POSTGRESQL_URL";
const STATUS_ANNOTATION: &str = "harbor-iam-webhook/status";
const REGION_ANNOTATION: &str = "harbor-iam-webhook/aws-region";
const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
const SKIP_POD_LABEL: &str = "eks.amazonaws.com/skip-pod-identity-webhook";
const SKIP_CONTAINERS_ANNOTATION: &str = "eks.amazonaws.com/skip-containers";
const TOKEN_VOLUME: &str = "aws-iam-token";
const CONTAINER_LISTS: [&str; 2] = ["containers", "initContainers"];

/// The planted secret number `n`.
pub fn secret(n: usize) -> String {
    format!("{SECRET_MARK}-{n}-Q")
}

/// The engine's configuration for the fuzz targets.
pub fn config(c: &ConfigInput) -> MutateConfig {
    let mut m = MutateConfig::new(REGION);
    m.strict_images = c.strict_images;
    if c.per_component_service_accounts {
        m.component_service_accounts
            .insert(Component::Core, "harbor-core-irsa".into());
        m.component_service_accounts
            .insert(Component::Exporter, "harbor-exporter-irsa".into());
    }
    if c.pod_identity {
        m.identity_mode = IdentityMode::PodIdentity;
    }
    if c.warn_on_missing_role {
        m.on_missing_role = OnMissingRole::Warn;
    }
    m.force_service_account = c.force_service_account;
    m.inject_web_identity = !c.no_web_identity;
    m.regional_sts = c.regional_sts;
    m.registry_s3_irsa = c.registry_s3;
    m
}

/// Which facts the engine is shown.
#[derive(arbitrary::Arbitrary, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FactsChoice {
    /// None: the CLI without `--facts`.
    None,
    /// ConfigMaps only: ServiceAccounts unknown.
    ConfigMaps,
    /// ConfigMaps and ServiceAccounts.
    #[default]
    All,
    /// All, and a ServiceAccount not among them does not exist.
    AllComplete,
}

fn object(kind: &str, name: &str, namespace: Option<&str>, rest: Value) -> Value {
    let mut metadata = json!({ "name": name });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    let mut o = json!({ "apiVersion": "v1", "kind": kind, "metadata": metadata });
    if let (Some(o), Value::Object(rest)) = (o.as_object_mut(), rest) {
        o.extend(rest);
    }
    o
}

/// ConfigMaps the engine may be shown (as a server with cluster access would see them). Names
/// are those of the charts plus a few made up; `cm-unseen` is deliberately absent.
fn config_maps() -> Vec<Value> {
    let ns = Some(NAMESPACE);
    let cm = |name, namespace, data: Value| {
        object("ConfigMap", name, namespace, json!({ "data": data }))
    };
    vec![
        cm(
            "harbor-core",
            ns,
            json!({
                "DATABASE_TYPE": "postgresql",
                "POSTGRESQL_HOST": "harbor.cluster-abc.eu-west-1.rds.amazonaws.com",
                "POSTGRESQL_PORT": "5432",
                "POSTGRESQL_USERNAME": "harbor",
                "POSTGRESQL_DATABASE": "registry",
                "POSTGRESQL_SSLMODE": "disable",
            }),
        ),
        cm(
            "harbor-exporter-env",
            ns,
            json!({ "HARBOR_DATABASE_SSLMODE": "disable", "HARBOR_DATABASE_HOST": "db" }),
        ),
        cm(
            "cm-strong",
            ns,
            json!({
                "POSTGRESQL_SSLMODE": "verify-full",
                "HARBOR_DATABASE_SSLMODE": "verify-ca",
                "SSLMODE": "require",
            }),
        ),
        cm(
            "cm-weak",
            ns,
            json!({ "POSTGRESQL_SSLMODE": "prefer", "HARBOR_DATABASE_SSLMODE": "", "SSLMODE": "allow" }),
        ),
        // Secrets where they don't belong: in a URL, as a password, and as an sslmode value.
        cm(
            "cm-url",
            ns,
            json!({
                "POSTGRESQL_URL": format!("postgres://harbor:{CM_SECRET}@db/registry"),
                "URL": format!("host=db password={CM_SECRET}"),
                "POSTGRESQL_PASSWORD": CM_SECRET,
                "POSTGRESQL_SSLMODE": CM_SECRET,
                "HARBOR_DATABASE_SSLMODE": CM_SECRET,
            }),
        ),
        cm(
            "cm-any-namespace",
            None,
            json!({ "POSTGRESQL_SSLMODE": "require", "HARBOR_DATABASE_SSLMODE": "allow" }),
        ),
    ]
}

/// ServiceAccounts (`None`: known not to exist). `harbor-exporter-irsa` is nowhere: unknown,
/// or missing when the facts are complete.
fn service_accounts() -> Vec<(&'static str, Option<Value>)> {
    let ns = Some(NAMESPACE);
    let sa = |name, annotations: Value| {
        (
            name,
            Some(object(
                "ServiceAccount",
                name,
                ns,
                json!({ "metadata": { "name": name, "namespace": NAMESPACE, "annotations": annotations } }),
            )),
        )
    };
    vec![
        sa(
            "harbor-sa",
            json!({
                ROLE_ANNOTATION: ROLE,
                "eks.amazonaws.com/audience": "sts.amazonaws.com",
                "eks.amazonaws.com/sts-regional-endpoints": "true",
                "eks.amazonaws.com/token-expiration": "7200",
            }),
        ),
        sa("harbor-core-irsa", json!({ ROLE_ANNOTATION: ROLE })),
        sa("harbor", json!({ ROLE_ANNOTATION: OWN_ROLE })),
        sa("default", json!({})),
        sa("empty-role", json!({ ROLE_ANNOTATION: "" })),
        ("gone", None),
    ]
}

/// The facts of `choice`, only those named in `keep` when given (as a server that fetches
/// what a pod needs would have them).
pub fn facts_of(choice: FactsChoice, keep: Option<&harbor_iam_webhook::facts::Needs>) -> Facts {
    let mut f = Facts::default();
    if choice == FactsChoice::None {
        return f;
    }
    let wanted = |list: &[String], name: &str| keep.is_none_or(|_| list.iter().any(|n| n == name));
    for cm in config_maps() {
        let name = cm["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if wanted(keep.map_or(&[][..], |k| &k.config_maps), &name) {
            f.add_config_map(serde_json::from_value(cm).expect("a ConfigMap"));
        }
    }
    if matches!(choice, FactsChoice::All | FactsChoice::AllComplete) {
        for (name, sa) in service_accounts() {
            if !wanted(keep.map_or(&[][..], |k| &k.service_accounts), name) {
                continue;
            }
            match sa {
                Some(sa) => f.add_service_account(serde_json::from_value(sa).expect("an SA")),
                None => f.add_missing_service_account(Some(NAMESPACE), name),
            }
        }
        f.set_service_accounts_complete(choice == FactsChoice::AllComplete);
    }
    f
}

/// Panics when `text` carries any planted secret.
pub fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET_MARK),
        "a planted secret leaked into {what}: {text}"
    );
}

/// Every part of an evaluation a user or a log could see.
pub fn assert_evaluation_has_no_secret(eval: &Evaluation) {
    for w in &eval.warnings {
        assert_no_secret("a warning", w);
    }
    for (k, v) in &eval.audit {
        assert_no_secret("an audit annotation", &format!("{k}={v}"));
    }
    if let Some(d) = &eval.denial {
        assert_no_secret("the denial message", d);
    }
    let patch = serde_json::to_string(&eval.patch).expect("a patch serialises");
    assert_no_secret("the patch", &patch);
}

fn is_null_or_absent(v: Option<&Value>) -> bool {
    v.is_none_or(Value::is_null)
}

/// An env entry that sets its variable empty (what the API server keeps of `value: ""` is no
/// `value` at all).
pub fn env_is_blank(e: &Value) -> bool {
    is_null_or_absent(e.get("valueFrom"))
        && e.get("value")
            .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
}

/// `(list, container)` for every container and init container of a raw pod.
pub fn containers(pod: &Value) -> impl Iterator<Item = (&'static str, &Value)> {
    CONTAINER_LISTS.into_iter().flat_map(move |list| {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(move |c| (list, c))
    })
}

fn env_entries(c: &Value) -> impl Iterator<Item = &Value> {
    c.get("env").and_then(Value::as_array).into_iter().flatten()
}

fn entries_named<'a>(c: &'a Value, name: &'a str) -> impl Iterator<Item = &'a Value> {
    env_entries(c).filter(move |e| e.get("name").and_then(Value::as_str) == Some(name))
}

fn literal_value(e: &Value) -> Option<&str> {
    if is_null_or_absent(e.get("valueFrom")) {
        e.get("value").and_then(Value::as_str)
    } else {
        None
    }
}

/// A container whose last `POSTGRESQL_URL` is a literal holding a planted password (the
/// generators write such URLs only in forms that carry the password).
fn literal_password_url(c: &Value) -> Option<&str> {
    entries_named(c, URL_ENV)
        .last()
        .and_then(literal_value)
        .filter(|v| v.contains(SECRET_MARK) && !v.starts_with(SECRET_MARK))
}

/// The API server's normalisation of what it stores: `value: ""` is dropped (`omitempty`).
pub fn normalise_like_api_server(pod: &mut Value) {
    for list in CONTAINER_LISTS {
        let Some(cs) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) else {
                continue;
            };
            for e in env.iter_mut().filter_map(Value::as_object_mut) {
                if e.get("value").and_then(Value::as_str) == Some("") {
                    e.remove("value");
                }
            }
        }
    }
}

fn secret_envs(c: Component) -> &'static [&'static str] {
    match c {
        Component::Exporter => &SECRET_ENVS[..2],
        Component::Registry => &SECRET_ENVS[2..],
        _ => &SECRET_ENVS[..1],
    }
}

fn iam_env(c: Component) -> Option<[&'static str; 3]> {
    match c {
        Component::Exporter => Some([
            "HARBOR_DATABASE_USE_IAM_AUTH",
            "HARBOR_DATABASE_AWS_REGION",
            "HARBOR_ENABLE_COMMERCIAL_AWS_RDS_IAM_AUTH",
        ]),
        Component::Registry => None,
        _ => Some([
            "POSTGRESQL_USE_IAM_AUTH",
            "POSTGRESQL_AWS_REGION",
            "HARBOR_ENABLE_COMMERCIAL_AWS_RDS_IAM_AUTH",
        ]),
    }
}

fn sslmode_env(c: Component) -> Option<&'static str> {
    match c {
        Component::Core | Component::Migrator => Some("POSTGRESQL_SSLMODE"),
        Component::Exporter => Some("HARBOR_DATABASE_SSLMODE"),
        Component::Jobservice | Component::Registry => None,
    }
}

fn is_go_true(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// What the engine's IRSA rules make of a pod's ServiceAccount.
pub struct Identity {
    /// The pod's own account before (`default` when unset or empty).
    pub old: String,
    /// The account the pod must end with.
    pub sa: String,
    /// The facts say the final account is missing or has no role (denied, or warned about).
    pub role_problem: bool,
    /// The role of the final account, when the facts know it.
    pub role: Option<String>,
}

/// What one evaluation is checked against.
pub struct Case<'a> {
    /// The raw pod as the API server sent it.
    pub object: &'a Value,
    /// The request's namespace.
    pub namespace: Option<&'a str>,
    pub config: &'a MutateConfig,
    pub facts: &'a Facts,
    /// Which facts `facts` are (to rebuild them restricted to a pod's needs).
    pub facts_choice: FactsChoice,
    /// Check that no planted secret leaks (off when the input itself spells [`SECRET_MARK`]
    /// somewhere a message may legitimately echo, such as a container name).
    pub secrets: bool,
}

impl Case<'_> {
    fn evaluate(&self, object: &Value) -> Evaluation {
        evaluate(&object.to_string(), self.namespace, self.config, self.facts)
    }

    /// The namespace the engine works in: the pod's own, else the request's.
    pub fn pod_namespace(&self) -> Option<&str> {
        match self
            .object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            Some(ns) if !ns.is_empty() => Some(ns),
            _ => self.namespace,
        }
    }

    /// The IRSA rules for component `c`: the pod keeps its own ServiceAccount when that has a
    /// role (unless forced), else it gets the configured one.
    pub fn identity(&self, c: Component) -> Identity {
        let ns = self.pod_namespace();
        let old = self
            .object
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_owned();
        let configured = self.config.service_account_for(c).to_owned();
        let irsa = self.config.identity_mode == IdentityMode::Irsa;
        let keep_own = irsa
            && !self.config.force_service_account
            && old != configured
            && self.facts.role_arn(ns, &old).is_some();
        let sa = if keep_own { old.clone() } else { configured };
        let role = self.facts.role_arn(ns, &sa).map(str::to_owned);
        let role_problem = irsa
            && match self.facts.service_account(ns, &sa) {
                SaFact::Missing => true,
                SaFact::Exists(_) => role.is_none(),
                SaFact::Unknown => false,
            };
        Identity {
            old,
            sa,
            role_problem,
            role,
        }
    }

    /// Every property of `eval` (the engine's answer for `self.object`). Returns the pod with
    /// the patch applied.
    pub fn check(&self, eval: &Evaluation) -> Value {
        if self.secrets {
            assert_evaluation_has_no_secret(eval);
        }
        let empty = eval.patch.0.is_empty();
        match eval.decision {
            Decision::Mutated => assert!(!empty, "mutated without a patch"),
            Decision::Unchanged | Decision::Skipped | Decision::Denied => {
                assert!(empty, "{:?} with a patch: {:?}", eval.decision, eval.patch)
            }
            Decision::Invalid => panic!("an evaluation is never Invalid"),
        }
        assert_eq!(
            eval.denial.is_some(),
            eval.decision == Decision::Denied,
            "a denial message without a denial, or the reverse"
        );

        let mut patched = self.object.clone();
        if let Err(e) = json_patch::patch(&mut patched, &eval.patch) {
            panic!(
                "the patch does not apply to the raw pod: {e}\npatch: {}",
                serde_json::to_string(&eval.patch).unwrap()
            );
        }
        check_only_expected_losses(self.object, &patched);
        self.check_two_phases(eval);

        if matches!(eval.decision, Decision::Mutated | Decision::Unchanged) {
            let component = eval
                .component
                .expect("an applied decision names its component");
            self.check_applied(component, &patched);
            self.check_idempotent(&patched);
        }
        patched
    }

    /// `start` names what the decision depends on: with only those facts (as the server
    /// fetches them), `finish` says exactly what `evaluate` with all of them said.
    fn check_two_phases(&self, eval: &Evaluation) {
        let body = serde_json::json!({
            "apiVersion": admission::API_VERSION, "kind": admission::KIND,
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE", "namespace": self.namespace, "object": self.object},
        });
        let body = serde_json::to_vec(&body).expect("JSON values serialise");
        let Ok(Step::Pending(candidate)) = admission::start(&body, Endpoint::Mutate, self.config)
        else {
            return;
        };
        let needs = candidate.needs().clone();
        assert_eq!(
            needs.namespace.as_deref(),
            self.pod_namespace(),
            "needs: namespace"
        );
        let mut only_needed = facts_of(self.facts_choice, Some(&needs));
        if self.facts_choice == FactsChoice::AllComplete {
            only_needed.set_service_accounts_complete(true);
        }
        let (narrow, summary) = candidate.finish(self.config, &only_needed);
        let r = narrow.response;
        let denial = r.status.map(|s| s.message);
        let patch = r.patch.map(|p| {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p)
                .expect("base64");
            serde_json::from_slice::<json_patch::Patch>(&bytes).expect("a JSON Patch")
        });
        let eval_patch = (!eval.patch.0.is_empty()).then(|| eval.patch.clone());
        assert_eq!(
            (
                &patch,
                summary.decision,
                &r.warnings,
                &denial,
                &r.audit_annotations
            ),
            (
                &eval_patch,
                Some(eval.decision),
                &eval.warnings,
                &eval.denial,
                &eval.audit
            ),
            "the decision depends on facts outside begin()'s needs {needs:?}"
        );
    }

    /// The pod after the patch, for component `c`: no static secret left, IAM env set, the
    /// IRSA ServiceAccount and web identity, status annotation, sslmode never weaker, no
    /// password in a URL, and the validating webhook admits it.
    fn check_applied(&self, c: Component, patched: &Value) {
        for (list, container) in containers(patched) {
            let name = container.get("name").cloned().unwrap_or_default();
            for pw in secret_envs(c) {
                for e in entries_named(container, pw) {
                    assert!(env_is_blank(e), "{list} {name}: {pw} survives as {e}");
                }
            }
            let from_secret = container
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|s| !is_null_or_absent(s.get("secretRef")));
            if from_secret {
                for pw in secret_envs(c) {
                    assert!(
                        entries_named(container, pw).next().is_some(),
                        "{list} {name}: envFrom Secret but no explicit blank {pw}"
                    );
                }
            }
            if self.secrets
                && c.uses_database()
                && let Some(url) = literal_password_url(container)
            {
                panic!("{list} {name}: POSTGRESQL_URL with a password admitted: {url:?}");
            }
        }

        let region = match self
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(REGION_ANNOTATION))
            .and_then(Value::as_str)
        {
            Some(r) => r.to_owned(),
            None => self.config.region.clone(),
        };
        let main_containers = patched
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Some([use_iam, region_env, gate]) = iam_env(c) {
            for container in main_containers {
                for (env, ok) in [
                    (use_iam, &is_go_true as &dyn Fn(&str) -> bool),
                    (region_env, &|v: &str| v == region),
                    (gate, &is_go_true),
                ] {
                    let entries: Vec<&Value> = entries_named(container, env).collect();
                    assert!(!entries.is_empty(), "{env} missing in {container}");
                    for e in entries {
                        assert!(
                            literal_value(e).is_some_and(ok),
                            "{env} is not set right: {e}"
                        );
                    }
                }
            }
        }

        let id = self.identity(c);
        assert_eq!(
            patched.pointer("/spec/serviceAccountName"),
            Some(&json!(id.sa)),
            "serviceAccountName"
        );
        if let Some(old) = patched.pointer("/spec/serviceAccount")
            && !old.is_null()
        {
            assert_eq!(old, &json!(id.sa), "deprecated serviceAccount");
        }
        assert_eq!(
            patched
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(STATUS_ANNOTATION)),
            Some(&json!("injected")),
            "status annotation"
        );
        self.check_web_identity(&id, patched);

        if let Some(var) = sslmode_env(c) {
            let ns = self.pod_namespace();
            let before = self
                .object
                .pointer("/spec/containers")
                .and_then(Value::as_array);
            // What the engine read of a container: the rest of it may be anything (the
            // webhook reads only what the engine reads, and leaves the rest to the API server).
            let read = |c: &Value| -> Value {
                ["name", "env", "envFrom"]
                    .into_iter()
                    .filter_map(|k| Some((k.to_owned(), c.get(k)?.clone())))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            for (b, a) in before.into_iter().flatten().zip(main_containers) {
                let b = serde_json::from_value(read(b)).expect("env the engine read");
                let a = serde_json::from_value(read(a)).expect("env the engine read");
                let was = Env::of(&b, ns, self.facts).get(var);
                let now = Env::of(&a, ns, self.facts).get(var);
                match (&was, &now) {
                    (Some(Effective::Unknown { .. }), Some(Effective::Unknown { .. })) => {}
                    (
                        Some(Effective::Known { value: w, .. }),
                        Some(Effective::Known { value: n, .. }),
                    ) if is_strong(w) => {
                        assert_eq!(w, n, "{var}: a strong sslmode was changed")
                    }
                    // Weak, absent, or unknown until our blank of a password it copies.
                    (_, Some(Effective::Known { value: n, .. })) => {
                        assert!(is_strong(n), "{var} ends weak: {n:?} (was {was:?})")
                    }
                    _ => panic!("{var}: {was:?} became {now:?}"),
                }
            }
        }

        // What the mutating webhook let through, the validating one admits. (A pod with a
        // field the typed model can't read, in a part the engine never reads, is mutated; the
        // validating webhook lets such a pod through as unreadable, for the API server's own
        // validation to refuse.)
        if let Ok(typed) = serde_json::from_value(patched.clone()) {
            if let Err(v) = validate(&typed, self.config) {
                panic!("the validating webhook refuses the mutated pod: {v}");
            }
        }
    }

    /// IRSA with a known role: every container not skipped mounts the projected token and
    /// knows the role (its own, or the final account's; never the stale role of an account
    /// the pod no longer runs as).
    fn check_web_identity(&self, id: &Identity, patched: &Value) {
        let Some(role) = &id.role else { return };
        let irsa = self.config.identity_mode == IdentityMode::Irsa;
        let skip_pod = self
            .object
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SKIP_POD_LABEL))
            .is_some();
        if !irsa || !self.config.inject_web_identity || skip_pod {
            return;
        }
        let skipped: Vec<&str> = self
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(SKIP_CONTAINERS_ANNOTATION))
            .and_then(Value::as_str)
            .map(|s| s.split(',').collect())
            .unwrap_or_default();
        let volume = patched
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|v| v.get("name") == Some(&json!(TOKEN_VOLUME)));
        assert!(volume, "no {TOKEN_VOLUME} volume");
        let old_role = self.facts.role_arn(self.pod_namespace(), &id.old);
        for (list, c) in containers(patched) {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if skipped.contains(&name) {
                continue;
            }
            let mounted = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|m| m.get("name") == Some(&json!(TOKEN_VOLUME)));
            assert!(mounted, "{list} {name}: no {TOKEN_VOLUME} mount");
            let knows = ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"]
                .iter()
                .any(|n| entries_named(c, n).next().is_some());
            assert!(
                knows,
                "{list} {name}: no AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE"
            );
            if id.old != id.sa
                && let Some(old_role) = old_role
                && old_role != role
            {
                for e in entries_named(c, "AWS_ROLE_ARN") {
                    assert_ne!(
                        literal_value(e),
                        Some(old_role),
                        "{list} {name}: AWS_ROLE_ARN still the old account's role"
                    );
                }
            }
        }
    }

    /// Evaluating the patched pod again (as on a reinvocation, also after the API server
    /// dropped `value: ""`) changes nothing.
    fn check_idempotent(&self, patched: &Value) {
        let mut normalised = patched.clone();
        normalise_like_api_server(&mut normalised);
        for (what, pod) in [("again", patched), ("after normalisation", &normalised)] {
            let again = self.evaluate(pod);
            if self.secrets {
                assert_evaluation_has_no_secret(&again);
            }
            assert!(
                again.patch.0.is_empty() && again.decision == Decision::Unchanged,
                "not idempotent ({what}): {:?} {:?} {:?}\npod: {pod}",
                again.decision,
                again.denial,
                serde_json::to_string(&again.patch).unwrap()
            );
        }
    }
}

/// Kinds of change the engine may make to what a raw pod already held: anything else (a
/// removed or replaced field) would lose data our model does not know, or the user's.
fn check_only_expected_losses(before: &Value, after: &Value) {
    let diff = json_patch::diff(before, after);
    for op in &diff.0 {
        use json_patch::PatchOperation as Op;
        let (path, kind) = match op {
            Op::Add(_) => continue,
            Op::Remove(r) => (r.path.to_string(), "remove"),
            Op::Replace(r) => (r.path.to_string(), "replace"),
            other => panic!("diff produced {other:?}"),
        };
        // Nothing there before (null): any value may take its place.
        if kind == "replace" && before.pointer(&path).is_some_and(Value::is_null) {
            continue;
        }
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        let ok = match parts.as_slice() {
            ["spec", "serviceAccountName" | "serviceAccount"] => kind == "replace",
            ["metadata", "annotations", "harbor-iam-webhook~1status"] => kind == "replace",
            ["spec", "containers" | "initContainers", _, "env", _, field] => {
                matches!(*field, "value" | "valueFrom")
            }
            _ => false,
        };
        assert!(
            ok,
            "the patch {kind}s {path}, which held {:?}",
            before.pointer(&path)
        );
    }
}

/// The `mutate` target: a generated pod through [`evaluate`], every property checked.
pub fn mutate_target(input: &PodInput) {
    let generated = input.build();
    let config = config(&input.config);
    let facts = facts_of(input.config.facts, None);
    let namespace = generated.request_namespace.as_deref();
    let eval = evaluate(&generated.pod.to_string(), namespace, &config, &facts);
    let case = Case {
        object: &generated.pod,
        namespace,
        config: &config,
        facts: &facts,
        facts_choice: input.config.facts,
        secrets: true,
    };
    let patched = case.check(&eval);

    // Fields the Kubernetes model of this build does not know are kept, at the same place.
    for (path, value) in unknown_fields(&generated.pod) {
        assert_eq!(
            patched.pointer(&path),
            Some(&value),
            "unknown field {path} lost"
        );
    }

    // The decision, from what the generator knows, in the engine's order: pods the webhook
    // must not touch are not touched; a bad region annotation is refused; strict images skip;
    // a password in a literal URL is refused; so is a missing IRSA account or role (unless
    // told to warn); everything else is applied.
    let component = generated.component;
    let expected = match component {
        None => Some(Expect::Skipped),
        Some(_) if generated.region_valid == Some(false) => Some(Expect::Denied),
        Some(_) if generated.region_valid.is_none() => None,
        Some(_) if input.strict_skip() => Some(Expect::Skipped),
        Some(c)
            if c.uses_database()
                && containers(&generated.pod).any(|(_, c)| literal_password_url(c).is_some()) =>
        {
            Some(Expect::Denied)
        }
        Some(c)
            if case.identity(c).role_problem && config.on_missing_role == OnMissingRole::Deny =>
        {
            Some(Expect::Denied)
        }
        Some(_) => Some(Expect::Applied),
    };
    let got = match eval.decision {
        Decision::Skipped => Expect::Skipped,
        Decision::Denied => Expect::Denied,
        Decision::Mutated | Decision::Unchanged => Expect::Applied,
        Decision::Invalid => unreachable!("checked above"),
    };
    if let Some(expected) = expected {
        assert_eq!(
            got,
            expected,
            "decision {:?} ({}), expected {expected:?}; denial {:?}; warnings {:?}",
            eval.decision,
            eval.reason.as_str(),
            eval.denial,
            eval.warnings
        );
    }
    if got == Expect::Applied {
        assert_eq!(eval.component, component, "component");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Skipped,
    Denied,
    Applied,
}

/// Every object key starting with "future" (the generators' unknown fields), by JSON Pointer.
pub fn unknown_fields(v: &Value) -> Vec<(String, Value)> {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                    if k.starts_with("future") {
                        out.push((p.clone(), x.clone()));
                    }
                    walk(x, &p, out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// Replays the committed inputs (seeds and saved findings) with plain `cargo test`, no
/// fuzzer: `cd fuzz && cargo test`.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use arbitrary::{Arbitrary, Unstructured};

    use super::*;

    fn files(dir: &str) -> Vec<std::path::PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn review_seeds_and_regressions() {
        let inputs: Vec<_> = [files("seeds/review"), files("regressions/review")].concat();
        assert!(!inputs.is_empty());
        for path in inputs {
            eprintln!("{}", path.display());
            review_target(&std::fs::read(&path).unwrap());
        }
    }

    #[test]
    fn mutate_regressions() {
        for path in files("regressions/mutate") {
            eprintln!("{}", path.display());
            let bytes = std::fs::read(&path).unwrap();
            if let Ok(input) = PodInput::arbitrary_take_rest(Unstructured::new(&bytes)) {
                mutate_target(&input);
            }
        }
    }

    /// The checks are not vacuous: a correct answer passes, each broken one is caught.
    #[test]
    fn checks_catch_broken_patches() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "harbor", "labels": {"app": "harbor", "component": "core"}},
            "spec": {"futureField": 1, "containers": [{"name": "c", "image": "x",
                "env": [{"name": "POSTGRESQL_PASSWORD", "value": secret(1)}]}]}
        });
        let config = config(&ConfigInput::default());
        let facts = facts_of(FactsChoice::All, None);
        let eval = evaluate(&pod.to_string(), None, &config, &facts);
        assert_eq!(eval.decision, Decision::Mutated);
        let case = Case {
            object: &pod,
            namespace: None,
            config: &config,
            facts: &facts,
            facts_choice: FactsChoice::All,
            secrets: true,
        };
        case.check(&eval);
        let broken = [
            json!({"op": "remove", "path": "/spec/futureField"}),
            json!({"op": "replace", "path": "/spec/containers/0/env/0/value", "value": "pw"}),
            json!({"op": "add", "path": "/metadata/labels/x", "value": secret(9)}),
            json!({"op": "add", "path": "/spec/containers/0/env/-",
                "value": {"name": "POSTGRESQL_SSLMODE", "value": "disable"}}),
            json!({"op": "replace", "path": "/spec/serviceAccountName", "value": "default"}),
            json!({"op": "remove", "path": "/spec/containers/0/env/1"}),
            json!({"op": "remove", "path": "/spec/containers/0/volumeMounts"}),
        ];
        for op in broken {
            let mut bad = eval.clone();
            bad.patch
                .0
                .push(serde_json::from_value(op.clone()).unwrap());
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                case.check(&bad);
            }));
            assert!(caught.is_err(), "not caught: {op}");
        }
    }

    #[test]
    fn mutate_on_pseudo_random_inputs() {
        // A quick smoke run of the generator and the checks (xorshift bytes, fixed seed).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut applied = 0;
        for _ in 0..3000 {
            let bytes: Vec<u8> = (0..768)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if let Ok(input) = PodInput::arbitrary_take_rest(Unstructured::new(&bytes)) {
                mutate_target(&input);
                applied += usize::from(input.build().component.is_some());
            }
        }
        assert!(
            applied > 100,
            "the generator rarely makes a target pod: {applied}"
        );
    }
}
