//! `harbor-iam-webhook audit`: Harbor DB pods in opted-in namespaces that were not injected or
//! still carry a static secret, with the fix. The checks are pure; listing is the caller's.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::{Api, Client};
use serde::Serialize;

use crate::consts::{NAMESPACE_OPT_IN_LABEL, STATUS_ANNOTATION, STATUS_INJECTED};
use crate::mutate::{MutateConfig, Target, credential_warnings, validate};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub namespace: String,
    pub pod: String,
    pub component: String,
    pub problems: Vec<String>,
    pub fix: String,
}

/// How to get a pod re-created (mutation happens only at creation).
fn fix_for(pod: &Pod, ns: &str) -> String {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    match owner {
        Some(o) if o.kind == "ReplicaSet" => {
            let deployment = hash
                .and_then(|h| o.name.strip_suffix(&format!("-{h}")))
                .unwrap_or(&o.name);
            format!("kubectl -n {ns} rollout restart deployment/{deployment}")
        }
        Some(o) if o.kind == "StatefulSet" || o.kind == "DaemonSet" => {
            format!(
                "kubectl -n {ns} rollout restart {}/{}",
                o.kind.to_lowercase(),
                o.name
            )
        }
        Some(o) if o.kind == "Job" => format!(
            "re-run job {ns}/{} (delete it and let its owner, e.g. the next helm upgrade, create it again)",
            o.name
        ),
        _ => format!(
            "kubectl -n {ns} delete pod {} and create it again",
            pod.metadata.name.as_deref().unwrap_or("?")
        ),
    }
}

/// The finding for one pod, if any. The pod's opt-out annotation is not an excuse: an opted-out
/// Harbor DB pod with a static secret is exactly what this looks for.
pub fn audit_pod(pod: &Pod, config: &MutateConfig) -> Option<Finding> {
    let Target::Mutate(component) = config.target(pod.metadata.labels.as_ref(), None) else {
        return None;
    };
    let mut problems = Vec::new();
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .map(String::as_str)
        == Some(STATUS_INJECTED);
    if !injected {
        problems.push("not injected (created before the namespace was labelled, opted out, or the webhook was bypassed)".to_owned());
    }
    if let Err(v) = validate(pod, config) {
        problems.push(format!("static secret: {}", v.problems));
    }
    problems.extend(
        credential_warnings(pod, config, &crate::facts::Facts::default())
            .into_iter()
            .map(|w| ["credentials: ", &w].concat()),
    );
    if problems.is_empty() {
        return None;
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    Some(Finding {
        fix: fix_for(pod, &ns),
        namespace: ns,
        pod: pod.metadata.name.clone().unwrap_or_default(),
        component: component.to_string(),
        problems,
    })
}

/// Namespaces to look at: the given ones, or every namespace carrying the opt-in label.
pub async fn namespaces(client: &Client, given: &[String]) -> Result<Vec<String>, kube::Error> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let selector = format!("{NAMESPACE_OPT_IN_LABEL}=enabled");
    let list = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect())
}

pub async fn run(
    client: &Client,
    given: &[String],
    config: &MutateConfig,
) -> Result<(Vec<String>, Vec<Finding>), kube::Error> {
    let namespaces = namespaces(client, given).await?;
    let mut findings = Vec::new();
    for ns in &namespaces {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        for pod in api.list(&ListParams::default()).await?.items {
            findings.extend(audit_pod(&pod, config));
        }
    }
    findings.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    Ok((namespaces, findings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, EnvFromSource, PodSpec, SecretEnvSource};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
        owner: Option<(&str, &str)>,
    ) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("harbor-core-7d9f8-abcde".into()),
                namespace: Some("harbor".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                owner_references: owner.map(|(kind, name)| {
                    vec![OwnerReference {
                        kind: kind.into(),
                        name: name.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "core".into(),
                    env_from: Some(vec![EnvFromSource {
                        secret_ref: Some(SecretEnvSource {
                            name: "harbor-core".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn finds_pods_created_before_the_label_with_the_fix() {
        let p = pod(
            &[
                ("app", "harbor"),
                ("component", "core"),
                ("pod-template-hash", "7d9f8"),
            ],
            &[],
            Some(("ReplicaSet", "harbor-core-7d9f8")),
        );
        let f = audit_pod(&p, &MutateConfig::new("eu-west-1")).unwrap();
        assert_eq!(
            f.fix,
            "kubectl -n harbor rollout restart deployment/harbor-core"
        );
        assert_eq!(f.problems.len(), 2, "{:?}", f.problems);
        assert!(f.problems[1].contains("may get POSTGRESQL_PASSWORD from Secret harbor-core"));
    }

    #[test]
    fn injected_pods_and_other_pods_are_fine() {
        let config = MutateConfig::new("eu-west-1");
        let web = pod(&[("app", "web")], &[], None);
        assert_eq!(audit_pod(&web, &config), None);
        let raw = pod(&[("app", "harbor"), ("component", "core")], &[], None);
        let mutated = crate::mutate::mutate(&raw, &config, &crate::facts::Facts::default())
            .unwrap()
            .pod;
        assert_eq!(audit_pod(&mutated, &config), None);
        // A copied status annotation does not hide a static secret.
        let copied = pod(
            &[("app", "harbor"), ("component", "core")],
            &[(STATUS_ANNOTATION, STATUS_INJECTED)],
            Some(("StatefulSet", "x")),
        );
        let f = audit_pod(&copied, &config).unwrap();
        assert_eq!(f.problems.len(), 1);
        assert_eq!(f.fix, "kubectl -n harbor rollout restart statefulset/x");
    }
}
