//! The rules in CEL, as `engine::plan` applies them: the pod-level resources, then every
//! container in pod order (init containers first), first memory request = limit, then
//! GOMEMLIMIT and GOGC. Each container's outcome is a map of strings (`''` for none), in
//! two lists aligned with `variables.containers`: `memory` and `environment`.

use super::expr::{bind, bytes, compare, is_zero, lit, percent_of, quantity_error};
use super::program::{MAX_CONTAINERS, MAX_ENV, Variable, var};
use super::status::previous;
use crate::engine::{DOWNWARD, STATUS};

/// The keys of a `memory` outcome: a warning or a denial (the container is left alone),
/// the request and limit to set, and the memory its Go runtime gets (`runtime`; when it is
/// what is left of the pod limit, `budget` says how that was computed).
const MEMORY: [&str; 7] = [
    "warning",
    "denial",
    "setRequest",
    "requestFrom",
    "setLimit",
    "runtime",
    "budget",
];

/// The keys of an `environment` outcome: `gml` is `downward`, `literal` or `update` (the
/// literal at `gmlIndex` in `env`, from `gmlFrom`), with `gmlValue` the literal, computed
/// at `gmlPercent` of `gmlOf`; `gogc` the GOGC to add; `envFrom` `'true'` when that warning
/// is due; `warning` when GOMEMLIMIT is not set; `gmlBudget` the budget a literal was
/// computed from; `resize` what [`resize_decision`] says for a downward-API GOMEMLIMIT.
const ENVIRONMENT: [&str; 11] = [
    "gml",
    "gmlValue",
    "gmlPercent",
    "gmlOf",
    "gmlFrom",
    "gmlIndex",
    "gogc",
    "envFrom",
    "warning",
    "gmlBudget",
    "resize",
];

/// `body` for the container at index `i`, with `c` its entry in `containers`, `m` its
/// `memory` outcome and `e` its `environment` outcome.
pub(super) fn at_index(body: &str) -> String {
    let at = |list: &str| format!("{}[i]", var(list));
    bind(
        &at("containers"),
        "c",
        &bind(&at("memory"), "m", &bind(&at("environment"), "e", body)),
    )
}

/// A map literal with every key of `keys`, `''` where `set` gives no value.
fn outcome(keys: &[&str], set: &[(&str, String)]) -> String {
    debug_assert!(set.iter().all(|(k, _)| keys.contains(k)), "{set:?}");
    let entries: Vec<String> = keys
        .iter()
        .map(|key| {
            let value = set
                .iter()
                .find(|(k, _)| k == key)
                .map_or_else(|| "''".to_owned(), |(_, v)| v.clone());
            format!("'{key}': {value}")
        })
        .collect();
    format!("{{{}}}", entries.join(", "))
}

fn memory(set: &[(&str, String)]) -> String {
    outcome(&MEMORY, set)
}

fn environment(set: &[(&str, String)]) -> String {
    outcome(&ENVIRONMENT, set)
}

/// The variables, in order.
pub(super) fn variables() -> Vec<Variable> {
    let mut variables = guard();
    variables.extend(rules());
    variables
}

/// The containers, and whether the pod is one the native policies evaluate.
fn guard() -> Vec<Variable> {
    vec![
        Variable::new("containers", containers()),
        // Beyond these sizes the API server's CEL cost limits could cut an evaluation
        // short; the pod is left alone, with a warning.
        Variable::new(
            "tooLarge",
            format!(
                "size({c}) > {MAX_CONTAINERS} ? 'has ' + string(size({c})) + ' containers, more than the native policies evaluate ({MAX_CONTAINERS})'\n\
                 : {c}.map(c, int(c.env)).sum() > {MAX_ENV} ? 'has ' + string({c}.map(c, int(c.env)).sum()) + ' env entries, more than the native policies evaluate ({MAX_ENV})'\n\
                 : size({entries}) > {MAX_CONTAINERS} ? 'its {STATUS} annotation records ' + string(size({entries})) + ' containers, more than the native policies read ({MAX_CONTAINERS})'\n\
                 : ''",
                c = var("containers"),
                entries = var("statusEntries"),
            ),
        ),
        // A pod naming two containers alike is invalid; the API server rejects it.
        Variable::new(
            "evaluable",
            format!(
                "{} == '' && {}",
                var("tooLarge"),
                bind(
                    &format!("{}.map(c, c.name).sort()", var("containers")),
                    "ns",
                    "lists.range(size(ns)).all(i, i == 0 || ns[i] != ns[i - 1])"
                )
            ),
        ),
    ]
}

