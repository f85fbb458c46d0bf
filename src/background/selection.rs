//! Which namespaces the webhook selects, as the chart's MutatingWebhookConfiguration says:
//! the background audit counts the pods of exactly these.

use std::collections::BTreeMap;

use crate::engine::INJECT;

/// Namespaces never selected cluster-wide, whatever their labels.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The webhook configuration's `namespaceSelector`, as `serve --selection` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Selection {
    /// Namespaces labelled `gomemlimit.io/inject=enabled`.
    #[default]
    OptIn,
    /// Every namespace but those labelled `gomemlimit.io/inject=disabled`, the system
    /// namespaces and the excluded ones.
    ClusterWide,
}

/// [`Selection`] with the namespaces left out cluster-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceSelection {
    pub selection: Selection,
    /// Left out with [`Selection::ClusterWide`], besides [`SYSTEM_NAMESPACES`]: the
    /// webhook's own namespace and the chart's `excludeNamespaces`.
    pub excluded: Vec<String>,
}

impl NamespaceSelection {
    /// The label selector for listing namespaces: the API server does the label part.
    pub(crate) fn label_selector(&self) -> String {
        match self.selection {
            Selection::OptIn => format!("{INJECT}=enabled"),
            Selection::ClusterWide => format!("{INJECT}!=disabled"),
        }
    }

    /// Whether the webhook configuration selects the namespace `name` with `labels`.
    pub(crate) fn selects(&self, name: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        let label = labels.and_then(|l| l.get(INJECT)).map(String::as_str);
        match self.selection {
            Selection::OptIn => label == Some("enabled"),
            Selection::ClusterWide => {
                label != Some("disabled")
                    && !SYSTEM_NAMESPACES.contains(&name)
                    && !self.excluded.iter().any(|e| e == name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(value: Option<&str>) -> BTreeMap<String, String> {
        value
            .map(|v| BTreeMap::from([(INJECT.to_owned(), v.to_owned())]))
            .unwrap_or_default()
    }

    #[test]
    fn opt_in_selects_only_enabled_namespaces() {
        let s = NamespaceSelection::default();
        assert_eq!(s.label_selector(), "gomemlimit.io/inject=enabled");
        assert!(s.selects("shop", Some(&labels(Some("enabled")))));
        assert!(!s.selects("shop", Some(&labels(None))));
        assert!(!s.selects("shop", None));
        assert!(!s.selects("shop", Some(&labels(Some("disabled")))));
        // An opt-in is explicit: even a system namespace counts when labelled.
        assert!(s.selects("kube-system", Some(&labels(Some("enabled")))));
    }

    #[test]
    fn cluster_wide_leaves_out_disabled_system_and_excluded_namespaces() {
        let s = NamespaceSelection {
            selection: Selection::ClusterWide,
            excluded: vec!["gomemlimit-system".to_owned(), "monitoring".to_owned()],
        };
        assert_eq!(s.label_selector(), "gomemlimit.io/inject!=disabled");
        assert!(s.selects("shop", None));
        assert!(s.selects("shop", Some(&labels(Some("enabled")))));
        assert!(!s.selects("shop", Some(&labels(Some("disabled")))));
        for name in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "gomemlimit-system",
            "monitoring",
        ] {
            assert!(!s.selects(name, None), "{name}");
        }
    }
}
