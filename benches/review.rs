//! One AdmissionReview end to end in memory: parse → engine → patch → serialized response,
//! on a ReplicaSet-created pod with 3 containers, a native sidecar, 25 env vars each,
//! probes and volumes. The `json_roundtrip` baseline (parse and re-serialize the same body)
//! is measured in the same run, so the ratio holds on a noisy machine. `mutate_document`
//! reads the same body into a document first, as every body but the usual CREATE is.

#[path = "../tests/support/mod.rs"]
pub mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gomemlimit_injector::admission::{Endpoint, Reading, handle, handle_with};
use gomemlimit_injector::policy::Policy;
use support::fixture;

fn reviews(c: &mut Criterion) {
    let pod = fixture("pod-create.json");
    let compliant = fixture("pod-create-compliant.json");
    let small = fixture("pod-create-small.json");
    let policy = Policy::default();
    let literal = Policy {
        percent: 90,
        ..Policy::default()
    };
    let mut group = c.benchmark_group("review");
    group.bench_function("json_roundtrip_baseline", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(black_box(&pod)).unwrap();
            serde_json::to_vec(&v).unwrap()
        })
    });
    for (name, endpoint, body, policy) in [
        ("mutate", Endpoint::Mutate, &pod, &policy),
        ("mutate_percent_90", Endpoint::Mutate, &pod, &literal),
        ("audit", Endpoint::Audit, &pod, &policy),
        ("mutate_compliant", Endpoint::Mutate, &compliant, &policy),
        ("mutate_small", Endpoint::Mutate, &small, &policy),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| handle(endpoint, Some("application/json"), black_box(body), policy))
        });
    }
    group.bench_function("mutate_document", |b| {
        b.iter(|| {
            let body = black_box(&pod);
            handle_with(
                Reading::Document,
                Endpoint::Mutate,
                Some("application/json"),
                body,
                &policy,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, reviews);
criterion_main!(benches);
