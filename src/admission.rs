//! AdmissionReview in, AdmissionReview out, on one path for `/mutate`, `/validate` and the
//! `mutate` CLI: read the envelope once; leave alone what is not a pod CREATE; decide from the
//! raw labels first (a non-Harbor or unreadable pod is never refused because of our parse);
//! parse the typed `Pod` once; run the engine (after the caller has looked up the facts it
//! [`Needs`]); build the patch; and build every answer (allowed, patched, denied, invalid) in
//! [`answer`] from the request. No HTTP here.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::facts::{Facts, Needs};
use crate::mutate::{self, Component, MutateConfig, Outcome, Skip, Target};

mod patch;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";
const WARNING_PREFIX: &str = "harbor-iam-webhook: ";
const NO_OBJECT: &str = "pod CREATE review has no object";

// ---- the wire ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    operation: String,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_object: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    kind: String,
}

/// What the raw labels decision reads of a pod. Lenient: whatever does not read as expected
/// counts as absent, so a non-Harbor pod is never refused because of our model.
#[derive(Debug, Default, Deserialize)]
struct PodHead {
    #[serde(default)]
    metadata: HeadMeta,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeadMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewOut {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: Response,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Base64 of the JSON Patch, as `admission.k8s.io/v1` defines it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub audit_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

// ---- decisions and reasons ----

/// Which webhook a review is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// What happened to one review, for the log line and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Patched.
    Mutated,
    /// A target pod that needed no change (e.g. a reinvocation), or passed validation.
    Unchanged,
    /// Not ours: not a pod CREATE, not Harbor, no DB, opted out, strict images, unreadable.
    Skipped,
    Denied,
    /// A review the API server would never send.
    Invalid,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Mutated => "mutated",
            Decision::Unchanged => "unchanged",
            Decision::Skipped => "skipped",
            Decision::Denied => "denied",
            Decision::Invalid => "invalid",
        }
    }
}

/// Why a review was answered as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reason {
    #[default]
    NoRequest,
    NoObject,
    NotAPodCreate,
    NotHarbor,
    NoDatabase,
    OptedOut,
    StrictImages,
    Unreadable,
    /// The engine's rules were applied (the pod may have needed nothing).
    Applied,
    /// The engine refused the pod.
    Refused,
    /// `/validate`: no static secret reaches the pod.
    NoStaticSecret,
    /// `/validate`: a static secret would reach the pod.
    StaticSecret,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoRequest => "no-request",
            Reason::NoObject => "no-object",
            Reason::NotAPodCreate => "not-a-pod-create",
            Reason::NotHarbor => "not-harbor",
            Reason::NoDatabase => "no-database",
            Reason::OptedOut => "opted-out",
            Reason::StrictImages => "strict-images",
            Reason::Unreadable => "unreadable",
            Reason::Applied => "applied",
            Reason::Refused => "denied",
            Reason::NoStaticSecret => "no-static-secret",
            Reason::StaticSecret => "static-secret",
        }
    }

    /// The decision a reason stands for (a pod the rules were applied to is mutated or not).
    fn decision(self) -> Decision {
        match self {
            Reason::NoRequest | Reason::NoObject => Decision::Invalid,
            Reason::Refused | Reason::StaticSecret => Decision::Denied,
            Reason::Applied | Reason::NoStaticSecret => Decision::Unchanged,
            _ => Decision::Skipped,
        }
    }
}

/// The facts of one review worth a log line. Names only, never env values.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub component: Option<Component>,
    pub reason: Reason,
    pub decision: Option<Decision>,
    pub patch_ops: usize,
}

/// The review body can't be answered with an AdmissionReview: an HTTP client error.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body is not an AdmissionReview: {0}")]
    NotAReview(String),
    #[error(
        "unsupported AdmissionReview {api_version}/{kind}: this webhook speaks {API_VERSION} {KIND}"
    )]
    WrongVersion { api_version: String, kind: String },
}

impl ReviewError {
    pub fn http_status(&self) -> u16 {
        match self {
            ReviewError::NotJson(_) => 400,
            ReviewError::NotAReview(_) | ReviewError::WrongVersion { .. } => 422,
        }
    }
}

