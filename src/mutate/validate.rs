//! The validating guarantee, and nothing else: what `/validate` refuses is exactly what
//! `/mutate` would have removed or refused, so that every pod `/mutate` returns passes.
//!
//! For a pod the configuration targets (a Harbor DB component; the registry with
//! `--registry-s3-irsa`), **whether or not it opts out by annotation**, in the environment
//! each container really gets ([`Env`]):
//!
//! 1. **No static password reaches a container.** In every container and init container, each
//!    password name (`POSTGRESQL_PASSWORD`, `HARBOR_DATABASE_PASSWORD`, `PGPASSWORD`; the
//!    registry's S3 keys) ends empty or unset, never from a source the webhook can't read.
//! 2. **None is written in the pod.** No `env` entry of a password name carries a value or a
//!    `valueFrom`, even one a later entry overrides.
//! 3. **None is copied.** No `$(NAME)` of a password name is expanded where the name may still
//!    hold a value.
//! 4. **`envFrom` can't bring one.** A container with `envFrom` has an explicit entry of each
//!    password name, before any `$(NAME)` of it.
//! 5. **None is in the connection string.** `POSTGRESQL_URL`, read as pgx reads it after
//!    expansion, carries no password the webhook can read (DB components).
//! 6. **sslmode at least `require`** where known: `POSTGRESQL_SSLMODE` (core, migrator) and
//!    `HARBOR_DATABASE_SSLMODE` (exporter) in regular containers, unset counting as weak.
//! 7. **The connection string's sslmode at least `require`** where the pod's own literal text
//!    decides it (the cases `/mutate` rewrites; DB components, regular containers).
//!
//! Not checked, admitted with a warning: pods `--strict-images` skips. Not targeted, admitted:
//! other components, non-Harbor pods. A pod's opt-out annotation switches off the mutation, not
//! this guarantee: such a pod is refused like any other, and the message names the annotation.

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};

use super::database_url::{self, Mode, Password};
use super::effective::{Env, Value, references};
use super::env::{has_env_from, is_blank};
use super::sslmode::is_strong;
use super::{
    Component, MutateConfig, Target, all_containers, classify, images_not_iam_capable, pod_ref,
};
use crate::consts::{INJECT_ANNOTATION, INJECT_DISABLED};
use crate::facts::Facts;

/// Why a pod is refused, written for the person who created it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {pod}: {problems}. {}", hint(*.opted_out))]
pub struct Violation {
    pub pod: String,
    pub problems: String,
    /// The pod carries the opt-out annotation.
    pub opted_out: bool,
}

fn hint(opted_out: bool) -> String {
    if opted_out {
        format!(
            "The pod opts out with annotation {INJECT_ANNOTATION}: {INJECT_DISABLED}, which switches off the \
             harbor-iam-webhook mutation, not this guarantee: remove the static secret, or the annotation"
        )
    } else {
        "The harbor-iam-webhook mutation removes these; was it bypassed (the webhook unavailable with \
         failurePolicy Ignore)?"
            .to_owned()
    }
}

/// A pod `/validate` admits, and what it says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admitted {
    /// Why a targeted pod was not checked (a configuration skip).
    pub warnings: Vec<String>,
}

/// [`judge`] with no facts: what the webhook can't read counts as a password.
pub fn validate(pod: &Pod, config: &MutateConfig) -> Result<(), Violation> {
    judge(pod, config, &Facts::default()).map(|_| ())
}

/// The guarantee above for `pod`, with what the facts show of its ConfigMaps.
pub fn judge(pod: &Pod, config: &MutateConfig, facts: &Facts) -> Result<Admitted, Violation> {
    // Labels only: the opt-out annotation is deliberately not consulted.
    let component = match config.target(pod.metadata.labels.as_ref(), None) {
        Target::Mutate(c) => c,
        _ => return Ok(Admitted::default()),
    };
    if config.strict_images && !images_not_iam_capable(pod, component, config).is_empty() {
        return Ok(Admitted {
            warnings: vec![
                "not checked: --strict-images leaves pods with images not known to support IAM auth alone"
                    .into(),
            ],
        });
    }
    let ns = pod.metadata.namespace.as_deref();
    let mut problems = Vec::new();
    for c in all_containers(pod) {
        problems.extend(secret_problems(c, component, ns, facts));
    }
    let regular = pod.spec.iter().flat_map(|s| s.containers.iter());
    for c in regular {
        problems.extend(sslmode_problems(c, component, ns, facts));
    }
    verdict(pod, config, problems)
}

