//! What the fuzz targets share: the properties every answer must have, and pods of hostile
//! shapes generated from the fuzzer's bytes.
//!
//! For any body, `admission::handle` must not panic and must give a defined answer:
//! - 400, 408 or 413 with one line of `text/plain`; or
//! - 200 with an `admission.k8s.io/v1` AdmissionReview whose `response.uid` is the
//!   request's, every warning at most 120 characters, and either no patch or a JSONPatch
//!   that applies to the request's object; the patched object, reviewed again, gets no
//!   patch (reinvocation is a fixed point).
//!
//! And the one-pass reading of the usual pod CREATE answers exactly as reading the body into
//! a document does: the same status, bytes and report.

pub mod pod;

use base64::Engine as _;
use gomemlimit_injector::admission::{self, Endpoint, Reading};
use gomemlimit_injector::policy::Policy;
use serde_json::Value;

const JSON: &str = "application/json";

/// Reviews `body` on `endpoint` under `policy` and checks the answer (see the crate
/// documentation). Returns the answer's `response` for a 200.
pub fn check(endpoint: Endpoint, body: &[u8], policy: &Policy) -> Option<Value> {
    let (reply, report) = admission::handle(endpoint, Some(JSON), body, policy);
    let (document, document_report) =
        admission::handle_with(Reading::Document, endpoint, Some(JSON), body, policy);
    assert!(
        (reply.status, reply.content_type, &reply.body)
            == (document.status, document.content_type, &document.body)
            && format!("{report:?}") == format!("{document_report:?}"),
        "the readings differ:\n one pass: {}\n document: {}",
        String::from_utf8_lossy(&reply.body),
        String::from_utf8_lossy(&document.body),
    );
    match reply.status.as_u16() {
        200 => {
            assert_eq!(reply.content_type, JSON);
            Some(check_review(endpoint, body, &reply.body, policy))
        }
        400 | 408 | 413 => {
            assert_eq!(reply.content_type, "text/plain; charset=utf-8");
            let text = std::str::from_utf8(&reply.body).expect("a 4xx reason is UTF-8");
            let line = text.strip_suffix('\n').expect("a 4xx reason ends its line");
            assert!(!line.is_empty() && !line.contains('\n'), "{text:?}");
            None
        }
        other => panic!("status {other} for a review body"),
    }
}

/// Checks a 200 answer to `body`; returns its `response`.
fn check_review(endpoint: Endpoint, body: &[u8], answer: &[u8], policy: &Policy) -> Value {
    let review: Value = serde_json::from_slice(answer).expect("a 200 answer is JSON");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = &review["response"];
    let request: Value = serde_json::from_slice(body).expect("a reviewed body is JSON");
    let request = &request["request"];
    assert_eq!(response["uid"], request["uid"], "the uid is echoed");
    assert!(response["allowed"].is_boolean(), "{response}");
    if let Some(warnings) = response.get("warnings") {
        for w in warnings.as_array().expect("warnings are a list") {
            let w = w.as_str().expect("a warning is text");
            assert!(w.chars().count() <= 120, "a warning of {} characters", w.len());
        }
    }
    if let Some(patch) = patch_of(response) {
        assert_eq!(endpoint, Endpoint::Mutate, "/audit never patches");
        assert_eq!(response["allowed"], true, "a patch comes only with an allowed pod");
        check_fixed_point(request, &patch, policy);
    }
    response.clone()
}

/// Applies `patch` to the request's object, and reviews the result again: no patch.
fn check_fixed_point(request: &Value, patch: &json_patch::Patch, policy: &Policy) {
    let mut object = request["object"].clone();
    json_patch::patch(&mut object, patch).expect("the patch applies to the request's object");
    let mut again = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request.clone(),
    });
    again["request"]["object"] = object;
    let body = serde_json::to_vec(&again).expect("a patched review serializes");
    let (reply, _) = admission::handle(Endpoint::Mutate, Some(JSON), &body, policy);
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    let review: Value = serde_json::from_slice(&reply.body).expect("a 200 answer is JSON");
    if let Some(second) = patch_of(&review["response"]) {
        panic!(
            "the patched pod gets another patch: {}",
            serde_json::to_string(&second).unwrap_or_default()
        );
    }
}

/// The decoded JSONPatch of a response, if it has one.
fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let encoded = response.get("patch")?;
    assert_eq!(response["patchType"], "JSONPatch");
    let encoded = encoded.as_str().expect("the patch is base64 text");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("the patch is base64");
    Some(serde_json::from_slice(&bytes).expect("the patch is a JSONPatch"))
}