/// What is decided about one pod object, before it is put in a response.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub decision: Decision,
    pub component: Option<Component>,
    pub reason: Reason,
    pub patch: json_patch::Patch,
    pub warnings: Vec<String>,
    pub audit: BTreeMap<String, String>,
    /// Set when the pod must be refused.
    pub denial: Option<String>,
}

impl Evaluation {
    fn of(reason: Reason, component: Option<Component>) -> Self {
        Evaluation {
            decision: reason.decision(),
            component,
            reason,
            patch: json_patch::Patch(vec![]),
            warnings: vec![],
            audit: BTreeMap::new(),
            denial: None,
        }
    }

    /// A review the API server would never send: refused with a 400.
    fn invalid(reason: Reason, message: &str) -> Self {
        Evaluation {
            denial: Some(message.into()),
            ..Evaluation::of(reason, None)
        }
    }

    fn denied(reason: Reason, component: Component, message: String) -> Self {
        Evaluation {
            denial: Some(message),
            ..Evaluation::of(reason, Some(component))
        }
    }
}

// ---- the path ----

/// A review read as far as it can be without the cluster: answered, or a pod waiting for the
/// facts it [`Needs`].
#[derive(Debug)]
pub enum Step {
    Answered(Answer),
    Pending(Pending),
}

/// The response and its log summary.
pub type Answer = (ReviewOut, Summary);

/// A target pod of a pod CREATE, parsed, waiting for facts.
#[derive(Debug)]
pub struct Pending {
    uid: String,
    summary: Summary,
    endpoint: Endpoint,
    pod: Box<Pod>,
    component: Component,
    needs: Needs,
}

impl Pending {
    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    pub fn finish(self, config: &MutateConfig, facts: &Facts) -> Answer {
        let eval = match self.endpoint {
            Endpoint::Mutate => run_engine(*self.pod, self.component, config, facts),
            Endpoint::Validate => verdict(mutate::judge(&self.pod, config, facts), self.component),
        };
        answer(self.uid, self.summary, eval)
    }
}

/// Read a review body for `endpoint`: answered at once, or pending facts.
pub fn start(body: &[u8], endpoint: Endpoint, config: &MutateConfig) -> Result<Step, ReviewError> {
    let review = read_envelope(body)?;
    let Some(req) = review.request else {
        let eval = Evaluation::invalid(Reason::NoRequest, "AdmissionReview has no request");
        let no_request = answer(String::new(), Summary::default(), eval);
        return Ok(Step::Answered(no_request));
    };
    let mut summary = Summary {
        uid: req.uid.clone(),
        namespace: req.namespace.clone().unwrap_or_default(),
        name: req.name.clone().unwrap_or_default(),
        operation: req.operation.clone(),
        ..Summary::default()
    };
    let judged = if endpoint == Endpoint::Validate && is_pod(&req, "UPDATE", "ephemeralcontainers")
    {
        Judged::Done(validate_ephemeral(&req, config))
    } else if !is_pod(&req, "CREATE", "") {
        Judged::Done(Evaluation::of(Reason::NotAPodCreate, None))
    } else if let Some(object) = req.object {
        judge(
            object.get(),
            req.namespace.as_deref(),
            endpoint,
            config,
            &mut summary.name,
        )
    } else {
        Judged::Done(Evaluation::invalid(Reason::NoObject, NO_OBJECT))
    };
    Ok(match judged {
        Judged::Done(eval) => Step::Answered(answer(req.uid, summary, eval)),
        Judged::Pending(pod, component) => Step::Pending(Pending {
            endpoint,
            uid: req.uid,
            summary,
            needs: Needs::of(&pod, component, config),
            pod,
            component,
        }),
    })
}

/// Answer a review body with the facts at hand (the CLI, and the server without cluster facts).
pub fn review(
    body: &[u8],
    endpoint: Endpoint,
    config: &MutateConfig,
    facts: &Facts,
) -> Result<Answer, ReviewError> {
    Ok(match start(body, endpoint, config)? {
        Step::Answered(answer) => answer,
        Step::Pending(pending) => pending.finish(config, facts),
    })
}

