//! The status annotation in CEL: read (what an earlier pass recorded) and written (merged
//! with what this pass sets), in exactly the text the engine's serializer gives.
//!
//! CEL has no JSON parser. The annotation is read in the compact form the engines write:
//! `{"containers":{"a":{"request":"1Gi",...}},"pod":{...}}`, no spaces, no escapes, no
//! braces inside values, the known keys only (in any order, each once). Its parts are cut
//! out by position and checked by tokens: a part is read only if its tokens, joined again,
//! give it back exactly. Every step is linear in the text (a single regular expression
//! over all of it would cost its length times its own, far beyond the API server's
//! limits). Any other text, even valid JSON, is unreadable here where the engine might
//! read it: a difference the README lists.

use super::expr::bind;
use super::plan::at_index;
use super::program::{Variable, var};
use crate::engine::{DOWNWARD, STATUS};

/// A JSON string without escapes, control characters or braces.
const STRING: &str = r#""[^"\\{}\x00-\x1f]*""#;

/// The fields of a record, in the order the engine writes them.
const FIELDS: [&str; 7] = [
    "request",
    "limit",
    "gomemlimit",
    "percent",
    "budget",
    "gogc",
    "resizePolicy",
];

/// One field of a record, for `findAll`.
fn field() -> String {
    format!(
        r#""(request|limit|gomemlimit|budget|gogc|resizePolicy)":{STRING}|"percent":(0|[1-9][0-9]{{0,2}})"#
    )
}

/// One entry of the containers object, for `findAll`.
fn entry() -> String {
    format!(r"{STRING}:\{{[^{{}}]*\}}")
}

/// Whether the record body `b` (a string expression) is what the engine reads: fields
/// joined by commas, each once, the percentage a `u8`.
fn body_readable(b: &str) -> String {
    bind(
        &format!("{b}.findAll(r'{}')", field()),
        "fs",
        &format!(
            "fs.join(',') == {b}\n  \
             && size(fs.map(f, f.substring(1, f.indexOf('\":')))) == size(fs.map(f, f.substring(1, f.indexOf('\":'))).distinct())\n  \
             && fs.all(f, !f.startsWith('\"percent\":') || int(f.substring(10)) <= 255)"
        ),
    )
}

/// A record body read into a map of its fields, with `name` added when given.
fn read_record(body: &str, name: Option<&str>) -> String {
    let fields = format!(
        "{body}.findAll(r'{}').map(f, [f.substring(1, f.indexOf('\":')),\n  \
         f.startsWith('\"percent\":') ? f.substring(10) : f.substring(f.indexOf('\":\"') + 3, size(f) - 1)])",
        field()
    );
    let entries = match name {
        Some(name) => format!("[['name', {name}]] + {fields}"),
        None => fields,
    };
    format!("({entries}).transformMapEntry(i, kv, {{kv[0]: kv[1]}})")
}

/// A cut of the annotation: its shape is known (`'true'` or `''`), with the containers
/// object's entries and the pod record's fields (each without braces).
fn cut(shape: &str, containers: &str, pod: &str, has_pod: &str) -> String {
    format!("{{'shape': {shape}, 'containers': {containers}, 'pod': {pod}, 'hasPod': {has_pod}}}")
}

/// The annotation cut into its containers object and pod record: `{'shape': 'true'}` when
/// the text has one of the shapes `{}`, `{C}`, `{C,P}`, `{P}`, `{P,C}`.
fn sections(s: &str) -> String {
    format!(
        "({s} == '{{}}' ? {}\n\
         : {s}.startsWith('{{\"pod\":{{') && {s}.indexOf('}}') > 0 ? {}\n\
         : {s}.startsWith('{{\"containers\":{{') && size({s}) >= 17 ? {}\n\
         : {})",
        cut("'true'", "''", "''", "''"),
        pod_first(s),
        containers_first(s),
        cut("''", "''", "''", "''"),
    )
}

/// `{"pod":{F}}` or `{"pod":{F},"containers":{E}}`: the record ends at the first brace.
fn pod_first(s: &str) -> String {
    bind(
        &format!("{s}.indexOf('}}')"),
        "pe",
        &bind(
            &format!("{s}.substring(pe + 1)"),
            "rest",
            &format!(
                "rest == '}}' ? {}\n\
                 : rest.startsWith(',\"containers\":{{') && rest.endsWith('}}}}') && size(rest) >= 17\n  \
                 ? {}\n\
                 : {}",
                cut("'true'", "''", &format!("{s}.substring(8, pe)"), "'true'"),
                cut(
                    "'true'",
                    "rest.substring(15, size(rest) - 2)",
                    &format!("{s}.substring(8, pe)"),
                    "'true'"
                ),
                cut("''", "''", "''", "''"),
            ),
        ),
    )
}

