//! AdmissionReview handling: read the request, run the engine, answer. Pure: no I/O, no
//! logging; the server records metrics and logs from the returned report.

mod answer;
mod base64_writer;
mod envelope;
mod rejection;
mod request;

use std::io::{self, Write};

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

/// An answer decided but not yet written: a review's AdmissionReview, written as it is
/// sent, or a plain-text rejection. A large pod's answer is several times its body, and
/// is never held whole when written to a stream.
#[derive(Debug)]
pub struct Prepared {
    status: StatusCode,
    content_type: &'static str,
    body: PreparedBody,
}

// A review is the usual body: boxing it would cost an allocation per review.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum PreparedBody {
    Text(Vec<u8>),
    Review { uid: String, answer: Answer },
}

impl Prepared {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn content_type(&self) -> &'static str {
        self.content_type
    }

    /// Writes the body to `out`.
    pub fn write_to<W: Write>(&self, mut out: W) -> io::Result<()> {
        match &self.body {
            PreparedBody::Text(text) => out.write_all(text),
            PreparedBody::Review { uid, answer } => {
                answer.write_json(uid, out).map_err(io::Error::from)
            }
        }
    }

    /// The reply, its body written out; a failure to write it becomes a rejection (with
    /// `report` updated to say so).
    fn into_reply(self, report: &mut ReviewReport) -> HttpReply {
        let body = match self.body {
            PreparedBody::Text(text) => text,
            PreparedBody::Review { uid, answer } => match answer.to_json(&uid) {
                Ok(body) => body,
                Err(e) => {
                    let (reply, rejected) = Rejection::Response(e).answer(std::mem::take(report));
                    *report = rejected;
                    return reply;
                }
            },
        };
        HttpReply {
            status: self.status,
            content_type: self.content_type,
            body,
        }
    }
}

impl From<HttpReply> for Prepared {
    fn from(reply: HttpReply) -> Self {
        Prepared {
            status: reply.status,
            content_type: reply.content_type,
            body: PreparedBody::Text(reply.body),
        }
    }
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

/// [`handle`], with the answer decided but not yet written: for a server that writes it
/// to the connection as it is made.
pub fn prepare(
    endpoint: Endpoint,
    content_type: Option<&str>,
    body: &[u8],
    policy: &Policy,
) -> (Prepared, ReviewReport) {
    prepare_with(Reading::OnePass, endpoint, content_type, body, policy)
}

/// [`handle`], reading the body as `reading` says.
pub fn handle_with(
    reading: Reading,
    endpoint: Endpoint,
    content_type: Option<&str>,
    body: &[u8],
    policy: &Policy,
) -> (HttpReply, ReviewReport) {
    let (prepared, mut report) = prepare_with(reading, endpoint, content_type, body, policy);
    let reply = prepared.into_reply(&mut report);
    (reply, report)
}

fn prepare_with(
    reading: Reading,
    endpoint: Endpoint,
    content_type: Option<&str>,
    body: &[u8],
    policy: &Policy,
) -> (Prepared, ReviewReport) {
    let mut report = ReviewReport::default();
    let request = Request::parse(reading, content_type, body, &mut report);
    match request.map(|request| review(endpoint, request, policy, &mut report)) {
        Ok(prepared) => (prepared, report),
        Err(rejection) => {
            let (reply, report) = rejection.answer(report);
            (reply.into(), report)
        }
    }
}

fn review(
    endpoint: Endpoint,
    mut request: Request<'_>,
    policy: &Policy,
    report: &mut ReviewReport,
) -> Prepared {
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
        return reply(outcome, &request, answer, report);
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
    reply(outcome, &request, answer, report)
}

/// The 200 reply carrying `answer`.
fn reply(
    outcome: Outcome,
    request: &Request<'_>,
    answer: Answer,
    report: &mut ReviewReport,
) -> Prepared {
    report.outcome = Some(outcome);
    Prepared {
        status: StatusCode::OK,
        content_type: "application/json",
        body: PreparedBody::Review {
            uid: request.uid.clone().into_owned(),
            answer,
        },
    }
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
        Decision::Evaluated if !eval.has_changes() => Outcome::Unchanged,
        Decision::Evaluated if eval.audit_only => {
            let annotations = &mut answer.audit_annotations;
            annotations.insert("would-mutate", "true".into());
            annotations.insert("changes", report::summary(eval.changes()));
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
