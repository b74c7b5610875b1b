//! AdmissionReview in, AdmissionReview out. No HTTP here: the server and the CLI both call
//! [`review`] / [`evaluate`], so the CLI previews exactly what the server answers.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize, de};
use serde_json::value::RawValue;

use crate::facts::Facts;
use crate::mutate::{self, Component, MutateConfig, Outcome, Skip, Target};

mod diff;
mod json;
mod projection;
mod single;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";
const WARNING_PREFIX: &str = "harbor-iam-webhook: ";

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
}

#[derive(Debug, Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    kind: String,
}

/// The parts of a pod needed to decide whether to look further. Every field is lenient:
/// a non-Harbor pod must never be refused because our model can't read it.
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

/// What happened to one review, for the log line and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Patched.
    Mutated,
    /// A target pod that needed no change (e.g. a reinvocation).
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

/// The facts of one review worth a log line. Names only, never env values.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub component: Option<Component>,
    pub reason: &'static str,
    pub decision: Option<Decision>,
    pub patch_ops: usize,
}

impl Summary {
    /// What the request says of itself, before anything is decided.
    fn of_request(uid: &str, namespace: Option<&str>, name: Option<&str>, operation: &str) -> Self {
        Summary {
            uid: uid.to_owned(),
            namespace: namespace.unwrap_or_default().to_owned(),
            name: name.unwrap_or_default().to_owned(),
            operation: operation.to_owned(),
            ..Default::default()
        }
    }
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

/// The mutation of one pod object as JSON Patch, independent of the review around it.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub decision: Decision,
    pub component: Option<Component>,
    pub reason: &'static str,
    pub patch: json_patch::Patch,
    pub warnings: Vec<String>,
    pub audit: BTreeMap<String, String>,
    /// Set when the pod must be refused.
    pub denial: Option<String>,
}

impl Evaluation {
    fn skipped(reason: &'static str, component: Option<Component>, warnings: Vec<String>) -> Self {
        Evaluation {
            decision: Decision::Skipped,
            component,
            reason,
            patch: json_patch::Patch(vec![]),
            warnings,
            audit: BTreeMap::new(),
            denial: None,
        }
    }
}

