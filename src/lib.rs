//! driftd — drift containment for LLM canary rollouts.
//!
//! driftd consumes privacy-scrubbed generation events from Kafka, keeps rolling per-cohort
//! baselines of tone, escalation and refusal, detects a drifting canary and contains it (flags
//! off, rollout halted, on-call alerted), latched until a human releases it. The README describes
//! the event contract and operation; `ARCHITECTURE.md` the data flow and the rules between modules.
//!
//! # Layout
//!
//! The modules follow the data flow, source to outputs. `ARCHITECTURE.md` has the same map with
//! the data flow drawn out, the dependency rules and where state lives; keep the two in step.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the TOML schema per section, its defaults and validation (`check-config`, reload) |
//! | [`event`] | contract v1: decoding, validation, rejection reasons |
//! | [`privacy`] | the PII gate over every string of an event |
//! | [`ingest`] | the Kafka source (receive, offsets, dead-letter, drain) and the replay file source |
//! | [`pipeline`] | decode → gate → cohort state → detection → change sink; published views; a partition's state cut out and put back; shared by `run`, `replay` and `demo` |
//! | [`persist`] | state snapshot files: format (versioned, checksummed), atomic writes, the previous one kept |
//! | [`state`] | cohorts, rolling windows, distributions, the reported EWMA — pure, event-time |
//! | [`detect`] | verdict types and the detector: canary-vs-control tests, self-baseline CUSUM, SRM, absence — pure, event-time |
//! | [`contain`] | latch (persisted) and ladder (transitions) — pure; retries, providers, latch store, audit log, the containment task |
//! | [`metrics`] | every `driftd_*` Prometheus series |
//! | [`admin`] | the HTTP server: metrics, health, cohorts, verdicts, gate, release/contain, audit, the on-call pages |
//! | [`daemon`] | `driftd run`: start-up order, the control loop (shutdown, reload, publication, next message), shutdown |
//! | [`signals`] | SIGTERM/SIGINT drain, SIGHUP reload |
//! | [`kafka_produce`] | enqueueing a record, waiting while the producer's queue is full |
//! | [`traffic`], [`demo`] | the synthetic traffic model and producer (`driftd gen`); the one-command demo |
//! | [`report`] | `driftd report`: one incident's post-incident report (Markdown or HTML) from the audit log |
//! | [`simulate`] | the detection benchmark (false alarms, delay, versus fixed windows) |
//! | [`logging`], [`clock`] | log set-up and error chains; the one place the wall clock is read |
//!
//! The default `kafka` feature gates everything that links librdkafka: [`ingest`]'s Kafka source,
//! `daemon`, `demo`, `kafka_produce`, `traffic`'s producer and the binary. Without it the library
//! still decodes, gates, keeps state, detects, contains and replays; the fuzz targets build it
//! so.
//!
//! Dependency rules: `state`, `detect`, `contain::ladder` and `contain::latch` import no I/O;
//! `contain` knows nothing of Kafka; `ingest` knows nothing of detection or actions; `admin`
//! reads state only through published snapshots and the containment handle.

pub mod admin;
pub mod clock;
pub mod config;
pub mod contain;
#[cfg(feature = "kafka")]
pub mod daemon;
#[cfg(feature = "kafka")]
pub mod demo;
pub mod detect;
pub mod event;
pub mod ingest;
#[cfg(feature = "kafka")]
pub mod kafka_produce;
pub mod logging;
pub mod metrics;
pub mod persist;
pub mod pipeline;
pub mod privacy;
pub mod report;
pub mod signals;
pub mod simulate;
pub mod state;
pub mod traffic;
