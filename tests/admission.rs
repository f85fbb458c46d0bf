//! AdmissionReview fixtures through the admission handler: what the API server gets back.

pub mod support;

use gomemlimit_injector::admission::{Endpoint, Outcome, ResizeOutcome, ReviewReport};
use gomemlimit_injector::engine::STATUS;
use gomemlimit_injector::policy::{Mode, Policy};
use http::StatusCode;
use serde_json::{Value, json};
use support::review::*;
use support::{fixture, fixture_json};

fn env_named<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn mutate_patches_every_container_and_echoes_the_uid() {
    let review = fixture_json("pod-create.json");
    let (reply, report) = handle_fixture(Endpoint::Mutate, "pod-create.json");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(report.outcome, Some(Outcome::Mutated));
    assert_eq!(report.pod, "sales-api-7d9c8b6f5d-");
    assert_eq!(report.namespace, "shop");
    assert_eq!(report.operation, "CREATE");
    let response = response_of(&reply.body);
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true);

    let pod = apply(&review, &response);
    let containers = pod["spec"]["containers"].as_array().unwrap();
    let sidecar = &pod["spec"]["initContainers"][0];
    for c in containers.iter().chain([sidecar]) {
        assert_eq!(
            c["resources"]["requests"]["memory"],
            c["resources"]["limits"]["memory"]
        );
        assert_eq!(
            env_named(c, "GOMEMLIMIT").unwrap()["valueFrom"]["resourceFieldRef"]["resource"],
            "limits.memory"
        );
        assert_eq!(env_named(c, "GOGC").unwrap()["value"], "off");
        // The 25 original variables are still first, in order.
        assert_eq!(c["env"].as_array().unwrap().len(), 27);
    }
    // The CPU request is not ours.
    assert_eq!(containers[0]["resources"]["requests"]["cpu"], "250m");
    let status: Value =
        serde_json::from_str(pod["metadata"]["annotations"][STATUS].as_str().unwrap()).unwrap();
    assert_eq!(status["containers"]["api"]["request"], "512Mi");
    // Nothing outside our fields changed.
    let mut expected = review["request"]["object"].clone();
    let mut actual = pod.clone();
    for p in [&mut expected, &mut actual] {
        p["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(STATUS);
        for list in ["containers", "initContainers"] {
            for c in p["spec"][list].as_array_mut().unwrap() {
                c["resources"]["requests"]
                    .as_object_mut()
                    .unwrap()
                    .remove("memory");
                let env = c["env"].as_array_mut().unwrap();
                env.retain(|e| e["name"] != "GOMEMLIMIT" && e["name"] != "GOGC");
                c.as_object_mut().unwrap().remove("resizePolicy");
            }
        }
    }
    assert_eq!(actual, expected);
}

#[test]
fn patch_escapes_the_status_annotation_key() {
    let (reply, _) = handle_fixture(Endpoint::Mutate, "pod-create.json");
    let patch = patch_of(&response_of(&reply.body)).unwrap();
    let text = serde_json::to_string(&patch).unwrap();
    assert!(
        text.contains("/metadata/annotations/gomemlimit.io~1status"),
        "{text}"
    );
}

#[test]
fn audit_reports_and_never_patches() {
    let review = fixture_json("pod-create.json");
    for (endpoint, policy) in [
        (Endpoint::Audit, Policy::default()),
        (
            Endpoint::Mutate,
            Policy {
                mode: Mode::Audit,
                ..Policy::default()
            },
        ),
    ] {
        let (reply, report) = handle_json(endpoint, &fixture("pod-create.json"), &policy);
        assert_eq!(report.outcome, Some(Outcome::Audited));
        let response = response_of(&reply.body);
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none());
        assert!(response.get("patchType").is_none());
        assert_eq!(response["uid"], review["request"]["uid"]);
        let warnings: Vec<&str> = response["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert!(
            warnings.contains(&"container \"api\": would set requests.memory to 512Mi (was 256Mi)"),
            "{warnings:?}"
        );
        assert!(warnings.iter().all(|w| w.len() <= 120));
        // worker: request already equals limit, so 2 env changes and the resizePolicy only;
        // 3 others: 4 changes each.
        assert_eq!(warnings.len(), 3 * 4 + 3);
        assert_eq!(response["auditAnnotations"]["would-mutate"], "true");
        let summary = response["auditAnnotations"]["changes"].as_str().unwrap();
        assert!(
            summary.contains("api: requests.memory 256Mi->512Mi"),
            "{summary}"
        );
    }
}

