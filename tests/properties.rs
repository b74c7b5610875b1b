//! Properties of the engine over generated pods (raw JSON, so unknown fields ride along).

mod common;

use harbor_iam_webhook::admission::{Decision, evaluate};
use harbor_iam_webhook::facts::Facts;
use harbor_iam_webhook::mutate::effective::{Env, Value as EnvValue};
use harbor_iam_webhook::mutate::sslmode::is_strong;
use harbor_iam_webhook::mutate::{
    IdentityMode, MutateConfig, MutateError, OnMissingRole, Outcome, Skip, judge, mutate, validate,
};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod};
use proptest::prelude::*;
use serde_json::{Value, json};

const NAMES: &[&str] = &[
    "POSTGRESQL_PASSWORD",
    "HARBOR_DATABASE_PASSWORD",
    "POSTGRESQL_SSLMODE",
    "HARBOR_DATABASE_SSLMODE",
    "POSTGRESQL_USE_IAM_AUTH",
    "POSTGRESQL_AWS_REGION",
    "HARBOR_ENABLE_COMMERCIAL_AWS_RDS_IAM_AUTH",
    "POSTGRESQL_URL",
    "PGPASSWORD",
    "PGSSLMODE",
    "REGISTRY_STORAGE_S3_SECRETKEY",
    "DB_SSLMODE",
    "CORE_SECRET",
    "LOG_LEVEL",
];
const VALUES: &[&str] = &[
    "",
    "disable",
    "prefer",
    "require",
    "verify-full",
    "true",
    "false",
    "us-east-1",
    "hunter2",
    // References, expanded by the kubelet against what is set before them.
    "$(DB_SSLMODE)",
    "$$(DB_SSLMODE)",
    "$(POSTGRESQL_SSLMODE)",
    "$(POSTGRESQL_PASSWORD)",
    "postgres://harbor:$(POSTGRESQL_PASSWORD)@db/registry",
    "host=db password='$(HARBOR_DATABASE_PASSWORD)' sslmode=$(DB_SSLMODE)",
    "verify-$(LOG_LEVEL)",
    "postgres://db/registry?sslmode=disable",
    "host=db sslmode='verify-full'",
    "host=db password=$(PGPASSWORD)",
];
const CONFIG_MAPS: &[&str] = &["cm-weak", "cm-strong", "cm-empty", "cm-unseen"];
const COMPONENTS: &[&str] = &[
    "core",
    "jobservice",
    "exporter",
    "migrator",
    "portal",
    "registry",
    "trivy",
];

fn facts() -> Facts {
    let cm = |name: &str, data: Value| -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "harbor"}, "data": data}),
        )
        .unwrap()
    };
    Facts::with_config_maps([
        cm(
            "cm-weak",
            json!({"POSTGRESQL_SSLMODE": "disable", "HARBOR_DATABASE_SSLMODE": "allow", "SSLMODE": "prefer",
                   "DB_SSLMODE": "disable", "POSTGRESQL_PASSWORD": "hunter2"}),
        ),
        cm(
            "cm-strong",
            json!({"POSTGRESQL_SSLMODE": "verify-full", "HARBOR_DATABASE_SSLMODE": "verify-ca", "SSLMODE": "require",
                   "DB_SSLMODE": "verify-full"}),
        ),
        cm("cm-empty", json!({"OTHER": "x"})),
    ])
}

