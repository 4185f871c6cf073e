//! Hot-path benchmarks: the cost of one event through decode, privacy gate and cohort state
//! (the same `Pipeline::process` the daemon, replay and demo run), and of publishing a snapshot.
//!
//! Run: `cargo bench --bench pipeline`. Figures are recorded in the README.

use std::sync::Arc;

use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use driftd::config::Config;
use driftd::metrics::Metrics;
use driftd::pipeline::Pipeline;
use driftd::traffic::{Generator, TrafficModel};

fn events(n: usize) -> Vec<Vec<u8>> {
    let mut g = Generator::new(
        TrafficModel {
            deployments: 4,
            ..TrafficModel::default()
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
            || Pipeline::new(&config, Arc::new(Metrics::new(&config)), false).0,
            |mut p| {
                for e in &batch {
                    p.process(0, Some(e));
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

    let (mut p, _rx) = Pipeline::new(&config, Arc::new(Metrics::new(&config)), false);
    for e in &batch {
        p.process(0, Some(e));
    }
    c.bench_function("publish_snapshot_32_cohorts", |b| b.iter(|| p.publish()));
}

/// Runs the benchmarks. What `criterion_group!` would generate, written out because the macro
/// gives the function no doc comment and `missing_docs` is on.
pub fn benches() {
    bench(&mut Criterion::default().configure_from_args());
}

criterion_main!(benches);