/// Describe a serde error by where it happened, without the offending value (which may be a
/// secret: `env[3].value` given as a number would be echoed by serde's own message).
fn describe_parse_error(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = err.path().to_string();
    let inner = err.inner();
    let what = match inner.classify() {
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

/// What a pod refers to that cluster facts can answer: its namespace, the ServiceAccounts the
/// decision depends on and the ConfigMaps its containers read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub namespace: Option<String>,
    pub service_accounts: Vec<String>,
    pub config_maps: Vec<String>,
    /// Of `service_accounts`, the one the pod would be switched to: the only fact whose
    /// absence (or missing role) denies the pod. The pod's own account and the ConfigMaps
    /// only change what is injected.
    pub target_service_account: String,
}

/// A Harbor pod that passed the raw-label check and parsed: waiting for facts.
#[derive(Debug, Clone)]
pub struct Candidate {
    pod: Box<Pod>,
    /// The pod's volumes its projection leaves out ([`projection::Projected`]).
    hidden_volumes: usize,
    component: Component,
    needs: Needs,
}

/// The first phase of deciding about a pod: either already decided, or a candidate that
/// needs facts.
#[derive(Debug)]
pub enum Begin {
    Done(Evaluation),
    Candidate(Box<Candidate>),
}

impl Candidate {
    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    /// Apply the engine with `facts`; pure.
    pub fn finish(self, config: &MutateConfig, facts: &Facts) -> Evaluation {
        let Candidate {
            mut pod,
            hidden_volumes,
            component,
            ..
        } = self;
        // The engine edits the pod in place; all the patch needs of the pod as it was is kept
        // aside first. Fields our model does not know are in neither and never touched.
        let before = diff::EngineFields::of(&pod).with_hidden_volumes(hidden_volumes);
        let mutation = match mutate::edit(&mut pod, config, facts) {
            Ok(m) => m,
            Err(err) => {
                return Evaluation {
                    decision: Decision::Denied,
                    component: Some(component),
                    reason: "denied",
                    patch: json_patch::Patch(vec![]),
                    warnings: vec![],
                    audit: BTreeMap::from([("component".into(), component.to_string())]),
                    denial: Some(err.to_string()),
                };
            }
        };
        let warnings = mutation
            .warnings
            .iter()
            .map(|w| [WARNING_PREFIX, w].concat())
            .collect();
        if let Outcome::Skipped(skip) = &mutation.outcome {
            let reason = match skip {
                Skip::ImageNotIamCapable(_) => "strict-images",
                Skip::NotHarbor => "not-harbor",
                Skip::NoDatabase(_) => "no-database",
                Skip::OptedOut(_) => "opted-out",
            };
            return Evaluation::skipped(reason, mutation.outcome.component(), warnings);
        }
        // The pod is a projection: only edits it can write are written.
        if !before.kept_whole(&pod) {
            let warning = format!(
                "{WARNING_PREFIX}pod left unchanged: the edit would rewrite a container or \
                 volume whole, which this webhook never does (please report this)"
            );
            return Evaluation::skipped("internal", Some(component), vec![warning]);
        }
        // `json_patch::diff` of the two pods' `to_value`, from the edited fields alone.
        let patch = diff::edits(&before, &pod).expect("a typed Pod always serialises");
        let mut audit = mutation.audit;
        let decision = if patch.0.is_empty() {
            Decision::Unchanged
        } else {
            Decision::Mutated
        };
        audit.insert("decision".into(), decision.as_str().into());
        Evaluation {
            decision,
            component: Some(component),
            reason: "applied",
            patch,
            warnings,
            audit,
            denial: None,
        }
    }
}

fn needs_of(pod: &Pod, component: Component, config: &MutateConfig) -> Needs {
    let target_service_account = config.service_account_for(component).to_owned();
    let mut service_accounts = vec![target_service_account.clone()];
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty());
    service_accounts.push(own.unwrap_or_else(|| "default".into()));
    let mut config_maps = Vec::new();
    for spec in pod.spec.iter() {
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
        {
            config_maps.extend(
                c.env_from
                    .iter()
                    .flatten()
                    .filter_map(|s| s.config_map_ref.as_ref().map(|r| r.name.clone())),
            );
            config_maps.extend(c.env.iter().flatten().filter_map(|e| {
                e.value_from
                    .as_ref()?
                    .config_map_key_ref
                    .as_ref()
                    .map(|r| r.name.clone())
            }));
        }
    }
    service_accounts.sort();
    service_accounts.dedup();
    config_maps.sort();
    config_maps.dedup();
    Needs {
        namespace: pod.metadata.namespace.clone(),
        service_accounts,
        config_maps,
        target_service_account,
    }
}

/// Phase one for one pod object (`object` is its JSON): raw labels first, then the typed pod.
/// `namespace` is the request's, used when the object carries none.
pub fn begin(object: &str, namespace: Option<&str>, config: &MutateConfig) -> Begin {
    begin_with(object, head_of(object), namespace, config)
}

/// The raw labels and names, leniently: anything unreadable is absent.
///
/// Reading stops at the end of `metadata`: the API server writes it before `spec`, so the
/// bulk of the pod is never looked at here. A `metadata` that is not an object of the expected
/// shape counts as absent, as does an object with no `metadata` or that is not JSON.
fn head_of(object: &str) -> PodHead {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_str(object);
    // Ends in the error that stops the read once `metadata` is found; any other outcome
    // leaves `found` empty.
    let _ = de::Deserializer::deserialize_map(&mut de, HeadVisitor(&mut found));
    PodHead {
        metadata: found.unwrap_or_default(),
    }
}

/// Visits a pod object up to its `metadata`, which it puts in the slot, then stops the read
/// with an error (serde has no other way to leave a map half read).
struct HeadVisitor<'s>(&'s mut Option<HeadMeta>);

impl<'de> de::Visitor<'de> for HeadVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a pod object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "metadata" {
                *self.0 = Some(map.next_value()?);
                return Err(de::Error::custom("metadata read"));
            }
            map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Deserialize without tracking the path; only a failure is parsed again, with
