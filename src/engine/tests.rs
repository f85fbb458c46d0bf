use super::*;
use crate::policy::{Gogc, MissingLimit, Mode, Policy};
use crate::text::MAX_WARNING_LEN;
use serde_json::{Value, json};

fn container(name: &str, limit: Option<&str>, request: Option<&str>) -> Value {
    let mut c = json!({"name": name, "image": "example.com/app:1"});
    if let Some(l) = limit {
        c["resources"]["limits"]["memory"] = json!(l);
    }
    if let Some(r) = request {
        c["resources"]["requests"]["memory"] = json!(r);
    }
    c
}

fn pod(containers: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": containers}
    })
}

/// A pod with the one container `app`, limited to `limit`.
fn app_pod(limit: &str) -> Value {
    pod(vec![container("app", Some(limit), None)])
}

fn with_annotation(mut pod: Value, key: &str, value: &str) -> Value {
    pod["metadata"]["annotations"][key] = json!(value);
    pod
}

/// An evaluation with its patch applied, as the API server would.
struct Out {
    eval: Evaluation,
    mutated: Value,
}

impl std::ops::Deref for Out {
    type Target = Evaluation;
    fn deref(&self) -> &Evaluation {
        &self.eval
    }
}

fn eval(pod: &Value, policy: &Policy) -> Out {
    let eval = evaluate_as(pod, policy, policy.mode);
    let mutated = eval.patched(pod);
    Out { eval, mutated }
}

fn run(pod: &Value) -> Out {
    eval(pod, &Policy::default())
}

fn env<'a>(pod: &'a Value, list: &str, i: usize) -> Vec<&'a Value> {
    pod["spec"][list][i]["env"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn env_value<'a>(pod: &'a Value, list: &str, i: usize, name: &str) -> Option<&'a Value> {
    env(pod, list, i).into_iter().find(|e| e["name"] == name)
}

fn memory(pod: &Value, list: &str, i: usize, kind: &str) -> Option<String> {
    pod["spec"][list][i]["resources"][kind]["memory"]
        .as_str()
        .map(str::to_owned)
}

fn status(pod: &Value) -> Status {
    serde_json::from_str(
        pod["metadata"]["annotations"][STATUS]
            .as_str()
            .expect("status"),
    )
    .unwrap()
}

#[test]
fn request_equals_limit_rules() {
    // (limit, request, expected limit, expected request)
    type Row<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let table: &[Row] = &[
        (Some("512Mi"), None, Some("512Mi"), Some("512Mi")),
        (Some("512Mi"), Some("256Mi"), Some("512Mi"), Some("512Mi")),
        (Some("512Mi"), Some("512Mi"), Some("512Mi"), Some("512Mi")),
        // Equal by value, written differently: left as written.
        (Some("1Gi"), Some("1024Mi"), Some("1Gi"), Some("1024Mi")),
        (Some("1G"), Some("1e9"), Some("1G"), Some("1e9")),
        (None, Some("256Mi"), Some("256Mi"), Some("256Mi")),
        (Some("1.5Gi"), Some("1Gi"), Some("1.5Gi"), Some("1.5Gi")),
        (
            Some("128974848000m"),
            Some("100Mi"),
            Some("128974848000m"),
            Some("128974848000m"),
        ),
    ];
    for (limit, request, want_limit, want_request) in table {
        let p = pod(vec![container("app", *limit, *request)]);
        let e = run(&p);
        assert_eq!(e.decision, Decision::Evaluated, "{limit:?}/{request:?}");
        assert_eq!(
            memory(&e.mutated, "containers", 0, "limits").as_deref(),
            *want_limit
        );
        assert_eq!(
            memory(&e.mutated, "containers", 0, "requests").as_deref(),
            *want_request
        );
    }
}

#[test]
fn sets_request_to_limit_and_describes_it() {
    let p = pod(vec![container("app", Some("512Mi"), Some("256Mi"))]);
    let e = run(&p);
    assert_eq!(
        crate::report::describe(&e.changes().next().unwrap()),
        "container \"app\": would set requests.memory to 512Mi (was 256Mi)"
    );
    assert_eq!(
        crate::report::summary(e.changes().take(1)),
        "app: requests.memory 256Mi->512Mi"
    );
}

