//! Reading the pod: the parts of its JSON the rules look at, or why it cannot be read.
//!
//! Only the shape of those parts is checked; everything else may be anything, since the
//! API server validates the pod after the admission webhooks have run. The parts come from
//! the [`view`] of the pod, read without building a document of it.

use std::collections::HashSet;
use std::fmt;

use compact_str::CompactString;

use super::view::{self, Env, EnvVar, Field, QuantityText};
use super::{INJECT, MIRROR, SkipReason, Target};
use crate::quantity::Quantity;

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
    #[error("{at} has the name {name:?} of another container")]
    RepeatedName { at: Place, name: String },
    #[error("{at}.resources is not an object")]
    ResourcesNotAnObject { at: Place },
    #[error("{at}.resources.{kind} is not an object")]
    ResourceListNotAnObject { at: Place, kind: &'static str },
    #[error("{at}.resources.{kind}.memory is not a quantity")]
    MemoryNotAQuantity { at: Place, kind: &'static str },
    #[error("{target}: env is not an array")]
    EnvNotAnArray { target: Target },
    #[error("policy missingLimit is default without defaultMemory")]
    NoDefaultMemory,
}

/// Where a target's fields sit in the pod spec: `spec` itself for the pod, or one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    Spec,
    Container { list: &'static str, index: usize },
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
    /// Where the status annotation goes.
    pub(super) shape: MetadataShape,
    pub(super) labels: Strings<'a>,
    pub(super) annotations: Strings<'a>,
}

/// Labels or annotations whose values are all strings, as sent (none when absent).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Strings<'a>(Option<&'a view::StringMap<'a>>);

impl<'a> Strings<'a> {
    /// The value of `key`.
    pub(super) fn get(&self, key: &str) -> Option<&'a str> {
        self.0.and_then(|map| map.get(key))
    }
}

/// What holds the annotations, as the status annotation must be added to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum MetadataShape {
    /// No `metadata` (or null): the patch adds it.
    #[default]
    Missing,
    /// `metadata` without annotations (or null ones): the patch adds them.
    NoAnnotations,
    /// Annotations: the patch adds one.
    Annotations,
}

impl<'a> Metadata<'a> {
    /// Reads the labels and annotations of `pod`, which must be a JSON object.
    pub(super) fn of(pod: &'a Field<view::Pod<'_>>) -> Result<Self, Unreadable> {
        let Field::Present(pod) = pod else {
            return Err(Unreadable::NotAnObject);
        };
        let (shape, metadata) = match &pod.metadata {
            Field::Absent | Field::Null => (MetadataShape::Missing, None),
            Field::Wrong => (MetadataShape::NoAnnotations, None),
            Field::Present(m) if m.annotations.is_missing() => {
                (MetadataShape::NoAnnotations, Some(m))
            }
            Field::Present(m) => (MetadataShape::Annotations, Some(m)),
        };
        Ok(Metadata {
            shape,
            labels: string_map(metadata.map(|m| &m.labels), "labels")?,
            annotations: string_map(metadata.map(|m| &m.annotations), "annotations")?,
        })
    }

    /// Why the pod is not ours to change, if it is not: it opted out, or it is a mirror pod.
    pub(super) fn opted_out(&self) -> Option<SkipReason> {
        let disabled = |map: &Strings<'_>| map.get(INJECT) == Some("disabled");
        if disabled(&self.labels) || disabled(&self.annotations) {
            return Some(SkipReason::Disabled);
        }
        self.annotations.get(MIRROR).map(|_| SkipReason::Mirror)
    }
}

/// The labels or annotations as strings; any other shape is unreadable.
fn string_map<'a>(
    map: Option<&'a Field<view::StringMap<'a>>>,
    key: &'static str,
) -> Result<Strings<'a>, Unreadable> {
    let map = match map {
        None | Some(Field::Absent | Field::Null) => return Ok(Strings::default()),
        Some(Field::Wrong) => return Err(Unreadable::MetadataNotAnObject { key }),
        Some(Field::Present(map)) => map,
    };
    if let Some(entry) = map.not_a_string() {
        let entry = entry.to_owned();
        return Err(Unreadable::MetadataNotAString { key, entry });
    }
    Ok(Strings(Some(map)))
}

