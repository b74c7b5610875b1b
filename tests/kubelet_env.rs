//! Differential test: the engine's model of the kubelet ([`Env`]) against the kubelet's own
//! expansion code, over generated containers (random env lists with `$(…)`, `$$`, nesting,
//! undefined names, duplicates, `envFrom` prefixes, optional references to missing keys,
//! service-link variables). The Go side is `tests/e2e/tools/v1.37/kubeletenv`, which imports
//! `k8s.io/kubernetes/third_party/forked/golang/expansion`; it needs `go` and the Go module
//! proxy (or a warm module cache), as the end-to-end suite does.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use harbor_iam_webhook::facts::Facts;
use harbor_iam_webhook::mutate::effective::{Env, Services, Value as EnvValue};
use k8s_openapi::api::core::v1::{ConfigMap, Container};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

const CASES: usize = 4000;

const NAMES: &[&str] = &["A", "B", "C", "P_A", "P_B", "SVC_SERVICE_HOST", "é"];
const FRAGMENTS: &[&str] = &[
    "x",
    "-",
    "$",
    "$$",
    "$(",
    ")",
    "(",
    "$(A)",
    "$(B)",
    "$(C)",
    "$(P_A)",
    "$(P_B)",
    "$(é)",
    "$(SVC_SERVICE_HOST)",
    "$(SVC_PORT)",
    "$(UNDEFINED)",
    "$()",
    "$(A",
    "$$(A)",
    "$$$(A)",
    "é",
    "$é",
    "$x",
    "$($(A))",
    "$(A)$(A)",
];

fn value() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..5).prop_map(|f| f.concat())
}

fn config_maps() -> impl Strategy<Value = BTreeMap<String, BTreeMap<String, String>>> {
    let data = prop::collection::btree_map(
        prop::sample::select(&["A", "B", "C", "1234"][..]).prop_map(str::to_owned),
        value(),
        0..4,
    );
    prop::collection::btree_map(
        prop::sample::select(&["cm-a", "cm-b"][..]).prop_map(str::to_owned),
        data,
        0..3,
    )
}

fn env_entry(cms: Vec<String>) -> impl Strategy<Value = Value> {
    let reference = (
        prop::sample::select(if cms.is_empty() {
            vec!["cm-a".to_owned()]
        } else {
            cms
        }),
        prop::sample::select(&["A", "B", "MISSING"][..]),
        any::<bool>(),
    );
    (
        prop::sample::select(NAMES),
        prop_oneof![
            3 => value().prop_map(|v| json!({"value": v})),
            1 => Just(json!({})),
            1 => reference.prop_map(|(cm, key, optional)| {
                json!({"valueFrom": {"configMapKeyRef": {"name": cm, "key": key, "optional": optional}}})
            }),
        ],
    )
        .prop_map(|(name, mut e)| {
            e["name"] = json!(name);
            e
        })
}

fn case() -> impl Strategy<Value = Value> {
    (
        config_maps(),
        prop::collection::btree_map(
            prop::sample::select(&["SVC_SERVICE_HOST", "SVC_PORT", "A"][..])
                .prop_map(str::to_owned),
            value(),
            0..3,
        ),
    )
        .prop_flat_map(|(cms, services)| {
            let names: Vec<String> = cms.keys().cloned().collect();
            let env_from = prop::collection::vec(
                (
                    prop::sample::select(if names.is_empty() {
                        vec!["cm-a".to_owned()]
                    } else {
                        names.clone()
                    }),
                    prop::sample::select(&["", "P_"][..]),
                ),
                0..3,
            );
            (
                Just(cms),
                Just(services),
                env_from,
                prop::collection::vec(env_entry(names), 0..7),
            )
        })
        .prop_map(|(cms, services, env_from, env)| {
            // Only ConfigMaps that exist are referenced whole: the engine can't know that one
            // does not exist, so an optional missing source is a case for the unit tests.
            let env_from: Vec<Value> = env_from
                .into_iter()
                .filter(|(cm, _)| cms.contains_key(cm))
                .map(|(cm, prefix)| json!({"configMapRef": {"name": cm}, "prefix": prefix}))
                .collect();
            // A reference to a missing key is optional: a required one stops the container.
            let env: Vec<Value> = env
                .into_iter()
                .map(|mut e| {
                    if let Some(r) = e.pointer_mut("/valueFrom/configMapKeyRef") {
                        let (cm, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                        match cms.get(cm) {
                            // Likewise a reference into a ConfigMap that does not exist.
                            None => return json!({"name": e["name"], "value": "x"}),
                            Some(data) if !data.contains_key(key) => r["optional"] = json!(true),
                            Some(_) => {}
                        }
                    }
                    e
                })
                .collect();
            json!({
                "configMaps": cms,
                "services": services,
                "container": {"name": "c", "envFrom": env_from, "env": env},
            })
        })
}

/// The kubelet's answers, from the Go program.
fn kubelet(cases: &[Value]) -> Vec<Value> {
    common::go_run("v1.37", "./kubeletenv", &cases)
}

/// The engine's model of the same container, everything known.
fn ours(case: &Value) -> BTreeMap<String, String> {
    let container: Container = serde_json::from_value(case["container"].clone()).unwrap();
    let mut facts = Facts::default();
    for (name, data) in case["configMaps"].as_object().unwrap() {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap();
        facts.add_config_map(cm);
    }
    let services: BTreeMap<String, String> =
        serde_json::from_value(case["services"].clone()).unwrap();
    let env = Env::with_services(&container, None, &facts, Services::Known(&services));
    // Every name something could set.
    let mut names: BTreeSet<String> = services.keys().cloned().collect();
    names.extend(container.env.iter().flatten().map(|e| e.name.clone()));
    for src in container.env_from.iter().flatten() {
        let cm = &src.config_map_ref.as_ref().unwrap().name;
        let prefix = src.prefix.as_deref().unwrap_or("");
        for key in case["configMaps"][cm]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            names.insert([prefix, key].concat());
        }
    }
    names
        .into_iter()
        .filter_map(|name| match env.get(&name)? {
            EnvValue::Known { value, .. } => Some((name, value)),
            unknown => panic!("{name} is {unknown:?} though everything is known"),
        })
        .collect()
}

#[test]
fn the_engine_builds_the_environment_as_the_kubelet_does() {
    let mut runner = TestRunner::new(Config {
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b75_6265),
        ..Config::default()
    });
    let strategy = case();
    let cases: Vec<Value> = (0..CASES)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    let answers = kubelet(&cases);
    assert_eq!(answers.len(), cases.len());
    let (mut compared, mut expanded) = (0, 0);
    for (case, answer) in cases.iter().zip(&answers) {
        assert!(
            answer.get("error").is_none(),
            "the generator made a case the kubelet refuses: {case}\n{answer}"
        );
        let theirs: BTreeMap<String, String> =
            serde_json::from_value(answer["env"].clone()).unwrap_or_default();
        assert_eq!(ours(case), theirs, "case: {case}");
        compared += 1;
        expanded += usize::from(case.to_string().contains("$("));
    }
    // The cases are not trivially empty.
    assert_eq!(compared, CASES);
    assert!(expanded > CASES / 2, "{expanded} cases with a $(…)");
}
