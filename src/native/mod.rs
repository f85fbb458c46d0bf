//! The policy as native admission policies: CEL evaluated inside the API server
//! (Kubernetes 1.36+), rendered from the same settings the webhook reads.
//!
//! A MutatingAdmissionPolicy makes the engine's JSONPatch, and ValidatingAdmissionPolicies
//! give its warnings, audit annotations and denials. The CEL is a transcription of the
//! engine (`engine::plan`, `engine::annotations`, `engine::patch`, `report`), rule by rule
//! and message by message; the engine stays the single source of truth for the offline
//! `mutate` and `audit` commands, and the end-to-end suite proves on a real API server that
//! both give the same pods. What CEL cannot express is listed in the README.
//!
//! `program` assembles the CEL from the parts in the other files; `objects` wraps it in
//! the Kubernetes objects; `chart` writes the same CEL into the Helm chart with the
//! policy settings left to its values.

mod annotations;
mod chart;
mod expr;
mod messages;
mod objects;
mod patch;
mod plan;
mod program;
mod resize;
mod settings;
mod status;

use serde_json::Value;

use crate::background::NamespaceSelection;
use crate::policy::{Mode, Policy};

pub use chart::{SNIPPETS_PATH, helm_snippets};

/// The name the policies take by default: the name of the webhook in the chart, so that
/// audit annotations read the same (`pods.gomemlimit.io/would-mutate`) with either engine.
pub const DEFAULT_NAME: &str = "pods.gomemlimit.io";

/// What the API server does when a policy cannot be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Reject the pod.
    Fail,
    /// Admit it as it is.
    Ignore,
}

/// How the policies are rendered besides the policy settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Name of the policies and bindings (the denying policy adds `deny.` in front).
    pub name: String,
    /// The namespaces the policies apply to, as the webhook configuration selects them.
    pub selection: NamespaceSelection,
    pub failure_policy: FailurePolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: DEFAULT_NAME.to_owned(),
            selection: NamespaceSelection::default(),
            failure_policy: FailurePolicy::Fail,
        }
    }
}

/// The policies and bindings for `policy`, in the order to apply them. With `mode: audit`
/// there is no mutating or denying policy: only warnings and audit annotations.
pub fn render(policy: &Policy, options: &Options) -> Vec<Value> {
    let program = program::Program::new(&settings::Settings::of(policy));
    objects::objects(&program, options, policy.mode == Mode::Enforce)
}

