//! The planned edits as JSONPatch operations. Every operation adds or replaces one field
//! the webhook owns, creating the objects that hold it when they are missing, since
//! JSONPatch `add` does not create parents.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde_json::{Map, Value, json};

use super::read::{Holder, MetadataShape};
use super::{STATUS, Status};

/// The fields to set on one container (or, at `spec`, the pod).
#[derive(Debug)]
pub(super) struct Edit {
    /// What the container (or `spec`) already holds.
    holder: Holder,
    pub(super) limit: Option<String>,
    pub(super) request: Option<String>,
    /// Entries to append to `env`.
    pub(super) env: Vec<Value>,
    /// An `env` entry whose value is replaced.
    pub(super) env_value: Option<EnvValue>,
    /// Append `{resourceName: memory, restartPolicy: RestartContainer}` to `resizePolicy`.
    pub(super) restart_on_memory_resize: bool,
}

impl Edit {
    /// No fields yet, on a target holding what `holder` says.
    pub(super) fn new(holder: Holder) -> Self {
        Edit {
            holder,
            limit: None,
            request: None,
            env: Vec::new(),
            env_value: None,
            restart_on_memory_resize: false,
        }
    }
}

/// A new value for the `env` entry at `index`.
#[derive(Debug)]
pub(super) struct EnvValue {
    pub(super) index: usize,
    pub(super) value: String,
}

/// Appends the operations of every edit, in the order of their pointers, then the one
/// that writes `status` when the annotation changes.
pub(super) fn emit(
    metadata: MetadataShape,
    edits: &BTreeMap<PointerBuf, Edit>,
    status: Option<&Status>,
    ops: &mut Vec<PatchOperation>,
) {
    for (at, edit) in edits {
        edit.emit(at, ops);
    }
    if let Some(status) = status {
        ops.push(status_annotation(metadata, status));
    }
}

impl Edit {
    /// Appends the operations of this edit to the container (or `spec`) at `at`.
    fn emit(&self, at: &PointerBuf, ops: &mut Vec<PatchOperation>) {
        self.emit_memory(at, ops);
        if let Some(EnvValue { index, value }) = &self.env_value {
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: below(at, &["env", &index.to_string(), "value"]),
                value: json!(value),
            }));
        }
        if self.restart_on_memory_resize {
            let entry = json!({"resourceName": "memory", "restartPolicy": "RestartContainer"});
            if self.holder.resize_policy {
                ops.push(add(below(at, &["resizePolicy", "-"]), entry));
            } else {
                ops.push(add(below(at, &["resizePolicy"]), json!([entry])));
            }
        }
        if self.env.is_empty() {
            return;
        }
        if self.holder.env {
            for entry in &self.env {
                ops.push(add(below(at, &["env", "-"]), entry.clone()));
            }
        } else {
            ops.push(add(below(at, &["env"]), Value::Array(self.env.clone())));
        }
    }

    fn emit_memory(&self, at: &PointerBuf, ops: &mut Vec<PatchOperation>) {
        let memory: Vec<(&str, &String)> = [("limits", &self.limit), ("requests", &self.request)]
            .into_iter()
            .filter_map(|(kind, v)| v.as_ref().map(|v| (kind, v)))
            .collect();
        if memory.is_empty() {
            return;
        }
        if !self.holder.resources {
            let mut resources = Map::new();
            for (kind, v) in &memory {
                resources.insert((*kind).into(), json!({"memory": v}));
            }
            ops.push(add(below(at, &["resources"]), Value::Object(resources)));
            return;
        }
        for (kind, v) in &memory {
            let held = match *kind {
                "limits" => self.holder.limits,
                _ => self.holder.requests,
            };
            if held {
                ops.push(add(below(at, &["resources", kind, "memory"]), json!(v)));
            } else {
                ops.push(add(below(at, &["resources", kind]), json!({"memory": v})));
            }
        }
    }
}

/// The operation that writes the status annotation, creating `metadata` or its
/// `annotations` when the pod has none.
fn status_annotation(metadata: MetadataShape, status: &Status) -> PatchOperation {
    let text = serde_json::to_string(status).expect("a status of strings and numbers serializes");
    let text = Value::String(text);
    match metadata {
        MetadataShape::Missing => add(
            PointerBuf::from_tokens(["metadata"]),
            json!({"annotations": {STATUS: text}}),
        ),
        MetadataShape::NoAnnotations => add(
            PointerBuf::from_tokens(["metadata", "annotations"]),
            json!({STATUS: text}),
        ),
        MetadataShape::Annotations => add(
            PointerBuf::from_tokens(["metadata", "annotations", STATUS]),
            text,
        ),
    }
}

/// `at` with `tail` appended.
fn below(at: &PointerBuf, tail: &[&str]) -> PointerBuf {
    let mut path = at.clone();
    for token in tail {
        path.push_back(*token);
    }
    path
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}
