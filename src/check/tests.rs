use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ServiceReference, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, PodStatus, Secret, ServiceAccount};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};
use serde::Deserialize;

use super::*;
use crate::facts::Facts;

fn first_doc<T: serde::de::DeserializeOwned>(path: &str) -> T {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        // YAML 1.1 octal, which kubectl reads and a YAML 1.2 parser does not.
        .replace("defaultMode: 0440", "defaultMode: 288");
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = serde_json::Value::deserialize(doc).unwrap();
        if !v.is_null() {
            return serde_json::from_value(v).unwrap();
        }
    }
    panic!("{path}: no document");
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The shipped MutatingWebhookConfiguration, as our webhook reference.
fn shipped_webhook() -> WebhookRef {
    let mwc: MutatingWebhookConfiguration =
        first_doc("manifests/base/mutatingwebhookconfiguration.yaml");
    webhooks_of(&[mwc], &[]).remove(0)
}

fn other_webhook(
    side_effects: &str,
    resources: &[&str],
    ns_selector: Option<LabelSelector>,
) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("other".into()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "other.example.com".into(),
            side_effects: side_effects.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: WebhookClientConfig {
                service: Some(ServiceReference {
                    name: "x".into(),
                    namespace: "y".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            namespace_selector: ns_selector,
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(resources.iter().map(|r| r.to_string()).collect()),
                scope: None,
            }]),
            ..Default::default()
        }]),
    }
}

fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
    let mut l = map(labels);
    l.insert("kubernetes.io/metadata.name".into(), name.into());
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(l),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn selectors_follow_the_api_rules() {
    let labels = map(&[("a", "1"), ("b", "2")]);
    assert_eq!(selector_matches(None, &labels), Ok(()));
    let sel = |op: &str, key: &str, values: &[&str]| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }]),
        ..Default::default()
    };
    assert!(selector_matches(Some(&sel("In", "a", &["1", "3"])), &labels).is_ok());
    assert!(selector_matches(Some(&sel("In", "a", &["3"])), &labels).is_err());
    assert!(selector_matches(Some(&sel("NotIn", "a", &["3"])), &labels).is_ok());
    assert!(selector_matches(Some(&sel("NotIn", "z", &["3"])), &labels).is_ok());
    let err = selector_matches(Some(&sel("NotIn", "b", &["2"])), &labels).unwrap_err();
    assert_eq!(err, "matchExpressions b NotIn [2]");
    assert!(selector_matches(Some(&sel("Exists", "a", &[])), &labels).is_ok());
    assert!(selector_matches(Some(&sel("DoesNotExist", "a", &[])), &labels).is_err());
    let ml = LabelSelector {
        match_labels: Some(map(&[("a", "2")])),
        ..Default::default()
    };
    assert_eq!(
        selector_matches(Some(&ml), &labels),
        Err("matchLabels a=2".into())
    );
}

#[test]
fn namespace_needs_the_label_and_the_selector() {
    let w = shipped_webhook();
    let missing = judge_namespace("harbor", None, Some(&w));
    assert_eq!(missing.status, Status::Fail);
    let unlabelled = judge_namespace("harbor", Some(&ns("harbor", &[])), Some(&w));
    assert_eq!(unlabelled.status, Status::Fail);
    assert_eq!(
        unlabelled.hint,
        "kubectl label namespace harbor harbor-iam-webhook/inject=enabled"
    );
    let on = [(NAMESPACE_OPT_IN_LABEL, "enabled")];
    assert_eq!(
        judge_namespace("harbor", Some(&ns("harbor", &on)), Some(&w)).status,
        Status::Ok
    );
    // The shipped selector excludes the webhook's own namespace even when labelled.
    let own = judge_namespace(
        "harbor-iam-webhook",
        Some(&ns("harbor-iam-webhook", &on)),
        Some(&w),
    );
    assert_eq!(own.status, Status::Fail);
    assert!(
        own.message
            .contains("kubernetes.io/metadata.name NotIn [harbor-iam-webhook]"),
        "{}",
        own.message
    );
}

