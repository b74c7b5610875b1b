//! Cases of the kubelet's own `TestMakeEnvironmentVariables` (k8s.io/kubernetes v1.37.2,
//! `pkg/kubelet/kubelet_pods_test.go`) that concern ordering, optional references and `value`
//! against `valueFrom`, with the kubelet's expected results; where the engine can't see what the
//! kubelet sees (a `fieldRef`), the expected result is unknown. Generated cases are compared
//! with the kubelet's expansion code in `tests/kubelet_env.rs`.

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVarSource,
    ObjectFieldSelector, SecretEnvSource,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn lit(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: (!value.is_empty()).then(|| value.into()),
        value_from: None,
    }
}

fn cm_key(name: &str, cm: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: cm.into(),
                key: key.into(),
                optional: Some(optional),
            }),
            ..Default::default()
        }),
    }
}

fn from_cm(cm: &str, prefix: &str) -> EnvFromSource {
    EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: cm.into(),
            optional: None,
        }),
        prefix: (!prefix.is_empty()).then(|| prefix.into()),
        secret_ref: None,
    }
}

fn container(env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> Container {
    Container {
        name: "c".into(),
        env: Some(env),
        env_from: Some(env_from),
        ..Default::default()
    }
}

fn facts(cms: &[(&str, &[(&str, &str)])]) -> Facts {
    Facts::with_config_maps(cms.iter().map(|(name, data)| {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some((*name).into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }))
}

fn known(env: &Env, name: &str) -> Option<String> {
    env.get(name).and_then(|v| v.known().map(str::to_owned))
}

fn is_unknown(env: &Env, name: &str) -> bool {
    matches!(env.get(name), Some(Value::Unknown { .. }))
}

/// The kubelet's master-service variables of these cases.
fn kubernetes_service() -> BTreeMap<String, String> {
    [
        ("KUBERNETES_SERVICE_HOST", "1.2.3.1"),
        ("KUBERNETES_SERVICE_PORT", "8081"),
        ("KUBERNETES_PORT", "tcp://1.2.3.1:8081"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn kubelet_env_expansion() {
    let field = EnvVar {
        name: "POD_NAME".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: "metadata.name".into(),
            }),
            ..Default::default()
        }),
    };
    let c = container(
        vec![
            lit("TEST_LITERAL", "test-test-test"),
            field,
            lit("OUT_OF_ORDER_TEST", "$(OUT_OF_ORDER_TARGET)"),
            lit("OUT_OF_ORDER_TARGET", "FOO"),
            lit("EMPTY_VAR", ""),
            lit("EMPTY_TEST", "foo-$(EMPTY_VAR)"),
            lit("POD_NAME_TEST2", "test2-$(POD_NAME)"),
            lit("POD_NAME_TEST3", "$(POD_NAME_TEST2)-3"),
            lit("LITERAL_TEST", "literal-$(TEST_LITERAL)"),
            lit("TEST_UNDEFINED", "$(UNDEFINED_VAR)"),
        ],
        vec![],
    );
    let services = kubernetes_service();
    let f = Facts::default();
    let env = Env::with_services(&c, None, &f, Services::Known(&services));
    assert_eq!(
        known(&env, "TEST_LITERAL").as_deref(),
        Some("test-test-test")
    );
    assert_eq!(
        known(&env, "OUT_OF_ORDER_TEST").as_deref(),
        Some("$(OUT_OF_ORDER_TARGET)")
    );
    assert_eq!(known(&env, "OUT_OF_ORDER_TARGET").as_deref(), Some("FOO"));
    assert_eq!(known(&env, "EMPTY_VAR").as_deref(), Some(""));
    assert_eq!(known(&env, "EMPTY_TEST").as_deref(), Some("foo-"));
    assert_eq!(
        known(&env, "LITERAL_TEST").as_deref(),
        Some("literal-test-test-test")
    );
    assert_eq!(
        known(&env, "TEST_UNDEFINED").as_deref(),
        Some("$(UNDEFINED_VAR)")
    );
    assert_eq!(
        known(&env, "KUBERNETES_SERVICE_HOST").as_deref(),
        Some("1.2.3.1")
    );
    // The kubelet knows the pod's name ("dapi-test-pod-name"); the engine does not, nor
    // what is made of it.
    for name in ["POD_NAME", "POD_NAME_TEST2", "POD_NAME_TEST3"] {
        assert!(is_unknown(&env, name), "{name}");
    }
    // With the service links unknown, an undefined name that could be one is unknown too,
    // and one that could not stays as written.
    let env = Env::of(&c, None, &f);
    assert_eq!(
        known(&env, "TEST_UNDEFINED").as_deref(),
        Some("$(UNDEFINED_VAR)")
    );
    let c = container(vec![lit("X", "$(HARBOR_CORE_SERVICE_HOST)")], vec![]);
    assert!(is_unknown(&Env::of(&c, None, &f), "X"));
}

#[test]
fn kubelet_configmapkeyref_missing_key_optional() {
    let f = facts(&[("test-config-map", &[("a", "b")])]);
    let c = container(
        vec![cm_key("POD_NAME", "test-config-map", "key", true)],
        vec![],
    );
    let env = Env::of(&c, None, &f);
    assert_eq!(env.get("POD_NAME"), None, "skipped: nothing set");
    // Skipped, the earlier value stays (envFrom, or an earlier entry).
    let c = container(
        vec![cm_key("a", "test-config-map", "key", true)],
        vec![from_cm("test-config-map", "")],
    );
    assert_eq!(known(&Env::of(&c, None, &f), "a").as_deref(), Some("b"));
    let c = container(
        vec![
            lit("a", "first"),
            cm_key("a", "test-config-map", "key", true),
        ],
        vec![],
    );
    assert_eq!(known(&Env::of(&c, None, &f), "a").as_deref(), Some("first"));
}

#[test]
fn kubelet_configmapkeyref_missing_optional() {
    // The kubelet skips it; the engine can't tell a missing ConfigMap from one it was not
    // shown, so the value is unknown (never a guess).
    let c = container(
        vec![cm_key("POD_NAME", "missing-config-map", "key", true)],
        vec![],
    );
    assert!(is_unknown(
        &Env::of(&c, None, &Facts::default()),
        "POD_NAME"
    ));
}

#[test]
fn kubelet_configmap() {
    let f = facts(&[(
        "test-config-map",
        &[
            ("REPLACE_ME", "FROM_CONFIG_MAP"),
            ("DUPE_TEST", "CONFIG_MAP"),
        ],
    )]);
    let c = container(
        vec![
            lit("TEST_LITERAL", "test-test-test"),
            lit("EXPANSION_TEST", "$(REPLACE_ME)"),
            lit("DUPE_TEST", "ENV_VAR"),
        ],
        vec![
            from_cm("test-config-map", ""),
            from_cm("test-config-map", "p_"),
        ],
    );
    let env = Env::of(&c, None, &f);
    for (name, value) in [
        ("TEST_LITERAL", "test-test-test"),
        ("REPLACE_ME", "FROM_CONFIG_MAP"),
        ("EXPANSION_TEST", "FROM_CONFIG_MAP"),
        ("DUPE_TEST", "ENV_VAR"),
        ("p_REPLACE_ME", "FROM_CONFIG_MAP"),
        ("p_DUPE_TEST", "CONFIG_MAP"),
    ] {
        assert_eq!(known(&env, name).as_deref(), Some(value), "{name}");
    }
}

#[test]
fn kubelet_configmap_invalid_keys_valid() {
    let f = facts(&[("test-config-map", &[("1234", "abc")])]);
    let c = container(vec![], vec![from_cm("test-config-map", "p_")]);
    assert_eq!(
        known(&Env::of(&c, None, &f), "p_1234").as_deref(),
        Some("abc")
    );
}

#[test]
fn later_duplicates_win_and_expansion_sees_only_what_came_before() {
    let c = container(
        vec![
            lit("A", "1"),
            lit("B", "$(A)"),
            lit("A", "2"),
            lit("C", "$(A)$$(A)$(A"),
        ],
        vec![],
    );
    let f = Facts::default();
    let env = Env::of(&c, None, &f);
    assert_eq!(known(&env, "A").as_deref(), Some("2"));
    assert_eq!(known(&env, "B").as_deref(), Some("1"));
    assert_eq!(known(&env, "C").as_deref(), Some("2$(A)$(A"));
    assert_eq!(env.before(1, "A"), env.entry(0).cloned());
    assert_eq!(env.before(0, "A"), None);
}

#[test]
fn a_secret_sets_anything_but_sslmode_and_the_url() {
    let c = container(
        vec![],
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "harbor-core".into(),
                optional: None,
            }),
            ..Default::default()
        }],
    );
    let f = Facts::default();
    let env = Env::of(&c, None, &f);
    assert!(is_unknown(&env, "POSTGRESQL_PASSWORD"));
    assert!(is_unknown(&env, "ANYTHING"));
    for name in [POSTGRESQL_SSLMODE, HARBOR_DATABASE_SSLMODE, POSTGRESQL_URL] {
        assert_eq!(env.get(name), None, "{name}");
    }
}

