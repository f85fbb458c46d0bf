//! The rules, applied to one target at a time: first memory request = limit, then
//! GOMEMLIMIT and GOGC. Every rule plans the edits it needs and records what it did (a
//! change, a warning, an event) in the evaluation as it goes.

use std::cmp::Ordering;
use std::fmt;

use compact_str::{CompactString, ToCompactString};

use super::annotations::Settings;
use super::budget::{self, Budget};
use super::edit::{Edit, GomemlimitEdit, SetRequest};
use super::read::{
    self, Container, Containers, Holder, Memory, Place, Quantities, Runs, Unreadable,
};
use super::view::{self, EnvVar, GOGC, GOMEMLIMIT};
use super::{ContainerEvent, DOWNWARD, Evaluation, GomemlimitValue, Record, Status, Target};
use crate::policy::{Gogc, MissingLimit, Policy};
use crate::quantity::Quantity;
use crate::text::{WARNING, shorten};

/// What the rules decided, besides what they recorded in the evaluation.
pub(super) struct Plan {
    /// One message per container that `missingLimit: deny` rejects.
    pub(super) denials: Vec<String>,
    /// The edits, one per target that changes, in the order the rules apply.
    pub(super) edits: Vec<Edit>,
}

/// A target, where its fields sit and what holds them.
struct Subject {
    target: Target,
    /// Where its fields sit.
    at: Place,
    holder: Holder,
}

/// The memory the Go runtime of a container gets.
struct RuntimeMemory {
    limit: Quantity,
    /// Taken from the pod limit (how, e.g. `200Mi - 100Mi (sidecar) = 104857600`): the
    /// container has no limit the downward API could refer to, so GOMEMLIMIT is always a
    /// literal.
    budget: Option<String>,
}

/// Applies the rules to a pod, recording into its evaluation.
pub(super) struct Planner<'a> {
    eval: &'a mut Evaluation,
    policy: &'a Policy,
    settings: &'a Settings<'a>,
    /// What an earlier pass recorded.
    previous: &'a Status,
    /// The pod's `restartPolicy` is `Never`.
    restart_never: bool,
    plan: Plan,
}

impl<'a> Planner<'a> {
    pub(super) fn new(
        eval: &'a mut Evaluation,
        policy: &'a Policy,
        settings: &'a Settings<'a>,
        previous: &'a Status,
    ) -> Self {
        let plan = Plan {
            denials: Vec::new(),
            edits: Vec::new(),
        };
        Planner {
            eval,
            policy,
            settings,
            previous,
            restart_never: false,
            plan,
        }
    }

    /// Applies the rules to the pod-level resources, then to every container in pod order.
    pub(super) fn run(mut self, spec: &view::Spec<'_>) -> Result<Plan, Unreadable> {
        self.restart_never = spec.restart_policy.as_deref() == Some("Never");
        // Pod-level resources (Kubernetes 1.34+) keep request = limit too, and the pod limit
        // is the budget of containers that have no limit of their own.
        let pod_limit = self.pod_level(spec)?;
        let containers = Containers::of(spec)?;
        // One edit per container at most (the pod's is made): reserved at once, so that
        // thousands of containers do not grow the list by doubling it.
        self.plan.edits.reserve_exact(containers.len());
        for (i, container) in containers.iter().enumerate() {
            if self.settings.excluded.contains(container.name) {
                self.eval.events.push(ContainerEvent::Excluded);
                continue;
            }
            let budget = || budget::of(pod_limit.as_ref(), containers.iter(), &container, i);
            self.container(&container, budget)?;
        }
        Ok(self.plan)
    }

    /// Rule 1 for pod-level resources; returns the pod's memory limit, if any.
    fn pod_level(&mut self, spec: &view::Spec<'_>) -> Result<Option<Quantity>, Unreadable> {
        let memory = Memory::of(&spec.resources, &Place::Spec)?;
        if memory.limit.is_none() && memory.request.is_none() {
            return Ok(None);
        }
        let pod = Subject {
            target: Target::Pod,
            at: Place::Spec,
            holder: Holder::of_resources(&spec.resources),
        };
        Ok(self.request_equals_limit(&pod, &memory))
    }

