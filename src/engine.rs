//! The policy engine: a pure function from a Pod (as JSON) and a [`Policy`] to the changes
//! it needs, the warnings to give and a decision.
//!
//! The engine edits a copy of the pod's JSON in place and touches only the fields it owns
//! (memory requests and limits, two env entries, one annotation). Every other field,
//! including fields newer than any Kubernetes client library, is carried over untouched,
//! so a diff of the two documents is exactly our change.

use std::collections::BTreeMap;
use std::fmt;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::policy::{Gogc, MissingLimit, Mode, Policy};
use crate::quantity::Quantity;
use crate::text::{self, WARNING};

/// Label or annotation that opts a pod out (`disabled`).
pub const INJECT: &str = "gomemlimit.io/inject";
/// Annotation recording what the webhook set.
pub const STATUS: &str = "gomemlimit.io/status";
/// Per-pod percentage override.
pub const PERCENT: &str = "gomemlimit.io/percent";
/// Per-pod GOGC override.
pub const GOGC_ANNOTATION: &str = "gomemlimit.io/gogc";
/// Per-pod container exclusions.
pub const EXCLUDE_CONTAINERS: &str = "gomemlimit.io/exclude-containers";
/// Per-pod mode (`audit` only: a pod can weaken enforcement, never strengthen it).
pub const MODE: &str = "gomemlimit.io/mode";
/// Set by the kubelet on mirror pods of static pods; the API server ignores changes to them.
pub const MIRROR: &str = "kubernetes.io/config.mirror";

const GOMEMLIMIT: &str = "GOMEMLIMIT";
const GOGC: &str = "GOGC";
/// How a downward-API GOMEMLIMIT is written in the status annotation.
const DOWNWARD: &str = "limits.memory";

/// The result of evaluating one pod.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub decision: Decision,
    /// True when the policy or the pod's `gomemlimit.io/mode` asks for audit only.
    pub audit_only: bool,
    /// What the webhook sets (or, in audit, would set), in pod order.
    pub changes: Vec<Change>,
    /// Things the user should know: skipped containers, `envFrom`, ignored annotations.
    pub warnings: Vec<String>,
    /// One entry per container event, for metrics (e.g. `set_request`, `skipped`).
    pub actions: Vec<&'static str>,
    /// The JSONPatch that makes `changes` (empty when there are none). Its operations only
    /// add or replace the fields the webhook owns, so it applies to the evaluated pod and
    /// keeps every other field, whatever its schema version.
    pub patch: Patch,
}

impl Evaluation {
    /// The pod with the patch applied.
    pub fn patched(&self, pod: &Value) -> Value {
        let mut out = pod.clone();
        json_patch::patch(&mut out, &self.patch).expect("the engine's patch applies to its pod");
        out
    }
}

/// What to do with the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The pod was evaluated; `changes` may be empty.
    Evaluated,
    /// The pod is not ours to change.
    Skipped(SkipReason),
    /// An explicit policy rejects the pod (never in audit).
    Denied(String),
}

/// Why a pod was left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Labelled or annotated `gomemlimit.io/inject: disabled`.
    Disabled,
    /// A mirror pod; the kubelet owns it.
    Mirror,
    /// The object is not a pod we can read; it is admitted unchanged.
    NotUnderstood(String),
}

/// What a change applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pod,
    Container(String),
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
pub enum GomemlimitValue {
    /// `valueFrom.resourceFieldRef` on `limits.memory`.
    Downward,
    /// A byte count: `percent`% of `of`.
    Literal { bytes: u64, percent: u8, of: String },
}

/// One field the webhook sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SetRequest { from: Option<String>, to: String },
    SetLimit { from: Option<String>, to: String },
    SetGomemlimit(GomemlimitValue),
    UpdateGomemlimit { from: String, to: u64 },
    SetGogc(String),
}

/// A change to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub target: Target,
    pub action: Action,
}

