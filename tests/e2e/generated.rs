//! Generated pods (a deterministic generator, so a failure replays) all accepted.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::env::Env;

/// A small deterministic generator, so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn generated_pod(rng: &mut Rng, i: usize) -> Value {
    const MEMORY: &[&str] = &[
        "64Mi",
        "128Mi",
        "256Mi",
        "1Gi",
        "1.5Gi",
        "500M",
        "1e9",
        "300000000",
    ];
    let container = |name: String, sidecar: bool, rng: &mut Rng| {
        let mut c = json!({"name": name, "image": "registry.example/app:1"});
        let limit = rng.chance(75).then(|| *rng.pick(MEMORY));
        let request = rng.chance(50).then(|| *rng.pick(MEMORY));
        let mut resources = json!({});
        if let Some(l) = limit {
            resources["limits"] = json!({"memory": l, "cpu": "100m"});
            // Keep the pod valid: a request may not exceed the limit.
            if let Some(r) = request {
                let (lq, rq) = (
                    gomemlimit_injector::quantity::Quantity::parse(l).unwrap(),
                    gomemlimit_injector::quantity::Quantity::parse(r).unwrap(),
                );
                if rq.cmp_value(&lq).is_le() {
                    resources["requests"] = json!({"memory": r});
                }
            }
        } else if let Some(r) = request {
            resources["requests"] = json!({"memory": r});
        }
        c["resources"] = resources;
        let mut env = Vec::new();
        for k in 0..(rng.next() % 4) {
            env.push(json!({"name": format!("VAR_{k}"), "value": "x"}));
        }
        if rng.chance(10) {
            env.push(json!({"name": "GOMEMLIMIT", "value": "100MiB"}));
        }
        if rng.chance(10) {
            env.push(json!({"name": "GOGC", "value": "50"}));
        }
        if !env.is_empty() {
            c["env"] = Value::Array(env);
        }
        if rng.chance(10) {
            c["envFrom"] = json!([{"configMapRef": {"name": "settings", "optional": true}}]);
        }
        if sidecar {
            c["restartPolicy"] = json!("Always");
        }
        c
    };
    let containers: Vec<Value> = (0..1 + rng.next() % 3)
        .map(|k| container(format!("c{k}"), false, rng))
        .collect();
    let init: Vec<Value> = (0..rng.next() % 3)
        .map(|k| container(format!("i{k}"), rng.chance(50), rng))
        .collect();
    let mut annotations = json!({});
    if rng.chance(20) {
        annotations["gomemlimit.io/percent"] = json!(rng.pick(&["50", "90", "95", "100"]));
    }
    if rng.chance(15) {
        annotations["gomemlimit.io/gogc"] = json!(rng.pick(&["off", "keep", "200"]));
    }
    if rng.chance(10) {
        annotations["gomemlimit.io/exclude-containers"] = json!("c1,i0");
    }
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("gen-{i}"), "annotations": annotations},
        "spec": {"automountServiceAccountToken": false, "containers": containers}
    });
    if !init.is_empty() {
        pod["spec"]["initContainers"] = Value::Array(init);
    }
    pod
}

pub(crate) async fn generated_pods_are_all_accepted(env: &mut Env) -> Result<()> {
    env.enforcing_namespace("generated").await?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pods: Vec<Value> = (0..300).map(|i| generated_pod(&mut rng, i)).collect();
    let before = env
        .webhook
        .metric("gomemlimit_injector_admission_requests_total{path=\"mutate\",outcome=\"mutated\"}")
        .await?;
    let mut mutated = 0;
    for chunk in pods.chunks(10) {
        let results =
            futures::future::join_all(chunk.iter().map(|p| env.create_pod("generated", p))).await;
        for (p, result) in chunk.iter().zip(results) {
            let stored = result.with_context(|| format!("the API server refused {p}"))?;
            if stored["metadata"]["annotations"]
                .get("gomemlimit.io/status")
                .is_some()
            {
                mutated += 1;
            }
            for c in stored["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let r = &c["resources"];
                if let (Some(l), Some(q)) = (
                    r["limits"]["memory"].as_str(),
                    r["requests"]["memory"].as_str(),
                ) {
                    let (l, q) = (
                        gomemlimit_injector::quantity::Quantity::parse(l)?,
                        gomemlimit_injector::quantity::Quantity::parse(q)?,
                    );
                    let excluded = p["metadata"]["annotations"]["gomemlimit.io/exclude-containers"]
                        .as_str()
                        .is_some_and(|e| e.split(',').any(|n| c["name"] == n));
                    ensure!(
                        excluded || l == q,
                        "request != limit in {}",
                        stored["metadata"]["name"]
                    );
                }
            }
        }
    }
    let after = env
        .webhook
        .metric("gomemlimit_injector_admission_requests_total{path=\"mutate\",outcome=\"mutated\"}")
        .await?;
    println!("  300 generated pods accepted, {mutated} mutated");
    ensure!(mutated > 150, "only {mutated} of 300 pods were mutated");
    ensure!(
        after - before >= f64::from(mutated),
        "metrics did not count the mutations"
    );
    Ok(())
}
