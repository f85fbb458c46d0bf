//! What the engine says, in CEL: its warnings in its order, the denials, and each change
//! in the words of `report` (the audit warning and the summary of the audit annotation).

use super::expr::{bind, shorten};
use super::plan::at_index;
use super::program::{Variable, var};
use super::status::previous;
use crate::engine::{DOWNWARD, STATUS};
use crate::text::MAX_WARNING_LEN;

/// Cap of the audit summary annotation, in bytes (the text is ASCII).
const SUMMARY: usize = 1024;

/// The variables, in order.
pub(super) fn variables() -> Vec<Variable> {
    vec![
        Variable::new(
            "denials",
            // Only `missingLimit: deny` denies a container: other policies skip the plan.
            format!(
                "{} == 'deny' && {} ? {}.filter(m, m.denial != '').map(m, m.denial) : []",
                var("missingLimit"),
                var("evaluable"),
                var("memory")
            ),
        ),
        Variable::new("targetWarnings", target_warnings()),
        Variable::new("changes", changes()),
        Variable::new("warnings", warnings()),
        Variable::new(
            "summary",
            shorten(
                &format!("{}.map(c, c[1]).join(', ')", var("changes")),
                SUMMARY,
            ),
        ),
    ]
}

/// One warning per target left alone (or given GOMEMLIMIT beside `envFrom`), in pod order.
///
/// In enforce, these are read from the pod as the mutating policy left it. A container
/// it skipped is still as it was, and so gets the same warning; but a GOMEMLIMIT it added
/// beside `envFrom` now reads as present, so that warning is given for every container
/// whose GOMEMLIMIT is the one the status annotation records.
fn target_warnings() -> String {
    let env_from = "'envFrom may also define GOMEMLIMIT; the injected env entry takes precedence'";
    let injected_before = format!(
        "!{audit} && m.runtime != '' && e.gml == '' && size(h.?envFrom.orValue([])) > 0 && {recorded}",
        audit = var("auditOnly"),
        recorded = recorded_gomemlimit(),
    );
    let container = format!(
        "m.warning != '' ? m.warning\n\
         : e.warning != '' ? e.warning\n\
         : e.envFrom == 'true' || ({injected_before}) ? {env_from}\n\
         : ''"
    );
    let per_container = at_index(&bind(
        "object.spec[c.list][int(c.index)]",
        "h",
        &bind(
            &container,
            "w",
            "w != '' ? 'container \"' + c.name + '\": ' + w : ''",
        ),
    ));
    format!(
        "([{pod}.warning != '' ? 'pod: ' + {pod}.warning : '']\n\
         + lists.range(size({containers})).map(i, {per_container})\n\
         ).filter(w, w != '').map(w, {short})",
        pod = var("podPlan"),
        containers = var("containers"),
        short = shorten("w", MAX_WARNING_LEN),
    )
}

/// Whether the GOMEMLIMIT of container `c` (holder `h`) is the one its record says was
/// set: the downward API entry, or the literal recorded.
fn recorded_gomemlimit() -> String {
    bind(
        "h.?env.orValue([]).filter(e, e.name == 'GOMEMLIMIT')",
        "g",
        &format!(
            "size(g) > 0 && {}",
            bind(
                &previous("c.name"),
                "rec",
                &format!(
                    "rec[?'gomemlimit'] == optional.of('{DOWNWARD}')\n  \
                     ? has(g[0].valueFrom) && g[0].valueFrom == {{'resourceFieldRef': {{'resource': '{DOWNWARD}', 'divisor': '1'}}}}\n  \
                     : has(g[0].value) && rec[?'gomemlimit'] == optional.of(g[0].value)"
                )
            )
        ),
    )
}