impl Change {
    /// The one-line description, e.g. `container "app": set requests.memory to 512Mi (was 256Mi)`.
    /// `would` prefixes the verb for audit reports.
    pub fn describe(&self, would: bool) -> String {
        let w = if would { "would " } else { "" };
        let field = |name: &str| match self.target {
            Target::Pod => format!("spec.resources.{name}"),
            Target::Container(_) => name.to_owned(),
        };
        let was = |from: &Option<String>| from.as_deref().unwrap_or("unset").to_owned();
        let text = match &self.action {
            Action::SetRequest { from, to } => format!(
                "{}: {w}set {} to {to} (was {})",
                self.target,
                field("requests.memory"),
                was(from)
            ),
            Action::SetLimit { from, to } => format!(
                "{}: {w}set {} to {to} (was {})",
                self.target,
                field("limits.memory"),
                was(from)
            ),
            Action::SetGomemlimit(GomemlimitValue::Downward) => format!(
                "{}: {w}set env GOMEMLIMIT from limits.memory (downward API)",
                self.target
            ),
            Action::SetGomemlimit(GomemlimitValue::Literal { bytes, percent, of }) => format!(
                "{}: {w}set env GOMEMLIMIT={bytes} ({percent}% of {of})",
                self.target
            ),
            Action::UpdateGomemlimit { from, to } => format!(
                "{}: {w}update env GOMEMLIMIT to {to} (was {from}) for the new limit",
                self.target
            ),
            Action::SetGogc(v) => format!("{}: {w}set env GOGC={v}", self.target),
        };
        text::shorten(text, WARNING)
    }

    /// A compact form for audit annotations: `app: requests.memory 256Mi->512Mi`.
    pub fn summary(&self) -> String {
        let who = match &self.target {
            Target::Pod => "pod".to_owned(),
            Target::Container(name) => name.clone(),
        };
        let what = match &self.action {
            Action::SetRequest { from, to } => {
                format!(
                    "requests.memory {}->{to}",
                    from.as_deref().unwrap_or("unset")
                )
            }
            Action::SetLimit { from, to } => {
                format!("limits.memory {}->{to}", from.as_deref().unwrap_or("unset"))
            }
            Action::SetGomemlimit(GomemlimitValue::Downward) => "GOMEMLIMIT=limits.memory".into(),
            Action::SetGomemlimit(GomemlimitValue::Literal { bytes, .. }) => {
                format!("GOMEMLIMIT={bytes}")
            }
            Action::UpdateGomemlimit { from, to } => format!("GOMEMLIMIT {from}->{to}"),
            Action::SetGogc(v) => format!("GOGC={v}"),
        };
        format!("{who}: {what}")
    }

    fn metric(&self) -> &'static str {
        match self.action {
            Action::SetRequest { .. } => "set_request",
            Action::SetLimit { .. } => "set_limit",
            Action::SetGomemlimit(_) => "inject_gomemlimit",
            Action::UpdateGomemlimit { .. } => "update_gomemlimit",
            Action::SetGogc(_) => "inject_gogc",
        }
    }
}

/// What the status annotation records, per container and for the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub containers: BTreeMap<String, Record>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Record>,
}

/// The fields set on one container (or the pod), as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// `limits.memory` for the downward API, else the literal byte count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gomemlimit: Option<String>,
    /// The percentage a literal was computed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gogc: Option<String>,
}

/// The settings in force for one pod after its annotations.
struct Effective {
    percent: u8,
    gogc: Gogc,
    audit_only: bool,
}

/// Evaluates one pod against the policy, in the policy's mode.
pub fn evaluate(pod: &Value, policy: &Policy) -> Evaluation {
    evaluate_as(pod, policy, policy.mode)
}

/// Evaluates one pod in the given mode (the `/audit` endpoint audits whatever the policy
/// says). In audit, explicit denials become warnings.
pub fn evaluate_as(pod: &Value, policy: &Policy, mode: Mode) -> Evaluation {
    let mut eval = Evaluation {
        decision: Decision::Evaluated,
        audit_only: mode == Mode::Audit,
        changes: Vec::new(),
        warnings: Vec::new(),
        actions: Vec::new(),
        patch: Patch(Vec::new()),
    };
    if let Err(reason) = evaluate_into(pod, policy, &mut eval) {
        eval.decision = Decision::Skipped(SkipReason::NotUnderstood(reason));
        eval.changes.clear();
        eval.actions.clear();
        eval.patch.0.clear();
    }
    eval
}

