//! `harbor-iam-webhook mutate`, run as a user runs it.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn mutate(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_harbor-iam-webhook"))
        .arg("mutate")
        .args(args)
        .env_remove("AWS_REGION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn fixture(name: &str) -> String {
    common::fixtures().join(name).display().to_string()
}

fn stdout_yaml(out: &Output) -> Value {
    serde_yaml_ng::from_slice(&out.stdout).expect("stdout is YAML")
}

#[test]
fn prints_the_mutated_pod_as_yaml_by_default() {
    let exp = common::expectations();
    for (file, expectation) in &exp.pods {
        let out = mutate(
            &[
                "-f",
                &fixture(&format!("pods/{file}")),
                "--aws-region",
                "eu-west-1",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pod = stdout_yaml(&out);
        if expectation.mutated {
            common::check_pod(&pod, expectation);
            common::assert_no_static_password(&pod);
        } else {
            let original = common::read_object(&common::fixtures().join("pods").join(file));
            assert_eq!(pod, original, "{file} must be printed unchanged");
            assert!(String::from_utf8_lossy(&out.stderr).contains("left unchanged"));
        }
    }
}

#[test]
fn facts_make_sslmode_known() {
    let pod = fixture("pods/harbor-helm-1.16-core.yaml");
    let facts = fixture("configmaps/harbor-helm-1.16-core-cm.yaml");
    let out = mutate(
        &[
            "-f",
            &pod,
            "--aws-region",
            "eu-west-1",
            "--facts",
            &facts,
            "-o",
            "json",
        ],
        None,
    );
    assert!(out.status.success());
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "POSTGRESQL_SSLMODE" && e["value"] == "require")
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("POSTGRESQL_SSLMODE was \"disable\""),
        "{stderr}"
    );
}

#[test]
fn patch_output_from_stdin_and_admission_reviews() {
    let text = std::fs::read_to_string(fixture("pods/harbor-next-3.0-jobservice.yaml")).unwrap();
    let out = mutate(
        &["-f", "-", "-o", "patch", "--aws-region", "us-east-1"],
        Some(&text),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patch: json_patch::Patch = serde_json::from_slice(&out.stdout).unwrap();
    let mut pod =
        common::read_object(&common::fixtures().join("pods/harbor-next-3.0-jobservice.yaml"));
    json_patch::patch(&mut pod, &patch).unwrap();
    assert_eq!(pod["spec"]["serviceAccountName"], "harbor-sa");
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "POSTGRESQL_AWS_REGION" && e["value"] == "us-east-1")
    );

    // The same pod wrapped in an AdmissionReview; the region from the environment.
    let object =
        common::read_object(&common::fixtures().join("pods/harbor-next-3.0-jobservice.yaml"));
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "namespace": "harbor", "operation": "CREATE",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"}, "object": object}
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_harbor-iam-webhook"))
        .args(["mutate", "-f", "-", "-o", "patch"])
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(review.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_review: json_patch::Patch = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_review, patch);
}