#[test]
fn injects_downward_api_gomemlimit_and_gogc_off() {
    let e = run(&app_pod("512Mi"));
    let gml = env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").unwrap();
    assert_eq!(
        gml,
        &json!({"name": "GOMEMLIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1"}}})
    );
    assert!(
        gml["valueFrom"]["resourceFieldRef"]
            .get("containerName")
            .is_none()
    );
    assert_eq!(
        env_value(&e.mutated, "containers", 0, "GOGC").unwrap(),
        &json!({"name": "GOGC", "value": "off"})
    );
    let s = status(&e.mutated);
    assert_eq!(
        s.containers["app"].gomemlimit.as_deref(),
        Some("limits.memory")
    );
    assert_eq!(s.containers["app"].gogc.as_deref(), Some("off"));
    assert_eq!(s.containers["app"].request.as_deref(), Some("512Mi"));
}

#[test]
fn literal_gomemlimit_is_floor_of_percent_in_bytes() {
    // (limit, percent, literal)
    let table: &[(&str, u8, &str)] = &[
        ("512Mi", 90, "483183820"),
        ("512Mi", 95, "510027366"),
        ("1Gi", 50, "536870912"),
        ("1G", 99, "990000000"),
        ("1.5Gi", 90, "1449551462"),
        ("500M", 93, "465000000"),
        ("128974848000m", 90, "116077363"),
        ("7Ei", 99, "7989746026925449543"),
    ];
    for (limit, percent, literal) in table {
        let policy = Policy {
            percent: *percent,
            ..Policy::default()
        };
        let e = eval(&app_pod(limit), &policy);
        let gml = env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").unwrap();
        assert_eq!(
            gml,
            &json!({"name": "GOMEMLIMIT", "value": literal}),
            "{limit} {percent}"
        );
        assert_eq!(
            status(&e.mutated).containers["app"].gomemlimit.as_deref(),
            Some(*literal)
        );
        assert_eq!(status(&e.mutated).containers["app"].percent, Some(*percent));
    }
}

#[test]
fn existing_gomemlimit_wins_and_no_gogc_is_added() {
    for existing in [
        json!({"name": "GOMEMLIMIT", "value": "100MiB"}),
        json!({"name": "GOMEMLIMIT", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}),
    ] {
        let mut c = container("app", Some("512Mi"), Some("256Mi"));
        c["env"] = json!([{"name": "A", "value": "1"}, existing.clone()]);
        let e = run(&pod(vec![c]));
        let env = env(&e.mutated, "containers", 0);
        assert_eq!(env.len(), 2, "no variable added");
        assert_eq!(env[1], &existing);
        // The request still follows the limit.
        assert_eq!(
            memory(&e.mutated, "containers", 0, "requests").as_deref(),
            Some("512Mi")
        );
        assert!(e.events.contains(&ContainerEvent::KeptGomemlimit));
    }
}

#[test]
fn existing_gogc_is_kept_and_gomemlimit_added() {
    let mut c = container("app", Some("512Mi"), Some("512Mi"));
    c["env"] = json!([{"name": "GOGC", "value": "50"}]);
    let e = run(&pod(vec![c]));
    let env = env(&e.mutated, "containers", 0);
    assert_eq!(env.len(), 2);
    assert_eq!(env[0], &json!({"name": "GOGC", "value": "50"}));
    assert_eq!(env[1]["name"], "GOMEMLIMIT");
}

#[test]
fn gogc_policies() {
    // (policy gogc, annotation, expected GOGC value)
    let table: &[(Gogc, Option<&str>, Option<&str>)] = &[
        (Gogc::Off, None, Some("off")),
        (Gogc::Keep, None, None),
        (Gogc::Percent(100), None, Some("100")),
        (Gogc::Off, Some("keep"), None),
        (Gogc::Keep, Some("200"), Some("200")),
        (Gogc::Percent(100), Some("off"), Some("off")),
    ];
    for (gogc, annotation, want) in table {
        let policy = Policy {
            gogc: *gogc,
            ..Policy::default()
        };
        let mut p = app_pod("1Gi");
        if let Some(a) = annotation {
            p = with_annotation(p, GOGC_ANNOTATION, a);
        }
        let e = eval(&p, &policy);
        assert_eq!(e.decision, Decision::Evaluated);
        let got =
            env_value(&e.mutated, "containers", 0, "GOGC").map(|v| v["value"].as_str().unwrap());
        assert_eq!(got, *want, "{gogc:?} {annotation:?}");
    }
}