/// `serde_path_to_error`, for a message that names the field. Same acceptance either way.
fn deserialize_tracked<'de, R: serde_json::de::Read<'de>, T: Deserialize<'de>>(
    new: impl Fn() -> serde_json::Deserializer<R>,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    match T::deserialize(&mut new()) {
        Ok(value) => Ok(value),
        Err(_) => serde_path_to_error::deserialize(&mut new()),
    }
}

/// [`begin`] with the head already read.
fn begin_with(
    object: &str,
    head: PodHead,
    namespace: Option<&str>,
    config: &MutateConfig,
) -> Begin {
    // 1. Raw labels, leniently: only target pods are parsed into the typed model.
    let component = match decide(&head, config) {
        Ok(c) => c,
        Err(done) => return Begin::Done(done),
    };
    // 2. The typed pod, as far as the engine reads it. If that can't be read, the API server's
    //    own validation will say why; a webhook error here would hide that message.
    let read = deserialize_tracked(|| serde_json::Deserializer::from_str(object));
    let pod = match read.map(projection::PodIn::into_pod) {
        Ok(p) => p,
        Err(err) => {
            let name = head
                .metadata
                .name
                .or(head.metadata.generate_name)
                .unwrap_or_default();
            let warning = format!(
                "{WARNING_PREFIX}pod {name} ({component}) left unchanged: {}",
                describe_parse_error(&err)
            );
            return Begin::Done(Evaluation::skipped(
                "unreadable",
                Some(component),
                vec![warning],
            ));
        }
    };
    Begin::Candidate(candidate(pod, component, namespace, config))
}

/// Whether the raw head makes the pod a target: its component, or the evaluation that leaves
/// it alone.
fn decide(head: &PodHead, config: &MutateConfig) -> Result<Component, Evaluation> {
    decision(config.target(
        head.metadata.labels.as_ref(),
        head.metadata.annotations.as_ref(),
    ))
}

/// What a pod's target class means for it: its component, or the evaluation that leaves it
/// alone.
fn decision(target: Target) -> Result<Component, Evaluation> {
    match target {
        Target::NotHarbor => Err(Evaluation::skipped("not-harbor", None, vec![])),
        Target::OtherComponent(_) => Err(Evaluation::skipped("no-database", None, vec![])),
        Target::OptedOut(c) => Err(Evaluation::skipped("opted-out", Some(c), vec![])),
        Target::Mutate(c) => Ok(c),
    }
}

/// A target pod, typed, waiting for facts.
fn candidate(
    projected: projection::Projected,
    component: Component,
    namespace: Option<&str>,
    config: &MutateConfig,
) -> Box<Candidate> {
    let projection::Projected {
        mut pod,
        hidden_volumes,
    } = projected;
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = namespace.map(str::to_owned);
    }
    let needs = needs_of(&pod, component, config);
    Box::new(Candidate {
        pod,
        hidden_volumes,
        component,
        needs,
    })
}

/// Decide about one pod object with the facts at hand (both phases).
pub fn evaluate(
    object: &str,
    namespace: Option<&str>,
    config: &MutateConfig,
    facts: &Facts,
) -> Evaluation {
    match begin(object, namespace, config) {
        Begin::Done(e) => e,
        Begin::Candidate(c) => c.finish(config, facts),
    }
}

fn invalid(uid: String, message: String) -> Response {
    Response {
        allowed: false,
        status: Some(Status { code: 400, message }),
        ..allowed(uid)
    }
}

fn allowed(uid: String) -> Response {
    Response {
        uid,
        allowed: true,
        status: None,
        patch: None,
        patch_type: None,
        warnings: vec![],
        audit_annotations: BTreeMap::new(),
    }
}

fn wrap(response: Response) -> ReviewOut {
    ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response,
    }
}

/// A review whose pod is a candidate: finish it once the facts are known.
#[derive(Debug)]
pub struct PendingReview {
    uid: String,
    summary: Summary,
    candidate: Box<Candidate>,
}

impl PendingReview {
    pub fn needs(&self) -> &Needs {
        self.candidate.needs()
    }