/// The pod's labels or annotations as strings; any other shape is not understood.
fn string_map<'a>(
    meta: Option<&'a Value>,
    key: &str,
) -> Result<BTreeMap<&'a str, &'a str>, String> {
    let Some(v) = meta.and_then(|m| m.get(key)) else {
        return Ok(BTreeMap::new());
    };
    if v.is_null() {
        return Ok(BTreeMap::new());
    }
    let obj = v
        .as_object()
        .ok_or_else(|| format!("metadata.{key} is not an object"))?;
    obj.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.as_str(), s))
                .ok_or_else(|| format!("metadata.{key}[{k:?}] is not a string"))
        })
        .collect()
}

fn evaluate_into(pod: &Value, policy: &Policy, eval: &mut Evaluation) -> Result<(), String> {
    let root = pod.as_object().ok_or("the object is not a JSON object")?;
    let meta = root.get("metadata");
    let labels = string_map(meta, "labels")?;
    let annotations = string_map(meta, "annotations")?;

    if labels.get(INJECT) == Some(&"disabled") || annotations.get(INJECT) == Some(&"disabled") {
        eval.decision = Decision::Skipped(SkipReason::Disabled);
        return Ok(());
    }
    if annotations.contains_key(MIRROR) {
        eval.decision = Decision::Skipped(SkipReason::Mirror);
        return Ok(());
    }

    let (effective, excluded, invalid) = read_annotations(&annotations, policy, eval.audit_only);
    eval.audit_only = effective.audit_only;
    if !invalid.is_empty() {
        if eval.audit_only {
            eval.warnings
                .extend(invalid.into_iter().map(|w| text::shorten(w, WARNING)));
        } else {
            eval.decision = Decision::Denied(invalid.join("; "));
            return Ok(());
        }
    }

    let spec = root
        .get("spec")
        .and_then(Value::as_object)
        .ok_or("the pod has no spec object")?;

    let previous: Status = match annotations.get(STATUS) {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| {
            eval.warnings.push(text::shorten(
                format!("ignoring unreadable {STATUS} annotation"),
                WARNING,
            ));
            Status::default()
        }),
        None => Status::default(),
    };
    let mut status = previous.clone();

    let mut work = Work {
        pod,
        eval: &mut *eval,
        effective: &effective,
        policy,
        previous: &previous,
        status: &mut status,
        denials: Vec::new(),
        edits: BTreeMap::new(),
    };

    // Pod-level resources (Kubernetes 1.34+): keep pod request = limit; the pod limit is
    // the budget of containers that have no limit of their own.
    let pod_limit = work.pod_level(spec)?;

    let mut containers = Vec::new();
    for list in ["initContainers", "containers"] {
        match spec.get(list) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, c) in items.iter().enumerate() {
                    let obj = c
                        .as_object()
                        .ok_or_else(|| format!("spec.{list}[{i}] is not an object"))?;
                    let name = obj
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("spec.{list}[{i}] has no name"))?;
                    let memory = memory_of(obj.get("resources"), &format!("spec.{list}[{i}]"))?;
                    containers.push((list, i, name.to_owned(), memory));
                }
            }
            Some(_) => return Err(format!("spec.{list} is not an array")),
        }
    }
    // Containers without their own limit share the pod budget; only a single one can be
    // given an exact GOMEMLIMIT from it.
    let unlimited = containers.iter().filter(|c| c.3.limit.is_none()).count();

    for (list, index, name, memory) in &containers {
        if excluded.contains(name.as_str()) {
            work.eval.actions.push("excluded");
            continue;
        }
        let budget = pod_limit.as_ref().map(|q| (q, unlimited == 1));
        work.container(list, *index, name, memory, budget)?;
    }

    let denials = std::mem::take(&mut work.denials);
    let edits = std::mem::take(&mut work.edits);
    drop(work);
    if !denials.is_empty() {
        let message = denials.join("; ");
        if eval.audit_only {
            eval.warnings
                .push(text::shorten(format!("would deny: {message}"), WARNING));
        } else {
            eval.decision = Decision::Denied(message);
            eval.changes.clear();
            eval.actions.retain(|a| *a == "denied");
            return Ok(());
        }
    }

    let ops = &mut eval.patch.0;
    for (path, edit) in &edits {
        edit.emit(pod, path, ops)?;
    }
    if status != previous {
        let text = Value::String(serde_json::to_string(&status).map_err(|e| e.to_string())?);
        let op = match meta {
            None | Some(Value::Null) => add(
                pointer(&["metadata"]),
                json!({"annotations": {STATUS: text}}),
            ),
            Some(m) if m.get("annotations").is_none_or(Value::is_null) => {
                add(pointer(&["metadata", "annotations"]), json!({STATUS: text}))
            }
            Some(_) => add(pointer(&["metadata", "annotations", STATUS]), text),
        };
        ops.push(op);
    }
    Ok(())
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// The fields to set on one container (or, at `spec`, the pod). Edits are planned while the
/// pod is read and turned into patch operations only once the pod is not denied.
#[derive(Debug, Default)]
struct Edit {
    limit: Option<String>,
    request: Option<String>,
    /// Entries to append to `env`.
    env: Vec<Value>,
    /// `env[index].value` to replace.
    env_value: Option<(usize, String)>,
}

