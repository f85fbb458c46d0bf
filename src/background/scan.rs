//! One background scan: the selected namespaces, their pods read page by page, and each
//! pod evaluated as the live `audit` evaluates it.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use super::selection::{NamespaceSelection, Selection};
use crate::live::{self, LiveError, Pages};
use crate::metrics::Findings;
use crate::policy::Policy;

/// Pods per list page. Smaller than the `audit` command's pages: the webhook runs with a
/// small memory limit, and only one page of pods is held at a time.
const POD_PAGE: u32 = 100;
/// Namespaces per list page.
const NAMESPACE_PAGE: u32 = 500;

/// Whether the scan counts `pod`: pods that run, or are about to, and that the audit would
/// list as ones the webhook would change. Finished pods (`Succeeded`, `Failed`) run
/// nothing, and terminating ones are on their way out; their replacements go through the
/// webhook.
pub(crate) fn noncompliant(pod: &Pod, policy: &Policy) -> bool {
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    if finished || pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    live::would_change(pod, policy)
}

/// The namespaces `selection` selects, by name.
async fn selected_namespaces(
    client: &Client,
    url: &str,
    selection: &NamespaceSelection,
) -> Result<BTreeSet<String>, LiveError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let params = ListParams::default().labels(&selection.label_selector());
    let mut pages = Pages::new(
        &api,
        params,
        NAMESPACE_PAGE,
        "namespaces",
        "the cluster",
        url,
    );
    let mut selected = BTreeSet::new();
    while let Some(page) = pages.next().await? {
        for namespace in page {
            let Some(name) = namespace.metadata.name else {
                continue;
            };
            if selection.selects(&name, namespace.metadata.labels.as_ref()) {
                selected.insert(name);
            }
        }
    }
    Ok(selected)
}

/// Counts the pods of `api`'s list, keeping those in `selected`, into `findings`.
async fn count(
    api: &Api<Pod>,
    scope: &str,
    url: &str,
    selected: &BTreeSet<String>,
    policy: &Policy,
    findings: &mut Findings,
) -> Result<(), LiveError> {
    let mut pages = Pages::new(api, ListParams::default(), POD_PAGE, "pods", scope, url);
    while let Some(page) = pages.next().await? {
        for pod in page {
            let Some(namespace) = pod.metadata.namespace.as_deref() else {
                continue;
            };
            if !selected.contains(namespace) {
                continue;
            }
            findings.pods += 1;
            if noncompliant(&pod, policy) {
                *findings
                    .noncompliant
                    .entry(namespace.to_owned())
                    .or_default() += 1;
            }
        }
    }
    Ok(())
}

/// Scans the cluster once. Opt-in reads the pods of each selected namespace; cluster-wide
/// reads every pod once and leaves out those of unselected namespaces.
pub(crate) async fn scan(
    client: &Client,
    url: &str,
    selection: &NamespaceSelection,
    policy: &Policy,
) -> Result<Findings, LiveError> {
    let selected = selected_namespaces(client, url, selection).await?;
    let mut findings = Findings::default();
    match selection.selection {
        Selection::OptIn => {
            for namespace in &selected {
                let api = Api::namespaced(client.clone(), namespace);
                let scope = format!("namespace {namespace}");
                count(&api, &scope, url, &selected, policy, &mut findings).await?;
            }
        }
        Selection::ClusterWide => {
            let api = Api::all(client.clone());
            count(
                &api,
                "all namespaces",
                url,
                &selected,
                policy,
                &mut findings,
            )
            .await?;
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: serde_json::Value) -> Pod {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "image": "app:1",
                     "resources": {"limits": {"memory": "256Mi"}}}]}
        });
        json_patch::merge(&mut pod, &extra);
        serde_json::from_value(pod).unwrap()
    }

    #[test]
    fn counts_running_pods_the_webhook_would_change() {
        let policy = Policy::default();
        assert!(noncompliant(&pod(json!({})), &policy));
        assert!(noncompliant(
            &pod(json!({"status": {"phase": "Running"}})),
            &policy
        ));
        // What the user asked for: report only. It still runs without GOMEMLIMIT.
        assert!(noncompliant(
            &pod(json!({"metadata": {"annotations": {"gomemlimit.io/mode": "audit"}}})),
            &policy
        ));
    }

    #[test]
    fn leaves_out_opted_out_mirror_finished_and_terminating_pods() {
        let policy = Policy::default();
        for extra in [
            json!({"metadata": {"labels": {"gomemlimit.io/inject": "disabled"}}}),
            json!({"metadata": {"annotations": {"gomemlimit.io/inject": "disabled"}}}),
            json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "abc"}}}),
            json!({"status": {"phase": "Succeeded"}}),
            json!({"status": {"phase": "Failed"}}),
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        ] {
            assert!(!noncompliant(&pod(extra.clone()), &policy), "{extra}");
        }
    }

    #[test]
    fn a_compliant_pod_is_not_counted() {
        let compliant = pod(
            json!({"spec": {"containers": [{"name": "app", "image": "app:1",
            "resources": {"limits": {"memory": "256Mi"}, "requests": {"memory": "256Mi"}},
            "env": [{"name": "GOMEMLIMIT", "value": "200MiB"}]}]}}),
        );
        assert!(!noncompliant(&compliant, &Policy::default()));
    }
}
