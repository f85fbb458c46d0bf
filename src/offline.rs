//! Offline use of the engine: `mutate` (print manifests as the webhook would leave them) and
//! `audit -f` (report what it would change). Pods and the pod templates of workloads go
//! through [`engine::evaluate_as`], the very function behind `/mutate` and `/audit`, so an
//! offline answer and the webhook's answer cannot differ.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{self, Action, Change, Decision, GomemlimitValue, SkipReason, Target};
use crate::policy::{Mode, Policy};

/// Errors reading manifests; each names the input and, for YAML, the line.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("failed to read {name}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse {name}: document {document} (starting at line {line}): {message}")]
    Yaml {
        name: String,
        document: usize,
        line: usize,
        message: String,
    },
    #[error("failed to parse {name} as JSON: {source}")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to write YAML: {0}")]
    Write(String),
}

/// Kinds whose pod template sits at `spec.template`.
const TEMPLATE_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
];

/// One YAML document as written, with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chunk {
    /// The separator line that opened it (`---`), if any, with its newline.
    separator: String,
    /// Everything after the separator up to the next one.
    body: String,
    line: usize,
}

/// Splits a YAML stream on `---` lines, keeping every byte so that untouched documents
/// can be printed exactly as they came (comments included).
fn split_yaml(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = Chunk {
        separator: String::new(),
        body: String::new(),
        line: 1,
    };
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_separator = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if is_separator {
            if !current.separator.is_empty() || !current.body.is_empty() {
                chunks.push(current);
            }
            current = Chunk {
                separator: line.to_owned(),
                body: String::new(),
                line: i + 2,
            };
        } else {
            current.body.push_str(line);
        }
    }
    if !current.separator.is_empty() || !current.body.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Whether a document holds nothing but comments and blank lines.
fn is_blank(body: &str) -> bool {
    body.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

/// The report for one object: a Pod, or a workload by its pod template.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Live audit: how many pods the row stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<usize>,
    pub containers: Vec<ContainerReport>,
    pub warnings: Vec<String>,
    /// What enforce would deny, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<String>,
}

impl ObjectReport {
    /// Whether the webhook would change (or deny) this object.
    pub fn would_change(&self) -> bool {
        !self.containers.is_empty() || self.denied.is_some()
    }
}

/// A current → proposed pair.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Proposal {
    pub current: Option<String>,
    pub proposed: String,
}

/// What would change in one container (or, as `pod`, in pod-level resources).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    pub container: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<Proposal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<Proposal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gomemlimit: Option<Proposal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gogc: Option<Proposal>,
}

