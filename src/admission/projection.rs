//! The pod as the webhook reads it: the members the engine reads or writes, in k8s-openapi's
//! own types, and nothing else.
//!
//! A pod's bulk (probes, resources, security contexts, volume sources, status, managed
//! fields) is skipped unread: the engine never looks at it, and the patch is made from the
//! engine's fields alone ([`super::diff`]), so none of it could reach the answer. What is read
//! is read exactly as k8s-openapi reads it: a `null` member is absent, a missing required
//! member is its default, a value of the wrong type is an error naming its path.
//!
//! The engine's result on the projection is its result on the whole pod; tests hold the
//! review's patch to `json_patch::diff` of the whole typed pod before and after the engine
//! (`tests/properties.rs`, and every fixture in `admission.rs`). A field the engine starts to
//! read must be added here; those tests fail until it is.
//!
//! Volumes: the engine looks a volume up by name ([`VOLUMES_READ`]) and adds volumes after the
//! pod's own; it reads nothing else of them. So the projection keeps the volumes of those
//! names, as their names alone, and only counts the others ([`Projected::hidden_volumes`]): a
//! k8s-openapi `Volume` is 3,280 bytes, and building, copying aside, comparing and dropping
//! six of them per review cost about 10% of the webhook's CPU per review (README,
//! Performance). An added volume's index counts the hidden ones
//! ([`EngineFields::with_hidden_volumes`](super::diff::EngineFields::with_hidden_volumes)).
//!
//! The other side of the bargain: a projected volume holds only its name and a projected
//! container only what is read here, so neither may ever be written whole: the patch may only
//! add volumes after the pod's own, and writes containers field by field
//! ([`EngineFields::kept_whole`](super::diff::EngineFields::kept_whole) checks it, as far as it
//! can see: that a volume is added after the hidden ones rather than before them, the tests
//! of every fixture pod against its whole self check).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, Pod, PodSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, de};

use crate::consts::EKS_TOKEN_VOLUME;

/// A whole pod object, projected. `apiVersion` and `kind` are checked as k8s-openapi checks
/// them: either absent, or `v1` and `Pod`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PodIn {
    #[serde(default, rename = "apiVersion", deserialize_with = "api_version")]
    _api_version: (),
    #[serde(default, rename = "kind", deserialize_with = "kind")]
    _kind: (),
    metadata: Option<MetaIn>,
    spec: Option<SpecIn>,
}

impl PodIn {
    pub fn into_pod(self) -> Projected {
        pod(self.metadata, self.spec)
    }
}

/// The volumes the engine looks up by name (`mutate::identity`); it reads no other.
pub(super) const VOLUMES_READ: &[&str] = &[EKS_TOKEN_VOLUME];

/// A projected pod.
#[derive(Debug)]
pub(super) struct Projected {
    /// Boxed: a `Pod` is 2,464 bytes, copied at each move (the review moves it through half a
    /// dozen frames before the engine sees it).
    pub pod: Box<Pod>,
    /// How many of the pod's volumes its `spec.volumes` leaves out: all but those named in
    /// [`VOLUMES_READ`]. Each came before any the engine adds.
    pub hidden_volumes: usize,
}

/// The projected pod from its parts.
pub(super) fn pod(metadata: Option<MetaIn>, spec: Option<SpecIn>) -> Projected {
    let (spec, hidden_volumes) = spec.map_or((None, 0), |s| {
        let (spec, hidden) = s.into_spec();
        (Some(spec), hidden)
    });
    Projected {
        pod: Box::new(Pod {
            metadata: metadata.map(MetaIn::into_meta).unwrap_or_default(),
            spec,
            status: None,
        }),
        hidden_volumes,
    }
}

/// What a pod object's `apiVersion` and `kind` must be when present.
pub(super) const POD_API_VERSION: &str = "v1";
pub(super) const POD_KIND: &str = "Pod";

fn fixed<'de, D: Deserializer<'de>>(d: D, expected: &'static str) -> Result<(), D::Error> {
    let value = String::deserialize(d)?;
    if value == expected {
        Ok(())
    } else {
        Err(de::Error::invalid_value(
            de::Unexpected::Str(&value),
            &expected,
        ))
    }
}

fn api_version<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    fixed(d, POD_API_VERSION)
}

fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    fixed(d, POD_KIND)
}

/// `metadata`: the names the messages use, the namespace, labels and annotations.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MetaIn {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

impl MetaIn {
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.labels.as_ref()
    }

    pub fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.annotations.as_ref()
    }

    /// The pod's `name`, or else its `generateName`, as the log names it.
    pub fn name(&self) -> Option<String> {
        self.name.as_ref().or(self.generate_name.as_ref()).cloned()
    }

    pub fn into_name(self) -> Option<String> {
        self.name.or(self.generate_name)
    }

    fn into_meta(self) -> ObjectMeta {
        ObjectMeta {
            name: self.name,
            generate_name: self.generate_name,
            namespace: self.namespace,
            labels: self.labels,
            annotations: self.annotations,
            ..Default::default()
        }
    }
}

/// `spec`: the containers, the volumes' names, the ServiceAccount fields, and the node
/// selector (which tells a Windows pod).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SpecIn {
    containers: Option<Vec<ContainerIn>>,
    init_containers: Option<Vec<ContainerIn>>,
    volumes: Option<Vec<VolumeIn>>,
    service_account: Option<String>,
    service_account_name: Option<String>,
    node_selector: Option<BTreeMap<String, String>>,
}

impl SpecIn {
    /// The spec, and how many volumes it leaves out.
    fn into_spec(self) -> (PodSpec, usize) {
        let containers = |cs: Vec<ContainerIn>| cs.into_iter().map(ContainerIn::into_container);
        let mut hidden = 0;
        let spec = PodSpec {
            containers: self
                .containers
                .map_or_else(Vec::new, |cs| containers(cs).collect()),
            init_containers: self.init_containers.map(|cs| containers(cs).collect()),
            volumes: self.volumes.map(|vs| {
                vs.into_iter()
                    .filter_map(|v| {
                        let name = v.name.unwrap_or_default();
                        if VOLUMES_READ.contains(&name.as_str()) {
                            Some(Volume {
                                name,
                                ..Default::default()
                            })
                        } else {
                            hidden += 1;
                            None
                        }
                    })
                    .collect()
            }),
            service_account: self.service_account,
            service_account_name: self.service_account_name,
            node_selector: self.node_selector,
            ..Default::default()
        };
        (spec, hidden)
    }
}

/// A container: its name and image, and the environment and mounts the engine edits.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerIn {
    name: Option<String>,
    image: Option<String>,
    env: Option<Vec<EnvVar>>,
    env_from: Option<Vec<EnvFromSource>>,
    volume_mounts: Option<Vec<VolumeMount>>,
}

impl ContainerIn {
    fn into_container(self) -> Container {
        Container {
            name: self.name.unwrap_or_default(),
            image: self.image,
            env: self.env,
            env_from: self.env_from,
            volume_mounts: self.volume_mounts,
            ..Default::default()
        }
    }
}

/// A volume: its name only.
#[derive(Deserialize)]
struct VolumeIn {
    name: Option<String>,
}