/// Every change as `[audit warning, summary item]`, in the engine's order: the pod's,
/// then each container's limit, request, GOMEMLIMIT and GOGC.
fn changes() -> String {
    let environment_changes = "\
        (e.gml == 'downward' ? [[t + ': would set env GOMEMLIMIT from limits.memory (downward API)', c.name + ': GOMEMLIMIT=limits.memory']]\n  \
        : e.gml == 'literal' ? [[t + ': would set env GOMEMLIMIT=' + e.gmlValue + ' (' + e.gmlPercent + '% of ' + e.gmlOf + ')', c.name + ': GOMEMLIMIT=' + e.gmlValue]]\n  \
        : e.gml == 'update' ? [[t + ': would update env GOMEMLIMIT to ' + e.gmlValue + ' (was ' + e.gmlFrom + ') for the new limit', c.name + ': GOMEMLIMIT ' + e.gmlFrom + '->' + e.gmlValue]]\n  \
        : [])\n\
        + (e.gogc != '' ? [[t + ': would set env GOGC=' + e.gogc, c.name + ': GOGC=' + e.gogc]] : [])";
    let per_container = at_index(&bind(
        "'container \"' + c.name + '\"'",
        "t",
        &format!(
            "{} + {environment_changes}",
            memory_changes("m", "t", "c.name", "")
        ),
    ));
    format!(
        "!{evaluable} ? [] : ({pod_changes})\n+ lists.range(size({containers})).map(i, {per_container}).flatten()\
         .map(x, [{short}, string(x[1])])",
        evaluable = var("evaluable"),
        pod_changes = memory_changes(&var("podPlan"), "'pod'", "'pod'", "spec.resources."),
        containers = var("containers"),
        short = shorten("string(x[0])", MAX_WARNING_LEN),
    )
}

/// The changes of the memory outcome `m` of `target` (shown as `who` in the summary): its
/// limit, then its request, named `<field_prefix>limits.memory` in the warning.
fn memory_changes(m: &str, target: &str, who: &str, field_prefix: &str) -> String {
    let change = |kind: &str, to: &str, from: &str| {
        format!(
            "{to} != '' ? [[{target} + ': would set {field_prefix}{kind}.memory to ' + {to} + ' (was ' + {from} + ')',\n    \
             {who} + ': {kind}.memory ' + {from} + '->' + {to}]] : []"
        )
    };
    format!(
        "({}) + ({})",
        change("limits", &format!("{m}.setLimit"), "'unset'"),
        change(
            "requests",
            &format!("{m}.setRequest"),
            &format!("({m}.requestFrom != '' ? {m}.requestFrom : 'unset')")
        )
    )
}

/// The warnings of the answer, in the engine's order. Audit: the invalid annotations, an
/// unreadable status, the targets left alone, what enforce would deny, then every change.
/// Enforce: nothing when the pod is denied for its annotations, else the same but the
/// changes.
fn warnings() -> String {
    let unreadable = format!(
        "({} ? [] : ['ignoring unreadable {STATUS} annotation'])",
        var("statusReadable")
    );
    let denials = var("denials");
    // Too large a pod is left alone with one warning; one naming a container twice is
    // rejected by the API server.
    let (evaluable, too_large) = (var("evaluable"), var("tooLarge"));
    let left_alone = format!(
        "({too_large} != '' ? [{}] : [])",
        shorten(
            &format!("'pod: ' + {too_large} + '; left unchanged'"),
            MAX_WARNING_LEN
        )
    );
    format!(
        "{audit}\n\
         ? {invalid} + ({evaluable} ? {unreadable} + {targets}\n  \
           + (size({denials}) > 0 ? [{would_deny}] : [])\n  \
           + {changes}.map(c, c[0]) : {left_alone})\n\
         : size({invalid_raw}) > 0 ? [] : {evaluable} ? {unreadable} + {targets} : {left_alone}",
        audit = var("auditOnly"),
        invalid = var("invalidWarnings"),
        invalid_raw = var("invalid"),
        targets = var("targetWarnings"),
        would_deny = shorten(
            &format!("'would deny: ' + {denials}.join('; ')"),
            MAX_WARNING_LEN
        ),
        changes = var("changes"),
    )
}
