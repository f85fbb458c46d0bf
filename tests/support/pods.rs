//! Generated pods, and captured ones made new again ([`as_new_pod`]).
//!
//! For the memory and latency measurements: a pod with thousands of containers, as large
//! as the API server lets through ([`many_containers_review`]).
//!
//! For both engines on a real API server: the property tests' generator
//! (`tests/properties.rs`) kept to pods the API server accepts ([`generated`]).
//! Quantities are valid (a request never above its limit, pod-level limits above the
//! containers'), container names unique; everything else varies as in the property tests:
//! limits and requests in every form, env entries with and without GOMEMLIMIT and GOGC,
//! `envFrom`, native sidecars, pod-level resources, valid and invalid annotations, status
//! annotations left by an earlier pass, unreadable ones.

use gomemlimit_injector::quantity::Quantity;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

/// A Pod CREATE AdmissionReview of a pod with `containers` containers, compact JSON as the
/// API server sends it. With 10,000 containers it is about 1.9 MB (the API server refuses
/// request bodies over 3 MiB). Every container has a name, an image, an environment
/// variable, a memory limit and a port; every eighth a readiness probe, every tenth a CPU
/// limit and a memory request below its limit. None has `GOMEMLIMIT`, so every one of them
/// gets a patch.
pub fn many_containers_review(containers: usize) -> Vec<u8> {
    let review = super::review::pod_review(
        "8b0f6a52-1c3e-4d7a-9f21-5e6c7d8a9b0c",
        &many_containers_pod(containers),
    );
    serde_json::to_vec(&review).expect("a generated review serializes")
}

/// The pod of [`many_containers_review`].
pub fn many_containers_pod(containers: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "shards-6c9f7d5b8-",
            "namespace": "default",
            "labels": {"app.kubernetes.io/name": "shards"},
        },
        "spec": {
            "containers": (0..containers).map(shard).collect::<Vec<_>>(),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
        },
    })
}

fn shard(i: usize) -> Value {
    let port = 10_000 + i;
    let mut c = json!({
        "name": format!("shard-{i}"),
        "image": format!("example.com/shard:1.{}", i % 7),
        "ports": [{"containerPort": port, "protocol": "TCP"}],
        "env": [{"name": "SHARD", "value": i.to_string()}],
        "resources": {"limits": {"memory": "64Mi"}},
    });
    if i.is_multiple_of(8) {
        c["readinessProbe"] = json!({"tcpSocket": {"port": port}, "periodSeconds": 10});
    }
    if i.is_multiple_of(10) {
        c["resources"] = json!({
            "limits": {"cpu": "100m", "memory": "64Mi"},
            "requests": {"memory": "32Mi"},
        });
    }
    c
}

/// Container memory values, as users write them (the API server keeps some forms, and
/// writes others canonically): binary and decimal suffixes, exponents, fractions of a byte,
/// zero, and more bytes than an int64 holds.
const QUANTITIES: &[&str] = &[
    "64Mi",
    "128Mi",
    "256Mi",
    "512Mi",
    "1Gi",
    "1.5Gi",
    ".5Gi",
    "1e9",
    "1E8",
    "500M",
    "1G",
    "128974848000m",
    "300000000",
    "268435456",
    "2Gi",
    "0",
    "1500m",
    "1",
    "10E",
];

fn quantity() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        3 => Just(None),
        7 => prop::sample::select(QUANTITIES).prop_map(Some),
    ]
}