/// The pod's `spec`.
pub(super) fn spec<'a, 'de>(
    pod: &'a Field<view::Pod<'de>>,
) -> Result<&'a view::Spec<'de>, Unreadable> {
    match pod {
        Field::Present(view::Pod {
            spec: Field::Present(spec),
            ..
        }) => Ok(spec),
        _ => Err(Unreadable::NoSpec),
    }
}

/// The memory fields of one container (or the pod), as written.
#[derive(Debug, Clone, Default)]
pub(super) struct Memory {
    pub(super) limit: Option<CompactString>,
    pub(super) request: Option<CompactString>,
}

/// [`Memory`], parsed.
pub(super) struct Quantities {
    pub(super) limit: Option<Quantity>,
    pub(super) request: Option<Quantity>,
}

impl Memory {
    /// The memory fields of the `resources` of the target at `at`.
    pub(super) fn of(
        resources: &Field<view::Resources<'_>>,
        at: &Place,
    ) -> Result<Self, Unreadable> {
        let resources = match resources {
            Field::Absent | Field::Null => return Ok(Memory::default()),
            Field::Present(r) => r,
            Field::Wrong => return Err(Unreadable::ResourcesNotAnObject { at: at.clone() }),
        };
        Ok(Memory {
            limit: memory_field(&resources.limits, "limits", at)?,
            request: memory_field(&resources.requests, "requests", at)?,
        })
    }

