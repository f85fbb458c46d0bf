//! The policy engine: a pure function from a Pod (as JSON) and a [`Policy`] to the changes
//! it needs, the warnings to give and a decision.
//!
//! `evaluate_as` reads the pod, applies the rules to its pod-level resources and then to
//! each container in pod order, and plans an edit for every field it sets. Once the pod is
//! known not to be denied, the planned edits become a JSONPatch of `add` and `replace`
//! operations on the fields the webhook owns: memory requests and limits, two env entries
//! and one annotation. The pod is only read, never re-serialized, so every other field,
//! including fields newer than any Kubernetes client library, stays as it was sent.
//!
//! The webhook (`/mutate` and `/audit`), the offline `mutate` and `audit` commands and the
//! benchmarks all call `evaluate_as`; how its result is shown to people is the business
//! of `report`.

mod annotations;
mod budget;
mod edit;
mod patch;
mod plan;
mod read;
mod resize;
mod status;
#[cfg(test)]
mod tests;
mod view;

use std::collections::BTreeMap;
use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{Mode, Policy};
use crate::text::{WARNING, shorten};

pub(crate) use patch::Patch;
pub(crate) use read::Unreadable;
pub(crate) use resize::{ResizeEvaluation, evaluate_resize};
pub(crate) use view::{Field, Pod as PodView, Skip};

/// Label or annotation that opts a pod out (`disabled`).
pub(crate) const INJECT: &str = "gomemlimit.io/inject";
/// Annotation recording what the webhook set.
pub const STATUS: &str = "gomemlimit.io/status";
/// Per-pod percentage override.
pub(crate) const PERCENT: &str = "gomemlimit.io/percent";
/// Per-pod GOGC override.
pub(crate) const GOGC_ANNOTATION: &str = "gomemlimit.io/gogc";
/// Per-pod container exclusions.
pub(crate) const EXCLUDE_CONTAINERS: &str = "gomemlimit.io/exclude-containers";
/// Per-pod mode (`audit` only: a pod can weaken enforcement, never strengthen it).
pub(crate) const MODE: &str = "gomemlimit.io/mode";
/// Set by the kubelet on mirror pods of static pods; the API server ignores changes to them.
pub(crate) const MIRROR: &str = "kubernetes.io/config.mirror";

/// How a downward-API GOMEMLIMIT is written in the status annotation and in reports.
pub(crate) const DOWNWARD: &str = "limits.memory";

/// The result of evaluating one pod.
#[derive(Debug)]
pub(crate) struct Evaluation {
    pub(crate) decision: Decision,
    /// True when the mode asked for, or the pod's `gomemlimit.io/mode`, is audit: the
    /// decision and changes are what enforce would do; they are reported, never applied,
    /// and a denial becomes a warning.
    pub(crate) audit_only: bool,
    /// Things the user should know: skipped containers, `envFrom`, ignored annotations.
    pub(crate) warnings: Vec<String>,
    /// One entry per container event, for metrics.
    pub(crate) events: Vec<ContainerEvent>,
    /// The JSONPatch that makes the changes (empty when there are none). Its operations
    /// only add or replace the fields the webhook owns, so it applies to the evaluated pod
    /// and keeps every other field, whatever its schema version.
    pub(crate) patch: Patch,
}

impl Evaluation {
    /// What the webhook sets (or, in audit, would set), in pod order.
    pub(crate) fn changes(&self) -> impl Iterator<Item = Change> + '_ {
        self.patch.edits().iter().flat_map(edit::Edit::changes)
    }

    /// Whether the webhook sets (or would set) anything.
    pub(crate) fn has_changes(&self) -> bool {
        !self.patch.edits().is_empty()
    }

    /// The pod with the patch applied.
    pub(crate) fn patched(&self, pod: &Value) -> Value {
        let mut text = Vec::new();
        self.patch
            .write_json(&mut text)
            .expect("operations are written");
        let patch: json_patch::Patch =
            serde_json::from_slice(&text).expect("operations are JSONPatch");
        let mut out = pod.clone();
        json_patch::patch(&mut out, &patch).expect("the engine's patch applies to its pod");
        out
    }

    /// Whether the changes are to be applied: the pod was evaluated and not in audit.
    pub(crate) fn applies(&self) -> bool {
        self.decision == Decision::Evaluated && !self.audit_only
    }

    /// Rejects the pod: nothing is changed, and only the denials are counted.
    fn deny(&mut self, message: String) {
        self.decision = Decision::Denied(message);
        self.patch.clear();
        self.events.retain(|event| *event == ContainerEvent::Denied);
    }
}

/// What to do with the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The pod was evaluated; `changes` may be empty.
    Evaluated,
    /// The pod is not ours to change.
    Skipped(SkipReason),
    /// An explicit policy rejects the pod: what enforce does; in audit, a warning.
    Denied(String),
}

/// Why a pod was left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SkipReason {
    /// Labelled or annotated `gomemlimit.io/inject: disabled`.
    Disabled,
    /// A mirror pod; the kubelet owns it.
    Mirror,
    /// The object is not a pod we can read; it is admitted unchanged.
    NotUnderstood(Unreadable),
}

/// Something that happened to one container (or the pod's resources), counted by the
/// `containers_total` metric under [`ContainerEvent::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ContainerEvent {
    SetRequest,
    SetLimit,
    InjectGomemlimit,
    UpdateGomemlimit,
    InjectGogc,
    SetResizePolicy,
    /// The container sets GOMEMLIMIT itself, and that wins.
    KeptGomemlimit,
    /// Excluded by the policy or the pod's annotation.
    Excluded,
    /// Left alone, with a warning.
    Skipped,
    /// Denied by `missingLimit: deny`.
    Denied,
}