fn env_entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (0u8..40).prop_map(|n| json!({"name": format!("VAR_{n}"), "value": "v"})),
        1 => Just(json!({"name": "GOMEMLIMIT", "value": "300MiB"})),
        1 => Just(json!({"name": "GOMEMLIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}})),
        1 => Just(json!({"name": "GOGC", "value": "50"})),
        1 => Just(json!({"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})),
    ]
}

/// Whether `request` may stand beside `limit` (the API server refuses a higher request).
fn fits(request: &str, limit: &str) -> bool {
    let (r, l) = (Quantity::parse(request), Quantity::parse(limit));
    match (r, l) {
        (Ok(r), Ok(l)) => r.cmp_value(&l).is_le(),
        // 10E: both sides the same text is the only pair kept.
        _ => request == limit,
    }
}

prop_compose! {
    fn container(name: String, sidecar: bool, pod_level: bool)(
        limit in quantity(),
        request in quantity(),
        cpu in any::<bool>(),
        env in prop::option::of(prop::collection::vec(env_entry(), 0..5)),
        env_from in prop::bool::weighted(0.2),
    ) -> Value {
        let mut c = json!({"name": name, "image": "registry.example/app:1"});
        if sidecar {
            c["restartPolicy"] = json!("Always");
        }
        // In a pod with a pod-level limit, containers stay far below it.
        let small = |q: Option<&'static str>| q.filter(|q| !pod_level || ["64Mi", "128Mi", "256Mi", "1"].contains(q));
        let (limit, mut request) = (small(limit), small(request));
        if let (Some(l), Some(r)) = (limit, request) && !fits(r, l) {
            request = None;
        }
        let mut resources = Map::new();
        if let Some(l) = limit {
            resources.insert("limits".into(), json!({"memory": l}));
        }
        if let Some(r) = request {
            resources.insert("requests".into(), json!({"memory": r}));
        }
        if cpu {
            let limits = resources.entry("limits").or_insert_with(|| json!({}));
            limits["cpu"] = json!("500m");
        }
        if !resources.is_empty() {
            c["resources"] = Value::Object(resources);
        }
        if let Some(env) = env {
            let mut unique: Vec<Value> = Vec::new();
            for e in env {
                if !unique.iter().any(|u| u["name"] == e["name"]) {
                    unique.push(e);
                }
            }
            if !unique.is_empty() {
                c["env"] = Value::Array(unique);
            }
        }
        if env_from {
            c["envFrom"] = json!([{"configMapRef": {"name": "settings", "optional": true}}]);
        }
        c
    }
}

/// A status annotation an earlier pass (or a person) left.
const STATUSES: &[&str] = &[
    "{not json",
    "{}",
    "{\"containers\":{}}",
    "{\"containers\":{\"c0\":{\"request\":\"1Gi\",\"gomemlimit\":\"966367641\",\"percent\":90}}}",
    "{\"containers\":{\"c0\":{\"gomemlimit\":\"limits.memory\",\"gogc\":\"off\"},\"i0\":{\"limit\":\"256Mi\"}}}",
];

fn annotations() -> impl Strategy<Value = Map<String, Value>> {
    let percent = prop::option::weighted(
        0.25,
        prop::sample::select(&["50", "90", "100", "30", "abc", "95", "0090"][..]),
    );
    let gogc = prop::option::weighted(
        0.2,
        prop::sample::select(&["off", "keep", "100", "fast", "007"][..]),
    );
    let exclude = prop::option::weighted(
        0.15,
        prop::sample::select(&["c0", "c1,i0", "Bad_Name", "", " c0 , "][..]),
    );
    let mode = prop::option::weighted(0.15, prop::sample::select(&["audit", "enforce"][..]));
    let status = prop::option::weighted(0.15, prop::sample::select(STATUSES));
    (percent, gogc, exclude, mode, status).prop_map(|(p, g, e, m, s)| {
        let mut a = Map::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                a.insert(k.into(), json!(v));
            }
        };
        put("gomemlimit.io/percent", p);
        put("gomemlimit.io/gogc", g);
        put("gomemlimit.io/exclude-containers", e);
        put("gomemlimit.io/mode", m);
        put("gomemlimit.io/status", s);
        put("team/owner", Some("payments"));
        a
    })
}

prop_compose! {
    fn pod_shape()(n_app in 1usize..4, n_init in 0usize..3, pod_level in prop::bool::weighted(0.15))
        -> (usize, usize, bool) {
        (n_app, n_init, pod_level)
    }
}

prop_compose! {
    /// One pod, named `gen-<index>` by the caller.
    fn pod()((n_app, n_init, pod_level) in pod_shape())(
        app in (0..n_app).map(|i| container(format!("c{i}"), false, pod_level)).collect::<Vec<_>>(),
        init in (0..n_init).map(|i| container(format!("i{i}"), i % 2 == 0, pod_level)).collect::<Vec<_>>(),
        annotations in prop::option::weighted(0.6, annotations()),
        opted_out in prop::bool::weighted(0.03),
        pod_limit in prop::sample::select(&["16Gi", "20Gi"][..]),
        pod_level in Just(pod_level),
    ) -> Value {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {},
            "spec": {"automountServiceAccountToken": false, "containers": app},
        });
        if !init.is_empty() {
            pod["spec"]["initContainers"] = Value::Array(init);
        }
        if let Some(a) = annotations {
            pod["metadata"]["annotations"] = Value::Object(a);
        }
        if opted_out {
            pod["metadata"]["labels"] = json!({"gomemlimit.io/inject": "disabled"});
        }
        if pod_level {
            pod["spec"]["resources"] = json!({"limits": {"memory": pod_limit}});
        }
        pod
    }
}

/// `count` generated pods, the same ones for the same `seed`, named `gen-<i>`.
pub fn generated(seed: u8, count: usize) -> Vec<Value> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    );
    let strategy = pod();
    (0..count)
        .map(|i| {
            let mut p = strategy
                .new_tree(&mut runner)
                .expect("the pod strategy generates")
                .current();
            p["metadata"]["name"] = json!(format!("gen-{i}"));
            p
        })
        .collect()
}

/// Turns a pod captured from a cluster (a fixture's `request.object`) into one that can be
/// created again: without the metadata the API server sets, its service account and node,
/// and the service account token volume it was captured with (and its mounts).
pub fn as_new_pod(pod: &mut Value) {
    if let Some(metadata) = pod["metadata"].as_object_mut() {
        for key in [
            "namespace",
            "generateName",
            "ownerReferences",
            "uid",
            "creationTimestamp",
        ] {
            metadata.remove(key);
        }
    }
    let Some(spec) = pod["spec"].as_object_mut() else {
        return;
    };
    for key in ["serviceAccountName", "serviceAccount", "nodeName"] {
        spec.remove(key);
    }
    spec.insert("automountServiceAccountToken".into(), json!(false));
    let mut token = Vec::new();
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        token.extend(
            volumes
                .iter()
                .filter(|v| v.get("projected").is_some())
                .map(|v| v["name"].clone()),
        );
        volumes.retain(|v| v.get("projected").is_none());
    }
    for list in ["initContainers", "containers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            if let Some(mounts) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                mounts.retain(|m| !token.contains(&m["name"]));
            }
        }
    }
}