/// What the mutating webhook decides about one pod object (a pod CREATE's `object`), with the
/// facts at hand.
pub fn evaluate(
    object: &str,
    namespace: Option<&str>,
    config: &MutateConfig,
    facts: &Facts,
) -> Evaluation {
    match judge(
        object,
        namespace,
        Endpoint::Mutate,
        config,
        &mut String::new(),
    ) {
        Judged::Done(eval) => eval,
        Judged::Pending(pod, component) => run_engine(*pod, component, config, facts),
    }
}

enum Judged {
    Done(Evaluation),
    /// A target pod: the engine or the guarantee runs once the facts are known.
    Pending(Box<Pod>, Component),
}

/// A pod CREATE's object: the raw labels first, then the typed pod. `name` is filled from the
/// object when the request had none (a controller's pods are named after admission).
fn judge(
    object: &str,
    namespace: Option<&str>,
    endpoint: Endpoint,
    config: &MutateConfig,
    name: &mut String,
) -> Judged {
    // 1. The raw labels, leniently: only target pods are parsed into the typed model.
    let head: PodHead = serde_json::from_str(object).unwrap_or_default();
    if name.is_empty() {
        let m = &head.metadata;
        *name = m
            .name
            .clone()
            .or(m.generate_name.clone())
            .unwrap_or_default();
    }
    // The opt-out annotation switches off the mutation, never the validation.
    let annotations = match endpoint {
        Endpoint::Mutate => head.metadata.annotations.as_ref(),
        Endpoint::Validate => None,
    };
    let component = match config.target(head.metadata.labels.as_ref(), annotations) {
        Target::Mutate(c) => c,
        Target::NotHarbor => return Judged::Done(Evaluation::of(Reason::NotHarbor, None)),
        Target::OtherComponent(_) => return Judged::Done(Evaluation::of(Reason::NoDatabase, None)),
        Target::OptedOut(c) => return Judged::Done(Evaluation::of(Reason::OptedOut, Some(c))),
    };
    // 2. The typed pod, once. If it can't be read, the API server's own validation says why;
    //    a refusal of ours would hide that message.
    let mut pod = match parse_pod(object) {
        Ok(pod) => pod,
        Err(field) => {
            let mut eval = Evaluation::of(Reason::Unreadable, Some(component));
            eval.warnings = vec![format!(
                "{WARNING_PREFIX}pod {name} ({component}) left unchanged: {field}"
            )];
            return Judged::Done(eval);
        }
    };
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = namespace.map(str::to_owned);
    }
    Judged::Pending(Box::new(pod), component)
}

fn read_envelope(body: &[u8]) -> Result<ReviewIn<'_>, ReviewError> {
    // Errors name the field and position, never the offending value (it could be a secret).
    // Checked once here, so that no string in it is checked again as it is read.
    let body = std::str::from_utf8(body)
        .map_err(|e| ReviewError::NotJson(format!("not UTF-8 after byte {}", e.valid_up_to())))?;
    let review: ReviewIn = read_json(body).map_err(|e| {
        let at = format!("line {} column {}", e.inner().line(), e.inner().column());
        match e.inner().classify() {
            serde_json::error::Category::Data => {
                ReviewError::NotAReview(format!("{} ({at})", describe_parse_error(&e)))
            }
            _ => ReviewError::NotJson(at),
        }
    })?;
    let api_version = review.api_version.clone().unwrap_or_default();
    let kind = review.kind.clone().unwrap_or_default();
    if api_version != API_VERSION || kind != KIND {
        return Err(ReviewError::WrongVersion { api_version, kind });
    }
    Ok(review)
}

type PathError = serde_path_to_error::Error<serde_json::Error>;

/// `json` deserialised; on failure, read again tracking the path, to say where it failed.
/// Tracking the path costs about as much as the parse itself, so only a failure pays for it.
fn read_json<'a, T: Deserialize<'a>>(json: &'a str) -> Result<T, PathError> {
    serde_json::from_str(json).or_else(|_| {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json))
    })
}