#[test]
fn bad_input_and_denials_exit_non_zero_with_a_message() {
    let pod = fixture("pods/harbor-helm-1.16-core.yaml");
    let cases: &[(&[&str], Option<&str>, i32, &str)] = &[
        (&["-f", &pod], None, 2, "no AWS region"),
        (
            &["-f", "/nonexistent.yaml", "--aws-region", "eu-west-1"],
            None,
            2,
            "cannot read /nonexistent.yaml",
        ),
        (
            &["-f", "-", "--aws-region", "eu-west-1"],
            Some("key: [unclosed"),
            2,
            "not valid YAML",
        ),
        (
            &["-f", "-", "--aws-region", "eu-west-1"],
            Some("kind: Service\nmetadata: {name: x}\n"),
            2,
            "expected a Pod or an AdmissionReview",
        ),
        (
            &["-f", "-", "--aws-region", "eu-west-1"],
            Some("kind: Pod\n---\nkind: Pod\n"),
            2,
            "found 2 documents",
        ),
        (
            &["-f", "-", "--aws-region", "eu-west-1"],
            Some(""),
            2,
            "found 0 documents",
        ),
        (
            &["-f", &pod, "--aws-region", "nowhere"],
            None,
            2,
            "not an AWS region",
        ),
    ];
    for (args, stdin, code, message) in cases {
        let out = mutate(args, *stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let denied = "kind: Pod\nmetadata: {labels: {app: harbor, component: core}}\nspec:\n  containers:\n  - name: core\n    env: [{name: POSTGRESQL_URL, value: 'postgres://u:s3cret@db/registry'}]\n";
    let out = mutate(&["-f", "-", "--aws-region", "eu-west-1"], Some(denied));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("denied:") && stderr.contains("POSTGRESQL_URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"));
}

#[test]
fn service_account_facts_enable_injection_and_denials() {
    let pod = fixture("pods/harbor-next-3.0-core.yaml");
    let sa = fixture("serviceaccounts/harbor-sa.yaml");
    let out = mutate(
        &[
            "-f",
            &pod,
            "--aws-region",
            "eu-west-1",
            "--facts",
            &sa,
            "-o",
            "json",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    let get = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        get("AWS_ROLE_ARN"),
        Some(Value::from("arn:aws:iam::111122223333:role/harbor-rds-iam"))
    );
    assert!(
        pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "aws-iam-token")
    );

    // With ServiceAccount facts given, one they don't name does not exist: denied, with the fix.
    let out = mutate(
        &[
            "-f",
            &fixture("pods/harbor-next-3.0-core.yaml"),
            "--aws-region",
            "eu-west-1",
            "--facts",
            &sa,
            "--service-account",
            "other-sa",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("kubectl -n harbor create serviceaccount other-sa"),
        "{stderr}"
    );
    // ... unless told to warn.
    let out = mutate(
        &[
            "-f",
            &fixture("pods/harbor-next-3.0-core.yaml"),
            "--aws-region",
            "eu-west-1",
            "--facts",
            &sa,
            "--service-account",
            "other-sa",
            "--on-missing-role",
            "warn",
        ],
        None,
    );
    assert!(out.status.success());
}

#[test]
fn merge_keys_are_resolved_so_a_merged_password_is_blanked() {
    // A password carried by a `<<` merge of an anchored map: kubectl's reader merges it into
    // the entry, so must we, or the preview would hide it.
    let pod = r#"
apiVersion: v1
kind: Pod
metadata:
  generateName: harbor-core-
  namespace: harbor
  labels: {app: harbor, component: core}
spec:
  containers:
  - name: core
    image: goharbor/harbor-core:v2.12.4
    env:
    - &secret {name: POSTGRESQL_PASSWORD, value: hunter2}
    - <<: *secret
      name: HARBOR_DATABASE_PASSWORD
"#;
    let out = mutate(
        &["-f", "-", "-o", "json", "--aws-region", "eu-west-1"],
        Some(pod),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(!printed.contains("hunter2"), "{printed}");
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    for name in ["POSTGRESQL_PASSWORD", "HARBOR_DATABASE_PASSWORD"] {
        let e = env.iter().find(|e| e["name"] == name).expect(name);
        assert_eq!(e["value"], "", "{name}: {e}");
    }
}

#[test]
fn the_cli_answers_a_review_as_the_server_does() {
    let object = common::read_object(&common::fixtures().join("pods/harbor-helm-1.16-core.yaml"));
    let review = |operation: &str, version: &str| {
        serde_json::json!({
            "apiVersion": version, "kind": "AdmissionReview",
            "request": {"uid": "u", "namespace": "harbor", "operation": operation,
                        "kind": {"group": "", "version": "v1", "kind": "Pod"}, "object": object}
        })
        .to_string()
    };
    // An UPDATE is left alone, as the server leaves it.
    let out = mutate(
        &["-f", "-", "-o", "patch", "--aws-region", "eu-west-1"],
        Some(&review("UPDATE", "admission.k8s.io/v1")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("left unchanged: not-a-pod-create"));
    // A v1beta1 review is refused, as the server refuses it.
    let out = mutate(
        &["-f", "-", "--aws-region", "eu-west-1"],
        Some(&review("CREATE", "admission.k8s.io/v1beta1")),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admission.k8s.io/v1beta1"));
}
