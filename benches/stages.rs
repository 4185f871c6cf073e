//! The hot path stage by stage, and whole, at few and at many cohorts: where an event's time
//! goes, and whether it grows with the number of cohorts.
//!
//! - `decode_gate`: message bytes → validated event, privacy gate included (`Decoder::decode`);
//!   `decode_gate_generic` the same through the generic path alone (`Decoder::decode_generic`,
//!   the JSON value first), the way every event went before the typed pass;
//! - `gate`: the privacy gate alone (`privacy::scan` of every string an event carries);
//! - `cohort_update`: a decoded event into cohort state (`CohortTable::apply`);
//! - `detector_step`: one applied event through detection (`Detector::observe`);
//! - `detector/calibrate`: one CUSUM threshold from the exact in-control ARL
//!   (`arl::threshold_for_arl`, not memoised), over the eight late-drift charts of the default
//!   metrics at the default budget with control's margin at 4,096 events (per element: one
//!   calibration);
//! - `process/{16,10000}_cohorts`: the whole per-event path (`Pipeline::process`), the same code
//!   `run`, `replay` and the demo use, into a table already holding that many cohorts (one
//!   deployment makes 16), at 1,000 events per second of event time;
//! - `process_dense/{16,10000}_cohorts`: the same at 100,000 events per second of event time (a
//!   second of it measured), the rate of a busy fleet: the evidence of every deployment that
//!   moved is sampled once per second of event time, and at 1,000 events/s over 625 deployments
//!   that costs about one sample per event, at 100,000 one per hundred;
//! - `publish/{100,1000,10000}_cohorts`: one publication (metrics, `/v1/cohorts`, `/v1/verdicts`)
//!   written on the caller's thread, as replay does; `…_consumer_share`: what the daemon's
//!   consumer pays for it (`Pipeline::snapshot`), the metrics being written on the
//!   `driftd-publish` thread.
//!
//! - `scrape/{1000,10000}_cohorts`: rendering `/metrics` (`Metrics::render`, what the admin
//!   server runs on its blocking pool per scrape) once a publication wrote every cohort's series.
//!
//! - `process_cpu` (a filter naming no criterion benchmark): the whole path's CPU time per event
//!   (the thread's, not wall time) at 16 and at 10,000 cohorts and their ratio, printed.
//! - `scrape_stall` (likewise): at 10,000 cohorts, the daemon's arrangement (metrics written on
//!   the publication thread, a publication every second of wall time), each event's
//!   `Pipeline::process` time for 10 s without and then with a scraper rendering `/metrics`
//!   every second on another thread: the percentiles of both, printed.
//!
//! Events are realistic: both arms, several deployments, segment keys `locale` and `channel`
//! (16 cohorts per deployment). Run: `cargo bench --bench stages`; figures in the README.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use driftd::config::Config;
use driftd::detect::arl::{self, Increments};
use driftd::detect::Detector;
use driftd::event::{Decoder, Event};
use driftd::metrics::Metrics;
use driftd::pipeline::Pipeline;
use driftd::state::{Applied, CohortKey, CohortTable};
use driftd::traffic::{Generator, TrafficModel};

const START_MS: i64 = 1_795_928_400_000;
/// Cohorts per generated deployment: 2 arms × 4 locales × 2 channels.
const PER_DEPLOYMENT: usize = 16;
const BATCH: usize = 10_000;

fn config() -> Config {
    let mut config = Config::default();
    config.cohorts.segment_keys = vec!["locale".into(), "channel".into()];
    config.cohorts.max_cohorts = 200_000;
    config
}

/// Traffic over the deployments that make up about `cohorts` cohorts.
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

/// `n` events spread over the deployments that make up about `cohorts` cohorts, 1 ms apart.
fn payloads(cohorts: usize, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut g = generator(cohorts, seed);
    (0..n)
        .map(|i| g.next_event(START_MS + i as i64).payload)
        .collect()
}

/// A pipeline that has seen every cohort of `cohorts` (about 20 events each), so the measured
/// events land in a full table; and the time after its last event.
fn warmed(cohorts: usize) -> (Pipeline, i64) {
    warmed_into(cohorts, Arc::new(Metrics::new(&config())))
}

/// [`warmed`], writing its series into `metrics`.
fn warmed_into(cohorts: usize, metrics: Arc<Metrics>) -> (Pipeline, i64) {
    let config = config();
    let (mut p, _) = Pipeline::new(&config, metrics, false);
    let n = cohorts * 20;
    for e in &payloads(cohorts, n, 1) {
        p.process(0, Some(e));
    }
    (p, START_MS + n as i64)
}

fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out)
        }),
        _ => {}
    }
}

