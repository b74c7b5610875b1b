//! The mutation engine: a Pod in, the Pod switched to RDS IAM auth (plus warnings) out.
//! Pure: no I/O, no clock, no logging. Whatever it needs from the cluster arrives as [`Facts`].

mod component;
mod database_url;
pub mod env;
pub mod sslmode;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use wildmatch::WildMatch;

pub use component::{Component, Selector, Target};
pub use database_url::has_password as url_has_password;

use crate::consts::{
    self, IAM_FEATURE_GATE, POSTGRESQL_URL, REGION_ANNOTATION, STATUS_ANNOTATION, STATUS_INJECTED,
};
use crate::facts::Facts;
use env::{Blanked, SetEnv, blank_env, has_env_from_secret, last_entry, set_env};
use sslmode::{Sslmode, ensure_sslmode};

/// What the engine is told by its operator.
#[derive(Debug, Clone)]
pub struct MutateConfig {
    pub region: String,
    pub service_account: String,
    pub component_service_accounts: BTreeMap<Component, String>,
    /// Image patterns (`*` wildcards) known to carry the IAM code.
    pub iam_capable_images: Vec<String>,
    /// Skip pods whose images are not known to be IAM-capable, instead of warning.
    pub strict_images: bool,
    pub selector: Selector,
}

impl MutateConfig {
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            service_account: consts::DEFAULT_SERVICE_ACCOUNT.into(),
            component_service_accounts: BTreeMap::new(),
            iam_capable_images: consts::DEFAULT_IAM_CAPABLE_IMAGES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            strict_images: false,
            selector: Selector::default(),
        }
    }

    pub fn service_account_for(&self, c: Component) -> &str {
        self.component_service_accounts
            .get(&c)
            .unwrap_or(&self.service_account)
    }
}

/// Why a pod was left unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NotHarbor,
    NoDatabase(Option<String>),
    OptedOut(Component),
    /// `--strict-images` and an image not known to support IAM auth.
    ImageNotIamCapable(Component),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Skipped(Skip),
    /// The rules were applied for this component (the result may equal the input).
    Applied(Component),
}

impl Outcome {
    pub fn component(&self) -> Option<Component> {
        match self {
            Outcome::Applied(c)
            | Outcome::Skipped(Skip::OptedOut(c) | Skip::ImageNotIamCapable(c)) => Some(*c),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Mutation {
    pub pod: Pod,
    pub outcome: Outcome,
    /// For the cluster admin: what was replaced or dropped and why. Names only, never values.
    pub warnings: Vec<String>,
    /// Short machine-readable summary (becomes the review's auditAnnotations).
    pub audit: BTreeMap<String, String>,
}

/// A pod the webhook must refuse: admitting it would defeat IAM auth.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutateError {
    #[error(
        "pod {pod}: container {container} sets POSTGRESQL_URL with a password in it; Harbor uses the URL as is, \
         so the static password would survive RDS IAM auth. Remove the password from the URL or unset POSTGRESQL_URL"
    )]
    PasswordInUrl { pod: String, container: String },
    #[error(
        "pod {pod}: annotation {REGION_ANNOTATION}={value:?} is not an AWS region (expected e.g. eu-west-1)"
    )]
    InvalidRegion { pod: String, value: String },
}

/// `namespace/name`, falling back to `generateName` (pods of controllers have no name at CREATE).
pub fn pod_ref(pod: &Pod) -> String {
    let m = &pod.metadata;
    let ns = m.namespace.as_deref().unwrap_or("");
    let name = m
        .name
        .clone()
        .or_else(|| m.generate_name.as_ref().map(|g| format!("{g}*")))
        .unwrap_or_else(|| "<unnamed>".into());
    if ns.is_empty() {
        name
    } else {
        format!("{ns}/{name}")
    }
}

/// A loose check that catches typos without tracking AWS's list of regions.
pub fn is_valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
}

