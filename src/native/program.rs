//! The CEL program of the native policies: the variables every policy shares (the policy
//! settings first, then the rules, in the order the engine applies them), and the
//! expressions each policy adds: the match conditions, the mutation, the denial, the
//! warnings and the audit annotations.

use super::resize::RESIZING;
use super::settings::Settings;
use super::{annotations, messages, patch, plan, resize, status};
use crate::engine::{INJECT, MIRROR};

/// How many warnings the validating policy can give: one validation each. The API server
/// passes on at most 4 KiB of warnings per request, which this many warnings exceed even
/// with short policy names.
pub(super) const MAX_WARNINGS: usize = 40;

/// The most containers (init containers included), and records in the status annotation,
/// the native policies evaluate. Their cost grows with the square of it in places (sorting
/// names); at this size the worst case stays well within the API server's CEL limits.
pub(super) const MAX_CONTAINERS: usize = 200;

/// The most `env` entries, over all containers, the native policies evaluate.
pub(super) const MAX_ENV: usize = 20_000;

/// The API server drops a `messageExpression` result longer than this (in bytes).
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

/// One entry of a policy's `variables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Variable {
    pub(super) name: &'static str,
    pub(super) expression: String,
}

impl Variable {
    pub(super) fn new(name: &'static str, expression: String) -> Self {
        Variable { name, expression }
    }
}

/// `variables.<name>`.
pub(super) fn var(name: &str) -> String {
    format!("variables.{name}")
}

/// A named CEL expression: a match condition or an audit annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Named {
    pub(super) name: &'static str,
    pub(super) expression: String,
}

/// One validation of a validating policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Validation {
    pub(super) expression: String,
    pub(super) message_expression: String,
    /// Shown when the message expression gives nothing the API server accepts.
    pub(super) message: &'static str,
}

/// The whole program for one set of settings.
#[derive(Debug, Clone)]
pub(super) struct Program {
    /// For every policy, in order; the mutating policy also has [`Program::patch`].
    pub(super) variables: Vec<Variable>,
    pub(super) patch: Vec<Variable>,
}

impl Program {
    pub(super) fn new(settings: &Settings) -> Self {
        let mut variables = settings_variables(settings);
        variables.push(Variable::new(
            "annotations",
            "object.metadata.?annotations.orValue({})".to_owned(),
        ));
        variables.extend(annotations::variables());
        variables.extend(status::read_variables());
        variables.extend(plan::variables());
        variables.extend(messages::variables());
        variables.extend(status::write_variables());
        variables.extend(resize::variables());
        Program {
            variables,
            patch: patch::variables(),
        }
    }

    /// Pods the engine skips altogether: opted out by label or annotation, mirror pods.
    pub(super) fn match_conditions() -> Vec<Named> {
        let disabled =
            |map: &str| format!("object.metadata.?{map}[?'{INJECT}'].orValue('') != 'disabled'");
        vec![
            Named {
                name: "not-opted-out",
                expression: format!("{} && {}", disabled("labels"), disabled("annotations")),
            },
            Named {
                name: "not-a-mirror-pod",
                expression: format!("!object.metadata.?annotations[?'{MIRROR}'].hasValue()"),
            },
        ]
    }

    /// The JSONPatch mutation.
    pub(super) fn mutation() -> String {
        patch::mutation()
    }

    /// The denial, in enforce: the invalid annotations, else what `missingLimit: deny`
    /// rejects; for a resize, what it refuses.
    pub(super) fn denial() -> Validation {
        let (invalid, denials) = (var("invalid"), var("denials"));
        let resize_denials = var("resizeDenials");
        let message = format!(
            "{RESIZING} ? {resize_denials}.join('; ')\n\
             : size({invalid}) > 0 ? {invalid}.join('; ') : {denials}.join('; ')"
        );
        // Cut in characters so that even four-byte ones fit the byte limit.
        let keep = MAX_MESSAGE_BYTES / 4 - 3;
        Validation {
            expression: format!(
                "{audit} || ({RESIZING} ? size({resize_denials}) == 0 : size({invalid}) == 0 && size({denials}) == 0)",
                audit = var("auditOnly")
            ),
            message_expression: super::expr::bind(
                &message,
                "m",
                &format!(
                    "size(bytes(m)) > {MAX_MESSAGE_BYTES} ? m.substring(0, {keep}) + '...' : m"
                ),
            ),
            message: "the pod breaks the gomemlimit policy",
        }
    }

    /// One validation per warning, `index` of [`MAX_WARNINGS`].
    pub(super) fn warning(index: usize) -> Validation {
        let warnings = format!(
            "({RESIZING} ? {} : {})",
            var("resizeWarnings"),
            var("warnings")
        );
        Validation {
            expression: format!("size({warnings}) <= {index}"),
            message_expression: format!("{warnings}[{index}]"),
            message: "gomemlimit policy warning",
        }
    }

    /// The audit annotations of an audited pod that would change, or be denied.
    pub(super) fn audit_annotations() -> Vec<Named> {
        let (audit, invalid, denials) = (var("auditOnly"), var("invalid"), var("denials"));
        // A resize has no audit annotations.
        let due = format!(
            "!{RESIZING} && {audit} && size({invalid}) == 0 && size({denials}) == 0 && size({}) > 0",
            var("changes")
        );
        let message = format!("size({invalid}) > 0 ? {invalid}.join('; ') : {denials}.join('; ')");
        vec![
            Named {
                name: "would-deny",
                expression: format!(
                    "!{RESIZING} && {audit} && (size({invalid}) > 0 || size({denials}) > 0) ? {} : ''",
                    super::expr::shorten(&message, super::messages::SUMMARY)
                ),
            },
            Named {
                name: "would-mutate",
                expression: format!("{due} ? 'true' : ''"),
            },
            Named {
                name: "changes",
                expression: format!("{due} ? {} : ''", var("summary")),
            },
        ]
    }
}

/// The policy settings, as written, and normalised as the engine reads them.
fn settings_variables(s: &Settings) -> Vec<Variable> {
    vec![
        Variable::new("percentPolicy", s.percent.clone()),
        Variable::new(
            "gogcPolicy",
            super::expr::bind(&s.gogc, "g", "g in ['off', 'keep'] ? g : string(int(g))"),
        ),
        Variable::new("missingLimit", s.missing_limit.clone()),
        Variable::new("defaultMemory", s.default_memory.clone()),
        Variable::new("minPercent", s.min_percent.clone()),
        Variable::new("maxPercent", s.max_percent.clone()),
        Variable::new(
            "excludeContainersPolicy",
            format!(
                "{}.map(n, n.trim()).filter(n, n != '')",
                s.exclude_containers
            ),
        ),
        Variable::new("auditPolicy", s.audit.clone()),
        Variable::new("restartOnResize", s.restart_on_resize.clone()),
    ]
}
