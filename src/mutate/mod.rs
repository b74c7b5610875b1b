//! The mutation engine: a Pod in, the Pod switched to RDS IAM auth (plus warnings) out.
//! Pure: no I/O, no clock, no logging. Whatever it needs from the cluster arrives as [`Facts`].

mod component;
pub mod conninfo;
pub mod database_url;
pub mod effective;
pub mod env;
pub mod identity;
pub mod sslmode;
mod validate;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Volume, VolumeMount};
use wildmatch::WildMatch;

pub use component::{Component, Selector, Target};
pub use database_url::has_password as url_has_password;
use database_url::{Mode, Password};
pub use validate::{Admitted, Violation, judge, judge_ephemeral, validate};

use crate::consts::{
    self, AWS_ACCESS_KEY_ID, AWS_ROLE_ARN, AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE,
    EKS_ROLE_ARN_ANNOTATION, IAM_FEATURE_GATE, REGION_ANNOTATION, STATUS_ANNOTATION,
    STATUS_INJECTED,
};
use crate::facts::{Facts, SaFact};
use effective::{Env, Value};
pub use env::EnvEdit;
use env::{Blanked, blank_env, has_env_from, set_env};
use identity::WebIdentity;
use sslmode::{Sslmode, ensure_sslmode};

/// Where the pod's AWS credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    /// IAM Roles for Service Accounts: the ServiceAccount carries `eks.amazonaws.com/role-arn`.
    Irsa,
    /// EKS Pod Identity: an association the Kubernetes API can't show.
    PodIdentity,
}

/// What to do when the IRSA ServiceAccount is missing or has no role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissingRole {
    Deny,
    Warn,
}

/// What the engine is told by its operator.
#[derive(Debug, Clone)]
pub struct MutateConfig {
    pub region: String,
    pub service_account: String,
    pub component_service_accounts: BTreeMap<Component, String>,
    /// Image patterns (`*` wildcards) known to carry the IAM code, compiled once.
    pub iam_capable_images: Vec<WildMatch>,
    /// Skip pods whose images are not known to be IAM-capable, instead of warning.
    pub strict_images: bool,
    pub selector: Selector,
    pub identity_mode: IdentityMode,
    pub on_missing_role: OnMissingRole,
    /// Replace a pod's own ServiceAccount even when it already has a role.
    pub force_service_account: bool,
    /// Inject what amazon-eks-pod-identity-webhook would (IRSA mode only).
    pub inject_web_identity: bool,
    /// Default for `AWS_STS_REGIONAL_ENDPOINTS=regional` (a ServiceAccount annotation overrides).
    pub regional_sts: bool,
    /// Default projected token lifetime in seconds.
    pub token_expiration: i64,
    /// Also switch the registry to IRSA and blank its static S3 keys.
    pub registry_s3_irsa: bool,
}

impl MutateConfig {
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            service_account: consts::DEFAULT_SERVICE_ACCOUNT.into(),
            component_service_accounts: BTreeMap::new(),
            iam_capable_images: consts::DEFAULT_IAM_CAPABLE_IMAGES
                .iter()
                .map(|p| WildMatch::new(p))
                .collect(),
            strict_images: false,
            selector: Selector::default(),
            identity_mode: IdentityMode::Irsa,
            on_missing_role: OnMissingRole::Deny,
            force_service_account: false,
            inject_web_identity: true,
            regional_sts: false,
            token_expiration: consts::EKS_DEFAULT_TOKEN_EXPIRATION,
            registry_s3_irsa: false,
        }
    }

    pub fn service_account_for(&self, c: Component) -> &str {
        self.component_service_accounts
            .get(&c)
            .unwrap_or(&self.service_account)
    }

    /// The classification of the labels, narrowed by this configuration (the registry is a
    /// target only with the S3 opt-in).
    pub fn target(
        &self,
        labels: Option<&BTreeMap<String, String>>,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Target {
        match self.selector.classify_maps(labels, annotations) {
            Target::Mutate(Component::Registry) | Target::OptedOut(Component::Registry)
                if !self.registry_s3_irsa =>
            {
                Target::OtherComponent(Some(Component::Registry.to_string()))
            }
            t => t,
        }
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
        "pod {pod}: container {container} gets a POSTGRESQL_URL with a password in it (from {from}); Harbor uses \
         the URL as is, so the static password would survive RDS IAM auth. Remove the password from the URL or \
         unset POSTGRESQL_URL"
    )]
    PasswordInUrl {
        pod: String,
        container: String,
        from: String,
    },
    #[error(
        "pod {pod}: annotation {REGION_ANNOTATION}={value:?} is not an AWS region (expected e.g. eu-west-1)"
    )]
    InvalidRegion { pod: String, value: String },
    #[error(
        "pod {pod}: IRSA ServiceAccount {namespace}/{account} does not exist. Create it with the role that may \
         rds-db:connect: kubectl -n {namespace} create serviceaccount {account} && kubectl -n {namespace} annotate \
         serviceaccount {account} {EKS_ROLE_ARN_ANNOTATION}=arn:aws:iam::<account-id>:role/<role>"
    )]
    MissingServiceAccount {
        pod: String,
        namespace: String,
        account: String,
    },
    #[error(
        "pod {pod}: ServiceAccount {namespace}/{account} has no {EKS_ROLE_ARN_ANNOTATION} annotation, so the pod \
         would get no AWS credentials and crash on token generation. Annotate it: kubectl -n {namespace} annotate \
         serviceaccount {account} {EKS_ROLE_ARN_ANNOTATION}=arn:aws:iam::<account-id>:role/<role>"
    )]
    MissingRole {
        pod: String,
        namespace: String,
        account: String,
    },
}

