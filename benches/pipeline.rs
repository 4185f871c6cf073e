//! Hot-path benchmarks: the cost of one event through decode, privacy gate and cohort state
//! (the same `Pipeline::process` the daemon, replay and demo run), and of publishing a snapshot.
//!
//! Run: `cargo bench --bench pipeline`. Figures are recorded in the README.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use driftd::config::Config;
use driftd::gen::{Generator, Scenario};
use driftd::metrics::Metrics;
use driftd::pipeline::Pipeline;

fn events(n: usize) -> Vec<Vec<u8>> {
    let mut g = Generator::new(
        Scenario {
            deployments: 4,
            ..Scenario::default()
        },
        None,
    );
    (0..n)
        .map(|i| g.next_event(1_795_928_400_000 + i as i64).payload)
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut config = Config::default();
    config.cohorts.segment_keys = vec!["locale".into()];
    let batch = events(10_000);

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("process_10k_events", |b| {
        b.iter_batched(
            || Pipeline::new(&config, Arc::new(Metrics::new("bench")), false).0,
            |mut p| {
                for e in &batch {
                    p.process(Some(e));
                }
                p
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(batch.len() as u64));
    let decoder = driftd::event::Decoder::new(&config);
    group.bench_function("decode_and_gate_10k_events", |b| {
        b.iter(|| {
            batch
                .iter()
                .filter(|e| decoder.decode(Some(e)).is_ok())
                .count()
        })
    });
    group.finish();

    let (mut p, _rx) = Pipeline::new(&config, Arc::new(Metrics::new("bench")), false);
    for e in &batch {
        p.process(Some(e));
    }
    c.bench_function("publish_snapshot_32_cohorts", |b| b.iter(|| p.publish()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
