//! Manifests through the engine: the objects of a YAML or JSON text (Pods, the pod
//! templates of workloads, `List` items) are evaluated by [`engine::evaluate_as`], the very
//! function behind `/mutate` and `/audit`, and written back as the webhook would leave
//! them. `mutate`, `audit -f` and the live audit (one pod at a time) use it, so their
//! answers and the webhook's cannot differ.

mod yaml;

use serde_json::{Value, json};

use crate::engine;
use crate::policy::Policy;
use crate::report::ObjectReport;

/// Errors reading manifests; each names the input and, for YAML, the line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("failed to read {name}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// `place` is where in the file: `line 7 column 9 (document 2)`.
    #[error("failed to parse {name}: {place}: {message}")]
    Yaml {
        name: String,
        place: String,
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
    "ReplicationController",
    "Job",
];

/// The outcome of running one object through the engine.
#[derive(Debug, Default)]
pub(crate) struct Processed {
    /// The object as the webhook would leave it; `None` when unchanged.
    pub(crate) mutated: Option<Value>,
    /// One report per Pod or workload found (a `List` yields several).
    pub(crate) reports: Vec<ObjectReport>,
}

/// Runs one Kubernetes object through the engine, as the webhook would in the policy's
/// mode (a pod's `gomemlimit.io/mode: audit` makes it audit only). Pods and workload templates
/// are evaluated; `List` items recursively; anything else passes through unchanged.
/// Objects that name no namespace are reported in `namespace`.
pub(crate) fn process(object: &Value, policy: &Policy, namespace: &str) -> Processed {
    let kind = object["kind"].as_str().unwrap_or_default();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(namespace);
    if kind.ends_with("List") && object["items"].is_array() {
        return process_list(object, policy, namespace);
    }
    let Some(pointer) = template_pointer(kind) else {
        return Processed::default();
    };
    let name = object["metadata"]["name"]
        .as_str()
        .or_else(|| object["metadata"]["generateName"].as_str())
        .unwrap_or_default();
    let Some(template) = object.pointer(pointer) else {
        let warning = format!("{kind} has no pod template at {pointer}; left unchanged");
        let report = ObjectReport::unevaluated(kind, namespace, name, vec![warning]);
        return Processed {
            mutated: None,
            reports: vec![report],
        };
    };
    let pod = template_pod(pointer, template);
    let eval = engine::evaluate_as(&pod, policy, policy.mode);
    let mutated = (eval.applies() && !eval.patch.is_empty())
        .then(|| with_template(object, pointer, &eval.patched(&pod)));
    Processed {
        mutated,
        reports: vec![ObjectReport::evaluated(kind, namespace, name, &eval)],
    }
}

/// Every item of a `List`, each in the list's namespace unless it names its own.
fn process_list(list: &Value, policy: &Policy, namespace: &str) -> Processed {
    let mut mutated = list.clone();
    let mut reports = Vec::new();
    let mut changed = false;
    for (i, item) in list["items"].as_array().into_iter().flatten().enumerate() {
        let processed = process(item, policy, namespace);
        reports.extend(processed.reports);
        if let Some(item) = processed.mutated {
            mutated["items"][i] = item;
            changed = true;
        }
    }
    Processed {
        mutated: changed.then_some(mutated),
        reports,
    }
}

/// The JSON pointer to the pod template of `kind` (the object itself for a Pod), if it
/// has one.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        k if TEMPLATE_KINDS.contains(&k) => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// The pod a template stands for, as the webhook would see it.
fn template_pod(pointer: &str, template: &Value) -> Value {
    if pointer.is_empty() {
        return template.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    })
}

/// `object` with the template at `pointer` taken from the `patched` pod.
fn with_template(object: &Value, pointer: &str, patched: &Value) -> Value {
    if pointer.is_empty() {
        return patched.clone();
    }
    let mut out = object.clone();
    let slot = out.pointer_mut(pointer).expect("the template exists");
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
}

/// The result of `mutate` or `audit -f` over one input.
#[derive(Debug)]
pub(crate) struct Output {
    /// The input with every changed document replaced (for `mutate`).
    pub(crate) text: String,
    pub(crate) reports: Vec<ObjectReport>,
}

/// Whether the input is JSON (a single object or array) rather than YAML.
fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with(['{', '['])
}