fn sa(annotations: &[(&str, &str)]) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some("harbor-sa".into()),
            annotations: Some(map(annotations)),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn service_account_needs_a_role_in_irsa_mode() {
    let arn = "arn:aws:iam::111122223333:role/harbor-rds";
    let c = |s: Option<&ServiceAccount>, m| judge_service_account("harbor", "harbor-sa", s, m);
    assert_eq!(
        c(
            Some(&sa(&[(EKS_ROLE_ARN_ANNOTATION, arn)])),
            IdentityMode::Irsa
        )
        .status,
        Status::Ok
    );
    let none = c(None, IdentityMode::Irsa);
    assert_eq!(none.status, Status::Fail);
    assert!(none.hint.starts_with("kubectl -n harbor create serviceaccount harbor-sa && kubectl -n harbor annotate serviceaccount harbor-sa eks.amazonaws.com/role-arn="));
    let no_role = c(Some(&sa(&[])), IdentityMode::Irsa);
    assert_eq!(no_role.status, Status::Fail);
    assert!(
        no_role
            .hint
            .starts_with("kubectl -n harbor annotate serviceaccount harbor-sa")
    );
    let typo = c(
        Some(&sa(&[(EKS_ROLE_ARN_ANNOTATION, "harbor-rds")])),
        IdentityMode::Irsa,
    );
    assert_eq!(typo.status, Status::Warn);
    // Pod identity: no role annotation needed, but the account must exist.
    assert_eq!(
        c(Some(&sa(&[])), IdentityMode::PodIdentity).status,
        Status::Ok
    );
    let pi = c(None, IdentityMode::PodIdentity);
    assert_eq!(
        (pi.status, pi.hint.as_str()),
        (
            Status::Fail,
            "kubectl -n harbor create serviceaccount harbor-sa"
        )
    );
}

#[test]
fn configuration_must_let_dry_runs_through() {
    let mut w = shipped_webhook();
    assert_eq!(judge_configuration(&w).status, Status::Ok);
    w.side_effects = "Unknown".into();
    let c = judge_configuration(&w);
    assert_eq!(c.status, Status::Fail);
    assert_eq!(
        c.hint,
        r#"kubectl patch mutatingwebhookconfiguration harbor-iam-webhook --type=json -p '[{"op":"replace","path":"/webhooks/0/sideEffects","value":"None"}]'"#
    );
}

#[test]
fn endpoints_are_counted_when_ready() {
    let ep = |ready: Option<bool>, n: usize| Endpoint {
        addresses: (0..n).map(|i| format!("10.0.0.{i}")).collect(),
        conditions: Some(EndpointConditions {
            ready,
            ..Default::default()
        }),
        ..Default::default()
    };
    let slice = EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: Some(vec![ep(Some(true), 1), ep(None, 1), ep(Some(false), 3)]),
        ..Default::default()
    };
    assert_eq!(ready_in_slices(&[slice]), 2);
    let down = judge_endpoints("hw", "svc", true, 0, Some("dep"));
    assert_eq!(down.status, Status::Fail);
    assert_eq!(down.hint, "kubectl -n hw rollout status deployment/dep");
    assert_eq!(
        judge_endpoints("hw", "svc", true, 2, None).status,
        Status::Ok
    );
    assert_eq!(
        judge_endpoints("hw", "svc", false, 0, None).status,
        Status::Fail
    );
}

