//! Generated pods for the memory and latency measurements: a pod with thousands of
//! containers, as large as the API server lets through.

use serde_json::{Value, json};

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
            "containers": (0..containers).map(container).collect::<Vec<_>>(),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
        },
    })
}

fn container(i: usize) -> Value {
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
