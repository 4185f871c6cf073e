//! State snapshot benchmarks: what a snapshot of 100, 1,000 and 10,000 cohorts weighs, what it
//! costs the consumer task (export + encode run on it) and the blocking pool (the atomic write
//! runs there), and whether the hot path stalls while a snapshot is written.
//!
//! Run: `cargo bench --bench snapshot`. It prints the snapshot sizes, runs the criterion
//! benchmarks, then prints the per-event `Pipeline::process` percentiles at 10,000 cohorts with
//! and without a concurrent write, and the stall per snapshot on the consumer task. Figures are
//! recorded in the README.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion};
use driftd::config::Config;
use driftd::metrics::Metrics;
use driftd::persist::SnapshotStore;
use driftd::pipeline::Pipeline;
use driftd::traffic::{Generator, TrafficModel};

/// Cohorts per deployment: 2 arms × 4 locales × 2 channels.
const PER_DEPLOYMENT: usize = 16;
/// Events per cohort when the state is built: a cohort is left unseen with probability e⁻²⁰.
const EVENTS_PER_COHORT: usize = 20;
/// The built state's events span one window (`windows.span`, 1 h by default).
const SPAN_MS: i64 = 3_600_000;
const START_MS: i64 = 1_795_928_400_000;
const SIZES: [usize; 3] = [100, 1_000, 10_000];

fn config() -> Config {
    let mut config = Config::default();
    config.cohorts.segment_keys = vec!["locale".into(), "channel".into()];
    // Room above the largest size, so no event lands in the overflow cohort.
    config.cohorts.max_cohorts = 20_000;
    config
}

/// A generator of the deployments that make up about `cohorts` cohorts.
fn generator(cohorts: usize, seed: u64) -> Generator {
    Generator::new(
        TrafficModel {
            deployments: cohorts.div_ceil(PER_DEPLOYMENT),
            seed,
            ..TrafficModel::default()
        },
        None,
    )
}

/// A pipeline holding about `cohorts` cohorts on partition 0 (a deployment's events share a
/// partition; one partition holding them all is the largest single snapshot), built by the
/// real hot path from generated events spread over one window span; and the time of its
/// last event.
fn state(cohorts: usize) -> (Pipeline, i64) {
    let (mut p, _rx) = Pipeline::new(&config(), Arc::new(Metrics::new(&config())), false);
    let mut g = generator(cohorts, 1);
    let events = cohorts * EVENTS_PER_COHORT;
    let step = (SPAN_MS / events as i64).max(1);
    let mut t = START_MS;
    for _ in 0..events {
        p.process(0, Some(&g.next_event(t).payload));
        t += step;
    }
    (p, t)
}

fn store(dir: &std::path::Path) -> SnapshotStore {
    SnapshotStore::new(dir, "llm.events", &config().state_fingerprint())
}

fn bench(c: &mut Criterion, dir: &std::path::Path) {
    let store = store(dir);
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    for size in SIZES {
        let (p, _) = state(size);
        let bytes = store.encode(0, 1, p.export_partition(0));
        println!(
            "snapshot of {} cohorts: {} bytes ({:.1} MiB, {:.1} KiB per cohort)",
            p.table().len(),
            bytes.len(),
            bytes.len() as f64 / (1 << 20) as f64,
            bytes.len() as f64 / 1024.0 / p.table().len() as f64
        );
        group.bench_with_input(BenchmarkId::new("export", size), &p, |b, p| {
            b.iter(|| p.export_partition(0))
        });
        group.bench_with_input(BenchmarkId::new("export_encode", size), &p, |b, p| {
            b.iter(|| store.encode(0, 1, p.export_partition(0)))
        });
        group.bench_with_input(BenchmarkId::new("write", size), &bytes, |b, bytes| {
            b.iter(|| store.write(0, bytes).expect("the snapshot is written"))
        });
    }
    group.finish();
}

/// Percentiles of per-event processing times, in nanoseconds.
fn percentiles(label: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "{label}: {} events, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        ns.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        ns[ns.len() - 1] as f64 / 1000.0
    );
}

/// Times `Pipeline::process` per event over `payloads`.
fn process_times(p: &mut Pipeline, payloads: &[Vec<u8>]) -> Vec<u64> {
    payloads
        .iter()
        .map(|e| {
            let started = Instant::now();
            p.process(0, Some(e));
            started.elapsed().as_nanos() as u64
        })
        .collect()
}

/// The hot path at 10,000 cohorts: per-event processing with and without a snapshot being
/// written by another thread (what `spawn_blocking` does in the daemon), then what the
/// consumer task itself pays per snapshot (export + encode run on it).
fn hot_path(dir: &std::path::Path) {
    const EVENTS: usize = 200_000;
    let cohorts = 10_000;
    let (mut p, mut t) = state(cohorts);
    println!("hot path at {} cohorts", p.table().len());
    let mut g = generator(cohorts, 2);
    let mut next = |n: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                t += 20;
                g.next_event(t).payload
            })
            .collect()
    };
    let warm = next(EVENTS);
    process_times(&mut p, &warm);
    let quiet = next(EVENTS);
    percentiles("  no snapshot write    ", process_times(&mut p, &quiet));

    let store = store(dir);
    let bytes = Arc::new(store.encode(0, 1, p.export_partition(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, bytes, stop, writes) =
            (store.clone(), bytes.clone(), stop.clone(), writes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                store.write(0, &bytes).expect("the snapshot is written");
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let busy = next(EVENTS);
    let started = Instant::now();
    let during = process_times(&mut p, &busy);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer thread finishes");
    percentiles("  snapshot writes alongside", during);
    println!(
        "  ({} writes of {:.1} MiB completed during the {:.2} s of processing)",
        writes.load(Ordering::Relaxed),
        bytes.len() as f64 / (1 << 20) as f64,
        elapsed.as_secs_f64()
    );

    let mut stalls: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let bytes = store.encode(0, 1, p.export_partition(0));
            std::hint::black_box(bytes);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    stalls.sort_by(f64::total_cmp);
    println!(
        "  consumer task stalled per snapshot (export + encode, 5 runs): min {:.0} ms, median {:.0} ms, max {:.0} ms",
        stalls[0], stalls[2], stalls[4]
    );
}

/// Runs the benchmarks. What `criterion_group!` would generate, written out because the macro
/// gives the function no doc comment and `missing_docs` is on. The hot-path measurement runs
/// only under `cargo bench` (criterion's test mode, `cargo test --benches`, skips it).
pub fn benches() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    bench(&mut Criterion::default().configure_from_args(), dir.path());
    if std::env::args().any(|a| a == "--bench") {
        hot_path(dir.path());
    }
}

criterion_main!(benches);