/// A replaced value as a warning may show it: only words of a known vocabulary (sslmode names,
/// booleans, regions). Anything else could be a secret pasted into the wrong variable.
fn shown(value: &str) -> String {
    const SSLMODES: &[&str] = &[
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];
    const BOOLS: &[&str] = &[
        "1", "0", "t", "f", "T", "F", "true", "false", "TRUE", "FALSE", "True", "False",
    ];
    if value.is_empty()
        || SSLMODES.contains(&value)
        || BOOLS.contains(&value)
        || is_valid_region(value)
    {
        format!("{value:?}")
    } else {
        "an unrecognised value".to_owned()
    }
}

fn shown_previous(was: &env::Previous) -> String {
    match was {
        env::Previous::Value(v) => shown(v),
        env::Previous::Reference(r) => format!("from {r}"),
    }
}

/// Harbor parses booleans with Go's `strconv.ParseBool`.
fn is_true(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

pub fn classify(pod: &Pod, config: &MutateConfig) -> Target {
    config.selector.classify_maps(
        pod.metadata.labels.as_ref(),
        pod.metadata.annotations.as_ref(),
    )
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.iter();
    spec.flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

/// A known `envFrom` ConfigMap that sets `POSTGRESQL_URL` (Secrets are not looked into).
fn url_config_map<'a>(c: &'a Container, namespace: Option<&str>, facts: &Facts) -> Option<&'a str> {
    c.env_from.iter().flatten().rev().find_map(|src| {
        let cm = src.config_map_ref.as_ref()?;
        let key = POSTGRESQL_URL.strip_prefix(src.prefix.as_deref().unwrap_or(""))?;
        facts
            .config_map(namespace, &cm.name)?
            .contains_key(key)
            .then_some(cm.name.as_str())
    })
}

