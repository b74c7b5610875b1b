//! Properties of the engine over generated pods (raw JSON, so unknown fields ride along).

mod common;

use harbor_iam_webhook::admission::{Decision, evaluate};
use harbor_iam_webhook::facts::Facts;
use harbor_iam_webhook::mutate::mutate;
use harbor_iam_webhook::mutate::sslmode::{Effective, effective, is_strong};
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
            json!({"POSTGRESQL_SSLMODE": "disable", "HARBOR_DATABASE_SSLMODE": "allow", "SSLMODE": "prefer"}),
        ),
        cm(
            "cm-strong",
            json!({"POSTGRESQL_SSLMODE": "verify-full", "HARBOR_DATABASE_SSLMODE": "verify-ca", "SSLMODE": "require"}),
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
        prop::sample::select(CONFIG_MAPS).prop_map(|cm| json!({"valueFrom": {"configMapKeyRef": {"name": cm, "key": "POSTGRESQL_SSLMODE"}}})),
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
                for (i, c) in init.iter_mut().enumerate() {
                    c["name"] = json!(format!("init{i}"));
                }
                let labels = if harbor {
                    json!({"app": "harbor", "component": component})
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

/// Every object key path in `v` that starts with "future", with its value.
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
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| unknown_fields(x, format!("{path}/{i}"), out)),
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
        if eval.decision == Decision::Mutated || eval.decision == Decision::Unchanged {
            let component = p["metadata"]["labels"]["component"].as_str().unwrap();
            for list in ["containers", "initContainers"] {
                for c in out["spec"][list].as_array().into_iter().flatten() {
                    for e in c["env"].as_array().into_iter().flatten() {
                        let name = e["name"].as_str().unwrap();
                        let guarded = name == "POSTGRESQL_PASSWORD" || (component == "exporter" && name == "HARBOR_DATABASE_PASSWORD");
                        if guarded {
                            prop_assert!(common::is_blank(e), "{list} {}: {e}", c["name"]);
                        }
                    }
                    let secret_from = c["envFrom"].as_array().into_iter().flatten().any(|s| s.get("secretRef").is_some());
                    if secret_from {
                        let has = |n: &str| c["env"].as_array().into_iter().flatten().any(|e| e["name"] == n);
                        prop_assert!(has("POSTGRESQL_PASSWORD"));
                        if component == "exporter" {
                            prop_assert!(has("HARBOR_DATABASE_PASSWORD"));
                        }
                    }
                }
            }
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
            let was = effective(b, var, Some("harbor"), &facts);
            let now = effective(a, var, Some("harbor"), &facts);
            match (&was, &now) {
                (Effective::Known { value: w, .. }, Effective::Known { value: n, .. }) if is_strong(w) => {
                    prop_assert_eq!(w, n, "a strong sslmode was changed");
                }
                (Effective::Unknown { .. }, _) => {
                    prop_assert_eq!(&was, &now, "an unknown sslmode was touched");
                }
                (_, Effective::Known { value: n, .. }) => prop_assert!(is_strong(n), "{var} ends weak: {n:?}"),
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
    /// it edits, says what the engine says of the whole typed pod: the same warnings, and as
    /// patch the whole-pod diff (the typed pod before and after, as `json_patch::diff` sees
    /// them).
    #[test]
    fn patch_is_the_whole_pod_diff(
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
        let (eval, _) = run(&p, &facts);
        let mut typed: Pod = serde_json::from_value(p).expect("generated pods are pods");
        if typed.metadata.namespace.is_none() {
            typed.metadata.namespace = Some("harbor".into());
        }
        match mutate(&typed, &common::config(), &facts) {
            Err(_) => prop_assert_eq!(eval.decision, Decision::Denied),
            Ok(m) => {
                let whole = json_patch::diff(
                    &serde_json::to_value(&typed).unwrap(),
                    &serde_json::to_value(&m.pod).unwrap(),
                );
                prop_assert_eq!(eval.patch, whole);
                // And it says what the engine says of the whole pod.
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
        for (path, value) in before {
            prop_assert_eq!(out.pointer(&path), Some(&value), "{} lost", path);
        }
    }
}
