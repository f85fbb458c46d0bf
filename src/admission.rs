//! AdmissionReview wire handling: validate the request, run the engine, build the response.
//! Pure: no I/O, no logging; the server records metrics and logs from the returned report.

use crate::policy::Policy;
use http::StatusCode;

/// The endpoint a review arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /mutate`: enforce (unless the policy or the pod asks for audit).
    Mutate,
    /// `POST /audit`: dry-run audit, never patches.
    Audit,
}

impl Endpoint {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Audit => "audit",
        }
    }
}

/// What happened to one review, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Mutated,
    Unchanged,
    Audited,
    Skipped,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Mutated => "mutated",
            Outcome::Unchanged => "unchanged",
            Outcome::Audited => "audited",
            Outcome::Skipped => "skipped",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// The HTTP answer to send.
#[derive(Debug)]
pub struct HttpReply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Facts about one review for the log line and metrics.
#[derive(Debug, Default)]
pub struct ReviewReport {
    pub outcome: Option<Outcome>,
    pub uid: String,
    pub namespace: String,
    /// Pod name, or its generateName when the name is not set yet.
    pub pod: String,
    pub operation: String,
    pub dry_run: bool,
    /// One entry per container action taken (or, in audit, that would be taken),
    /// e.g. `set_request`, `inject_gomemlimit`; counted by the metrics.
    pub container_actions: Vec<&'static str>,
    /// Reason for a 4xx reply or a denial.
    pub message: Option<String>,
}

/// Handles one AdmissionReview body. Never panics on input; every malformed request gets
/// a 4xx reply with a one-line reason.
pub fn handle(
    endpoint: Endpoint,
    content_type: Option<&str>,
    body: &[u8],
    policy: &Policy,
) -> (HttpReply, ReviewReport) {
    let _ = (endpoint, content_type, body, policy);
    todo!()
}
