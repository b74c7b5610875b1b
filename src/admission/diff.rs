//! The JSON Patch between two typed values, exactly as
//! `json_patch::diff(&to_value(before)?, &to_value(after)?)` makes it, for a fraction of the
//! work.
//!
//! Building two full `serde_json::Value` trees of a pod (a `String` and a map node for every
//! key), walking both and dropping them was over half of a review's CPU time. Here each side is
//! serialised once, as compact JSON text into one buffer, and split into objects and arrays
//! down to [`SPLIT_DEPTH`]; every node knows the range of its text. Equal text means an equal
//! `Value`, so an equal subtree (nearly all of a pod) costs one `memcmp`; only values that
//! differ below the split are parsed and handed to `json_patch::diff`, whose operations get the
//! prefix of where they are. Members are visited in the order `serde_json::Map` iterates them,
//! so the operations come out in `json_patch::diff`'s order too.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::ser::{self, Serialize};
use serde_json::{Map, Value};

/// Objects and arrays this deep (the root is 0) are split; deeper values are only text.
/// 4 splits a pod down to `/spec/containers/N/*` and `/metadata/annotations/*`, where the
/// engine's edits are.
const SPLIT_DEPTH: usize = 4;

type Error = serde_json::Error;
type Key = Cow<'static, str>;

/// `json_patch::diff(&to_value(before), &to_value(after))`, with no `Value` of the parts that
/// are equal. Fails only where `to_value` would. (The tests' entry to [`diff_at`].)
#[cfg(test)]
fn diff<T: Serialize + ?Sized>(before: &T, after: &T) -> Result<Patch, Error> {
    let mut ops = Vec::new();
    diff_at(PointerBuf::new(), before, after, &mut ops)?;
    Ok(Patch(ops))
}

/// [`diff`] of two values found at `at`, its operations appended to `ops`.
fn diff_at<T: Serialize + ?Sized>(
    at: PointerBuf,
    before: &T,
    after: &T,
    ops: &mut Vec<PatchOperation>,
) -> Result<(), Error> {
    let mut left = Tree::default();
    let l = left.split(before)?;
    let mut right = Tree::default();
    let r = right.split(after)?;
    let mut out = Diff {
        left: &left,
        right: &right,
        pointer: at,
        ops: std::mem::take(ops),
    };
    let done = out.node(&l, &r);
    *ops = out.ops;
    done
}

/// The fields [`crate::mutate::edit`] may write: the pod's annotations, its ServiceAccount
/// fields and volumes, and each container's `env` and `volumeMounts`. Kept aside before the
/// edit, they are all the patch needs of the pod as it was.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EngineFields {
    meta: ObjectMeta,
    /// `None` for a pod without a spec (the engine then writes one).
    spec: Option<PodSpec>,
    containers: Vec<Container>,
    init_containers: Vec<Container>,
}

