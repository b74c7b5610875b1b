//! The admission patch: one JSON Patch operation per edit the engine reports
//! ([`mutate::Edit`]), in the order made, each path built by [`pointer`]. Only what the engine
//! changed is named; an entry is never rewritten whole, so fields our Kubernetes model does not
//! know stay as the request had them.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde::Serialize;

use crate::mutate::{At, Edit, EnvEdit};

/// The JSON pointer of `tokens`, each escaped (`~` and `/`).
fn pointer<'t>(tokens: impl IntoIterator<Item = &'t str>) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

/// `spec.containers[i]` or `spec.initContainers[i]`, then `rest`.
fn container(at: At, rest: &[&str]) -> PointerBuf {
    let list = if at.init {
        "initContainers"
    } else {
        "containers"
    };
    let index = at.index.to_string();
    pointer(
        ["spec", list, index.as_str()]
            .into_iter()
            .chain(rest.iter().copied()),
    )
}

fn add(path: PointerBuf, value: &impl Serialize) -> PatchOperation {
    let value = serde_json::to_value(value).expect("the engine's edits always serialise");
    PatchOperation::Add(AddOperation { path, value })
}

/// Add `item` to the list at `list` (at `index`, or the end): the list itself when it is new.
fn add_item(
    list: PointerBuf,
    index: Option<usize>,
    item: &impl Serialize,
    new_list: bool,
) -> PatchOperation {
    if new_list {
        return add(list, &[item]);
    }
    let mut path = list;
    match index {
        Some(i) => path.push_back(i),
        None => path.push_back("-"),
    }
    add(path, item)
}

pub fn of(edits: &[Edit]) -> Patch {
    let mut ops = Vec::with_capacity(edits.len());
    for e in edits {
        match e {
            Edit::Spec => ops.push(add(
                pointer(["spec"]),
                &serde_json::json!({"containers": []}),
            )),
            Edit::Annotation {
                key,
                value,
                new_map: true,
            } => ops.push(add(
                pointer(["metadata", "annotations"]),
                &[(key, value)]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )),
            Edit::Annotation { key, value, .. } => {
                ops.push(add(pointer(["metadata", "annotations", key]), value));
            }
            Edit::ServiceAccount {
                name,
                deprecated_too,
            } => {
                ops.push(add(pointer(["spec", "serviceAccountName"]), name));
                if *deprecated_too {
                    ops.push(add(pointer(["spec", "serviceAccount"]), name));
                }
            }
            Edit::Env { at, edit } => match edit {
                EnvEdit::Value {
                    index,
                    value,
                    dropped_value_from,
                } => {
                    let i = index.to_string();
                    ops.push(add(container(*at, &["env", &i, "value"]), value));
                    if *dropped_value_from {
                        let path = container(*at, &["env", &i, "valueFrom"]);
                        ops.push(PatchOperation::Remove(RemoveOperation { path }));
                    }
                }
                EnvEdit::Insert {
                    index,
                    entry,
                    new_list,
                } => ops.push(add_item(
                    container(*at, &["env"]),
                    Some(*index),
                    entry,
                    *new_list,
                )),
            },
            Edit::VolumeMount {
                at,
                mount,
                new_list,
            } => ops.push(add_item(
                container(*at, &["volumeMounts"]),
                None,
                mount,
                *new_list,
            )),
            Edit::Volume { volume, new_list } => {
                ops.push(add_item(
                    pointer(["spec", "volumes"]),
                    None,
                    volume,
                    *new_list,
                ));
            }
        }
    }
    Patch(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_escaped_and_lists_created_or_extended() {
        let edits = [
            Edit::Annotation {
                key: "harbor-iam-webhook/status",
                value: "injected",
                new_map: false,
            },
            Edit::Env {
                at: At {
                    init: true,
                    index: 1,
                },
                edit: EnvEdit::Value {
                    index: 3,
                    value: String::new(),
                    dropped_value_from: true,
                },
            },
        ];
        let patch = serde_json::to_value(of(&edits)).unwrap();
        assert_eq!(
            patch,
            serde_json::json!([
                {"op": "add", "path": "/metadata/annotations/harbor-iam-webhook~1status", "value": "injected"},
                {"op": "add", "path": "/spec/initContainers/1/env/3/value", "value": ""},
                {"op": "remove", "path": "/spec/initContainers/1/env/3/valueFrom"},
            ])
        );
    }
}