#[test]
fn other_webhooks_with_side_effects_block_dry_runs() {
    let labels = ns("harbor", &[]).metadata.labels.unwrap();
    let found =
        |c: MutatingWebhookConfiguration| dry_run_blockers(&webhooks_of(&[c], &[]), &labels);
    let blocking = found(other_webhook("Unknown", &["pods"], None));
    assert_eq!(blocking.len(), 1);
    assert_eq!(blocking[0].status, Status::Warn);
    assert_eq!(blocking[0].name, "admission webhook other.example.com");
    assert!(found(other_webhook("NoneOnDryRun", &["pods"], None)).is_empty());
    assert!(found(other_webhook("Some", &["deployments"], None)).is_empty());
    let elsewhere = LabelSelector {
        match_labels: Some(map(&[("kubernetes.io/metadata.name", "other")])),
        ..Default::default()
    };
    assert!(found(other_webhook("Some", &["*"], Some(elsewhere))).is_empty());
    assert_eq!(found(other_webhook("Some", &["*"], None)).len(), 1);
    // Ours never counts as someone else's.
    let mut ours = shipped_webhook();
    ours.side_effects = "Unknown".into();
    assert!(dry_run_blockers(&[ours], &labels).is_empty());
}

fn core_fixture() -> Pod {
    first_doc("tests/fixtures/pods/harbor-helm-1.16-core.yaml")
}

fn workload_of(pod: &Pod, kind: &'static str, name: &str) -> Workload {
    Workload {
        kind,
        name: name.into(),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: pod.metadata.labels.clone(),
                annotations: pod.metadata.annotations.clone(),
                ..Default::default()
            }),
            spec: pod.spec.clone(),
        },
    }
}

#[test]
fn dry_run_result_must_carry_the_mutation() {
    let config = MutateConfig::new("eu-west-1");
    let pod = core_fixture();
    let w = workload_of(&pod, "deployment", "harbor-core");
    let target = w.target(&config);
    assert_eq!(target, Target::Mutate(crate::mutate::Component::Core));
    let admitted = crate::mutate::mutate(&w.pod("harbor"), &config, &Facts::default())
        .unwrap()
        .pod;
    let no_role = |_: &str| false;
    let warnings = vec!["image goharbor/harbor-core:v2.12.4 is not known".to_owned()];
    let ok = judge_dry_run(&w, &target, &admitted, &warnings, &config, &no_role);
    assert_eq!(ok.status, Status::Ok, "{ok:?}");
    assert_eq!(ok.name, "dry run deployment/harbor-core");
    assert!(ok.message.starts_with("core: IAM env set, password blank, ServiceAccount harbor-sa\nwebhook warning: image goharbor"));

    // Not mutated at all (namespace not selected, webhook skipped).
    let plain = judge_dry_run(&w, &target, &pod, &[], &config, &no_role);
    assert_eq!(plain.status, Status::Fail);
    assert!(plain.message.contains("admitted without the mutation"));

    // Mutated by a webhook configured for another region.
    let other = crate::mutate::mutate(&pod, &MutateConfig::new("us-east-1"), &Facts::default())
        .unwrap()
        .pod;
    let wrong = judge_dry_run(&w, &target, &other, &[], &config, &no_role);
    assert_eq!(wrong.status, Status::Fail);
    assert!(
        wrong.message.contains("POSTGRESQL_AWS_REGION=us-east-1"),
        "{}",
        wrong.message
    );

    // The password came back (e.g. a later webhook added it).
    let mut leaked = admitted.clone();
    leaked.spec.as_mut().unwrap().containers[0]
        .env
        .as_mut()
        .unwrap()
        .push(k8s_openapi::api::core::v1::EnvVar {
            name: "POSTGRESQL_PASSWORD".into(),
            value: Some("x".into()),
            value_from: None,
        });
    let bad = judge_dry_run(&w, &target, &leaked, &[], &config, &no_role);
    assert_eq!(bad.status, Status::Fail);
    assert!(
        bad.message
            .contains("POSTGRESQL_PASSWORD from a literal value"),
        "{}",
        bad.message
    );
    assert!(!bad.message.contains("\"x\""));

    // The pod's own ServiceAccount with a role is kept by the webhook: fine.
    let mut own = admitted.clone();
    own.spec.as_mut().unwrap().service_account_name = Some("core-own".into());
    assert_eq!(
        judge_dry_run(&w, &target, &own, &[], &config, &|s| s == "core-own").status,
        Status::Ok
    );
    assert_eq!(
        judge_dry_run(&w, &target, &own, &[], &config, &no_role).status,
        Status::Fail
    );

    // A component without a database: admitted is enough.
    let portal: Pod = first_doc("tests/fixtures/pods/harbor-helm-1.16-portal.yaml");
    let pw = workload_of(&portal, "deployment", "harbor-portal");
    let c = judge_dry_run(&pw, &pw.target(&config), &portal, &[], &config, &no_role);
    assert_eq!(c.status, Status::Ok);
    assert!(c.message.contains("portal has no database connection"));
}