    /// Both values parsed; a value that does not parse is named in the message, the limit
    /// first.
    pub(super) fn parse(&self) -> Result<Quantities, String> {
        let parse = |field: &str, text: &Option<CompactString>| {
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

/// `resources.<kind>.memory` as written (a JSON number in its text).
fn memory_field(
    list: &Field<view::ResourceList<'_>>,
    kind: &'static str,
    at: &Place,
) -> Result<Option<CompactString>, Unreadable> {
    let list = match list {
        Field::Absent | Field::Null => return Ok(None),
        Field::Present(list) => list,
        Field::Wrong => {
            let at = at.clone();
            return Err(Unreadable::ResourceListNotAnObject { at, kind });
        }
    };
    match &list.memory {
        Field::Absent | Field::Null => Ok(None),
        Field::Present(QuantityText(text)) => Ok(Some(CompactString::from(text.as_ref()))),
        Field::Wrong => Err(Unreadable::MemoryNotAQuantity {
            at: at.clone(),
            kind,
        }),
    }
}

/// What holds the fields the webhook sets on one target, as the patch must add them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Holder {
    pub(super) resources: bool,
    pub(super) limits: bool,
    pub(super) requests: bool,
    pub(super) env: bool,
    pub(super) resize_policy: bool,
}

impl Holder {
    /// What `resources` (of a container or the pod) holds.
    pub(super) fn of_resources(resources: &Field<view::Resources<'_>>) -> Self {
        let Field::Present(r) = resources else {
            return Holder::default();
        };
        Holder {
            resources: true,
            limits: matches!(r.limits, Field::Present(_)),
            requests: matches!(r.requests, Field::Present(_)),
            ..Holder::default()
        }
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
    /// Its `env`, as sent.
    pub(super) env: &'a Field<Env<'a>>,
    /// Whether it takes variables from a non-empty `envFrom`, which may hide a GOMEMLIMIT.
    pub(super) env_from: bool,
    pub(super) holder: Holder,
}

/// Every target container: init containers (native sidecars included), then containers.
/// Ephemeral containers are never targets. Each is read from the pod as it is needed, not
/// kept: a pod of thousands of containers holds only their views.
pub(super) struct Containers<'a> {
    lists: [(&'static str, &'a [Field<view::Container<'a>>]); 2],
}

impl<'a> Containers<'a> {
    /// The containers of `spec`, every one of them readable, each name used once.
    pub(super) fn of(spec: &'a view::Spec<'a>) -> Result<Self, Unreadable> {
        let mut lists = [("initContainers", &[][..]), ("containers", &[][..])];
        for ((list, items), field) in lists
            .iter_mut()
            .zip([&spec.init_containers, &spec.containers])
        {
            *items = match field {
                Field::Absent | Field::Null => continue,
                Field::Present(items) => items,
                Field::Wrong => return Err(Unreadable::ListNotAnArray { list }),
            };
        }
        let containers = Containers { lists };
        // The status annotation and the exclusions know containers by name: with a name used
        // twice (a pod the API server's validation refuses after the webhooks), no answer
        // would be right, nor the same on a second review.
        let mut names = HashSet::with_capacity(containers.len());
        for container in containers.read_each() {
            let container = container?;
            if !names.insert(container.name) {
                return Err(Unreadable::RepeatedName {
                    at: container.place,
                    name: container.name.to_owned(),
                });
            }
        }
        Ok(containers)
    }

    pub(super) fn len(&self) -> usize {
        self.lists.iter().map(|(_, items)| items.len()).sum()
    }

    /// The containers in order (all readable, as [`Containers::of`] found).
    pub(super) fn iter(&self) -> impl Iterator<Item = Container<'a>> + '_ {
        self.read_each().filter_map(Result::ok)
    }

    fn read_each(&self) -> impl Iterator<Item = Result<Container<'a>, Unreadable>> + '_ {
        self.lists.iter().flat_map(|&(list, items)| {
            let places = (0..).map(move |index| Place::Container { list, index });
            places
                .zip(items)
                .map(|(place, item)| Container::read(place, item))
        })
    }
}

impl<'a> Container<'a> {
    fn read(place: Place, item: &'a Field<view::Container<'a>>) -> Result<Self, Unreadable> {
        let Field::Present(object) = item else {
            return Err(Unreadable::ContainerNotAnObject { at: place });
        };
        let Some(name) = object.name.as_deref() else {
            return Err(Unreadable::NoName { at: place });
        };
        let memory = Memory::of(&object.resources, &place)?;
        let runs = match place {
            Place::Container {
                list: "initContainers",
                index,
            } if object.restart_policy.as_deref() == Some("Always") => Runs::Sidecar { index },
            Place::Container {
                list: "initContainers",
                index,
            } => Runs::Before { index },
            _ => Runs::Main,
        };
        let memory_resize = object
            .resize_policy
            .present()
            .into_iter()
            .flatten()
            .filter_map(Field::present)
            .find(|p| p.resource_name.as_deref() == Some("memory"))
            .map(|p| p.restart_policy.as_deref().unwrap_or(""));
        let holder = Holder {
            env: matches!(object.env, Field::Present(_)),
            resize_policy: matches!(object.resize_policy, Field::Present(_)),
            ..Holder::of_resources(&object.resources)
        };
        Ok(Container {
            place,
            name,
            memory,
            runs,
            memory_resize,
            env: &object.env,
            env_from: object.env_from.present().is_some_and(|n| n.0 > 0),
            holder,
        })
    }

    /// Its `env` entries that set GOMEMLIMIT or GOGC, with their index.
    pub(super) fn env(&self, target: &Target) -> Result<&'a [(usize, EnvVar<'a>)], Unreadable> {
        match self.env {
            Field::Absent | Field::Null => Ok(&[]),
            Field::Present(env) => Ok(env.watched.as_slice()),
            Field::Wrong => Err(Unreadable::EnvNotAnArray {
                target: target.clone(),
            }),
        }
    }
}

/// The first `env` entry named `name`, with its index.
pub(super) fn find_env<'a, 'de>(
    env: &'a [(usize, EnvVar<'de>)],
    name: &str,
) -> Option<(usize, &'a EnvVar<'de>)> {
    env.iter()
        .find(|(_, e)| e.name.as_deref() == Some(name))
        .map(|(i, e)| (*i, e))
}
