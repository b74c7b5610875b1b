//! Shared by the engine bench and the ceiling's `bodies` command: fixture pods and the
//! AdmissionReview bodies built around them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

/// The pod every "Harbor core" figure is about.
pub const CORE: &str = "harbor-helm-1.16-core";

pub fn pods_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pods")
}

/// The one object of a fixture file (header comments and `---` allowed).
pub fn read_object(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("fixture is YAML"))
        .find(|v| !v.is_null())
        .expect("one object per fixture")
}

/// Every fixture pod, by file stem, in name order.
pub fn fixtures() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(pods_dir())
        .expect("tests/fixtures/pods")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, read_object(&p))
        })
        .collect()
}

pub fn core_pod() -> Value {
    read_object(&pods_dir().join(format!("{CORE}.yaml")))
}

/// The Harbor core pod relabelled as somebody else's workload: the same size, not ours.
pub fn non_harbor_pod() -> Value {
    let mut pod = core_pod();
    pod["metadata"]["labels"] = json!({
        "app.kubernetes.io/name": "shop",
        "app.kubernetes.io/instance": "shop",
        "app.kubernetes.io/component": "api",
        "pod-template-hash": "z2xsjqdknc",
    });
    pod["metadata"]["generateName"] = json!("shop-api-z2xsjqdknc-");
    pod
}

/// A pod CREATE review as the API server sends it (`admission.k8s.io/v1`).
pub fn review_body(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "0f7c6a8e-2b59-4a52-9d6e-6f3c1d0b8a41",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated"
                ]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .expect("a Value always serialises")
}