    pub fn finish(self, config: &MutateConfig, facts: &Facts) -> (ReviewOut, Summary) {
        let eval = self.candidate.finish(config, facts);
        answer(self.uid, self.summary, eval)
    }
}

/// Phase one of a review: answered already, or waiting for facts.
#[derive(Debug)]
pub enum ReviewStep {
    Answered(ReviewOut, Summary),
    Pending(PendingReview),
}

fn answer(uid: String, mut summary: Summary, eval: Evaluation) -> (ReviewOut, Summary) {
    summary.component = eval.component;
    summary.reason = eval.reason;
    summary.decision = Some(eval.decision);
    summary.patch_ops = eval.patch.0.len();
    let mut response = allowed(uid);
    response.warnings = eval.warnings;
    response.audit_annotations = eval.audit;
    if let Some(message) = eval.denial {
        response.allowed = false;
        response.status = Some(Status { code: 403, message });
    } else if !eval.patch.0.is_empty() {
        // Sized for a typical patch up front: growing from empty costs a copy per doubling.
        let mut bytes = Vec::with_capacity(2048);
        serde_json::to_writer(&mut bytes, &eval.patch).expect("a JSON Patch always serialises");
        response.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        response.patch_type = Some("JSONPatch".into());
    }
    (wrap(response), summary)
}

/// The only reviews a pod is mutated in: a pod's CREATE, not of a subresource.
fn is_pod_create(kind: &GroupVersionKind, operation: &str, sub_resource: Option<&str>) -> bool {
    kind.group.is_empty()
        && kind.version == "v1"
        && kind.kind == "Pod"
        && operation == "CREATE"
        && sub_resource.is_none_or(str::is_empty)
}

/// The pod's name for the log, when the request has none (pods of controllers get theirs
/// after admission): the object's, or its `generateName`.
fn name_from_head(summary: &mut Summary, head: &PodHead) {
    let m = &head.metadata;
    name_unless_set(summary, || m.name.clone().or(m.generate_name.clone()));
}

/// The log's pod name, when the request gave none.
fn name_unless_set(summary: &mut Summary, pod_name: impl FnOnce() -> Option<String>) {
    if summary.name.is_empty() {
        summary.name = pod_name().unwrap_or_default();
    }
}

/// A pod CREATE review parsed: the uid, the log summary so far, the object.
enum Parsed<'a> {
    Answered(ReviewOut, Summary),
    PodCreate {
        uid: String,
        summary: Summary,
        namespace: Option<String>,
        object: &'a str,
        head: PodHead,
    },
}

fn parse(body: &[u8]) -> Result<Parsed<'_>, ReviewError> {
    // Errors name the field and position, never the offending value (it could be a secret).
    let parsed: ReviewIn = deserialize_tracked(|| serde_json::Deserializer::from_slice(body))
        .map_err(|e| {
            let at = format!("line {} column {}", e.inner().line(), e.inner().column());
            match e.inner().classify() {
                serde_json::error::Category::Data => {
                    ReviewError::NotAReview(format!("{} ({at})", describe_parse_error(&e)))
                }
                _ => ReviewError::NotJson(at),
            }
        })?;
    let (api_version, kind) = (
        parsed.api_version.unwrap_or_default(),
        parsed.kind.unwrap_or_default(),
    );
    if api_version != API_VERSION || kind != KIND {
        return Err(ReviewError::WrongVersion { api_version, kind });
    }
    let Some(req) = parsed.request else {
        let summary = Summary {
            decision: Some(Decision::Invalid),
            reason: "no-request",
            ..Default::default()
        };
        return Ok(Parsed::Answered(
            wrap(invalid(
                String::new(),
                "AdmissionReview has no request".into(),
            )),
            summary,
        ));
    };
    let mut summary = Summary::of_request(
        &req.uid,
        req.namespace.as_deref(),
        req.name.as_deref(),
        &req.operation,
    );
    if !is_pod_create(&req.kind, &req.operation, req.sub_resource.as_deref()) {
        summary.decision = Some(Decision::Skipped);
        summary.reason = "not-a-pod-create";
        return Ok(Parsed::Answered(wrap(allowed(req.uid)), summary));
    }
    let Some(object) = req.object else {
        summary.decision = Some(Decision::Invalid);
        summary.reason = "no-object";
        return Ok(Parsed::Answered(
            wrap(invalid(req.uid, "pod CREATE review has no object".into())),
            summary,
        ));
    };
    // Read once here for the log line and by whoever decides next.
    let head = head_of(object.get());
    name_from_head(&mut summary, &head);
    Ok(Parsed::PodCreate {
        uid: req.uid,
        summary,
        namespace: req.namespace,
        object: object.get(),
        head,
    })
}