impl EngineFields {
    /// A copy of the fields of `pod`.
    pub fn of(pod: &Pod) -> Self {
        let container = |c: &Container| Container {
            env: c.env.clone(),
            volume_mounts: c.volume_mounts.clone(),
            ..Default::default()
        };
        let spec = pod.spec.as_ref();
        EngineFields {
            meta: ObjectMeta {
                annotations: pod.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: spec.map(|s| PodSpec {
                service_account: s.service_account.clone(),
                service_account_name: s.service_account_name.clone(),
                volumes: s.volumes.clone(),
                ..Default::default()
            }),
            containers: spec.map_or(vec![], |s| s.containers.iter().map(container).collect()),
            init_containers: spec.map_or(vec![], |s| {
                s.init_containers.iter().flatten().map(container).collect()
            }),
        }
    }

    /// The fields moved out of `pod`, which keeps everything else.
    fn take(pod: &mut Pod) -> Self {
        let container = |c: &mut Container| Container {
            env: c.env.take(),
            volume_mounts: c.volume_mounts.take(),
            ..Default::default()
        };
        let meta = ObjectMeta {
            annotations: pod.metadata.annotations.take(),
            ..Default::default()
        };
        let Some(spec) = pod.spec.as_mut() else {
            return EngineFields {
                meta,
                ..Default::default()
            };
        };
        EngineFields {
            meta,
            containers: spec.containers.iter_mut().map(container).collect(),
            init_containers: spec
                .init_containers
                .iter_mut()
                .flatten()
                .map(container)
                .collect(),
            spec: Some(PodSpec {
                service_account: spec.service_account.take(),
                service_account_name: spec.service_account_name.take(),
                volumes: spec.volumes.take(),
                ..Default::default()
            }),
        }
    }
}

/// The JSON Patch from a pod whose [`EngineFields`] were `before` to `after`, the same pod
/// edited by the engine: what `json_patch::diff(&to_value(pod)?, &to_value(after)?)` says,
/// without the rest of either pod. Each field is diffed where it sits, in the order
/// `json_patch::diff` walks a pod (`metadata` before `spec`; in `spec`, `containers`,
/// `initContainers`, then `serviceAccount`, `serviceAccountName` and `volumes`). Entries equal
/// on both sides are pruned first, so what is serialised is little more than the edits.
pub fn edits(mut before: EngineFields, mut after: Pod) -> Result<Patch, Error> {
    let mut ops = Vec::new();
    let at = |parts: &[&str]| PointerBuf::from_tokens(parts.iter().copied());
    let Some(before_spec) = before.spec.as_mut() else {
        // No spec before: whatever the engine wrote is one new member.
        let now = ObjectMeta {
            annotations: after.metadata.annotations.take(),
            ..Default::default()
        };
        diff_at(at(&["metadata"]), &before.meta, &now, &mut ops)?;
        if let Some(spec) = &after.spec {
            ops.push(PatchOperation::Add(AddOperation {
                path: at(&["spec"]),
                value: serde_json::to_value(spec)?,
            }));
        }
        return Ok(Patch(ops));
    };
    let mut now = EngineFields::take(&mut after);
    let now_spec = now.spec.get_or_insert_with(Default::default);
    diff_at(at(&["metadata"]), &before.meta, &now.meta, &mut ops)?;
    prune_items(&mut before_spec.volumes, &mut now_spec.volumes, |_, _| {});
    for (field, left, right) in [
        ("containers", &mut before.containers, &mut now.containers),
        (
            "initContainers",
            &mut before.init_containers,
            &mut now.init_containers,
        ),
    ] {
        for (i, (l, r)) in left.iter_mut().zip(right.iter_mut()).enumerate() {
            if l != r {
                prune(l, r, prune_container);
                diff_at(at(&["spec", field, &i.to_string()]), l, r, &mut ops)?;
            }
        }
    }
    let (before_spec, now_spec) = (before.spec.as_ref(), now.spec.as_ref());
    diff_at(at(&["spec"]), &before_spec, &now_spec, &mut ops)?;
    Ok(Patch(ops))
}

/// Clear `b` and `a` if they are equal; otherwise leave them to `inner`. Either way the two
/// sides stay equal where they were, so `json_patch::diff` says the same about the rest.
fn prune<T: PartialEq + Default>(b: &mut T, a: &mut T, inner: impl FnOnce(&mut T, &mut T)) {
    if b == a {
        *b = T::default();
        *a = T::default();
    } else {
        inner(b, a);
    }
}

/// [`prune`] element by element where both sides have one (indices unchanged).
fn prune_items<T: PartialEq + Default>(
    b: &mut Option<Vec<T>>,
    a: &mut Option<Vec<T>>,
    inner: impl Fn(&mut T, &mut T),
) {
    prune(b, a, |b, a| {
        if let (Some(b), Some(a)) = (b, a) {
            for (x, y) in b.iter_mut().zip(a.iter_mut()) {
                prune(x, y, &inner);
            }
        }
    });
}

fn prune_container(b: &mut Container, a: &mut Container) {
    prune_items(&mut b.env, &mut a.env, |_, _| {});
    prune_items(&mut b.volume_mounts, &mut a.volume_mounts, |_, _| {});
}

/// A value: its JSON text in the tree's buffer, and its parts if it was split.
#[derive(Debug)]
struct Node {
    text: Range<usize>,
    parts: Parts,
}

#[derive(Debug)]
enum Parts {
    /// Members in `serde_json::Map`'s iteration order, one per key (the last one serialised,
    /// as `Map::insert` keeps).
    Object(Vec<(Key, Node)>),
    Array(Vec<Node>),
    /// A scalar, or a value below the split depth.
    None,
}

/// One side: the JSON text of the whole value.
#[derive(Default)]
struct Tree {
    buf: Vec<u8>,
}

impl Tree {
    fn split<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<Node, Error> {
        value.serialize(Splitter {
            tree: self,
            depth: 0,
        })
    }

