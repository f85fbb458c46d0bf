//! AdmissionReview handling: read the request, run the engine, answer. Pure: no I/O, no
//! logging; the server records metrics and logs from the returned report.

mod answer;
mod envelope;
mod rejection;
mod request;

use http::StatusCode;
use kube::core::admission::Operation;

use crate::engine::{self, ContainerEvent, Decision, Evaluation, ResizeEvaluation, SkipReason};
use crate::policy::{Mode, Policy};
use crate::report;
use crate::text::{self, WARNING};
use answer::Answer;
pub(crate) use rejection::{MAX_BODY_BYTES, Rejection};
use request::{Object, Request};

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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) uid: String,
    pub namespace: String,
    /// Pod name, or its generateName when the name is not set yet.
    pub pod: String,
    /// Who asked the API server, as it authenticated them.
    pub user: String,
    pub operation: String,
    pub dry_run: bool,
    /// One entry per container event (in audit, what would happen); counted by the
    /// metrics.
    pub(crate) events: Vec<ContainerEvent>,
    /// Reason for a 4xx reply or a denial.
    pub(crate) message: Option<String>,
    /// For a resize (`UPDATE` of `pods/resize`), what became of it.
    pub resize: Option<ResizeOutcome>,
}

/// What the webhook did with an in-place resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeOutcome {
    /// Allowed without a word.
    Allowed,
    /// Allowed with a warning.
    Warned,
    /// Refused (in audit: a warning).
    Denied,
}

impl ResizeOutcome {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResizeOutcome::Allowed => "allowed",
            ResizeOutcome::Warned => "warned",
            ResizeOutcome::Denied => "denied",
        }
    }
}

/// How a body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The usual pod CREATE in one pass, keeping only what the engine reads; any other
    /// body into a document. What the server does.
    OnePass,
    /// Every body into a document: slower, with the same answers. The reference the
    /// one-pass reading is tested against.
    Document,
}

/// Handles one AdmissionReview body. Never panics on input; every malformed request gets
/// a 4xx reply with a one-line reason.
pub fn handle(
    endpoint: Endpoint,
    content_type: Option<&str>,
    body: &[u8],
    policy: &Policy,
) -> (HttpReply, ReviewReport) {
    handle_with(Reading::OnePass, endpoint, content_type, body, policy)
}

/// [`handle`], reading the body as `reading` says.
pub fn handle_with(
    reading: Reading,
    endpoint: Endpoint,
    content_type: Option<&str>,
    body: &[u8],
    policy: &Policy,
) -> (HttpReply, ReviewReport) {
    let mut report = ReviewReport::default();
    let request = Request::parse(reading, content_type, body, &mut report);
    match request.and_then(|request| review(endpoint, request, policy, &mut report)) {
        Ok(reply) => (reply, report),
        Err(rejection) => rejection.answer(report),
    }
}

fn review(
    endpoint: Endpoint,
    mut request: Request<'_>,
    policy: &Policy,
    report: &mut ReviewReport,
) -> Result<HttpReply, Rejection> {
    let mut answer = Answer::default();
    let mode = match endpoint {
        Endpoint::Audit => Mode::Audit,
        Endpoint::Mutate => policy.mode,
    };
    let is_pod = request.is_pod;
    let sub_resource = request.sub_resource.as_ref();
    if is_pod && sub_resource == "resize" && request.operation == Operation::Update {
        let outcome = match (&request.old_object, &request.object) {
            (Some(old), Some(Object::Document(new))) => {
                let eval = engine::evaluate_resize(old, new, policy, mode);
                resize(eval, &mut answer, report)
            }
            // No object to compare (an UPDATE is always read into a document).
            _ => Outcome::Skipped,
        };
        return reply(outcome, &request, &answer, report);
    }
    let is_pod_create = is_pod && sub_resource.is_empty() && request.operation == Operation::Create;
    // The pod is dropped once evaluated: a large one is not kept while the answer is written.
    let outcome = match (is_pod_create, request.object.take()) {
        (false, _) => Outcome::Skipped,
        (true, None) => {
            answer.warnings.push(
                "gomemlimit-injector: the request has no object; pod admitted unchanged".into(),
            );
            Outcome::Error
        }
        (true, Some(pod)) => {
            let mut eval = pod.evaluate(policy, mode);
            drop(pod);
            // The events are counted from the report; the answer is decided without them.
            report.events = std::mem::take(&mut eval.events);
            decide(eval, &mut answer, report)
        }
    };
    reply(outcome, &request, &answer, report)
}

/// The 200 reply carrying `answer`.
fn reply(
    outcome: Outcome,
    request: &Request<'_>,
    answer: &Answer,
    report: &mut ReviewReport,
) -> Result<HttpReply, Rejection> {
    report.outcome = Some(outcome);
    let body = answer.to_json(&request.uid).map_err(Rejection::Response)?;
    Ok(HttpReply {
        status: StatusCode::OK,
        content_type: "application/json",
        body,
    })
}

/// Turns a resize evaluation into the answer: allowed, with its warnings, or refused.
fn resize(eval: ResizeEvaluation, answer: &mut Answer, report: &mut ReviewReport) -> Outcome {
    report.resize = Some(match (&eval.denied, eval.warnings.is_empty()) {
        (Some(_), _) => ResizeOutcome::Denied,
        (None, false) => ResizeOutcome::Warned,
        (None, true) => ResizeOutcome::Allowed,
    });
    answer.warnings = eval.warnings;
    match eval.denied {
        Some(message) => {
            report.message = Some(message.clone());
            answer.denied = Some(message);
            Outcome::Denied
        }
        None => Outcome::Unchanged,
    }
}

/// Turns an evaluation into the response for the endpoint.
fn decide(eval: Evaluation, answer: &mut Answer, report: &mut ReviewReport) -> Outcome {
    let mut warnings = report::webhook_warnings(&eval);
    let outcome = match eval.decision {
        Decision::Skipped(SkipReason::Disabled | SkipReason::Mirror) => Outcome::Skipped,
        Decision::Skipped(SkipReason::NotUnderstood(reason)) => {
            warnings.push(text::shorten(
                format!("gomemlimit-injector: cannot read the pod ({reason}); admitted unchanged"),
                WARNING,
            ));
            report.message = Some(reason.to_string());
            Outcome::Error
        }
        Decision::Denied(message) if eval.audit_only => {
            let annotations = &mut answer.audit_annotations;
            annotations.insert("would-deny", report::summary_text(&message));
            report.message = Some(message);
            Outcome::Audited
        }
        Decision::Denied(message) => {
            report.message = Some(message.clone());
            answer.denied = Some(message);
            Outcome::Denied
        }
        Decision::Evaluated if eval.changes.is_empty() => Outcome::Unchanged,
        Decision::Evaluated if eval.audit_only => {
            let annotations = &mut answer.audit_annotations;
            annotations.insert("would-mutate", "true".into());
            annotations.insert("changes", report::summary(&eval.changes));
            Outcome::Audited
        }
        Decision::Evaluated => {
            answer.patch = Some(eval.patch);
            Outcome::Mutated
        }
    };
    answer.warnings = warnings;
    outcome
}
