//! driftd — drift containment for LLM canary rollouts.
//!
//! driftd consumes privacy-scrubbed generation events from Kafka, keeps rolling per-cohort
//! baselines of tone, escalation and refusal, and exposes them to Prometheus and an admin API.
//! The design brief (`docs/` and the README) describes the event contract and the data flow.
//!
//! # Layout
//!
//! The modules follow the data flow, source to outputs:
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the TOML schema, defaults and validation (`check-config`, reload) |
//! | [`event`] | contract v1: decoding, validation, rejection reasons |
//! | [`privacy`] | the PII gate over every string of an event |
//! | [`ingest`] | the Kafka source (offsets, dead-letter) and the replay file source |
//! | [`pipeline`] | decode → gate → cohort state, shared by `run`, `replay` and `demo` |
//! | [`state`] | cohorts, rolling windows, distributions, baselines — pure, event-time |
//! | [`detect`] | canary-vs-control tests, self-baseline CUSUM, SRM, absence — pure, event-time |
//! | [`contain`] | policy ladder and latch (pure), audit log, action providers and retries |
//! | [`metrics`] | every `driftd_*` Prometheus series |
//! | [`admin`] | the HTTP server: `/metrics`, `/healthz`, `/readyz`, `/v1/cohorts` |
//! | [`daemon`] | start-up and shutdown sequencing of `driftd run` |
//! | [`signals`] | SIGTERM/SIGINT drain, SIGHUP reload |
//! | [`kafka_produce`] | enqueueing a record, waiting while the producer's queue is full |
//! | [`traffic`], [`demo`] | the synthetic traffic model and producer (`driftd gen`); the one-command demo |
//! | [`simulate`] | the detection benchmark (false alarms, delay, versus fixed windows) |
//! | [`logging`], [`clock`] | log set-up; the one place the wall clock is read |
//!
//! Dependency rules: `state`, `detect` and `contain::ladder` import no I/O; `contain` knows
//! nothing of Kafka; `ingest` knows nothing of detection or actions;
//! `admin` reads state only through published snapshots.

pub mod admin;
pub mod clock;
pub mod config;
pub mod contain;
pub mod daemon;
pub mod demo;
pub mod detect;
pub mod event;
pub mod ingest;
pub mod kafka_produce;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod privacy;
pub mod signals;
pub mod simulate;
pub mod state;
pub mod traffic;