    fn text<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<Node, Error> {
        let start = self.buf.len();
        serde_json::to_writer(&mut self.buf, value)?;
        Ok(Node {
            text: start..self.buf.len(),
            parts: Parts::None,
        })
    }

    /// The child at `depth`: split or only text.
    fn child<T: Serialize + ?Sized>(&mut self, value: &T, depth: usize) -> Result<Node, Error> {
        if depth < SPLIT_DEPTH {
            value.serialize(Splitter { tree: self, depth })
        } else {
            self.text(value)
        }
    }

    /// `"key":`
    fn key(&mut self, key: &str) -> Result<(), Error> {
        serde_json::to_writer(&mut self.buf, key)?;
        self.buf.push(b':');
        Ok(())
    }

    fn bytes(&self, node: &Node) -> &[u8] {
        &self.buf[node.text.clone()]
    }

    /// The node's `Value`: what `to_value` made of it (parsing keeps the last of repeated
    /// keys, as `Map::insert` does).
    fn value(&self, node: &Node) -> Result<Value, Error> {
        serde_json::from_slice(self.bytes(node))
    }
}

/// Whether `serde_json::Map` iterates in key order (its default) or in insertion order (the
/// `preserve_order` feature, which any crate in the build could switch on).
fn map_is_sorted() -> bool {
    static SORTED: OnceLock<bool> = OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut m = Map::new();
        m.insert("b".into(), Value::Null);
        m.insert("a".into(), Value::Null);
        m.keys().next().is_some_and(|k| k == "a")
    })
}

/// Members as `Map` would hold them after inserting them in serialisation order.
fn into_map_order(mut members: Vec<(Key, Node)>) -> Vec<(Key, Node)> {
    let mut out: Vec<(Key, Node)> = Vec::with_capacity(members.len());
    if map_is_sorted() {
        // Stable: of equal keys the last inserted stays, as with `BTreeMap::insert`.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        for m in members {
            match out.last_mut() {
                Some(last) if last.0 == m.0 => *last = m,
                _ => out.push(m),
            }
        }
    } else {
        // Insertion order: a repeated key keeps its first place and takes the last value.
        for (k, n) in members {
            match out.iter_mut().find(|(seen, _)| *seen == k) {
                Some(slot) => slot.1 = n,
                None => out.push((k, n)),
            }
        }
    }
    out
}

/// Looks keys up in map order; with sorted maps and keys asked in order, a merge walk.
struct Finder<'a> {
    members: &'a [(Key, Node)],
    cursor: usize,
}

impl<'a> Finder<'a> {
    fn new(members: &'a [(Key, Node)]) -> Self {
        Finder { members, cursor: 0 }
    }

    fn find(&mut self, key: &str) -> Option<&'a Node> {
        if map_is_sorted() {
            while self
                .members
                .get(self.cursor)
                .is_some_and(|(k, _)| k.as_ref() < key)
            {
                self.cursor += 1;
            }
            match self.members.get(self.cursor) {
                Some((k, n)) if k == key => Some(n),
                _ => None,
            }
        } else {
            self.members.iter().find(|(k, _)| k == key).map(|(_, n)| n)
        }
    }
}

