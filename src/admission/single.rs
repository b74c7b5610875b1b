//! The usual pod CREATE review in one pass over the body.
//!
//! The general path reads a body three times: the envelope (which scans the whole pod to find
//! where it ends), the pod's raw head, and the typed pod. Here the pod's members are visited
//! as the envelope is read: `metadata` is read once, straight into the projection
//! ([`projection`]), and its labels decide at once whether the pod is a target; only then is
//! `spec` read into the projection too, or skipped. This relies on `metadata` coming before
//! `spec`, as the API server writes it.
//!
//! Anything unusual ends the read with an error, and the caller answers the body on the
//! general path instead: `metadata` after `spec`, a repeated key, a missing field, a value of
//! the wrong type (even in a non-Harbor pod's `metadata`, which the general path reads
//! leniently), a pod the projection refuses. The general path then says exactly what it
//! always says; this one only ever answers what it would answer the same way: where the
//! projection reads a `metadata`, the lenient head reads the same labels and names.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};

use super::GroupVersionKind;
use super::projection::{self, MetaIn, Projected, SpecIn};
use crate::mutate::{MutateConfig, Target};

/// A review with a request and a pod object, as read in one pass.
pub(super) struct Read {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub uid: String,
    pub resource_kind: GroupVersionKind,
    pub sub_resource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub operation: String,
    /// What the pod's labels and annotations make it.
    pub target: Target,
    /// The pod's `name`, or else its `generateName`.
    pub pod_name: Option<String>,
    /// The projected pod, read only when it is a target.
    pub pod: Option<Projected>,
}

/// The body in one pass, or `None` for the general path.
pub(super) fn read(body: &[u8], config: &MutateConfig) -> Option<Read> {
    // As text, like the general path's typed parse: the k8s-openapi deserializers (large) are
    // then compiled once, for one kind of reader.
    let mut de = serde_json::Deserializer::from_str(std::str::from_utf8(body).ok()?);
    let read = Review(config).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(read)
}

/// Set a member seen for the first time.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::custom("repeated key")),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn required<T, E: de::Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
    slot.ok_or_else(|| E::missing_field(name))
}

/// The envelope: `apiVersion`, `kind`, `request`.
struct Review<'c>(&'c MutateConfig);

/// The request: who, what, and the pod object.
struct Request<'c>(&'c MutateConfig);

/// The pod object.
struct Object<'c>(&'c MutateConfig);

struct RequestRead {
    uid: String,
    resource_kind: GroupVersionKind,
    sub_resource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    operation: String,
    object: ObjectRead,
}

/// The pod object as far as it was read.
struct ObjectRead {
    target: Target,
    pod_name: Option<String>,
    pod: Option<Projected>,
}

macro_rules! map_seed {
    ($($seed:ident => $value:ty, $what:literal;)*) => {$(
        impl<'de> DeserializeSeed<'de> for $seed<'_> {
            type Value = $value;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<$value, D::Error> {
                d.deserialize_map(self)
            }
        }
        impl $seed<'_> {
            fn expecting(f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str($what)
            }
        }
    )*};
}

map_seed! {
    Review => Read, "an AdmissionReview";
    Request => RequestRead, "an AdmissionReview request";
    Object => ObjectRead, "a pod";
}

impl<'de> Visitor<'de> for Review<'_> {
    type Value = Read;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        Self::expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read, A::Error> {
        let (mut api_version, mut kind, mut request) = (None, None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "apiVersion" => once(&mut api_version, map.next_value()?)?,
                "kind" => once(&mut kind, map.next_value()?)?,
                "request" => once(&mut request, map.next_value_seed(Request(self.0))?)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let r: RequestRead = required(request, "request")?;
        let ObjectRead {
            target,
            pod_name,
            pod,
        } = r.object;
        Ok(Read {
            api_version: api_version.flatten(),
            kind: kind.flatten(),
            uid: r.uid,
            resource_kind: r.resource_kind,
            sub_resource: r.sub_resource,
            namespace: r.namespace,
            name: r.name,
            operation: r.operation,
            target,
            pod_name,
            pod,
        })
    }
}

impl<'de> Visitor<'de> for Request<'_> {
    type Value = RequestRead;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        Self::expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestRead, A::Error> {
        let (mut uid, mut kind, mut sub_resource, mut namespace) = (None, None, None, None);
        let (mut name, mut operation, mut object) = (None, None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "uid" => once(&mut uid, map.next_value()?)?,
                "kind" => once(&mut kind, map.next_value()?)?,
                "subResource" => once(&mut sub_resource, map.next_value()?)?,
                "namespace" => once(&mut namespace, map.next_value()?)?,
                "name" => once(&mut name, map.next_value()?)?,
                "operation" => once(&mut operation, map.next_value()?)?,
                "object" => once(&mut object, map.next_value_seed(Object(self.0))?)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(RequestRead {
            uid: required(uid, "uid")?,
            resource_kind: required(kind, "kind")?,
            sub_resource: sub_resource.flatten(),
            namespace: namespace.flatten(),
            name: name.flatten(),
            operation: required(operation, "operation")?,
            object: required(object, "object")?,
        })
    }
}

impl Object<'_> {
    /// What a pod with this `metadata` (or none) is.
    fn target(&self, meta: Option<&MetaIn>) -> Target {
        self.0.target(
            meta.and_then(MetaIn::labels),
            meta.and_then(MetaIn::annotations),
        )
    }
}

impl<'de> Visitor<'de> for Object<'_> {
    type Value = ObjectRead;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        Self::expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObjectRead, A::Error> {
        // `metadata` decides; until it has, `spec` can't be read.
        let mut metadata: Option<(Option<MetaIn>, Target)> = None;
        let (mut api_version, mut kind): (Option<Cow<'de, str>>, Option<Cow<'de, str>>) =
            (None, None);
        let mut spec: Option<Option<SpecIn>> = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let target = metadata.as_ref().map(|m| matches!(m.1, Target::Mutate(_)));
            match (key.as_ref(), target) {
                ("metadata", _) => {
                    let meta: Option<MetaIn> = map.next_value()?;
                    let target = self.target(meta.as_ref());
                    once(&mut metadata, (meta, target))?;
                }
                ("apiVersion", _) => once(&mut api_version, map.next_value()?)?,
                ("kind", _) => once(&mut kind, map.next_value()?)?,
                ("spec", None) => return Err(A::Error::custom("spec before metadata")),
                ("spec", Some(true)) => once(&mut spec, map.next_value()?)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (meta, target) = metadata.unwrap_or_else(|| (None, self.target(None)));
        if !matches!(target, Target::Mutate(_)) {
            return Ok(ObjectRead {
                target,
                pod_name: meta.and_then(MetaIn::into_name),
                pod: None,
            });
        }
        // What the projection (as k8s-openapi's `Pod`) insists on.
        if api_version.is_some_and(|v| v != projection::POD_API_VERSION)
            || kind.is_some_and(|k| k != projection::POD_KIND)
        {
            return Err(A::Error::custom("not a v1 Pod"));
        }
        Ok(ObjectRead {
            target,
            pod_name: meta.as_ref().and_then(MetaIn::name),
            pod: Some(projection::pod(meta, spec.flatten())),
        })
    }
}