/// Groups the engine's changes by container, in order.
pub fn container_reports(changes: &[Change]) -> Vec<ContainerReport> {
    let mut out: Vec<ContainerReport> = Vec::new();
    for change in changes {
        let name = match &change.target {
            Target::Pod => "(pod)".to_owned(),
            Target::Container(n) => n.clone(),
        };
        let idx = match out.iter().position(|r| r.container == name) {
            Some(i) => i,
            None => {
                out.push(ContainerReport {
                    container: name,
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        let report = &mut out[idx];
        let proposal = |current: &Option<String>, proposed: &str| Proposal {
            current: current.clone(),
            proposed: proposed.to_owned(),
        };
        match &change.action {
            Action::SetRequest { from, to } => report.memory_request = Some(proposal(from, to)),
            Action::SetLimit { from, to } => report.memory_limit = Some(proposal(from, to)),
            Action::SetGomemlimit(GomemlimitValue::Downward) => {
                report.gomemlimit = Some(proposal(&None, "limits.memory"))
            }
            Action::SetGomemlimit(GomemlimitValue::Literal { bytes, .. }) => {
                report.gomemlimit = Some(proposal(&None, &bytes.to_string()))
            }
            Action::UpdateGomemlimit { from, to } => {
                report.gomemlimit = Some(proposal(&Some(from.clone()), &to.to_string()))
            }
            Action::SetGogc(v) => report.gogc = Some(proposal(&None, v)),
        }
    }
    out
}

/// The outcome of running one object through the engine.
#[derive(Debug)]
pub struct Processed {
    /// The object as the webhook would leave it; `None` when unchanged.
    pub mutated: Option<Value>,
    /// One report per Pod or workload found (a `List` yields several).
    pub reports: Vec<ObjectReport>,
}

/// Runs one Kubernetes object through the engine in `mode`. Pods and workload templates
/// are evaluated; `List` items recursively; anything else passes through unchanged.
pub fn process(object: &Value, policy: &Policy, mode: Mode, namespace: &str) -> Processed {
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"]
        .as_str()
        .or_else(|| object["metadata"]["generateName"].as_str())
        .unwrap_or_default()
        .to_owned();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(namespace)
        .to_owned();
    let report = |containers, warnings, denied| ObjectReport {
        kind: kind.to_owned(),
        namespace: namespace.clone(),
        name: name.clone(),
        pods: None,
        containers,
        warnings,
        denied,
    };

    if kind.ends_with("List") && object["items"].is_array() {
        let mut mutated = object.clone();
        let mut reports = Vec::new();
        let mut changed = false;
        for (i, item) in object["items"].as_array().into_iter().flatten().enumerate() {
            let processed = process(item, policy, mode, &namespace);
            reports.extend(processed.reports);
            if let Some(item) = processed.mutated {
                mutated["items"][i] = item;
                changed = true;
            }
        }
        return Processed {
            mutated: changed.then_some(mutated),
            reports,
        };
    }

    let template_path: &[&str] = match kind {
        "Pod" => &[],
        k if TEMPLATE_KINDS.contains(&k) => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => {
            return Processed {
                mutated: None,
                reports: Vec::new(),
            };
        }
    };
    let pointer: String = template_path.iter().map(|t| format!("/{t}")).collect();
    let Some(template) = object.pointer(&pointer) else {
        return Processed {
            mutated: None,
            reports: vec![report(
                Vec::new(),
                vec![format!(
                    "{kind} has no pod template at {pointer}; left unchanged"
                )],
                None,
            )],
        };
    };
    let pod = if template_path.is_empty() {
        template.clone()
    } else {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "spec": template.get("spec").cloned().unwrap_or(Value::Null),
        })
    };
    let eval = engine::evaluate_as(&pod, policy, mode);
    let mut warnings = eval.warnings.clone();
    if let Decision::Skipped(SkipReason::NotUnderstood(reason)) = &eval.decision {
        warnings.push(format!(
            "cannot read the pod template ({reason}); left unchanged"
        ));
    }
    let applies = eval.decision == Decision::Evaluated && !eval.audit_only;
    if eval.audit_only || mode == Mode::Audit {
        warnings.extend(eval.changes.iter().map(|c| c.describe(true)));
    }
    let mutated = (applies && !eval.patch.0.is_empty()).then(|| {
        let patched = eval.patched(&pod);
        if template_path.is_empty() {
            return patched;
        }
        let mut out = object.clone();
        let slot = out.pointer_mut(&pointer).expect("the template exists");
        // Metadata first, as in a pod template written by hand; other keys keep their order.
        let mut template = serde_json::Map::new();
        template.insert("metadata".into(), patched["metadata"].clone());
        for (key, value) in slot.as_object().into_iter().flatten() {
            if key != "metadata" {
                template.insert(key.clone(), value.clone());
            }
        }
        template.insert("spec".into(), patched["spec"].clone());
        *slot = Value::Object(template);
        out
    });
    Processed {
        mutated,
        reports: vec![report(
            container_reports(&eval.changes),
            warnings,
            match &eval.decision {
                Decision::Denied(message) => Some(message.clone()),
                _ => None,
            },
        )],
    }
}

/// The result of `mutate` or `audit -f` over one input.
#[derive(Debug)]
pub struct Output {
    /// The input with every changed document replaced (for `mutate`).
    pub text: String,
    pub reports: Vec<ObjectReport>,
}

/// Whether the input is JSON (a single object or array) rather than YAML.
fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with(['{', '['])
}

/// Processes a whole input: multi-document YAML or JSON. Untouched documents are kept
/// byte for byte; changed ones are re-serialized (their comments are lost).
pub fn process_text(
    name: &str,
    text: &str,
    policy: &Policy,
    mode: Mode,
    namespace: &str,
) -> Result<Output, OfflineError> {
    if looks_like_json(text) {
        let value: Value = serde_json::from_str(text).map_err(|source| OfflineError::Json {
            name: name.to_owned(),
            source,
        })?;
        let items: Vec<&Value> = match &value {
            Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        let mut reports = Vec::new();
        let mut changed = Vec::new();
        for item in &items {
            let processed = process(item, policy, mode, namespace);
            reports.extend(processed.reports);
            changed.push(processed.mutated);
        }
        if changed.iter().all(Option::is_none) {
            return Ok(Output {
                text: text.to_owned(),
                reports,
            });
        }
        let out = match &value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .zip(changed)
                    .map(|(orig, new)| new.unwrap_or_else(|| orig.clone()))
                    .collect(),
            ),
            v => changed
                .into_iter()
                .next()
                .flatten()
                .unwrap_or_else(|| v.clone()),
        };
        let mut text = serde_json::to_string_pretty(&out).expect("JSON serializes");
        text.push('\n');
        return Ok(Output { text, reports });
    }

    let mut out = String::with_capacity(text.len());
    let mut reports = Vec::new();
    for (index, chunk) in split_yaml(text).into_iter().enumerate() {
        out.push_str(&chunk.separator);
        if is_blank(&chunk.body) {
            out.push_str(&chunk.body);
            continue;
        }
        let value: Value = serde_saphyr::from_str(&chunk.body).map_err(|e| OfflineError::Yaml {
            name: name.to_owned(),
            document: index + 1,
            line: chunk.line,
            message: first_line(&e.to_string()),
        })?;
        let processed = process(&value, policy, mode, namespace);
        reports.extend(processed.reports);
        match processed.mutated {
            None => out.push_str(&chunk.body),
            Some(mutated) => {
                // Keep the comment lines that head the document.
                for line in chunk.body.split_inclusive('\n') {
                    let t = line.trim();
                    if t.is_empty() || t.starts_with('#') {
                        out.push_str(line);
                    } else {
                        break;
                    }
                }
                let yaml = serde_saphyr::to_string(&mutated)
                    .map_err(|e| OfflineError::Write(e.to_string()))?;
                out.push_str(&yaml);
                if !yaml.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
    Ok(Output { text: out, reports })
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// A unified diff of `before` and `after`, empty when equal.
pub fn unified_diff(name: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

/// The audit as a table: one row per container change, then the warnings.
pub fn table(reports: &[ObjectReport]) -> String {
    let fmt = |p: &Option<Proposal>| match p {
        None => "-".to_owned(),
        Some(Proposal {
            current: Some(c),
            proposed,
        }) => format!("{c} -> {proposed}"),
        Some(Proposal {
            current: None,
            proposed,
        }) => proposed.clone(),
    };
    let live = reports.iter().any(|r| r.pods.is_some());
    let mut rows: Vec<Vec<String>> = vec![
        ["NAMESPACE", "KIND", "NAME"]
            .into_iter()
            .chain(live.then_some("PODS"))
            .chain(["CONTAINER", "REQUEST", "LIMIT", "GOMEMLIMIT", "GOGC"])
            .map(str::to_owned)
            .collect(),
    ];
    for r in reports.iter().filter(|r| !r.containers.is_empty()) {
        for c in &r.containers {
            let mut row = vec![r.namespace.clone(), r.kind.clone(), r.name.clone()];
            if live {
                row.push(r.pods.map_or("-".to_owned(), |n| n.to_string()));
            }
            row.extend([
                c.container.clone(),
                fmt(&c.memory_request),
                fmt(&c.memory_limit),
                fmt(&c.gomemlimit),
                fmt(&c.gogc),
            ]);
            rows.push(row);
        }
    }
    let mut out = String::new();
    if rows.len() > 1 {
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
    }
    for r in reports {
        let who = format!("{} {}/{}", r.kind, r.namespace, r.name);
        if let Some(denied) = &r.denied {
            out.push_str(&format!("denied: {who}: {denied}\n"));
        }
        for w in r.warnings.iter().filter(|w| !w.contains(": would ")) {
            out.push_str(&format!("warning: {who}: {w}\n"));
        }
    }
    let changing = reports.iter().filter(|r| r.would_change()).count();
    out.push_str(&format!(
        "{changing} of {} objects would change\n",
        reports.len()
    ));
    out
}

/// The audit as JSON for machines.
pub fn json_report(reports: &[ObjectReport]) -> String {
    let changing = reports.iter().filter(|r| r.would_change()).count();
    let mut text = serde_json::to_string_pretty(&json!({
        "objects": reports,
        "summary": {"objects": reports.len(), "wouldChange": changing},
    }))
    .expect("reports serialize");
    text.push('\n');
    text
}

/// Groups live pods: one row per owning workload (and per distinct set of changes).
pub fn group_pods(
    pods: Vec<(String, String, String, Value)>,
    policy: &Policy,
) -> Vec<ObjectReport> {
    // (namespace, kind, name) → reports of its pods
    let mut groups: BTreeMap<(String, String, String), Vec<ObjectReport>> = BTreeMap::new();
    for (namespace, kind, name, pod) in pods {
        let mut reports = process(&pod, policy, Mode::Audit, &namespace).reports;
        for r in &mut reports {
            r.kind = kind.clone();
            r.name = name.clone();
        }
        groups
            .entry((namespace, kind, name))
            .or_default()
            .extend(reports);
    }
    let mut out = Vec::new();
    for (_, reports) in groups {
        // Pods of one workload usually agree; rows differ only where they do not.
        let mut distinct: Vec<(ObjectReport, usize)> = Vec::new();
        for r in reports {
            match distinct
                .iter_mut()
                .find(|(d, _)| d.containers == r.containers && d.denied == r.denied)
            {
                Some((_, n)) => *n += 1,
                None => distinct.push((r, 1)),
            }
        }
        for (mut r, n) in distinct {
            r.pods = Some(n);
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_yaml_keeping_every_byte() {
        let text = "# head\napiVersion: v1\n---\nkind: A\n--- # note\nkind: B\n...\n";
        let chunks = split_yaml(text);
        let joined: String = chunks
            .iter()
            .map(|c| format!("{}{}", c.separator, c.body))
            .collect();
        assert_eq!(joined, text);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].line, 4);
        assert_eq!(chunks[2].separator, "--- # note\n");
    }

    #[test]
    fn quotes_yaml_booleans_so_gogc_off_stays_a_string() {
        let yaml = serde_saphyr::to_string(&json!({"value": "off"})).unwrap();
        assert!(yaml.contains("\"off\""), "{yaml}");
    }
}