/// `namespace/name`, falling back to `generateName` (pods of controllers have no name at CREATE).
pub fn pod_ref(pod: &Pod) -> String {
    let m = &pod.metadata;
    let ns = m.namespace.as_deref().unwrap_or("");
    let name = m
        .name
        .clone()
        .or_else(|| m.generate_name.as_ref().map(|g| [g, "*"].concat()))
        .unwrap_or_else(|| "<unnamed>".into());
    if ns.is_empty() {
        name
    } else {
        [ns, "/", &name].concat()
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
        // `{:?}` would add nothing but the quotes: none of these words has a character to escape.
        ["\"", value, "\""].concat()
    } else {
        "an unrecognised value".to_owned()
    }
}

fn shown_previous(was: &Value) -> String {
    match was {
        Value::Known { value, .. } => shown(value),
        Value::Unknown { from } => ["from ", from].concat(),
    }
}

/// Harbor parses booleans with Go's `strconv.ParseBool`.
fn is_true(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

pub fn classify(pod: &Pod, config: &MutateConfig) -> Target {
    config.target(
        pod.metadata.labels.as_ref(),
        pod.metadata.annotations.as_ref(),
    )
}

/// The chart's containers of `component` whose images are not known to carry the IAM code.
fn images_not_iam_capable<'p>(
    pod: &'p Pod,
    component: Component,
    config: &MutateConfig,
) -> Vec<&'p Container> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter(|c| component.chart_containers().contains(&c.name.as_str()))
        .filter(|c| {
            !c.image
                .as_deref()
                .is_some_and(|i| config.iam_capable_images.iter().any(|p| p.matches(i)))
        })
        .collect()
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

/// Where a container is: `spec.initContainers[index]` or `spec.containers[index]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub init: bool,
    pub index: usize,
}

/// One change the engine made to the pod, in the order made, with what it wrote: the admission
/// patch is one operation per edit (two for a value that drops a `valueFrom`).
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// `spec` written where the pod had none.
    Spec,
    /// `metadata.annotations[key] = value` (`new_map`: the pod had no annotations).
    Annotation {
        key: &'static str,
        value: &'static str,
        new_map: bool,
    },
    /// `spec.serviceAccountName`, and the deprecated `spec.serviceAccount` where the pod has it.
    ServiceAccount {
        name: String,
        deprecated_too: bool,
    },
    Env {
        at: At,
        edit: EnvEdit,
    },
    /// Appended to a container's `volumeMounts` (`new_list`: it had none).
    VolumeMount {
        at: At,
        mount: Box<VolumeMount>,
        new_list: bool,
    },
    /// Appended to `spec.volumes` (`new_list`: the pod had none).
    Volume {
        volume: Box<Volume>,
        new_list: bool,
    },
}