#[test]
fn audit_of_a_compliant_pod_is_quiet() {
    let (reply, report) = handle_fixture(Endpoint::Audit, "pod-create-compliant.json");
    assert_eq!(report.outcome, Some(Outcome::Unchanged));
    let response = response_of(&reply.body);
    assert!(response.get("warnings").is_none());
    assert!(response.get("auditAnnotations").is_none());
}

#[test]
fn pod_mode_annotation_audits_on_mutate() {
    let mut review = fixture_json("pod-create.json");
    review["request"]["object"]["metadata"]["annotations"]["gomemlimit.io/mode"] = json!("audit");
    let body = serde_json::to_vec(&review).unwrap();
    let (reply, report) = handle_json(Endpoint::Mutate, &body, &Policy::default());
    assert_eq!(report.outcome, Some(Outcome::Audited));
    assert!(response_of(&reply.body).get("patch").is_none());
}

#[test]
fn dry_run_gets_exactly_the_same_answer() {
    let real = fixture_json("pod-create.json");
    let mut dry = real.clone();
    dry["request"]["dryRun"] = json!(true);
    for endpoint in [Endpoint::Mutate, Endpoint::Audit] {
        let (a, ra) = handle_json(
            endpoint,
            &serde_json::to_vec(&real).unwrap(),
            &Policy::default(),
        );
        let (b, rb) = handle_json(
            endpoint,
            &serde_json::to_vec(&dry).unwrap(),
            &Policy::default(),
        );
        assert_eq!(a.body, b.body);
        assert!(!ra.dry_run && rb.dry_run);
    }
    let (reply, report) = handle_fixture(Endpoint::Mutate, "pod-create-dryrun.json");
    assert!(report.dry_run);
    assert!(patch_of(&response_of(&reply.body)).is_some());
}

#[test]
fn other_operations_kinds_and_subresources_pass_unchanged() {
    for name in [
        "pod-update.json",
        "configmap-create.json",
        "pod-binding-create.json",
    ] {
        for endpoint in [Endpoint::Mutate, Endpoint::Audit] {
            let review = fixture_json(name);
            let (reply, report) = handle_fixture(endpoint, name);
            assert_eq!(reply.status, StatusCode::OK, "{name}");
            assert_eq!(report.outcome, Some(Outcome::Skipped), "{name}");
            let response = response_of(&reply.body);
            assert_eq!(response["allowed"], true, "{name}");
            assert_eq!(response["uid"], review["request"]["uid"], "{name}");
            assert!(response.get("patch").is_none(), "{name}");
            assert!(response.get("warnings").is_none(), "{name}");
        }
    }
}

#[test]
fn invalid_annotation_is_denied_with_a_message_naming_it() {
    let (reply, report) = handle_fixture(Endpoint::Mutate, "pod-create-invalid-annotation.json");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(report.outcome, Some(Outcome::Denied));
    let response = response_of(&reply.body);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("gomemlimit.io/percent"), "{message}");
    assert!(message.contains("50 to 100"), "{message}");

    // Audit: the same pod is allowed with a warning that says enforce would deny it, and
    // no preview of changes enforce would never make.
    let (reply, report) = handle_fixture(Endpoint::Audit, "pod-create-invalid-annotation.json");
    assert_eq!(report.outcome, Some(Outcome::Audited));
    let response = response_of(&reply.body);
    assert_eq!(response["allowed"], true);
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("would deny: invalid annotation gomemlimit.io/percent")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("would set")),
        "{warnings:?}"
    );
    assert!(
        response["auditAnnotations"]["would-deny"]
            .as_str()
            .is_some_and(|m| m.contains("gomemlimit.io/percent")),
        "{response}"
    );
}

#[test]
fn second_review_of_the_patched_pod_yields_no_patch() {
    let review = fixture_json("pod-create.json");
    let (reply, _) = handle_fixture(Endpoint::Mutate, "pod-create.json");
    let patched = apply(&review, &response_of(&reply.body));
    assert_reviewed_again_unchanged(&review, patched);
}

/// `review` with its pod replaced by `patched`, reviewed again, gets no patch.
fn assert_reviewed_again_unchanged(review: &Value, patched: Value) {
    let mut again = review.clone();
    again["request"]["object"] = patched;
    let (reply, report) = handle_json(
        Endpoint::Mutate,
        &serde_json::to_vec(&again).unwrap(),
        &Policy::default(),
    );
    assert_eq!(report.outcome, Some(Outcome::Unchanged));
    assert!(response_of(&reply.body).get("patch").is_none());
}

