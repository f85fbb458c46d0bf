//! Reading the pod: the parts of its JSON the rules look at, or why it cannot be read.
//!
//! Only the shape of those parts is checked; everything else may be anything, since the
//! API server validates the pod after the admission webhooks have run.

use std::collections::BTreeMap;
use std::fmt;

use json_patch::jsonptr::PointerBuf;
use serde_json::{Map, Value};

use super::{INJECT, MIRROR, SkipReason, Target};
use crate::quantity::Quantity;

/// The container lists the rules apply to, in the order they are evaluated. Ephemeral
/// containers are never targets.
const CONTAINER_LISTS: [&str; 2] = ["initContainers", "containers"];

/// Why an object is not a pod the engine can read. Such a pod is admitted unchanged, with
/// this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unreadable {
    #[error("the object is not a JSON object")]
    NotAnObject,
    #[error("metadata.{key} is not an object")]
    MetadataNotAnObject { key: &'static str },
    #[error("metadata.{key}[{entry:?}] is not a string")]
    MetadataNotAString { key: &'static str, entry: String },
    #[error("the pod has no spec object")]
    NoSpec,
    #[error("spec.{list} is not an array")]
    ListNotAnArray { list: &'static str },
    #[error("{at} is not an object")]
    ContainerNotAnObject { at: Place },
    #[error("{at} has no name")]
    NoName { at: Place },
    #[error("{at}.resources is not an object")]
    ResourcesNotAnObject { at: Place },
    #[error("{at}.resources.{kind} is not an object")]
    ResourceListNotAnObject { at: Place, kind: &'static str },
    #[error("{at}.resources.{kind}.memory is not a quantity")]
    MemoryNotAQuantity { at: Place, kind: &'static str },
    #[error("{target}: env is not an array")]
    EnvNotAnArray { target: Target },
    #[error("planned an edit outside the pod")]
    EditOutsidePod,
    #[error("policy missingLimit is default without defaultMemory")]
    NoDefaultMemory,
}

/// Where a target's fields sit in the pod spec: `spec` itself for the pod, or one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    Spec,
    Container { list: &'static str, index: usize },
}

impl Place {
    /// The JSON pointer to it.
    pub(super) fn pointer(&self) -> PointerBuf {
        match self {
            Place::Spec => PointerBuf::from_tokens(["spec"]),
            Place::Container { list, index } => {
                PointerBuf::from_tokens(["spec", list, index.to_string().as_str()])
            }
        }
    }
}

/// As messages name it: `spec`, `spec.containers[0]`.
impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Spec => f.write_str("spec"),
            Place::Container { list, index } => write!(f, "spec.{list}[{index}]"),
        }
    }
}

/// The pod's metadata as far as the rules read it.
pub(super) struct Metadata<'a> {
    /// `metadata` as sent, if any.
    pub(super) raw: Option<&'a Value>,
    pub(super) labels: BTreeMap<&'a str, &'a str>,
    pub(super) annotations: BTreeMap<&'a str, &'a str>,
}

impl<'a> Metadata<'a> {
    /// Reads the labels and annotations of `pod`, which must be a JSON object.
    pub(super) fn of(pod: &'a Value) -> Result<Self, Unreadable> {
        let raw = pod
            .as_object()
            .ok_or(Unreadable::NotAnObject)?
            .get("metadata");
        Ok(Metadata {
            raw,
            labels: string_map(raw, "labels")?,
            annotations: string_map(raw, "annotations")?,
        })
    }

    /// Why the pod is not ours to change, if it is not: it opted out, or it is a mirror pod.
    pub(super) fn opted_out(&self) -> Option<SkipReason> {
        let disabled = |map: &BTreeMap<&str, &str>| map.get(INJECT) == Some(&"disabled");
        if disabled(&self.labels) || disabled(&self.annotations) {
            return Some(SkipReason::Disabled);
        }
        self.annotations
            .contains_key(MIRROR)
            .then_some(SkipReason::Mirror)
    }
}

/// The labels or annotations as strings; any other shape is unreadable.
fn string_map<'a>(
    metadata: Option<&'a Value>,
    key: &'static str,
) -> Result<BTreeMap<&'a str, &'a str>, Unreadable> {
    let Some(value) = metadata.and_then(|m| m.get(key)) else {
        return Ok(BTreeMap::new());
    };
    if value.is_null() {
        return Ok(BTreeMap::new());
    }
    let map = value
        .as_object()
        .ok_or(Unreadable::MetadataNotAnObject { key })?;
    map.iter()
        .map(|(entry, v)| {
            v.as_str()
                .map(|s| (entry.as_str(), s))
                .ok_or_else(|| Unreadable::MetadataNotAString {
                    key,
                    entry: entry.clone(),
                })
        })
        .collect()
}

/// The pod's `spec`.
pub(super) fn spec(pod: &Value) -> Result<&Map<String, Value>, Unreadable> {
    pod.get("spec")
        .and_then(Value::as_object)
        .ok_or(Unreadable::NoSpec)
}