#[test]
fn refused_dry_runs() {
    let w = workload_of(&core_fixture(), "deployment", "harbor-core");
    let se = judge_dry_run_error(
        &w,
        "look",
        r#"admission webhook "other.example.com" does not support dry run"#,
    );
    assert_eq!(se.status, Status::Warn);
    assert!(
        se.message
            .contains("admission webhook other.example.com does not support dry run")
    );
    let down = judge_dry_run_error(
        &w,
        "kubectl -n hw get pods",
        r#"Internal error occurred: failed calling webhook "mutate.harbor-iam-webhook.io": connection refused"#,
    );
    assert_eq!(
        (down.status, down.hint.as_str()),
        (Status::Fail, "kubectl -n hw get pods")
    );
    let denied = judge_dry_run_error(
        &w,
        "look",
        r#"admission webhook "mutate.harbor-iam-webhook.io" denied the request: IRSA ServiceAccount"#,
    );
    assert_eq!(denied.status, Status::Fail);
    assert!(denied.message.contains("denied the request"));
}

fn running(mut p: Pod, phase: &str) -> Pod {
    p.metadata.name = Some(format!("harbor-core-{}", phase.to_lowercase()));
    p.status = Some(PodStatus {
        phase: Some(phase.into()),
        ..Default::default()
    });
    p
}

#[test]
fn running_pods_not_injected_are_warnings_with_the_restart() {
    let config = MutateConfig::new("eu-west-1");
    let raw = running(core_fixture(), "Running");
    let pending = running(core_fixture(), "Pending");
    let injected = running(
        crate::mutate::mutate(&core_fixture(), &config, &Facts::default())
            .unwrap()
            .pod,
        "Running",
    );
    let (checks, n) = judge_pods("harbor", &[raw, pending, injected.clone()], &config);
    assert_eq!(n, 1);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, Status::Warn);
    assert_eq!(checks[0].name, "pod harbor/harbor-core-running");
    assert_eq!(
        checks[0].hint,
        "kubectl -n harbor rollout restart deployment/harbor-core"
    );
    let (ok, n) = judge_pods("harbor", &[injected], &config);
    assert_eq!((n, ok[0].status), (0, Status::Ok));
    assert_eq!(ok[0].message, "1 running Harbor DB pod(s), all injected");
}