    fn container(
        &mut self,
        container: &Container<'_>,
        budget: impl FnOnce() -> Budget,
    ) -> Result<(), Unreadable> {
        let subject = Subject {
            target: Target::Container(container.name.to_compact_string()),
            at: container.place.clone(),
            holder: container.holder,
        };
        match self.runtime_memory(&subject, &container.memory, budget)? {
            Some(memory) => self.environment(&subject, &memory, container),
            None => Ok(()),
        }
    }

    /// The memory the container's Go runtime gets: its own limit (rule 1 applied), what is
    /// left of the pod limit, or what `missingLimit` says. `None` when the container is left
    /// alone.
    fn runtime_memory(
        &mut self,
        subject: &Subject,
        memory: &Memory,
        budget: impl FnOnce() -> Budget,
    ) -> Result<Option<RuntimeMemory>, Unreadable> {
        if memory.limit.is_some() {
            return Ok(self.own_limit(subject, memory));
        }
        match budget() {
            Budget::NoPodLimit if memory.request.is_some() => Ok(self.own_limit(subject, memory)),
            Budget::NoPodLimit => self.missing_limit(subject),
            Budget::Left { bytes, arithmetic } => {
                let limit = Quantity::parse(&bytes.to_string()).expect("a byte count parses");
                let budget = Some(arithmetic);
                Ok(Some(RuntimeMemory { limit, budget }))
            }
            Budget::Nothing(why) => {
                self.skip(&subject.target, why);
                Ok(None)
            }
        }
    }

    /// Rule 1 on the container's own request and limit.
    fn own_limit(&mut self, subject: &Subject, memory: &Memory) -> Option<RuntimeMemory> {
        let limit = self.request_equals_limit(subject, memory)?;
        Some(RuntimeMemory {
            limit,
            budget: None,
        })
    }

    /// A container with neither a memory request nor a limit, in a pod without a limit:
    /// the `missingLimit` policy decides.
    fn missing_limit(&mut self, subject: &Subject) -> Result<Option<RuntimeMemory>, Unreadable> {
        match self.policy.missing_limit {
            MissingLimit::Skip => {
                let text = "has no memory request or limit; left unchanged";
                self.skip(&subject.target, text);
                Ok(None)
            }
            MissingLimit::Deny => {
                self.plan.denials.push(format!(
                    "{} has no memory limit (policy missingLimit: deny); set resources.limits.memory",
                    subject.target
                ));
                self.eval.events.push(ContainerEvent::Denied);
                Ok(None)
            }
            MissingLimit::Default => {
                let default = self.policy.default_memory.clone();
                let default = default.ok_or(Unreadable::NoDefaultMemory)?;
                self.set_limit(subject, &default);
                self.set_request(subject, None, &default);
                Ok(Some(RuntimeMemory {
                    limit: default,
                    budget: None,
                }))
            }
        }
    }

    /// Rule 1, memory request = limit. Returns the limit in force, or `None` when the
    /// target is left alone (with a warning).
    fn request_equals_limit(&mut self, subject: &Subject, written: &Memory) -> Option<Quantity> {
        let Quantities { limit, request } = match written.parse() {
            Ok(parsed) => parsed,
            Err(message) => {
                self.skip(&subject.target, message);
                return None;
            }
        };
        if limit.as_ref().is_some_and(Quantity::is_zero) {
            self.skip(&subject.target, "memory limit is zero; left unchanged");
            return None;
        }
        match (limit, request) {
            (Some(limit), request) => self.request_to_limit(subject, written, limit, request),
            (None, Some(request)) if request.is_zero() => {
                let text = "memory request is zero and there is no limit; left unchanged";
                self.skip(&subject.target, text);
                None
            }
            (None, Some(request)) => {
                self.set_limit(subject, &request);
                Some(request)
            }
            (None, None) => None,
        }
    }