/// Every container of a pod with where it is, init containers last.
fn containers_at(spec: &mut PodSpec) -> impl Iterator<Item = (At, &mut Container)> {
    let regular = spec.containers.iter_mut().enumerate();
    let regular = regular.map(|(index, c)| (At { init: false, index }, c));
    let init = spec.init_containers.iter_mut().flatten().enumerate();
    regular.chain(init.map(|(index, c)| (At { init: true, index }, c)))
}

/// A warning is at most this many characters, so that with the admission layer's prefix
/// (`harbor-iam-webhook: `, 20 characters) it stays under the 120 the API server asks for.
pub const MAX_WARNING_CHARS: usize = 99;

/// A warning as the API server keeps it: control characters made blanks, cut to
/// [`MAX_WARNING_CHARS`] (ending with `…` where cut).
pub fn tidy_warning(text: String) -> String {
    let clean = match text.contains(char::is_control) {
        true => text.replace(char::is_control, " "),
        false => text,
    };
    // A string has at least as many bytes as characters.
    if clean.len() <= MAX_WARNING_CHARS || clean.chars().count() <= MAX_WARNING_CHARS {
        return clean;
    }
    let mut cut: String = clean.chars().take(MAX_WARNING_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Everything the engine says besides the pod: warnings for people, a summary for audit.
#[derive(Default)]
struct Notes {
    edits: Vec<Edit>,
    /// Each text once, with the containers it is about (none: about the pod), in the order
    /// first said.
    warnings: Vec<(String, Vec<String>)>,
    set: Vec<&'static str>,
    blanked: Vec<&'static str>,
    sslmode: Vec<String>,
    audit: BTreeMap<String, String>,
}

impl Notes {
    /// A warning about one container; the same text about several is said once.
    fn warn(&mut self, container: &str, text: String) {
        match self
            .warnings
            .iter_mut()
            .find(|(t, cs)| *t == text && !cs.is_empty())
        {
            Some((_, cs)) if cs.iter().any(|c| c == container) => {}
            Some((_, cs)) => cs.push(container.to_owned()),
            None => self.warnings.push((text, vec![container.to_owned()])),
        }
    }

    /// A warning about the pod as a whole.
    fn warn_pod(&mut self, text: String) {
        if !self
            .warnings
            .iter()
            .any(|(t, cs)| *t == text && cs.is_empty())
        {
            self.warnings.push((text, Vec::new()));
        }
    }

    /// The warnings as the response carries them: `container a: …`, `containers a, b: …`.
    fn rendered(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|(text, containers)| {
                let full = match containers.as_slice() {
                    [] => text.clone(),
                    [one] => ["container ", one, ": ", text].concat(),
                    many => ["containers ", &many.join(", "), ": ", text].concat(),
                };
                tidy_warning(full)
            })
            .collect()
    }
}

/// What [`edit`] says besides the pod it edited.
#[derive(Debug, Clone)]
pub struct Edited {
    pub outcome: Outcome,
    /// What was changed, in order (empty when the pod was left alone).
    pub edits: Vec<Edit>,
    /// For the cluster admin: what was replaced or dropped and why. Names only, never values.
    pub warnings: Vec<String>,
    /// Short machine-readable summary (becomes the review's auditAnnotations).
    pub audit: BTreeMap<String, String>,
}

/// Switch `pod` to RDS IAM authentication, or explain why it is left alone.
pub fn mutate(pod: &Pod, config: &MutateConfig, facts: &Facts) -> Result<Mutation, MutateError> {
    let mut out = pod.clone();
    let Edited {
        outcome,
        warnings,
        audit,
        ..
    } = edit(&mut out, config, facts)?;
    Ok(Mutation {
        pod: out,
        outcome,
        warnings,
        audit,
    })
}

/// [`mutate`] in place. A skipped pod is left as it was; after an error the pod may be half
/// edited and is to be thrown away. Only the pod's annotations, its ServiceAccount fields and
/// volumes, and its containers' `env` and `volumeMounts` are ever written (the admission
/// patch is made from those alone).
pub fn edit(pod: &mut Pod, config: &MutateConfig, facts: &Facts) -> Result<Edited, MutateError> {
    let unchanged = |outcome, warnings| Edited {
        outcome,
        edits: vec![],
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
    let mut notes = Notes::default();

    // Only the containers the charts create: a sidecar another webhook added (istio-proxy and
    // the like) never talks to the database.
    let unknown_images = images_not_iam_capable(pod, component, config);
    let what = if component.uses_database() {
        "RDS IAM auth"
    } else {
        "S3 web identity (distribution v3)"
    };
    for c in &unknown_images {
        notes.warn(
            &c.name,
            [
                "image ",
                c.image.as_deref().unwrap_or("<none>"),
                " may lack ",
                what,
            ]
            .concat(),
        );
    }
    if config.strict_images && !unknown_images.is_empty() {
        notes.warn_pod("left unchanged: --strict-images skips pods with such images".into());
        return Ok(unchanged(
            Outcome::Skipped(Skip::ImageNotIamCapable(component)),
            notes.rendered(),
        ));
    }

    let namespace = pod.metadata.namespace.clone();
    let ns = namespace.as_deref();
    let out = pod;
    if out.spec.is_none() {
        notes.edits.push(Edit::Spec);
    }
    let spec = out.spec.get_or_insert_with(Default::default);
    for (at, c) in containers_at(spec) {
        blank_secrets(c, at, component.password_envs(), &mut notes);
    }
    if component.uses_database() {
        // Only core and the migrator read POSTGRESQL_URL: elsewhere one the engine can't read
        // is not worth a warning, though a known password in one is still refused.
        let reads_url = component.sslmode_env() == Some(consts::POSTGRESQL_SSLMODE);
        check_database_urls(out, &who, ns, facts, reads_url, &mut notes)?;
    }
    let spec = out.spec.get_or_insert_with(Default::default);
    if let Some(iam) = component.iam_env_names() {
        for (at, c) in containers_at(spec).filter(|(at, _)| !at.init) {
            set_iam_env(c, at, iam, &region, ns, facts, &mut notes);
            if let Some(name) = component.sslmode_env() {
                raise_sslmode(c, at, name, ns, facts, &mut notes);
            }
        }
    }

    // The ServiceAccount, and what IRSA needs of it.
    let old_sa = spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let configured = config.service_account_for(component);
    let irsa = config.identity_mode == IdentityMode::Irsa;
    let keep_own = irsa
        && !config.force_service_account
        && old_sa != configured
        && facts.role_arn(ns, &old_sa).is_some();
    let sa = if keep_own {
        old_sa.clone()
    } else {
        configured.to_owned()
    };
    let deprecated_too = spec.service_account.is_some();
    if spec.service_account_name.as_deref() != Some(&sa)
        || (deprecated_too && spec.service_account.as_deref() != Some(&sa))
    {
        spec.service_account_name = Some(sa.clone());
        if deprecated_too {
            spec.service_account = Some(sa.clone());
        }
        notes.edits.push(Edit::ServiceAccount {
            name: sa.clone(),
            deprecated_too,
        });
    }
    // The account the pod ends with (not the change), so that a reinvocation says the same.
    notes.audit.insert(
        "service-account".into(),
        if keep_own {
            [&sa, " (kept: it has a role)"].concat()
        } else {
            sa.clone()
        },
    );
    if irsa {
        let role = check_role(&who, ns, &sa, facts, config, &mut notes)?;
        if let Some((role, annotations)) = role {
            if identity::pod_opted_out(out) {
                notes
                    .audit
                    .insert("web-identity".into(), "skipped (pod label)".into());
            } else if config.inject_web_identity {
                let wi = WebIdentity::resolve(
                    out,
                    role,
                    annotations,
                    config.regional_sts,
                    config.token_expiration,
                    &region,
                );
                if old_sa != sa {
                    replace_stale_role(out, facts.role_arn(ns, &old_sa), role, &mut notes);
                }
                identity::inject(out, &wi, &mut notes.edits);
                // The containers that carry it (not those changed now): the same on reinvocation.
                notes
                    .audit
                    .insert("web-identity".into(), identity::carriers(out).join(","));
            }
        }
    }
    if component.uses_database() {
        let role = irsa.then(|| facts.role_arn(ns, &sa)).flatten();
        check_credentials(out, config, role, ns, facts, &mut notes);
    }
    let annotations = &mut out.metadata.annotations;
    if annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .map(String::as_str)
        != Some(STATUS_INJECTED)
    {
        notes.edits.push(Edit::Annotation {
            key: STATUS_ANNOTATION,
            value: STATUS_INJECTED,
            new_map: annotations.is_none(),
        });
        annotations
            .get_or_insert_with(Default::default)
            .insert(STATUS_ANNOTATION.into(), STATUS_INJECTED.into());
    }

    let warnings = notes.rendered();
    let Notes {
        edits,
        mut set,
        mut blanked,
        sslmode,
        mut audit,
        ..
    } = notes;
    audit.insert("component".into(), component.as_str().to_owned());
    for (key, names) in [("env-set", &mut set), ("env-blanked", &mut blanked)] {
        names.sort_unstable();
        names.dedup();
        if !names.is_empty() {
            audit.insert(key.into(), names.join(","));
        }
    }
    if !sslmode.is_empty() {
        audit.insert("sslmode".into(), sslmode.join(","));
    }
    Ok(Edited {
        outcome: Outcome::Applied(component),
        edits,
        warnings,
        audit,
    })
}

/// `POSTGRESQL_URL` as pgx reads it once the kubelet has expanded it, our blanks applied: one
/// that carries a password is refused, one the engine can't read is warned about, and a weak or
/// missing sslmode is made `require` in the entry's literal text (regular containers only).
fn check_database_urls(
    pod: &mut Pod,
    who: &str,
    ns: Option<&str>,
    facts: &Facts,
    warn_unknown: bool,
    notes: &mut Notes,
) -> Result<(), MutateError> {
    let Some(spec) = pod.spec.as_mut() else {
        return Ok(());
    };
    for (at, c) in containers_at(spec) {
        let regular = !at.init;
        let Some(judged) = database_url::judge(c, ns, facts) else {
            continue;
        };
        let whole_unknown = matches!(
            (&judged.password, &judged.mode),
            (Password::Unknown { from: a }, Mode::Unknown { from: b }) if a == b
        );
        match judged.password {
            Password::Known { from } => {
                return Err(MutateError::PasswordInUrl {
                    pod: who.to_owned(),
                    container: c.name.clone(),
                    from,
                });
            }
            Password::Unknown { from } if warn_unknown => notes.warn(
                &c.name,
                if whole_unknown {
                    [
                        "POSTGRESQL_URL from ",
                        &from,
                        ": make sure it has no password",
                    ]
                    .concat()
                } else {
                    ["POSTGRESQL_URL's password may come from ", &from].concat()
                },
            ),
            _ => {}
        }
        if !regular {
            continue;
        }
        match judged.mode {
            Mode::Strong(v) => notes.sslmode.push([&c.name, ":url=", &v].concat()),
            Mode::Weak {
                was,
                fix: Some((i, value)),
            } => {
                if let Some(env) = c.env.as_mut().filter(|env| i < env.len()) {
                    let edit = env::set_value(env, i, &value);
                    notes.edits.push(Edit::Env { at, edit });
                }
                notes.sslmode.push([&c.name, ":url=require"].concat());
                notes.warn(
                    &c.name,
                    match was {
                        Some(was) => [
                            "POSTGRESQL_URL sslmode was ",
                            &shown(&was),
                            "; set to require",
                        ]
                        .concat(),
                        None => "POSTGRESQL_URL had no sslmode; sslmode=require added".into(),
                    },
                );
            }
            Mode::Weak { fix: None, .. } => {
                notes.sslmode.push([&c.name, ":url=weak"].concat());
                notes.warn(
                    &c.name,
                    "POSTGRESQL_URL sslmode weak, not rewritable here: set sslmode=require at its source"
                        .into(),
                );
            }
            Mode::Unknown { .. } if whole_unknown || !warn_unknown => {}
            Mode::Unknown { from } => {
                notes.sslmode.push([&c.name, ":url=unknown"].concat());
                {
                    notes.warn(
                        &c.name,
                        ["POSTGRESQL_URL sslmode comes from ", &from, "; left as is"].concat(),
                    );
                }
            }
            Mode::Unparsable => {
                notes.sslmode.push([&c.name, ":url=unparsable"].concat());
                notes.warn(
                    &c.name,
                    "POSTGRESQL_URL is not a connection string pgx reads; left as is".into(),
                );
            }
        }
    }
    Ok(())
}

fn set_iam_env(
    c: &mut Container,
    at: At,
    (use_iam, region_env): (&'static str, &'static str),
    region: &str,
    ns: Option<&str>,
    facts: &Facts,
    notes: &mut Notes,
) {
    for (name, value, same) in [
        (use_iam, "true", &is_true as &dyn Fn(&str) -> bool),
        (region_env, region, &|v: &str| v == region),
        (IAM_FEATURE_GATE, "true", &is_true),
    ] {
        let was = Env::of(c, ns, facts).get(name);
        // Reported whether or not it was there already, so that a reinvocation says the same.
        notes.set.push(name);
        if was.as_ref().and_then(Value::known).is_some_and(same) {
            continue;
        }
        let had_entry = c.env.iter().flatten().any(|e| e.name == name);
        let edits = set_env(c, name, value, |_| false);
        notes
            .edits
            .extend(edits.into_iter().map(|edit| Edit::Env { at, edit }));
        // A value from an `envFrom` source the engine can't read is not worth a warning: the
        // explicit entry wins over it.
        if let Some(was) = was.filter(|w| had_entry || w.known().is_some()) {
            notes.warn(
                &c.name,
                format!("{name} was {}; set to {value:?}", shown_previous(&was)),
            );
        }
    }
}

fn raise_sslmode(
    c: &mut Container,
    at: At,
    name: &'static str,
    ns: Option<&str>,
    facts: &Facts,
    notes: &mut Notes,
) {
    let mut edits = Vec::new();
    let decided = ensure_sslmode(c, name, ns, facts, &mut edits);
    notes
        .edits
        .extend(edits.into_iter().map(|edit| Edit::Env { at, edit }));
    match decided {
        Sslmode::Kept(v) => notes.sslmode.push([&c.name, "=", &v].concat()),
        Sslmode::Raised { was, from } => {
            notes.sslmode.push([&c.name, "=require"].concat());
            if let (Some(was), Some(from)) = (was, from) {
                notes.warn(
                    &c.name,
                    [
                        name,
                        " was ",
                        &shown(&was),
                        " (from ",
                        &from,
                        "); set to \"require\"",
                    ]
                    .concat(),
                );
            }
        }
        Sslmode::Unknown { from } => {
            notes.sslmode.push([&c.name, "=unknown"].concat());
            notes.warn(
                &c.name,
                [name, " unknown (", &from, "): left as is"].concat(),
            );
        }
    }
}

fn blank_secrets(c: &mut Container, at: At, names: &[&'static str], notes: &mut Notes) {
    let env_from = has_env_from(c);
    for name in names {
        let mut edits = Vec::new();
        let blanked = blank_env(c, name, env_from, &mut edits);
        notes
            .edits
            .extend(edits.into_iter().map(|edit| Edit::Env { at, edit }));
        for done in blanked {
            if let Blanked::Dropped(origin) = done {
                notes.warn(
                    &c.name,
                    ["blanked ", name, " (", origin.as_str(), ")"].concat(),
                );
            }
        }
        // What the pod ends with, so that a reinvocation reports the same.
        if c.env.iter().flatten().any(|e| e.name == *name) {
            notes.blanked.push(name);
        }
    }
}

/// Credentials that silently win over the ones the webhook sets up: the AWS SDK's default chain
/// takes static keys before web identity, and web identity before EKS Pod Identity.
fn check_credentials(
    pod: &Pod,
    config: &MutateConfig,
    role: Option<&str>,
    ns: Option<&str>,
    facts: &Facts,
    notes: &mut Notes,
) {
    for c in all_containers(pod) {
        let env = Env::of(c, ns, facts);
        // Set by the container's own entries, or to a value the engine reads (an `envFrom`
        // Secret may set any name, so its mere presence is not worth a warning).
        let present = |name: &str| {
            env.get(name).is_some_and(|v| match v.known() {
                Some(v) => !v.is_empty(),
                None => c.env.iter().flatten().any(|e| e.name == name),
            })
        };
        if present(AWS_ACCESS_KEY_ID) || present(AWS_SECRET_ACCESS_KEY) {
            notes.warn(
                &c.name,
                "static AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY win over IRSA".into(),
            );
        }
        match config.identity_mode {
            IdentityMode::Irsa => {
                let arn = env.get(AWS_ROLE_ARN);
                if let (Some(role), Some(arn)) = (role, arn.as_ref().and_then(Value::known))
                    && arn != role
                    && !arn.is_empty()
                {
                    notes.warn(
                        &c.name,
                        "AWS_ROLE_ARN is not the ServiceAccount's role; web identity assumes it"
                            .into(),
                    );
                }
            }
            IdentityMode::PodIdentity => {
                if present(AWS_ROLE_ARN) || present(AWS_WEB_IDENTITY_TOKEN_FILE) {
                    notes.warn(
                        &c.name,
                        "IRSA env (AWS_ROLE_ARN/AWS_WEB_IDENTITY_TOKEN_FILE) wins over Pod Identity".into(),
                    );
                }
            }
        }
    }
}

/// The warnings [`check_credentials`] gives for a pod as it is (`audit` reports them).
pub fn credential_warnings(pod: &Pod, config: &MutateConfig, facts: &Facts) -> Vec<String> {
    let Target::Mutate(component) = config.target(pod.metadata.labels.as_ref(), None) else {
        return Vec::new();
    };
    if !component.uses_database() {
        return Vec::new();
    }
    let ns = pod.metadata.namespace.as_deref();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    let role = (config.identity_mode == IdentityMode::Irsa)
        .then(|| facts.role_arn(ns, sa))
        .flatten();
    let mut notes = Notes::default();
    check_credentials(pod, config, role, ns, facts, &mut notes);
    notes.rendered()
}

/// A role ARN and the annotations of the ServiceAccount that carries it.
type RoleOf<'f> = (&'f str, &'f BTreeMap<String, String>);

/// IRSA: the ServiceAccount must exist and carry a role. Returns the role and the account's
/// annotations when known; denies or warns (per `--on-missing-role`) otherwise.
fn check_role<'f>(
    who: &str,
    ns: Option<&str>,
    sa: &str,
    facts: &'f Facts,
    config: &MutateConfig,
    notes: &mut Notes,
) -> Result<Option<RoleOf<'f>>, MutateError> {
    let namespace = ns.unwrap_or("default").to_owned();
    let fact = facts.service_account(ns, sa);
    let problem = match fact {
        SaFact::Exists(a) => match a.get(EKS_ROLE_ARN_ANNOTATION).filter(|r| !r.is_empty()) {
            Some(role) => return Ok(Some((role.as_str(), a))),
            None => MutateError::MissingRole {
                pod: who.to_owned(),
                namespace: namespace.clone(),
                account: sa.to_owned(),
            },
        },
        SaFact::Missing => MutateError::MissingServiceAccount {
            pod: who.to_owned(),
            namespace: namespace.clone(),
            account: sa.to_owned(),
        },
        SaFact::Unknown => {
            notes.warn_pod(
                [
                    "ServiceAccount ",
                    &namespace,
                    "/",
                    sa,
                    " not checked (facts off or lookup failed): no web identity",
                ]
                .concat(),
            );
            return Ok(None);
        }
    };
    match config.on_missing_role {
        OnMissingRole::Deny => Err(problem),
        OnMissingRole::Warn => {
            let what = match problem {
                MutateError::MissingServiceAccount { .. } => " does not exist",
                _ => " has no eks.amazonaws.com/role-arn",
            };
            notes.warn_pod(
                [
                    "IRSA ServiceAccount ",
                    &namespace,
                    "/",
                    sa,
                    what,
                    "; no web identity",
                ]
                .concat(),
            );
            Ok(None)
        }
    }
}

/// After a ServiceAccount change, an `AWS_ROLE_ARN` that an earlier webhook injected for the
/// old account would pair the new account's token with the old role: point it at the new role.
/// A value that is not the old account's role is the pod's own and stays.
fn replace_stale_role(pod: &mut Pod, old_role: Option<&str>, role: &str, notes: &mut Notes) {
    let Some(old_role) = old_role.filter(|r| *r != role) else {
        return;
    };
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    for (at, c) in containers_at(spec) {
        let stale: Vec<usize> = (c.env.iter().flatten().enumerate())
            .filter(|(_, e)| {
                e.name == AWS_ROLE_ARN
                    && e.value_from.is_none()
                    && e.value.as_deref() == Some(old_role)
            })
            .map(|(i, _)| i)
            .collect();
        if stale.is_empty() {
            continue;
        }
        let edits = set_env(c, AWS_ROLE_ARN, role, |i| !stale.contains(&i));
        notes
            .edits
            .extend(edits.into_iter().map(|edit| Edit::Env { at, edit }));
        notes.warn(
            &c.name,
            "AWS_ROLE_ARN was the previous ServiceAccount's role; set to the new one".into(),
        );
    }
}

#[cfg(test)]
mod tests;
