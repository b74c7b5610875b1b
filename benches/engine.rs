//! Micro-benchmarks of the admission path without the network.
//!
//! `cargo bench --bench engine` (under `cargo test --all-targets` each runs once, as a check).
//!
//! - `evaluate/<fixture>`: parse + `mutate::edit` + patch for each `tests/fixtures/pods/*.yaml`
//!   (`admission::evaluate` on the pod's JSON), plus a non-Harbor pod of the core pod's size;
//! - `mutate/core`: `mutate::mutate` alone on the typed Harbor core pod;
//! - `review/<body>`: `admission::review(bytes)` then `serde_json::to_vec`, the server's
//!   request-bytes → response-bytes work.
//!
//! With the server's allocator (mimalloc, as `src/main.rs` sets it).

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use harbor_iam_webhook::admission::{self, Decision};
use harbor_iam_webhook::facts::Facts;
use harbor_iam_webhook::mutate::{self, MutateConfig};
use k8s_openapi::api::core::v1::Pod;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn benches(c: &mut Criterion) {
    let config = MutateConfig::new("eu-west-1");
    let facts = Facts::default();

    let mut group = c.benchmark_group("evaluate");
    let mut pods = support::fixtures();
    pods.push(("non-harbor".into(), support::non_harbor_pod()));
    for (name, pod) in &pods {
        let object = pod.to_string();
        let ns = pod["metadata"]["namespace"].as_str();
        group.bench_function(name.as_str(), |b| {
            b.iter(|| admission::evaluate(black_box(&object), ns, &config, &facts))
        });
    }
    group.finish();

    let typed: Pod = serde_json::from_value(support::core_pod()).expect("the core pod is a Pod");
    c.bench_function("mutate/core", |b| {
        b.iter(|| mutate::mutate(black_box(&typed), &config, &facts).expect("core mutates"))
    });

    let mut group = c.benchmark_group("review");
    for (name, pod) in [
        ("core", support::core_pod()),
        ("non-harbor", support::non_harbor_pod()),
    ] {
        let body = support::review_body(&pod);
        let (_, summary) = admission::review(&body, admission::Endpoint::Mutate, &config, &facts)
            .expect("a valid review");
        let expected = if name == "core" {
            Decision::Mutated
        } else {
            Decision::Skipped
        };
        assert_eq!(summary.decision, Some(expected), "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let (out, summary) = admission::review(
                    black_box(&body),
                    admission::Endpoint::Mutate,
                    &config,
                    &facts,
                )
                .expect("a valid review");
                (serde_json::to_vec(&out).expect("serialises"), summary)
            })
        });
    }
    group.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);
