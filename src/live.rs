//! Live audit: what the webhook would change in the pods running in a cluster, grouped by
//! the workload that owns them (a Deployment rather than each of its replicas), read with
//! paged lists so that large clusters do not come back in one response.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::manifests;
use crate::policy::Policy;
use crate::report::ObjectReport;

/// Objects per list page.
pub const PAGE: u32 = 500;

/// Errors of the live audit; each names what could not be reached or read.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("failed to load a kubeconfig or in-cluster configuration")]
    Config(#[source] Box<kube::Error>),
    #[error("failed to reach the cluster at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("forbidden: cannot list {resource} in {scope}: {message}")]
    Forbidden {
        resource: &'static str,
        scope: String,
        message: String,
    },
    #[error("failed to list {resource} in {scope}")]
    List {
        resource: &'static str,
        scope: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// A list read one page at a time, so that a large cluster never comes back in one
/// response (nor sits in memory at once, for a caller that handles each page).
pub(crate) struct Pages<'a, K> {
    api: &'a Api<K>,
    /// The parameters of the next page; `None` after the last one.
    params: Option<ListParams>,
    resource: &'static str,
    scope: &'a str,
    url: &'a str,
}

impl<'a, K> Pages<'a, K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    /// The list of `resource` (how errors name it) in `scope` through `api`, reached at
    /// `url`, with `params` (a label selector, say) and pages of `page_size`.
    pub(crate) fn new(
        api: &'a Api<K>,
        params: ListParams,
        page_size: u32,
        resource: &'static str,
        scope: &'a str,
        url: &'a str,
    ) -> Self {
        Pages {
            api,
            params: Some(params.limit(page_size)),
            resource,
            scope,
            url,
        }
    }

    /// The next page, or `None` after the last one.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<K>>, LiveError> {
        let Some(params) = self.params.take() else {
            return Ok(None);
        };
        let (resource, scope) = (self.resource, self.scope);
        let page = self.api.list(&params).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => LiveError::Forbidden {
                resource,
                scope: scope.to_owned(),
                message: s.message.clone(),
            },
            kube::Error::Api(_) => LiveError::List {
                resource,
                scope: scope.to_owned(),
                source: Box::new(e),
            },
            other => LiveError::Unreachable {
                url: self.url.to_owned(),
                reason: crate::error::error_chain(&other),
            },
        })?;
        self.params = match page.metadata.continue_ {
            Some(token) if !token.is_empty() => Some(params.continue_token(&token)),
            _ => None,
        };
        Ok(Some(page.items))
    }
}

/// Lists every object of one kind, page by page.
async fn list_all<K>(
    api: &Api<K>,
    resource: &'static str,
    scope: &str,
    url: &str,
    page_size: u32,
) -> Result<Vec<K>, LiveError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut pages = Pages::new(api, ListParams::default(), page_size, resource, scope, url);
    while let Some(page) = pages.next().await? {
        items.extend(page);
    }
    Ok(items)
}

/// What the webhook would do to a running pod, as the audit reports it: the engine's
/// evaluation in audit mode, the very one behind `/audit`.
fn evaluate(pod: &Pod, policy: &Policy, namespace: &str) -> Vec<ObjectReport> {
    let value = serde_json::to_value(pod).unwrap_or_default();
    manifests::process(&value, policy, namespace).reports
}

/// Whether the audit lists `pod` as one enforce would change or deny: the background audit
/// counts exactly these, audit-only pods included (what enforcing would bring).
pub(crate) fn would_change(pod: &Pod, policy: &Policy) -> bool {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    evaluate(pod, policy, namespace)
        .iter()
        .any(ObjectReport::enforce_would_act)
}

fn controller(owners: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    owners?.iter().find(|o| o.controller == Some(true))
}

/// Audits the pods of `namespace` (all namespaces when `None`) against `policy`.
pub(crate) async fn audit(
    namespace: Option<&str>,
    policy: &Policy,
) -> Result<Vec<ObjectReport>, LiveError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| LiveError::Config(Box::new(kube::Error::InferConfig(e))))?;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| LiveError::Config(Box::new(e)))?;
    audit_with(client, &url, namespace, policy, PAGE).await
}