impl Edit {
    /// Appends the operations for this edit. `path` leads to the container (or `spec`) in
    /// `pod`; the operations create missing parents, since JSONPatch `add` does not.
    fn emit(
        &self,
        pod: &Value,
        path: &[String],
        ops: &mut Vec<PatchOperation>,
    ) -> Result<(), String> {
        let at = |tail: &[&str]| {
            PointerBuf::from_tokens(path.iter().map(String::as_str).chain(tail.iter().copied()))
        };
        let holder = pod
            .pointer(at(&[]).as_str())
            .ok_or("planned an edit outside the pod")?;
        let memory: Vec<(&str, &String)> = [("limits", &self.limit), ("requests", &self.request)]
            .into_iter()
            .filter_map(|(kind, v)| v.as_ref().map(|v| (kind, v)))
            .collect();
        if !memory.is_empty() {
            match holder.get("resources").filter(|r| r.is_object()) {
                None => {
                    let mut resources = Map::new();
                    for (kind, v) in &memory {
                        resources.insert((*kind).into(), json!({"memory": v}));
                    }
                    ops.push(add(at(&["resources"]), Value::Object(resources)));
                }
                Some(resources) => {
                    for (kind, v) in &memory {
                        if resources.get(*kind).is_some_and(Value::is_object) {
                            ops.push(add(at(&["resources", kind, "memory"]), json!(v)));
                        } else {
                            ops.push(add(at(&["resources", kind]), json!({"memory": v})));
                        }
                    }
                }
            }
        }
        if let Some((index, value)) = &self.env_value {
            let index = index.to_string();
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: at(&["env", &index, "value"]),
                value: json!(value),
            }));
        }
        if !self.env.is_empty() {
            if holder.get("env").is_some_and(Value::is_array) {
                for entry in &self.env {
                    ops.push(add(at(&["env", "-"]), entry.clone()));
                }
            } else {
                ops.push(add(at(&["env"]), Value::Array(self.env.clone())));
            }
        }
        Ok(())
    }
}

/// Reads the per-pod annotations. Returns the effective settings, the excluded container
/// names (policy and annotation) and one message per invalid annotation.
fn read_annotations<'a>(
    annotations: &BTreeMap<&'a str, &'a str>,
    policy: &'a Policy,
    audit_only: bool,
) -> (Effective, std::collections::BTreeSet<&'a str>, Vec<String>) {
    let mut invalid = Vec::new();
    let mut effective = Effective {
        percent: policy.percent,
        gogc: policy.gogc,
        audit_only,
    };
    let mut excluded: std::collections::BTreeSet<&str> = policy
        .exclude_containers
        .iter()
        .map(String::as_str)
        .collect();

    if let Some(v) = annotations.get(MODE) {
        match *v {
            "audit" => effective.audit_only = true,
            _ => invalid.push(format!(
                "invalid annotation {MODE}={v:?}: the only allowed value is \"audit\""
            )),
        }
    }
    if let Some(v) = annotations.get(PERCENT) {
        let (lo, hi) = (policy.min_percent, policy.max_percent);
        match v.parse::<u8>() {
            Ok(p) if v.bytes().all(|b| b.is_ascii_digit()) && (lo..=hi).contains(&p) => {
                effective.percent = p
            }
            _ => invalid.push(format!(
                "invalid annotation {PERCENT}={v:?}: allowed values are integers {lo} to {hi}"
            )),
        }
    }
    if let Some(v) = annotations.get(GOGC_ANNOTATION) {
        match v.parse::<Gogc>() {
            Ok(g) => effective.gogc = g,
            Err(_) => invalid.push(format!(
                "invalid annotation {GOGC_ANNOTATION}={v:?}: allowed values are off, keep or an integer"
            )),
        }
    }
    if let Some(v) = annotations.get(EXCLUDE_CONTAINERS) {
        let names: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        match names.iter().find(|n| !is_dns_label(n)) {
            None => excluded.extend(names),
            Some(bad) => invalid.push(format!(
                "invalid annotation {EXCLUDE_CONTAINERS}: {bad:?} is not a container name; \
                 expected comma-separated container names"
            )),
        }
    }
    (effective, excluded, invalid)
}

