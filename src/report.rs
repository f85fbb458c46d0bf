//! What the webhook does, or would do, in words: the one-line description of a change that
//! audit gives as a warning, the compact summary of the audit annotation, and the reports
//! of the `mutate` and `audit` commands (the `audit` table and JSON, `mutate`'s messages).

use std::fmt::{self, Write as _};

use serde::Serialize;
use serde_json::json;

use crate::engine::{
    Action, Change, DOWNWARD, Decision, Evaluation, GomemlimitValue, SkipReason, Target,
};
use crate::text::{Limit, WARNING, shorten};

/// Cap on the audit summary, an annotation that lands in every audit event.
const SUMMARY: Limit = Limit::Bytes(1024);

/// The audit warning for a change, e.g.
/// `container "app": would set requests.memory to 512Mi (was 256Mi)`.
pub(crate) fn describe(change: &Change) -> String {
    let target = &change.target;
    let field = |name: &str| match target {
        Target::Pod => format!("spec.resources.{name}"),
        Target::Container(_) => name.to_owned(),
    };
    let was = |from: &Option<String>| from.as_deref().unwrap_or("unset").to_owned();
    let text = match &change.action {
        Action::SetRequest { from, to } => format!(
            "{target}: would set {} to {to} (was {})",
            field("requests.memory"),
            was(from)
        ),
        Action::SetLimit { from: None, to } => {
            format!("{target}: would add a memory limit of {to} where there was none")
        }
        Action::SetLimit { from, to } => format!(
            "{target}: would set {} to {to} (was {})",
            field("limits.memory"),
            was(from)
        ),
        Action::SetGomemlimit(GomemlimitValue::Downward) => {
            format!("{target}: would set env GOMEMLIMIT from limits.memory (downward API)")
        }
        Action::SetGomemlimit(GomemlimitValue::Literal { bytes, percent, of }) => {
            format!("{target}: would set env GOMEMLIMIT={bytes} ({percent}% of {of})")
        }
        Action::UpdateGomemlimit { from, to } => {
            format!("{target}: would update env GOMEMLIMIT to {to} (was {from}) for the new limit")
        }
        Action::SetGogc(v) => format!("{target}: would set env GOGC={v}"),
        Action::SetResizePolicy => {
            format!("{target}: would set resizePolicy memory RestartContainer")
        }
    };
    shorten(text, WARNING)
}

/// The warnings the webhook gives for a pod it evaluated: the engine's, then the audit's.
pub(crate) fn webhook_warnings(eval: &Evaluation) -> Vec<String> {
    let mut warnings = eval.warnings.clone();
    warnings.extend(audit_warnings(eval));
    warnings
}

/// In audit, one warning per change the webhook would make and one for the denial it
/// would give; nothing in enforce.
fn audit_warnings(eval: &Evaluation) -> Vec<String> {
    if !eval.audit_only {
        return Vec::new();
    }
    let mut warnings: Vec<String> = eval.changes().map(|c| describe(&c)).collect();
    if let Decision::Denied(message) = &eval.decision {
        warnings.push(shorten(format!("would deny: {message}"), WARNING));
    }
    warnings
}

/// The changes in the compact form of the audit annotation, e.g.
/// `app: requests.memory 256Mi->512Mi, app: GOMEMLIMIT=limits.memory`.
pub(crate) fn summary(changes: impl IntoIterator<Item = Change>) -> String {
    let parts: Vec<String> = changes.into_iter().map(|c| summarize(&c)).collect();
    summary_text(&parts.join(", "))
}

/// `text` cut to the size of an audit annotation.
pub(crate) fn summary_text(text: &str) -> String {
    shorten(text.to_owned(), SUMMARY)
}