/// Switch `pod` to RDS IAM authentication, or explain why it is left alone.
pub fn mutate(pod: &Pod, config: &MutateConfig, facts: &Facts) -> Result<Mutation, MutateError> {
    let unchanged = |outcome, warnings| Mutation {
        pod: pod.clone(),
        outcome,
        warnings,
        audit: BTreeMap::new(),
    };
    let component = match classify(pod, config) {
        Target::NotHarbor => return Ok(unchanged(Outcome::Skipped(Skip::NotHarbor), vec![])),
        Target::OtherComponent(c) => {
            return Ok(unchanged(Outcome::Skipped(Skip::NoDatabase(c)), vec![]));
        }
        Target::OptedOut(c) => return Ok(unchanged(Outcome::Skipped(Skip::OptedOut(c)), vec![])),
        Target::Mutate(c) => c,
    };
    let who = pod_ref(pod);
    let region = match pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REGION_ANNOTATION))
    {
        Some(r) if is_valid_region(r) => r.clone(),
        Some(r) => {
            return Err(MutateError::InvalidRegion {
                pod: who,
                value: r.clone(),
            });
        }
        None => config.region.clone(),
    };

    let mut warnings = Vec::new();
    let spec = pod.spec.as_ref();
    let patterns: Vec<WildMatch> = config
        .iam_capable_images
        .iter()
        .map(|p| WildMatch::new(p))
        .collect();
    let unknown_images: Vec<&Container> = spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter(|c| {
            !c.image
                .as_deref()
                .is_some_and(|i| patterns.iter().any(|p| p.matches(i)))
        })
        .collect();
    for c in &unknown_images {
        warnings.push(format!(
            "container {}: image {} is not known to support RDS IAM auth (upstream Harbor lacks it, goharbor/harbor#12546)",
            c.name,
            c.image.as_deref().unwrap_or("<none>"),
        ));
    }
    if config.strict_images && !unknown_images.is_empty() {
        warnings.push("left unchanged: --strict-images skips pods with such images".into());
        return Ok(unchanged(
            Outcome::Skipped(Skip::ImageNotIamCapable(component)),
            warnings,
        ));
    }

    for c in all_containers(pod) {
        if let Some(e) = last_entry(c, POSTGRESQL_URL) {
            match &e.value_from {
                None if e.value.as_deref().is_some_and(url_has_password) => {
                    return Err(MutateError::PasswordInUrl {
                        pod: who,
                        container: c.name.clone(),
                    });
                }
                None => {}
                Some(src) => warnings.push(format!(
                    "container {}: POSTGRESQL_URL comes from {}; make sure it holds no password",
                    c.name,
                    env::describe_source(src)
                )),
            }
        } else if let Some(cm) = url_config_map(c, pod.metadata.namespace.as_deref(), facts) {
            warnings.push(format!(
                "container {}: POSTGRESQL_URL comes from ConfigMap {cm}; make sure it holds no password",
                c.name
            ));
        }
    }

    let mut out = pod.clone();
    let namespace = out.metadata.namespace.clone();
    let ns = namespace.as_deref();
    let mut set_names = Vec::new();
    let mut blanked_names = Vec::new();
    let mut sslmode_audit = Vec::new();
    let (use_iam, region_env) = component.iam_env_names();

    let spec = out.spec.get_or_insert_with(Default::default);
    for c in spec.containers.iter_mut() {
        for (name, value, same) in [
            (use_iam, "true", &is_true as &dyn Fn(&str) -> bool),
            (region_env, region.as_str(), &|v: &str| v == region),
            (IAM_FEATURE_GATE, "true", &is_true),
        ] {
            match set_env(c, name, value, same) {
                SetEnv::Kept => {}
                SetEnv::Added => set_names.push(name),
                SetEnv::Replaced { was } => {
                    set_names.push(name);
                    warnings.push(format!(
                        "container {}: {name} was {}; set to {value:?}",
                        c.name,
                        shown_previous(&was)
                    ));
                }
            }
        }
        if let Some(name) = component.sslmode_env() {
            match ensure_sslmode(c, name, ns, facts) {
                Sslmode::Kept(v) => sslmode_audit.push(format!("{}={v}", c.name)),
                Sslmode::Raised { was, from } => {
                    sslmode_audit.push(format!("{}=require", c.name));
                    if let (Some(was), Some(from)) = (was, from) {
                        warnings.push(format!(
                            "container {}: {name} was {} (from {from}); set to \"require\"",
                            c.name,
                            shown(&was)
                        ));
                    }
                }
                Sslmode::Unknown { from } => {
                    sslmode_audit.push(format!("{}=unknown", c.name));
                    warnings.push(format!(
                        "container {}: {name} comes from {from}, which the webhook was not shown; left as is \
                         (Harbor raises disable to require under IAM auth)",
                        c.name
                    ));
                }
            }
        }
    }
    let init = spec.init_containers.iter_mut().flatten();
    for c in spec.containers.iter_mut().chain(init) {
        let may_carry = has_env_from_secret(c);
        for name in component.password_envs() {
            for done in blank_env(c, name, may_carry) {
                blanked_names.push(*name);
                if let Blanked::Dropped(origin) = done {
                    warnings.push(format!(
                        "container {}: {name} no longer takes {origin}; RDS IAM auth replaces the static password",
                        c.name
                    ));
                }
            }
        }
    }

    let sa = config.service_account_for(component);
    let old_sa = spec.service_account_name.replace(sa.to_owned());
    if spec.service_account.is_some() {
        spec.service_account = Some(sa.to_owned());
    }
    out.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(STATUS_ANNOTATION.into(), STATUS_INJECTED.into());

    let mut audit = BTreeMap::from([("component".to_string(), component.to_string())]);
    if old_sa.as_deref() != Some(sa) {
        audit.insert(
            "service-account".into(),
            format!("{} -> {sa}", old_sa.as_deref().unwrap_or("<none>")),
        );
    }
    let mut put = |key: &str, mut names: Vec<&str>| {
        names.sort_unstable();
        names.dedup();
        if !names.is_empty() {
            audit.insert(key.into(), names.join(","));
        }
    };
    put("env-set", set_names);
    put("env-blanked", blanked_names);
    if !sslmode_audit.is_empty() {
        audit.insert("sslmode".into(), sslmode_audit.join(","));
    }
    Ok(Mutation {
        pod: out,
        outcome: Outcome::Applied(component),
        warnings,
        audit,
    })
}

#[cfg(test)]
mod tests;
