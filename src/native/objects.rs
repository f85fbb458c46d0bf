//! The Kubernetes objects: a MutatingAdmissionPolicy for the mutations, a
//! ValidatingAdmissionPolicy for the warnings and audit annotations, and, in enforce, one
//! for the denials; each with its binding, which carries the selection. The validating
//! policies also match in-place resizes.

use serde_json::{Value, json};

use super::program::{MAX_WARNINGS, Named, Program, Validation, Variable};
use super::{FailurePolicy, Options};
use crate::background::{NamespaceSelection, SYSTEM_NAMESPACES, Selection};

const API_VERSION: &str = "admissionregistration.k8s.io/v1";

/// The objects for `program`, in the order to apply them. `enforce` is false when every
/// pod is audited: then there is nothing to mutate or deny.
pub(super) fn objects(program: &Program, options: &Options, enforce: bool) -> Vec<Value> {
    let variables: Vec<Value> = program.variables.iter().map(variable).collect();
    let mut out = Vec::new();
    if enforce {
        out.extend(mutating(program, &variables, options));
    }
    out.extend(warning(&variables, options, enforce));
    if enforce {
        out.extend(denying(&variables, options));
    }
    out
}

/// The MutatingAdmissionPolicy and its binding.
fn mutating(program: &Program, variables: &[Value], options: &Options) -> [Value; 2] {
    let mut all = variables.to_vec();
    all.extend(program.patch.iter().map(variable));
    let spec = json!({
        "reinvocationPolicy": "IfNeeded",
        "variables": all,
        "mutations": [{
            "patchType": "JSONPatch",
            "jsonPatch": {"expression": Program::mutation()},
        }],
    });
    let name = &options.name;
    [
        policy("MutatingAdmissionPolicy", name, options, false, spec),
        binding("MutatingAdmissionPolicyBinding", name, options, None),
    ]
}

/// The ValidatingAdmissionPolicy that gives the warnings and audit annotations, and its
/// binding: `Warn`, and in audit also `Audit`.
fn warning(variables: &[Value], options: &Options, enforce: bool) -> [Value; 2] {
    let warnings: Vec<Value> = (0..MAX_WARNINGS)
        .map(|i| validation(&Program::warning(i)))
        .collect();
    let annotations: Vec<Value> = Program::audit_annotations()
        .iter()
        .map(|a| json!({"key": a.name, "valueExpression": a.expression}))
        .collect();
    let spec = json!({
        "variables": variables,
        "validations": warnings,
        "auditAnnotations": annotations,
    });
    let actions = if enforce {
        json!(["Warn"])
    } else {
        json!(["Warn", "Audit"])
    };
    let name = &options.name;
    [
        policy("ValidatingAdmissionPolicy", name, options, true, spec),
        binding(
            "ValidatingAdmissionPolicyBinding",
            name,
            options,
            Some(actions),
        ),
    ]
}

/// The ValidatingAdmissionPolicy that denies, and its binding.
fn denying(variables: &[Value], options: &Options) -> [Value; 2] {
    let spec = json!({
        "variables": variables,
        "validations": [validation(&Program::denial())],
    });
    let name = deny_name(&options.name);
    [
        policy("ValidatingAdmissionPolicy", &name, options, true, spec),
        binding(
            "ValidatingAdmissionPolicyBinding",
            &name,
            options,
            Some(json!(["Deny"])),
        ),
    ]
}

/// The name of the validating policy that denies.
pub(super) fn deny_name(name: &str) -> String {
    format!("deny.{name}")
}

fn variable(v: &Variable) -> Value {
    json!({"name": v.name, "expression": v.expression})
}

fn validation(v: &Validation) -> Value {
    json!({
        "expression": v.expression,
        "messageExpression": v.message_expression,
        "message": v.message,
        "reason": "Forbidden",
    })
}

fn condition(c: &Named) -> Value {
    json!({"name": c.name, "expression": c.expression})
}

/// A policy: `CREATE` of pods (and with `resize`, `UPDATE` of `pods/resize`), the match
/// conditions, and `rest` of its spec.
fn policy(kind: &str, name: &str, options: &Options, resize: bool, rest: Value) -> Value {
    let conditions: Vec<Value> = Program::match_conditions().iter().map(condition).collect();
    let rule = |operation: &str, resource: &str| {
        json!({
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": [operation],
            "resources": [resource],
            "scope": "Namespaced",
        })
    };
    let mut rules = vec![rule("CREATE", "pods")];
    if resize {
        rules.push(rule("UPDATE", "pods/resize"));
    }
    let mut spec = json!({
        "failurePolicy": match options.failure_policy {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        },
        "matchConstraints": {
            "matchPolicy": "Equivalent",
            "resourceRules": rules,
        },
        "matchConditions": conditions,
    });
    if let (Some(spec), Value::Object(rest)) = (spec.as_object_mut(), rest) {
        spec.extend(rest);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// A binding of the policy `name` to the selected namespaces, with validation `actions`.
fn binding(kind: &str, name: &str, options: &Options, actions: Option<Value>) -> Value {
    let mut spec = json!({
        "policyName": name,
        "matchResources": {
            "namespaceSelector": namespace_selector(&options.selection),
            "objectSelector": {"matchExpressions": [
                {"key": crate::engine::INJECT, "operator": "NotIn", "values": ["disabled"]},
            ]},
        },
    });
    if let Some(actions) = actions {
        spec["validationActions"] = actions;
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// The namespaces the policies apply to, as the webhook configuration selects them.
fn namespace_selector(selection: &NamespaceSelection) -> Value {
    match selection.selection {
        Selection::OptIn => json!({"matchLabels": {crate::engine::INJECT: "enabled"}}),
        Selection::ClusterWide => {
            let mut names: Vec<&str> = SYSTEM_NAMESPACES.to_vec();
            for name in &selection.excluded {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
            json!({"matchExpressions": [
                {"key": crate::engine::INJECT, "operator": "NotIn", "values": ["disabled"]},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": names},
            ]})
        }
    }
}
