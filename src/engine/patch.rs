//! The planned edits as JSONPatch operations. Every operation adds or replaces one field
//! the webhook owns, creating the objects that hold it when they are missing, since
//! JSONPatch `add` does not create parents. The operations are typed: each value is one
//! of the few shapes the webhook writes, serialized straight to the wire.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use serde::Serialize;
use serde::ser::SerializeMap;

use super::read::{Holder, MetadataShape};
use super::view::{GOGC, GOMEMLIMIT};
use super::{STATUS, Status};

/// One JSONPatch operation, written as `{"op", "path", "value"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Operation {
    op: &'static str,
    path: PointerBuf,
    value: Value,
}

/// The value an operation writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
enum Value {
    /// A quantity, an env value or the status annotation's text.
    Text(String),
    /// `resources.limits` or `resources.requests`.
    Memory(Memory),
    Resources(Resources),
    Env(EnvEntry),
    EnvList(Vec<EnvEntry>),
    Resize(ResizeEntry),
    ResizeList([ResizeEntry; 1]),
    Annotations(Annotations),
    Metadata(Metadata),
}

/// `{"memory": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Memory {
    memory: String,
}

/// `resources`, with the memory limit or request or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<Memory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<Memory>,
}

/// An `env` entry the webhook adds: a value, or the memory limit through the downward API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EnvEntry {
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_from: Option<ValueFrom>,
}

impl EnvEntry {
    /// `GOMEMLIMIT` from the container's memory limit, through the downward API.
    pub(super) fn gomemlimit_downward() -> Self {
        let value_from = ValueFrom {
            resource_field_ref: ResourceFieldRef {
                resource: "limits.memory",
                divisor: "1",
            },
        };
        EnvEntry {
            name: GOMEMLIMIT,
            value: None,
            value_from: Some(value_from),
        }
    }

    /// `GOMEMLIMIT` as a byte count.
    pub(super) fn gomemlimit(bytes: u64) -> Self {
        EnvEntry {
            name: GOMEMLIMIT,
            value: Some(bytes.to_string()),
            value_from: None,
        }
    }

    /// `GOGC`.
    pub(super) fn gogc(value: String) -> Self {
        EnvEntry {
            name: GOGC,
            value: Some(value),
            value_from: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct ValueFrom {
    resource_field_ref: ResourceFieldRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct ResourceFieldRef {
    resource: &'static str,
    divisor: &'static str,
}

/// The `resizePolicy` entry that restarts the container when its memory is resized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResizeEntry {
    resource_name: &'static str,
    restart_policy: &'static str,
}

const RESTART_ON_MEMORY_RESIZE: ResizeEntry = ResizeEntry {
    resource_name: "memory",
    restart_policy: "RestartContainer",
};

/// `annotations` holding only the status annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Annotations {
    status: String,
}

impl Serialize for Annotations {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(STATUS, &self.status)?;
        map.end()
    }
}

/// `metadata` holding only the status annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Metadata {
    annotations: Annotations,
}

/// The fields to set on one container (or, at `spec`, the pod).
#[derive(Debug)]
pub(super) struct Edit {
    /// What the container (or `spec`) already holds.
    holder: Holder,
    pub(super) limit: Option<String>,
    pub(super) request: Option<String>,
    /// Entries to append to `env`.
    pub(super) env: Vec<EnvEntry>,
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
    edits: BTreeMap<PointerBuf, Edit>,
    status: Option<&Status>,
    ops: &mut Vec<Operation>,
) {
    for (at, edit) in edits {
        edit.emit(&at, ops);
    }
    if let Some(status) = status {
        ops.push(status_annotation(metadata, status));
    }
}

impl Edit {
    /// Appends the operations of this edit to the container (or `spec`) at `at`.
    fn emit(self, at: &PointerBuf, ops: &mut Vec<Operation>) {
        self.emit_memory(at, ops);
        if let Some(EnvValue { index, value }) = self.env_value {
            ops.push(Operation {
                op: "replace",
                path: below(at, &["env", &index.to_string(), "value"]),
                value: Value::Text(value),
            });
        }
        if self.restart_on_memory_resize {
            ops.push(if self.holder.resize_policy {
                let entry = Value::Resize(RESTART_ON_MEMORY_RESIZE);
                add(below(at, &["resizePolicy", "-"]), entry)
            } else {
                let list = Value::ResizeList([RESTART_ON_MEMORY_RESIZE]);
                add(below(at, &["resizePolicy"]), list)
            });
        }
        if self.env.is_empty() {
            return;
        }
        if self.holder.env {
            for entry in self.env {
                ops.push(add(below(at, &["env", "-"]), Value::Env(entry)));
            }
        } else {
            ops.push(add(below(at, &["env"]), Value::EnvList(self.env)));
        }
    }

    fn emit_memory(&self, at: &PointerBuf, ops: &mut Vec<Operation>) {
        let memory = |v: &Option<String>| v.clone().map(|memory| Memory { memory });
        let (limits, requests) = (memory(&self.limit), memory(&self.request));
        if limits.is_none() && requests.is_none() {
            return;
        }
        if !self.holder.resources {
            let resources = Value::Resources(Resources { limits, requests });
            ops.push(add(below(at, &["resources"]), resources));
            return;
        }
        let lists = [
            ("limits", limits, self.holder.limits),
            ("requests", requests, self.holder.requests),
        ];
        for (kind, memory, held) in lists {
            let Some(memory) = memory else { continue };
            ops.push(if held {
                add(
                    below(at, &["resources", kind, "memory"]),
                    Value::Text(memory.memory),
                )
            } else {
                add(below(at, &["resources", kind]), Value::Memory(memory))
            });
        }
    }
}

/// The operation that writes the status annotation, creating `metadata` or its
/// `annotations` when the pod has none.
fn status_annotation(metadata: MetadataShape, status: &Status) -> Operation {
    let text = serde_json::to_string(status).expect("a status of strings and numbers serializes");
    let annotations = Annotations { status: text };
    match metadata {
        MetadataShape::Missing => add(
            PointerBuf::from_tokens(["metadata"]),
            Value::Metadata(Metadata { annotations }),
        ),
        MetadataShape::NoAnnotations => add(
            PointerBuf::from_tokens(["metadata", "annotations"]),
            Value::Annotations(annotations),
        ),
        MetadataShape::Annotations => add(
            PointerBuf::from_tokens(["metadata", "annotations", STATUS]),
            Value::Text(annotations.status),
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

fn add(path: PointerBuf, value: Value) -> Operation {
    Operation {
        op: "add",
        path,
        value,
    }
}
