//! What an engine made of one pod, and the comparison of two such outcomes: the stored (or
//! dry-run) pod field by field, our warnings in order, the API server's own warnings, the
//! denial message. Every difference the engines are known to have is named here
//! ([`Accepted`]) and counted; any other fails the comparison.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::api::Answer;

/// The differences between the webhook and the native policies that are accepted, each
/// listed in the README ("Engines").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Accepted {
    /// The API server prefixes the warnings of a ValidatingAdmissionPolicy with
    /// "Validation failed for ValidatingAdmissionPolicy '…' with binding '…': ".
    PolicyWarningPrefix,
    /// Denials read "admission webhook "…" denied the request: M" and "pods "…" is
    /// forbidden: ValidatingAdmissionPolicy '…' with binding '…' denied request: M".
    DenialPrefix,
    /// The API server passes on 4 KiB of warnings per answer; the native ones are longer
    /// by their prefix, so fewer of the same list arrive.
    WarningBudget,
    /// A status annotation the engine cannot read, rewritten because the pod changes: the
    /// webhook warns it ignored it; the native warning policy only sees the new one.
    UnreadableStatusRewritten,
    /// Audit of a pod with a pod-level memory limit and no pod-level request: by the time
    /// the warning policy runs, the API server has defaulted the request, so the native
    /// warning names that request instead of "unset", or is not given when the default is
    /// the limit.
    DefaultedPodRequest,
    /// A pod created with a status annotation recording a target's changes (a copy of a
    /// mutated pod, or a template `mutate` wrote): the native engine gives the warnings of
    /// those changes again (envFrom beside GOMEMLIMIT, a memory limit added, a memory
    /// `resizePolicy` kept or not allowed), the warning policy seeing only the pod after
    /// the mutating one.
    RecordedWarning,
    /// A pod beyond the size the native policies evaluate: left alone, with a warning.
    BeyondNativeBounds,
    /// A denial message over 5 KiB, which the API server would drop: the native one is cut.
    LongDenial,
}

impl fmt::Display for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How often each accepted difference was seen.
#[derive(Debug, Default)]
pub(crate) struct Tally(pub(crate) BTreeMap<Accepted, usize>);

impl Tally {
    pub(crate) fn add_all(&mut self, other: Tally) {
        for (a, n) in other.0 {
            *self.0.entry(a).or_default() += n;
        }
    }

