//! AdmissionReview wire handling: validate the request, run the engine, build the response.
//! Pure: no I/O, no logging; the server records metrics and logs from the returned report.

use std::time::Duration;

use http::StatusCode;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::engine::{self, ContainerEvent, Decision, Evaluation, ResizeEvaluation, SkipReason};
use crate::policy::{Mode, Policy};
use crate::report;
use crate::text::{self, WARNING};

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

/// Largest AdmissionReview body accepted; the server answers 413 above it.
pub(crate) const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

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
    #[error("failed to serialize the patch: {0}")]
    Patch(kube::core::admission::SerializePatchError),
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

/// Handles one AdmissionReview body. Never panics on input; every malformed request gets
/// a 4xx reply with a one-line reason.
pub fn handle(
    endpoint: Endpoint,
    content_type: Option<&str>,
    body: &[u8],
    policy: &Policy,
) -> (HttpReply, ReviewReport) {
    let mut report = ReviewReport::default();
    match review(endpoint, content_type, body, policy, &mut report) {
        Ok(reply) => (reply, report),
        Err(rejection) => rejection.answer(report),
    }
}

fn review(
    endpoint: Endpoint,
    content_type: Option<&str>,
    body: &[u8],
    policy: &Policy,
    report: &mut ReviewReport,
) -> Result<HttpReply, Rejection> {
    let Request { request, object } = Request::parse(content_type, body, report)?;
    report.describe(&request, object.as_ref());
    let mut response = AdmissionResponse::from(&request);
    let is_pod = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.resource.resource == "pods";
    let sub_resource = request.sub_resource.as_deref().unwrap_or("");
    let mode = match endpoint {
        Endpoint::Audit => Mode::Audit,
        Endpoint::Mutate => policy.mode,
    };
    if is_pod && sub_resource == "resize" && request.operation == Operation::Update {
        let old = request
            .old_object
            .as_ref()
            .and_then(|o| serde_json::to_value(o).ok());
        let outcome = match (old, object) {
            (Some(old), Some(new)) => {
                let eval = engine::evaluate_resize(&old, &new, policy, mode);
                resize(eval, &mut response, report)
            }
            _ => Outcome::Skipped,
        };
        return reply(outcome, &response, report);
    }
    let is_pod_create = is_pod && sub_resource.is_empty() && request.operation == Operation::Create;
    let outcome = match (is_pod_create, object) {
        (false, _) => Outcome::Skipped,
        (true, None) => {
            response.warnings = Some(vec![
                "gomemlimit-injector: the request has no object; pod admitted unchanged".into(),
            ]);
            Outcome::Error
        }
        (true, Some(pod)) => {
            let eval = engine::evaluate_as(&pod, policy, mode);
            report.events = eval.events.clone();
            decide(eval, &mut response, report)?
        }
    };
    reply(outcome, &response, report)
}

/// The 200 reply carrying `response`.
fn reply(
    outcome: Outcome,
    response: &AdmissionResponse,
    report: &mut ReviewReport,
) -> Result<HttpReply, Rejection> {
    report.outcome = Some(outcome);
    let body = serde_json::to_vec(&WireReview::from(response)).map_err(Rejection::Response)?;
    Ok(HttpReply {
        status: StatusCode::OK,
        content_type: "application/json",
        body,
    })
}

/// Turns a resize evaluation into the response: allowed, with its warnings, or refused.
fn resize(
    eval: ResizeEvaluation,
    response: &mut AdmissionResponse,
    report: &mut ReviewReport,
) -> Outcome {
    report.resize = Some(match (&eval.denied, eval.warnings.is_empty()) {
        (Some(_), _) => ResizeOutcome::Denied,
        (None, false) => ResizeOutcome::Warned,
        (None, true) => ResizeOutcome::Allowed,
    });
    if !eval.warnings.is_empty() {
        response.warnings = Some(eval.warnings);
    }
    match eval.denied {
        Some(message) => {
            report.message = Some(message.clone());
            response.allowed = false;
            response.result.code = 403;
            response.result.reason = "Forbidden".into();
            response.result.message = message;
            Outcome::Denied
        }
        None => Outcome::Unchanged,
    }
}

/// An AdmissionReview request, with its object kept apart as raw JSON so that no field of
/// it is lost.
struct Request {
    request: AdmissionRequest<DynamicObject>,
    object: Option<Value>,
}