fn secret(labels: &[(&str, &str)], data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("harbor-core".into()),
            labels: Some(map(labels)),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[test]
fn secrets_holding_a_password_name_the_values_fix_never_the_value() {
    let config = MutateConfig::new("eu-west-1");
    let core = workload_of(&core_fixture(), "deployment", "harbor-core");
    let next: Pod = first_doc("tests/fixtures/pods/harbor-next-3.0-core.yaml");
    let next = workload_of(&next, "deployment", "harbor-next-core");
    let sources = password_sources(&[core, next], &config);
    assert_eq!(
        sources.keys().cloned().collect::<Vec<_>>(),
        ["harbor-core", "harbor-next-core", "harbor-next-database"]
    );
    let src = &sources["harbor-core"];
    assert!(src.keys.contains("POSTGRESQL_PASSWORD"));
    let helm = [
        ("heritage", "Helm"),
        ("release", "harbor"),
        ("app", "harbor"),
    ];
    let held = judge_secret(
        "harbor",
        "harbor-core",
        src,
        &secret(
            &helm,
            &[("POSTGRESQL_PASSWORD", "hunter2"), ("secretKey", "k")],
        ),
    )
    .unwrap();
    assert_eq!(held.status, Status::Warn);
    assert!(
        held.message
            .contains("in POSTGRESQL_PASSWORD (read by deployment/harbor-core)"),
        "{}",
        held.message
    );
    assert!(held.hint.contains("database.external.password: \"\""));
    assert!(
        held.hint
            .contains("helm -n harbor upgrade harbor harbor/harbor")
    );
    assert!(!format!("{held:?}").contains("hunter2"));
    assert_eq!(
        judge_secret(
            "harbor",
            "harbor-core",
            src,
            &secret(&helm, &[("POSTGRESQL_PASSWORD", "")])
        ),
        None
    );

    let nsrc = &sources["harbor-next-database"];
    let nlabels = [
        ("app.kubernetes.io/name", "harbor-next"),
        ("app.kubernetes.io/managed-by", "Helm"),
        ("app.kubernetes.io/instance", "harbor-next"),
    ];
    let n = judge_secret(
        "harbor",
        "harbor-next-database",
        nsrc,
        &secret(&nlabels, &[("POSTGRESQL_PASSWORD", "hunter2")]),
    )
    .unwrap();
    assert!(n.hint.starts_with("in Harbor's Helm values set database.password: \"\", then helm -n harbor upgrade harbor-next"), "{}", n.hint);
    let own = judge_secret(
        "harbor",
        "harbor-core",
        src,
        &secret(&[], &[("POSTGRESQL_PASSWORD", "hunter2")]),
    )
    .unwrap();
    assert!(own.hint.starts_with(r#"kubectl -n harbor patch secret harbor-core --type=json -p '[{"op":"replace","path":"/data/POSTGRESQL_PASSWORD","value":""}]'"#), "{}", own.hint);
}

fn shipped_deployment() -> Deployment {
    let mut d: Deployment = first_doc("manifests/base/deployment.yaml");
    // What kustomize's configMapGenerator makes of the reference.
    let c = &mut d.spec.template.spec.as_mut().unwrap().containers[0];
    c.env_from.as_mut().unwrap()[0]
        .config_map_ref
        .as_mut()
        .unwrap()
        .name = "harbor-iam-webhook-config-abc".into();
    d
}

fn config_env(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeMap<String, String>> {
    BTreeMap::from([("harbor-iam-webhook-config-abc".to_owned(), map(pairs))])
}

#[test]
fn configuration_is_learned_from_the_deployment() {
    let d = shipped_deployment();
    assert_eq!(
        learn::config_map_names(&d),
        ["harbor-iam-webhook-config-abc"]
    );
    let l = learn::learn(
        &d,
        &config_env(&[
            ("AWS_REGION", "eu-west-1"),
            ("HARBOR_IAM_WEBHOOK_SERVICE_ACCOUNT", "rds-sa"),
        ]),
    )
    .unwrap();
    assert_eq!(l.config.region, "eu-west-1");
    assert_eq!(l.config.service_account, "rds-sa");
    assert_eq!(l.config.identity_mode, IdentityMode::Irsa);
    assert_eq!(
        l.tls_secret,
        Some(("harbor-iam-webhook-tls".into(), "tls.crt".into()))
    );
    let s = learn::summary(&d, &l);
    assert_eq!(
        s.message,
        "Deployment harbor-iam-webhook/harbor-iam-webhook: region eu-west-1, identity mode irsa, ServiceAccount rds-sa"
    );

    // Flags beat the environment, as for serve; env flags without values are switches.
    let mut d2 = d.clone();
    let c = &mut d2.spec.template.spec.as_mut().unwrap().containers[0];
    c.args.as_mut().unwrap().extend([
        "--identity-mode".into(),
        "pod-identity".into(),
        "--aws-region=us-west-2".into(),
    ]);
    let l = learn::learn(
        &d2,
        &config_env(&[
            ("AWS_REGION", "eu-west-1"),
            ("HARBOR_IAM_WEBHOOK_REGISTRY_S3_IRSA", "true"),
            ("HARBOR_IAM_WEBHOOK_STRICT_IMAGES", "false"),
        ]),
    )
    .unwrap();
    assert_eq!(l.config.region, "us-west-2");
    assert_eq!(l.config.identity_mode, IdentityMode::PodIdentity);
    assert!(l.config.registry_s3_irsa);
    assert!(!l.config.strict_images);

    // The shipped config.env leaves the region empty: the webhook would not start.
    let fail = learn::learn(&d, &config_env(&[("AWS_REGION", "")])).unwrap_err();
    assert_eq!(fail.status, Status::Fail);
    assert!(fail.message.contains("no AWS region"), "{}", fail.message);
    // A ConfigMap that is not there sets nothing.
    assert!(learn::learn(&d, &BTreeMap::new()).is_err());

    // No --tls-cert: a development certificate nobody trusts.
    let mut dev = d.clone();
    dev.spec.template.spec.as_mut().unwrap().containers[0].args = Some(vec!["serve".into()]);
    let l = learn::learn(&dev, &config_env(&[("AWS_REGION", "eu-west-1")])).unwrap();
    assert_eq!(l.tls_secret, None);
    // A bad flag is what the webhook would die of.
    let mut bad = d.clone();
    bad.spec.template.spec.as_mut().unwrap().containers[0]
        .args
        .as_mut()
        .unwrap()
        .push("--no-such-flag".into());
    let e = learn::learn(&bad, &config_env(&[("AWS_REGION", "eu-west-1")])).unwrap_err();
    assert!(e.message.contains("--no-such-flag"), "{}", e.message);
}

#[test]
fn the_service_selects_the_deployment() {
    let d = shipped_deployment();
    let sel = map(&[
        ("app.kubernetes.io/name", "harbor-iam-webhook"),
        ("app.kubernetes.io/component", "webhook"),
    ]);
    assert!(learn::deployment_for_service(std::slice::from_ref(&d), &sel).is_some());
    assert!(learn::deployment_for_service(&[d], &map(&[("app", "x")])).is_none());
}

#[test]
fn report_text_and_json() {
    let mut r = Report::default();
    r.push(Check::ok("a", "fine"));
    r.push(Check::warn("b", "meh\nmore", "do b"));
    assert!(!r.failed());
    r.push(Check::fail("c", "broken", "do c"));
    assert!(r.failed());
    assert_eq!(
        r.text(),
        "✔ a: fine\n⚠ b: meh\n    more\n    fix: do b\n✘ c: broken\n    fix: do c\n1 ok, 1 warning(s), 1 failed\n"
    );
    let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(
        v["checks"][2],
        serde_json::json!({"name": "c", "status": "fail", "message": "broken", "hint": "do c"})
    );
    assert_eq!(v["checks"][0]["hint"], "");
}

#[test]
fn permission_errors_name_the_verb_and_resource() {
    let err = kube::Error::Api(Box::new(
        kube::core::Status::failure(
            r#"secrets "harbor-iam-webhook-tls" is forbidden: User "system:serviceaccount:hw:checker" cannot get resource "secrets" in API group "" in the namespace "hw""#,
            "Forbidden",
        )
        .with_code(403),
    ));
    let c = api_failure("webhook certificate", "get", "secrets", Some("hw"), &err);
    assert_eq!(c.status, Status::Fail);
    assert_eq!(
        c.message,
        "cannot check: no permission to get secrets in namespace hw"
    );
    assert_eq!(
        c.hint,
        "grant get on secrets in namespace hw to the identity running check (kubectl auth can-i get secrets -n hw)"
    );
    // Admission plugins answer 403 as well: that is not a missing permission.
    let admission = kube::Error::Api(Box::new(
        kube::core::Status::failure(
            r#"pods "harbor-core-" is forbidden: error looking up service account harbor/harbor-sa: serviceaccount "harbor-sa" not found"#,
            "Forbidden",
        )
        .with_code(403),
    ));
    let c = api_failure("dry run", "create", "pods", Some("harbor"), &admission);
    assert!(
        c.message.contains("error looking up service account"),
        "{}",
        c.message
    );
    assert!(!c.message.contains("no permission"));
}
