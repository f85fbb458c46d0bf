//! Requests that get a 4xx answer instead of an AdmissionReview, and why.

use std::time::Duration;

use http::StatusCode;

use super::request::{API_VERSION, KIND};
use super::{HttpReply, Outcome, ReviewReport};

/// Largest AdmissionReview body accepted; the server answers 413 above it.
pub(crate) const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Why a request gets a 4xx answer instead of an AdmissionReview. Each reason reads as one
/// line, and the rejection turns itself into the answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejection {
    #[error("request body exceeds the limit of {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("failed to read the request body: {0}")]
    BodyRead(String),
    #[error("request timed out: the body was not received within {}", human(*.0))]
    Timeout(Duration),
    #[error("unsupported content type {0:?}: expected application/json")]
    ContentType(String),
    #[error("malformed JSON: {0}")]
    Json(serde_json::Error),
    #[error("unsupported apiVersion {0:?}: only {API_VERSION} is served")]
    ApiVersion(String),
    #[error("unsupported kind {0:?}: expected {KIND}")]
    Kind(String),
    #[error("missing request")]
    MissingRequest,
    #[error("missing request.uid")]
    MissingUid,
    #[error("malformed AdmissionReview: {0}")]
    Review(serde_json::Error),
    #[error("failed to serialize the response: {0}")]
    Response(serde_json::Error),
}

impl Rejection {
    /// 413 for a body over the limit, 408 for one that came too slowly, else 400.
    fn status(&self) -> StatusCode {
        match self {
            Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The answer, `status` with the reason as one line of text, and `report` (what was
    /// learned of the request before it was rejected) with the reason.
    pub(crate) fn answer(self, mut report: ReviewReport) -> (HttpReply, ReviewReport) {
        let reason = self.to_string();
        let mut body = reason.replace('\n', " ").into_bytes();
        body.push(b'\n');
        let reply = HttpReply {
            status: self.status(),
            content_type: "text/plain; charset=utf-8",
            body,
        };
        report.outcome = Some(Outcome::Error);
        report.message = Some(reason);
        (reply, report)
    }
}

/// `2s` or `1500ms`, for messages.
fn human(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}