    /// Rule 1 where there is a limit: a missing or lower request is raised to it.
    fn request_to_limit(
        &mut self,
        subject: &Subject,
        written: &Memory,
        limit: Quantity,
        request: Option<Quantity>,
    ) -> Option<Quantity> {
        let raise = match &request {
            None => true,
            Some(request) => match request.cmp_value(&limit) {
                Ordering::Less => true,
                Ordering::Equal => false,
                // Higher than the limit: the API server rejects such a pod, unless the
                // request is one we set and another webhook lowered the limit since.
                Ordering::Greater if self.set_by_us(&subject.target, written) => true,
                Ordering::Greater => {
                    self.skip(
                        &subject.target,
                        format_args!(
                            "requests.memory {} exceeds limits.memory {}; left unchanged",
                            request.as_str(),
                            limit.as_str()
                        ),
                    );
                    return None;
                }
            },
        };
        if raise {
            self.set_request(subject, written.request.clone(), &limit);
        }
        Some(limit)
    }

    /// Whether the written request is the one an earlier pass recorded.
    fn set_by_us(&self, target: &Target, written: &Memory) -> bool {
        self.previous(target)
            .and_then(|r| r.request.as_deref())
            .is_some_and(|r| Some(r) == written.request.as_deref())
    }

    /// Rule 2: GOMEMLIMIT for `memory` and GOGC, unless the container sets GOMEMLIMIT
    /// itself.
    fn environment(
        &mut self,
        subject: &Subject,
        memory: &RuntimeMemory,
        container: &Container<'_>,
    ) -> Result<(), Unreadable> {
        let env = container.env(&subject.target)?;
        if let Some((index, existing)) = read::find_env(env, GOMEMLIMIT) {
            self.existing_gomemlimit(subject, index, existing, &memory.limit);
            return Ok(());
        }
        let Some(value) = self.gomemlimit_value(&subject.target, memory) else {
            return Ok(());
        };
        let downward = value == GomemlimitValue::Downward;
        let edit = self.edit(subject);
        if !downward {
            edit.budget.clone_from(&memory.budget);
        }
        edit.gomemlimit = Some(GomemlimitEdit::Added(value));
        self.event(ContainerEvent::InjectGomemlimit);

        if let Some(gogc) = self.gogc_value()
            && read::find_env(env, GOGC).is_none()
        {
            self.edit(subject).gogc = Some(gogc);
            self.event(ContainerEvent::InjectGogc);
        }
        if container.env_from {
            let text =
                "envFrom may also define GOMEMLIMIT; the injected env entry takes precedence";
            self.warn(&subject.target, text);
        }
        if downward {
            self.restart_on_resize(subject, container);
        }
        Ok(())
    }

    /// A downward-API GOMEMLIMIT is resolved when the container starts: for it to follow an
    /// in-place resize of the memory limit, the resize must restart the container. Only
    /// where the API allows `RestartContainer` (not in a `restartPolicy: Never` pod; an
    /// ordinary init container is never resized in place); the user's own memory entry stays.
    fn restart_on_resize(&mut self, subject: &Subject, container: &Container<'_>) {
        if !self.policy.restart_on_resize || matches!(container.runs, Runs::Before { .. }) {
            return;
        }
        let target = &subject.target;
        match container.memory_resize {
            Some("RestartContainer") => {}
            Some(kept) => self.warn(
                target,
                format_args!(
                    "resizePolicy memory {kept} kept; GOMEMLIMIT will not follow in-place resizes"
                ),
            ),
            None if self.restart_never => {
                let text = "restartPolicy Never allows no RestartContainer resizePolicy; \
                            GOMEMLIMIT will not follow in-place resizes";
                self.warn(target, text);
            }
            None => {
                self.edit(subject).restart_on_memory_resize = true;
                self.event(ContainerEvent::SetResizePolicy);
            }
        }
    }

    /// The container's own GOMEMLIMIT wins, unless it is the literal an earlier pass set:
    /// that one follows a limit another webhook changed since.
    fn existing_gomemlimit(
        &mut self,
        subject: &Subject,
        index: usize,
        existing: &EnvVar<'_>,
        limit: &Quantity,
    ) {
        let recorded = self.previous(&subject.target).cloned().unwrap_or_default();
        let current = existing
            .value
            .as_deref()
            .filter(|_| !existing.has_value_from);
        match (recorded.gomemlimit.as_deref(), recorded.percent, current) {
            (Some(ours), Some(percent), Some(current)) if ours == current && ours != DOWNWARD => {
                self.update_literal(subject, index, current, limit.percent_of_bytes(percent));
            }
            // Ours, but through the downward API or changed by the user since.
            _ if recorded.gomemlimit.is_some() => {}
            _ => self.eval.events.push(ContainerEvent::KeptGomemlimit),
        }
    }