struct Diff<'t> {
    left: &'t Tree,
    right: &'t Tree,
    pointer: PointerBuf,
    ops: Vec<PatchOperation>,
}

impl Diff<'_> {
    fn equal(&self, l: &Node, r: &Node) -> bool {
        self.left.bytes(l) == self.right.bytes(r)
    }

    fn add(&mut self, r: &Node) -> Result<(), Error> {
        let value = self.right.value(r)?;
        self.ops.push(PatchOperation::Add(AddOperation {
            path: self.pointer.clone(),
            value,
        }));
        Ok(())
    }

    fn remove(&mut self) {
        self.ops.push(PatchOperation::Remove(RemoveOperation {
            path: self.pointer.clone(),
        }));
    }

    // The same walk as `json_patch::diff`: objects by the right side's keys then the removed
    // ones, arrays index by index with removals shifting the index, anything else replaced
    // when unequal. Equal subtrees are skipped before the pointer is even extended.
    fn node(&mut self, l: &Node, r: &Node) -> Result<(), Error> {
        if self.equal(l, r) {
            return Ok(());
        }
        match (&l.parts, &r.parts) {
            (Parts::Object(lm), Parts::Object(rm)) => {
                let mut left = Finder::new(lm);
                for (key, rv) in rm {
                    match left.find(key) {
                        Some(lv) if self.equal(lv, rv) => {}
                        Some(lv) => {
                            self.pointer.push_back(key.as_ref());
                            self.node(lv, rv)?;
                            self.pointer.pop_back();
                        }
                        None => {
                            self.pointer.push_back(key.as_ref());
                            self.add(rv)?;
                            self.pointer.pop_back();
                        }
                    }
                }
                let mut right = Finder::new(rm);
                for (key, _) in lm {
                    if right.find(key).is_none() {
                        self.pointer.push_back(key.as_ref());
                        self.remove();
                        self.pointer.pop_back();
                    }
                }
            }
            (Parts::Array(la), Parts::Array(ra)) => {
                let mut shift = 0usize;
                for idx in 0..la.len().max(ra.len()) {
                    match (la.get(idx), ra.get(idx)) {
                        (Some(lv), Some(rv)) if self.equal(lv, rv) => {}
                        (Some(lv), Some(rv)) => {
                            self.pointer.push_back(idx - shift);
                            self.node(lv, rv)?;
                            self.pointer.pop_back();
                        }
                        (Some(_), None) => {
                            self.pointer.push_back(idx - shift);
                            self.remove();
                            self.pointer.pop_back();
                            shift += 1;
                        }
                        (None, Some(rv)) => {
                            self.pointer.push_back(idx - shift);
                            self.add(rv)?;
                            self.pointer.pop_back();
                        }
                        (None, None) => {}
                    }
                }
            }
            // Unequal and not split further, or of different shapes: diff the two values.
            _ => {
                let (a, b) = (self.left.value(l)?, self.right.value(r)?);
                for op in json_patch::diff(&a, &b).0 {
                    self.ops.push(match op {
                        PatchOperation::Add(o) => PatchOperation::Add(AddOperation {
                            path: self.pointer.concat(&o.path),
                            value: o.value,
                        }),
                        PatchOperation::Remove(o) => PatchOperation::Remove(RemoveOperation {
                            path: self.pointer.concat(&o.path),
                        }),
                        PatchOperation::Replace(o) => PatchOperation::Replace(ReplaceOperation {
                            path: self.pointer.concat(&o.path),
                            value: o.value,
                        }),
                        // `diff` makes no other kind.
                        other => {
                            return Err(ser::Error::custom(format!(
                                "unexpected diff operation {other}"
                            )));
                        }
                    });
                }
            }
        }
        Ok(())
    }
}

// ---- the splitting serializer --------------------------------------------------------------

