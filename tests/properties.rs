//! Property tests over generated pods, through the same handler the server uses:
//! the patch always applies, a second pass is a no-op, and nothing outside the fields the
//! webhook owns changes (so fields unknown to any client library survive); and the one-pass
//! reading answers exactly as reading the body into a document does.

pub mod support;

use gomemlimit_injector::admission::{Endpoint, Outcome, Reading, handle_with};
use gomemlimit_injector::engine::STATUS;
use gomemlimit_injector::policy::{Gogc, MissingLimit, Policy};
use gomemlimit_injector::quantity::Quantity;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use support::review::*;

const QUANTITIES: &[&str] = &[
    "64Mi",
    "128Mi",
    "256Mi",
    "512Mi",
    "1Gi",
    "1.5Gi",
    ".5Gi",
    "1e9",
    "1E8",
    "500M",
    "1G",
    "128974848000m",
    "300000000",
    "268435456",
    "2Gi",
    "0",
    "1Mb",
    "1.5.5",
    "1e400",
];

fn quantity() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => Just(None),
        6 => prop::sample::select(QUANTITIES).prop_map(|q| Some(json!(q))),
        1 => (1u64..4_000_000_000).prop_map(|n| Some(json!(n))),
    ]
}

fn env_entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => "[A-Z_]{1,8}".prop_map(|n| json!({"name": n, "value": "v"})),
        1 => Just(json!({"name": "GOMEMLIMIT", "value": "300MiB"})),
        1 => Just(json!({"name": "GOMEMLIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}})),
        1 => Just(json!({"name": "GOGC", "value": "50"})),
        1 => Just(json!({"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})),
    ]
}

prop_compose! {
    fn container(name: String, sidecar: bool)(
        limit in quantity(),
        request in quantity(),
        cpu in any::<bool>(),
        env in prop::option::of(prop::collection::vec(env_entry(), 0..5)),
        env_from in any::<bool>(),
        future in any::<bool>(),
        resize in prop::option::of(prop::sample::select(&["cpu", "memory", "both"][..])),
    ) -> Value {
        let mut c = json!({"name": name, "image": "example.com/app:1"});
        if sidecar {
            c["restartPolicy"] = json!("Always");
        }
        let mut resources = Map::new();
        if let Some(l) = limit {
            resources.insert("limits".into(), json!({"memory": l}));
        }
        if let Some(r) = request {
            resources.insert("requests".into(), json!({"memory": r}));
        }
        if cpu {
            let limits = resources.entry("limits").or_insert_with(|| json!({}));
            limits["cpu"] = json!("500m");
        }
        if future {
            // Fields newer than any client library must survive untouched.
            resources.insert("futureResourceField".into(), json!({"a": 1}));
            c["futureContainerField"] = json!([1, "two"]);
        }
        if !resources.is_empty() {
            c["resources"] = Value::Object(resources);
        }
        if let Some(env) = env {
            c["env"] = Value::Array(env);
        }
        if env_from {
            c["envFrom"] = json!([{"configMapRef": {"name": "settings"}}]);
        }
        let cpu_policy = json!({"resourceName": "cpu", "restartPolicy": "NotRequired"});
        let memory_policy = json!({"resourceName": "memory", "restartPolicy": "NotRequired"});
        match resize {
            Some("cpu") => c["resizePolicy"] = json!([cpu_policy]),
            Some("memory") => c["resizePolicy"] = json!([memory_policy]),
            Some(_) => c["resizePolicy"] = json!([cpu_policy, memory_policy]),
            None => {}
        }
        c
    }
}

fn annotations() -> impl Strategy<Value = Map<String, Value>> {
    let percent = prop::option::of(prop::sample::select(
        &["50", "90", "100", "30", "abc", "95"][..],
    ));
    let gogc = prop::option::of(prop::sample::select(&["off", "keep", "100", "fast"][..]));
    let exclude = prop::option::of(prop::sample::select(&["c0", "c1,i0", "Bad_Name", ""][..]));
    let mode = prop::option::of(prop::sample::select(&["audit", "enforce"][..]));
    let other = prop::option::of(prop::sample::select(&["disabled", "enabled"][..]));
    let status = prop::option::of(prop::sample::select(
        &["{not json", "{}", "{\"containers\":{}}"][..],
    ));
    (percent, gogc, exclude, mode, other, status).prop_map(|(p, g, e, m, o, s)| {
        let mut a = Map::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                a.insert(k.into(), json!(v));
            }
        };
        put("gomemlimit.io/percent", p);
        put("gomemlimit.io/gogc", g);
        put("gomemlimit.io/exclude-containers", e);
        put("gomemlimit.io/mode", m);
        put("gomemlimit.io/inject", o);
        put(STATUS, s);
        put("team/owner", Some("payments"));
        a
    })
}

prop_compose! {
    fn pod()(n_app in 1usize..4, n_init in 0usize..3)(
        app in (0..n_app).map(|i| container(format!("c{i}"), false)).collect::<Vec<_>>(),
        init in (0..n_init).map(|i| container(format!("i{i}"), i % 2 == 0)).collect::<Vec<_>>(),
        annotations in prop::option::of(annotations()),
        pod_limit in prop::option::of(quantity()),
        future in any::<bool>(),
    ) -> Value {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "web-", "namespace": "default"},
            "spec": {"containers": app},
        });
        if !init.is_empty() {
            pod["spec"]["initContainers"] = Value::Array(init);
        }
        if let Some(a) = annotations {
            pod["metadata"]["annotations"] = Value::Object(a);
        }
        if let Some(Some(q)) = pod_limit {
            pod["spec"]["resources"] = json!({"limits": {"memory": q}});
        }
        if future {
            pod["spec"]["futurePodField"] = json!({"nested": {"x": true}});
            pod["metadata"]["futureMetaField"] = json!("kept");
        }
        pod
    }
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        50u8..=100,
        prop::sample::select(vec![Gogc::Off, Gogc::Keep, Gogc::Percent(100)]),
        prop::sample::select(vec![
            MissingLimit::Skip,
            MissingLimit::Deny,
            MissingLimit::Default,
        ]),
    )
        .prop_map(|(percent, gogc, missing_limit)| Policy {
            percent,
            gogc,
            missing_limit,
            default_memory: Some(Quantity::parse("256Mi").unwrap()),
            ..Policy::default()
        })
}