#[test]
fn pieces_as_the_kubelet_reads_them() {
    use Piece::{Ref, Text};
    assert_eq!(pieces("a$(B)c"), vec![Text("a"), Ref("B"), Text("c")]);
    assert_eq!(pieces("$$(B)"), vec![Text("$"), Text("(B)")]);
    assert_eq!(pieces("$(B"), vec![Text("$("), Text("B")]);
    assert_eq!(pieces("$()"), vec![Ref("")]);
    assert_eq!(pieces("$($(A))"), vec![Ref("$(A"), Text(")")]);
    assert_eq!(pieces("x$"), vec![Text("x$")]);
    assert_eq!(pieces("$é$"), vec![Text("$é"), Text("$")]);
    assert!(references("u:$(P)@h", "P"));
    assert!(!references("u:$$(P)@h", "P"));
}

#[test]
fn expansion_past_the_budget_is_unknown() {
    // Each entry doubles the last: 2^30 bytes if followed to the end.
    let mut env = vec![lit("V0", "0123456789abcdef")];
    for i in 1..30 {
        env.push(lit(&format!("V{i}"), &format!("$(V{p})$(V{p})", p = i - 1)));
    }
    let c = container(env, vec![]);
    let f = Facts::default();
    let env = Env::of(&c, None, &f);
    assert_eq!(known(&env, "V4").map(|v| v.len()), Some(16 << 4));
    assert!(is_unknown(&env, "V29"));
}