/// Serialises one value at `depth` as compact JSON into the tree's buffer: objects and arrays
/// also become [`Parts`] whose members are split further (or only written, at
/// [`SPLIT_DEPTH`]). Mirrors `serde_json`'s own serializers shape for shape.
struct Splitter<'a> {
    tree: &'a mut Tree,
    depth: usize,
}

/// A tuple or struct variant: `{"variant":` is written before its array or object.
struct Variant {
    name: &'static str,
    start: usize,
}

struct SeqSplitter<'a> {
    tree: &'a mut Tree,
    depth: usize,
    start: usize,
    items: Vec<Node>,
    variant: Option<Variant>,
}

struct MapSplitter<'a> {
    tree: &'a mut Tree,
    depth: usize,
    start: usize,
    members: Vec<(Key, Node)>,
    next_key: Option<String>,
    variant: Option<Variant>,
}

/// The node of a finished array or object, inside `{"variant": ...}` if it is one.
fn close(tree: &mut Tree, start: usize, parts: Parts, variant: Option<Variant>) -> Node {
    let inner = Node {
        text: start..tree.buf.len(),
        parts,
    };
    match variant {
        None => inner,
        Some(v) => {
            tree.buf.push(b'}');
            Node {
                text: v.start..tree.buf.len(),
                parts: Parts::Object(vec![(Cow::Borrowed(v.name), inner)]),
            }
        }
    }
}

macro_rules! text_scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<Node, Error> {
            self.tree.text(&v)
        })*
    };
}

impl<'a> Splitter<'a> {
    fn open_variant(&mut self, name: &'static str) -> Result<Variant, Error> {
        let start = self.tree.buf.len();
        self.tree.buf.push(b'{');
        self.tree.key(name)?;
        Ok(Variant { name, start })
    }

    fn seq(self, len: usize, variant: Option<Variant>) -> SeqSplitter<'a> {
        let start = self.tree.buf.len();
        self.tree.buf.push(b'[');
        SeqSplitter {
            tree: self.tree,
            depth: self.depth,
            start,
            items: Vec::with_capacity(len),
            variant,
        }
    }

    fn map(self, len: usize, variant: Option<Variant>) -> MapSplitter<'a> {
        let start = self.tree.buf.len();
        self.tree.buf.push(b'{');
        MapSplitter {
            tree: self.tree,
            depth: self.depth,
            start,
            members: Vec::with_capacity(len),
            next_key: None,
            variant,
        }
    }
}

impl<'a> ser::Serializer for Splitter<'a> {
    type Ok = Node;
    type Error = Error;
    type SerializeSeq = SeqSplitter<'a>;
    type SerializeTuple = SeqSplitter<'a>;
    type SerializeTupleStruct = SeqSplitter<'a>;
    type SerializeTupleVariant = SeqSplitter<'a>;
    type SerializeMap = MapSplitter<'a>;
    type SerializeStruct = MapSplitter<'a>;
    type SerializeStructVariant = MapSplitter<'a>;

    text_scalars!(
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_i128: i128,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_u128: u128,
        serialize_f32: f32,
        serialize_f64: f64,
        serialize_char: char,
        serialize_str: &str,
        serialize_bytes: &[u8],
    );

    fn serialize_none(self) -> Result<Node, Error> {
        self.tree.text(&())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Node, Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<Node, Error> {
        self.tree.text(&())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<Node, Error> {
        self.tree.text(&())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Node, Error> {
        self.tree.text(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Node, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Node, Error> {
        let v = self.open_variant(variant)?;
        let inner = self.tree.child(value, self.depth + 1)?;
        self.tree.buf.push(b'}');
        Ok(Node {
            text: v.start..self.tree.buf.len(),
            parts: Parts::Object(vec![(Cow::Borrowed(variant), inner)]),
        })
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSplitter<'a>, Error> {
        Ok(self.seq(len.unwrap_or(0), None))
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqSplitter<'a>, Error> {
        Ok(self.seq(len, None))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqSplitter<'a>, Error> {
        Ok(self.seq(len, None))
    }

    fn serialize_tuple_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqSplitter<'a>, Error> {
        // The array sits one level below the `{variant: ...}` object.
        let v = self.open_variant(variant)?;
        self.depth += 1;
        Ok(self.seq(len, Some(v)))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<MapSplitter<'a>, Error> {
        Ok(self.map(len.unwrap_or(0), None))
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapSplitter<'a>, Error> {
        Ok(self.map(len, None))
    }

    fn serialize_struct_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<MapSplitter<'a>, Error> {
        let v = self.open_variant(variant)?;
        self.depth += 1;
        Ok(self.map(len, Some(v)))
    }
}

impl SeqSplitter<'_> {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.items.is_empty() {
            self.tree.buf.push(b',');
        }
        let node = self.tree.child(value, self.depth + 1)?;
        self.items.push(node);
        Ok(())
    }