#[test]
fn percent_annotation_overrides_policy_within_bounds() {
    let p = with_annotation(app_pod("1000"), PERCENT, "75");
    let e = run(&p);
    assert_eq!(
        env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").unwrap()["value"],
        "750"
    );
    // 100 through the annotation means the downward API, like the policy.
    let p = with_annotation(app_pod("1000"), PERCENT, "100");
    let e = eval(
        &p,
        &Policy {
            percent: 90,
            ..Policy::default()
        },
    );
    assert!(
        env_value(&e.mutated, "containers", 0, "GOMEMLIMIT")
            .unwrap()
            .get("valueFrom")
            .is_some()
    );
}

#[test]
fn invalid_annotations_deny_in_enforce_and_warn_in_audit() {
    // (annotation, value, text the message must contain)
    let table: &[(&str, &str, &str)] = &[
        (PERCENT, "40", "integers 50 to 100"),
        (PERCENT, "101", "integers 50 to 100"),
        (PERCENT, "abc", PERCENT),
        (PERCENT, "+90", PERCENT),
        (PERCENT, " 90", PERCENT),
        (GOGC_ANNOTATION, "fast", "off, keep or an integer"),
        (GOGC_ANNOTATION, "-1", GOGC_ANNOTATION),
        (MODE, "enforce", "\"audit\""),
        (EXCLUDE_CONTAINERS, "app,Bad_Name", EXCLUDE_CONTAINERS),
    ];
    for (key, value, needle) in table {
        let p = with_annotation(app_pod("1Gi"), key, value);
        let e = run(&p);
        match &e.decision {
            Decision::Denied(msg) => {
                assert!(msg.contains(needle), "{key}={value}: {msg}");
                assert!(msg.contains(key), "{key}={value}: {msg}");
            }
            other => panic!("{key}={value}: expected a denial, got {other:?}"),
        }
        assert!(!e.has_changes());
        assert_eq!(e.mutated, p);

        let audit = eval(
            &p,
            &Policy {
                mode: Mode::Audit,
                ..Policy::default()
            },
        );
        // Audit decides what enforce would do, previews no change enforce would never
        // make, and the webhook warns instead of denying.
        assert_eq!(audit.decision, e.decision, "{key}={value}");
        assert!(audit.audit_only && !audit.has_changes(), "{key}={value}");
        let warnings = crate::report::webhook_warnings(&audit);
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("would deny: invalid annotation") && w.contains(key)),
            "{key}={value}: {warnings:?}"
        );
    }
}

#[test]
fn mode_annotation_turns_a_pod_to_audit() {
    let p = with_annotation(app_pod("1Gi"), MODE, "audit");
    let e = run(&p);
    assert!(e.audit_only);
    assert!(e.has_changes(), "audit still reports the changes");
}

#[test]
fn init_containers_and_native_sidecars_are_targets() {
    let mut p = app_pod("1Gi");
    let mut sidecar = container("proxy", Some("128Mi"), Some("64Mi"));
    sidecar["restartPolicy"] = json!("Always");
    p["spec"]["initContainers"] = json!([container("setup", Some("64Mi"), None), sidecar]);
    p["spec"]["ephemeralContainers"] = json!([container("debug", Some("64Mi"), None)]);
    let e = run(&p);
    for i in 0..2 {
        assert!(env_value(&e.mutated, "initContainers", i, "GOMEMLIMIT").is_some());
    }
    assert_eq!(
        memory(&e.mutated, "initContainers", 1, "requests").as_deref(),
        Some("128Mi")
    );
    assert_eq!(
        e.mutated["spec"]["initContainers"][1]["restartPolicy"],
        "Always"
    );
    assert_eq!(
        e.mutated["spec"]["ephemeralContainers"],
        p["spec"]["ephemeralContainers"]
    );
    let s = status(&e.mutated);
    assert_eq!(
        s.containers.keys().collect::<Vec<_>>(),
        ["app", "proxy", "setup"]
    );
}

