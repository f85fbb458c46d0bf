//! What the rules set on one target (the pod's `spec`, or a container), kept in one place:
//! the changes the webhook reports, the operations of its patch and the record of the
//! status annotation are all read from it. A pod of thousands of containers holds one
//! small edit per container, without a string of its own for a name or a quantity.

use compact_str::CompactString;

use super::read::{Holder, Place};
use super::{Action, Change, DOWNWARD, GomemlimitValue, Record, Target};

/// The fields set on one target.
#[derive(Debug)]
pub(super) struct Edit {
    pub(super) target: Target,
    pub(super) place: Place,
    /// What the target already holds, as the patch must add to it.
    pub(super) holder: Holder,
    /// `limits.memory` added where there was none.
    pub(super) limit: Option<CompactString>,
    /// `requests.memory` set.
    pub(super) request: Option<SetRequest>,
    pub(super) gomemlimit: Option<GomemlimitEdit>,
    /// `GOGC` added (with GOMEMLIMIT).
    pub(super) gogc: Option<CompactString>,
    /// For a GOMEMLIMIT taken from the pod limit, how (e.g. `200Mi - 100Mi (sidecar) =
    /// 104857600`); recorded with every literal, `None` included.
    pub(super) budget: Option<String>,
    /// `{resourceName: memory, restartPolicy: RestartContainer}` added to `resizePolicy`.
    pub(super) restart_on_memory_resize: bool,
}

/// `requests.memory` set to `to`, from what was written.
#[derive(Debug)]
pub(super) struct SetRequest {
    pub(super) from: Option<CompactString>,
    pub(super) to: CompactString,
}

/// What becomes of GOMEMLIMIT.
#[derive(Debug)]
pub(super) enum GomemlimitEdit {
    /// An env entry added.
    Added(GomemlimitValue),
    /// The value of the entry at `index`, a literal an earlier pass set, replaced.
    Updated {
        index: usize,
        from: CompactString,
        to: u64,
    },
}

impl Edit {
    /// Nothing set yet on `target`, at `place`.
    pub(super) fn new(target: Target, place: Place, holder: Holder) -> Self {
        Edit {
            target,
            place,
            holder,
            limit: None,
            request: None,
            gomemlimit: None,
            gogc: None,
            budget: None,
            restart_on_memory_resize: false,
        }
    }

    /// The changes, in the order the rules make them.
    pub(super) fn changes(&self) -> impl Iterator<Item = Change> + '_ {
        let text = |t: &CompactString| t.to_string();
        let actions = [
            self.limit.as_ref().map(|to| Action::SetLimit {
                from: None,
                to: text(to),
            }),
            self.request.as_ref().map(|set| Action::SetRequest {
                from: set.from.as_ref().map(text),
                to: text(&set.to),
            }),
            self.gomemlimit.as_ref().map(|edit| match edit {
                GomemlimitEdit::Added(value) => Action::SetGomemlimit(value.clone()),
                GomemlimitEdit::Updated { from, to, .. } => Action::UpdateGomemlimit {
                    from: text(from),
                    to: *to,
                },
            }),
            self.gogc.as_ref().map(|value| Action::SetGogc(text(value))),
            self.restart_on_memory_resize
                .then_some(Action::SetResizePolicy),
        ];
        actions.into_iter().flatten().map(|action| Change {
            target: self.target.clone(),
            action,
        })
    }

    /// What the status annotation records for the target: `previous`, what an earlier pass
    /// recorded, with the fields this edit sets.
    pub(super) fn record(&self, previous: Option<&Record>) -> Record {
        let mut record = previous.cloned().unwrap_or_default();
        if let Some(limit) = &self.limit {
            record.limit = Some(limit.to_string());
        }
        if let Some(set) = &self.request {
            record.request = Some(set.to.to_string());
        }
        match &self.gomemlimit {
            Some(GomemlimitEdit::Added(GomemlimitValue::Downward)) => {
                record.gomemlimit = Some(DOWNWARD.to_owned());
                record.percent = None;
            }
            Some(GomemlimitEdit::Added(GomemlimitValue::Literal { bytes, percent, .. })) => {
                record.gomemlimit = Some(bytes.to_string());
                record.percent = Some(*percent);
                record.budget.clone_from(&self.budget);
            }
            Some(GomemlimitEdit::Updated { to, .. }) => {
                record.gomemlimit = Some(to.to_string());
            }
            None => {}
        }
        if let Some(gogc) = &self.gogc {
            record.gogc = Some(gogc.to_string());
        }
        if self.restart_on_memory_resize {
            record.resize_policy = Some("RestartContainer".to_owned());
        }
        record
    }

    /// The name the status annotation knows a container by; `None` for the pod.
    pub(super) fn container(&self) -> Option<&str> {
        match &self.target {
            Target::Pod => None,
            Target::Container(name) => Some(name),
        }
    }
}