/// The memory fields of one container (or the pod), as written.
#[derive(Debug, Clone, Default)]
pub(super) struct Memory {
    pub(super) limit: Option<String>,
    pub(super) request: Option<String>,
}

/// [`Memory`], parsed.
pub(super) struct Quantities {
    pub(super) limit: Option<Quantity>,
    pub(super) request: Option<Quantity>,
}

impl Memory {
    /// The memory fields of the `resources` of the target at `at`.
    pub(super) fn of(resources: Option<&Value>, at: &Place) -> Result<Self, Unreadable> {
        let resources = match resources {
            None | Some(Value::Null) => return Ok(Memory::default()),
            Some(Value::Object(r)) => r,
            Some(_) => return Err(Unreadable::ResourcesNotAnObject { at: at.clone() }),
        };
        Ok(Memory {
            limit: memory_field(resources, "limits", at)?,
            request: memory_field(resources, "requests", at)?,
        })
    }

    /// Both values parsed; a value that does not parse is named in the message, the limit
    /// first.
    pub(super) fn parse(&self) -> Result<Quantities, String> {
        let parse = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    Quantity::parse(t)
                        .map_err(|e| format!("cannot parse {field} {t:?} ({e}); left unchanged"))
                })
                .transpose()
        };
        Ok(Quantities {
            limit: parse("limits.memory", &self.limit)?,
            request: parse("requests.memory", &self.request)?,
        })
    }
}

/// `resources.<kind>.memory` as written.
fn memory_field(
    resources: &Map<String, Value>,
    kind: &'static str,
    at: &Place,
) -> Result<Option<String>, Unreadable> {
    let map = match resources.get(kind) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(_) => {
            let at = at.clone();
            return Err(Unreadable::ResourceListNotAnObject { at, kind });
        }
    };
    match map.get("memory") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // Quantities may arrive as JSON numbers from hand-written manifests.
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(Unreadable::MemoryNotAQuantity {
            at: at.clone(),
            kind,
        }),
    }
}

/// When a container runs, which decides whose memory it shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Runs {
    /// An ordinary init container: alone, before the pod's containers, beside the native
    /// sidecars declared before it (`index` in `initContainers`).
    Before { index: usize },
    /// A native sidecar (an init container with `restartPolicy: Always`): for the pod's
    /// whole life.
    Sidecar { index: usize },
    /// One of the pod's `containers`.
    Main,
}

/// One container, as the rules see it.
pub(super) struct Container<'a> {
    pub(super) place: Place,
    pub(super) name: &'a str,
    pub(super) memory: Memory,
    pub(super) runs: Runs,
    /// The `restartPolicy` of its `resizePolicy` entry for memory, if it has one.
    pub(super) memory_resize: Option<&'a str>,
}

/// Every target container: init containers (native sidecars included), then containers.
pub(super) fn containers(spec: &Map<String, Value>) -> Result<Vec<Container<'_>>, Unreadable> {
    let mut containers = Vec::new();
    for list in CONTAINER_LISTS {
        let items = match spec.get(list) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items,
            Some(_) => return Err(Unreadable::ListNotAnArray { list }),
        };
        for (index, item) in items.iter().enumerate() {
            containers.push(Container::read(Place::Container { list, index }, item)?);
        }
    }
    Ok(containers)
}

impl<'a> Container<'a> {
    fn read(place: Place, item: &'a Value) -> Result<Self, Unreadable> {
        let Some(object) = item.as_object() else {
            return Err(Unreadable::ContainerNotAnObject { at: place });
        };
        let Some(name) = object.get("name").and_then(Value::as_str) else {
            return Err(Unreadable::NoName { at: place });
        };
        let memory = Memory::of(object.get("resources"), &place)?;
        let runs = match place {
            Place::Container {
                list: "initContainers",
                index,
            } if object.get("restartPolicy").and_then(Value::as_str) == Some("Always") => {
                Runs::Sidecar { index }
            }
            Place::Container {
                list: "initContainers",
                index,
            } => Runs::Before { index },
            _ => Runs::Main,
        };
        let memory_resize = object
            .get("resizePolicy")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("resourceName").and_then(Value::as_str) == Some("memory"))
            .map(|p| p.get("restartPolicy").and_then(Value::as_str).unwrap_or(""));
        Ok(Container {
            place,
            name,
            memory,
            runs,
            memory_resize,
        })
    }
}

/// A container's `env` entries.
pub(super) fn env<'a>(container: &'a Value, target: &Target) -> Result<&'a [Value], Unreadable> {
    match container.get("env") {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items.as_slice()),
        Some(_) => Err(Unreadable::EnvNotAnArray {
            target: target.clone(),
        }),
    }
}

/// The first `env` entry named `name`, with its index.
pub(super) fn find_env<'a>(env: &'a [Value], name: &str) -> Option<(usize, &'a Value)> {
    env.iter()
        .enumerate()
        .find(|(_, e)| e.get("name").and_then(Value::as_str) == Some(name))
}

/// Whether the container takes variables from `envFrom`, which may hide a GOMEMLIMIT.
pub(super) fn has_env_from(container: &Value) -> bool {
    container
        .get("envFrom")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}