/// RFC 1123 label, the format of container names.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The memory fields of one container (or the pod) as written, with their parsed values.
#[derive(Debug, Clone, Default)]
struct Memory {
    limit: Option<String>,
    request: Option<String>,
}

/// The memory fields of the `resources` found at `at` (for messages, e.g. `spec.containers[0]`).
fn memory_of(resources: Option<&Value>, at: &str) -> Result<Memory, String> {
    let resources = match resources {
        None | Some(Value::Null) => return Ok(Memory::default()),
        Some(Value::Object(r)) => r,
        Some(_) => return Err(format!("{at}.resources is not an object")),
    };
    let field = |kind: &str| -> Result<Option<String>, String> {
        let map = match resources.get(kind) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(format!("{at}.resources.{kind} is not an object")),
        };
        match map.get("memory") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // Quantities may arrive as JSON numbers from hand-written manifests.
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(format!("{at}.resources.{kind}.memory is not a quantity")),
        }
    };
    Ok(Memory {
        limit: field("limits")?,
        request: field("requests")?,
    })
}

struct Work<'a> {
    pod: &'a Value,
    eval: &'a mut Evaluation,
    effective: &'a Effective,
    policy: &'a Policy,
    previous: &'a Status,
    status: &'a mut Status,
    denials: Vec<String>,
    /// Planned edits by JSON path of the container (or `spec` for the pod).
    edits: BTreeMap<Vec<String>, Edit>,
}

