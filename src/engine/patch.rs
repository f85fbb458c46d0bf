//! The planned edits as JSONPatch operations. Every operation adds or replaces one field
//! the webhook owns, creating the objects that hold it when they are missing, since
//! JSONPatch `add` does not create parents. The operations are typed: each value is one
//! of the few shapes the webhook writes, serialized straight to the wire.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use json_patch::jsonptr::PointerBuf;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};

use super::read::{Holder, MetadataShape};
use super::view::{GOGC, GOMEMLIMIT};
use super::{STATUS, Status};

/// One JSONPatch operation, written as `{"op", "path", "value"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Operation<'a> {
    op: &'static str,
    path: PointerBuf,
    value: Value<'a>,
}

/// The value an operation writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
enum Value<'a> {
    /// A quantity or an env value.
    Text(&'a str),
    /// The status annotation's text.
    Status(StatusText<'a>),
    /// `resources.limits` or `resources.requests`.
    Memory(Memory<'a>),
    Resources(Resources<'a>),
    Env(&'a EnvEntry),
    EnvList(&'a [EnvEntry]),
    Resize(ResizeEntry),
    ResizeList([ResizeEntry; 1]),
    Annotations(Annotations<'a>),
    Metadata(Metadata<'a>),
}

/// `{"memory": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Memory<'a> {
    memory: &'a str,
}

/// `resources`, with the memory limit or request or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Resources<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<Memory<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<Memory<'a>>,
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

/// The status annotation's text: its JSON, written as a JSON string as it is made, never
/// held whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusText<'a>(&'a Status);

impl Serialize for StatusText<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for StatusText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        serde_json::to_writer(TextWriter(f), self.0).map_err(|_| fmt::Error)
    }
}

/// Passes JSON text, which `serde_json` writes in whole UTF-8 pieces, to a formatter.
struct TextWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl io::Write for TextWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = std::str::from_utf8(buf).map_err(io::Error::other)?;
        self.0.write_str(text).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `annotations` holding only the status annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Annotations<'a> {
    status: StatusText<'a>,
}

impl Serialize for Annotations<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(STATUS, &self.status)?;
        map.end()
    }
}

/// `metadata` holding only the status annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Metadata<'a> {
    annotations: Annotations<'a>,
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

/// The JSONPatch of an evaluation: the planned edits and the status annotation, written as
/// operations only when serialized. A pod of thousands of containers never holds its
/// operations, nor the status annotation's text, at once.
#[derive(Debug, Default)]
pub(crate) struct Patch {
    metadata: MetadataShape,
    /// By the JSON pointer of the container (or of `spec`, for the pod); written in the
    /// order of the pointers.
    edits: BTreeMap<PointerBuf, Edit>,
    /// The status annotation, when it changes; written last.
    status: Option<Status>,
}

impl Patch {
    /// The operations of `edits`, then the one that writes `status`, if any.
    pub(super) fn new(
        metadata: MetadataShape,
        edits: BTreeMap<PointerBuf, Edit>,
        status: Option<Status>,
    ) -> Self {
        Patch {
            metadata,
            edits,
            status,
        }
    }

    /// Whether the patch has no operation.
    pub(crate) fn is_empty(&self) -> bool {
        self.status.is_none() && self.edits.values().all(Edit::is_empty)
    }

    /// About how many operations the patch has: most edits make three (memory, GOMEMLIMIT
    /// and GOGC, the resize policy).
    pub(crate) fn estimated_operations(&self) -> usize {
        3 * self.edits.len() + usize::from(self.status.is_some())
    }

    /// Passes every operation, in order, to `each`, stopping at its first error.
    fn each<'a, E>(
        &'a self,
        mut each: impl FnMut(Operation<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        for (at, edit) in &self.edits {
            edit.emit(at, &mut each)?;
        }
        if let Some(status) = &self.status {
            each(status_annotation(self.metadata, status))?;
        }
        Ok(())
    }

    /// The operations, as a list.
    pub(crate) fn operations(&self) -> Vec<Operation<'_>> {
        let mut ops = Vec::new();
        let _ = self.each(|op| {
            ops.push(op);
            Ok::<(), ()>(())
        });
        ops
    }
}

impl Serialize for Patch {
    /// The JSON array of operations, each made as it is written.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        self.each(|op| seq.serialize_element(&op))?;
        seq.end()
    }
}

impl Edit {
    /// Whether the edit sets nothing.
    fn is_empty(&self) -> bool {
        self.limit.is_none()
            && self.request.is_none()
            && self.env.is_empty()
            && self.env_value.is_none()
            && !self.restart_on_memory_resize
    }

    /// Passes the operations of this edit to the container (or `spec`) at `at` to `each`.
    fn emit<'a, E>(
        &'a self,
        at: &PointerBuf,
        each: &mut impl FnMut(Operation<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.emit_memory(at, each)?;
        if let Some(EnvValue { index, value }) = &self.env_value {
            each(Operation {
                op: "replace",
                path: below(at, &["env", &index.to_string(), "value"]),
                value: Value::Text(value),
            })?;
        }
        if self.restart_on_memory_resize {
            each(if self.holder.resize_policy {
                let entry = Value::Resize(RESTART_ON_MEMORY_RESIZE);
                add(below(at, &["resizePolicy", "-"]), entry)
            } else {
                let list = Value::ResizeList([RESTART_ON_MEMORY_RESIZE]);
                add(below(at, &["resizePolicy"]), list)
            })?;
        }
        if self.env.is_empty() {
            return Ok(());
        }
        if self.holder.env {
            for entry in &self.env {
                each(add(below(at, &["env", "-"]), Value::Env(entry)))?;
            }
            Ok(())
        } else {
            each(add(below(at, &["env"]), Value::EnvList(&self.env)))
        }
    }

    fn emit_memory<'a, E>(
        &'a self,
        at: &PointerBuf,
        each: &mut impl FnMut(Operation<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let memory = |v: &'a Option<String>| v.as_deref().map(|memory| Memory { memory });
        let (limits, requests) = (memory(&self.limit), memory(&self.request));
        if limits.is_none() && requests.is_none() {
            return Ok(());
        }
        if !self.holder.resources {
            let resources = Value::Resources(Resources { limits, requests });
            return each(add(below(at, &["resources"]), resources));
        }
        let lists = [
            ("limits", limits, self.holder.limits),
            ("requests", requests, self.holder.requests),
        ];
        for (kind, memory, held) in lists {
            let Some(memory) = memory else { continue };
            each(if held {
                add(
                    below(at, &["resources", kind, "memory"]),
                    Value::Text(memory.memory),
                )
            } else {
                add(below(at, &["resources", kind]), Value::Memory(memory))
            })?;
        }
        Ok(())
    }
}

/// The operation that writes the status annotation, creating `metadata` or its
/// `annotations` when the pod has none.
fn status_annotation(metadata: MetadataShape, status: &Status) -> Operation<'_> {
    let annotations = Annotations {
        status: StatusText(status),
    };
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
            Value::Status(annotations.status),
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

fn add(path: PointerBuf, value: Value<'_>) -> Operation<'_> {
    Operation {
        op: "add",
        path,
        value,
    }
}