/// A review of a v1 Pod with `operation` on `sub_resource` (`""`: the pod itself). A pod is
/// judged at its CREATE, and `/validate` also judges what `kubectl debug` sends: an UPDATE of
/// its `ephemeralcontainers`.
fn is_pod(req: &Request, operation: &str, sub_resource: &str) -> bool {
    let k = &req.kind;
    (k.group.as_str(), k.version.as_str(), k.kind.as_str()) == ("", "v1", "Pod")
        && req.operation == operation
        && req.sub_resource.as_deref().unwrap_or("") == sub_resource
}

/// The typed pod, or where it could not be read (never the value: it may be a secret).
fn parse_pod(object: &str) -> Result<Pod, String> {
    read_json(object).map_err(|e| describe_parse_error(&e))
}

/// Describe a serde error by where it happened, without the offending value (which may be a
/// secret: `env[3].value` given as a number would be echoed by serde's own message).
fn describe_parse_error(err: &PathError) -> String {
    let path = err.path().to_string();
    let what = match err.inner().classify() {
        serde_json::error::Category::Data => "has an unexpected type or value",
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            "is not valid JSON"
        }
        serde_json::error::Category::Io => "could not be read",
    };
    if path == "." || path.is_empty() {
        format!("the object {what}")
    } else {
        format!("field {path} {what}")
    }
}

/// The mutation of a target pod and its patch.
fn run_engine(
    mut pod: Pod,
    component: Component,
    config: &MutateConfig,
    facts: &Facts,
) -> Evaluation {
    let mutation = match mutate::edit(&mut pod, config, facts) {
        Ok(m) => m,
        Err(err) => {
            let mut eval = Evaluation::denied(Reason::Refused, component, err.to_string());
            eval.audit = BTreeMap::from([("component".into(), component.to_string())]);
            return eval;
        }
    };
    let warnings = mutation
        .warnings
        .iter()
        .map(|w| [WARNING_PREFIX, w].concat())
        .collect();
    if let Outcome::Skipped(skip) = &mutation.outcome {
        let reason = match skip {
            Skip::ImageNotIamCapable(_) => Reason::StrictImages,
            Skip::NotHarbor => Reason::NotHarbor,
            Skip::NoDatabase(_) => Reason::NoDatabase,
            Skip::OptedOut(_) => Reason::OptedOut,
        };
        return Evaluation {
            warnings,
            ..Evaluation::of(reason, mutation.outcome.component())
        };
    }
    let patch = patch::of(&mutation.edits);
    let decision = if patch.0.is_empty() {
        Decision::Unchanged
    } else {
        Decision::Mutated
    };
    let mut audit = mutation.audit;
    audit.insert("decision".into(), decision.as_str().into());
    Evaluation {
        decision,
        patch,
        warnings,
        audit,
        ..Evaluation::of(Reason::Applied, Some(component))
    }
}

/// `/validate`'s answer: refuse a target pod that would still receive a static secret; a pod a
/// configuration skip leaves alone is admitted with a warning.
fn verdict(
    judged: Result<mutate::Admitted, mutate::Violation>,
    component: Component,
) -> Evaluation {
    match judged {
        Ok(admitted) => Evaluation {
            warnings: admitted
                .warnings
                .iter()
                .map(|w| [WARNING_PREFIX, w].concat())
                .collect(),
            ..Evaluation::of(Reason::NoStaticSecret, Some(component))
        },
        Err(violation) => {
            Evaluation::denied(Reason::StaticSecret, component, violation.to_string())
        }
    }
}