/// Removes every field the webhook may own, so that the rest can be compared.
fn strip_owned(pod: &Value, original: &Value) -> Value {
    let mut pod = pod.clone();
    if let Some(a) = pod
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(STATUS);
    }
    if original.pointer("/metadata/annotations").is_none()
        && pod
            .pointer("/metadata/annotations")
            .is_some_and(|a| a == &json!({}))
    {
        pod["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
    }
    strip_resources(&mut pod["spec"]);
    for list in ["containers", "initContainers"] {
        let Some(items) = pod["spec"].get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for (i, c) in items.iter_mut().enumerate() {
            strip_resources(c);
            strip_env(c, original["spec"][list][i]["env"].as_array());
            strip_resize_policy(c, original["spec"][list][i]["resizePolicy"].as_array());
        }
    }
    pod
}

/// Removes the memory request and limit, and what is left empty without them.
fn strip_resources(holder: &mut Value) {
    if let Some(r) = holder.get_mut("resources").and_then(Value::as_object_mut) {
        for kind in ["limits", "requests"] {
            if let Some(m) = r.get_mut(kind).and_then(Value::as_object_mut) {
                m.remove("memory");
                if m.is_empty() {
                    r.remove(kind);
                }
            }
        }
        if r.is_empty() {
            holder.as_object_mut().unwrap().remove("resources");
        }
    }
}

/// Removes the env entries added after the `original` ones, which must be ours.
fn strip_env(container: &mut Value, original: Option<&Vec<Value>>) {
    let keep = original.map_or(0, Vec::len);
    if let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) {
        for added in &env[keep..] {
            assert!(
                added["name"] == "GOMEMLIMIT" || added["name"] == "GOGC",
                "unexpected env entry added: {added}"
            );
        }
        env.truncate(keep);
    }
    if original.is_none() {
        container.as_object_mut().unwrap().remove("env");
    }
}

