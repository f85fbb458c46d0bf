//! Reading an AdmissionReview request: what the webhook needs of it, with its object
//! kept whole. The usual pod CREATE is read in one pass by [`envelope`](super::envelope);
//! every other body is read into a document and checked field by field, which names what
//! is wrong with a malformed one.

use std::borrow::Cow;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde_json::Value;

use super::envelope;
use super::rejection::Rejection;
use super::{Reading, ReviewReport};
use crate::engine::{self, Evaluation, Field, PodView};
use crate::policy::{Mode, Policy};

pub(super) const API_VERSION: &str = "admission.k8s.io/v1";
pub(super) const KIND: &str = "AdmissionReview";

/// One request, as far as the webhook reads it.
pub(super) struct Request<'a> {
    pub(super) uid: Cow<'a, str>,
    /// `kind` is core/v1 Pod and `resource` is `pods`.
    pub(super) is_pod: bool,
    /// Empty for the object itself.
    pub(super) sub_resource: Cow<'a, str>,
    pub(super) operation: Operation,
    /// The object, when there is one.
    pub(super) object: Option<Object<'a>>,
    /// `oldObject`, when there is one (never for a CREATE).
    pub(super) old_object: Option<Value>,
}

/// The request's object.
pub(super) enum Object<'a> {
    /// Read into a document.
    Document(Value),
    /// Read straight from the body, only what the engine looks at.
    View(Field<PodView<'a>>),
}

impl Object<'_> {
    /// The engine's evaluation of the object as a pod.
    pub(super) fn evaluate(&self, policy: &Policy, mode: Mode) -> Evaluation {
        match self {
            Object::Document(pod) => engine::evaluate_as(pod, policy, mode),
            Object::View(pod) => engine::evaluate_view(pod, policy, mode),
        }
    }

    /// `metadata.generateName`, if it is a string.
    fn generate_name(&self) -> Option<&str> {
        match self {
            Object::Document(pod) => pod.pointer("/metadata/generateName")?.as_str(),
            Object::View(pod) => pod.present()?.metadata.present()?.generate_name.as_deref(),
        }
    }
}

impl<'a> Request<'a> {
    /// Checks and reads a body; what the log says of the request goes into `report` as soon
    /// as it is known.
    pub(super) fn parse(
        reading: Reading,
        content_type: Option<&str>,
        body: &'a [u8],
        report: &mut ReviewReport,
    ) -> Result<Self, Rejection> {
        if !is_json(content_type) {
            return Err(Rejection::ContentType(
                content_type.unwrap_or("").to_owned(),
            ));
        }
        let create = match reading {
            Reading::OnePass => envelope::read(body),
            Reading::Document => None,
        };
        let request = match create {
            Some(create) => Request::created(create, report),
            None => Request::checked(body, report)?,
        };
        if report.pod.is_empty()
            && let Some(generate) = request.object.as_ref().and_then(Object::generate_name)
        {
            report.pod = generate.to_owned();
        }
        Ok(request)
    }

    /// A pod CREATE of the usual shape.
    fn created(create: envelope::Create<'a>, report: &mut ReviewReport) -> Self {
        report.uid = create.uid.to_owned();
        report.namespace = create.namespace.unwrap_or_default().to_owned();
        report.operation = "CREATE".to_owned();
        report.dry_run = create.dry_run;
        report.user = create.username.unwrap_or_default().to_owned();
        report.pod = create.name.to_owned();
        let object = match create.object {
            Field::Absent | Field::Null => None,
            object => Some(Object::View(object)),
        };
        Request {
            uid: Cow::Borrowed(create.uid),
            is_pod: create.is_pod,
            sub_resource: Cow::Borrowed(""),
            operation: Operation::Create,
            object,
            old_object: None,
        }
    }

    /// Any other body, read into a document and checked field by field.
    fn checked(body: &[u8], report: &mut ReviewReport) -> Result<Self, Rejection> {
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
        let request: AdmissionRequest<DynamicObject> =
            review.try_into().map_err(|_| Rejection::MissingRequest)?;
        report.namespace = request.namespace.clone().unwrap_or_default();
        report.operation = format!("{:?}", request.operation).to_uppercase();
        report.dry_run = request.dry_run;
        report.user = request.user_info.username.clone().unwrap_or_default();
        report.pod = request.name.clone();
        Ok(Request {
            is_pod: request.kind.group.is_empty()
                && request.kind.kind == "Pod"
                && request.resource.resource == "pods",
            sub_resource: Cow::Owned(request.sub_resource.unwrap_or_default()),
            operation: request.operation,
            object: object.map(Object::Document),
            old_object: request
                .old_object
                .as_ref()
                .and_then(|o| serde_json::to_value(o).ok()),
            uid: Cow::Owned(request.uid),
        })
    }
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}