/// The rules: the pod-level resources, the budget, each container's memory and
/// environment.
fn rules() -> Vec<Variable> {
    vec![
        Variable::new(
            "podMemory",
            "{'limit': string(object.spec.?resources.?limits.?memory.orValue('')),\n \
             'request': string(object.spec.?resources.?requests.?memory.orValue(''))}"
                .to_owned(),
        ),
        // Rule 1 for the pod-level resources; their limit is the budget of containers
        // without a limit of their own.
        Variable::new(
            "podPlan",
            request_equals_limit(
                &var("podMemory"),
                &format!("{}[?'request']", var("previousPod")),
            ),
        ),
        // Under a pod limit, each container's own limit in bytes: -1 for none, -2 for one
        // the engine cannot use.
        Variable::new(
            "limitBytes",
            format!(
                "{pod}.runtime == '' ? [] : {containers}.map(c, c.limit == '' ? -1 : {error} != '' ? -2 : {bytes})",
                pod = var("podPlan"),
                containers = var("containers"),
                error = quantity_error("c.limit"),
                bytes = bytes("c.limit"),
            ),
        ),
        Variable::new(
            "memory",
            format!(
                "{}.map(c, c.name in {} ? {} : {})",
                var("containers"),
                var("excluded"),
                memory(&[]),
                runtime_memory("c")
            ),
        ),
        Variable::new("environment", environments()),
    ]
}

/// Rule 2 for every container whose runtime memory is known.
fn environments() -> String {
    format!(
        "lists.range(size({containers})).map(i, {})",
        bind(
            &format!("{}[i]", var("memory")),
            "m",
            &format!(
                "m.runtime == '' ? {} : {}",
                environment(&[]),
                bind(
                    &format!("{}[i]", var("containers")),
                    "c",
                    &gomemlimit("c", "m")
                )
            )
        ),
        containers = var("containers")
    )
}

/// Every target container with where it sits and its memory fields as written (`''` for
/// none): init containers (native sidecars included), then containers.
fn containers() -> String {
    let list = |name: &str| {
        let runs = if name == "initContainers" {
            "c.?restartPolicy.orValue('') == 'Always' ? 'sidecar' : 'before'"
        } else {
            "'main'"
        };
        format!(
            "transformList(i, c, {{'list': '{name}', 'index': string(i), 'name': string(c.name),\n  \
             'env': string(size(c.?env.orValue([]))),\n  \
             'limit': string(c.?resources.?limits.?memory.orValue('')),\n  \
             'request': string(c.?resources.?requests.?memory.orValue('')),\n  \
             'runs': {runs},\n  \
             'resize': {resize}}})",
            resize = bind(
                "c.?resizePolicy.orValue([]).filter(p, p.?resourceName.orValue('') == 'memory')",
                "r",
                "size(r) > 0 ? '=' + string(r[0].?restartPolicy.orValue('')) : ''"
            ),
        )
    };
    format!(
        "object.spec.?initContainers.orValue([]).{}\n+ object.spec.containers.{}",
        list("initContainers"),
        list("containers")
    )
}

/// The memory fields of a container (or the pod), `c`, in `request_equals_limit`'s
/// outcome with `previous_request` (an optional string) the request an earlier pass set.
fn request_equals_limit(m: &str, previous_request: &str) -> String {
    let (limit, request) = (format!("{m}.limit"), format!("{m}.request"));
    let unparsed = |field: &str, text: &str| {
        memory(&[(
            "warning",
            format!(
                "'cannot parse {field} \"' + {text} + '\" (' + {} + '); left unchanged'",
                quantity_error(text)
            ),
        )])
    };
    let warning = |text: &str| memory(&[("warning", lit(text))]);
    format!(
        "({limit} != '' && {limit_error} != '' ? {limit_unparsed}\n\
         : {request} != '' && {request_error} != '' ? {request_unparsed}\n\
         : {limit} != '' && {limit_zero} ? {zero_limit}\n\
         : {limit} != '' ? {with_limit}\n\
         : {request} != '' ? ({request_zero} ? {zero_request} : {set_limit})\n\
         : {none})",
        limit_error = quantity_error(&limit),
        limit_unparsed = unparsed("limits.memory", &limit),
        request_error = quantity_error(&request),
        request_unparsed = unparsed("requests.memory", &request),
        limit_zero = is_zero(&limit),
        zero_limit = warning("memory limit is zero; left unchanged"),
        with_limit = request_to_limit(&limit, &request, previous_request),
        request_zero = is_zero(&request),
        zero_request = warning("memory request is zero and there is no limit; left unchanged"),
        set_limit = memory(&[("setLimit", request.clone()), ("runtime", request.clone())]),
        none = memory(&[]),
    )
}