/// `/validate` of an ephemeral-containers update: an ephemeral container new in it must not
/// bring a static password into a Harbor DB pod ([`mutate::judge_ephemeral`]).
fn validate_ephemeral(req: &Request, config: &MutateConfig) -> Evaluation {
    let (Some(new), Some(old)) = (req.object, req.old_object) else {
        return Evaluation::invalid(
            Reason::NoObject,
            "ephemeralcontainers review without both pods",
        );
    };
    let (Ok(new), Ok(old)) = (parse_pod(new.get()), parse_pod(old.get())) else {
        // Unreadable: the API server's own validation answers.
        return Evaluation::of(Reason::Unreadable, None);
    };
    let component = match config.target(new.metadata.labels.as_ref(), None) {
        Target::Mutate(c) => c,
        _ => return Evaluation::of(Reason::NotHarbor, None),
    };
    verdict(
        mutate::judge_ephemeral(&old, &new, config, &Facts::default()),
        component,
    )
}

/// Every response, built from the request's uid and the evaluation.
fn answer(uid: String, mut summary: Summary, eval: Evaluation) -> Answer {
    summary.component = eval.component;
    summary.reason = eval.reason;
    summary.decision = Some(eval.decision);
    summary.patch_ops = eval.patch.0.len();
    let mut response = Response {
        uid,
        allowed: true,
        status: None,
        patch: None,
        patch_type: None,
        warnings: eval.warnings,
        audit_annotations: BTreeMap::new(),
    };
    if let Some(message) = eval.denial {
        response.allowed = false;
        let code = if eval.decision == Decision::Invalid {
            400
        } else {
            403
        };
        response.status = Some(Status { code, message });
    } else if !eval.patch.0.is_empty() {
        let bytes = serde_json::to_vec(&eval.patch).expect("a JSON Patch always serialises");
        response.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        response.patch_type = Some("JSONPatch".into());
        // Audit annotations only with a patch: those are the same on every reinvocation, and
        // the API server refuses to overwrite an audit annotation with another value.
        response.audit_annotations = eval.audit;
    }
    let out = ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response,
    };
    (out, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(body: &[u8], config: &MutateConfig, facts: &Facts) -> Result<Answer, ReviewError> {
        super::review(body, Endpoint::Mutate, config, facts)
    }

    fn validate_review(body: &[u8], config: &MutateConfig) -> Result<Answer, ReviewError> {
        super::review(body, Endpoint::Validate, config, &Facts::default())
    }

    fn cfg() -> MutateConfig {
        MutateConfig::new("eu-west-1")
    }

    fn review_json(object: serde_json::Value, operation: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "harbor",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": object,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn core_pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "harbor-core-", "labels": {"app": "harbor", "component": "core"}},
            "spec": {"containers": [{"name": "core", "image": "goharbor/harbor-core:v2.12.4",
                "env": [{"name": "POSTGRESQL_PASSWORD", "value": "hunter2"}]}]}
        })
    }

    fn decode_patch(r: &Response) -> json_patch::Patch {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r.patch.as_ref().unwrap())
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn uid_echoed_patch_base64_and_applies() {
        let (out, summary) = review(
            &review_json(core_pod(), "CREATE"),
            &cfg(),
            &Facts::default(),
        )
        .unwrap();
        let r = &out.response;
        assert_eq!(r.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert!(r.allowed);
        assert_eq!(r.patch_type.as_deref(), Some("JSONPatch"));
        let mut pod = core_pod();
        json_patch::patch(&mut pod, &decode_patch(r)).unwrap();
        assert_eq!(pod["spec"]["serviceAccountName"], "harbor-sa");
        assert_eq!(
            pod["spec"]["containers"][0]["env"][0],
            json!({"name": "POSTGRESQL_PASSWORD", "value": ""})
        );
        assert_eq!(summary.decision, Some(Decision::Mutated));
        assert_eq!(summary.name, "harbor-core-");
        assert_eq!(summary.component, Some(Component::Core));
        let text = serde_json::to_string(&out).unwrap();
        assert!(!text.contains("hunter2"));
        assert!(r.warnings.iter().all(|w| w.starts_with(WARNING_PREFIX)));
        assert_eq!(r.audit_annotations["component"], "core");
    }

    #[test]
    fn unknown_fields_are_never_touched() {
        let mut pod = core_pod();
        pod["spec"]["futurePodField"] = json!({"x": 1});
        pod["metadata"]["futureMetaField"] = json!("m");
        pod["spec"]["containers"][0]["futureContainerField"] = json!(true);
        pod["spec"]["containers"][0]["env"][0]["futureEnvField"] = json!("e");
        let (out, _) = review(
            &review_json(pod.clone(), "CREATE"),
            &cfg(),
            &Facts::default(),
        )
        .unwrap();
        let patch = decode_patch(&out.response);
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched["spec"]["futurePodField"], json!({"x": 1}));
        assert_eq!(patched["metadata"]["futureMetaField"], "m");
        assert_eq!(
            patched["spec"]["containers"][0]["futureContainerField"],
            true
        );
        assert_eq!(
            patched["spec"]["containers"][0]["env"][0]["futureEnvField"],
            "e"
        );
        assert_eq!(patched["spec"]["containers"][0]["env"][0]["value"], "");
        for op in &patch.0 {
            assert!(
                !matches!(op, json_patch::PatchOperation::Remove(_)),
                "unexpected remove: {op:?}"
            );
        }
    }

    #[test]
    fn non_create_and_non_pods_are_allowed_unchanged() {
        let (out, s) = review(
            &review_json(core_pod(), "UPDATE"),
            &cfg(),
            &Facts::default(),
        )
        .unwrap();
        assert!(out.response.allowed && out.response.patch.is_none());
        assert_eq!(s.decision, Some(Decision::Skipped));
        let mut body: serde_json::Value =
            serde_json::from_slice(&review_json(core_pod(), "CREATE")).unwrap();
        body["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let (out, _) = review(
            &serde_json::to_vec(&body).unwrap(),
            &cfg(),
            &Facts::default(),
        )
        .unwrap();
        assert!(out.response.allowed && out.response.patch.is_none());
        body["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
        body["request"]["subResource"] = json!("ephemeralcontainers");
        let (out, _) = review(
            &serde_json::to_vec(&body).unwrap(),
            &cfg(),
            &Facts::default(),
        )
        .unwrap();
        assert!(out.response.allowed && out.response.patch.is_none());
    }

    #[test]
    fn unparsable_pods() {
        // A non-Harbor pod our model can't read: allowed, silently, so the API server's own
        // validation error reaches the user.
        let bad = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": "oops"}});
        let (out, s) = review(&review_json(bad, "CREATE"), &cfg(), &Facts::default()).unwrap();
        assert!(
            out.response.allowed
                && out.response.patch.is_none()
                && out.response.warnings.is_empty()
        );
        assert_eq!(s.reason, Reason::NotHarbor);
        // Labels that aren't even strings: still not our business.
        let bad = json!({"metadata": {"labels": {"app": 5}}, "spec": {}});
        let (out, _) = review(&review_json(bad, "CREATE"), &cfg(), &Facts::default()).unwrap();
        assert!(out.response.allowed && out.response.patch.is_none());
        // A Harbor pod we can't read: allowed with a warning naming the field, not the value.
        let mut bad = core_pod();
        bad["spec"]["containers"][0]["env"][0]["value"] = json!(123456789);
        let (out, s) = review(&review_json(bad, "CREATE"), &cfg(), &Facts::default()).unwrap();
        assert!(out.response.allowed && out.response.patch.is_none());
        assert_eq!(s.reason, Reason::Unreadable);
        let w = &out.response.warnings[0];
        assert!(w.contains("spec.containers[0].env[0].value"), "{w}");
        assert!(!w.contains("123456789"), "{w}");
        // A field the engine does not read but our model can't either: the pod is unreadable,
        // allowed with a warning naming the field, for the API server's validation to refuse.
        let mut odd = core_pod();
        odd["spec"]["containers"][0]["resources"] = json!("oops");
        let (out, s) = review(&review_json(odd, "CREATE"), &cfg(), &Facts::default()).unwrap();
        assert_eq!(s.reason, Reason::Unreadable);
        assert!(out.response.patch.is_none());
        assert!(
            out.response.warnings[0].contains("resources"),
            "{:?}",
            out.response.warnings
        );
    }

    #[test]
    fn denial_has_a_message() {
        let mut pod = core_pod();
        pod["spec"]["containers"][0]["env"] =
            json!([{"name": "POSTGRESQL_URL", "value": "postgres://u:pw@h/d"}]);
        let (out, s) = review(&review_json(pod, "CREATE"), &cfg(), &Facts::default()).unwrap();
        assert!(!out.response.allowed);
        let status = out.response.status.unwrap();
        assert_eq!(status.code, 403);
        assert!(status.message.contains("POSTGRESQL_URL"));
        assert!(!status.message.contains("pw@"));
        assert_eq!(s.decision, Some(Decision::Denied));
    }

    #[test]
    fn malformed_reviews() {
        let e = review(b"not json", &cfg(), &Facts::default()).unwrap_err();
        assert_eq!(e.http_status(), 400);
        // Not UTF-8 (a Latin-1 secret): a 400 saying where, never the bytes.
        let e = review(b"{\"kind\": \"p\xe4ss\"}", &cfg(), &Facts::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "request body is not valid JSON: not UTF-8 after byte 11"
        );
        let e = review(br#"{"apiVersion": 5}"#, &cfg(), &Facts::default()).unwrap_err();
        assert_eq!(e.http_status(), 422);
        assert!(e.to_string().contains("field apiVersion"), "{e}");
        let e = review(
            br#"{"request": "hunter2-secret"}"#,
            &cfg(),
            &Facts::default(),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = review(br#"{"kind": "hunter2-secret"#, &cfg(), &Facts::default()).unwrap_err();
        assert_eq!(e.http_status(), 400);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = review(
            br#"{"apiVersion": "v1", "kind": "Pod"}"#,
            &cfg(),
            &Facts::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ReviewError::WrongVersion { .. }));
        let e = review(
            br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}"#,
            &cfg(),
            &Facts::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("admission.k8s.io/v1beta1"));
        let (out, _) = review(
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
            &cfg(),
            &Facts::default(),
        )
        .unwrap();
        assert!(!out.response.allowed);
        assert_eq!(out.response.status.unwrap().code, 400);
        let mut body: serde_json::Value =
            serde_json::from_slice(&review_json(core_pod(), "CREATE")).unwrap();
        body["request"].as_object_mut().unwrap().remove("object");
        let (out, _) = review(
            &serde_json::to_vec(&body).unwrap(),
            &cfg(),
            &Facts::default(),
        )
        .unwrap();
        assert!(!out.response.allowed);
    }

    #[test]
    fn candidates_say_what_facts_they_need() {
        let mut pod = core_pod();
        pod["metadata"]["namespace"] = json!("harbor");
        pod["spec"]["serviceAccountName"] = json!("harbor-core");
        pod["spec"]["containers"][0]["envFrom"] =
            json!([{"configMapRef": {"name": "harbor-core"}}, {"secretRef": {"name": "s"}}]);
        pod["spec"]["containers"][0]["env"] =
            json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "extra", "key": "k"}}}]);
        let Ok(Step::Pending(c)) = start(&review_json(pod, "CREATE"), Endpoint::Mutate, &cfg())
        else {
            panic!("a pod waiting for facts")
        };
        assert_eq!(
            c.needs(),
            &Needs {
                namespace: Some("harbor".into()),
                service_accounts: vec!["harbor-core".into(), "harbor-sa".into()],
                config_maps: vec!["extra".into(), "harbor-core".into()],
                target_service_account: "harbor-sa".into(),
            }
        );
        let web = json!({"metadata": {"labels": {"app": "web"}}});
        assert!(matches!(
            start(&review_json(web, "CREATE"), Endpoint::Mutate, &cfg()),
            Ok(Step::Answered(_))
        ));
    }

    #[test]
    fn validating_reviews() {
        let (out, _) = validate_review(&review_json(core_pod(), "CREATE"), &cfg()).unwrap();
        assert!(!out.response.allowed);
        let message = out.response.status.unwrap().message;
        assert!(
            message.contains("POSTGRESQL_PASSWORD from a literal value"),
            "{message}"
        );
        assert!(!message.contains("hunter2"));
        // The opt-out annotation does not bypass it.
        let mut opted_out = core_pod();
        opted_out["metadata"]["annotations"] = json!({"harbor-iam-webhook/inject": "disabled"});
        let (out, _) = validate_review(&review_json(opted_out, "CREATE"), &cfg()).unwrap();
        assert!(!out.response.allowed);
        // A mutated pod passes.
        let (mutated, _) = review(
            &review_json(core_pod(), "CREATE"),
            &cfg(),
            &Facts::default(),
        )
        .unwrap();
        let mut pod = core_pod();
        json_patch::patch(&mut pod, &decode_patch(&mutated.response)).unwrap();
        let (out, _) = validate_review(&review_json(pod, "CREATE"), &cfg()).unwrap();
        assert!(out.response.allowed, "{:?}", out.response.status);
        // Not ours: allowed.
        let web = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "env": [{"name": "POSTGRESQL_PASSWORD", "value": "x"}]}]}});
        let (out, _) = validate_review(&review_json(web, "CREATE"), &cfg()).unwrap();
        assert!(out.response.allowed);
    }

    #[test]
    fn ephemeral_containers_are_judged_by_validate() {
        let old = core_pod();
        let mut new = core_pod();
        // The pod as mutated (the password blank), then a debug container bringing one back.
        new["spec"]["containers"][0]["env"] = json!([{"name": "POSTGRESQL_PASSWORD", "value": ""}]);
        let mut old_mutated = old.clone();
        old_mutated["spec"]["containers"][0]["env"] = new["spec"]["containers"][0]["env"].clone();
        new["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox",
            "env": [{"name": "POSTGRESQL_PASSWORD", "value": "hunter2"}]}]);
        let review = |object: &serde_json::Value, old: &serde_json::Value| {
            let mut body: serde_json::Value =
                serde_json::from_slice(&review_json(object.clone(), "UPDATE")).unwrap();
            body["request"]["subResource"] = json!("ephemeralcontainers");
            body["request"]["oldObject"] = old.clone();
            serde_json::to_vec(&body).unwrap()
        };
        let (out, s) = validate_review(&review(&new, &old_mutated), &cfg()).unwrap();
        assert!(!out.response.allowed, "{:?}", out.response);
        assert_eq!(s.reason, Reason::StaticSecret);
        let message = out.response.status.unwrap().message;
        assert!(
            message.contains("debugger") && !message.contains("hunter2"),
            "{message}"
        );
        // The same container already in the old pod is not new: not this update's doing.
        let (out, _) = validate_review(&review(&new, &new), &cfg()).unwrap();
        assert!(out.response.allowed, "{:?}", out.response.status);
        // /mutate leaves subresources alone.
        let (out, s) = review_mutate(&review(&new, &old_mutated));
        assert!(out.response.allowed && out.response.patch.is_none());
        assert_eq!(s.reason, Reason::NotAPodCreate);
    }

    #[test]
    fn audit_annotations_only_with_a_patch() {
        let (out, _) = review_mutate(&review_json(core_pod(), "CREATE"));
        assert_eq!(out.response.audit_annotations["decision"], "mutated");
        let mut pod = core_pod();
        json_patch::patch(&mut pod, &decode_patch(&out.response)).unwrap();
        // The reinvocation: nothing to patch, so no audit annotation to overwrite.
        let (again, s) = review_mutate(&review_json(pod, "CREATE"));
        assert_eq!(s.decision, Some(Decision::Unchanged));
        assert!(again.response.patch.is_none());
        assert!(
            again.response.audit_annotations.is_empty(),
            "{:?}",
            again.response
        );
        // A denial carries none either.
        let mut bad = core_pod();
        bad["spec"]["containers"][0]["env"] =
            json!([{"name": "POSTGRESQL_URL", "value": "postgres://u:pw@h/d"}]);
        let (denied, _) = review_mutate(&review_json(bad, "CREATE"));
        assert!(!denied.response.allowed && denied.response.audit_annotations.is_empty());
    }

    fn review_mutate(body: &[u8]) -> Answer {
        review(body, &cfg(), &Facts::default()).unwrap()
    }
}