/// `{"containers":{E}}` or `{"containers":{E},"pod":{F}}`: the containers object ends at
/// the first `}}` (its last entry's and its own), or at once when it is empty.
fn containers_first(s: &str) -> String {
    let bad = cut("''", "''", "''", "''");
    bind(
        &format!("{s}.charAt(15) == '}}' ? 15 : {s}.indexOf('}}}}', 15) + 1"),
        "ce",
        &format!(
            "ce < 15 ? {bad} : {}",
            bind(
                &format!("{s}.substring(ce + 1)"),
                "rest",
                &format!(
                    "rest == '}}' ? {}\n\
                     : rest.startsWith(',\"pod\":{{') && rest.endsWith('}}}}') && size(rest) >= 10\n  \
                     ? {}\n\
                     : {bad}",
                    cut("'true'", &format!("{s}.substring(15, ce)"), "''", "''"),
                    cut(
                        "'true'",
                        &format!("{s}.substring(15, ce)"),
                        "rest.substring(8, size(rest) - 2)",
                        "'true'"
                    ),
                ),
            ),
        ),
    )
}

/// Whether the annotation is absent, or read in full: its shape known, its entries and
/// records joined again give it back, no container is named twice.
fn readable() -> String {
    let (text, sections, entries) = (
        var("statusText"),
        var("statusSections"),
        var("statusEntries"),
    );
    format!(
        "!{text}.hasValue() || (\n  \
         {sections}.shape == 'true'\n  \
         && {entries}.join(',') == {sections}.containers\n  \
         && {entries}.all(r, {})\n  \
         && {}\n  \
         && {})",
        bind(ENTRY_BODY, "b", &body_readable("b")),
        body_readable(&format!("{sections}.pod")),
        bind(
            &format!("{entries}.map(r, {ENTRY_NAME}).sort()"),
            "ns",
            "lists.range(size(ns)).all(i, i == 0 || ns[i] != ns[i - 1])"
        ),
    )
}

/// The name of the container entry `r` (`"name":{...}`).
const ENTRY_NAME: &str = "r.substring(1, r.indexOf('\":{'))";
/// The record body of the container entry `r`.
const ENTRY_BODY: &str = "r.substring(r.indexOf('\":{') + 3, size(r) - 1)";

/// The variables that read the annotation, in order. When it is unreadable, nothing was
/// recorded.
pub(super) fn read_variables() -> Vec<Variable> {
    let text = var("statusText");
    let sections_var = var("statusSections");
    let entries = var("statusEntries");
    vec![
        Variable::new(
            "statusText",
            format!("{}[?'{STATUS}'].optMap(v, string(v))", var("annotations")),
        ),
        Variable::new("status", format!("{text}.orValue('{{}}')")),
        Variable::new("statusSections", sections(&var("status"))),
        Variable::new(
            "statusEntries",
            format!("{sections_var}.containers.findAll(r'{}')", entry()),
        ),
        Variable::new("statusReadable", readable()),
        Variable::new(
            "previousByName",
            format!(
                "{} ? {entries}.map(r, {}).transformMapEntry(i, r, {{r.name: r}}) : {{}}",
                var("statusReadable"),
                read_record(ENTRY_BODY, Some(ENTRY_NAME))
            ),
        ),
        Variable::new(
            "previousHasPod",
            format!(
                "{} && {sections_var}.hasPod == 'true'",
                var("statusReadable")
            ),
        ),
        Variable::new(
            "previousPod",
            format!(
                "{} ? {} : {{}}",
                var("previousHasPod"),
                read_record(&format!("{sections_var}.pod"), None)
            ),
        ),
    ]
}

/// What the record of the container named `name` (a string expression) says, as a map
/// (empty when there is none).
pub(super) fn previous(name: &str) -> String {
    format!("{}[?{name}].orValue({{}})", var("previousByName"))
}

/// A record as the engine writes it, from optional strings in [`FIELDS`] order.
fn write_record(fields: [&str; 7]) -> String {
    let parts: Vec<String> = FIELDS
        .iter()
        .zip(fields)
        .map(|(name, value)| {
            let shown = if *name == "percent" {
                "v.value()".to_owned()
            } else {
                "'\"' + v.value() + '\"'".to_owned()
            };
            bind(
                value,
                "v",
                &format!("v.hasValue() ? '\"{name}\":' + {shown} : ''"),
            )
        })
        .collect();
    format!(
        "'{{' + [\n  {}\n].filter(x, x != '').join(',') + '}}'",
        parts.join(",\n  ")
    )
}

/// The record of `rec` (a map) as it stands.
fn kept_record() -> String {
    write_record([
        "rec[?'request']",
        "rec[?'limit']",
        "rec[?'gomemlimit']",
        "rec[?'percent']",
        "rec[?'budget']",
        "rec[?'gogc']",
        "rec[?'resizePolicy']",
    ])
}