impl ContainerEvent {
    /// Every event, in the order the metrics list them.
    pub(crate) const ALL: [ContainerEvent; 10] = [
        ContainerEvent::SetRequest,
        ContainerEvent::SetLimit,
        ContainerEvent::InjectGomemlimit,
        ContainerEvent::UpdateGomemlimit,
        ContainerEvent::InjectGogc,
        ContainerEvent::SetResizePolicy,
        ContainerEvent::KeptGomemlimit,
        ContainerEvent::Excluded,
        ContainerEvent::Skipped,
        ContainerEvent::Denied,
    ];

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ContainerEvent::SetRequest => "set_request",
            ContainerEvent::SetLimit => "set_limit",
            ContainerEvent::InjectGomemlimit => "inject_gomemlimit",
            ContainerEvent::UpdateGomemlimit => "update_gomemlimit",
            ContainerEvent::InjectGogc => "inject_gogc",
            ContainerEvent::SetResizePolicy => "set_resize_policy",
            ContainerEvent::KeptGomemlimit => "kept_gomemlimit",
            ContainerEvent::Excluded => "excluded",
            ContainerEvent::Skipped => "skipped",
            ContainerEvent::Denied => "denied",
        }
    }
}

/// What a change applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Pod,
    Container(CompactString),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pod => f.write_str("pod"),
            Target::Container(name) => write!(f, "container {name:?}"),
        }
    }
}

/// How GOMEMLIMIT gets its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GomemlimitValue {
    /// `valueFrom.resourceFieldRef` on `limits.memory`.
    Downward,
    /// A byte count: `percent`% of `of`.
    Literal {
        bytes: u64,
        percent: u8,
        of: CompactString,
    },
}

/// One field the webhook sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    SetRequest {
        from: Option<String>,
        to: String,
    },
    SetLimit {
        from: Option<String>,
        to: String,
    },
    SetGomemlimit(GomemlimitValue),
    UpdateGomemlimit {
        from: String,
        to: u64,
    },
    SetGogc(String),
    /// `resizePolicy` memory: `RestartContainer`.
    SetResizePolicy,
}

/// A change to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) target: Target,
    pub(crate) action: Action,
}

/// What the status annotation records, per container and for the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Status {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) containers: BTreeMap<String, Record>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pod: Option<Record>,
}

/// The fields set on one container (or the pod), as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<String>,
    /// [`DOWNWARD`] for the downward API, else the literal byte count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gomemlimit: Option<String>,
    /// The percentage a literal was computed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) percent: Option<u8>,
    /// For a container without a limit of its own, what is left of the pod limit, e.g.
    /// `200Mi - 100Mi (sidecar) = 104857600`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) budget: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gogc: Option<String>,
    /// `RestartContainer` when the webhook set the memory `resizePolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resize_policy: Option<String>,
}

/// Evaluates one pod in `mode`: the policy's own, or audit for the `/audit` endpoint and
/// `audit` command. Whether the result is audit only is decided here, once: in audit, the
/// changes are reported and explicit denials become warnings.
pub(crate) fn evaluate_as(pod: &Value, policy: &Policy, mode: Mode) -> Evaluation {
    evaluate_view(&view::of_value(pod), policy, mode)
}

/// [`evaluate_as`] on the pod as read straight from a request's bytes.
pub(crate) fn evaluate_view(pod: &Field<PodView<'_>>, policy: &Policy, mode: Mode) -> Evaluation {
    let mut eval = Evaluation {
        decision: Decision::Evaluated,
        audit_only: mode == Mode::Audit,
        warnings: Vec::new(),
        events: Vec::new(),
        patch: Patch::default(),
    };
    if let Err(reason) = evaluate_into(pod, policy, &mut eval) {
        // The warnings given so far are still true of the pod, and stay.
        eval.decision = Decision::Skipped(SkipReason::NotUnderstood(reason));
        eval.events.clear();
        eval.patch.clear();
    }
    eval
}

/// The steps of an evaluation, in the order the rules apply. Warnings and changes land in
/// `eval` as they are found; a pod that turns out to be unreadable stops here.
fn evaluate_into(
    pod: &Field<PodView<'_>>,
    policy: &Policy,
    eval: &mut Evaluation,
) -> Result<(), Unreadable> {
    let metadata = read::Metadata::of(pod)?;
    if let Some(reason) = metadata.opted_out() {
        eval.decision = Decision::Skipped(reason);
        return Ok(());
    }
    let settings = annotations::Settings::read(&metadata.annotations, policy, eval.audit_only);
    eval.audit_only = settings.audit_only;
    // What enforce would do is decided the same way in audit: an invalid annotation or
    // `missingLimit: deny` denies the pod, and nothing it would not change is previewed.
    // Whoever answers in audit turns the denial into a warning.
    if !settings.invalid.is_empty() {
        eval.decision = Decision::Denied(settings.invalid.join("; "));
        return Ok(());
    }
    let spec = read::spec(pod)?;
    let previous = previous_status(&metadata, &mut eval.warnings);
    let plan = plan::Planner::new(eval, policy, &settings, &previous).run(spec)?;
    if !plan.denials.is_empty() {
        eval.deny(plan.denials.join("; "));
        return Ok(());
    }
    eval.patch = Patch::new(metadata.shape, plan.edits, previous);
    Ok(())
}

/// What an earlier pass recorded in the status annotation; an unreadable one is ignored,
/// with a warning.
fn previous_status(metadata: &read::Metadata<'_>, warnings: &mut Vec<String>) -> Status {
    let Some(text) = metadata.annotations.get(STATUS) else {
        return Status::default();
    };
    serde_json::from_str(text).unwrap_or_else(|_| {
        warnings.push(shorten(
            format!("ignoring unreadable {STATUS} annotation"),
            WARNING,
        ));
        Status::default()
    })
}