    fn update_literal(&mut self, subject: &Subject, index: usize, current: &str, bytes: u64) {
        if bytes == 0 || bytes.to_compact_string() == current {
            return;
        }
        let from = current.to_compact_string();
        let to = bytes;
        self.edit(subject).gomemlimit = Some(GomemlimitEdit::Updated { index, from, to });
        self.event(ContainerEvent::UpdateGomemlimit);
    }

    /// The downward API for 100% of a container's own limit, else a literal. `None`, with
    /// a warning, when the literal would be zero.
    fn gomemlimit_value(
        &mut self,
        target: &Target,
        memory: &RuntimeMemory,
    ) -> Option<GomemlimitValue> {
        let percent = self.settings.percent;
        if percent == 100 && memory.budget.is_none() {
            return Some(GomemlimitValue::Downward);
        }
        let limit = memory.limit.as_str();
        let bytes = memory.limit.percent_of_bytes(percent);
        if bytes == 0 {
            self.skip(
                target,
                format_args!("{percent}% of {limit} is 0 bytes; GOMEMLIMIT not set"),
            );
            return None;
        }
        let of = match &memory.budget {
            Some(_) => compact_str::format_compact!("the {limit} bytes left of the pod limit"),
            None => limit.to_compact_string(),
        };
        Some(GomemlimitValue::Literal { bytes, percent, of })
    }

    /// The GOGC value to add, if any.
    fn gogc_value(&self) -> Option<CompactString> {
        match self.settings.gogc {
            Gogc::Keep => None,
            Gogc::Off => Some(CompactString::const_new("off")),
            Gogc::Percent(n) => Some(n.to_compact_string()),
        }
    }

    /// Plans `requests.memory = value` (a change from `from`).
    fn set_request(&mut self, subject: &Subject, from: Option<CompactString>, value: &Quantity) {
        let to = value.as_str().to_compact_string();
        self.edit(subject).request = Some(SetRequest { from, to });
        self.event(ContainerEvent::SetRequest);
    }

    /// Plans `limits.memory = value` where there was none. The change most likely to
    /// surprise is also a warning (in audit, the change's own warning says it).
    fn set_limit(&mut self, subject: &Subject, value: &Quantity) {
        let to = value.as_str().to_compact_string();
        if !self.eval.audit_only {
            let text = format_args!("adds a memory limit of {to} where there was none");
            self.warn(&subject.target, text);
        }
        self.edit(subject).limit = Some(to);
        self.event(ContainerEvent::SetLimit);
    }

    /// Counts what happened to the target.
    fn event(&mut self, event: ContainerEvent) {
        self.eval.events.push(event);
    }

    fn warn(&mut self, target: &Target, text: impl fmt::Display) {
        let warning = shorten(format!("{target}: {text}"), WARNING);
        self.eval.warnings.push(warning);
    }

    /// Leaves the target alone, saying why.
    fn skip(&mut self, target: &Target, text: impl fmt::Display) {
        self.warn(target, text);
        self.eval.events.push(ContainerEvent::Skipped);
    }

    /// What an earlier pass recorded for `target`.
    fn previous(&self, target: &Target) -> Option<&Record> {
        match target {
            Target::Pod => self.previous.pod.as_ref(),
            Target::Container(name) => self.previous.containers.get(name.as_str()),
        }
    }

    /// The edit of the subject's fields, planned so far: the targets are planned one after
    /// the other, so it is the last one, or a new one.
    fn edit(&mut self, subject: &Subject) -> &mut Edit {
        let edits = &mut self.plan.edits;
        if edits.last().is_none_or(|last| last.place != subject.at) {
            let target = subject.target.clone();
            edits.push(Edit::new(target, subject.at.clone(), subject.holder));
        }
        edits.last_mut().expect("pushed above")
    }
}