/// A memory limit written as a JSON number (never sent by the API server, which sends
/// quantities as text) is read as the nearest double and written as its shortest text, so
/// that the pod, patched and serialized again, is a fixed point. Read inexactly,
/// `4.36557179680876e-11` became its neighbour `4.3655717968087596e-11`, the request was
/// set to that, and the second review patched again.
#[test]
fn a_limit_written_as_a_json_number_is_a_fixed_point() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "n", "namespace": "default"},
        "spec": {
            "containers": [{"name": "app", "resources": {"limits": {"memory": "1Gi"}}}],
            "resources": {"limits": {"memory": "NUMBER"}},
        },
    });
    let text = serde_json::to_string(&pod_review("u", &pod))
        .unwrap()
        .replace(r#""NUMBER""#, "4.36557179680876e-11");
    let text = text.as_bytes();
    let (reply, _) = handle_json(Endpoint::Mutate, text, &Policy::default());
    let response = response_of(&reply.body);
    let sent: Value = serde_json::from_slice(text).unwrap();
    let patched = apply(&sent, &response);
    assert_eq!(
        patched["spec"]["resources"]["requests"]["memory"], "4.36557179680876e-11",
        "the request is the shortest text of the limit"
    );
    assert_reviewed_again_unchanged(&sent, patched);
}

#[test]
fn a_pod_it_cannot_read_is_allowed_with_a_warning() {
    let mut review = fixture_json("pod-create.json");
    review["request"]["object"]["spec"]["containers"] = json!({"not": "a list"});
    let (reply, report) = handle_json(
        Endpoint::Mutate,
        &serde_json::to_vec(&review).unwrap(),
        &Policy::default(),
    );
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(report.outcome, Some(Outcome::Error));
    let response = response_of(&reply.body);
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("cannot read the pod")
    );

    review["request"]["object"] = Value::Null;
    let (reply, report) = handle_json(
        Endpoint::Mutate,
        &serde_json::to_vec(&review).unwrap(),
        &Policy::default(),
    );
    assert_eq!(report.outcome, Some(Outcome::Error));
    assert_eq!(response_of(&reply.body)["allowed"], true);
}

#[test]
fn uid_is_echoed_exactly() {
    for uid in [
        "a",
        "ünïcödé-✓",
        "with \"quotes\" and \\ slashes",
        &"x".repeat(300),
    ] {
        let mut review = fixture_json("configmap-create.json");
        review["request"]["uid"] = json!(uid);
        let (reply, _) = handle_json(
            Endpoint::Mutate,
            &serde_json::to_vec(&review).unwrap(),
            &Policy::default(),
        );
        assert_eq!(response_of(&reply.body)["uid"], uid);
    }
}

/// Malformed requests: content type, body, and what the reason must mention.
fn malformed_requests() -> Vec<(Option<&'static str>, Vec<u8>, &'static str)> {
    let json = Some("application/json");
    let mut cases = vec![
        (json, b"{not json".to_vec(), "malformed JSON"),
        (json, b"".to_vec(), "malformed JSON"),
        (json, b"[]".to_vec(), "apiVersion"),
    ];
    // The valid review with one change each.
    type Change = fn(&mut Value);
    let changes: [(Change, &str); 6] = [
        (
            |r| r["apiVersion"] = json!("admission.k8s.io/v1beta1"),
            "admission.k8s.io/v1beta1",
        ),
        (|r| r["kind"] = json!("Pod"), "kind"),
        (
            |r| drop(r.as_object_mut().unwrap().remove("request")),
            "missing request",
        ),
        (
            |r| drop(r["request"].as_object_mut().unwrap().remove("uid")),
            "missing request.uid",
        ),
        (|r| r["request"]["uid"] = json!(""), "missing request.uid"),
        (
            |r| r["request"]["operation"] = json!("EXPLODE"),
            "malformed AdmissionReview",
        ),
    ];
    let valid = fixture_json("pod-create.json");
    for (change, needle) in changes {
        let mut review = valid.clone();
        change(&mut review);
        cases.push((json, serde_json::to_vec(&review).unwrap(), needle));
    }
    for content_type in [Some("text/plain"), None, Some("application/jsonx")] {
        cases.push((content_type, fixture("pod-create.json"), "content type"));
    }
    cases
}

#[test]
fn malformed_requests_get_400_with_a_one_line_reason() {
    for (content_type, body, needle) in malformed_requests() {
        let (reply, report) = gomemlimit_injector::admission::handle(
            Endpoint::Mutate,
            content_type,
            &body,
            &Policy::default(),
        );
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{needle}");
        let text = String::from_utf8(reply.body).unwrap();
        assert!(text.contains(needle), "{needle}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{text}");
        assert_eq!(report.outcome, Some(Outcome::Error));
    }
    // Parameters on the content type are fine.
    let (reply, _) = gomemlimit_injector::admission::handle(
        Endpoint::Mutate,
        Some("Application/JSON; charset=utf-8"),
        &fixture("pod-create.json"),
        &Policy::default(),
    );
    assert_eq!(reply.status, StatusCode::OK);
}