/// One container with neither request nor limit, one with a limit.
fn pod_with_a_container_without_memory() -> Value {
    pod(vec![
        container("app", None, None),
        container("ok", Some("1Gi"), None),
    ])
}

#[test]
fn missing_limit_skip_leaves_the_container_with_a_warning() {
    let skip = run(&pod_with_a_container_without_memory());
    assert_eq!(skip.decision, Decision::Evaluated);
    assert!(
        skip.warnings
            .iter()
            .any(|w| w.contains("\"app\"") && w.contains("no memory"))
    );
    assert!(skip.mutated["spec"]["containers"][0].get("env").is_none());
    assert!(env_value(&skip.mutated, "containers", 1, "GOMEMLIMIT").is_some());
}

#[test]
fn missing_limit_deny_denies_in_enforce_and_warns_in_audit() {
    let p = pod_with_a_container_without_memory();
    let deny = eval(
        &p,
        &Policy {
            missing_limit: MissingLimit::Deny,
            ..Policy::default()
        },
    );
    match &deny.decision {
        Decision::Denied(msg) => assert!(
            msg.contains("\"app\"") && msg.contains("missingLimit"),
            "{msg}"
        ),
        other => panic!("expected denial, got {other:?}"),
    }
    assert!(!deny.has_changes());

    let audit_deny = eval(
        &p,
        &Policy {
            missing_limit: MissingLimit::Deny,
            mode: Mode::Audit,
            ..Policy::default()
        },
    );
    assert_eq!(audit_deny.decision, deny.decision);
    assert!(audit_deny.audit_only && !audit_deny.has_changes());
    assert!(
        crate::report::webhook_warnings(&audit_deny)
            .iter()
            .any(|w| w.starts_with("would deny: container \"app\" has no memory limit"))
    );
}

#[test]
fn missing_limit_default_sets_request_and_limit() {
    let default = eval(
        &pod_with_a_container_without_memory(),
        &Policy {
            missing_limit: MissingLimit::Default,
            default_memory: Some(crate::quantity::Quantity::parse("256Mi").unwrap()),
            ..Policy::default()
        },
    );
    assert_eq!(
        memory(&default.mutated, "containers", 0, "limits").as_deref(),
        Some("256Mi")
    );
    assert_eq!(
        memory(&default.mutated, "containers", 0, "requests").as_deref(),
        Some("256Mi")
    );
    assert!(env_value(&default.mutated, "containers", 0, "GOMEMLIMIT").is_some());
}

#[test]
fn unparseable_or_unusable_quantities_skip_the_container() {
    // (limit, request, warning text)
    let table: &[(Option<&str>, Option<&str>, &str)] = &[
        (Some("1Mb"), None, "cannot parse limits.memory \"1Mb\""),
        (Some("1Gi"), Some("1.5.5"), "cannot parse requests.memory"),
        (Some("1e400"), None, "out of range"),
        (Some("0"), None, "zero"),
        (None, Some("0"), "zero"),
        (Some("256Mi"), Some("512Mi"), "exceeds limits.memory"),
    ];
    for (limit, request, needle) in table {
        let p = pod(vec![
            container("app", *limit, *request),
            container("ok", Some("1Gi"), None),
        ]);
        let e = run(&p);
        assert_eq!(
            e.mutated["spec"]["containers"][0], p["spec"]["containers"][0],
            "{limit:?}"
        );
        assert!(
            e.warnings.iter().any(|w| w.contains(needle)),
            "{limit:?}: {:?}",
            e.warnings
        );
        assert!(env_value(&e.mutated, "containers", 1, "GOMEMLIMIT").is_some());
    }
}