/// The variables that write the annotation, in order: for every container this pass
/// changes, its record after and before; the same for the pod; the annotation as it will
/// read; whether it changes.
pub(super) fn write_variables() -> Vec<Variable> {
    let (records, pods) = (var("statusRecords"), var("podRecords"));
    vec![
        Variable::new("statusRecords", container_records()),
        Variable::new("podRecords", pod_records()),
        Variable::new("newStatus", new_status()),
        Variable::new(
            "statusChanged",
            format!(
                "{records}.exists(n, {records}[n][0] != {records}[n][1]) || {pods}[0] != {pods}[1]"
            ),
        ),
    ]
}

/// `[record after, record before ('' for none)]` of each container this pass changes,
/// by name.
fn container_records() -> String {
    let changed = "m.setRequest != '' || m.setLimit != '' || e.gml != '' || e.gogc != ''";
    // The engine records a literal's budget whenever it computes one, and clears it for a
    // literal of a container's own limit.
    let merged = write_record([
        "m.setRequest != '' ? optional.of(m.setRequest) : rec[?'request']",
        "m.setLimit != '' ? optional.of(m.setLimit) : rec[?'limit']",
        &format!(
            "e.gml == 'downward' ? optional.of('{DOWNWARD}') : e.gml != '' ? optional.of(e.gmlValue) : rec[?'gomemlimit']"
        ),
        "e.gml == 'downward' ? optional.none() : e.gml == 'literal' ? optional.of(e.gmlPercent) : rec[?'percent']",
        "e.gml == 'literal' ? (e.gmlBudget != '' ? optional.of(e.gmlBudget) : optional.none()) : rec[?'budget']",
        "e.gogc != '' ? optional.of(e.gogc) : rec[?'gogc']",
        "e.gml == 'downward' && e.resize == 'set' ? optional.of('RestartContainer') : rec[?'resizePolicy']",
    ]);
    format!(
        "lists.range(size({})).filter(i, {}).transformMapEntry(k, i, {})",
        var("containers"),
        at_index(changed),
        at_index(&bind(
            &previous("c.name"),
            "rec",
            &format!(
                "{{c.name: [{merged}, c.name in {} ? {} : '']}}",
                var("previousByName"),
                kept_record()
            )
        ))
    )
}

/// `[record after, record before]` of the pod, `''` for none.
fn pod_records() -> String {
    let merged = bind(
        &var("podPlan"),
        "m",
        &format!(
            "{} || m.setRequest != '' || m.setLimit != '' ? {} : ''",
            var("previousHasPod"),
            write_record([
                "m.setRequest != '' ? optional.of(m.setRequest) : rec[?'request']",
                "m.setLimit != '' ? optional.of(m.setLimit) : rec[?'limit']",
                "rec[?'gomemlimit']",
                "rec[?'percent']",
                "rec[?'budget']",
                "rec[?'gogc']",
                "rec[?'resizePolicy']",
            ])
        ),
    );
    let kept = format!("{} ? {} : ''", var("previousHasPod"), kept_record());
    bind(&var("previousPod"), "rec", &format!("[{merged}, {kept}]"))
}

/// The annotation: the records of every container named in this pass or an earlier one,
/// sorted by name, then the pod's.
fn new_status() -> String {
    let (records, recorded) = (var("statusRecords"), var("previousByName"));
    let names = bind(
        &format!("({records}.map(n, n) + {recorded}.map(n, n)).sort()"),
        "s",
        "lists.range(size(s)).filter(i, i == 0 || s[i] != s[i - 1]).map(i, s[i])",
    );
    let entry = format!(
        "'\"' + n + '\":' + (n in {records} ? {records}[n][0] : {})",
        bind(&format!("{recorded}[n]"), "rec", &kept_record()),
    );
    bind(
        &names,
        "names",
        &format!(
            "'{{' + [\n  \
             size(names) > 0 ? '\"containers\":{{' + names.map(n, {entry}).join(',') + '}}' : '',\n  \
             {pod} != '' ? '\"pod\":' + {pod} : ''\n\
             ].filter(x, x != '').join(',') + '}}'",
            pod = format!("{}[0]", var("podRecords")),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(pattern: &str, text: &str) -> Vec<String> {
        regex::Regex::new(pattern)
            .expect("the pattern compiles")
            .find_iter(text)
            .map(|m| m.as_str().to_owned())
            .collect()
    }

    #[test]
    fn fields_tokenize_what_the_engine_writes() {
        let body = r#""request":"512Mi","gomemlimit":"483183820","percent":90,"gogc":"off""#;
        assert_eq!(tokens(&field(), body).join(","), body);
        for junk in [
            r#""percent":090"#,
            r#""foo":"x""#,
            r#""request":"a\"b""#,
            r#""gogc": "off""#,
        ] {
            assert_ne!(tokens(&field(), junk).join(","), junk, "{junk}");
        }
    }

    #[test]
    fn entries_tokenize_the_containers_object() {
        let containers =
            r#""api":{"request":"512Mi"},"w":{"gomemlimit":"limits.memory","gogc":"off"}"#;
        assert_eq!(tokens(&entry(), containers).join(","), containers);
        assert_eq!(tokens(&entry(), r#""a":{"x":{}}"#).join(","), r#""x":{}"#);
    }
}
