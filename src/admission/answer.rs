//! The AdmissionReview response: built up as the review is decided, then written as the
//! API server reads it.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::base64_writer::Base64Writer;
use super::request::{API_VERSION, KIND};
use crate::engine::Patch;

/// What the webhook answers to one review.
#[derive(Debug, Default)]
pub(super) struct Answer {
    /// The review is refused, with this message.
    pub(super) denied: Option<String>,
    /// The changes to make (enforce only).
    pub(super) patch: Option<Patch>,
    /// Recorded in the API server's audit log (audit only).
    pub(super) audit_annotations: BTreeMap<&'static str, String>,
    /// Shown to whoever made the request.
    pub(super) warnings: Vec<String>,
}

impl Answer {
    /// The AdmissionReview answering the request `uid`, as JSON.
    pub(super) fn to_json(&self, uid: &str) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(self.estimated_len());
        self.write_json(uid, &mut out)?;
        Ok(out)
    }

    /// Writes the AdmissionReview answering the request `uid` to `out`.
    ///
    /// Written field by field, in the order and form `serde_json` gives a struct, so that the
    /// patch goes through base64 straight into `out` as its operations are made: a pod of
    /// thousands of containers never holds its patch as JSON text, nor as base64 text.
    pub(super) fn write_json<W: Write>(&self, uid: &str, mut out: W) -> serde_json::Result<()> {
        let io = serde_json::Error::io;
        out.write_all(b"{\"apiVersion\":").map_err(io)?;
        serde_json::to_writer(&mut out, API_VERSION)?;
        out.write_all(b",\"kind\":").map_err(io)?;
        serde_json::to_writer(&mut out, KIND)?;
        out.write_all(b",\"response\":{\"uid\":").map_err(io)?;
        serde_json::to_writer(&mut out, uid)?;
        out.write_all(b",\"allowed\":").map_err(io)?;
        let allowed: &[u8] = if self.denied.is_none() {
            b"true"
        } else {
            b"false"
        };
        out.write_all(allowed).map_err(io)?;
        if let Some(message) = &self.denied {
            out.write_all(b",\"status\":").map_err(io)?;
            let status = WireStatus {
                code: 403,
                message,
                reason: "Forbidden",
            };
            serde_json::to_writer(&mut out, &status)?;
        }
        if let Some(patch) = &self.patch {
            out.write_all(b",\"patch\":\"").map_err(io)?;
            base64_json(&mut out, patch)?;
            out.write_all(b"\",\"patchType\":\"JSONPatch\"")
                .map_err(io)?;
        }
        // Sorted, so that the same review always gets the same bytes.
        if !self.audit_annotations.is_empty() {
            out.write_all(b",\"auditAnnotations\":").map_err(io)?;
            serde_json::to_writer(&mut out, &self.audit_annotations)?;
        }
        if !self.warnings.is_empty() {
            out.write_all(b",\"warnings\":").map_err(io)?;
            serde_json::to_writer(&mut out, &self.warnings)?;
        }
        out.write_all(b"}}").map_err(io)
    }

    /// About the length of the answer, so that writing it rarely grows the buffer (the
    /// status annotation is one operation that can be longer, and the buffer then grows).
    fn estimated_len(&self) -> usize {
        let patch = self
            .patch
            .as_ref()
            .map_or(0, |p| 4 * estimated_json_len(p).div_ceil(3));
        let warnings: usize = self.warnings.iter().map(|w| w.len() + 4).sum();
        let denied = self.denied.as_ref().map_or(0, String::len);
        512 + patch + warnings + denied
    }
}

/// About the length of the patch's JSON: an operation is rarely over 192 bytes.
fn estimated_json_len(patch: &Patch) -> usize {
    192 * patch.estimated_operations()
}

/// Writes the base64 of the patch's JSON to `out`, as it is made.
fn base64_json<W: Write>(out: W, patch: &Patch) -> serde_json::Result<()> {
    let mut encoder = Base64Writer::new(out, estimated_json_len(patch));
    patch
        .write_json(&mut encoder)
        .map_err(serde_json::Error::io)?;
    encoder.finish().map_err(serde_json::Error::io)?;
    Ok(())
}

/// The `metav1.Status` of a refusal.
#[derive(Serialize)]
struct WireStatus<'a> {
    code: u16,
    message: &'a str,
    reason: &'static str,
}