    fn finish(self) -> Node {
        self.tree.buf.push(b']');
        close(
            self.tree,
            self.start,
            Parts::Array(self.items),
            self.variant,
        )
    }
}

// Sequences, tuples and tuple structs/variants all become arrays, element by element.
macro_rules! seq_splitter {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for SeqSplitter<'_> {
            type Ok = Node;
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.push(value)
            }
            fn end(self) -> Result<Node, Error> {
                Ok(self.finish())
            }
        }
    )*};
}

seq_splitter!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl MapSplitter<'_> {
    fn member<T: Serialize + ?Sized>(&mut self, key: Key, value: &T) -> Result<(), Error> {
        if !self.members.is_empty() {
            self.tree.buf.push(b',');
        }
        self.tree.key(&key)?;
        let node = self.tree.child(value, self.depth + 1)?;
        self.members.push((key, node));
        Ok(())
    }

    fn finish(self) -> Node {
        self.tree.buf.push(b'}');
        let parts = Parts::Object(into_map_order(self.members));
        close(self.tree, self.start, parts, self.variant)
    }
}

impl ser::SerializeMap for MapSplitter<'_> {
    type Ok = Node;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        // The key as `to_value` makes it: whatever `serde_json` accepts as an object key.
        self.next_key = Some(match serde_json::to_value(key)? {
            Value::String(s) => s,
            other => other.to_string(),
        });
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .next_key
            .take()
            .ok_or_else(|| <Error as ser::Error>::custom("map value without a key"))?;
        self.member(Cow::Owned(key), value)
    }
    fn end(self) -> Result<Node, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for MapSplitter<'_> {
    type Ok = Node;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.member(Cow::Borrowed(key), value)
    }
    fn end(self) -> Result<Node, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for MapSplitter<'_> {
    type Ok = Node;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.member(Cow::Borrowed(key), value)
    }
    fn end(self) -> Result<Node, Error> {
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use serde_json::json;

    use super::*;

    fn reference<T: Serialize>(a: &T, b: &T) -> Patch {
        json_patch::diff(
            &serde_json::to_value(a).unwrap(),
            &serde_json::to_value(b).unwrap(),
        )
    }

    fn same<T: Serialize>(a: &T, b: &T) {
        assert_eq!(diff(a, b).unwrap(), reference(a, b));
        assert_eq!(diff(b, a).unwrap(), reference(b, a));
        assert!(diff(a, a).unwrap().0.is_empty());
    }

    #[test]
    fn values_of_every_shape_diff_like_json_patch() {
        let a = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a/b": "1", "c~d": "2"}, "annotations": {"x": "y"}},
            "spec": {
                "containers": [
                    {"name": "c", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "deep": {"deeper": {"deepest": [1, 2, {"k": "v"}]}}},
                    {"name": "d", "ports": [{"containerPort": 80}]}
                ],
                "serviceAccountName": "default",
                "n": 1, "f": 1.5, "t": true, "z": null
            }
        });
        let mut b = a.clone();
        b["metadata"]["annotations"]["harbor-iam-webhook/status"] = json!("injected");
        b["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("c~d");
        b["spec"]["containers"][0]["env"][0]["value"] = json!("");
        b["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "C", "value": "3"}));
        b["spec"]["containers"][0]["deep"]["deeper"]["deepest"][2]["k"] = json!("w");
        b["spec"]["containers"].as_array_mut().unwrap().remove(1);
        b["spec"]["serviceAccountName"] = json!("harbor-sa");
        b["spec"]["n"] = json!(2);
        b["spec"]["f"] = json!({"now": "an object"});
        b["spec"]["z"] = json!([]);
        b["spec"]["volumes"] = json!([{"name": "token"}]);
        same(&a, &b);
        same(&json!(1), &json!("x"));
        same(&json!([1, 2, 3]), &json!([1]));
        same(&json!({}), &json!({"a": [1]}));
    }

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

    /// The patch of `edits` is `json_patch::diff` of the whole pods, and the edit touched
    /// nothing outside the engine's fields (which `edits` never looks at).
    fn edits_like_json_patch(before: &Pod, after: &Pod, what: &str) {
        assert_eq!(
            edits(EngineFields::of(before), after.clone()).unwrap(),
            reference(before, after),
            "{what}"
        );
        let (mut b, mut a) = (before.clone(), after.clone());
        EngineFields::take(&mut b);
        EngineFields::take(&mut a);
        if b.spec.is_none() {
            // A new spec is added whole, whatever is in it.
            a.spec = None;
        }
        assert!(b == a, "{what}: edited outside the engine's fields");
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
                same(&pod, &after);
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
                    .insert("a/b".into(), "c".into());
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

    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(u32),
        Tuple(u8, String),
        Struct { a: Vec<u8>, b: Option<u8> },
    }

    #[derive(Serialize)]
    struct Typed {
        shapes: Vec<Shape>,
        by_number: BTreeMap<u32, String>,
        bytes: Vec<u8>,
        nan: f64,
        big: u128,
    }

    #[test]
    fn every_serde_shape_diffs_like_to_value() {
        let a = Typed {
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(1),
                Shape::Tuple(1, "x".into()),
                Shape::Struct {
                    a: vec![1],
                    b: None,
                },
            ],
            by_number: BTreeMap::from([(1, "one".into()), (10, "ten".into()), (2, "two".into())]),
            bytes: vec![1, 2],
            nan: f64::NAN,
            big: 1,
        };
        let b = Typed {
            shapes: vec![
                Shape::Newtype(2),
                Shape::Unit,
                Shape::Tuple(1, "y".into()),
                Shape::Struct {
                    a: vec![1, 2],
                    b: Some(3),
                },
                Shape::Unit,
            ],
            by_number: BTreeMap::from([(1, "uno".into()), (3, "three".into())]),
            bytes: vec![2],
            nan: 0.5,
            big: u128::from(u64::MAX),
        };
        same(&a, &b);
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..3).prop_map(Value::from),
            prop::sample::select(vec!["", "a", "a/b", "c~d", "value"]).prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec!["a", "b", "env", "x/y", "m~n", "value"])
                        .prop_map(String::from),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// Any two JSON documents, and one with a small edit of the other (the usual case).
        #[test]
        fn random_documents_diff_like_json_patch(a in json(), b in json(), path in proptest::collection::vec(0usize..4, 0..6), leaf in json()) {
            same(&a, &b);
            // Walk down `path` to pick a node, then replace it.
            let mut pointer = String::new();
            let mut node = &a;
            for i in path {
                let (token, next) = match node {
                    Value::Array(v) if !v.is_empty() => ((i % v.len()).to_string(), &v[i % v.len()]),
                    Value::Object(m) if !m.is_empty() => {
                        let (k, v) = m.iter().nth(i % m.len()).unwrap();
                        (k.replace('~', "~0").replace('/', "~1"), v)
                    }
                    _ => break,
                };
                pointer.push('/');
                pointer.push_str(&token);
                node = next;
            }
            let mut edited = a.clone();
            *edited.pointer_mut(&pointer).unwrap() = leaf;
            same(&a, &edited);
        }
    }
}
