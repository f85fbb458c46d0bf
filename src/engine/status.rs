//! The status annotation as it will read: what an earlier pass recorded, with each edit's
//! fields over it. Written in the order of a sorted map, as it is made: a pod of thousands
//! of containers never holds the new annotation, as a map or as text.

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct};

use super::edit::Edit;
use super::{Record, Status};

/// The earlier status with the edits over it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Merged<'a> {
    pub(super) previous: &'a Status,
    pub(super) edits: &'a [Edit],
}

impl<'a> Merged<'a> {
    /// Whether the annotation reads otherwise than `previous`: some edit records what was
    /// not recorded.
    pub(super) fn changed(&self) -> bool {
        self.edits.iter().any(|edit| {
            let before = self.previous_of(edit);
            before != Some(&edit.record(before))
        })
    }

    fn previous_of(&self, edit: &Edit) -> Option<&'a Record> {
        match edit.container() {
            None => self.previous.pod.as_ref(),
            Some(name) => self.previous.containers.get(name),
        }
    }

    /// The record of the pod, if any.
    fn pod(&self) -> Option<Record> {
        match self.edits.iter().find(|edit| edit.container().is_none()) {
            Some(edit) => Some(edit.record(self.previous.pod.as_ref())),
            None => self.previous.pod.clone(),
        }
    }
}

/// Written as [`Status`] is, field for field.
impl Serialize for Merged<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut status = serializer.serialize_struct("Status", 2)?;
        let has_containers = !self.previous.containers.is_empty()
            || self.edits.iter().any(|edit| edit.container().is_some());
        if has_containers {
            status.serialize_field("containers", &Containers(*self))?;
        }
        if let Some(pod) = self.pod() {
            status.serialize_field("pod", &pod)?;
        }
        status.end()
    }
}

/// The containers' records, by name: the earlier ones and the edited ones, merged in order.
struct Containers<'a>(Merged<'a>);

impl Serialize for Containers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Merged { previous, edits } = self.0;
        let mut edited: Vec<(&str, &Edit)> = edits
            .iter()
            .filter_map(|edit| Some((edit.container()?, edit)))
            .collect();
        edited.sort_unstable_by_key(|(name, _)| *name);
        let mut map = serializer.serialize_map(None)?;
        let mut earlier = previous.containers.iter().peekable();
        for (name, edit) in edited {
            while let Some((before, record)) = earlier.next_if(|(before, _)| before.as_str() < name)
            {
                map.serialize_entry(before, record)?;
            }
            let record = earlier.next_if(|(before, _)| before.as_str() == name);
            map.serialize_entry(name, &edit.record(record.map(|(_, r)| r)))?;
        }
        for (before, record) in earlier {
            map.serialize_entry(before, record)?;
        }
        map.end()
    }
}
