//! The planned edits as JSONPatch operations, as `engine::patch` writes them: `add` of the
//! memory request and limit (creating `resources` and its maps where missing), `replace`
//! of a literal that follows the limit, `add` of the env entries (creating `env`) and of
//! the memory `resizePolicy` entry (creating `resizePolicy`), and the status annotation. Each operation is a map `{op, path, value}`; the mutation turns the
//! list into JSONPatch values.

use super::expr::bind;
use super::plan::at_index;
use super::program::{Variable, var};
use crate::engine::{DOWNWARD, STATUS};

/// `{op: 'add', path, value}`.
fn add(path: &str, value: &str) -> String {
    format!("{{'op': dyn('add'), 'path': dyn({path}), 'value': dyn({value})}}")
}

/// The operations that set `limit` and `request` (string expressions, `''` for none) on
/// the holder `h` (a container, or `spec`) at `base`.
fn memory(base: &str, limit: &str, request: &str) -> String {
    let kind = |kind: &str, value: &str| {
        format!(
            "({value} != '' ? [has(h.resources.{kind}) ? {} : {}] : [])",
            add(&format!("{base} + '/resources/{kind}/memory'"), value),
            add(
                &format!("{base} + '/resources/{kind}'"),
                &format!("{{'memory': {value}}}")
            ),
        )
    };
    let whole = format!(
        "{{?'limits': {limit} != '' ? optional.of({{'memory': {limit}}}) : optional.none(),\n  \
         ?'requests': {request} != '' ? optional.of({{'memory': {request}}}) : optional.none()}}"
    );
    format!(
        "({limit} == '' && {request} == '' ? []\n\
         : has(h.resources) ? {} + {}\n\
         : [{}])",
        kind("limits", limit),
        kind("requests", request),
        add(&format!("{base} + '/resources'"), &whole),
    )
}

/// The operations of container `c` (holder `h`, base path `base`) for its environment
/// outcome `e`.
fn environment(base: &str) -> String {
    let gomemlimit = format!(
        "e.gml == 'downward'\n  \
         ? {{'name': dyn('GOMEMLIMIT'), 'valueFrom': dyn({{'resourceFieldRef': {{'resource': '{DOWNWARD}', 'divisor': '1'}}}})}}\n  \
         : {{'name': dyn('GOMEMLIMIT'), 'value': dyn(e.gmlValue)}}"
    );
    let entries = format!(
        "[{gomemlimit}] + (e.gogc != '' ? [{{'name': dyn('GOGC'), 'value': dyn(e.gogc)}}] : [])"
    );
    let append = bind(
        &entries,
        "entries",
        &format!(
            "has(h.env) ? entries.map(x, {}) : [{}]",
            add(&format!("{base} + '/env/-'"), "x"),
            add(&format!("{base} + '/env'"), "entries")
        ),
    );
    let entry = "{'resourceName': 'memory', 'restartPolicy': 'RestartContainer'}";
    let resize = format!(
        "(has(h.resizePolicy) ? [{}] : [{}])",
        add(&format!("{base} + '/resizePolicy/-'"), entry),
        add(&format!("{base} + '/resizePolicy'"), &format!("[{entry}]")),
    );
    format!(
        "(e.gml == 'update' ? [{{'op': dyn('replace'), 'path': dyn({base} + '/env/' + e.gmlIndex + '/value'), 'value': dyn(e.gmlValue)}}] : [])\n\
         + (e.gml == 'downward' || e.gml == 'literal' ? {append} : [])\n\
         + (e.gml == 'downward' && e.resize == 'set' ? {resize} : [])"
    )
}

/// The variable `patch`: every operation, or none when the pod is audited or denied.
pub(super) fn variables() -> Vec<Variable> {
    let per_container = at_index(&bind(
        "object.spec[c.list][int(c.index)]",
        "h",
        &bind(
            "'/spec/' + c.list + '/' + c.index",
            "base",
            &format!(
                "{} + {}",
                memory("base", "m.setLimit", "m.setRequest"),
                environment("base")
            ),
        ),
    ));
    let pod = bind(
        &var("podPlan"),
        "m",
        &bind(
            "object.spec",
            "h",
            &memory("'/spec'", "m.setLimit", "m.setRequest"),
        ),
    );
    vec![Variable::new(
        "patch",
        format!(
            "!{evaluable} || {audit} || size({invalid}) > 0 || size({denials}) > 0 ? []\n\
             : {pod}\n\
             + lists.range(size({containers})).map(i, {per_container}).flatten()\n\
             + {status}",
            evaluable = var("evaluable"),
            audit = var("auditOnly"),
            invalid = var("invalid"),
            denials = var("denials"),
            containers = var("containers"),
            status = status(),
        ),
    )]
}

/// The operation that writes the status annotation, when it changes.
fn status() -> String {
    let status_key = STATUS.replace('/', "~1");
    format!(
        "({changed} ? [has(object.metadata.annotations) ? {} : {}] : [])",
        add(
            &format!("'/metadata/annotations/{status_key}'"),
            &var("newStatus")
        ),
        add(
            "'/metadata/annotations'",
            &format!("{{'{STATUS}': {}}}", var("newStatus"))
        ),
        changed = var("statusChanged"),
    )
}

/// The mutation: the operations of `patch` as JSONPatch values.
pub(super) fn mutation() -> String {
    format!(
        "{}.map(o, JSONPatch{{op: string(o.op), path: string(o.path), value: o.value}})",
        var("patch")
    )
}