/// `pods/ephemeralcontainers` (what `kubectl debug` sends): an ephemeral container that is new
/// compared with `old` must not bring a static secret (rules 1 to 5) into a targeted pod.
pub fn judge_ephemeral(
    old: &Pod,
    new: &Pod,
    config: &MutateConfig,
    facts: &Facts,
) -> Result<Admitted, Violation> {
    let component = match config.target(new.metadata.labels.as_ref(), None) {
        Target::Mutate(c) => c,
        _ => return Ok(Admitted::default()),
    };
    let existing: Vec<&str> = old
        .spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .map(|e| e.name.as_str())
        .collect();
    let ns = new.metadata.namespace.as_deref();
    let mut problems = Vec::new();
    for e in new
        .spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter(|e| !existing.contains(&e.name.as_str()))
    {
        let c = as_container(e);
        problems.extend(
            secret_problems(&c, component, ns, facts)
                .into_iter()
                .map(|p| ["ephemeral ", &p].concat()),
        );
    }
    verdict(new, config, problems)
}

/// What the environment of an ephemeral container is built from.
fn as_container(e: &EphemeralContainer) -> Container {
    Container {
        name: e.name.clone(),
        image: e.image.clone(),
        env: e.env.clone(),
        env_from: e.env_from.clone(),
        ..Default::default()
    }
}

fn verdict(pod: &Pod, config: &MutateConfig, problems: Vec<String>) -> Result<Admitted, Violation> {
    if problems.is_empty() {
        return Ok(Admitted::default());
    }
    Err(Violation {
        pod: pod_ref(pod),
        problems: problems.join("; "),
        opted_out: matches!(classify(pod, config), Target::OptedOut(_)),
    })
}

/// Rules 1 to 5 for one container: at most one problem per password name, then the URL's.
fn secret_problems(
    c: &Container,
    component: Component,
    ns: Option<&str>,
    facts: &Facts,
) -> Vec<String> {
    let env = Env::of(c, ns, facts);
    let entries = c.env.as_deref().unwrap_or_default();
    let mut problems = Vec::new();
    for name in component.password_envs() {
        let container = &c.name;
        let first_entry = entries.iter().position(|e| e.name == *name);
        let first_reference = entries
            .iter()
            .position(|e| e.value.as_deref().is_some_and(|v| references(v, name)));
        let copied = entries.iter().enumerate().find(|(i, e)| {
            e.value.as_deref().is_some_and(|v| references(v, name))
                && env
                    .before(*i, name)
                    .is_some_and(|v| v.known().is_none_or(|v| !v.is_empty()))
        });
        let problem = match env.get(name) {
            Some(Value::Known { value, from }) if !value.is_empty() => {
                format!("container {container} gets {name} from {from}")
            }
            Some(Value::Unknown { from }) => {
                format!(
                    "container {container} may get {name} from {from} (no explicit empty {name})"
                )
            }
            _ if entries.iter().any(|e| e.name == *name && !is_blank(e)) => {
                format!("container {container} sets {name} in an entry a later one overrides")
            }
            _ if copied.is_some() => format!(
                "container {container} copies {name} into {}",
                copied.map_or("", |(_, e)| e.name.as_str())
            ),
            _ if has_env_from(c)
                && first_reference.is_none_or(|r| first_entry.is_none_or(|d| r < d))
                && (first_entry.is_none() || first_reference.is_some()) =>
            {
                format!("container {container} has envFrom but no explicit empty {name} first")
            }
            _ => continue,
        };
        problems.push(problem);
    }
    if component.uses_database()
        && let Some(judged) = database_url::judge(c, ns, facts)
        && let Password::Known { from } = judged.password
    {
        problems.push(format!(
            "container {} gets a POSTGRESQL_URL with a password (from {from})",
            c.name
        ));
    }
    problems
}

/// Rules 6 and 7 for one regular container.
fn sslmode_problems(
    c: &Container,
    component: Component,
    ns: Option<&str>,
    facts: &Facts,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(name) = component.sslmode_env() {
        match Env::of(c, ns, facts).get(name) {
            Some(Value::Known { value, .. }) if is_strong(&value) => {}
            Some(Value::Unknown { .. }) => {}
            Some(Value::Known { .. }) => {
                problems.push(format!("container {} has a weak {name}", c.name));
            }
            None => problems.push(format!("container {} sets no {name}", c.name)),
        }
    }
    if component.uses_database()
        && let Some(judged) = database_url::judge(c, ns, facts)
        && let Mode::Weak { fix: Some(_), .. } = judged.mode
    {
        problems.push(format!(
            "container {} has a POSTGRESQL_URL with a weak sslmode",
            c.name
        ));
    }
    problems
}