fn summarize(change: &Change) -> String {
    let who = match &change.target {
        Target::Pod => "pod",
        Target::Container(name) => name,
    };
    let unset = |from: &Option<String>| from.as_deref().unwrap_or("unset").to_owned();
    let what = match &change.action {
        Action::SetRequest { from, to } => format!("requests.memory {}->{to}", unset(from)),
        Action::SetLimit { from, to } => format!("limits.memory {}->{to}", unset(from)),
        Action::SetGomemlimit(GomemlimitValue::Downward) => "GOMEMLIMIT=limits.memory".into(),
        Action::SetGomemlimit(GomemlimitValue::Literal { bytes, .. }) => {
            format!("GOMEMLIMIT={bytes}")
        }
        Action::UpdateGomemlimit { from, to } => format!("GOMEMLIMIT {from}->{to}"),
        Action::SetGogc(v) => format!("GOGC={v}"),
        Action::SetResizePolicy => "resizePolicy memory=RestartContainer".into(),
    };
    format!("{who}: {what}")
}

/// The report for one object: a Pod, or a workload by its pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectReport {
    pub(crate) kind: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// Live audit: how many pods the row stands for.
    pub pods: Option<usize>,
    pub(crate) containers: Vec<ContainerReport>,
    /// What the user should know: the engine's warnings, and why an object was not read.
    pub(crate) warnings: Vec<String>,
    /// In audit, the webhook's warning for each change (see [`describe`]) and its denial.
    pub(crate) audit_warnings: Vec<String>,
    /// What enforce would deny, if anything.
    pub(crate) denied: Option<String>,
    /// The webhook only reports on this object (the policy's `mode: audit`, or the pod's
    /// `gomemlimit.io/mode: audit`): its changes and denial are what enforce would do, and
    /// count as neither.
    pub(crate) audit_only: bool,
}

impl ObjectReport {
    /// The report of `kind` `namespace`/`name`, whose pod (template) evaluated to `eval`.
    pub(crate) fn evaluated(kind: &str, namespace: &str, name: &str, eval: &Evaluation) -> Self {
        let mut report = ObjectReport::unevaluated(kind, namespace, name, eval.warnings.clone());
        report.containers = ContainerReport::of(eval.changes());
        match &eval.decision {
            Decision::Skipped(SkipReason::NotUnderstood(reason)) => report.warnings.push(format!(
                "cannot read the pod template ({reason}); left unchanged"
            )),
            Decision::Denied(message) => report.denied = Some(message.clone()),
            Decision::Evaluated | Decision::Skipped(_) => {}
        }
        if matches!(eval.decision, Decision::Evaluated | Decision::Denied(_)) {
            report.audit_only = eval.audit_only;
        }
        report.audit_warnings = audit_warnings(eval);
        report
    }

    /// The report of an object the engine did not evaluate, with the reasons.
    pub(crate) fn unevaluated(
        kind: &str,
        namespace: &str,
        name: &str,
        warnings: Vec<String>,
    ) -> Self {
        ObjectReport {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            pods: None,
            containers: Vec::new(),
            warnings,
            audit_warnings: Vec::new(),
            denied: None,
            audit_only: false,
        }
    }

    /// Whether the webhook would change this object.
    pub(crate) fn would_change(&self) -> bool {
        !self.audit_only && !self.containers.is_empty()
    }

    /// Whether enforce would change or deny this object, audit only or not.
    pub(crate) fn enforce_would_act(&self) -> bool {
        !self.containers.is_empty() || self.denied.is_some()
    }

    /// Whether the webhook would deny this object.
    pub(crate) fn would_deny(&self) -> bool {
        !self.audit_only && self.denied.is_some()
    }

    /// How messages name the object: `Deployment shop/sales-api`.
    fn who(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// Every warning, as the webhook would give them.
    fn all_warnings(&self) -> impl Iterator<Item = &str> {
        self.warnings
            .iter()
            .chain(&self.audit_warnings)
            .map(String::as_str)
    }
}

/// A current → proposed pair.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Proposal {
    current: Option<String>,
    proposed: String,
}

impl Proposal {
    fn new(current: Option<&str>, proposed: &str) -> Self {
        Proposal {
            current: current.map(str::to_owned),
            proposed: proposed.to_owned(),
        }
    }
}

/// What would change in one container (or, as `(pod)`, in pod-level resources).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerReport {
    container: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_request: Option<Proposal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_limit: Option<Proposal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gomemlimit: Option<Proposal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gogc: Option<Proposal>,
    /// The memory entry of `resizePolicy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    resize_policy: Option<Proposal>,
}