impl Work<'_> {
    fn change(&mut self, target: Target, action: Action) {
        let change = Change { target, action };
        self.eval.actions.push(change.metric());
        self.eval.changes.push(change);
    }

    fn warn(&mut self, target: &Target, text: impl fmt::Display) {
        self.eval
            .warnings
            .push(text::shorten(format!("{target}: {text}"), WARNING));
    }

    /// Leaves the target alone, saying why.
    fn skip(&mut self, target: &Target, text: impl fmt::Display) {
        self.warn(target, text);
        self.eval.actions.push("skipped");
    }

    fn record(&mut self, target: &Target) -> &mut Record {
        match target {
            Target::Pod => self.status.pod.get_or_insert_with(Record::default),
            Target::Container(name) => self.status.containers.entry(name.clone()).or_default(),
        }
    }

    fn previous(&self, target: &Target) -> Option<&Record> {
        match target {
            Target::Pod => self.previous.pod.as_ref(),
            Target::Container(name) => self.previous.containers.get(name),
        }
    }

    /// Applies request = limit to pod-level resources; returns the pod memory limit.
    fn pod_level(&mut self, spec: &Map<String, Value>) -> Result<Option<Quantity>, String> {
        let memory = memory_of(spec.get("resources"), "spec")?;
        if memory.limit.is_none() && memory.request.is_none() {
            return Ok(None);
        }
        Ok(self.request_equals_limit(&Target::Pod, &memory, &["spec"]))
    }

    /// Rule 1 (request = limit) for one set of resources at `path` (`[..]/resources`).
    /// Returns the limit in force, or `None` when the target is left alone (with a warning).
    fn request_equals_limit(
        &mut self,
        target: &Target,
        memory: &Memory,
        path: &[&str],
    ) -> Option<Quantity> {
        let parse = |field: &str, text: &Option<String>| -> Result<Option<Quantity>, String> {
            text.as_deref()
                .map(|t| {
                    Quantity::parse(t)
                        .map_err(|e| format!("cannot parse {field} {t:?} ({e}); left unchanged"))
                })
                .transpose()
        };
        let (limit, request) = match (
            parse("limits.memory", &memory.limit),
            parse("requests.memory", &memory.request),
        ) {
            (Ok(limit), Ok(request)) => (limit, request),
            (Err(msg), _) | (_, Err(msg)) => {
                self.skip(target, msg);
                return None;
            }
        };
        if limit.as_ref().is_some_and(Quantity::is_zero) {
            self.skip(target, "memory limit is zero; left unchanged");
            return None;
        }
        match (limit, request) {
            (Some(limit), request) => {
                let ours = self
                    .previous(target)
                    .and_then(|r| r.request.as_deref())
                    .is_some_and(|r| Some(r) == memory.request.as_deref());
                let set =
                    match &request {
                        None => true,
                        Some(r) => match r.cmp_value(&limit) {
                            std::cmp::Ordering::Less => true,
                            std::cmp::Ordering::Equal => false,
                            // Higher than the limit: the API server rejects such a pod, unless the
                            // request is one we set and another webhook lowered the limit since.
                            std::cmp::Ordering::Greater if ours => true,
                            std::cmp::Ordering::Greater => {
                                self.skip(target, format_args!(
                                    "requests.memory {} exceeds limits.memory {}; left unchanged",
                                    r.as_str(),
                                    limit.as_str()
                                ),
                            );
                                return None;
                            }
                        },
                    };
                if set {
                    self.set_memory(path, "requests", limit.as_str());
                    self.change(
                        target.clone(),
                        Action::SetRequest {
                            from: memory.request.clone(),
                            to: limit.as_str().to_owned(),
                        },
                    );
                    self.record(target).request = Some(limit.as_str().to_owned());
                }
                Some(limit)
            }
            (None, Some(request)) if request.is_zero() => {
                self.skip(
                    target,
                    "memory request is zero and there is no limit; left unchanged",
                );
                None
            }
            (None, Some(request)) => {
                self.set_memory(path, "limits", request.as_str());
                self.change(
                    target.clone(),
                    Action::SetLimit {
                        from: None,
                        to: request.as_str().to_owned(),
                    },
                );
                self.record(target).limit = Some(request.as_str().to_owned());
                Some(request)
            }
            (None, None) => None,
        }
    }

    fn edit(&mut self, path: &[&str]) -> &mut Edit {
        self.edits
            .entry(path.iter().map(|s| (*s).to_owned()).collect())
            .or_default()
    }

    fn set_memory(&mut self, path: &[&str], kind: &str, value: &str) {
        let edit = self.edit(path);
        let slot = if kind == "limits" {
            &mut edit.limit
        } else {
            &mut edit.request
        };
        *slot = Some(value.to_owned());
    }

    fn container(
        &mut self,
        list: &str,
        index: usize,
        name: &str,
        memory: &Memory,
        budget: Option<(&Quantity, bool)>,
    ) -> Result<(), String> {
        let target = Target::Container(name.to_owned());
        let index_s = index.to_string();
        let path = ["spec", list, index_s.as_str()];

        // The memory the Go runtime gets: the container's own limit, or the pod budget.
        let limit: Quantity;
        let mut literal_from_budget = false;
        if memory.limit.is_some() || (memory.request.is_some() && budget.is_none()) {
            match self.request_equals_limit(&target, memory, &path) {
                Some(l) => limit = l,
                None => return Ok(()),
            }
        } else if let Some((pod_limit, alone)) = budget {
            if !alone {
                self.skip(&target, "has no memory limit and shares the pod limit with other containers; left unchanged",
                );
                return Ok(());
            }
            limit = pod_limit.clone();
            literal_from_budget = true;
        } else {
            match self.policy.missing_limit {
                MissingLimit::Skip => {
                    self.skip(&target, "has no memory request or limit; left unchanged");
                    return Ok(());
                }
                MissingLimit::Deny => {
                    self.denials.push(format!(
                        "{target} has no memory limit (policy missingLimit: deny); set resources.limits.memory"
                    ));
                    self.eval.actions.push("denied");
                    return Ok(());
                }
                MissingLimit::Default => {
                    let default = self
                        .policy
                        .default_memory
                        .clone()
                        .ok_or("policy missingLimit is default without defaultMemory")?;
                    for kind in ["limits", "requests"] {
                        self.set_memory(&path, kind, default.as_str());
                    }
                    self.change(
                        target.clone(),
                        Action::SetLimit {
                            from: None,
                            to: default.as_str().to_owned(),
                        },
                    );
                    self.change(
                        target.clone(),
                        Action::SetRequest {
                            from: None,
                            to: default.as_str().to_owned(),
                        },
                    );
                    let record = self.record(&target);
                    record.limit = Some(default.as_str().to_owned());
                    record.request = Some(default.as_str().to_owned());
                    limit = default;
                }
            }
        }
        self.environment(&target, &path, &limit, literal_from_budget)
    }

    fn environment(
        &mut self,
        target: &Target,
        path: &[&str],
        limit: &Quantity,
        literal_from_budget: bool,
    ) -> Result<(), String> {
        let pod = self.pod;
        let container = pod
            .pointer(&pointer(path).to_string())
            .ok_or("planned an edit outside the pod")?;
        let env: &[Value] = match container.get("env") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(items)) => items.as_slice(),
            Some(_) => return Err(format!("{target}: env is not an array")),
        };
        let find = |name: &str| {
            env.iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        };

        if let Some(existing) = find(GOMEMLIMIT) {
            // Ours from an earlier pass? Then keep it in step with a limit that changed since.
            let recorded = self.previous(target).cloned().unwrap_or_default();
            let current = existing
                .get("value")
                .and_then(Value::as_str)
                .filter(|_| existing.get("valueFrom").is_none());
            match (recorded.gomemlimit.as_deref(), recorded.percent, current) {
                (Some(rec), Some(percent), Some(cur)) if rec == cur && rec != DOWNWARD => {
                    let bytes = limit.percent_of_bytes(percent);
                    if bytes.to_string() != cur && bytes > 0 {
                        let env_index = env
                            .iter()
                            .position(|e| e.get("name").and_then(Value::as_str) == Some(GOMEMLIMIT))
                            .unwrap_or_default();
                        self.edit(path).env_value = Some((env_index, bytes.to_string()));
                        self.change(
                            target.clone(),
                            Action::UpdateGomemlimit {
                                from: cur.to_owned(),
                                to: bytes,
                            },
                        );
                        self.record(target).gomemlimit = Some(bytes.to_string());
                    }
                }
                _ if recorded.gomemlimit.is_some() => {}
                _ => self.eval.actions.push("kept_gomemlimit"),
            }
            return Ok(());
        }

        let percent = self.effective.percent;
        let value = if percent == 100 && !literal_from_budget {
            GomemlimitValue::Downward
        } else {
            let bytes = limit.percent_of_bytes(percent);
            if bytes == 0 {
                self.skip(
                    target,
                    format_args!(
                        "{percent}% of {} is 0 bytes; GOMEMLIMIT not set",
                        limit.as_str()
                    ),
                );
                return Ok(());
            }
            GomemlimitValue::Literal {
                bytes,
                percent,
                of: limit.as_str().to_owned(),
            }
        };
        let entry = match &value {
            GomemlimitValue::Downward => json!({
                "name": GOMEMLIMIT,
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1"}}
            }),
            GomemlimitValue::Literal { bytes, .. } => {
                json!({"name": GOMEMLIMIT, "value": bytes.to_string()})
            }
        };
        let mut added = vec![entry];
        let record = self.record(target);
        match &value {
            GomemlimitValue::Downward => {
                record.gomemlimit = Some(DOWNWARD.to_owned());
                record.percent = None;
            }
            GomemlimitValue::Literal { bytes, percent, .. } => {
                record.gomemlimit = Some(bytes.to_string());
                record.percent = Some(*percent);
            }
        }
        self.change(target.clone(), Action::SetGomemlimit(value));

        let gogc = match self.effective.gogc {
            Gogc::Keep => None,
            Gogc::Off => Some("off".to_owned()),
            Gogc::Percent(n) => Some(n.to_string()),
        };
        if let Some(gogc) = gogc.filter(|_| find(GOGC).is_none()) {
            added.push(json!({"name": GOGC, "value": gogc}));
            self.record(target).gogc = Some(gogc.clone());
            self.change(target.clone(), Action::SetGogc(gogc));
        }

        if container
            .get("envFrom")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            self.warn(
                target,
                "envFrom may also define GOMEMLIMIT; the injected env entry takes precedence",
            );
        }

        self.edit(path).env.extend(added);
        Ok(())
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