impl Request {
    /// Checks and parses a body; the uid goes into `report` as soon as it is known.
    fn parse(
        content_type: Option<&str>,
        body: &[u8],
        report: &mut ReviewReport,
    ) -> Result<Self, Rejection> {
        if !is_json(content_type) {
            return Err(Rejection::ContentType(
                content_type.unwrap_or("").to_owned(),
            ));
        }
        let mut root: Value = serde_json::from_slice(body).map_err(Rejection::Json)?;
        let text = |key: &str| root.get(key).and_then(Value::as_str).map(str::to_owned);
        match text("apiVersion") {
            Some(v) if v == API_VERSION => {}
            other => return Err(Rejection::ApiVersion(other.unwrap_or_default())),
        }
        match text("kind") {
            Some(k) if k == KIND => {}
            other => return Err(Rejection::Kind(other.unwrap_or_default())),
        }
        let request = root
            .get_mut("request")
            .filter(|r| r.is_object())
            .ok_or(Rejection::MissingRequest)?;
        match request.get("uid").and_then(Value::as_str) {
            Some(uid) if !uid.is_empty() => report.uid = uid.to_owned(),
            _ => return Err(Rejection::MissingUid),
        }
        let object = request
            .get_mut("object")
            .map(Value::take)
            .filter(|o| !o.is_null());
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_value(root).map_err(Rejection::Review)?;
        let request = review.try_into().map_err(|_| Rejection::MissingRequest)?;
        Ok(Request { request, object })
    }
}

impl ReviewReport {
    /// What the log line says of the request.
    fn describe(&mut self, request: &AdmissionRequest<DynamicObject>, object: Option<&Value>) {
        self.namespace = request.namespace.clone().unwrap_or_default();
        self.operation = format!("{:?}", request.operation).to_uppercase();
        self.dry_run = request.dry_run;
        self.user = request.user_info.username.clone().unwrap_or_default();
        self.pod = request.name.clone();
        if self.pod.is_empty()
            && let Some(generate) = object
                .and_then(|o| o.pointer("/metadata/generateName"))
                .and_then(Value::as_str)
        {
            self.pod = generate.to_owned();
        }
    }
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Turns an evaluation into the response for the endpoint.
fn decide(
    eval: Evaluation,
    response: &mut AdmissionResponse,
    report: &mut ReviewReport,
) -> Result<Outcome, Rejection> {
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
            let annotations = &mut response.audit_annotations;
            annotations.insert("would-deny".into(), report::summary_text(&message));
            report.message = Some(message);
            Outcome::Audited
        }
        Decision::Denied(message) => {
            report.message = Some(message.clone());
            response.allowed = false;
            response.result.code = 403;
            response.result.reason = "Forbidden".into();
            response.result.message = message;
            Outcome::Denied
        }
        Decision::Evaluated if eval.changes.is_empty() => Outcome::Unchanged,
        Decision::Evaluated if eval.audit_only => {
            let annotations = &mut response.audit_annotations;
            annotations.insert("would-mutate".into(), "true".into());
            annotations.insert("changes".into(), report::summary(&eval.changes));
            Outcome::Audited
        }
        Decision::Evaluated => {
            let patch = eval.patch;
            let taken = std::mem::replace(response, AdmissionResponse::invalid(""));
            *response = taken.with_patch(patch).map_err(Rejection::Patch)?;
            Outcome::Mutated
        }
    };
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    Ok(outcome)
}

/// The AdmissionReview answer as the API server reads it. kube's `AdmissionResponse`
/// serializes the patch as an array of numbers; Go's `[]byte` convention, and every other
/// webhook, sends base64 text, which is also a third of the size.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a kube::core::Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// Sorted, so that the same review always gets the same bytes.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    audit_annotations: std::collections::BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a Vec<String>>,
}

impl<'a> From<&'a AdmissionResponse> for WireReview<'a> {
    fn from(r: &'a AdmissionResponse) -> Self {
        use base64::Engine as _;
        let patch = r
            .patch
            .as_ref()
            .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
        WireReview {
            api_version: API_VERSION,
            kind: KIND,
            response: WireResponse {
                uid: &r.uid,
                allowed: r.allowed,
                status: (!r.allowed).then_some(&r.result),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                audit_annotations: r
                    .audit_annotations
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
                warnings: r.warnings.as_ref(),
            },
        }
    }
}