impl ContainerReport {
    /// The changes grouped by container, in the order the containers first appear.
    fn of(changes: impl IntoIterator<Item = Change>) -> Vec<ContainerReport> {
        let mut out: Vec<ContainerReport> = Vec::new();
        for change in changes {
            let name = match &change.target {
                Target::Pod => "(pod)",
                Target::Container(name) => name,
            };
            let index = match out.iter().position(|r| r.container == name) {
                Some(index) => index,
                None => {
                    let container = name.to_owned();
                    out.push(ContainerReport {
                        container,
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            out[index].add(&change.action);
        }
        out
    }

    fn add(&mut self, action: &Action) {
        match action {
            Action::SetRequest { from, to } => {
                self.memory_request = Some(Proposal::new(from.as_deref(), to));
            }
            Action::SetLimit { from, to } => {
                self.memory_limit = Some(Proposal::new(from.as_deref(), to));
            }
            Action::SetGomemlimit(GomemlimitValue::Downward) => {
                self.gomemlimit = Some(Proposal::new(None, DOWNWARD));
            }
            Action::SetGomemlimit(GomemlimitValue::Literal { bytes, .. }) => {
                self.gomemlimit = Some(Proposal::new(None, &bytes.to_string()));
            }
            Action::UpdateGomemlimit { from, to } => {
                self.gomemlimit = Some(Proposal::new(Some(from), &to.to_string()));
            }
            Action::SetGogc(v) => self.gogc = Some(Proposal::new(None, v)),
            Action::SetResizePolicy => {
                self.resize_policy = Some(Proposal::new(None, "RestartContainer"));
            }
        }
    }
}

/// `mutate`'s messages on standard error: each object's warnings, then its denial.
pub(crate) fn messages(reports: &[ObjectReport]) -> String {
    let mut out = String::new();
    for report in reports {
        let who = report.who();
        for warning in report.all_warnings() {
            let _ = writeln!(out, "warning: {who}: {warning}");
        }
        if let Some(message) = report.denied.as_ref().filter(|_| report.would_deny()) {
            let _ = writeln!(out, "denied: {who}: {message}");
        }
    }
    out
}

/// The audit as a table: one row per container change, then each object's denial and
/// warnings (its changes are in the rows already), then a count.
pub(crate) fn table(reports: &[ObjectReport]) -> String {
    let live = reports.iter().any(|r| r.pods.is_some());
    let mut rows = vec![header(live)];
    for report in reports {
        for container in &report.containers {
            rows.push(row(report, container, live));
        }
    }
    let mut out = String::new();
    if rows.len() > 1 {
        align(&rows, &mut out);
    }
    for report in reports {
        let who = report.who();
        match (&report.denied, report.audit_only) {
            (Some(denied), false) => {
                let _ = writeln!(out, "DENIED {who}: {denied}");
            }
            (Some(denied), true) => {
                let _ = writeln!(out, "AUDIT ONLY {who}: enforce would deny: {denied}");
            }
            (None, true) if !report.containers.is_empty() => {
                let _ = writeln!(
                    out,
                    "AUDIT ONLY {who}: the rows show what enforce would do; the webhook only warns"
                );
            }
            (None, _) => {}
        }
        for warning in &report.warnings {
            let _ = writeln!(out, "warning: {who}: {warning}");
        }
    }
    let _ = writeln!(out, "{}", Counts::of(reports));
    out
}

/// How many objects would change, be denied, or are audit only.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    objects: usize,
    would_change: usize,
    would_be_denied: usize,
    audit_only: usize,
}

impl Counts {
    fn of(reports: &[ObjectReport]) -> Self {
        let count = |f: fn(&ObjectReport) -> bool| reports.iter().filter(|r| f(r)).count();
        Counts {
            objects: reports.len(),
            would_change: count(ObjectReport::would_change),
            would_be_denied: count(ObjectReport::would_deny),
            audit_only: count(|r| r.audit_only),
        }
    }
}

/// `2 of 5 objects would change, 1 would be denied, 1 audit only`.
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} objects would change",
            self.would_change, self.objects
        )?;
        if self.would_be_denied > 0 {
            write!(f, ", {} would be denied", self.would_be_denied)?;
        }
        if self.audit_only > 0 {
            write!(f, ", {} audit only", self.audit_only)?;
        }
        Ok(())
    }
}