/// A pod with one container `app` limited to `limit`, as the webhook left it at creation.
fn created(limit: &str, percent: u8) -> Value {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "x",
                 "resources": {"limits": {"memory": limit}}}]}
    });
    mutated(
        &pod,
        &Policy {
            percent,
            ..Policy::default()
        },
    )
}

/// `pod` with the memory limit and request of `app` set to `memory`.
fn resized(pod: &Value, memory: &str) -> Value {
    let mut pod = pod.clone();
    pod["spec"]["containers"][0]["resources"] =
        json!({"limits": {"memory": memory}, "requests": {"memory": memory}});
    pod
}

/// A resize through the handler at `endpoint`: the response and the report.
fn resize(endpoint: Endpoint, old: &Value, new: &Value) -> (Value, ReviewReport) {
    let body = serde_json::to_vec(&resize_review("resize", old, new)).unwrap();
    let (reply, report) = handle_json(endpoint, &body, &Policy::default());
    assert_eq!(reply.status, StatusCode::OK);
    let response = response_of(&reply.body);
    assert_eq!(response["uid"], "resize");
    assert!(response.get("patch").is_none(), "a resize is never patched");
    (response, report)
}

#[test]
fn a_resize_that_leaves_the_literal_above_its_percent_is_refused() {
    let old = created("100Mi", 90);
    let literal = (100u64 << 20) * 90 / 100;
    assert_eq!(
        env_named(&old["spec"]["containers"][0], "GOMEMLIMIT").unwrap()["value"],
        literal.to_string()
    );
    let (response, report) = resize(Endpoint::Mutate, &old, &resized(&old, "90Mi"));
    assert_eq!(response["allowed"], false);
    assert_eq!(report.outcome, Some(Outcome::Denied));
    assert_eq!(report.resize, Some(ResizeOutcome::Denied));
    let message = response["status"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!(
            "container \"app\": a memory limit of 90Mi would leave GOMEMLIMIT={literal} above 90% \
             of it; the smallest limit that keeps it safe is 104857600 (100Mi); recreate the pod \
             to lower GOMEMLIMIT"
        )
    );
    // Audit: allowed, with the same words as a warning.
    let (response, report) = resize(Endpoint::Audit, &old, &resized(&old, "90Mi"));
    assert_eq!(response["allowed"], true);
    assert_eq!(report.resize, Some(ResizeOutcome::Warned));
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("would deny: container \"app\": a memory limit of 90Mi")
    );
}

#[test]
fn a_raise_is_allowed_with_a_warning_and_the_downward_api_follows_without_a_word() {
    let old = created("100Mi", 90);
    let (response, report) = resize(Endpoint::Mutate, &old, &resized(&old, "200Mi"));
    assert_eq!(response["allowed"], true);
    assert_eq!(report.resize, Some(ResizeOutcome::Warned));
    assert_eq!(
        response["warnings"],
        json!([format!(
            "container \"app\": GOMEMLIMIT stays at {} (90% of the old limit 100Mi) until the pod is recreated",
            (100u64 << 20) * 90 / 100
        )])
    );

    // Downward API with RestartContainer (set at creation): the restart resolves it again.
    let old = created("100Mi", 100);
    assert_eq!(
        old["spec"]["containers"][0]["resizePolicy"][0]["restartPolicy"],
        "RestartContainer"
    );
    for memory in ["200Mi", "50Mi"] {
        let (response, report) = resize(Endpoint::Mutate, &old, &resized(&old, memory));
        assert_eq!(response["allowed"], true);
        assert!(response.get("warnings").is_none(), "{response}");
        assert_eq!(report.resize, Some(ResizeOutcome::Allowed));
    }
}

#[test]
fn a_pod_the_webhook_never_mutated_is_resized_without_a_word() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "x",
                 "env": [{"name": "GOMEMLIMIT", "value": "1000"}],
                 "resources": {"limits": {"memory": "100Mi"}}}]}
    });
    let (response, report) = resize(Endpoint::Mutate, &pod, &resized(&pod, "1Mi"));
    assert_eq!(response["allowed"], true);
    assert!(response.get("warnings").is_none());
    assert_eq!(report.resize, Some(ResizeOutcome::Allowed));
}