fn stages(c: &mut Criterion) {
    let config = config();
    let batch = payloads(80, BATCH, 2);
    let decoder = Decoder::new(&config);
    let events: Vec<Event> = batch
        .iter()
        .map(|e| decoder.decode(Some(e)).expect("generated events are valid"))
        .collect();

    let mut group = c.benchmark_group("stage");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode_gate", |b| {
        b.iter(|| {
            batch
                .iter()
                .filter(|e| decoder.decode(Some(e)).is_ok())
                .count()
        })
    });
    group.bench_function("decode_gate_generic", |b| {
        b.iter(|| {
            batch
                .iter()
                .filter(|e| decoder.decode_generic(Some(e)).is_ok())
                .count()
        })
    });
    let texts: Vec<Vec<String>> = batch
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            strings(&serde_json::from_slice(e).expect("JSON"), &mut out);
            out
        })
        .collect();
    group.bench_function("gate", |b| {
        b.iter(|| {
            texts
                .iter()
                .flatten()
                .filter(|s| driftd::privacy::scan(s).is_some())
                .count()
        })
    });
    let signals = decoder.signals().to_vec();
    group.bench_function("cohort_update", |b| {
        b.iter_batched(
            || (CohortTable::new(&config, &signals), events.clone()),
            |(mut table, events)| {
                for e in events {
                    let _ = table.apply(0, e);
                }
                table
            },
            BatchSize::LargeInput,
        )
    });
    // What detection is given per event, recorded from the real table.
    let mut table = CohortTable::new(&config, &signals);
    let steps: Vec<(usize, CohortKey, Vec<f64>, i64)> = events
        .iter()
        .filter_map(|e| {
            let t = e.emitted_at_ms;
            match table.apply(0, e.clone()) {
                Ok(Applied::Cohort(i)) => {
                    Some((i, table.key(i).clone(), table.last_values().to_vec(), t))
                }
                _ => None,
            }
        })
        .collect();
    group.bench_function("detector_step", |b| {
        b.iter_batched(
            || (Detector::new(&config), Vec::new()),
            |(mut detector, mut out)| {
                for (i, key, values, t) in &steps {
                    detector.observe(*i, key, values, *t, &mut out);
                    out.clear();
                }
                detector
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("detector");
    let charts = calibrations();
    group.throughput(Throughput::Elements(charts.len() as u64));
    group.bench_function("calibrate", |b| {
        b.iter(|| {
            charts
                .iter()
                .map(|&(inc, arl0)| arl::threshold_for_arl(inc, arl0))
                .sum::<f64>()
        })
    });
    group.finish();

    // (group, events per millisecond of event time, events measured)
    for (name, per_ms, batch) in [("process", 1, BATCH), ("process_dense", 100, 100_000)] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(batch as u64));
        // Each sample builds its table afresh (200,000 events at 10,000 cohorts).
        group.sample_size(10);
        for cohorts in [16usize, 10_000] {
            let t0 = warmed(cohorts).1;
            let measured: Vec<Vec<u8>> = {
                let mut g = generator(cohorts, 3);
                (0..batch)
                    .map(|i| g.next_event(t0 + (i / per_ms) as i64).payload)
                    .collect()
            };
            group.bench_function(format!("{cohorts}_cohorts"), |b| {
                b.iter_batched(
                    || warmed(cohorts).0,
                    |mut p| {
                        for e in &measured {
                            p.process(0, Some(e));
                        }
                        p
                    },
                    BatchSize::PerIteration,
                )
            });
        }
        group.finish();
    }

    let mut group = c.benchmark_group("publish");
    group.sample_size(10);
    for cohorts in [100usize, 1_000, 10_000] {
        let (mut p, _) = warmed(cohorts);
        group.bench_function(format!("{cohorts}_cohorts"), |b| b.iter(|| p.publish()));
        group.bench_function(format!("{cohorts}_cohorts_consumer_share"), |b| {
            b.iter(|| p.snapshot())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("scrape");
    group.sample_size(10);
    for cohorts in [1_000usize, 10_000] {
        let metrics = Arc::new(Metrics::new(&config));
        let (mut p, _) = warmed_into(cohorts, metrics.clone());
        p.publish();
        group.bench_function(format!("{cohorts}_cohorts"), |b| {
            b.iter(|| metrics.render())
        });
    }
    group.finish();
}

/// p50 / p99 / p99.9 / max of per-event times in nanoseconds, as one line.
fn percentiles(mut ns: Vec<u64>) -> String {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    format!(
        "{} events, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        ns.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}

/// The hot path at 10,000 cohorts as the daemon runs it, for 10 s without and then with a
/// scrape every second; printed after criterion when the filter names `scrape_stall`.
fn scrape_stall() {
    const COHORTS: usize = 10_000;
    let metrics = Arc::new(Metrics::new(&config()));
    let (mut p, t0) = warmed_into(COHORTS, metrics.clone());
    p.publish_off_thread();
    let mut g = generator(COHORTS, 4);
    let mut t = t0;
    let stop = Arc::new(AtomicBool::new(false));
    for scraping in [false, true] {
        let scraper = scraping.then(|| {
            let (metrics, stop) = (metrics.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut took = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let bytes = metrics.render().len();
                    took.push((started.elapsed(), bytes));
                    std::thread::sleep(Duration::from_secs(1));
                }
                took
            })
        });
        let mut times = Vec::new();
        let started = Instant::now();
        let mut published = started;
        while started.elapsed() < Duration::from_secs(10) {
            let batch: Vec<Vec<u8>> = (0..1_000).map(|i| g.next_event(t + i).payload).collect();
            t += 1_000;
            for e in &batch {
                let at = Instant::now();
                p.process(0, Some(e));
                times.push(at.elapsed().as_nanos() as u64);
            }
            if published.elapsed() >= Duration::from_secs(1) {
                p.publish();
                published = Instant::now();
            }
        }
        stop.store(true, Ordering::Relaxed);
        let label = if scraping {
            "scraped every second"
        } else {
            "no scrape          "
        };
        println!(
            "scrape_stall/{COHORTS}_cohorts, {label}: {}",
            percentiles(times)
        );
        if let Some(scraper) = scraper {
            let took = scraper.join().expect("the scraper ran");
            let mut ms: Vec<f64> = took.iter().map(|(d, _)| d.as_secs_f64() * 1e3).collect();
            ms.sort_by(f64::total_cmp);
            println!(
                "scrape_stall/{COHORTS}_cohorts: {} scrapes of {} bytes, render p50 {:.1} ms, max {:.1} ms",
                ms.len(),
                took.last().map_or(0, |(_, b)| *b),
                ms[ms.len() / 2],
                ms[ms.len() - 1]
            );
        }
        stop.store(false, Ordering::Relaxed);
    }
}

/// The eight late-drift charts of the default metrics (refusal 5%, escalation 2%, tone
/// N(0.3, 0.3), tone_tail 0.4%; 2× and 5× `min_effect`) at the default per-chart budget, each
/// for a truth 1.645 standard errors of a 4,096-event control worse than the reference.
fn calibrations() -> Vec<(Increments, f64)> {
    let config = Config::default();
    let arl0 = Detector::late_chart_arl(&config);
    let z = 1.645 / 4096f64.sqrt();
    let mut charts = Vec::new();
    for (p, min_effect) in [(0.05f64, 0.01), (0.02, 0.01), (0.0038, 0.02)] {
        for k in [2.0, 5.0] {
            let truth = p + z * (p * (1.0 - p)).sqrt();
            charts.push((Increments::bernoulli(truth, p, p + k * min_effect), arl0));
        }
    }
    for k in [2.0, 5.0] {
        let d = k * 0.05 / 0.3;
        charts.push((Increments::gaussian(z, 1.0, 0.0, 1.0, d), arl0));
    }
    charts
}

/// CPU time this thread has run, in ns (`/proc/thread-self/schedstat`): on a shared machine
/// the wall time also counts the time other processes held the core.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The whole path's CPU time per event at 16 and 10,000 cohorts, best of five batches each,
/// and their ratio; printed after criterion when the filter names `process_cpu`.
fn process_cpu() {
    let mut best = Vec::new();
    for cohorts in [16usize, 10_000] {
        let (_, t0) = warmed(cohorts);
        let mut g = generator(cohorts, 3);
        let measured: Vec<Vec<u8>> = (0..BATCH)
            .map(|i| g.next_event(t0 + i as i64).payload)
            .collect();
        let mut runs = Vec::new();
        for _ in 0..5 {
            let (mut p, _) = warmed(cohorts);
            let Some(before) = thread_cpu_ns() else {
                println!("process_cpu: /proc/thread-self/schedstat is not readable here");
                return;
            };
            for e in &measured {
                p.process(0, Some(e));
            }
            let after = thread_cpu_ns().unwrap_or(before);
            runs.push((after - before) as f64 / BATCH as f64 / 1000.0);
        }
        runs.sort_by(f64::total_cmp);
        println!(
            "process_cpu/{cohorts}_cohorts: CPU µs/event best {:.2}, median {:.2}, worst {:.2}",
            runs[0], runs[2], runs[4]
        );
        best.push(runs[0]);
    }
    println!(
        "process_cpu: 10,000 / 16 cohorts = {:.2}x (best of five)",
        best[1] / best[0]
    );
}

/// Runs the benchmarks. What `criterion_group!` would generate, written out because the macro
/// gives the function no doc comment and `missing_docs` is on.
pub fn benches() {
    stages(&mut Criterion::default().configure_from_args());
    if std::env::args().any(|a| a.contains("process_cpu")) {
        process_cpu();
    }
    if std::env::args().any(|a| a.contains("scrape_stall")) {
        scrape_stall();
    }
}

criterion_main!(benches);