/// Rule 1 where there is a limit: a missing or lower request is raised to it, and so is a
/// higher one an earlier pass set (another webhook lowered the limit since).
fn request_to_limit(limit: &str, request: &str, previous_request: &str) -> String {
    let set_by_us = format!("{previous_request} == optional.of({request})");
    bind(
        &format!("{request} == '' ? -1 : {}", compare(request, limit)),
        "o",
        &format!(
            "o < 0 || (o > 0 && {set_by_us}) ? {raise}\n\
             : o == 0 ? {keep}\n\
             : {exceeds}",
            raise = memory(&[
                ("setRequest", limit.to_owned()),
                ("requestFrom", request.to_owned()),
                ("runtime", limit.to_owned()),
            ]),
            keep = memory(&[("runtime", limit.to_owned())]),
            exceeds = memory(&[(
                "warning",
                format!(
                    "'requests.memory ' + {request} + ' exceeds limits.memory ' + {limit} + '; left unchanged'"
                )
            )]),
        ),
    )
}

/// The memory the Go runtime of container `c` gets: its own limit (rule 1 applied), what
/// is left of the pod limit, or what `missingLimit` says.
fn runtime_memory(c: &str) -> String {
    let pod_limit = format!("{}.runtime", var("podPlan"));
    let own = request_equals_limit(
        c,
        &format!("{}[?'request']", previous(&format!("{c}.name"))),
    );
    let default = var("defaultMemory");
    format!(
        "({c}.limit != '' || ({c}.request != '' && {pod_limit} == '') ? {own}\n\
         : {pod_limit} != '' ? {budget}\n\
         : {missing} == 'skip' ? {skip}\n\
         : {missing} == 'deny' ? {deny}\n\
         : {default_memory})",
        budget = budget(c),
        missing = var("missingLimit"),
        skip = memory(&[(
            "warning",
            lit("has no memory request or limit; left unchanged")
        )]),
        deny = memory(&[(
            "denial",
            format!(
                "'container \"' + {c}.name + '\" has no memory limit (policy missingLimit: deny); set resources.limits.memory'"
            )
        )]),
        default_memory = memory(&[
            ("setLimit", default.clone()),
            ("setRequest", default.clone()),
            ("runtime", default)
        ]),
    )
}

/// What is left of the pod limit for container `c`, which has no limit of its own, as
/// `engine::budget` computes it: the pod limit minus the limits of the containers that run
/// beside it (for an ordinary init container, the native sidecars declared before it; for
/// the others, the containers and native sidecars). One of them without a limit, or with
/// one the engine cannot use, and there is nothing to compute.
fn budget(c: &str) -> String {
    let (containers, limits) = (var("containers"), var("limitBytes"));
    let beside = format!(
        "{containers}[j].name != {c}.name && ({c}.runs == 'before'\n  \
         ? {containers}[j].runs == 'sidecar' && int({containers}[j].index) < int({c}.index)\n  \
         : {containers}[j].runs != 'before')"
    );
    let nothing = |text: String| memory(&[("warning", text)]);
    bind(
        &format!("lists.range(size({containers})).filter(j, {beside})"),
        "js",
        &bind(
            &format!("js.filter(j, {limits}[j] < 0)"),
            "bad",
            &format!(
                "size(bad) > 0 && {limits}[bad[0]] == -1 ? {}\n\
                 : size(bad) > 0 ? {}\n\
                 : {}",
                nothing(format!(
                    "'has no memory limit and shares the pod limit with \"' + {containers}[bad[0]].name + '\", which has none either; left unchanged'"
                )),
                nothing(format!(
                    "'has no memory limit, and what is left of the pod limit is unknown: \"' + {containers}[bad[0]].name + '\" has an unreadable limit; left unchanged'"
                )),
                budget_left(),
            ),
        ),
    )
}

/// The pod limit less the limits of the containers at the indices `js`, and how that was
/// computed: `1Gi - 64Mi (proxy) = 1006632960`; nothing when nothing is left.
fn budget_left() -> String {
    let (containers, limits) = (var("containers"), var("limitBytes"));
    let nothing = |text: String| memory(&[("warning", text)]);
    bind(
        &format!("js.map(j, {limits}[j]).sum()"),
        "used",
        &bind(
            &bytes(&format!("{}.runtime", var("podPlan"))),
            "total",
            &bind(
                &format!(
                    "{}.runtime + js.map(j, ' - ' + {containers}[j].limit + ' (' + {containers}[j].name + ')').join('')",
                    var("podPlan")
                ),
                "arith",
                &format!(
                    "used >= total ? {}\n: {}",
                    nothing(
                        "'has no memory limit, and nothing is left of the pod limit: ' + arith + ' <= 0; left unchanged'"
                            .to_owned()
                    ),
                    memory(&[
                        ("runtime", "string(total - used)".to_owned()),
                        (
                            "budget",
                            "used > 0 ? arith + ' = ' + string(total - used) : arith".to_owned()
                        ),
                    ])
                ),
            ),
        ),
    )
}

