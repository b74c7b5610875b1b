//! Every fixture pod through the engine: a reviewed snapshot of the patch and warnings, and,
//! independently of it, the hand-written expectation from `tests/fixtures/expectations.yaml`.

mod common;

use harbor_iam_webhook::admission::{Decision, Evaluation, evaluate};
use harbor_iam_webhook::facts::Facts;
use serde_json::Value;

fn run(pod: &Value, facts: &Facts) -> Evaluation {
    let ns = pod["metadata"]["namespace"].as_str();
    evaluate(&pod.to_string(), ns, &common::config(), facts)
}

fn render(eval: &Evaluation) -> String {
    let mut out = format!(
        "decision: {}\nreason: {}\n",
        eval.decision.as_str(),
        eval.reason.as_str()
    );
    out += "patch:\n";
    for op in &eval.patch.0 {
        out += &format!("  {}\n", serde_json::to_string(op).unwrap());
    }
    out += "warnings:\n";
    for w in &eval.warnings {
        out += &format!("  - {w}\n");
    }
    out += "audit:\n";
    for (k, v) in &eval.audit {
        out += &format!("  {k}: {v}\n");
    }
    out
}

fn applied(pod: &Value, eval: &Evaluation) -> Value {
    let mut out = pod.clone();
    json_patch::patch(&mut out, &eval.patch).expect("patch applies to the pod it was made for");
    out
}

fn assert_idempotent(mutated: &Value, facts: &Facts) {
    let again = run(mutated, facts);
    assert!(
        again.patch.0.is_empty(),
        "second run patches again: {:?}",
        again.patch
    );
    let mut normalised = mutated.clone();
    common::normalise_like_api_server(&mut normalised);
    let again = run(&normalised, facts);
    assert!(
        again.patch.0.is_empty(),
        "patches again after normalisation: {:?}",
        again.patch
    );
}

#[test]
fn every_fixture_has_an_expectation() {
    let exp = common::expectations();
    let files: Vec<String> = std::fs::read_dir(common::fixtures().join("pods"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.len() >= 16, "fixtures missing: {files:?}");
    for f in &files {
        assert!(exp.pods.contains_key(f), "no expectation for {f}");
    }
    for f in exp.pods.keys() {
        assert!(files.contains(f), "expectation for a missing fixture {f}");
    }
}

#[test]
fn harbor_fixtures() {
    let exp = common::expectations();
    insta::glob!("fixtures/pods/*.yaml", |path| {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let expectation = &exp.pods[&file];
        let pod = common::read_object(path);
        let none = Facts::default();
        let eval = run(&pod, &none);
        insta::assert_snapshot!(render(&eval));

        let mutated = applied(&pod, &eval);
        if expectation.mutated {
            assert_eq!(eval.decision, Decision::Mutated, "{file}");
            common::check_pod(&mutated, expectation);
            common::assert_no_static_password(&mutated);
        } else {
            assert!(eval.patch.0.is_empty(), "{file} must be left alone");
            assert_eq!(mutated, pod);
        }
        assert_idempotent(&mutated, &none);

        if let Some(with) = &expectation.with_facts {
            let facts = common::facts(&with.facts);
            let eval = run(&pod, &facts);
            insta::assert_snapshot!("with_facts", render(&eval));
            let mutated = applied(&pod, &eval);
            // The base expectation, except what the facts change.
            for (name, base) in &expectation.containers {
                let extra = with.containers.get(name);
                let changed = |k: &String| extra.is_some_and(|e| e.env.contains_key(k));
                let merged = common::ContainerExpectation {
                    env: base
                        .env
                        .clone()
                        .into_iter()
                        .chain(extra.map(|e| e.env.clone()).unwrap_or_default())
                        .collect(),
                    blank: base.blank.clone(),
                    absent: base
                        .absent
                        .iter()
                        .filter(|k| !changed(k))
                        .cloned()
                        .collect(),
                };
                common::check_container(&mutated, "containers", name, &merged);
            }
            common::assert_no_static_password(&mutated);
            assert_idempotent(&mutated, &facts);
        }
    });
}