/// Processes a whole input: multi-document YAML or JSON. Untouched documents are kept
/// byte for byte; changed ones are re-serialized (their comments are lost).
pub(crate) fn process_text(
    name: &str,
    text: &str,
    policy: &Policy,
    namespace: &str,
) -> Result<Output, ManifestError> {
    let input = Input {
        name,
        policy,
        namespace,
    };
    if looks_like_json(text) {
        input.json(text)
    } else {
        input.yaml(text)
    }
}

/// One input and what its objects are processed with.
struct Input<'a> {
    /// How errors name the input.
    name: &'a str,
    policy: &'a Policy,
    namespace: &'a str,
}

impl Input<'_> {
    fn process(&self, object: &Value) -> Processed {
        process(object, self.policy, self.namespace)
    }

    /// One JSON object, or an array of them. A changed input is printed again as a whole.
    fn json(&self, text: &str) -> Result<Output, ManifestError> {
        let mut value: Value =
            serde_json::from_str(text).map_err(|source| ManifestError::Json {
                name: self.name.to_owned(),
                source,
            })?;
        // JSON is YAML too: read again through the YAML reader, which keeps a quantity
        // written as a number (`"memory": 1e9`) as written.
        if has_numeric_memory(&value)
            && let Ok(kept) = yaml::parse_text(text)
        {
            value = kept;
        }
        let items: Vec<&Value> = match &value {
            Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        let mut reports = Vec::new();
        let mut changed = Vec::new();
        for item in &items {
            let processed = self.process(item);
            reports.extend(processed.reports);
            changed.push(processed.mutated);
        }
        if changed.iter().all(Option::is_none) {
            let text = text.to_owned();
            return Ok(Output { text, reports });
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
        Ok(Output { text, reports })
    }

    /// A YAML stream: every document is printed as written, unless it changed.
    fn yaml(&self, text: &str) -> Result<Output, ManifestError> {
        let mut out = String::with_capacity(text.len());
        let mut reports = Vec::new();
        for (index, chunk) in yaml::split(text).into_iter().enumerate() {
            if yaml::is_blank(&chunk.body) {
                out.push_str(&chunk.separator);
                out.push_str(&chunk.body);
                continue;
            }
            let value = yaml::parse(&chunk).map_err(|e| {
                let document = index + 1;
                let place = match e.at {
                    Some((line, column)) => {
                        format!("line {line} column {column} (document {document})")
                    }
                    None => format!("document {document} (starting at line {})", chunk.line),
                };
                ManifestError::Yaml {
                    name: self.name.to_owned(),
                    place,
                    message: e.message,
                }
            })?;
            let processed = self.process(&value);
            reports.extend(processed.reports);
            let Some(mutated) = processed.mutated else {
                out.push_str(&chunk.separator);
                out.push_str(&chunk.body);
                continue;
            };
            // A document that started on its separator line starts on the next one now.
            out.push_str(chunk.separator.trim_end());
            if !chunk.separator.is_empty() {
                out.push('\n');
            }
            out.push_str(leading_comments(&chunk.body));
            let yaml = serde_saphyr::to_string(&mutated)
                .map_err(|e| ManifestError::Write(e.to_string()))?;
            out.push_str(&yaml);
            if !yaml.ends_with('\n') {
                out.push('\n');
            }
        }
        Ok(Output { text: out, reports })
    }
}

/// Whether a resource list anywhere in `value` has its memory written as a number.
fn has_numeric_memory(value: &Value) -> bool {
    match value {
        Value::Object(map) => {
            let numeric = |list: &str| value["resources"][list]["memory"].is_number();
            map.contains_key("resources") && (numeric("limits") || numeric("requests"))
                || map.values().any(has_numeric_memory)
        }
        Value::Array(items) => items.iter().any(has_numeric_memory),
        _ => false,
    }
}

/// The comment and blank lines that head a document, kept when it is printed again.
fn leading_comments(body: &str) -> &str {
    let mut end = 0;
    for line in body.split_inclusive('\n') {
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') {
            break;
        }
        end += line.len();
    }
    &body[..end]
}

/// A unified diff of `before` and `after`, empty when equal.
pub(crate) fn unified_diff(name: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_yaml_booleans_so_gogc_off_stays_a_string() {
        let yaml = serde_saphyr::to_string(&json!({"value": "off"})).unwrap();
        assert!(yaml.contains("\"off\""), "{yaml}");
    }
}
