//! In-place resizes (`UPDATE` of `pods/resize`) in CEL, as `engine::resize` checks them:
//! for every container the status annotation records, not an ordinary init container,
//! whose memory limit changes: a downward-API GOMEMLIMIT without the memory `resizePolicy`
//! RestartContainer is warned about; a literal that is still the one recorded is warned
//! about when the limit rises, and the resize refused when the new limit leaves it above
//! its percentage (in audit, a `would deny:` warning instead).
//!
//! The validating policies match resizes as well as creations; their validations and
//! audit annotations choose by `request.subResource`.

use super::expr::{bind, bytes, percent_of, quantity_error, shorten};
use super::program::{Variable, var};
use super::status::previous;
use crate::engine::DOWNWARD;
use crate::text::MAX_WARNING_LEN;

/// Whether the request is a resize.
pub(super) const RESIZING: &str = "(has(request.subResource) && request.subResource == 'resize')";

/// The variables, in order: each check as `[kind, message]` (`warn` or `deny`), the
/// warnings and the denials.
pub(super) fn variables() -> Vec<Variable> {
    let checks = var("resizeChecks");
    let denials = var("resizeDenials");
    vec![
        Variable::new(
            "oldLimits",
            "(oldObject.spec.?initContainers.orValue([]) + oldObject.spec.containers)\n\
             .transformMapEntry(i, c, {string(c.name): string(c.?resources.?limits.?memory.orValue(''))})"
                .to_owned(),
        ),
        Variable::new("resizeChecks", checks_expr()),
        Variable::new(
            "resizeDenials",
            format!("{checks}.filter(x, x[0] == 'deny').map(x, x[1])"),
        ),
        Variable::new(
            "resizeWarnings",
            format!(
                "({checks}.filter(x, x[0] == 'warn').map(x, x[1])\n\
                 + ({audit} && size({denials}) > 0 ? ['would deny: ' + {denials}.join('; ')] : [])\n\
                 ).map(w, {short})",
                audit = var("auditOnly"),
                short = shorten("w", MAX_WARNING_LEN),
            ),
        ),
    ]
}

/// The check of every container whose limit changes.
fn checks_expr() -> String {
    let (containers, old) = (var("containers"), var("oldLimits"));
    let was = format!("{old}[c.name]");
    let changes = format!(
        "{containers}.filter(c, c.runs != 'before' && c.name in {recorded} && c.name in {old}\n  \
         && c.limit != '' && {was} != ''\n  \
         && {new_error} == '' && {old_error} == ''\n  \
         && {new_bytes} != {old_bytes})",
        recorded = var("previousByName"),
        new_error = quantity_error("c.limit"),
        old_error = quantity_error(&was),
        new_bytes = bytes("c.limit"),
        old_bytes = bytes(&was),
    );
    format!(
        "!{} ? [] : {changes}.map(c, {}).filter(x, size(x) > 0)",
        var("statusReadable"),
        bind(&previous("c.name"), "rec", &bind(&was, "was", &check()),),
    )
}

/// The check of container `c`, recorded as `rec`, whose limit was `was`: `[]` when fine.
fn check() -> String {
    let name = "'container \"' + c.name + '\"'";
    let downward = format!(
        "c.resize == '=RestartContainer' ? []\n  \
         : ['warn', {name} + ': GOMEMLIMIT stays at the old limit ' + was + ' until the container restarts (its resizePolicy does not restart it)']"
    );
    // The container's GOMEMLIMIT value, when it has one.
    let current =
        "object.spec[c.list][int(c.index)].?env.orValue([]).filter(e, e.name == 'GOMEMLIMIT')";
    let literal = bind(
        current,
        "g",
        &format!(
            "size(g) == 0 || !has(g[0].value) || g[0].value != rec.gomemlimit || !rec.gomemlimit.matches('^[0-9]{{1,19}}$') ? []\n  \
             : {}",
            bind(
                "int(rec.gomemlimit)",
                "lit",
                &bind("int(rec.percent)", "p", &literal_rule(name)),
            )
        ),
    );
    format!(
        "rec[?'gomemlimit'] == optional.of('{DOWNWARD}') ? ({downward})\n\
         : rec[?'gomemlimit'].hasValue() && rec[?'percent'].hasValue() ? ({literal})\n\
         : []"
    )
}

/// A literal `lit` at `p` percent stays what it is: a higher limit leaves it behind, a
/// lower one must keep it within `p` percent of the new limit.
fn literal_rule(name: &str) -> String {
    let new_bytes = bytes("c.limit");
    let stays = format!(
        "['warn', {name} + ': GOMEMLIMIT stays at ' + string(lit) + ' (' + string(p) + '% of the old limit ' + was + ') until the pod is recreated']"
    );
    // The smallest limit b with floor(b × p / 100) >= lit: ceil(lit × 100 / p), computed
    // as 100q + ceil(100r / p) with lit = qp + r; shown also in whole Mi, rounded up.
    let safe = "(lit / p) * 100 + ((lit % p) * 100 + p - 1) / p";
    let refuse = bind(
        safe,
        "safe",
        &format!(
            "['deny', {name} + ': a memory limit of ' + c.limit + ' would leave GOMEMLIMIT=' + string(lit) + ' above ' + string(p) + '% of it; the smallest limit that keeps it safe is ' + string(safe) + ' (' + string((safe + 1048575) / 1048576) + 'Mi); recreate the pod to lower GOMEMLIMIT']"
        ),
    );
    bind(
        &new_bytes,
        "nb",
        &format!(
            "nb > {was_bytes} ? {stays}\n  \
             : {kept} >= lit ? []\n  \
             : {refuse}",
            was_bytes = bytes("was"),
            kept = percent_of("nb", "p"),
        ),
    )
}
