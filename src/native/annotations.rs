//! The per-pod annotations in CEL, as `engine::annotations` reads them: overrides within
//! the policy's bounds, exclusions, the audit mode, and one message per invalid value.

use super::expr::quote;
use super::program::{Variable, var};
use crate::engine::{EXCLUDE_CONTAINERS, GOGC_ANNOTATION, MODE, PERCENT};

/// The variables, in order: the annotations as written, whether each is valid, then the
/// settings in force for the pod.
pub(super) fn variables() -> Vec<Variable> {
    let mut variables = written();
    variables.extend(in_force());
    variables
}

/// The annotations as written, and whether each is valid.
fn written() -> Vec<Variable> {
    // `string()`: a value read through `[?key]` is not taken for a string by `int()`.
    let annotation = |key: &str| format!("{}[?'{key}'].optMap(v, string(v))", var("annotations"));
    let (percent, gogc, exclude) = (
        var("percentAnnotation"),
        var("gogcAnnotation"),
        var("excludeAnnotation"),
    );
    let (min, max) = (var("minPercent"), var("maxPercent"));
    vec![
        Variable::new("modeAnnotation", annotation(MODE)),
        Variable::new("percentAnnotation", annotation(PERCENT)),
        Variable::new("gogcAnnotation", annotation(GOGC_ANNOTATION)),
        Variable::new("excludeAnnotation", annotation(EXCLUDE_CONTAINERS)),
        // Digits only, as u8 reads them (leading zeros allowed), within the bounds.
        Variable::new(
            "percentValid",
            format!(
                "{percent}.hasValue() && {percent}.value().matches('^0*[0-9]{{1,3}}$')\n\
                 && int(string({percent}.value())) >= {min} && int(string({percent}.value())) <= {max}"
            ),
        ),
        Variable::new(
            "gogcValid",
            format!(
                "{gogc}.hasValue() && ({gogc}.value() in ['off', 'keep'] || {gogc}.value().matches('^[0-9]{{1,6}}$'))"
            ),
        ),
        Variable::new(
            "excludeNames",
            format!(
                "{exclude}.hasValue() ? {exclude}.value().split(',').map(n, n.trim()).filter(n, n != '') : []"
            ),
        ),
        Variable::new(
            "excludeInvalid",
            format!(
                "{}.filter(n, !(size(n) <= 63 && n.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')))",
                var("excludeNames")
            ),
        ),
    ]
}

/// The settings in force: the policy's, overridden by the valid annotations.
fn in_force() -> Vec<Variable> {
    let (mode, percent, gogc) = (
        var("modeAnnotation"),
        var("percentAnnotation"),
        var("gogcAnnotation"),
    );
    vec![
        Variable::new("invalid", invalid()),
        Variable::new(
            "auditOnly",
            format!("{} || {mode} == optional.of('audit')", var("auditPolicy")),
        ),
        Variable::new(
            "percent",
            format!(
                "{} ? int(string({percent}.value())) : {}",
                var("percentValid"),
                var("percentPolicy")
            ),
        ),
        Variable::new(
            "gogc",
            format!(
                "string({} ? ({gogc}.value() in ['off', 'keep'] ? {gogc}.value() : string(int(string({gogc}.value())))) : {})",
                var("gogcValid"),
                var("gogcPolicy")
            ),
        ),
        Variable::new(
            "excluded",
            format!(
                "{} + (size({}) == 0 ? {} : [])",
                var("excludeContainersPolicy"),
                var("excludeInvalid"),
                var("excludeNames")
            ),
        ),
    ]
}

/// One message per invalid annotation, in the engine's order and words.
fn invalid() -> String {
    let (mode, percent, gogc) = (
        var("modeAnnotation"),
        var("percentAnnotation"),
        var("gogcAnnotation"),
    );
    let bad_exclude = var("excludeInvalid");
    let messages = [
        format!(
            "{mode}.hasValue() && {mode}.value() != 'audit'\n  \
             ? 'invalid annotation {MODE}=' + {} + ': the only allowed value is \"audit\"' : ''",
            quote(&format!("string({mode}.value())"))
        ),
        format!(
            "{percent}.hasValue() && !{}\n  \
             ? 'invalid annotation {PERCENT}=' + {} + ': allowed values are integers ' + string({}) + ' to ' + string({}) : ''",
            var("percentValid"),
            quote(&format!("string({percent}.value())")),
            var("minPercent"),
            var("maxPercent")
        ),
        format!(
            "{gogc}.hasValue() && !{}\n  \
             ? 'invalid annotation {GOGC_ANNOTATION}=' + {} + ': allowed values are off, keep or an integer' : ''",
            var("gogcValid"),
            quote(&format!("string({gogc}.value())"))
        ),
        format!(
            "size({bad_exclude}) > 0\n  \
             ? 'invalid annotation {EXCLUDE_CONTAINERS}: ' + {} + ' is not a container name; expected comma-separated container names' : ''",
            quote(&format!("string({bad_exclude}[0])"))
        ),
    ];
    format!("[\n{}\n].filter(m, m != '')", messages.join(",\n"))
}