/// For container `c` with a downward-API GOMEMLIMIT: `set` when the policy adds the memory
/// `resizePolicy` RestartContainer, `kept` when the container has a memory entry of
/// another kind, `never` when the pod's `restartPolicy: Never` allows none, else `''`
/// (an ordinary init container, the entry already there, or `restartOnResize: false`).
pub(super) fn resize_decision(c: &str) -> String {
    format!(
        "(!{on} || {c}.runs == 'before' || {c}.resize == '=RestartContainer' ? ''\n\
         : {c}.resize != '' ? 'kept'\n\
         : object.spec.?restartPolicy.orValue('') == 'Never' ? 'never' : 'set')",
        on = var("restartOnResize"),
    )
}

/// Rule 2 for container `c` whose runtime memory is in `m`: keep the user's GOMEMLIMIT
/// (or follow the limit with our literal), or add GOMEMLIMIT and GOGC.
fn gomemlimit(c: &str, m: &str) -> String {
    let holder = format!("object.spec[{c}.list][int({c}.index)]");
    bind(
        &holder,
        "h",
        &bind(
            "h.?env.orValue([])",
            "env",
            &bind(
                "lists.range(size(env)).filter(k, env[k].name == 'GOMEMLIMIT')",
                "found",
                &format!(
                    "size(found) > 0 ? ({}) : ({})",
                    existing(c, m),
                    inject(c, m)
                ),
            ),
        ),
    )
}

/// The container's own GOMEMLIMIT (`env[found[0]]`) wins, unless it is the literal an
/// earlier pass recorded: that one follows the limit.
fn existing(c: &str, m: &str) -> String {
    let new_bytes = percent_of(&bytes(&format!("{m}.runtime")), "int(rec.percent)");
    bind(
        &previous(&format!("{c}.name")),
        "rec",
        &bind(
            "env[found[0]]",
            "e",
            &format!(
                "rec[?'gomemlimit'].hasValue() && rec[?'percent'].hasValue()\n\
                 && has(e.value) && !has(e.valueFrom)\n\
                 && rec.gomemlimit == e.value && e.value != '{DOWNWARD}'\n\
                 ? {}\n\
                 : {}",
                bind(
                    &new_bytes,
                    "b",
                    &format!(
                        "b != 0 && string(b) != e.value ? {} : {}",
                        environment(&[
                            ("gml", lit("update")),
                            ("gmlValue", "string(b)".to_owned()),
                            ("gmlFrom", "string(e.value)".to_owned()),
                            ("gmlIndex", "string(found[0])".to_owned()),
                        ]),
                        environment(&[])
                    )
                ),
                environment(&[])
            ),
        ),
    )
}

/// GOMEMLIMIT added: the downward API at 100% of a container's own limit, else the
/// literal (or a warning when it would be zero); GOGC beside it.
fn inject(c: &str, m: &str) -> String {
    let percent = var("percent");
    let gogc = format!(
        "{g} != 'keep' && !env.exists(e, e.name == 'GOGC') ? {g} : ''",
        g = var("gogc")
    );
    let env_from = "size(h.?envFrom.orValue([])) > 0 ? 'true' : ''".to_owned();
    let literal = bind(
        &percent_of(&bytes(&format!("{m}.runtime")), &percent),
        "b",
        &format!(
            "b == 0 ? {} : {}",
            environment(&[(
                "warning",
                format!(
                    "string({percent}) + '% of ' + {m}.runtime + ' is 0 bytes; GOMEMLIMIT not set'"
                )
            )]),
            environment(&[
                ("gml", lit("literal")),
                ("gmlValue", "string(b)".to_owned()),
                ("gmlPercent", format!("string({percent})")),
                (
                    "gmlOf",
                    format!(
                        "{m}.budget != '' ? 'the ' + {m}.runtime + ' bytes left of the pod limit' : {m}.runtime"
                    )
                ),
                ("gogc", gogc.clone()),
                ("envFrom", env_from.clone()),
                ("gmlBudget", format!("{m}.budget")),
            ])
        ),
    );
    format!(
        "({percent} == 100 && {m}.budget == '' ? {}\n: {literal})",
        environment(&[
            ("gml", lit("downward")),
            ("gogc", gogc),
            ("envFrom", env_from),
            ("resize", resize_decision(c)),
        ])
    )
}