fn env_entry() -> impl Strategy<Value = Value> {
    let name = prop::sample::select(NAMES);
    let source = prop_oneof![
        prop::sample::select(VALUES).prop_map(|v| json!({"value": v})),
        Just(json!({})),
        Just(json!({"valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}})),
        (prop::sample::select(CONFIG_MAPS), prop::sample::select(&["POSTGRESQL_SSLMODE", "MISSING"][..]), any::<bool>())
            .prop_map(|(cm, key, optional)| json!({"valueFrom": {"configMapKeyRef": {"name": cm, "key": key, "optional": optional}}})),
        Just(json!({"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})),
    ];
    (name, source, any::<bool>()).prop_map(|(name, mut src, unknown)| {
        src["name"] = json!(name);
        if unknown {
            src["futureEnvField"] = json!({"kept": true});
        }
        src
    })
}

fn env_from() -> impl Strategy<Value = Value> {
    let prefix = prop::option::of(prop::sample::select(&["", "POSTGRESQL_", "X_"][..]));
    let source = prop_oneof![
        prop::sample::select(CONFIG_MAPS).prop_map(|n| json!({"configMapRef": {"name": n}})),
        Just(json!({"secretRef": {"name": "harbor-core"}})),
    ];
    (source, prefix).prop_map(|(mut s, p)| {
        if let Some(p) = p {
            s["prefix"] = json!(p);
        }
        s
    })
}

/// Volumes a pod may bring, one of them the web-identity token volume the engine would add.
fn volumes() -> Vec<Value> {
    vec![
        json!({"name": "config", "configMap": {"name": "harbor-core", "defaultMode": 420}}),
        json!({"name": "secret-key", "secret": {"secretName": "harbor-core"}}),
        json!({"name": "aws-iam-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}}),
        json!({"name": "scratch", "emptyDir": {}}),
    ]
}

fn mounts() -> Vec<Value> {
    vec![
        json!({"name": "config", "mountPath": "/etc/core/app.conf", "subPath": "app.conf"}),
        json!({"name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true}),
        json!({"name": "scratch", "mountPath": "/tmp"}),
    ]
}

fn container(name: String) -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(env_entry(), 0..6),
        prop::collection::vec(env_from(), 0..3),
        any::<bool>(),
        prop::sample::select(
            &[
                "goharbor/harbor-core:v2.12.4",
                "8gears.container-registry.com/8gcr/harbor-core:v2.15.0",
            ][..],
        ),
        prop::sample::subsequence(mounts(), 0..=3),
        any::<bool>(),
    )
        .prop_map(move |(env, env_from, unknown, image, mounts, rich)| {
            let mut c = json!({"name": name.clone(), "image": image});
            if !env.is_empty() {
                c["env"] = json!(env);
            }
            if !env_from.is_empty() {
                c["envFrom"] = json!(env_from);
            }
            if !mounts.is_empty() {
                c["volumeMounts"] = json!(mounts);
            }
            if unknown {
                c["futureContainerField"] = json!([1, 2]);
            }
            if rich {
                // Fields the engine never reads (the server skips them unread).
                c["resources"] = json!({"limits": {"memory": "1Gi"}, "requests": {"cpu": "100m"}});
                c["securityContext"] =
                    json!({"runAsNonRoot": true, "allowPrivilegeEscalation": false});
                c["ports"] = json!([{"containerPort": 8080, "protocol": "TCP"}]);
                c["livenessProbe"] = json!({"httpGet": {"path": "/api/v2.0/ping", "port": 8080}});
            }
            c
        })
}

/// What else of a pod the engine reads (annotations, the node selector, volumes, the
/// deprecated ServiceAccount field) and what it never reads (owner references, managed
/// fields, security context), as members to merge into the pod.
fn pod_extras() -> impl Strategy<Value = Value> {
    let annotations = [
        ("eks.amazonaws.com/skip-containers", "c0,init0"),
        ("eks.amazonaws.com/token-expiration", "7200"),
        ("harbor-iam-webhook/aws-region", "eu-central-1"),
        ("checksum/configmap", "0123abcd"),
    ];
    let os = prop::option::of(prop::sample::select(
        &[
            ("kubernetes.io/os", "windows"),
            ("beta.kubernetes.io/os", "windows"),
            ("kubernetes.io/os", "linux"),
        ][..],
    ));
    (
        prop::sample::subsequence(annotations.to_vec(), 0..=4),
        os,
        prop::sample::subsequence(volumes(), 0..=4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(annotations, os, volumes, deprecated_sa, rich)| {
            let mut x = json!({"metadata": {}, "spec": {}});
            if !annotations.is_empty() {
                let a: serde_json::Map<String, Value> =
                    annotations.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
                x["metadata"]["annotations"] = Value::Object(a);
            }
            if let Some((k, v)) = os {
                x["spec"]["nodeSelector"] = json!({k: v});
            }
            if !volumes.is_empty() {
                x["spec"]["volumes"] = json!(volumes);
            }
            x["deprecatedServiceAccount"] = json!(deprecated_sa);
            if rich {
                x["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "harbor-core-5d4f", "uid": "0b6c9f8e-1b1a-4c47-9d8e-3f1f2b4c5d6e", "controller": true}]);
                x["metadata"]["managedFields"] = json!([{"manager": "kube-controller-manager",
                    "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {}}}}]);
                x["spec"]["securityContext"] = json!({"fsGroup": 10000, "runAsUser": 10000});
                x["spec"]["automountServiceAccountToken"] = json!(false);
                x["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Exists"}]);
            }
            x
        })
}

fn pod(harbor: bool) -> impl Strategy<Value = Value> {
    (
        prop::sample::select(COMPONENTS),
        prop::collection::vec(container("main".into()), 1..3),
        prop::collection::vec(container("init".into()), 0..2),
        any::<bool>(),
        prop::option::of(prop::sample::select(&["default", "harbor-sa", "other"][..])),
        pod_extras(),
    )
        .prop_map(
            move |(component, mut containers, mut init, unknown, sa, extras)| {
                for (i, c) in containers.iter_mut().enumerate() {
                    c["name"] = json!(format!("c{i}"));
                }
                // Sometimes the chart's own container name, which --strict-images judges.
                if unknown {
                    let chart = match component {
                        "migrator" => "core-job",
                        other => other,
                    };
                    containers[0]["name"] = json!(chart);
                }
                for (i, c) in init.iter_mut().enumerate() {
                    c["name"] = json!(format!("init{i}"));
                }
                let labels = if harbor {
                    // An empty label is no label: `component` decides.
                    json!({"app": "harbor", "component": component, "app.kubernetes.io/component": ""})
                } else {
                    json!({"app": "web", "component": component})
                };
                let mut p = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": "p-", "namespace": "harbor", "labels": labels},
                    "spec": {"containers": containers}
                });
                if !init.is_empty() {
                    p["spec"]["initContainers"] = json!(init);
                }
                if let Some(sa) = sa {
                    p["spec"]["serviceAccountName"] = json!(sa);
                    if extras["deprecatedServiceAccount"] == true {
                        p["spec"]["serviceAccount"] = json!(sa);
                    }
                }
                for part in ["metadata", "spec"] {
                    for (k, v) in extras[part].as_object().into_iter().flatten() {
                        p[part][k] = v.clone();
                    }
                }
                if unknown {
                    p["spec"]["futurePodField"] = json!({"a": "b"});
                    p["metadata"]["futureMetaField"] = json!(1);
                }
                p
            },
        )
}

/// A configuration with every switch the engine has.
fn config_with(switches: [bool; 6]) -> MutateConfig {
    let [strict, s3, pod_identity, no_injection, warn_role, force] = switches;
    MutateConfig {
        strict_images: strict,
        registry_s3_irsa: s3,
        identity_mode: if pod_identity {
            IdentityMode::PodIdentity
        } else {
            IdentityMode::Irsa
        },
        inject_web_identity: !no_injection,
        on_missing_role: if warn_role {
            OnMissingRole::Warn
        } else {
            OnMissingRole::Deny
        },
        force_service_account: force,
        ..common::config()
    }
}

/// The env entries `/validate`'s guarantees are about, per container, in order.
fn guarded(pod: &Pod) -> Vec<(String, Vec<k8s_openapi::api::core::v1::EnvVar>)> {
    const GUARDED: &[&str] = &[
        "POSTGRESQL_PASSWORD",
        "HARBOR_DATABASE_PASSWORD",
        "PGPASSWORD",
        "REGISTRY_STORAGE_S3_ACCESSKEY",
        "REGISTRY_STORAGE_S3_SECRETKEY",
        "POSTGRESQL_URL",
        "POSTGRESQL_SSLMODE",
        "HARBOR_DATABASE_SSLMODE",
    ];
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| {
            let entries = c
                .env
                .iter()
                .flatten()
                .filter(|e| GUARDED.contains(&e.name.as_str()));
            (c.name.clone(), entries.cloned().collect())
        })
        .collect()
}

fn typed(p: &Value) -> Pod {
    let mut typed: Pod = serde_json::from_value(p.clone()).expect("generated pods are pods");
    typed
        .metadata
        .namespace
        .get_or_insert_with(|| "harbor".into());
    typed
}

fn run(pod: &Value, facts: &Facts) -> (harbor_iam_webhook::admission::Evaluation, Value) {
    let eval = evaluate(&pod.to_string(), Some("harbor"), &common::config(), facts);
    let mut out = pod.clone();
    json_patch::patch(&mut out, &eval.patch).expect("the patch applies to the raw pod");
    (eval, out)
}

fn sslmode_var(component: &str) -> Option<&'static str> {
    match component {
        "core" | "migrator" => Some("POSTGRESQL_SSLMODE"),
        "exporter" => Some("HARBOR_DATABASE_SSLMODE"),
        _ => None,
    }
}

/// Every object key path in `v` that starts with "future", with its value. An `env` entry is
/// named by its name, not its index (a blank inserted before it moves it): fields are counted.
fn unknown_fields(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k.starts_with("future") {
                    out.push((format!("{path}/{k}"), x.clone()));
                }
                unknown_fields(x, format!("{path}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let segment = match x["name"].as_str().filter(|_| path.ends_with("/env")) {
                    Some(name) => name.to_owned(),
                    None => i.to_string(),
                };
                unknown_fields(x, format!("{path}/{segment}"), out);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn idempotent_also_after_normalisation(p in pod(true), with_facts in any::<bool>()) {
        let facts = if with_facts { facts() } else { Facts::default() };
        let (eval, once) = run(&p, &facts);
        prop_assume!(eval.decision != Decision::Denied);
        let (again, _) = run(&once, &facts);
        prop_assert!(again.patch.0.is_empty(), "second run: {:?}", again.patch);
        let mut normalised = once.clone();
        common::normalise_like_api_server(&mut normalised);
        let (again, _) = run(&normalised, &facts);
        prop_assert!(again.patch.0.is_empty(), "after normalisation: {:?}", again.patch);
    }

    #[test]
    fn no_static_password_survives(p in pod(true), with_facts in any::<bool>()) {
        let facts = if with_facts { facts() } else { Facts::default() };
        let (eval, out) = run(&p, &facts);
        let component = p["metadata"]["labels"]["component"].as_str().unwrap();
        let db = ["core", "jobservice", "exporter", "migrator"].contains(&component);
        if db && (eval.decision == Decision::Mutated || eval.decision == Decision::Unchanged) {
            let typed: Pod = serde_json::from_value(out.clone()).unwrap();
            let spec = typed.spec.as_ref().unwrap();
            for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
                let env = Env::of(c, Some("harbor"), &facts);
                for name in ["POSTGRESQL_PASSWORD", "HARBOR_DATABASE_PASSWORD", "PGPASSWORD"] {
                    // Ends blank (or unset)...
                    let end = env.get(name);
                    prop_assert!(end.as_ref().is_none_or(|v| v.known() == Some("")), "{}: {name} ends {end:?}", c.name);
                    // ...and is blank wherever a `$(NAME)` copies it.
                    for (i, e) in c.env.iter().flatten().enumerate() {
                        if e.value.as_deref().is_some_and(|v| v.contains(&format!("$({name})"))) {
                            let seen = env.before(i, name);
                            prop_assert!(seen.as_ref().is_none_or(|v| v.known() == Some("")),
                                "{}: {} copies {name} = {seen:?}", c.name, e.name);
                        }
                    }
                    // Every container with envFrom has the explicit blank.
                    if c.env_from.as_ref().is_some_and(|f| !f.is_empty()) {
                        prop_assert!(c.env.iter().flatten().any(|e| e.name == name), "{}: no explicit {name}", c.name);
                    }
                }
                // A known connection string carries no password.
                if let Some(url) = env.get("POSTGRESQL_URL").and_then(|v| v.known().map(str::to_owned)) {
                    prop_assert!(!harbor_iam_webhook::mutate::url_has_password(&url), "{}: URL keeps a password", c.name);
                }
            }
            // What /validate guarantees holds for what /mutate returns.
            prop_assert_eq!(validate(&typed, &common::config()), Ok(()));
            let text = serde_json::to_string(&eval.warnings).unwrap();
            prop_assert!(!text.contains("hunter2"), "a value leaked into warnings");
        }
    }

    #[test]
    fn sslmode_never_weaker(p in pod(true), with_facts in any::<bool>()) {
        let facts = if with_facts { facts() } else { Facts::default() };
        let component = p["metadata"]["labels"]["component"].as_str().unwrap().to_owned();
        let Some(var) = sslmode_var(&component) else { return Ok(()) };
        let (eval, out) = run(&p, &facts);
        prop_assume!(eval.decision == Decision::Mutated || eval.decision == Decision::Unchanged);
        let before: Vec<Container> = serde_json::from_value(p["spec"]["containers"].clone()).unwrap();
        let after: Vec<Container> = serde_json::from_value(out["spec"]["containers"].clone()).unwrap();
        for (b, a) in before.iter().zip(&after) {
            let was = Env::of(b, Some("harbor"), &facts).get(var);
            let now = Env::of(a, Some("harbor"), &facts).get(var);
            match (&was, &now) {
                (Some(EnvValue::Known { value: w, .. }), Some(EnvValue::Known { value: n, .. })) if is_strong(w) => {
                    prop_assert_eq!(w, n, "a strong sslmode was changed");
                }
                // Unknown stays as it was, unless our own blank of a password it copies made it
                // known: then it must end strong like any known value.
                (Some(EnvValue::Unknown { .. }), Some(EnvValue::Known { value: n, .. })) => {
                    prop_assert!(is_strong(n), "{var} ends weak: {n:?}");
                }
                (Some(EnvValue::Unknown { .. }), Some(EnvValue::Unknown { .. })) => {}
                (_, Some(EnvValue::Known { value: n, .. })) => prop_assert!(is_strong(n), "{var} ends weak: {n:?}"),
                _ => prop_assert!(false, "{var}: {was:?} became {now:?}"),
            }
        }
    }

    #[test]
    fn non_harbor_pods_are_unchanged(p in pod(false)) {
        let (eval, out) = run(&p, &facts());
        prop_assert!(eval.patch.0.is_empty());
        prop_assert_eq!(eval.decision, Decision::Skipped);
        prop_assert_eq!(out, p);
    }

    /// The review, which reads only what the engine reads and makes the patch from the fields
    /// it edits, gives what the engine gives of the whole typed pod: the patch applied to the
    /// raw request object is the engine's pod, and the warnings are the same.
    #[test]
    fn patch_gives_the_engines_pod(
        p in pod(true),
        with_facts in any::<bool>(),
        role in any::<bool>(),
    ) {
        let mut facts = if with_facts { facts() } else { Facts::default() };
        if role {
            // The IRSA account with a role: web identity (volumes, mounts, env) is injected too.
            facts.add_service_account(
                serde_json::from_value(json!({"metadata": {
                    "name": "harbor-sa", "namespace": "harbor",
                    "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/harbor"},
                }}))
                .unwrap(),
            );
        }
        let (eval, out) = run(&p, &facts);
        let (p_raw, out_raw) = (p.clone(), out.clone());
        let mut typed: Pod = serde_json::from_value(p).expect("generated pods are pods");
        if typed.metadata.namespace.is_none() {
            typed.metadata.namespace = Some("harbor".into());
        }
        match mutate(&typed, &common::config(), &facts) {
            Err(_) => prop_assert_eq!(eval.decision, Decision::Denied),
            Ok(m) => {
                let mut patched: Pod = serde_json::from_value(out).expect("the patched pod is a pod");
                if patched.metadata.namespace.is_none() {
                    patched.metadata.namespace = Some("harbor".into());
                }
                prop_assert_eq!(patched, m.pod);
                // And the patch names every field it changes: what differs between the request
                // and the patched pod lies under a field one of our operations names (a list's
                // later entries move when a blank is inserted, so lists count whole).
                let named: Vec<String> = eval.patch.0.iter().map(|op| {
                    let path = op.path().to_string();
                    let list = ["/env", "/volumeMounts", "/volumes", "/annotations"]
                        .iter()
                        .find_map(|l| path.find(&format!("{l}/")).map(|at| path[..at + l.len()].to_owned()));
                    list.unwrap_or(path)
                }).collect();
                for op in json_patch::diff(&p_raw, &out_raw).0 {
                    let path = op.path().to_string();
                    prop_assert!(named.iter().any(|n| path.starts_with(n.as_str())), "{path} changed, not named by {named:?}");
                }
                let said: Vec<String> = m.warnings.iter().map(|w| format!("harbor-iam-webhook: {w}")).collect();
                prop_assert_eq!(eval.warnings, said);
            }
        }
    }

    #[test]
    fn unknown_fields_preserved(p in pod(true)) {
        let (_, out) = run(&p, &facts());
        let mut before = Vec::new();
        unknown_fields(&p, String::new(), &mut before);
        let mut after = Vec::new();
        unknown_fields(&out, String::new(), &mut after);
        for field in &before {
            let count = |list: &[(String, Value)]| list.iter().filter(|f| *f == field).count();
            prop_assert!(count(&after) >= count(&before), "{} lost", field.0);
        }
    }

    /// `/validate` agrees with `/mutate`, for every configuration switch: what `/mutate`
    /// returns is admitted, and an incoming pod is refused exactly when `/mutate` (the opt-out
    /// annotation aside) would refuse it or change what the guarantees are about.
    #[test]
    fn validate_agrees_with_mutate(
        p in pod(true),
        with_facts in any::<bool>(),
        switches in any::<[bool; 6]>(),
        opted_out in any::<bool>(),
    ) {
        let facts = if with_facts { facts() } else { Facts::default() };
        let config = config_with(switches);
        let mut pod = typed(&p);
        if let Ok(m) = mutate(&pod, &config, &facts) {
            let verdict = judge(&m.pod, &config, &facts);
            prop_assert!(verdict.is_ok(), "mutated pod refused: {verdict:?}");
        }
        let expected = match mutate(&pod, &config, &facts) {
            Err(MutateError::PasswordInUrl { .. }) => true,
            // Refusals about the ServiceAccount are /mutate's alone.
            Err(_) => return Ok(()),
            Ok(m) if matches!(m.outcome, Outcome::Skipped(Skip::ImageNotIamCapable(_))) => false,
            Ok(m) => guarded(&pod) != guarded(&m.pod),
        };
        if opted_out {
            pod.metadata.annotations.get_or_insert_with(Default::default).insert(
                "harbor-iam-webhook/inject".into(),
                "disabled".into(),
            );
        }
        let verdict = judge(&pod, &config, &facts);
        prop_assert_eq!(verdict.is_err(), expected, "{:?}", verdict);
        if let Err(v) = verdict {
            prop_assert_eq!(v.opted_out, opted_out);
            prop_assert!(!v.to_string().contains("hunter2"));
        }
    }

    /// The API server refuses to overwrite an audit annotation with another value: a
    /// reinvocation reports what the first call reported.
    #[test]
    fn audit_is_the_same_on_reinvocation(
        p in pod(true),
        with_facts in any::<bool>(),
        switches in any::<[bool; 6]>(),
    ) {
        let mut facts = if with_facts { facts() } else { Facts::default() };
        facts.add_service_account(
            serde_json::from_value(json!({"metadata": {
                "name": "harbor-sa", "namespace": "harbor",
                "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/harbor"},
            }}))
            .unwrap(),
        );
        let config = config_with(switches);
        let Ok(once) = mutate(&typed(&p), &config, &facts) else { return Ok(()) };
        let again = mutate(&once.pod, &config, &facts).expect("a mutated pod is admitted again");
        prop_assert_eq!(&again.pod, &once.pod);
        prop_assert_eq!(again.audit, once.audit);
        for w in once.warnings.iter().chain(&again.warnings) {
            // With the admission layer's 20-character prefix: under 120.
            prop_assert!(w.chars().count() < 100, "{w}");
            prop_assert!(!w.chars().any(char::is_control), "{w:?}");
        }
    }
}