#[test]
fn literal_of_zero_bytes_is_not_injected() {
    let e = eval(
        &app_pod("1"),
        &Policy {
            percent: 90,
            ..Policy::default()
        },
    );
    assert!(env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").is_none());
    assert!(e.warnings.iter().any(|w| w.contains("0 bytes")));
}

#[test]
fn envfrom_gets_a_warning_and_still_injects() {
    let mut c = container("app", Some("1Gi"), None);
    c["envFrom"] = json!([{"configMapRef": {"name": "settings"}}]);
    let e = run(&pod(vec![c]));
    assert!(env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").is_some());
    assert!(e.warnings.iter().any(|w| w.contains("envFrom")));
}

#[test]
fn exclusions_by_policy_and_annotation() {
    let p = with_annotation(
        pod(vec![
            container("app", Some("1Gi"), None),
            container("istio-proxy", Some("1Gi"), None),
            container("log", Some("1Gi"), None),
        ]),
        EXCLUDE_CONTAINERS,
        " log , ",
    );
    let policy = Policy {
        exclude_containers: ["istio-proxy".to_owned()].into(),
        ..Policy::default()
    };
    let e = eval(&p, &policy);
    assert!(env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").is_some());
    assert_eq!(
        e.mutated["spec"]["containers"][1],
        p["spec"]["containers"][1]
    );
    assert_eq!(
        e.mutated["spec"]["containers"][2],
        p["spec"]["containers"][2]
    );
    assert_eq!(
        e.events
            .iter()
            .filter(|e| **e == ContainerEvent::Excluded)
            .count(),
        2
    );
}

#[test]
fn opted_out_and_mirror_pods_are_skipped() {
    let base = app_pod("1Gi");
    let mut labelled = base.clone();
    labelled["metadata"]["labels"] = json!({INJECT: "disabled"});
    let annotated = with_annotation(base.clone(), INJECT, "disabled");
    let mirror = with_annotation(base.clone(), MIRROR, "abc123");
    for (p, reason) in [
        (labelled, SkipReason::Disabled),
        (annotated, SkipReason::Disabled),
        (mirror, SkipReason::Mirror),
    ] {
        let e = run(&p);
        assert_eq!(e.decision, Decision::Skipped(reason));
        assert!(!e.has_changes());
        assert_eq!(e.mutated, p);
    }
    // Any other value of the label is not an opt-out.
    let mut enabled = base;
    enabled["metadata"]["labels"] = json!({INJECT: "enabled"});
    assert!(run(&enabled).has_changes());
}

#[test]
fn pod_level_resources_keep_request_equal_limit_and_budget_a_single_container() {
    let mut p = pod(vec![
        container("app", None, None),
        container("side", Some("64Mi"), None),
    ]);
    p["spec"]["resources"] =
        json!({"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "512Mi"}});
    let e = eval(
        &p,
        &Policy {
            percent: 90,
            ..Policy::default()
        },
    );
    assert_eq!(e.mutated["spec"]["resources"]["requests"]["memory"], "1Gi");
    assert_eq!(e.mutated["spec"]["resources"]["limits"]["cpu"], "1");
    // The only container without a limit gets a literal from what the others leave of the
    // pod limit, and no limit.
    let left = (1u64 << 30) - (64 << 20);
    assert_eq!(
        env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").unwrap()["value"],
        (left * 90 / 100).to_string()
    );
    assert!(memory(&e.mutated, "containers", 0, "limits").is_none());
    assert_eq!(
        memory(&e.mutated, "containers", 1, "requests").as_deref(),
        Some("64Mi")
    );
    assert_eq!(
        status(&e.mutated).pod.unwrap().request.as_deref(),
        Some("1Gi")
    );

    // Even at 100% the budget is given as a literal: the container has no limit to refer to.
    let e = run(&p);
    assert_eq!(
        env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").unwrap()["value"],
        left.to_string()
    );
    assert_eq!(
        status(&e.mutated).containers["app"].budget.as_deref(),
        Some("1Gi - 64Mi (side) = 1006632960")
    );
}

#[test]
fn containers_without_limits_sharing_a_pod_limit_get_no_guess() {
    let mut two = pod(vec![
        container("a", None, None),
        container("b", None, Some("100Mi")),
    ]);
    two["spec"]["resources"] = json!({"requests": {"memory": "1Gi"}});
    let e = run(&two);
    assert_eq!(e.mutated["spec"]["resources"]["limits"]["memory"], "1Gi");
    assert!(env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").is_none());
    assert!(env_value(&e.mutated, "containers", 1, "GOMEMLIMIT").is_none());
    assert_eq!(
        e.warnings
            .iter()
            .filter(|w| w.contains("shares the pod limit"))
            .count(),
        2
    );
}

#[test]
fn a_pod_budget_is_not_overcommitted() {
    // 200Mi for the pod, 100Mi of it the sibling's: the container without a limit gets the
    // other 100Mi, not the whole pod limit. The ordinary init container runs before and
    // does not count; the native sidecar runs beside and does.
    let mut p = pod(vec![
        container("app", None, None),
        container("sibling", Some("100Mi"), None),
    ]);
    p["spec"]["resources"] = json!({"limits": {"memory": "200Mi"}});
    let e = run(&p);
    assert_eq!(
        env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").unwrap()["value"],
        (100u64 << 20).to_string()
    );
    let mut init = container("init", Some("150Mi"), None);
    let mut sidecar = container("side", Some("40Mi"), None);
    sidecar["restartPolicy"] = json!("Always");
    init["name"] = json!("init");
    p["spec"]["initContainers"] = json!([init, sidecar]);
    let e = run(&p);
    assert_eq!(
        env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").unwrap()["value"],
        (60u64 << 20).to_string()
    );
    assert_eq!(
        status(&e.mutated).containers["app"].budget.as_deref(),
        Some("200Mi - 40Mi (side) - 100Mi (sibling) = 62914560")
    );

    // Nothing left: a warning and no GOMEMLIMIT.
    p["spec"]["containers"][1]["resources"]["limits"]["memory"] = json!("160Mi");
    let e = run(&p);
    assert!(env_value(&e.mutated, "containers", 0, "GOMEMLIMIT").is_none());
    assert!(
        e.warnings
            .iter()
            .any(|w| w.starts_with("container \"app\": has no memory limit, and nothing is left")),
        "{:?}",
        e.warnings
    );
}

#[test]
fn second_pass_changes_nothing() {
    let mut p = pod(vec![
        container("app", Some("512Mi"), Some("100Mi")),
        container("x", None, Some("64Mi")),
        container("y", None, None),
    ]);
    p["spec"]["initContainers"] = json!([container("init", Some("1Gi"), None)]);
    for policy in [
        Policy::default(),
        Policy {
            percent: 90,
            gogc: Gogc::Percent(50),
            ..Policy::default()
        },
        Policy {
            missing_limit: MissingLimit::Default,
            default_memory: Some(crate::quantity::Quantity::parse("300Mi").unwrap()),
            ..Policy::default()
        },
    ] {
        let first = eval(&p, &policy);
        assert!(first.has_changes());
        let second = eval(&first.mutated, &policy);
        assert!(
            !second.has_changes(),
            "{:?}",
            second.changes().collect::<Vec<_>>()
        );
        assert_eq!(second.mutated, first.mutated);
    }
}

#[test]
fn reinvocation_recomputes_our_literal_for_a_changed_limit() {
    let policy = Policy {
        percent: 90,
        ..Policy::default()
    };
    let first = eval(
        &pod(vec![container("app", Some("512Mi"), Some("256Mi"))]),
        &policy,
    );
    assert_eq!(
        env_value(&first.mutated, "containers", 0, "GOMEMLIMIT").unwrap()["value"],
        "483183820"
    );

    for (new_limit, literal) in [("1Gi", "966367641"), ("256Mi", "241591910")] {
        // Another webhook changes the limit after us.
        let mut changed = first.mutated.clone();
        changed["spec"]["containers"][0]["resources"]["limits"]["memory"] = json!(new_limit);
        let again = eval(&changed, &policy);
        assert_eq!(
            env_value(&again.mutated, "containers", 0, "GOMEMLIMIT").unwrap()["value"],
            literal,
            "{new_limit}"
        );
        assert_eq!(
            memory(&again.mutated, "containers", 0, "requests").as_deref(),
            Some(new_limit)
        );
        let s = status(&again.mutated);
        assert_eq!(s.containers["app"].gomemlimit.as_deref(), Some(literal));
        assert_eq!(s.containers["app"].request.as_deref(), Some(new_limit));
        // And a further pass is quiet.
        assert!(!eval(&again.mutated, &policy).has_changes());
    }

    // A literal that is no longer the one we recorded is the user's: left alone.
    let mut edited = first.mutated.clone();
    edited["spec"]["containers"][0]["resources"]["limits"]["memory"] = json!("1Gi");
    let env = edited["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap();
    env.iter_mut().find(|e| e["name"] == "GOMEMLIMIT").unwrap()["value"] = json!("400MiB");
    let again = eval(&edited, &policy);
    assert_eq!(
        env_value(&again.mutated, "containers", 0, "GOMEMLIMIT").unwrap()["value"],
        "400MiB"
    );
}

#[test]
fn reinvocation_lowers_our_request_with_a_lowered_limit() {
    let first = run(&app_pod("512Mi"));
    let mut changed = first.mutated.clone();
    changed["spec"]["containers"][0]["resources"]["limits"]["memory"] = json!("256Mi");
    let again = run(&changed);
    assert_eq!(
        memory(&again.mutated, "containers", 0, "requests").as_deref(),
        Some("256Mi")
    );
    // A request above the limit that we did not set is not ours to lower.
    let p = pod(vec![container("app", Some("256Mi"), Some("512Mi"))]);
    assert!(!run(&p).has_changes());
}

#[test]
fn status_annotation_merges_with_an_earlier_pass() {
    let first = run(&app_pod("512Mi"));
    let mut later = first.mutated.clone();
    later["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(container("added-later", Some("128Mi"), None));
    let again = run(&later);
    let s = status(&again.mutated);
    assert!(s.containers.contains_key("app") && s.containers.contains_key("added-later"));
}

#[test]
fn unreadable_pods_are_not_understood() {
    let cases = [
        json!("a string"),
        json!({"metadata": {}, "spec": {"containers": {"name": "x"}}}),
        json!({"metadata": {}, "spec": {"containers": [{"image": "no-name"}]}}),
        json!({"metadata": {"annotations": {"a": 1}}, "spec": {"containers": []}}),
        json!({"metadata": {}}),
        json!({"spec": {"containers": [{"name": "a", "resources": {"limits": "1Gi"}}]}}),
        json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"memory": "1Gi"}}, "env": {}}]}}),
        json!({"spec": {"initContainers": [{"name": "a"}], "containers": [{"name": "a"}]}}),
    ];
    for p in cases {
        let e = run(&p);
        assert!(
            matches!(e.decision, Decision::Skipped(SkipReason::NotUnderstood(_))),
            "{p}"
        );
        assert_eq!(e.mutated, p);
        assert!(!e.has_changes());
    }
}

#[test]
fn a_name_used_twice_leaves_the_pod_unchanged_and_says_where() {
    let limit = json!({"limits": {"memory": "1Gi"}});
    let p = json!({"metadata": {}, "spec": {"containers": [
        {"name": "app", "resources": limit},
        {"name": "app", "resources": {"limits": {"memory": "2Gi"}}},
    ]}});
    let e = run(&p);
    let Decision::Skipped(SkipReason::NotUnderstood(why)) = &e.decision else {
        panic!("{:?}", e.decision);
    };
    assert_eq!(
        why.to_string(),
        r#"spec.containers[1] has the name "app" of another container"#
    );
    assert_eq!(e.mutated, p);
}

#[test]
fn warnings_fit_in_120_characters() {
    let long = "a".repeat(63);
    let p = pod(vec![
        container(&long, None, None),
        container(&format!("b{}", &long[1..]), Some("1e400"), None),
    ]);
    let e = run(&p);
    assert!(!e.warnings.is_empty());
    for w in &e.warnings {
        assert!(w.chars().count() <= MAX_WARNING_LEN, "{w}");
    }
}

#[test]
fn unknown_fields_survive() {
    let mut p = app_pod("1Gi");
    p["spec"]["futureField"] = json!({"x": [1, 2]});
    p["spec"]["containers"][0]["resources"]["futureResourceField"] = json!(true);
    p["metadata"]["futureMeta"] = json!("v");
    let e = run(&p);
    assert_eq!(e.mutated["spec"]["futureField"], p["spec"]["futureField"]);
    assert_eq!(
        e.mutated["spec"]["containers"][0]["resources"]["futureResourceField"],
        true
    );
    assert_eq!(e.mutated["metadata"]["futureMeta"], "v");
}

fn resize_policy(pod: &Value, list: &str, i: usize) -> Value {
    pod["spec"][list][i]["resizePolicy"].clone()
}

const RESTART_ON_MEMORY: &str = r#"{"resourceName":"memory","restartPolicy":"RestartContainer"}"#;

#[test]
fn a_downward_gomemlimit_restarts_its_container_on_an_in_place_memory_resize() {
    let restart: Value = serde_json::from_str(RESTART_ON_MEMORY).unwrap();
    let mut p = pod(vec![
        container("app", Some("1Gi"), None),
        container("cpu-only", Some("1Gi"), None),
    ]);
    p["spec"]["containers"][1]["resizePolicy"] =
        json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"}]);
    let mut sidecar = container("side", Some("64Mi"), None);
    sidecar["restartPolicy"] = json!("Always");
    p["spec"]["initContainers"] = json!([container("init", Some("64Mi"), None), sidecar]);
    let e = run(&p);
    assert_eq!(resize_policy(&e.mutated, "containers", 0), json!([restart]));
    // Kept beside an existing cpu entry.
    assert_eq!(
        resize_policy(&e.mutated, "containers", 1),
        json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"}, restart])
    );
    // A native sidecar runs for the pod's life and is resized in place; an ordinary init
    // container is not, and the API forbids it the policy.
    assert_eq!(
        resize_policy(&e.mutated, "initContainers", 1),
        json!([restart])
    );
    assert_eq!(resize_policy(&e.mutated, "initContainers", 0), Value::Null);
    assert_eq!(
        status(&e.mutated).containers["app"]
            .resize_policy
            .as_deref(),
        Some("RestartContainer")
    );
    assert!(e.events.contains(&ContainerEvent::SetResizePolicy));
}

#[test]
fn resize_policy_only_where_the_api_allows_it_and_the_user_has_none() {
    // The user's NotRequired stays, with a warning.
    let mut p = app_pod("1Gi");
    p["spec"]["containers"][0]["resizePolicy"] =
        json!([{"resourceName": "memory", "restartPolicy": "NotRequired"}]);
    let e = run(&p);
    assert_eq!(
        resize_policy(&e.mutated, "containers", 0),
        json!([{"resourceName": "memory", "restartPolicy": "NotRequired"}])
    );
    assert!(
        e.warnings.iter().any(|w| w
            == "container \"app\": resizePolicy memory NotRequired kept; GOMEMLIMIT will not follow in-place resizes"),
        "{:?}",
        e.warnings
    );
    // A restartPolicy Never pod may not have RestartContainer: a warning instead.
    let mut never = app_pod("1Gi");
    never["spec"]["restartPolicy"] = json!("Never");
    let e = run(&never);
    assert_eq!(resize_policy(&e.mutated, "containers", 0), Value::Null);
    assert!(e.warnings.iter().any(|w| w.contains("restartPolicy Never")));
    // A literal cannot follow a resize by restarting: nothing to set.
    let e = eval(
        &app_pod("1Gi"),
        &Policy {
            percent: 90,
            ..Policy::default()
        },
    );
    assert_eq!(resize_policy(&e.mutated, "containers", 0), Value::Null);
    // The policy can turn it off.
    let e = eval(
        &app_pod("1Gi"),
        &Policy {
            restart_on_resize: false,
            ..Policy::default()
        },
    );
    assert_eq!(resize_policy(&e.mutated, "containers", 0), Value::Null);
    assert!(e.warnings.is_empty());
}
