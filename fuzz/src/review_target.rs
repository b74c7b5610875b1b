//! The `review` target: arbitrary bytes as an AdmissionReview body.

use std::collections::HashSet;
use std::sync::LazyLock;

use base64::Engine as _;
use harbor_iam_webhook::admission::{Answer, Endpoint, ReviewError, ReviewOut, evaluate};

fn review(data: &[u8], config: &MutateConfig, facts: &Facts) -> Result<Answer, ReviewError> {
    harbor_iam_webhook::admission::review(data, Endpoint::Mutate, config, facts)
}

fn validate_review(data: &[u8], config: &MutateConfig) -> Result<Answer, ReviewError> {
    harbor_iam_webhook::admission::review(data, Endpoint::Validate, config, &Facts::default())
}
use harbor_iam_webhook::facts::Facts;
use harbor_iam_webhook::mutate::MutateConfig;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::{
    Case, ConfigInput, FactsChoice, SECRET_ENVS, SECRET_MARK, URL_ENV, assert_no_secret, config,
    facts_of, secret,
};

/// The defaults, plus the registry opt-in (so that registry pods are targets too).
static CONFIG: LazyLock<MutateConfig> = LazyLock::new(|| {
    config(&ConfigInput {
        registry_s3: true,
        ..ConfigInput::default()
    })
});
static FACTS: LazyLock<Facts> = LazyLock::new(|| facts_of(FactsChoice::All, None));

/// Just the parts of a review needed to find its object's exact text.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    request: Option<ProbeRequest<'a>>,
}

#[derive(Deserialize)]
struct ProbeRequest<'a> {
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
}

/// Run one body: never a panic, and every property of the answer holds. When the body is an
/// AdmissionReview with a pod in it, the same review is run again with secrets planted in
/// every password and URL env entry of the pod.
pub fn review_target(data: &[u8]) {
    let input: Option<Value> = serde_json::from_slice(data).ok();
    // A body that spells the mark itself (say, as a container name, which messages do echo)
    // can't be checked for leaks; the planted copy is not made either.
    let spelled = String::from_utf8_lossy(data).contains(SECRET_MARK)
        || input.as_ref().is_some_and(mentions_mark);
    check_review(data, input.as_ref(), !spelled);
    if spelled {
        return;
    }
    if let Some(mut planted) = input
        && plant(&mut planted)
    {
        let bytes = serde_json::to_vec(&planted).expect("a Value serialises");
        check_review(&bytes, Some(&planted), true);
    }
}

fn mentions_mark(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(SECRET_MARK),
        Value::Array(a) => a.iter().any(mentions_mark),
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| k.contains(SECRET_MARK) || mentions_mark(x)),
        _ => false,
    }
}

/// Put a secret in every password and `POSTGRESQL_URL` env entry that has a `value` (of any
/// type: a non-string makes the pod unreadable, whose warning must not echo it either).
fn plant(review: &mut Value) -> bool {
    let Some(pod) = review.pointer_mut("/request/object") else {
        return false;
    };
    let mut n = 0;
    for list in ["containers", "initContainers"] {
        let Some(cs) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) else {
                continue;
            };
            for e in env.iter_mut().filter_map(Value::as_object_mut) {
                let name = e.get("name").and_then(Value::as_str).unwrap_or("");
                let is_password = SECRET_ENVS.contains(&name);
                if !(is_password || name == URL_ENV) {
                    continue;
                }
                let Some(value) = e.get_mut("value") else {
                    continue;
                };
                n += 1;
                let s = secret(n);
                *value = match (&*value, is_password) {
                    (Value::Object(_), _) => json!({ "v": s }),
                    (Value::Array(_), _) => json!([s]),
                    (_, true) => json!(s),
                    (_, false) => match n % 3 {
                        0 => json!(format!("postgres://harbor:{s}@db/registry")),
                        1 => json!(format!("postgres://db/registry?password={s}")),
                        _ => json!(format!("host=db password={s}")),
                    },
                };
            }
        }
    }
    n > 0
}

/// Whether the review (as the webhook's own parser reads it) asks about a pod CREATE.
fn is_pod_create(review: &Value) -> bool {
    let req = &review["request"];
    let kind = &req["kind"];
    kind.get("group").is_none_or(|g| g == "")
        && kind["version"] == "v1"
        && kind["kind"] == "Pod"
        && req["operation"] == "CREATE"
        && req
            .get("subResource")
            .is_none_or(|s| s.is_null() || s == "")
}

fn decode_patch(b64: &str) -> json_patch::Patch {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("the patch is base64");
    serde_json::from_slice(&bytes).expect("the patch is a JSON Patch")
}

/// The validating webhook on the same body: never a panic, never a secret in its answer, and
/// its errors are the mutating one's.
fn check_validation(data: &[u8], secrets: bool) -> Option<bool> {
    match validate_review(data, &CONFIG) {
        Err(e) => {
            if secrets {
                assert_no_secret("a validation error", &e.to_string());
            }
            None
        }
        Ok((out, _)) => {
            let text = serde_json::to_string(&out).expect("a response serialises");
            if secrets {
                assert_no_secret("the validating response", &text);
            }
            assert!(
                out.response.patch.is_none(),
                "a validating answer with a patch"
            );
            Some(out.response.allowed)
        }
    }
}

