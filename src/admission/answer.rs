//! The AdmissionReview response: built up as the review is decided, then written as the
//! API server reads it.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use super::request::{API_VERSION, KIND};
use crate::engine::Operation;

/// What the webhook answers to one review.
#[derive(Debug, Default)]
pub(super) struct Answer {
    /// The review is refused, with this message.
    pub(super) denied: Option<String>,
    /// The changes to make (enforce only).
    pub(super) patch: Option<Vec<Operation>>,
    /// Recorded in the API server's audit log (audit only).
    pub(super) audit_annotations: BTreeMap<&'static str, String>,
    /// Shown to whoever made the request.
    pub(super) warnings: Vec<String>,
}

impl Answer {
    /// The AdmissionReview answering the request `uid`, as JSON.
    pub(super) fn to_json(&self, uid: &str) -> Result<Vec<u8>, serde_json::Error> {
        let patch = self.patch.as_deref().map(base64_json).transpose()?;
        let review = WireReview {
            api_version: API_VERSION,
            kind: KIND,
            response: WireResponse {
                uid,
                allowed: self.denied.is_none(),
                status: self.denied.as_deref().map(|message| WireStatus {
                    code: 403,
                    message,
                    reason: "Forbidden",
                }),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                audit_annotations: &self.audit_annotations,
                warnings: &self.warnings,
            },
        };
        // Sized for the usual answer, so that writing it rarely grows the buffer.
        let patch_len = review.response.patch.as_ref().map_or(0, String::len);
        let mut out = Vec::with_capacity(512 + patch_len);
        serde_json::to_writer(&mut out, &review)?;
        Ok(out)
    }
}

/// A patch as base64 of its JSON.
fn base64_json(patch: &[Operation]) -> Result<String, serde_json::Error> {
    let mut json = Vec::with_capacity(256 * patch.len());
    serde_json::to_writer(&mut json, patch)?;
    Ok(STANDARD.encode(json))
}

/// The AdmissionReview answer as the API server reads it. The patch is base64 text, Go's
/// `[]byte` convention.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<WireStatus<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// Sorted, so that the same review always gets the same bytes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: &'a BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// The `metav1.Status` of a refusal.
#[derive(Serialize)]
struct WireStatus<'a> {
    code: u16,
    message: &'a str,
    reason: &'static str,
}
