//! The chart's Grafana dashboard and Prometheus alerts ask only for metrics the webhook
//! exports. What it exports is read from the registry `serve` fills (`Metrics::new`, which
//! registers every metric, the background audit's included), so the check cannot drift
//! from the code; the README's metrics table is held to the same list.

use std::collections::BTreeSet;

use prometheus_client::registry::Registry;
use serde_json::Value;

const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/chart/gomemlimit-injector"
);

/// Every sample name the webhook can export, from the TYPE lines of its registry.
fn exported() -> BTreeSet<String> {
    let mut registry = Registry::default();
    let _metrics = gomemlimit_injector::metrics::Metrics::new(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// `expr` without strings, label matchers `{...}` and ranges `[...]`.
fn strip(expr: &str) -> String {
    let mut out = String::new();
    let mut chars = expr.chars();
    let (mut braces, mut brackets) = (0, 0);
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                out.push(' ');
            }
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            _ if braces > 0 || brackets > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// aggregations, keywords, label names or parts of numbers and durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let out = strip(expr);
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let chars: Vec<char> = out.chars().collect();
    let mut names = BTreeSet::new();
    let mut grouping = false;
    let mut i = 0;
    while i < chars.len() {
        if !is_word(chars[i]) {
            if chars[i] == ')' {
                grouping = false;
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_word(chars[i]) {
            i += 1;
        }
        let token: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        if token.starts_with(|c: char| c.is_ascii_digit()) || grouping {
            continue; // a number, a duration, or a label in `by (...)`
        }
        if KEYWORDS.contains(&token.as_str()) {
            grouping = matches!(
                token.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) && next == Some(&'(');
            continue;
        }
        let rest: String = chars[i..].iter().collect();
        let rest = rest.trim_start();
        let grouped = ["by", "without"].iter().any(|k| {
            rest.strip_prefix(k)
                .is_some_and(|r| r.trim_start().starts_with('('))
        });
        if next == Some(&'(') || grouped {
            continue; // a function, or an aggregation (`max by (a) (...)` too)
        }
        names.insert(token);
    }
    names
}

/// Every `expr` of the dashboard's panels, with Grafana's variables as PromQL would see them.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{CHART}/files/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{target}");
            let expr = target["expr"].as_str().expect("expr");
            exprs.push(expr.replace("$__rate_interval", "5m"));
        }
    }
    exprs
}

/// Every alert's `expr` in the rule file the PrometheusRule ships.
fn rule_exprs() -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(format!("{CHART}/files/prometheus-rules.yaml")).unwrap();
    let rules: Value = serde_saphyr::from_str(&text).expect("the rules are YAML");
    let mut out = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr").to_owned();
            out.push((expr, rule.clone()));
        }
    }
    out
}

#[test]
fn extracts_metric_names_from_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.9, sum by (le, path) (rate(a_bucket{job=~"x", le!="1"}[5m])))
           / on (path) group_left sum(b) or vector(0) > bool 2 * c offset 1d unless max by (ns) (d)"#,
    );
    let want: BTreeSet<String> = ["a_bucket", "b", "c", "d"].map(String::from).into();
    assert_eq!(names, want);
}

#[test]
fn the_dashboard_reads_only_exported_metrics() {
    let exported = exported();
    let mut used = BTreeSet::new();
    for expr in dashboard_exprs() {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "the dashboard reads {name}, which the webhook does not export ({expr}); exported: {exported:?}"
            );
            used.insert(name);
        }
    }
    // What the dashboard is for: reviews by outcome, latency, container actions,
    // non-compliant pods by namespace, the certificate's expiry.
    for name in [
        "gomemlimit_injector_admission_requests_total",
        "gomemlimit_injector_admission_duration_seconds_bucket",
        "gomemlimit_injector_containers_total",
        "gomemlimit_injector_noncompliant_pods",
        "gomemlimit_injector_tls_certificate_expiry_timestamp_seconds",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}

#[test]
fn the_alerts_read_only_exported_metrics_and_say_what_to_do() {
    let exported = exported();
    let rules = rule_exprs();
    assert!(rules.len() >= 6, "{} alerts", rules.len());
    for (expr, rule) in rules {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "alert {} reads {name}, which the webhook does not export",
                rule["alert"]
            );
        }
        assert!(rule["alert"].is_string(), "{rule}");
        assert!(rule["labels"]["severity"].is_string(), "{rule}");
        assert!(rule["annotations"]["summary"].is_string(), "{rule}");
        assert!(rule["annotations"]["description"].is_string(), "{rule}");
    }
}

#[test]
fn the_readme_lists_every_exported_metric() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let missing: Vec<String> = exported()
        .into_iter()
        .filter(|name| !(name.ends_with("_sum") || name.ends_with("_count")))
        .map(|name| name.trim_end_matches("_bucket").to_owned())
        .filter(|name| !readme.contains(name.as_str()))
        .collect();
    assert!(missing.is_empty(), "README.md does not name {missing:?}");
}