/// The objects as a YAML stream.
pub fn to_yaml(objects: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object).map_err(|e| e.to_string())?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::background::Selection;
    use crate::policy::Gogc;

    fn kinds(objects: &[Value]) -> Vec<(String, String)> {
        objects
            .iter()
            .map(|o| {
                let text = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap().to_owned();
                (text("/kind"), text("/metadata/name"))
            })
            .collect()
    }

    fn variable<'a>(policy: &'a Value, name: &str) -> &'a str {
        policy["spec"]["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["expression"].as_str())
            .unwrap_or_else(|| panic!("no variable {name}"))
    }

    #[test]
    fn enforce_renders_a_mutating_policy_and_two_validating_policies() {
        let objects = render(&Policy::default(), &Options::default());
        let name = |kind: &str, name: &str| (kind.to_owned(), name.to_owned());
        assert_eq!(
            kinds(&objects),
            [
                name("MutatingAdmissionPolicy", DEFAULT_NAME),
                name("MutatingAdmissionPolicyBinding", DEFAULT_NAME),
                name("ValidatingAdmissionPolicy", DEFAULT_NAME),
                name("ValidatingAdmissionPolicyBinding", DEFAULT_NAME),
                name("ValidatingAdmissionPolicy", "deny.pods.gomemlimit.io"),
                name(
                    "ValidatingAdmissionPolicyBinding",
                    "deny.pods.gomemlimit.io"
                ),
            ]
        );
        let mutating = &objects[0]["spec"];
        assert_eq!(mutating["reinvocationPolicy"], "IfNeeded");
        assert_eq!(mutating["failurePolicy"], "Fail");
        assert_eq!(mutating["mutations"][0]["patchType"], "JSONPatch");
        let rules = &mutating["matchConstraints"]["resourceRules"][0];
        assert_eq!(rules["operations"], serde_json::json!(["CREATE"]));
        assert_eq!(rules["resources"], serde_json::json!(["pods"]));
        assert_eq!(
            objects[3]["spec"]["validationActions"],
            serde_json::json!(["Warn"])
        );
        assert_eq!(
            objects[5]["spec"]["validationActions"],
            serde_json::json!(["Deny"])
        );
        assert_eq!(objects[4]["spec"]["validations"][0]["reason"], "Forbidden");
        assert_eq!(
            objects[2]["spec"]["validations"].as_array().unwrap().len(),
            program::MAX_WARNINGS
        );
    }

    #[test]
    fn only_the_validating_policies_see_resizes() {
        let objects = render(&Policy::default(), &Options::default());
        for object in objects
            .iter()
            .filter(|o| o["kind"].as_str().is_some_and(|k| k.ends_with("Policy")))
        {
            let rules = &object["spec"]["matchConstraints"]["resourceRules"];
            let resources: Vec<&str> = rules
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["resources"][0].as_str().unwrap())
                .collect();
            let expected: &[&str] = if object["kind"] == "MutatingAdmissionPolicy" {
                &["pods"]
            } else {
                &["pods", "pods/resize"]
            };
            assert_eq!(resources, expected, "{}", object["kind"]);
        }
    }

    #[test]
    fn audit_renders_only_warnings_and_audit_annotations() {
        let policy = Policy {
            mode: Mode::Audit,
            ..Policy::default()
        };
        let objects = render(&policy, &Options::default());
        assert_eq!(
            kinds(&objects),
            [
                (
                    "ValidatingAdmissionPolicy".to_owned(),
                    DEFAULT_NAME.to_owned()
                ),
                (
                    "ValidatingAdmissionPolicyBinding".to_owned(),
                    DEFAULT_NAME.to_owned()
                ),
            ]
        );
        assert_eq!(
            objects[1]["spec"]["validationActions"],
            serde_json::json!(["Warn", "Audit"])
        );
        let keys: Vec<&Value> = objects[0]["spec"]["auditAnnotations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["key"])
            .collect();
        assert_eq!(keys, ["would-deny", "would-mutate", "changes"]);
        assert_eq!(variable(&objects[0], "auditPolicy"), "true");
    }

    #[test]
    fn writes_the_settings_into_the_first_variables() {
        let policy = Policy {
            percent: 90,
            gogc: Gogc::Keep,
            ..Policy::default()
        };
        let objects = render(&policy, &Options::default());
        assert_eq!(variable(&objects[0], "percentPolicy"), "90");
        assert!(variable(&objects[0], "gogcPolicy").starts_with("[\"keep\"]"));
        let first = &objects[0]["spec"]["variables"][0]["name"];
        assert_eq!(first, "percentPolicy");
    }

    #[test]
    fn selects_namespaces_as_the_webhook_configuration_does() {
        let options = Options {
            selection: NamespaceSelection {
                selection: Selection::ClusterWide,
                excluded: vec!["monitoring".into(), "kube-system".into()],
            },
            failure_policy: FailurePolicy::Ignore,
            ..Options::default()
        };
        let objects = render(&Policy::default(), &options);
        for binding in objects
            .iter()
            .filter(|o| o["kind"].as_str().is_some_and(|k| k.ends_with("Binding")))
        {
            let selector = &binding["spec"]["matchResources"]["namespaceSelector"];
            assert_eq!(
                selector["matchExpressions"][1]["values"],
                serde_json::json!([
                    "kube-system",
                    "kube-public",
                    "kube-node-lease",
                    "monitoring"
                ])
            );
            let objects = &binding["spec"]["matchResources"]["objectSelector"];
            assert_eq!(objects["matchExpressions"][0]["operator"], "NotIn");
        }
        assert_eq!(objects[0]["spec"]["failurePolicy"], "Ignore");
        let opt_in = render(&Policy::default(), &Options::default());
        assert_eq!(
            opt_in[1]["spec"]["matchResources"]["namespaceSelector"],
            serde_json::json!({"matchLabels": {"gomemlimit.io/inject": "enabled"}})
        );
    }

    #[test]
    fn yaml_output_is_one_document_per_object() {
        let objects = render(&Policy::default(), &Options::default());
        let yaml = to_yaml(&objects).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs, objects);
    }
}