/// Phase one of answering a mutating review body.
pub fn start(body: &[u8], config: &MutateConfig) -> Result<ReviewStep, ReviewError> {
    match one_pass(body, config) {
        Some(step) => Ok(step),
        None => start_in_passes(body, config),
    }
}

/// [`start`] for the usual pod CREATE review, in one pass over the body
/// ([`single`]); `None` for anything else, which [`start_in_passes`] answers.
fn one_pass(body: &[u8], config: &MutateConfig) -> Option<ReviewStep> {
    let r = single::read(body, config)?;
    if r.api_version.as_deref() != Some(API_VERSION)
        || r.kind.as_deref() != Some(KIND)
        || !is_pod_create(&r.resource_kind, &r.operation, r.sub_resource.as_deref())
    {
        return None;
    }
    let mut summary = Summary::of_request(
        &r.uid,
        r.namespace.as_deref(),
        r.name.as_deref(),
        &r.operation,
    );
    name_unless_set(&mut summary, || r.pod_name);
    Some(match decision(r.target) {
        Err(eval) => {
            let (out, s) = answer(r.uid, summary, eval);
            ReviewStep::Answered(out, s)
        }
        Ok(component) => ReviewStep::Pending(PendingReview {
            uid: r.uid,
            summary,
            candidate: candidate(r.pod?, component, r.namespace.as_deref(), config),
        }),
    })
}

/// [`start`] the general way: the envelope, the raw head, then the typed pod.
fn start_in_passes(body: &[u8], config: &MutateConfig) -> Result<ReviewStep, ReviewError> {
    let (uid, summary, namespace, object, head) = match parse(body)? {
        Parsed::Answered(out, s) => return Ok(ReviewStep::Answered(out, s)),
        Parsed::PodCreate {
            uid,
            summary,
            namespace,
            object,
            head,
        } => (uid, summary, namespace, object, head),
    };
    Ok(
        match begin_with(object, head, namespace.as_deref(), config) {
            Begin::Done(eval) => {
                let (out, s) = answer(uid, summary, eval);
                ReviewStep::Answered(out, s)
            }
            Begin::Candidate(candidate) => ReviewStep::Pending(PendingReview {
                uid,
                summary,
                candidate,
            }),
        },
    )
}

/// Answer one mutating AdmissionReview body with the facts at hand.
pub fn review(
    body: &[u8],
    config: &MutateConfig,
    facts: &Facts,
) -> Result<(ReviewOut, Summary), ReviewError> {
    Ok(match start(body, config)? {
        ReviewStep::Answered(out, s) => (out, s),
        ReviewStep::Pending(p) => p.finish(config, facts),
    })
}

