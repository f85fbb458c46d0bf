//! AdmissionReviews through the pure handler, and reading the answers.

use base64::Engine as _;
use gomemlimit_injector::admission::{self, Endpoint, HttpReply, ReviewReport};
use gomemlimit_injector::policy::Policy;
use serde_json::Value;

/// Hands a body to the pure handler with a JSON content type.
pub fn handle_json(endpoint: Endpoint, body: &[u8], policy: &Policy) -> (HttpReply, ReviewReport) {
    admission::handle(endpoint, Some("application/json"), body, policy)
}

/// The review in `tests/data/<name>` through the handler, with the default policy.
pub fn handle_fixture(endpoint: Endpoint, name: &str) -> (HttpReply, ReviewReport) {
    handle_json(endpoint, &super::fixture(name), &Policy::default())
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

/// Wraps an in-place resize of `old` into `new` (`UPDATE` of `pods/resize`).
pub fn resize_review(uid: &str, old: &Value, new: &Value) -> Value {
    let mut review = pod_review(uid, new);
    let request = &mut review["request"];
    request["operation"] = serde_json::json!("UPDATE");
    request["subResource"] = serde_json::json!("resize");
    request["requestSubResource"] = serde_json::json!("resize");
    request["oldObject"] = old.clone();
    review
}

/// The pod as the webhook's `/mutate` leaves it under `policy`.
pub fn mutated(pod: &Value, policy: &Policy) -> Value {
    let review = pod_review("create", pod);
    let body = serde_json::to_vec(&review).unwrap();
    let (reply, _) = handle_json(Endpoint::Mutate, &body, policy);
    apply(&review, &response_of(&reply.body))
}