fn check_review(data: &[u8], input: Option<&Value>, secrets: bool) {
    let validated = check_validation(data, secrets);
    let result = review(data, &CONFIG, &FACTS);
    assert_eq!(
        result.is_ok(),
        validated.is_some(),
        "the mutating and validating webhooks disagree about the body"
    );
    let (out, _summary) = match result {
        Err(e) => {
            if secrets {
                assert_no_secret("a review error", &e.to_string());
            }
            assert!(
                matches!(e.http_status(), 400 | 422),
                "status {}",
                e.http_status()
            );
            return;
        }
        Ok(ok) => ok,
    };
    let text = serde_json::to_string(&out).expect("a response serialises");
    if secrets {
        assert_no_secret("the response", &text);
    }
    // serde_json's Value has a nesting limit that the webhook's borrowed RawValue does not.
    let Some(input) = input else { return };
    let r = &out.response;
    if !r.allowed {
        assert!(r.status.is_some(), "refused without a status");
        assert!(r.patch.is_none(), "refused with a patch");
    }
    assert_eq!(
        r.patch.is_some(),
        r.patch_type.is_some(),
        "patch and patchType"
    );
    let patch = r.patch.as_deref().map(decode_patch);
    if let Some(p) = &patch {
        assert!(!p.0.is_empty(), "an empty patch is sent");
        assert_eq!(r.patch_type.as_deref(), Some("JSONPatch"));
        if secrets {
            assert_no_secret("the patch", &serde_json::to_string(p).unwrap());
        }
    }
    if let Some(uid) = input.pointer("/request/uid").and_then(Value::as_str) {
        assert_eq!(r.uid, uid, "uid not echoed");
    }

    let probe: Probe = serde_json::from_slice(data).expect("an answered review probes");
    let object = probe.request.and_then(|r| r.object);
    let Some(object) = object.filter(|_| is_pod_create(input)) else {
        assert!(patch.is_none(), "a patch for something not a pod CREATE");
        return;
    };

    // The review says exactly what evaluating its object says.
    let namespace = input.pointer("/request/namespace").and_then(Value::as_str);
    let eval = evaluate(object.get(), namespace, &CONFIG, &FACTS);
    assert_eq!(
        patch.as_ref().map_or(&[][..], |p| &p.0[..]),
        &eval.patch.0[..],
        "review and evaluate disagree"
    );
    assert_eq!(r.allowed, eval.denial.is_none());
    assert_eq!(r.warnings, eval.warnings);
    assert_eq!(r.audit_annotations, eval.audit);

    if has_duplicate_keys(object.get()) {
        // A Value keeps the last of duplicate keys, the webhook's typed parsers may refuse them
        // (then the pod counts as not Harbor): the checks below would compare different pods.
        // The API server never sends duplicate keys; such a body is checked for panics and
        // leaks only.
        return;
    }
    let Ok(raw) = serde_json::from_str::<Value>(object.get()) else {
        // Nested deeper than a Value may be: then not readable as a pod either.
        assert!(
            eval.patch.0.is_empty(),
            "a patch for an object nested too deep"
        );
        return;
    };
    let case = Case {
        object: &raw,
        namespace,
        config: &CONFIG,
        facts: &FACTS,
        facts_choice: FactsChoice::All,
        secrets,
    };
    let patched = case.check(&eval);

    // Reinvocation, through a whole new review: no patch, still allowed.
    if patch.is_some() {
        let mut again = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "reinvocation",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "object": patched,
            }
        });
        if let Some(ns) = namespace {
            again["request"]["namespace"] = json!(ns);
        }
        let bytes = serde_json::to_vec(&again).unwrap();
        let (out, _): (ReviewOut, _) =
            review(&bytes, &CONFIG, &FACTS).expect("a reinvocation is a review");
        assert!(
            out.response.allowed && out.response.patch.is_none(),
            "reinvocation: {out:?}"
        );
        assert_eq!(
            check_validation(&bytes, secrets),
            Some(true),
            "the validating webhook refuses the mutated pod"
        );
    }
}

/// Whether a JSON text has an object with the same key twice, at any depth.
fn has_duplicate_keys(text: &str) -> bool {
    serde_json::Deserializer::from_str(text)
        .deserialize_any(DuplicateKeys)
        .unwrap_or(false)
}

struct DuplicateKeys;

impl<'de> DeserializeSeed<'de> for DuplicateKeys {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DuplicateKeys {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut seen = HashSet::new();
        let mut duplicate = false;
        while let Some(key) = map.next_key::<String>()? {
            duplicate |= !seen.insert(key);
            duplicate |= map.next_value_seed(DuplicateKeys)?;
        }
        Ok(duplicate)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut duplicate = false;
        while let Some(d) = seq.next_element_seed(DuplicateKeys)? {
            duplicate |= d;
        }
        Ok(duplicate)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}