/// Removes the resizePolicy entry added after the `original` ones, which must be ours.
fn strip_resize_policy(container: &mut Value, original: Option<&Vec<Value>>) {
    let keep = original.map_or(0, Vec::len);
    if let Some(policies) = container
        .get_mut("resizePolicy")
        .and_then(Value::as_array_mut)
    {
        for added in &policies[keep..] {
            assert_eq!(
                added,
                &json!({"resourceName": "memory", "restartPolicy": "RestartContainer"}),
                "unexpected resizePolicy entry added"
            );
        }
        policies.truncate(keep);
    }
    if original.is_none() {
        container.as_object_mut().unwrap().remove("resizePolicy");
    }
}

fn names(container: &Value, name: &str) -> usize {
    container["env"]
        .as_array()
        .map_or(0, |env| env.iter().filter(|e| e["name"] == name).count())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn patch_applies_is_idempotent_and_touches_only_owned_fields(pod in pod(), policy in policy()) {
        let review = pod_review("prop-uid", &pod);
        let (reply, report) = handle_json(Endpoint::Mutate, &serde_json::to_vec(&review).unwrap(), &policy);
        prop_assert_eq!(reply.status, http::StatusCode::OK);
        let response = response_of(&reply.body);
        prop_assert_eq!(&response["uid"], "prop-uid");
        let patched = apply(&review, &response);

        if patch_of(&response).is_some() {
            prop_assert_eq!(report.outcome, Some(Outcome::Mutated));
        } else {
            prop_assert_ne!(report.outcome, Some(Outcome::Mutated));
            prop_assert_eq!(&patched, &pod);
        }

        // Nothing but owned fields changed; unknown fields survive.
        prop_assert_eq!(strip_owned(&patched, &pod), strip_owned(&pod, &pod));

        // No duplicate names are created.
        for list in ["containers", "initContainers"] {
            if let Some(items) = patched["spec"][list].as_array() {
                for (i, c) in items.iter().enumerate() {
                    let before = &pod["spec"][list][i];
                    for var in ["GOMEMLIMIT", "GOGC"] {
                        prop_assert!(names(c, var) <= names(before, var).max(1));
                    }
                    // A GOMEMLIMIT we add next to a container limit comes with request = limit.
                    if names(before, "GOMEMLIMIT") == 0
                        && names(c, "GOMEMLIMIT") == 1
                        && let (Some(l), Some(r)) = (
                            c["resources"]["limits"]["memory"].as_str(),
                            c["resources"]["requests"]["memory"].as_str(),
                        )
                    {
                        prop_assert!(Quantity::parse(l).unwrap() == Quantity::parse(r).unwrap());
                    }
                }
            }
        }

        // Sending the patched pod again yields no patch.
        let again = pod_review("prop-uid-2", &patched);
        let (reply, _) = handle_json(Endpoint::Mutate, &serde_json::to_vec(&again).unwrap(), &policy);
        let response = response_of(&reply.body);
        prop_assert!(patch_of(&response).is_none(), "second pass patched: {:?}", patch_of(&response));
    }

    #[test]
    fn audit_never_patches_and_keeps_warnings_short(pod in pod(), policy in policy()) {
        let review = pod_review("audit-uid", &pod);
        let (reply, _) = handle_json(Endpoint::Audit, &serde_json::to_vec(&review).unwrap(), &policy);
        let response = response_of(&reply.body);
        prop_assert_eq!(&response["allowed"], true);
        prop_assert!(response.get("patch").is_none());
        if let Some(warnings) = response["warnings"].as_array() {
            for w in warnings {
                prop_assert!(w.as_str().unwrap().chars().count() <= 120, "{}", w);
            }
        }
    }

    #[test]
    fn both_readings_answer_alike(pod in pod(), policy in policy(), pretty in any::<bool>()) {
        let review = pod_review("readings-uid", &pod);
        let body = if pretty {
            serde_json::to_vec_pretty(&review).unwrap()
        } else {
            serde_json::to_vec(&review).unwrap()
        };
        for endpoint in [Endpoint::Mutate, Endpoint::Audit] {
            let answer = |reading| {
                let (reply, report) =
                    handle_with(reading, endpoint, Some("application/json"), &body, &policy);
                (reply.status, reply.body, format!("{report:?}"))
            };
            let one_pass = answer(Reading::OnePass);
            let document = answer(Reading::Document);
            prop_assert_eq!(one_pass.0, document.0);
            prop_assert_eq!(String::from_utf8_lossy(&one_pass.1), String::from_utf8_lossy(&document.1));
            prop_assert_eq!(one_pass.2, document.2);
        }
    }
}
