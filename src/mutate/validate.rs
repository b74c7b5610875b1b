//! The validating guarantee: a Harbor pod that would still receive a static database password
//! (or, with the registry opt-in, static S3 keys) is refused, whether or not the mutation ran.
//! The pod's opt-out annotation does not bypass it: only the namespace label can.

use k8s_openapi::api::core::v1::Pod;

use super::env::{Origin, has_env_from_secret, is_blank, last_entry};
use super::{MutateConfig, Target, all_containers, pod_ref, url_has_password};
use crate::consts::POSTGRESQL_URL;

/// Why a pod is refused, written for the person who created it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pod {pod}: {problems}. The harbor-iam-webhook mutation removes these; was it bypassed (pod annotation harbor-iam-webhook/inject: disabled, or the webhook unavailable with failurePolicy Ignore)?"
)]
pub struct Violation {
    pub pod: String,
    pub problems: String,
}

pub fn validate(pod: &Pod, config: &MutateConfig) -> Result<(), Violation> {
    // Labels only: the opt-out annotation is deliberately not consulted.
    let component = match config.target(pod.metadata.labels.as_ref(), None) {
        Target::Mutate(c) => c,
        _ => return Ok(()),
    };
    let mut problems = Vec::new();
    for c in all_containers(pod) {
        for name in component.password_envs() {
            let entries: Vec<_> = c.env.iter().flatten().filter(|e| e.name == *name).collect();
            if let Some(e) = entries.iter().find(|e| !is_blank(e)) {
                problems.push(format!(
                    "container {} gets {name} from {}",
                    c.name,
                    Origin::of(e)
                ));
            } else if entries.is_empty() && has_env_from_secret(c) {
                problems.push(format!(
                    "container {} may get {name} through envFrom (no explicit empty {name})",
                    c.name
                ));
            }
        }
        if component.uses_database() {
            let literal = last_entry(c, POSTGRESQL_URL).filter(|e| e.value_from.is_none());
            if literal
                .and_then(|e| e.value.as_deref())
                .is_some_and(url_has_password)
            {
                problems.push(format!(
                    "container {} sets POSTGRESQL_URL with a password",
                    c.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Violation {
            pod: pod_ref(pod),
            problems: problems.join("; "),
        })
    }
}