fn header(live: bool) -> Vec<String> {
    ["NAMESPACE", "KIND", "NAME"]
        .into_iter()
        .chain(live.then_some("PODS"))
        .chain([
            "CONTAINER",
            "REQUEST",
            "LIMIT",
            "GOMEMLIMIT",
            "GOGC",
            "RESIZE",
        ])
        .map(str::to_owned)
        .collect()
}

fn row(report: &ObjectReport, container: &ContainerReport, live: bool) -> Vec<String> {
    let cell = |p: &Option<Proposal>| match p {
        None => "-".to_owned(),
        Some(Proposal {
            current: Some(current),
            proposed,
        }) => format!("{current} -> {proposed}"),
        Some(Proposal {
            current: None,
            proposed,
        }) => proposed.clone(),
    };
    // A request or limit set where there was none shows as `- -> 90Mi`: a limit added
    // from a request is the change most likely to surprise.
    let resource = |p: &Option<Proposal>| match p {
        Some(Proposal {
            current: None,
            proposed,
        }) => format!("- -> {proposed}"),
        other => cell(other),
    };
    let mut row = vec![
        report.namespace.clone(),
        report.kind.clone(),
        report.name.clone(),
    ];
    if live {
        row.push(report.pods.map_or("-".to_owned(), |n| n.to_string()));
    }
    row.extend([
        container.container.clone(),
        resource(&container.memory_request),
        resource(&container.memory_limit),
        cell(&container.gomemlimit),
        cell(&container.gogc),
        cell(&container.resize_policy),
    ]);
    row
}

/// The rows as left-aligned columns two spaces apart, without trailing blanks.
fn align(rows: &[Vec<String>], out: &mut String) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
}

/// The audit as JSON for machines: `{"objects": [...], "summary": {...}}`, where an
/// object's `warnings` are all the warnings the webhook would give.
pub(crate) fn json(reports: &[ObjectReport]) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Object<'a> {
        kind: &'a str,
        namespace: &'a str,
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pods: Option<usize>,
        containers: &'a [ContainerReport],
        warnings: Vec<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        denied: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        audit_only: bool,
    }
    let objects: Vec<Object<'_>> = reports
        .iter()
        .map(|r| Object {
            kind: &r.kind,
            namespace: &r.namespace,
            name: &r.name,
            pods: r.pods,
            containers: &r.containers,
            warnings: r.all_warnings().collect(),
            denied: r.denied.as_deref(),
            audit_only: r.audit_only,
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&json!({
        "objects": objects,
        "summary": Counts::of(reports),
    }))
    .expect("reports serialize");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(target: Target, action: Action) -> Change {
        Change { target, action }
    }

    #[test]
    fn names_pod_level_fields_in_full() {
        let set = Action::SetRequest {
            from: None,
            to: "1Gi".into(),
        };
        assert_eq!(
            describe(&change(Target::Pod, set.clone())),
            "pod: would set spec.resources.requests.memory to 1Gi (was unset)"
        );
        assert_eq!(
            summary([change(Target::Pod, set)]),
            "pod: requests.memory unset->1Gi"
        );
    }

    #[test]
    fn says_when_a_limit_is_added_where_there_was_none() {
        let set = Action::SetLimit {
            from: None,
            to: "1Gi".into(),
        };
        assert_eq!(
            describe(&change(Target::Container("app".into()), set.clone())),
            "container \"app\": would add a memory limit of 1Gi where there was none"
        );
        assert_eq!(
            summary([change(Target::Pod, set)]),
            "pod: limits.memory unset->1Gi"
        );
    }

    #[test]
    fn caps_the_summary_at_1024_bytes() {
        let gogc = |i: usize| {
            change(
                Target::Container(format!("c{i}").into()),
                Action::SetGogc("off".into()),
            )
        };
        let changes: Vec<Change> = (0..200).map(gogc).collect();
        let text = summary(changes);
        assert_eq!(text.len(), 1024);
        assert!(text.starts_with("c0: GOGC=off, c1: GOGC=off") && text.ends_with("..."));
    }
}
