//! Shared helpers for driving AdmissionReview fixtures and reading the answers.
#![allow(dead_code)]

use base64::Engine as _;
use gomemlimit_injector::admission::{self, Endpoint, HttpReply, ReviewReport};
use gomemlimit_injector::policy::Policy;
use serde_json::Value;

/// Reads `tests/data/<name>`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("failed to read {path}: {e}"))
}

/// The fixture as JSON.
pub fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

/// Posts a body to the pure handler with a JSON content type.
pub fn post(endpoint: Endpoint, body: &[u8], policy: &Policy) -> (HttpReply, ReviewReport) {
    admission::handle(endpoint, Some("application/json"), body, policy)
}

/// The `response` of a 200 AdmissionReview answer.
pub fn response_of(body: &[u8]) -> Value {
    let review: Value = serde_json::from_slice(body).expect("response is JSON");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    review["response"].clone()
}

/// The decoded JSONPatch of a response, if any.
pub fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let encoded = response
        .get("patch")?
        .as_str()
        .expect("patch is base64 text");
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("patch is base64");
    Some(serde_json::from_slice(&bytes).expect("patch is a JSONPatch"))
}

/// Applies the response's patch (if any) to the review's object, as the API server would.
pub fn apply(review: &Value, response: &Value) -> Value {
    let mut object = review["request"]["object"].clone();
    if let Some(patch) = patch_of(response) {
        json_patch::patch(&mut object, &patch).expect("patch applies to the request object");
    }
    object
}

/// Wraps a pod in a Pod CREATE AdmissionReview.
pub fn pod_review(uid: &str, pod: &Value) -> Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": pod,
            "dryRun": false
        }
    })
}
