//! The policy settings as CEL literals: written into the first variables of every rendered
//! policy, so that the rules after them read `variables.percentPolicy` and the like. The
//! chart fills the same variables from its values with Helm expressions instead.

use crate::policy::{Gogc, MissingLimit, Mode, Policy};

/// One CEL literal (or, in the chart, the Helm expression that writes it) per setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settings {
    pub(super) percent: String,
    /// The `gogc` setting as written: `"off"`, `"keep"` or digits (normalised in CEL).
    pub(super) gogc: String,
    pub(super) missing_limit: String,
    /// `""` when unset.
    pub(super) default_memory: String,
    pub(super) min_percent: String,
    pub(super) max_percent: String,
    /// A list of strings.
    pub(super) exclude_containers: String,
    /// `true` when every pod is audited (`mode: audit`).
    pub(super) audit: String,
    /// `true` when downward-API containers get the memory `resizePolicy` RestartContainer.
    pub(super) restart_on_resize: String,
}

impl Settings {
    /// The settings of a loaded policy.
    pub(super) fn of(policy: &Policy) -> Self {
        let text = |s: &str| serde_json::to_string(s).expect("a string serializes");
        let gogc = match policy.gogc {
            Gogc::Off => "off".to_owned(),
            Gogc::Keep => "keep".to_owned(),
            Gogc::Percent(n) => n.to_string(),
        };
        let missing = match policy.missing_limit {
            MissingLimit::Skip => "skip",
            MissingLimit::Deny => "deny",
            MissingLimit::Default => "default",
        };
        let default_memory = policy
            .default_memory
            .as_ref()
            .map_or("", |q| q.as_str())
            .to_owned();
        let excluded: Vec<&str> = policy
            .exclude_containers
            .iter()
            .map(String::as_str)
            .collect();
        Settings {
            percent: policy.percent.to_string(),
            gogc: text(&gogc),
            missing_limit: text(missing),
            default_memory: text(&default_memory),
            min_percent: policy.min_percent.to_string(),
            max_percent: policy.max_percent.to_string(),
            exclude_containers: serde_json::to_string(&excluded).expect("names serialize"),
            audit: (policy.mode == Mode::Audit).to_string(),
            restart_on_resize: policy.restart_on_resize.to_string(),
        }
    }

    /// The chart's values, as Helm expressions that write the same literals. `mode: audit`
    /// (the chart's own) audits every pod as well as `policy.mode: audit` does.
    pub(super) fn helm() -> Self {
        let p = ".Values.policy";
        Settings {
            percent: format!("{{{{ int {p}.percent }}}}"),
            gogc: format!("{{{{ toString {p}.gogc | toJson }}}}"),
            missing_limit: format!("{{{{ {p}.missingLimit | toJson }}}}"),
            default_memory: format!(
                "{{{{ {p}.defaultMemory | default \"\" | toString | toJson }}}}"
            ),
            min_percent: format!("{{{{ int {p}.minPercent }}}}"),
            max_percent: format!("{{{{ int {p}.maxPercent }}}}"),
            exclude_containers: format!("{{{{ {p}.excludeContainers | default list | toJson }}}}"),
            audit: format!("{{{{ or (eq .Values.mode \"audit\") (eq {p}.mode \"audit\") }}}}"),
            restart_on_resize: format!("{{{{ ternary \"true\" \"false\" {p}.restartOnResize }}}}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::Quantity;

    #[test]
    fn writes_the_policy_as_cel_literals() {
        let policy = Policy {
            percent: 90,
            gogc: Gogc::Percent(7),
            missing_limit: MissingLimit::Default,
            default_memory: Some(Quantity::parse("256Mi").unwrap()),
            exclude_containers: ["istio-proxy".to_owned()].into(),
            mode: Mode::Audit,
            ..Policy::default()
        };
        let s = Settings::of(&policy);
        assert_eq!(s.percent, "90");
        assert_eq!(s.gogc, "\"7\"");
        assert_eq!(s.missing_limit, "\"default\"");
        assert_eq!(s.default_memory, "\"256Mi\"");
        assert_eq!(s.exclude_containers, "[\"istio-proxy\"]");
        assert_eq!(s.audit, "true");
        assert_eq!(s.restart_on_resize, "true");
        let defaults = Settings::of(&Policy::default());
        assert_eq!(
            (defaults.gogc.as_str(), defaults.default_memory.as_str()),
            ("\"off\"", "\"\"")
        );
        assert_eq!(defaults.exclude_containers, "[]");
    }
}