    pub(crate) fn add(&mut self, seen: &[Accepted]) {
        for a in seen {
            *self.0.entry(*a).or_default() += 1;
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(a, n)| format!("{a} ×{n}")).collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

const POLICY_PREFIX: &str = "Validation failed for ValidatingAdmissionPolicy '";

/// What an engine made of one pod.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    /// The pod as admitted, without what the API server sets per object (uid, times,
    /// namespace, managed fields); `None` when refused.
    pub(crate) pod: Option<Value>,
    /// Our warnings, in order, without the policy prefix.
    pub(crate) ours: Vec<String>,
    /// The length, in characters, of the policy prefix the warnings came with (0: none).
    pub(crate) prefix: usize,
    /// The API server's own warnings (field validation), sorted: they come before ours
    /// from a webhook, after them from a validating policy.
    pub(crate) server: Vec<String>,
    /// The message of a denial, after "denied (the) request: ".
    pub(crate) denial: Option<String>,
    /// Any other refusal, as sent.
    pub(crate) error: Option<String>,
}

impl Outcome {
    pub(crate) fn of(answer: &Answer) -> Outcome {
        let mut ours = Vec::new();
        let mut server = Vec::new();
        let mut prefix = 0;
        for w in &answer.warnings {
            let text = match w.strip_prefix(POLICY_PREFIX) {
                Some(rest) => {
                    let message = rest
                        .split_once("' with binding '")
                        .and_then(|(_, r)| r.split_once("': "))
                        .map_or(rest, |(_, message)| message);
                    prefix = w.chars().count() - message.chars().count();
                    message
                }
                None => w.as_str(),
            };
            if is_ours(text) {
                ours.push(text.to_owned());
            } else {
                server.push(text.to_owned());
            }
        }
        server.sort();
        let admitted = answer.status == 200 || answer.status == 201;
        let message = answer.body["message"].as_str().unwrap_or_default();
        let denial = ["denied the request: ", "denied request: "]
            .iter()
            .find_map(|sep| message.split_once(sep).map(|(_, m)| m.to_owned()))
            .filter(|_| !admitted && answer.status == 403);
        let error = (!admitted && denial.is_none()).then(|| message.to_owned());
        Outcome {
            pod: admitted.then(|| normalized(&answer.body)),
            ours,
            prefix,
            server: if admitted { server } else { Vec::new() },
            denial,
            error,
        }
    }
}

/// Warnings the engines give (the API server's own name a field).
fn is_ours(text: &str) -> bool {
    [
        "container \"",
        "pod: ",
        "invalid annotation ",
        "would deny: ",
        "ignoring unreadable ",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}

/// The pod without what differs between any two creations of it.
pub(crate) fn normalized(pod: &Value) -> Value {
    let mut pod = pod.clone();
    if let Some(m) = pod["metadata"].as_object_mut() {
        for key in [
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "managedFields",
            "namespace",
        ] {
            m.remove(key);
        }
    }
    pod
}

/// The JSON pointers at which `a` and `b` differ.
pub(crate) fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let path = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                differences(
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                    &path,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: {a} != {b}")),
        _ => {}
    }
}

/// The runes the API server counts for the native warnings that arrived.
fn native_warning_runes(native: &Outcome) -> usize {
    let ours: usize = native
        .ours
        .iter()
        .map(|w| w.chars().count() + native.prefix)
        .sum();
    ours + native
        .server
        .iter()
        .map(|w| w.chars().count())
        .sum::<usize>()
}

/// Compares what the webhook (`webhook`) and the native policies (`native`) made of
/// `original`; returns the accepted differences seen, or fails naming every other.
pub(crate) fn reconcile(
    original: &Value,
    webhook: &Outcome,
    native: &Outcome,
) -> Result<Vec<Accepted>> {
    let mut seen = Vec::new();
    if native.prefix > 0 {
        seen.push(Accepted::PolicyWarningPrefix);
    }
    let mut problems = Vec::new();
    let (mut w, mut n) = (webhook.ours.clone(), native.ours.clone());
    if n.iter()
        .any(|x| x.contains("more than the native policies"))
    {
        seen.push(Accepted::BeyondNativeBounds);
        return Ok(seen);
    }
    let status = |p: &Option<Value>| {
        p.as_ref().and_then(|p| {
            p["metadata"]["annotations"]["gomemlimit.io/status"]
                .as_str()
                .map(str::to_owned)
        })
    };
    let original_status = original["metadata"]["annotations"]["gomemlimit.io/status"].as_str();
    let unreadable = "ignoring unreadable gomemlimit.io/status annotation";
    if w.iter().any(|x| x == unreadable)
        && !n.iter().any(|x| x == unreadable)
        && status(&native.pod).as_deref() != original_status
    {
        w.retain(|x| x != unreadable);
        seen.push(Accepted::UnreadableStatusRewritten);
    }
    let defaulted = |x: &str| x.starts_with("pod: would set spec.resources.requests.memory to ");
    let cut = |x: &str| x.rsplit_once(" (was ").map(|(head, _)| head.to_owned());
    let pod_request = |o: &Outcome| {
        o.pod.as_ref().and_then(|p| {
            p["spec"]["resources"]["requests"]["memory"]
                .as_str()
                .map(str::to_owned)
        })
    };
    if let Some(i) = w
        .iter()
        .position(|a| defaulted(a) && a.ends_with("(was unset)"))
    {
        match n.iter().position(|b| defaulted(b)) {
            Some(j) if cut(&w[i]) == cut(&n[j]) && w[i] != n[j] => {
                n[j].clone_from(&w[i]);
                seen.push(Accepted::DefaultedPodRequest);
            }
            None if cut(&w[i]).is_some_and(|head| {
                pod_request(native).is_some_and(|r| head.ends_with(&format!(" to {r}")))
            }) =>
            {
                n.insert(i.min(n.len()), w[i].clone());
                seen.push(Accepted::DefaultedPodRequest);
            }
            _ => {}
        }
    }
    // The warning is cut at 120 characters; the target always stays in it.
    let of_a_change = |text: &str| {
        [
            "envFrom may also define",
            "adds a memory limit of ",
            "resizePolicy memory ",
            "restartPolicy Never allows no RestartContainer",
        ]
        .iter()
        .any(|p| text.starts_with(p))
    };
    let recorded = |x: &str| {
        let recorded_as = |key: &str| original_status.is_some_and(|s| s.contains(key));
        if let Some(text) = x.strip_prefix("pod: ") {
            return of_a_change(text) && recorded_as("\"pod\":{");
        }
        x.strip_prefix("container \"")
            .and_then(|rest| rest.split_once("\": "))
            .is_some_and(|(name, text)| of_a_change(text) && recorded_as(&format!("\"{name}\":{{")))
    };
    if n.len() > w.len() {
        let before = n.len();
        let mut extra = n.clone();
        extra.retain(|x| w.contains(x) || !recorded(x));
        if extra.len() < before && extra == w {
            n = extra;
            seen.push(Accepted::RecordedWarning);
        }
    }
    if w != n {
        if n.len() < w.len() && w.starts_with(&n) && native_warning_runes(native) + 256 >= 4096 {
            seen.push(Accepted::WarningBudget);
        } else {
            problems.push(format!("warnings:\n    webhook {w:?}\n    native  {n:?}"));
        }
    }
    if webhook.denial != native.denial {
        let long = match (&webhook.denial, &native.denial) {
            (Some(a), Some(b)) => b.ends_with("...") && a.starts_with(b.trim_end_matches("...")),
            _ => false,
        };
        if long {
            seen.push(Accepted::LongDenial);
        } else {
            problems.push(format!(
                "denial:\n    webhook {:?}\n    native  {:?}",
                webhook.denial, native.denial
            ));
        }
    } else if webhook.denial.is_some() {
        seen.push(Accepted::DenialPrefix);
    }
    if webhook.error != native.error {
        problems.push(format!(
            "refusal:\n    webhook {:?}\n    native  {:?}",
            webhook.error, native.error
        ));
    }
    if webhook.server != native.server {
        problems.push(format!(
            "API server warnings:\n    webhook {:?}\n    native  {:?}",
            webhook.server, native.server
        ));
    }
    if let (Some(a), Some(b)) = (&webhook.pod, &native.pod) {
        let mut fields = Vec::new();
        differences(a, b, "", &mut fields);
        if !fields.is_empty() {
            problems.push(format!("pod fields:\n    {}", fields.join("\n    ")));
        }
    } else if webhook.pod.is_some() != native.pod.is_some() {
        problems.push("admitted by one engine only".to_owned());
    }
    if problems.is_empty() {
        Ok(seen)
    } else {
        let name = &original["metadata"]["name"];
        bail!(
            "the engines differ for pod {name} ({original}):\n  {}",
            problems.join("\n  ")
        )
    }
}
