//! The validating guarantee: a Harbor pod that would still receive a static database password
//! (or, with the registry opt-in, static S3 keys) is refused, whether or not the mutation ran.
//! The pod's opt-out annotation does not bypass it: only the namespace label can.

use k8s_openapi::api::core::v1::Pod;

use super::effective::{Env, Value, references};
use super::{MutateConfig, Target, all_containers, pod_ref, url_has_password};
use crate::consts::POSTGRESQL_URL;
use crate::facts::Facts;

/// Why a pod is refused, written for the person who created it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pod {pod}: {problems}. The harbor-iam-webhook mutation removes these; was it bypassed (pod annotation harbor-iam-webhook/inject: disabled, or the webhook unavailable with failurePolicy Ignore)?"
)]
pub struct Violation {
    pub pod: String,
    pub problems: String,
}

/// Judged on the environment each container really gets ([`Env`]), with no facts: a value the
/// webhook can't read counts as a password.
pub fn validate(pod: &Pod, config: &MutateConfig) -> Result<(), Violation> {
    // Labels only: the opt-out annotation is deliberately not consulted.
    let component = match config.target(pod.metadata.labels.as_ref(), None) {
        Target::Mutate(c) => c,
        _ => return Ok(()),
    };
    let facts = Facts::default();
    let ns = pod.metadata.namespace.as_deref();
    let mut problems = Vec::new();
    for c in all_containers(pod) {
        let env = Env::of(c, ns, &facts);
        for name in component.password_envs() {
            match env.get(name) {
                Some(Value::Known { value, from }) if !value.is_empty() => {
                    problems.push(format!("container {} gets {name} from {from}", c.name));
                }
                Some(Value::Unknown { from }) => problems.push(format!(
                    "container {} may get {name} from {from} (no explicit empty {name})",
                    c.name
                )),
                _ => {}
            }
            // A `$(NAME)` expanded where the password is still set copies it into another name.
            for (i, e) in c.env.iter().flatten().enumerate() {
                let refers = e.value.as_deref().is_some_and(|v| references(v, name));
                let carried = env
                    .before(i, name)
                    .is_some_and(|v| v.known().is_none_or(|v| !v.is_empty()));
                if refers && carried {
                    problems.push(format!(
                        "container {} copies {name} into {}",
                        c.name, e.name
                    ));
                }
            }
        }
        if component.uses_database()
            && env
                .get(POSTGRESQL_URL)
                .and_then(|v| v.known().map(url_has_password))
                .unwrap_or(false)
        {
            problems.push(format!(
                "container {} gets a POSTGRESQL_URL with a password",
                c.name
            ));
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
