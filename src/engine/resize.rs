//! In-place resizes (`UPDATE` of `pods/resize`, Kubernetes 1.35+). An environment variable
//! is resolved when a container starts, so after an in-place resize the Go runtime keeps
//! the GOMEMLIMIT it started with. A downward-API GOMEMLIMIT follows when the resize
//! restarts the container (`resizePolicy` memory `RestartContainer`, set at creation);
//! a literal cannot follow at all: a lower limit that leaves it above its percentage of
//! the new limit is refused, a higher one is allowed with a warning.

use serde_json::Value;

use super::read::{self, Container, Containers, Metadata, Runs};
use super::view::{self, GOMEMLIMIT};
use super::{DOWNWARD, Record, STATUS, Status, annotations};
use crate::policy::{Mode, Policy};
use crate::quantity::Quantity;
use crate::text::{WARNING, shorten};

/// What the webhook answers to a resize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResizeEvaluation {
    /// The resize is refused, with this message (never in audit).
    pub(crate) denied: Option<String>,
    pub(crate) warnings: Vec<String>,
}

impl ResizeEvaluation {
    fn allowed() -> Self {
        ResizeEvaluation {
            denied: None,
            warnings: Vec::new(),
        }
    }
}

/// Evaluates a resize of `old` into `new` in `mode`. Pods the webhook never mutated, pods
/// it cannot read and pods opted out pass without a word.
pub(crate) fn evaluate_resize(
    old: &Value,
    new: &Value,
    policy: &Policy,
    mode: Mode,
) -> ResizeEvaluation {
    let mut eval = ResizeEvaluation::allowed();
    let (old, new) = (view::of_value(old), view::of_value(new));
    let Ok(metadata) = Metadata::of(&new) else {
        return eval;
    };
    let Some(status) = recorded(&metadata) else {
        return eval;
    };
    if metadata.opted_out().is_some() {
        return eval;
    }
    let settings = annotations::Settings::read(&metadata.annotations, policy, mode == Mode::Audit);
    let (Ok(old_spec), Ok(new_spec)) = (read::spec(&old), read::spec(&new)) else {
        return eval;
    };
    let (Ok(before), Ok(after)) = (Containers::of(old_spec), Containers::of(new_spec)) else {
        return eval;
    };
    let before: Vec<_> = before.iter().collect();
    let mut denials = Vec::new();
    // An ordinary init container has run by then; it is not resized in place.
    for container in after
        .iter()
        .filter(|c| !matches!(c.runs, Runs::Before { .. }))
    {
        let (Some(record), Some(previous)) = (
            status.containers.get(container.name),
            before.iter().find(|c| c.name == container.name),
        ) else {
            continue;
        };
        let Some(change) = LimitChange::of(previous, &container) else {
            continue;
        };
        match check(&container, record, &change) {
            Verdict::Fine => {}
            Verdict::Warn(text) => eval.warnings.push(shorten(text, WARNING)),
            Verdict::Refuse(text) => denials.push(text),
        }
    }
    if denials.is_empty() {
        return eval;
    }
    let message = denials.join("; ");
    if settings.audit_only {
        eval.warnings
            .push(shorten(format!("would deny: {message}"), WARNING));
    } else {
        eval.denied = Some(message);
    }
    eval
}

/// What the status annotation recorded, if the webhook mutated the pod.
fn recorded(metadata: &Metadata<'_>) -> Option<Status> {
    serde_json::from_str(metadata.annotations.get(STATUS)?).ok()
}

/// A container's memory limit before and after the resize, when it changed.
struct LimitChange {
    old: Quantity,
    new: Quantity,
}

impl LimitChange {
    fn of(before: &Container<'_>, after: &Container<'_>) -> Option<Self> {
        let old = Quantity::parse(before.memory.limit.as_deref()?).ok()?;
        let new = Quantity::parse(after.memory.limit.as_deref()?).ok()?;
        (old.bytes() != new.bytes()).then_some(LimitChange { old, new })
    }
}

enum Verdict {
    Fine,
    Warn(String),
    Refuse(String),
}

/// The rule for one container whose limit changes.
fn check(container: &Container<'_>, record: &Record, change: &LimitChange) -> Verdict {
    let name = container.name;
    match (record.gomemlimit.as_deref(), record.percent) {
        (Some(DOWNWARD), _) if container.memory_resize == Some("RestartContainer") => Verdict::Fine,
        (Some(DOWNWARD), _) => Verdict::Warn(format!(
            "container {name:?}: GOMEMLIMIT stays at the old limit {} until the container \
             restarts (its resizePolicy does not restart it)",
            change.old.as_str()
        )),
        (Some(literal), Some(percent)) if current_literal(container) == Some(literal) => {
            let Ok(literal) = literal.parse::<u64>() else {
                return Verdict::Fine;
            };
            literal_rule(name, literal, percent, change)
        }
        // Not ours, or changed by the user since: theirs.
        _ => Verdict::Fine,
    }
}

/// A literal stays what it is: a lower limit must leave it within `percent` of the new
/// limit; a higher one leaves it behind.
fn literal_rule(name: &str, literal: u64, percent: u8, change: &LimitChange) -> Verdict {
    let new = change.new.bytes();
    if new > change.old.bytes() {
        return Verdict::Warn(format!(
            "container {name:?}: GOMEMLIMIT stays at {literal} ({percent}% of the old limit {}) \
             until the pod is recreated",
            change.old.as_str()
        ));
    }
    if change.new.percent_of_bytes(percent) >= literal {
        return Verdict::Fine;
    }
    let safe = smallest_safe_limit(literal, percent);
    Verdict::Refuse(format!(
        "container {name:?}: a memory limit of {} would leave GOMEMLIMIT={literal} above \
         {percent}% of it; the smallest limit that keeps it safe is {safe} ({}); recreate \
         the pod to lower GOMEMLIMIT",
        change.new.as_str(),
        in_mi(safe)
    ))
}

/// The smallest limit `b` with `floor(b × percent / 100) >= literal`.
fn smallest_safe_limit(literal: u64, percent: u8) -> u64 {
    (u128::from(literal) * 100).div_ceil(u128::from(percent)) as u64
}

/// `100Mi`, or the next whole Mi above: `101Mi`.
fn in_mi(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(1 << 20))
}

/// The container's GOMEMLIMIT value, when it is a literal.
fn current_literal<'a>(container: &Container<'a>) -> Option<&'a str> {
    let env = &container.env.present()?.watched;
    let (_, entry) = read::find_env(env, GOMEMLIMIT)?;
    entry.value.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_safe_limit_keeps_the_literal_within_its_percent() {
        for (literal, percent) in [(94_371_840, 90), (60_397_977, 90), (1, 50), (999, 99)] {
            let safe = smallest_safe_limit(literal, percent);
            let q = Quantity::parse(&safe.to_string()).unwrap();
            assert!(q.percent_of_bytes(percent) >= literal);
            let below = Quantity::parse(&(safe - 1).to_string()).unwrap();
            assert!(below.percent_of_bytes(percent) < literal);
        }
        assert_eq!(in_mi(100 << 20), "100Mi");
        assert_eq!(in_mi((100 << 20) + 1), "101Mi");
    }
}