/// Answer one validating AdmissionReview body: refuse a Harbor pod that would still receive a
/// static secret. Needs no facts.
pub fn validate_review(
    body: &[u8],
    config: &MutateConfig,
) -> Result<(ReviewOut, Summary), ReviewError> {
    let (uid, mut summary, namespace, object, head) = match parse(body)? {
        Parsed::Answered(out, s) => return Ok((out, s)),
        Parsed::PodCreate {
            uid,
            summary,
            namespace,
            object,
            head,
        } => (uid, summary, namespace, object, head),
    };
    let target = config.target(head.metadata.labels.as_ref(), None);
    let Target::Mutate(component) = target else {
        summary.decision = Some(Decision::Skipped);
        summary.reason = "not-a-target";
        return Ok((wrap(allowed(uid)), summary));
    };
    summary.component = Some(component);
    let Ok(mut pod) = serde_json::from_str::<Pod>(object) else {
        // The API server's own validation reports an unreadable pod.
        summary.decision = Some(Decision::Skipped);
        summary.reason = "unreadable";
        return Ok((wrap(allowed(uid)), summary));
    };
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = namespace;
    }
    Ok(match mutate::validate(&pod, config) {
        Ok(()) => {
            summary.decision = Some(Decision::Unchanged);
            summary.reason = "no-static-secret";
            (wrap(allowed(uid)), summary)
        }
        Err(violation) => {
            summary.decision = Some(Decision::Denied);
            summary.reason = "static-secret";
            let mut response = allowed(uid);
            response.allowed = false;
            response.status = Some(Status {
                code: 403,
                message: violation.to_string(),
            });
            (wrap(response), summary)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(s.reason, "not-harbor");
        // Labels that aren't even strings: still not our business.
        let bad = json!({"metadata": {"labels": {"app": 5}}, "spec": {}});
        let (out, _) = review(&review_json(bad, "CREATE"), &cfg(), &Facts::default()).unwrap();
        assert!(out.response.allowed && out.response.patch.is_none());
        // A Harbor pod we can't read: allowed with a warning naming the field, not the value.
        let mut bad = core_pod();
        bad["spec"]["containers"][0]["env"][0]["value"] = json!(123456789);
        let (out, s) = review(&review_json(bad, "CREATE"), &cfg(), &Facts::default()).unwrap();
        assert!(out.response.allowed && out.response.patch.is_none());
        assert_eq!(s.reason, "unreadable");
        let w = &out.response.warnings[0];
        assert!(w.contains("spec.containers[0].env[0].value"), "{w}");
        assert!(!w.contains("123456789"), "{w}");
        // A field the engine does not read is not read at all: the pod is handled, and the
        // field is left for the API server's validation (and is not in the patch).
        let mut odd = core_pod();
        odd["spec"]["containers"][0]["resources"] = json!("oops");
        odd["status"] = json!(7);
        let (out, s) = review(&review_json(odd, "CREATE"), &cfg(), &Facts::default()).unwrap();
        assert_eq!(s.reason, "applied");
        let patch = serde_json::to_string(&decode_patch(&out.response)).unwrap();
        assert!(patch.contains("POSTGRESQL_USE_IAM_AUTH"), "{patch}");
        assert!(
            !patch.contains("resources") && !patch.contains("oops"),
            "{patch}"
        );
    }

    /// Everything a review step says: the answer (after the facts, for a candidate) and the
    /// log summary.
    fn render(step: ReviewStep, facts: &Facts) -> String {
        let (out, summary) = match step {
            ReviewStep::Answered(out, s) => (out, s),
            ReviewStep::Pending(p) => {
                let needs = format!("{:?}", p.needs());
                let (out, s) = p.finish(&cfg(), facts);
                return format!("{} {s:?} {needs}", serde_json::to_string(&out).unwrap());
            }
        };
        format!("{} {summary:?}", serde_json::to_string(&out).unwrap())
    }

    /// The one-pass reading answers the usual reviews, and exactly as the general path does;
    /// whatever it leaves to the general path is still answered.
    #[test]
    fn one_pass_answers_as_the_general_path() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pods");
        let mut pods: Vec<serde_json::Value> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                serde_yaml_ng::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap())
                    .unwrap()
            })
            .collect();
        pods.push(core_pod());
        let mut other = core_pod();
        other["metadata"]["labels"] = json!({"app": "shop"});
        other["spec"] = json!({"containers": "not a list, and not read"});
        pods.push(other);
        pods.push(json!({"apiVersion": "v1", "kind": "Pod", "metadata": null, "spec": {}}));
        let facts = Facts::default();
        let mut usual = 0;
        for pod in &pods {
            let body = review_json(pod.clone(), "CREATE");
            let fast =
                one_pass(&body, &cfg()).unwrap_or_else(|| panic!("not read in one pass: {pod}"));
            let general = start_in_passes(&body, &cfg()).unwrap();
            assert_eq!(render(fast, &facts), render(general, &facts));
            usual += 1;
        }
        assert!(usual >= 17, "{usual}");

        // Left to the general path, and answered.
        let mut unusual: Vec<Vec<u8>> = Vec::new();
        let core = review_json(core_pod(), "CREATE");
        let text = String::from_utf8(core.clone()).unwrap();
        // `spec` before `metadata`.
        unusual.push(
            text.replace(
                r#""apiVersion":"v1","kind":"Pod","metadata""#,
                r#""apiVersion":"v1","kind":"Pod","spec":{},"metadata""#,
            )
            .into_bytes(),
        );
        let mut bad = core_pod();
        bad["spec"]["containers"][0]["env"][0]["value"] = json!(5);
        unusual.push(review_json(bad, "CREATE"));
        let mut v2 = core_pod();
        v2["apiVersion"] = json!("v2");
        unusual.push(review_json(v2, "CREATE"));
        unusual.push(review_json(core_pod(), "UPDATE"));
        unusual.push(
            text.replace(r#""uid":"#, r#""uid":"x","uid":"#)
                .into_bytes(),
        );
        unusual.push(
            text.replace(r#""metadata":"#, r#""metadata":{},"metadata":"#)
                .into_bytes(),
        );
        unusual.push(
            text.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
                .into_bytes(),
        );
        unusual.push(b"{}".to_vec());
        unusual.push(review_json(json!({"kind": "Pod", "spec": {}}), "CREATE"));
        // A `metadata` the projection refuses, where the general path reads what it can.
        for (member, value) in [
            ("labels", json!({"app": 5})),
            ("annotations", json!(["not", "a", "map"])),
            ("name", json!(7)),
        ] {
            let mut shop = core_pod();
            shop["metadata"]["labels"] = json!({"app": "shop"});
            for mut pod in [core_pod(), shop] {
                pod["metadata"][member] = value.clone();
                unusual.push(review_json(pod, "CREATE"));
            }
        }
        for body in &unusual {
            assert!(
                one_pass(body, &cfg()).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
            let general = start_in_passes(body, &cfg()).map(|s| render(s, &facts));
            let via_start = start(body, &cfg()).map(|s| render(s, &facts));
            assert_eq!(
                format!("{general:?}"),
                format!("{via_start:?}"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // The spec that came first really was there: answered by the general path.
        assert!(start(&unusual[0], &cfg()).is_ok());
    }

    #[test]
    fn the_head_is_read_up_to_metadata_wherever_it_is() {
        let labels = |object: &str| head_of(object).metadata.labels;
        let harbor = Some(BTreeMap::from([("app".to_owned(), "harbor".to_owned())]));
        // First, last, after a nested object with its own `metadata` key.
        for object in [
            r#"{"metadata":{"labels":{"app":"harbor"}},"spec":{"containers":"not read"}}"#,
            r#"{"spec":{"metadata":{"labels":{}}},"kind":"Pod","metadata":{"labels":{"app":"harbor"}}}"#,
        ] {
            assert_eq!(labels(object), harbor, "{object}");
        }
        // Anything unreadable is absent: the pod is nobody's.
        for object in [
            r#"{"metadata":{"labels":{"app":5}}}"#,
            r#"{"metadata":{"labels":{"app":"harbor"},"labels":{"app":"harbor"}}}"#,
            r#"{"metadata":"harbor"}"#,
            r#"{"spec":{}}"#,
            r#"["metadata"]"#,
            r#"{"kind":"Pod""#,
            "",
        ] {
            assert_eq!(labels(object), None, "{object}");
        }
        let head = head_of(r#"{"metadata":{"generateName":"core-","annotations":{"a":"b"}}}"#);
        assert_eq!(head.metadata.generate_name.as_deref(), Some("core-"));
        assert_eq!(head.metadata.annotations.map(|a| a.len()), Some(1));
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
        let Begin::Candidate(c) = begin(&pod.to_string(), None, &cfg()) else {
            panic!("a candidate")
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
            begin(&web.to_string(), None, &cfg()),
            Begin::Done(_)
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
}