/// `audit` with a given client (reaching `url`) and list page size.
pub async fn audit_with(
    client: Client,
    url: &str,
    namespace: Option<&str>,
    policy: &Policy,
    page_size: u32,
) -> Result<Vec<ObjectReport>, LiveError> {
    let scope = namespace.map_or("all namespaces".to_owned(), |n| format!("namespace {n}"));
    let (pods, replicasets, jobs): (Api<Pod>, Api<ReplicaSet>, Api<Job>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    let pods = list_all(&pods, "pods", &scope, url, page_size).await?;
    // ReplicaSets and Jobs lead to their Deployment and CronJob.
    let mut parents = Parents::new();
    for rs in list_all(&replicasets, "replicasets", &scope, url, page_size).await? {
        parents.add(&rs.metadata);
    }
    for job in list_all(&jobs, "jobs", &scope, url, page_size).await? {
        parents.add(&job.metadata);
    }
    let mut groups: BTreeMap<Workload, Vec<ObjectReport>> = BTreeMap::new();
    for pod in pods {
        let workload = parents.workload(&pod);
        let mut reports = evaluate(&pod, policy, &workload.namespace);
        for report in &mut reports {
            report.kind.clone_from(&workload.kind);
            report.name.clone_from(&workload.name);
        }
        groups.entry(workload).or_default().extend(reports);
    }
    Ok(groups.into_values().flat_map(distinct).collect())
}

/// What a pod is reported under: the workload that owns it, or the pod itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Workload {
    namespace: String,
    kind: String,
    name: String,
}

/// An object that controls others, by kind and name.
#[derive(Clone)]
struct Owner {
    kind: String,
    name: String,
}

impl Owner {
    fn of(reference: &OwnerReference) -> Self {
        Owner {
            kind: reference.kind.clone(),
            name: reference.name.clone(),
        }
    }
}

/// The controllers of ReplicaSets and Jobs, by the uid of what they control.
struct Parents(HashMap<String, Owner>);

impl Parents {
    fn new() -> Self {
        Parents(HashMap::new())
    }

    fn add(&mut self, metadata: &ObjectMeta) {
        let owner = controller(metadata.owner_references.as_ref());
        if let (Some(uid), Some(owner)) = (&metadata.uid, owner) {
            self.0.insert(uid.clone(), Owner::of(owner));
        }
    }

    /// The pod's workload: its controller, or the controller of that (a ReplicaSet's
    /// Deployment, a Job's CronJob); the pod itself when nothing controls it.
    fn workload(&self, pod: &Pod) -> Workload {
        let owner = match controller(pod.metadata.owner_references.as_ref()) {
            Some(reference) => self
                .0
                .get(&reference.uid)
                .cloned()
                .unwrap_or_else(|| Owner::of(reference)),
            None => Owner {
                kind: "Pod".to_owned(),
                name: pod.metadata.name.clone().unwrap_or_default(),
            },
        };
        Workload {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            kind: owner.kind,
            name: owner.name,
        }
    }
}

/// The reports of one workload's pods, one row per distinct set of changes: pods of one
/// workload usually agree, and rows differ only where they do not.
fn distinct(reports: Vec<ObjectReport>) -> Vec<ObjectReport> {
    let mut rows: Vec<ObjectReport> = Vec::new();
    for report in reports {
        let same = rows
            .iter_mut()
            .find(|row| row.containers == report.containers && row.denied == report.denied);
        match same {
            Some(row) => row.pods = row.pods.map(|n| n + 1),
            None => rows.push(ObjectReport {
                pods: Some(1),
                ..report
            }),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(kind: &str, name: &str, uid: &str) -> ObjectMeta {
        serde_json::from_value(serde_json::json!({
            "name": format!("{name}-x"), "namespace": "shop", "uid": format!("{uid}-child"),
            "ownerReferences": [{"apiVersion": "v1", "kind": kind, "name": name, "uid": uid,
                                 "controller": true}]
        }))
        .unwrap()
    }

    #[test]
    fn groups_pods_by_their_top_controller() {
        let mut parents = Parents::new();
        // A ReplicaSet of a Deployment; a ReplicationController controls its pods itself.
        parents.add(&owned("Deployment", "web", "d1"));
        let rs_pod = Pod {
            metadata: owned("ReplicaSet", "web-abc", "d1-child"),
            ..Pod::default()
        };
        let rc_pod = Pod {
            metadata: owned("ReplicationController", "legacy", "rc1"),
            ..Pod::default()
        };
        let workload = |pod: &Pod| {
            let w = parents.workload(pod);
            (w.kind, w.name)
        };
        assert_eq!(workload(&rs_pod), ("Deployment".into(), "web".into()));
        assert_eq!(
            workload(&rc_pod),
            ("ReplicationController".into(), "legacy".into())
        );
    }
}
