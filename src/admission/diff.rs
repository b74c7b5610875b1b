//! The admission patch, made from the fields the engine edits.
//!
//! [`crate::mutate::edit`] writes only the pod's annotations, its ServiceAccount fields and
//! volumes, and its containers' `env` and `volumeMounts`. Those fields are copied aside before
//! the edit ([`EngineFields::of`]); afterwards [`edits`] compares them with the edited pod's
//! and writes the operations `json_patch::diff(&to_value(pod)?, &to_value(edited)?)` would, in
//! the same order, without serialising or walking the rest of either pod. Only entries that
//! differ are turned into JSON values.
//!
//! `json_patch::diff` walks an object's members in the right side's key order (k8s-openapi
//! serialises fields alphabetically, and `serde_json::Map` keeps them sorted), then removes the
//! left side's members the right side lacks; it walks arrays index by index, an element removed
//! shifting the indices after it; it replaces anything else that differs. The tests hold this
//! module to `json_patch::diff` of the whole pods.

use std::collections::BTreeMap;

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Volume, VolumeMount};
use serde::Serialize;
use serde::ser::Error as _;

type Error = serde_json::Error;

/// The fields [`crate::mutate::edit`] may write, copied from the pod before the edit.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EngineFields {
    annotations: Option<BTreeMap<String, String>>,
    /// `None` for a pod without a spec (the engine then writes one).
    spec: Option<SpecFields>,
    containers: Vec<ContainerFields>,
    /// `None` where the pod has no `initContainers`.
    init_containers: Option<Vec<ContainerFields>>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct SpecFields {
    service_account: Option<String>,
    service_account_name: Option<String>,
    volumes: Option<Vec<Volume>>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct ContainerFields {
    env: Option<Vec<EnvVar>>,
    volume_mounts: Option<Vec<VolumeMount>>,
}

impl ContainerFields {
    fn of(c: &Container) -> Self {
        ContainerFields {
            env: c.env.clone(),
            volume_mounts: c.volume_mounts.clone(),
        }
    }
}

impl EngineFields {
    /// A copy of the fields of `pod`.
    pub fn of(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        EngineFields {
            annotations: pod.metadata.annotations.clone(),
            spec: spec.map(|s| SpecFields {
                service_account: s.service_account.clone(),
                service_account_name: s.service_account_name.clone(),
                volumes: s.volumes.clone(),
            }),
            containers: spec.map_or(vec![], |s| {
                s.containers.iter().map(ContainerFields::of).collect()
            }),
            init_containers: spec
                .and_then(|s| s.init_containers.as_ref())
                .map(|cs| cs.iter().map(ContainerFields::of).collect()),
        }
    }
}

/// The JSON Patch from a pod whose [`EngineFields`] were `before` to `after`, the same pod as
/// edited by the engine (see the module documentation).
pub fn edits(before: &EngineFields, after: &Pod) -> Result<Patch, Error> {
    let mut p = Patcher::default();
    let mut gone = Vec::new();
    p.member(
        || at(&["metadata", "annotations"]),
        &before.annotations,
        &after.metadata.annotations,
        Patcher::map,
        &mut gone,
    )?;
    p.remove_all(gone);
    let (was, spec) = match (&before.spec, &after.spec) {
        (Some(was), Some(spec)) => (was, spec),
        // A spec written or dropped whole.
        (None, Some(spec)) => {
            p.add(at(&["spec"]), spec)?;
            return Ok(p.finish());
        }
        (Some(_), None) => {
            p.remove(at(&["spec"]));
            return Ok(p.finish());
        }
        (None, None) => return Ok(p.finish()),
    };
    let init = spec.init_containers.as_deref();
    // The engine edits containers and never adds, drops or reorders one; should they not pair
    // up, the whole array is written, a correct patch if not the smallest.
    if before.containers.len() != spec.containers.len() {
        p.replace(at(&["spec", "containers"]), &spec.containers)?;
    } else {
        p.containers("containers", &before.containers, &spec.containers)?;
    }
    match (&before.init_containers, init) {
        (Some(was), Some(all)) if was.len() == all.len() => {
            p.containers("initContainers", was, all)?;
        }
        (Some(_), Some(all)) => p.replace(at(&["spec", "initContainers"]), all)?,
        (None, Some(all)) => p.add(at(&["spec", "initContainers"]), all)?,
        (Some(_), None) => p.remove(at(&["spec", "initContainers"])),
        (None, None) => {}
    }
    let mut gone = Vec::new();
    let name = |field| at(&["spec", field]);
    p.member(
        || name("serviceAccount"),
        &was.service_account,
        &spec.service_account,
        Patcher::replacing,
        &mut gone,
    )?;
    p.member(
        || name("serviceAccountName"),
        &was.service_account_name,
        &spec.service_account_name,
        Patcher::replacing,
        &mut gone,
    )?;
    p.member(
        || name("volumes"),
        &was.volumes,
        &spec.volumes,
        seq,
        &mut gone,
    )?;
    p.remove_all(gone);
    Ok(p.finish())
}

/// [`Patcher::items`] for [`Patcher::member`], which hands over what an `Option<Vec<T>>` holds.
#[allow(clippy::ptr_arg)]
fn seq<T: PartialEq + Serialize>(
    p: &mut Patcher,
    path: PointerBuf,
    before: &Vec<T>,
    after: &Vec<T>,
) -> Result<(), Error> {
    p.items(path, before, after)
}

/// `tokens` as a JSON pointer. Its string is allocated once, with room for one more token:
/// grown token by token, and copied for each child, the pointers of a core pod's patch cost
/// about 5,000 instructions of reallocation per review (callgrind).
fn at(tokens: &[&str]) -> PointerBuf {
    let len = tokens.iter().map(|t| 1 + t.len()).sum::<usize>();
    let mut s = String::with_capacity(len + CHILD_ROOM);
    for t in tokens {
        s.push('/');
        s.push_str(Token::new(*t).encoded());
    }
    pointer(s, || PointerBuf::from_tokens(tokens.iter().copied()))
}

/// Room in a new pointer for one more token (an index, or a short key) without growing it.
const CHILD_ROOM: usize = 24;

/// `path` with the key `key` after it, in one allocation.
fn child(path: &PointerBuf, key: &str) -> PointerBuf {
    let key = Token::new(key);
    let mut s = String::with_capacity(path.as_str().len() + 1 + key.encoded().len() + CHILD_ROOM);
    s.push_str(path.as_str());
    s.push('/');
    s.push_str(key.encoded());
    pointer(s, || {
        let mut p = path.clone();
        p.push_back(key);
        p
    })
}

/// `path` with the array index `idx` after it, in one allocation.
fn element(path: &PointerBuf, idx: usize) -> PointerBuf {
    let mut s = String::with_capacity(path.as_str().len() + CHILD_ROOM);
    s.push_str(path.as_str());
    s.push('/');
    s.push_str(itoa::Buffer::new().format(idx));
    pointer(s, || {
        let mut p = path.clone();
        p.push_back(idx);
        p
    })
}

/// `s`, made of `/` and encoded tokens, as a pointer. Such a string always parses;
/// `otherwise` makes the same pointer the slow way all the same.
fn pointer(s: String, otherwise: impl FnOnce() -> PointerBuf) -> PointerBuf {
    PointerBuf::parse(s).unwrap_or_else(|_| otherwise())
}

/// The operations so far.
#[derive(Default)]
struct Patcher {
    ops: Vec<PatchOperation>,
}

impl Patcher {
    fn finish(self) -> Patch {
        Patch(self.ops)
    }

    fn add<T: Serialize + ?Sized>(&mut self, path: PointerBuf, value: &T) -> Result<(), Error> {
        let value = serde_json::to_value(value)?;
        self.ops
            .push(PatchOperation::Add(AddOperation { path, value }));
        Ok(())
    }

    fn replace<T: Serialize + ?Sized>(&mut self, path: PointerBuf, value: &T) -> Result<(), Error> {
        let value = serde_json::to_value(value)?;
        self.ops
            .push(PatchOperation::Replace(ReplaceOperation { path, value }));
        Ok(())
    }

    fn remove(&mut self, path: PointerBuf) {
        self.ops
            .push(PatchOperation::Remove(RemoveOperation { path }));
    }

    fn remove_all(&mut self, paths: Vec<PointerBuf>) {
        for path in paths {
            self.remove(path);
        }
    }

    /// An optional member of an object: diffed or added if `after` has it; if only `before`
    /// has it, its path joins `gone`, to be removed after the object's other members. The
    /// path is made only if the member differs.
    fn member<T: PartialEq + Serialize>(
        &mut self,
        path: impl FnOnce() -> PointerBuf,
        before: &Option<T>,
        after: &Option<T>,
        differ: impl FnOnce(&mut Self, PointerBuf, &T, &T) -> Result<(), Error>,
        gone: &mut Vec<PointerBuf>,
    ) -> Result<(), Error> {
        match (before, after) {
            (Some(b), Some(a)) if b != a => differ(self, path(), b, a),
            (Some(_), Some(_)) | (None, None) => Ok(()),
            (None, Some(a)) => self.add(path(), a),
            (Some(_), None) => {
                gone.push(path());
                Ok(())
            }
        }
    }

    /// Each container's `env` and `volumeMounts`, `before` and `after` paired by index.
    fn containers(
        &mut self,
        field: &str,
        before: &[ContainerFields],
        after: &[Container],
    ) -> Result<(), Error> {
        for (i, (b, a)) in before.iter().zip(after).enumerate() {
            let path = |name| at(&["spec", field, &i.to_string(), name]);
            let mut gone = Vec::new();
            self.member(|| path("env"), &b.env, &a.env, Patcher::env, &mut gone)?;
            self.member(
                || path("volumeMounts"),
                &b.volume_mounts,
                &a.volume_mounts,
                seq,
                &mut gone,
            )?;
            self.remove_all(gone);
        }
        Ok(())
    }

    /// Two different `env` lists. The engine edits entries in place, appends, and inserts a
    /// blank before the first entry that refers to it ([`crate::mutate::env::blank_env`]); it
    /// never removes or reorders one. So the entries pair up in order by name, and an entry of
    /// `after` that does not pair with the next one of `before` is new: added at its index, so
    /// the entries after it keep their own unknown fields.
    #[allow(clippy::ptr_arg)]
    fn env(
        &mut self,
        path: PointerBuf,
        before: &Vec<EnvVar>,
        after: &Vec<EnvVar>,
    ) -> Result<(), Error> {
        // (index in `after`, the entry of `before` it pairs with, if any)
        let mut pairs = Vec::with_capacity(after.len());
        let mut next = before.iter().peekable();
        for (idx, a) in after.iter().enumerate() {
            pairs.push((idx, next.next_if(|b| b.name == a.name)));
        }
        if next.peek().is_some() {
            // Entries dropped or reordered: not the engine's edits. Index by index is correct.
            return self.items(path, before, after);
        }
        for (idx, b) in pairs {
            match b {
                Some(b) if *b == after[idx] => {}
                Some(b) => self.value(element(&path, idx), b, &after[idx])?,
                None => self.add(element(&path, idx), &after[idx])?,
            }
        }
        Ok(())
    }

    /// Two different scalars.
    fn replacing<T: Serialize>(&mut self, path: PointerBuf, _: &T, after: &T) -> Result<(), Error> {
        self.replace(path, after)
    }

    /// Two different string maps, key by key.
    fn map(
        &mut self,
        path: PointerBuf,
        before: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let key = |k: &str| child(&path, k);
        for (k, v) in after {
            match before.get(k) {
                Some(w) if w == v => {}
                Some(_) => self.replace(key(k), v)?,
                None => self.add(key(k), v)?,
            }
        }
        for k in before.keys().filter(|k| !after.contains_key(*k)) {
            self.remove(key(k));
        }
        Ok(())
    }

    /// Two different arrays, index by index; an element that differs is diffed as a value.
    fn items<T: PartialEq + Serialize>(
        &mut self,
        path: PointerBuf,
        before: &[T],
        after: &[T],
    ) -> Result<(), Error> {
        self.items_after(path, 0, before, after)
    }

    /// [`Self::items`] of the part of an array after its first `skipped` elements.
    fn items_after<T: PartialEq + Serialize>(
        &mut self,
        path: PointerBuf,
        skipped: usize,
        before: &[T],
        after: &[T],
    ) -> Result<(), Error> {
        let mut shift = 0usize;
        // The path of an element is made only for an element that differs.
        let here = |idx: usize| element(&path, skipped + idx);
        for idx in 0..before.len().max(after.len()) {
            match (before.get(idx), after.get(idx)) {
                (Some(b), Some(a)) if b == a => {}
                (Some(b), Some(a)) => self.value(here(idx - shift), b, a)?,
                (Some(_), None) => {
                    self.remove(here(idx - shift));
                    shift += 1;
                }
                (None, Some(a)) => self.add(here(idx - shift), a)?,
                (None, None) => {}
            }
        }
        Ok(())
    }

    /// Two different values of any shape: `json_patch::diff` of the two, under `path`.
    fn value<T: Serialize>(
        &mut self,
        path: PointerBuf,
        before: &T,
        after: &T,
    ) -> Result<(), Error> {
        let (b, a) = (serde_json::to_value(before)?, serde_json::to_value(after)?);
        for op in json_patch::diff(&b, &a).0 {
            self.ops.push(match op {
                PatchOperation::Add(o) => PatchOperation::Add(AddOperation {
                    path: path.concat(&o.path),
                    value: o.value,
                }),
                PatchOperation::Remove(o) => PatchOperation::Remove(RemoveOperation {
                    path: path.concat(&o.path),
                }),
                PatchOperation::Replace(o) => PatchOperation::Replace(ReplaceOperation {
                    path: path.concat(&o.path),
                    value: o.value,
                }),
                // `diff` makes no other kind.
                other => return Err(Error::custom(format!("unexpected diff operation {other}"))),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodSpec;

    use super::*;

    /// Cluster facts under which the engine also injects web identity (volumes, mounts, env).
    fn irsa_facts() -> crate::facts::Facts {
        use k8s_openapi::api::core::v1::ServiceAccount;
        let mut facts = crate::facts::Facts::default();
        for (name, role) in [("harbor-sa", true), ("default", false)] {
            let mut sa = ServiceAccount::default();
            sa.metadata.name = Some(name.into());
            if role {
                sa.metadata.annotations = Some(BTreeMap::from([(
                    crate::consts::EKS_ROLE_ARN_ANNOTATION.into(),
                    "arn:aws:iam::111122223333:role/harbor".into(),
                )]));
            }
            facts.add_service_account(sa);
        }
        facts.set_service_accounts_complete(true);
        facts
    }

    fn fixture_pods() -> Vec<Pod> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pods");
        let mut pods: Vec<Pod> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                serde_yaml_ng::from_str(&text).unwrap()
            })
            .collect();
        // And a core pod without a spec, which the engine gives one.
        let mut bare = pods
            .iter()
            .find(|p| p.metadata.generate_name.as_deref() == Some("harbor-core-z2xsjqdknc-"))
            .unwrap()
            .clone();
        bare.spec = None;
        pods.push(bare);
        pods
    }

    /// `pod` without the fields the engine may write.
    fn rest(pod: &Pod) -> Pod {
        let mut pod = pod.clone();
        pod.metadata.annotations = None;
        if let Some(spec) = pod.spec.as_mut() {
            spec.service_account = None;
            spec.service_account_name = None;
            spec.volumes = None;
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                c.env = None;
                c.volume_mounts = None;
            }
        }
        pod
    }

    /// The patch of `edits` turns the pod into the edited one, and the edit touched nothing
    /// outside the engine's fields (which `edits` never looks at).
    fn edits_like_json_patch(before: &Pod, after: &Pod, what: &str) {
        let mut patched = serde_json::to_value(before).unwrap();
        let patch = edits(&EngineFields::of(before), after).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched, serde_json::to_value(after).unwrap(), "{what}");
        if before.spec.is_some() {
            // (A new spec is added whole, whatever is in it.)
            assert!(
                rest(before) == rest(after),
                "{what}: edited outside the engine's fields"
            );
        }
    }

    #[test]
    fn every_fixture_pod_and_its_mutation_diff_like_json_patch() {
        let config = crate::mutate::MutateConfig::new("eu-west-1");
        let (mut seen, mut with_volumes, mut without_spec) = (0, 0, 0);
        for pod in fixture_pods() {
            for facts in [crate::facts::Facts::default(), irsa_facts()] {
                let mut after = pod.clone();
                if crate::mutate::edit(&mut after, &config, &facts).is_err() {
                    continue;
                }
                let m = crate::mutate::mutate(&pod, &config, &facts).unwrap();
                assert_eq!(m.pod, after, "mutate is edit on a copy");
                edits_like_json_patch(&pod, &after, "mutation");
                seen += 1;
                let volumes = |p: &Pod| p.spec.as_ref().and_then(|s| s.volumes.clone());
                with_volumes += usize::from(volumes(&pod) != volumes(&after));
                without_spec += usize::from(pod.spec.is_none() && after.spec.is_some());
            }
        }
        assert!(seen >= 20, "{seen} fixture mutations");
        assert!(
            with_volumes >= 5,
            "{with_volumes} with web identity injected"
        );
        assert!(without_spec >= 1, "{without_spec} given a spec");
    }

    type SpecEdit = fn(&mut PodSpec);

    /// Containers added, dropped or reordered: never the engine's edits.
    const CONTAINER_CHANGES: &[SpecEdit] = &[
        |s| s.containers.push(Container::default()),
        |s| s.containers.truncate(0),
        |s| s.init_containers = Some(s.containers.clone()),
        |s| s.init_containers = None,
        |s| {
            s.init_containers
                .get_or_insert_with(Vec::new)
                .push(Container::default())
        },
    ];

    /// Edits of every kind the engine makes and the pruning could get wrong, each on every
    /// fixture pod, alone and two at once, both ways.
    #[test]
    fn engine_edits_diff_like_json_patch() {
        use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};
        type Edit = fn(&mut Pod);
        fn spec(p: &mut Pod) -> &mut PodSpec {
            p.spec.get_or_insert_with(Default::default)
        }
        fn first(p: &mut Pod) -> &mut Container {
            let s = spec(p);
            if s.containers.is_empty() {
                s.containers.push(Container::default());
            }
            &mut s.containers[0]
        }
        let edits: &[Edit] = &[
            |p| {
                first(p).env.get_or_insert_with(Vec::new).insert(
                    0,
                    EnvVar {
                        name: "X".into(),
                        value: Some("1".into()),
                        ..Default::default()
                    },
                )
            },
            |p| {
                if let Some(env) = &mut first(p).env {
                    env.pop();
                }
            },
            |p| {
                if let Some(e) = first(p).env.as_mut().and_then(|e| e.first_mut()) {
                    e.value = Some(String::new());
                    e.value_from = None;
                }
            },
            |p| {
                first(p)
                    .volume_mounts
                    .get_or_insert_with(Vec::new)
                    .push(VolumeMount {
                        name: "token".into(),
                        mount_path: "/var/run/token".into(),
                        ..Default::default()
                    })
            },
            |p| {
                spec(p).volumes.get_or_insert_with(Vec::new).push(Volume {
                    name: "token".into(),
                    ..Default::default()
                })
            },
            |p| {
                if let Some(v) = &mut spec(p).volumes {
                    v.remove(0);
                }
            },
            |p| spec(p).volumes = None,
            |p| spec(p).service_account_name = Some("harbor-sa".into()),
            |p| spec(p).service_account = Some("harbor-sa".into()),
            |p| first(p).env = None,
            |p| {
                let c = first(p);
                c.env = None;
                c.volume_mounts = Some(vec![]);
            },
            |p| {
                for c in spec(p).init_containers.iter_mut().flatten() {
                    c.env.get_or_insert_with(Vec::new).push(EnvVar {
                        name: "POSTGRESQL_PASSWORD".into(),
                        ..Default::default()
                    });
                }
            },
            |p| {
                if let Some(last) = spec(p).containers.last_mut() {
                    last.volume_mounts = None;
                    last.env.get_or_insert_with(Vec::new).clear();
                }
            },
            |p| {
                p.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert("a/b~c".into(), "c".into());
            },
            |p| p.metadata.annotations = None,
        ];
        for pod in fixture_pods() {
            for (i, edit) in edits.iter().enumerate() {
                let mut edited = pod.clone();
                edit(&mut edited);
                // And two edits at once, this one and the next.
                let mut twice = edited.clone();
                edits[(i + 1) % edits.len()](&mut twice);
                for other in [&edited, &twice] {
                    edits_like_json_patch(&pod, other, &format!("edit {i}"));
                    if pod.spec.is_some() {
                        edits_like_json_patch(other, &pod, &format!("edit {i}, reversed"));
                    }
                }
            }
        }
    }

    /// Containers added, dropped or reordered never come from the engine; the patch still
    /// turns the pod into the edited one.
    #[test]
    fn containers_that_do_not_pair_up_are_written_whole() {
        for pod in fixture_pods().into_iter().filter(|p| p.spec.is_some()) {
            for (i, edit) in CONTAINER_CHANGES.iter().enumerate() {
                let mut edited = pod.clone();
                edit(edited.spec.as_mut().unwrap());
                for (b, a) in [(&pod, &edited), (&edited, &pod)] {
                    let mut doc = serde_json::to_value(b).unwrap();
                    json_patch::patch(&mut doc, &edits(&EngineFields::of(b), a).unwrap()).unwrap();
                    assert_eq!(doc, serde_json::to_value(a).unwrap(), "edit {i}");
                }
            }
        }
    }
}
