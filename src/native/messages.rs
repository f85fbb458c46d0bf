//! What the engine says, in CEL: its warnings in its order, the denials, and each change
//! in the words of `report` (the audit warning and the summary of the audit annotation).

use super::expr::{bind, shorten};
use super::plan::{at_index, resize_decision};
use super::program::{Variable, var};
use super::status::previous;
use crate::engine::{DOWNWARD, STATUS};
use crate::text::MAX_WARNING_LEN;

/// Cap of the audit summary annotation, in bytes (the text is ASCII).
pub(super) const SUMMARY: usize = 1024;

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

/// The warnings of each target, in pod order and, per target, in the engine's order: why
/// it is left alone or the memory limit added where there was none (in enforce), why
/// GOMEMLIMIT is not set, `envFrom`, and why the memory `resizePolicy` is not added.
///
/// In enforce, these are read from the pod as the mutating policy left it. A container
/// it skipped is still as it was, and so gets the same warnings; but what it added now
/// reads as present, so those warnings come from the status annotation: a limit it
/// records as added, a GOMEMLIMIT that is the one it records.
fn target_warnings() -> String {
    let audit = var("auditOnly");
    let per_container = at_index(&bind(
        "object.spec[c.list][int(c.index)]",
        "h",
        &format!(
            "({}).map(w, 'container \"' + c.name + '\": ' + w)",
            container_warnings()
        ),
    ));
    let pod = bind(
        &var("podPlan"),
        "m",
        &format!(
            "(m.warning != '' ? [m.warning] : {audit} ? [] : {}).map(w, 'pod: ' + w)",
            limit_added("m", &var("previousPod"))
        ),
    );
    format!(
        "({pod}\n\
         + lists.range(size({containers})).map(i, {per_container}).flatten()\n\
         ).map(w, {short})",
        containers = var("containers"),
        short = shorten("w", MAX_WARNING_LEN),
    )
}

/// `adds a memory limit of L where there was none`, if the memory outcome `m` sets one, or
/// the record `rec` says one was set.
fn limit_added(m: &str, rec: &str) -> String {
    format!(
        "({m}.setLimit != '' ? ['adds a memory limit of ' + {m}.setLimit + ' where there was none']\n  \
         : {rec}[?'limit'].hasValue() ? ['adds a memory limit of ' + {rec}.limit + ' where there was none'] : [])"
    )
}

/// The warnings of container `c` (holder `h`, outcomes `m` and `e`), without the target.
fn container_warnings() -> String {
    let audit = var("auditOnly");
    let env_from = "'envFrom may also define GOMEMLIMIT; the injected env entry takes precedence'";
    let injected_before = format!(
        "!{audit} && m.runtime != '' && e.gml == '' && {recorded}",
        recorded = recorded_gomemlimit(),
    );
    let resize = format!(
        "(e.gml == 'downward' ? e.resize\n  \
         : {injected_before} && {previous}[?'gomemlimit'] == optional.of('{DOWNWARD}') ? {decision} : '')",
        previous = previous("c.name"),
        decision = resize_decision("c"),
    );
    format!(
        "(m.warning != '' ? [m.warning] : {audit} ? [] : {added})\n\
         + (e.warning != '' ? [e.warning] : [])\n\
         + (e.envFrom == 'true' || ({injected_before} && size(h.?envFrom.orValue([])) > 0) ? [{env_from}] : [])\n\
         + {bound_resize}",
        added = limit_added("m", &previous("c.name")),
        bound_resize = bind(
            &resize,
            "r",
            "r == 'kept' ? ['resizePolicy memory ' + c.resize.substring(1) + ' kept; GOMEMLIMIT will not follow in-place resizes']\n  \
             : r == 'never' ? ['restartPolicy Never allows no RestartContainer resizePolicy; GOMEMLIMIT will not follow in-place resizes']\n  \
             : []"
        ),
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
/// then each container's limit, request, GOMEMLIMIT, GOGC and memory `resizePolicy`.
fn changes() -> String {
    let environment_changes = "\
        (e.gml == 'downward' ? [[t + ': would set env GOMEMLIMIT from limits.memory (downward API)', c.name + ': GOMEMLIMIT=limits.memory']]\n  \
        : e.gml == 'literal' ? [[t + ': would set env GOMEMLIMIT=' + e.gmlValue + ' (' + e.gmlPercent + '% of ' + e.gmlOf + ')', c.name + ': GOMEMLIMIT=' + e.gmlValue]]\n  \
        : e.gml == 'update' ? [[t + ': would update env GOMEMLIMIT to ' + e.gmlValue + ' (was ' + e.gmlFrom + ') for the new limit', c.name + ': GOMEMLIMIT ' + e.gmlFrom + '->' + e.gmlValue]]\n  \
        : [])\n\
        + (e.gogc != '' ? [[t + ': would set env GOGC=' + e.gogc, c.name + ': GOGC=' + e.gogc]] : [])\n\
        + (e.gml == 'downward' && e.resize == 'set' ? [[t + ': would set resizePolicy memory RestartContainer', c.name + ': resizePolicy memory=RestartContainer']] : [])";
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
    // A limit is only ever added where there was none.
    let limit = format!(
        "{m}.setLimit != '' ? [[{target} + ': would add a memory limit of ' + {m}.setLimit + ' where there was none',\n    \
         {who} + ': limits.memory unset->' + {m}.setLimit]] : []"
    );
    format!(
        "({}) + ({})",
        limit,
        change(
            "requests",
            &format!("{m}.setRequest"),
            &format!("({m}.requestFrom != '' ? {m}.requestFrom : 'unset')")
        )
    )
}

/// The warnings of the answer, in the engine's order. Audit: what enforce would deny for
/// the invalid annotations; else an unreadable status, the targets' warnings, then every
/// change, or what enforce would deny instead. Enforce: nothing when the pod is denied for
/// its annotations, else the same but the changes.
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
    let would_deny = |message: String| {
        shorten(
            &format!("'would deny: ' + {message}.join('; ')"),
            MAX_WARNING_LEN,
        )
    };
    format!(
        "{audit}\n\
         ? (size({invalid}) > 0 ? [{deny_invalid}]\n  \
           : {evaluable} ? {unreadable} + {targets}\n    \
             + (size({denials}) > 0 ? [{deny_limits}] : {changes}.map(c, c[0]))\n  \
           : {left_alone})\n\
         : size({invalid}) > 0 ? [] : {evaluable} ? {unreadable} + {targets} : {left_alone}",
        audit = var("auditOnly"),
        invalid = var("invalid"),
        targets = var("targetWarnings"),
        deny_invalid = would_deny(var("invalid")),
        deny_limits = would_deny(denials.clone()),
        changes = var("changes"),
    )
}
