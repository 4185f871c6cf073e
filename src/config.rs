//! Configuration: the TOML schema, its defaults and its validation.
//!
//! Owns every operator-facing setting. Defaults live in the `Default` impls of this file and
//! nowhere else; validation lives in [`Config::validate`] and nowhere else, so `driftd
//! check-config`, start-up and SIGHUP reload all refuse the same mistakes with the same words.
//! This module must not open sockets, read Kafka or touch state: it only turns text into a
//! checked [`Config`] (secrets are resolved separately, by [`KafkaConfig::client_properties`], so
//! that `check-config` on a laptop does not need production secrets).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a configuration was refused. Every variant names the field so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}; check the path and its permissions")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (syntax, unknown key, wrong type).
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file that was parsed.
        path: PathBuf,
        /// The parser's message, which names the offending key and line.
        message: String,
    },
    /// A field parsed but its value is not acceptable.
    #[error("config field `{field}` is invalid: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `windows.bucket`.
        field: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// A secret referenced by `kafka.secrets` could not be resolved.
    #[error("secret for kafka property `{property}` is unavailable: {reason}")]
    Secret {
        /// The librdkafka property the secret is for.
        property: String,
        /// Why it could not be read (never the secret itself).
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole daemon configuration. Every key is optional; see the README for an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where events come from and where rejected ones go.
    pub kafka: KafkaConfig,
    /// Limits applied to each message before it reaches cohort state.
    pub ingest: IngestConfig,
    /// How events are grouped into cohorts.
    pub cohorts: CohortConfig,
    /// Rolling-window geometry shared by every cohort and metric.
    pub windows: WindowConfig,
    /// The metrics computed per cohort. Defaults to refusal, escalation, tone and tone_tail.
    pub metrics: Vec<MetricConfig>,
    /// Drift detection.
    pub detection: DetectionConfig,
    /// What happens when a canary fails: policies, action targets, latch, audit.
    pub containment: ContainmentConfig,
    /// The admin HTTP server (metrics, health, cohorts).
    pub admin: AdminConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// Graceful shutdown behaviour.
    pub shutdown: ShutdownConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            ingest: IngestConfig::default(),
            cohorts: CohortConfig::default(),
            windows: WindowConfig::default(),
            metrics: default_metrics(),
            detection: DetectionConfig::default(),
            containment: ContainmentConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

/// Kafka connection, consumer group and dead-letter settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated `host:port`.
    pub brokers: String,
    /// Topic of generation events (contract v1).
    pub topic: String,
    /// Consumer group id; one group per driftd deployment.
    pub group_id: String,
    /// Topic that receives rejected events; empty disables dead-lettering (rejections are still
    /// counted).
    pub dead_letter_topic: String,
    /// How often librdkafka reports statistics (consumer lag is read from them).
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
    /// How often stored offsets are committed in the background.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Extra librdkafka properties passed through as-is (e.g. `security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`). Secrets do not belong here: use `kafka.secrets`.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are secrets, read from a file or an environment
    /// variable at start-up and never logged, e.g. `"sasl.password" = { env = "KAFKA_PASSWORD" }`.
    pub secrets: BTreeMap<String, SecretSource>,
}

/// Where a secret value is read from.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSource {
    /// Read the named environment variable.
    Env(String),
    /// Read the file (trailing newline stripped).
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "env:{name}"),
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl SecretSource {
    /// Reads the secret. The error never contains the value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set or not UTF-8")),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// librdkafka property names whose values are credentials: refused in `kafka.properties`.
const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
];

/// Properties driftd sets itself because correctness depends on them.
const OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
];

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "llm.generation.events".into(),
            group_id: "driftd".into(),
            dead_letter_topic: String::new(),
            stats_interval: Duration::from_secs(5),
            commit_interval: Duration::from_secs(5),
            properties: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The pass-through properties with secrets resolved. The result holds secret values: hand
    /// it to librdkafka and drop it, never log it.
    pub fn client_properties(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut props = self.properties.clone();
        for (property, source) in &self.secrets {
            let value = source.resolve().map_err(|reason| ConfigError::Secret {
                property: property.clone(),
                reason,
            })?;
            props.insert(property.clone(), value);
        }
        Ok(props)
    }
}

/// Per-message limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Messages larger than this many bytes are rejected as `too_large` before parsing.
    pub max_message_bytes: usize,
    /// Events whose `emitted_at` is older than the watermark minus this are rejected as `late`.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// How often the hot path publishes its cohort snapshot to the admin server and metrics.
    #[serde(with = "humantime_serde")]
    pub publish_interval: Duration,
    /// Dead-letter deliveries allowed in flight before consumption waits for them.
    pub max_dead_letters_in_flight: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_message_bytes: 64 * 1024,
            allowed_lateness: Duration::from_secs(120),
            publish_interval: Duration::from_secs(1),
            max_dead_letters_in_flight: 1000,
        }
    }
}

/// Cohort keying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CohortConfig {
    /// At most this many cohorts are tracked; events of further cohorts are folded into one
    /// overflow cohort and counted.
    pub max_cohorts: usize,
    /// `segment` keys that split cohorts (e.g. `["locale"]`); other segment keys are ignored.
    pub segment_keys: Vec<String>,
}

impl Default for CohortConfig {
    fn default() -> Self {
        CohortConfig {
            max_cohorts: 10_000,
            segment_keys: Vec::new(),
        }
    }
}

/// Rolling-window geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Width of one event-time bucket.
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
    /// Length of the rolling window; a whole multiple of `bucket`.
    #[serde(with = "humantime_serde")]
    pub span: Duration,
    /// A shorter window reported beside the full span (a whole multiple of `bucket`).
    #[serde(with = "humantime_serde")]
    pub recent: Duration,
    /// Number of slabs the score distributions are kept in over the span (quantiles have this
    /// time resolution).
    pub distribution_slabs: usize,
    /// Number of equal-width bins of each score distribution over the metric's range.
    pub distribution_bins: usize,
    /// Half-life, in event time, of the exponentially weighted long-run baseline.
    #[serde(with = "humantime_serde")]
    pub baseline_half_life: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            bucket: Duration::from_secs(10),
            span: Duration::from_secs(3600),
            recent: Duration::from_secs(60),
            distribution_slabs: 12,
            distribution_bins: 100,
            baseline_half_life: Duration::from_secs(6 * 3600),
        }
    }
}

impl WindowConfig {
    /// Number of buckets in the span.
    pub fn buckets(&self) -> usize {
        (self.span.as_millis() / self.bucket.as_millis().max(1)) as usize
    }
}

/// How a metric is computed from its signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Share of events whose boolean signal is true.
    Rate,
    /// Mean and distribution of a numeric signal within `range`.
    Score,
    /// Share of events whose numeric signal is below `below` (or above `above`).
    Tail,
}

/// Which direction of change is harmful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Worse {
    /// An increase is harmful.
    Up,
    /// A decrease is harmful.
    Down,
}

/// One metric tracked per cohort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// Metric name used in metrics labels and the API: 1–32 chars of `[a-z0-9_]`.
    pub name: String,
    /// Name of the event signal it reads (key of the event's `signals` object).
    pub signal: String,
    /// How the signal is turned into the metric.
    pub kind: MetricKind,
    /// Which direction is worse.
    pub worse: Worse,
    /// Declared `[low, high]` range of a numeric signal (required for `score` and `tail`); values
    /// outside it are rejected as `out_of_range`.
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    /// For `tail`: count events whose signal is strictly below this value.
    #[serde(default)]
    pub below: Option<f64>,
    /// For `tail`: count events whose signal is strictly above this value.
    #[serde(default)]
    pub above: Option<f64>,
    /// Smallest worse-direction difference (canary − control, in the metric's units) that can
    /// fail a canary. Default: 0.01 for rates and tails, 2.5% of the range for scores.
    #[serde(default)]
    pub min_effect: Option<f64>,
    /// This metric's share of `detection.alpha` (Bonferroni). Default: `detection.alpha` divided
    /// equally among the metrics that do not set one. The shares may not exceed the budget.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Events per arm before a verdict other than `insufficient`. Default `detection.min_events`.
    #[serde(default)]
    pub min_events: Option<u64>,
    /// Scale τ of the test's normal mixture: the effect size it is most sensitive to.
    /// Default: 2 × `min_effect`.
    #[serde(default)]
    pub mixture_scale: Option<f64>,
    /// Shift the self-baseline CUSUM is tuned to detect. Default: 3 × `min_effect`.
    #[serde(default)]
    pub self_baseline_shift: Option<f64>,
}

impl MetricConfig {
    fn defaults(name: &str, signal: &str, kind: MetricKind, worse: Worse) -> MetricConfig {
        MetricConfig {
            name: name.into(),
            signal: signal.into(),
            kind,
            worse,
            range: None,
            below: None,
            above: None,
            min_effect: None,
            alpha: None,
            min_events: None,
            mixture_scale: None,
            self_baseline_shift: None,
        }
    }

    /// The effective `min_effect`.
    pub fn min_effect(&self) -> f64 {
        self.min_effect.unwrap_or(match (self.kind, self.range) {
            (MetricKind::Score, Some([lo, hi])) => 0.025 * (hi - lo),
            _ => 0.01,
        })
    }

    /// The effective mixture scale τ.
    pub fn mixture_scale(&self) -> f64 {
        self.mixture_scale.unwrap_or(2.0 * self.min_effect())
    }

    /// The effective self-baseline shift.
    pub fn self_baseline_shift(&self) -> f64 {
        self.self_baseline_shift.unwrap_or(3.0 * self.min_effect())
    }
}

fn default_metrics() -> Vec<MetricConfig> {
    vec![
        MetricConfig::defaults("refusal", "refused", MetricKind::Rate, Worse::Up),
        MetricConfig::defaults("escalation", "escalated", MetricKind::Rate, Worse::Up),
        MetricConfig {
            range: Some([-1.0, 1.0]),
            ..MetricConfig::defaults("tone", "tone", MetricKind::Score, Worse::Down)
        },
        MetricConfig {
            range: Some([-1.0, 1.0]),
            below: Some(-0.5),
            min_effect: Some(0.02),
            ..MetricConfig::defaults("tone_tail", "tone", MetricKind::Tail, Worse::Up)
        },
    ]
}

/// Drift detection: canary-vs-control tests, self-baseline change detection, cohort signals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// Family-wise false-`fail` budget of one deployment's canary lifetime, across all metrics
    /// and however often the tests are looked at.
    pub alpha: f64,
    /// Events per arm before a metric's verdict leaves `insufficient` (per-metric override:
    /// `metrics[].min_events`).
    pub min_events: u64,
    /// Expected share of a deployment's events on the canary arm, for the sample-ratio-mismatch
    /// check; unset disables the check (per-deployment override under `deployments`).
    pub canary_share: Option<f64>,
    /// Significance of the sample-ratio-mismatch test (anytime-valid).
    pub srm_alpha: f64,
    /// An arm with no event for this long (in event time, while the other arm keeps sending) is
    /// reported as `telemetry_absent`. Absent data never fails a canary by itself.
    #[serde(with = "humantime_serde")]
    pub absent_after: Duration,
    /// Verdicts of earlier canary versions kept per deployment for the audit trail.
    pub history: usize,
    /// Self-baseline change detection (CUSUM per cohort and metric).
    pub self_baseline: SelfBaselineConfig,
    /// Per-deployment overrides, keyed by deployment name.
    pub deployments: BTreeMap<String, DeploymentDetection>,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            alpha: 0.01,
            min_events: 300,
            canary_share: None,
            srm_alpha: 0.001,
            absent_after: Duration::from_secs(300),
            history: 20,
            self_baseline: SelfBaselineConfig::default(),
            deployments: BTreeMap::new(),
        }
    }
}

/// Self-baseline settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfBaselineConfig {
    /// Run CUSUM change detection on every cohort.
    pub enabled: bool,
    /// Event time a cohort's reference is learned over before monitoring starts...
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// ...and the events it needs at least.
    pub warmup_events: u64,
    /// Expected time between false alarms per cohort and metric; with the cohort's observed
    /// event rate it sets the CUSUM threshold (`h = ln(rate × period)`).
    #[serde(with = "humantime_serde")]
    pub false_alarm_period: Duration,
    /// Verdict state an alarm raises: `fail` (contain) or `warn` (look).
    pub on_alarm: AlarmState,
}

impl Default for SelfBaselineConfig {
    fn default() -> Self {
        SelfBaselineConfig {
            enabled: true,
            warmup: Duration::from_secs(120),
            warmup_events: 1000,
            false_alarm_period: Duration::from_secs(7 * 86_400),
            on_alarm: AlarmState::Fail,
        }
    }
}

/// The verdict a self-baseline alarm raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    /// Fail the metric (containment-worthy).
    Fail,
    /// Warn only.
    Warn,
}

/// Per-deployment detection overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploymentDetection {
    /// Expected canary share for this deployment.
    pub canary_share: Option<f64>,
}

/// Containment settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainmentConfig {
    /// Directory of the latch state (`containment.json`) and the audit log (`audit.log`).
    pub state_dir: PathBuf,
    /// Bearer token of the mutating admin routes (release, contain), from `{ env = … }` or
    /// `{ file = … }`. Unset: those routes answer 403.
    pub admin_token: Option<SecretSource>,
    /// The audit log is rotated when it grows past this many bytes.
    pub audit_max_bytes: u64,
    /// Rotated audit files kept (`audit.log.1` … `audit.log.N`).
    pub audit_keep: usize,
    /// How often active Alertmanager alerts are re-sent.
    #[serde(with = "humantime_serde")]
    pub alert_repeat: Duration,
    /// Runbook link put into alerts.
    pub runbook_url: String,
    /// Base URL under which operators reach this driftd (links in alerts); default
    /// `http://<admin.addr>`.
    pub external_url: String,
    /// Timeout of one action attempt.
    #[serde(with = "humantime_serde")]
    pub action_timeout: Duration,
    /// Retries of one action stop after this long.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// Policies, first match wins per deployment. None: a `fail` contains at the gate and
    /// alerts every alert target.
    pub policies: Vec<PolicyConfig>,
    /// Action targets, referred to by name from policies.
    pub targets: Vec<TargetConfig>,
}

impl Default for ContainmentConfig {
    fn default() -> Self {
        ContainmentConfig {
            state_dir: PathBuf::from("driftd-state"),
            admin_token: None,
            audit_max_bytes: 16 * 1024 * 1024,
            audit_keep: 5,
            alert_repeat: Duration::from_secs(60),
            runbook_url: String::new(),
            external_url: String::new(),
            action_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(60),
            policies: Vec::new(),
            targets: Vec::new(),
        }
    }
}

/// Whether a policy acts or only says what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMode {
    /// Act.
    Enforce,
    /// Log, audit and count every would-be action; change nothing outside driftd.
    DryRun,
}

/// Verdict states a policy can react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerState {
    /// `warn`.
    Warn,
    /// `fail`.
    Fail,
}

/// One policy: which verdicts climb which rung of the ladder, for which deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name, for the audit log.
    pub name: String,
    /// Deployments it covers; `"*"` matches all.
    #[serde(default = "all")]
    pub deployments: Vec<String>,
    /// Metrics whose verdicts it reacts to; `"*"` matches all.
    #[serde(default = "all")]
    pub metrics: Vec<String>,
    /// `enforce` or `dry-run`.
    #[serde(default = "enforce")]
    pub mode: PolicyMode,
    /// Verdict states that alert (rung 2).
    #[serde(default = "fail_only")]
    pub alert_on: Vec<TriggerState>,
    /// Verdict states that contain (rung 3): gate closed, containment targets acted on.
    #[serde(default = "fail_only")]
    pub contain_on: Vec<TriggerState>,
    /// Alert on sample-ratio mismatch and absent telemetry (never contains).
    #[serde(default = "yes")]
    pub alert_on_signals: bool,
    /// Alert targets (names).
    #[serde(default)]
    pub alerts: Vec<String>,
    /// Containment targets (names): flags, rollouts, webhooks.
    #[serde(default)]
    pub contain: Vec<String>,
}

fn all() -> Vec<String> {
    vec!["*".into()]
}
fn enforce() -> PolicyMode {
    PolicyMode::Enforce
}
fn fail_only() -> Vec<TriggerState> {
    vec![TriggerState::Fail]
}
fn yes() -> bool {
    true
}

/// An external system driftd acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetConfig {
    /// Prometheus Alertmanager, API v2.
    Alertmanager {
        /// Name used by policies.
        name: String,
        /// Base URL, e.g. `http://alertmanager:9093`.
        url: String,
    },
    /// PagerDuty Events API v2.
    Pagerduty {
        /// Name used by policies.
        name: String,
        /// Events endpoint.
        #[serde(default = "pagerduty_url")]
        url: String,
        /// Integration (routing) key.
        routing_key: SecretSource,
    },
    /// Slack incoming webhook.
    Slack {
        /// Name used by policies.
        name: String,
        /// The webhook URL (a secret: it authorises posting).
        webhook_url: SecretSource,
    },
    /// Any HTTP endpoint: a JSON body signed with HMAC-SHA256 (`X-Driftd-Signature`).
    Webhook {
        /// Name used by policies.
        name: String,
        /// Endpoint.
        url: String,
        /// HMAC key.
        secret: SecretSource,
    },
    /// An OpenFeature flagd flag-definition file: the flag is switched to its safe variant.
    Flagd {
        /// Name used by policies.
        name: String,
        /// The flag-definition JSON file flagd watches.
        path: PathBuf,
        /// Flag key.
        flag: String,
        /// Variant to serve while contained.
        safe_variant: String,
    },
    /// Unleash admin API: disable the feature in an environment.
    Unleash {
        /// Name used by policies.
        name: String,
        /// Base URL, e.g. `https://unleash.example.com`.
        url: String,
        /// Project id.
        #[serde(default = "default_project")]
        project: String,
        /// Feature name.
        feature: String,
        /// Environment.
        environment: String,
        /// Admin API token.
        token: SecretSource,
    },
    /// LaunchDarkly semantic patch: `turnFlagOff` in an environment.
    Launchdarkly {
        /// Name used by policies.
        name: String,
        /// API base URL.
        #[serde(default = "launchdarkly_url")]
        url: String,
        /// Project key.
        project: String,
        /// Flag key.
        flag: String,
        /// Environment key.
        environment: String,
        /// API access token.
        token: SecretSource,
    },
    /// Argo Rollouts: abort the Rollout through the Kubernetes API.
    ArgoRollouts {
        /// Name used by policies.
        name: String,
        /// Kubernetes API server.
        #[serde(default = "kubernetes_url")]
        api_url: String,
        /// Namespace of the Rollout.
        namespace: String,
        /// Rollout name.
        rollout: String,
        /// Bearer token; default: the in-cluster service-account token file.
        #[serde(default = "service_account_token")]
        token: SecretSource,
        /// CA bundle of the API server; default: the in-cluster service-account CA.
        #[serde(default = "service_account_ca")]
        ca_file: Option<PathBuf>,
    },
}

fn pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}
fn launchdarkly_url() -> String {
    "https://app.launchdarkly.com".into()
}
fn kubernetes_url() -> String {
    "https://kubernetes.default.svc".into()
}
fn default_project() -> String {
    "default".into()
}
fn service_account_token() -> SecretSource {
    SecretSource::File("/var/run/secrets/kubernetes.io/serviceaccount/token".into())
}
fn service_account_ca() -> Option<PathBuf> {
    Some("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into())
}

impl TargetConfig {
    /// The target's name.
    pub fn name(&self) -> &str {
        match self {
            TargetConfig::Alertmanager { name, .. }
            | TargetConfig::Pagerduty { name, .. }
            | TargetConfig::Slack { name, .. }
            | TargetConfig::Webhook { name, .. }
            | TargetConfig::Flagd { name, .. }
            | TargetConfig::Unleash { name, .. }
            | TargetConfig::Launchdarkly { name, .. }
            | TargetConfig::ArgoRollouts { name, .. } => name,
        }
    }

    /// The provider, as a metrics label.
    pub fn provider(&self) -> &'static str {
        match self {
            TargetConfig::Alertmanager { .. } => "alertmanager",
            TargetConfig::Pagerduty { .. } => "pagerduty",
            TargetConfig::Slack { .. } => "slack",
            TargetConfig::Webhook { .. } => "webhook",
            TargetConfig::Flagd { .. } => "flagd",
            TargetConfig::Unleash { .. } => "unleash",
            TargetConfig::Launchdarkly { .. } => "launchdarkly",
            TargetConfig::ArgoRollouts { .. } => "argo_rollouts",
        }
    }

    /// True for targets that notify people (alert rung) rather than change traffic.
    pub fn is_alert(&self) -> bool {
        matches!(
            self,
            TargetConfig::Alertmanager { .. }
                | TargetConfig::Pagerduty { .. }
                | TargetConfig::Slack { .. }
        )
    }
}

/// Admin HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address of `/metrics`, `/healthz`, `/readyz` and `/v1/*`.
    pub addr: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8787)),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines, for terminals.
    Human,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` or `human`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `driftd=debug,rdkafka=warn`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM/SIGINT, the time allowed to finish in-flight work and commit before exit.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            deadline: Duration::from_secs(10),
        }
    }
}

fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every cross-field rule. The single place where a config is judged.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must list at least one host:port"));
        }
        if k.topic.is_empty() || k.topic.len() > 249 {
            return Err(invalid("kafka.topic", "must be 1–249 characters"));
        }
        if k.group_id.is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if k.dead_letter_topic == k.topic {
            return Err(invalid(
                "kafka.dead_letter_topic",
                "must differ from kafka.topic, or rejected events would be consumed again",
            ));
        }
        if k.stats_interval < Duration::from_millis(100) {
            return Err(invalid("kafka.stats_interval", "must be at least 100ms"));
        }
        if k.commit_interval < Duration::from_millis(100) {
            return Err(invalid("kafka.commit_interval", "must be at least 100ms"));
        }
        for key in k.properties.keys() {
            if SECRET_PROPERTIES.contains(&key.as_str()) {
                return Err(invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is a credential: move it to [kafka.secrets] as { env = \"VAR\" } or { file = \"/path\" }",
                ));
            }
            if OWNED_PROPERTIES.contains(&key.as_str()) {
                return Err(invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is set by driftd itself (use kafka.brokers / kafka.group_id; offset storage is fixed for at-least-once)",
                ));
            }
        }
        let i = &self.ingest;
        if !(256..=16 * 1024 * 1024).contains(&i.max_message_bytes) {
            return Err(invalid(
                "ingest.max_message_bytes",
                "must be between 256 and 16777216",
            ));
        }
        if i.allowed_lateness >= self.windows.span {
            return Err(invalid(
                "ingest.allowed_lateness",
                "must be shorter than windows.span, or late events could not land in a bucket",
            ));
        }
        if i.publish_interval < Duration::from_millis(50) {
            return Err(invalid("ingest.publish_interval", "must be at least 50ms"));
        }
        if i.max_dead_letters_in_flight == 0 {
            return Err(invalid(
                "ingest.max_dead_letters_in_flight",
                "must be at least 1",
            ));
        }
        if self.cohorts.max_cohorts == 0 {
            return Err(invalid("cohorts.max_cohorts", "must be at least 1"));
        }
        for (n, key) in self.cohorts.segment_keys.iter().enumerate() {
            if key.is_empty() || key.len() > 64 {
                return Err(invalid(
                    format!("cohorts.segment_keys[{n}]"),
                    "must be 1–64 characters",
                ));
            }
            if self.cohorts.segment_keys[..n].contains(key) {
                return Err(invalid(
                    format!("cohorts.segment_keys[{n}]"),
                    format!("`{key}` is listed twice"),
                ));
            }
        }
        self.validate_windows()?;
        self.validate_metrics()?;
        self.validate_detection()?;
        self.validate_containment()?;
        if self.shutdown.deadline.is_zero() {
            return Err(invalid("shutdown.deadline", "must be longer than zero"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                "is not a tracing filter (try `info` or `driftd=debug,warn`)",
            ));
        }
        Ok(())
    }

    fn validate_windows(&self) -> Result<(), ConfigError> {
        let w = &self.windows;
        let bucket = w.bucket.as_millis();
        if bucket < 100 {
            return Err(invalid("windows.bucket", "must be at least 100ms"));
        }
        for (field, d) in [("windows.span", w.span), ("windows.recent", w.recent)] {
            if d.as_millis() % bucket != 0 || d.as_millis() < bucket {
                return Err(invalid(
                    field,
                    "must be a whole, non-zero multiple of windows.bucket",
                ));
            }
        }
        if w.buckets() > 100_000 {
            return Err(invalid(
                "windows.span",
                "holds more than 100000 buckets; widen windows.bucket",
            ));
        }
        if w.recent > w.span {
            return Err(invalid("windows.recent", "must not exceed windows.span"));
        }
        if w.distribution_slabs == 0 || w.distribution_slabs > w.buckets() {
            return Err(invalid(
                "windows.distribution_slabs",
                "must be between 1 and the number of buckets in the span",
            ));
        }
        if !(2..=10_000).contains(&w.distribution_bins) {
            return Err(invalid(
                "windows.distribution_bins",
                "must be between 2 and 10000",
            ));
        }
        if w.baseline_half_life < w.bucket {
            return Err(invalid(
                "windows.baseline_half_life",
                "must be at least one windows.bucket",
            ));
        }
        Ok(())
    }

    fn validate_metrics(&self) -> Result<(), ConfigError> {
        if self.metrics.is_empty() {
            return Err(invalid("metrics", "must define at least one metric"));
        }
        if self.metrics.len() > 32 {
            return Err(invalid("metrics", "at most 32 metrics are supported"));
        }
        for (n, m) in self.metrics.iter().enumerate() {
            let field = |f: &str| format!("metrics[{n}].{f}");
            if !is_name(&m.name, 32) {
                return Err(invalid(field("name"), "must be 1–32 chars of [a-z0-9_]"));
            }
            if self.metrics[..n].iter().any(|o| o.name == m.name) {
                return Err(invalid(
                    field("name"),
                    format!("`{}` is defined twice", m.name),
                ));
            }
            if !is_name(&m.signal, 64) {
                return Err(invalid(field("signal"), "must be 1–64 chars of [a-z0-9_]"));
            }
            match m.kind {
                MetricKind::Rate => {
                    if m.range.is_some() || m.below.is_some() || m.above.is_some() {
                        return Err(invalid(
                            field("kind"),
                            "a `rate` reads a boolean signal and takes no range, below or above",
                        ));
                    }
                }
                MetricKind::Score | MetricKind::Tail => {
                    let Some([lo, hi]) = m.range else {
                        return Err(invalid(
                            field("range"),
                            "is required for score and tail metrics, e.g. [-1.0, 1.0]",
                        ));
                    };
                    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                        return Err(invalid(
                            field("range"),
                            "must be [low, high] with low < high",
                        ));
                    }
                    if m.kind == MetricKind::Score && (m.below.is_some() || m.above.is_some()) {
                        return Err(invalid(
                            field("kind"),
                            "a `score` takes no below/above; use kind = \"tail\" for a tail rate",
                        ));
                    }
                    if m.kind == MetricKind::Tail {
                        match (m.below, m.above) {
                            (Some(t), None) | (None, Some(t)) if t.is_finite() => {}
                            _ => {
                                return Err(invalid(
                                    field("below"),
                                    "a tail metric needs exactly one finite `below` or `above`",
                                ))
                            }
                        }
                    }
                }
            }
            for other in &self.metrics[..n] {
                if other.signal != m.signal {
                    continue;
                }
                let numeric = |k: MetricKind| k != MetricKind::Rate;
                if numeric(other.kind) != numeric(m.kind) {
                    return Err(invalid(
                        field("signal"),
                        format!(
                            "`{}` is read as boolean by one metric and as number by another",
                            m.signal
                        ),
                    ));
                }
                if numeric(m.kind) && other.range != m.range {
                    return Err(invalid(
                        field("range"),
                        format!(
                            "differs from metric `{}` on the same signal `{}`",
                            other.name, m.signal
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_detection(&self) -> Result<(), ConfigError> {
        let d = &self.detection;
        let prob = |x: f64| x > 0.0 && x < 1.0;
        if !prob(d.alpha) {
            return Err(invalid(
                "detection.alpha",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if !prob(d.srm_alpha) {
            return Err(invalid(
                "detection.srm_alpha",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if d.min_events < 10 {
            return Err(invalid(
                "detection.min_events",
                "must be at least 10 (the tests rely on the CLT)",
            ));
        }
        let share_ok = |s: Option<f64>| s.is_none_or(prob);
        if !share_ok(d.canary_share) {
            return Err(invalid(
                "detection.canary_share",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        for (name, o) in &d.deployments {
            if !share_ok(o.canary_share) {
                return Err(invalid(
                    format!("detection.deployments.{name}.canary_share"),
                    "must be between 0 and 1 (exclusive)",
                ));
            }
        }
        if d.absent_after < self.windows.bucket {
            return Err(invalid(
                "detection.absent_after",
                "must be at least one windows.bucket",
            ));
        }
        let sb = &d.self_baseline;
        if sb.warmup_events < 30 {
            return Err(invalid(
                "detection.self_baseline.warmup_events",
                "must be at least 30",
            ));
        }
        if sb.false_alarm_period < Duration::from_secs(60) {
            return Err(invalid(
                "detection.self_baseline.false_alarm_period",
                "must be at least 1m",
            ));
        }
        let mut explicit = 0.0;
        for (n, m) in self.metrics.iter().enumerate() {
            let field = |f: &str| format!("metrics[{n}].{f}");
            if let Some(a) = m.alpha {
                if !prob(a) {
                    return Err(invalid(
                        field("alpha"),
                        "must be between 0 and 1 (exclusive)",
                    ));
                }
                explicit += a;
            }
            for (f, v) in [
                ("min_effect", m.min_effect),
                ("mixture_scale", m.mixture_scale),
                ("self_baseline_shift", m.self_baseline_shift),
            ] {
                if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                    return Err(invalid(field(f), "must be a positive number"));
                }
            }
            if m.kind != MetricKind::Score && m.min_effect() >= 1.0 {
                return Err(invalid(
                    field("min_effect"),
                    "a rate difference must be below 1",
                ));
            }
            if m.min_events.is_some_and(|e| e < 10) {
                return Err(invalid(field("min_events"), "must be at least 10"));
            }
        }
        let implicit = self.metrics.iter().filter(|m| m.alpha.is_none()).count();
        if explicit > d.alpha * (1.0 + 1e-9) || (implicit > 0 && explicit >= d.alpha) {
            return Err(invalid(
                "metrics[].alpha",
                format!(
                    "the per-metric alphas add up to {explicit}, leaving nothing of detection.alpha = {} for the rest",
                    d.alpha
                ),
            ));
        }
        Ok(())
    }

    fn validate_containment(&self) -> Result<(), ConfigError> {
        let c = &self.containment;
        if c.state_dir.as_os_str().is_empty() {
            return Err(invalid("containment.state_dir", "must name a directory"));
        }
        if c.audit_max_bytes < 4096 {
            return Err(invalid(
                "containment.audit_max_bytes",
                "must be at least 4096",
            ));
        }
        if c.alert_repeat < Duration::from_secs(1) {
            return Err(invalid("containment.alert_repeat", "must be at least 1s"));
        }
        if c.action_timeout.is_zero() || c.retry_for < c.action_timeout {
            return Err(invalid(
                "containment.retry_for",
                "must be at least containment.action_timeout (and that longer than zero)",
            ));
        }
        let mut names: Vec<&str> = Vec::new();
        for (n, t) in c.targets.iter().enumerate() {
            let name = t.name();
            if name.is_empty() || names.contains(&name) {
                return Err(invalid(
                    format!("containment.targets[{n}].name"),
                    "must be non-empty and unique",
                ));
            }
            names.push(name);
            let url = match t {
                TargetConfig::Alertmanager { url, .. }
                | TargetConfig::Pagerduty { url, .. }
                | TargetConfig::Webhook { url, .. }
                | TargetConfig::Unleash { url, .. }
                | TargetConfig::Launchdarkly { url, .. } => Some(url),
                TargetConfig::ArgoRollouts { api_url, .. } => Some(api_url),
                TargetConfig::Slack { .. } | TargetConfig::Flagd { .. } => None,
            };
            if let Some(u) = url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(invalid(
                        format!("containment.targets[{n}]"),
                        "URL must start with http:// or https://",
                    ));
                }
            }
        }
        for (n, p) in c.policies.iter().enumerate() {
            for (field, list, want_alert) in
                [("alerts", &p.alerts, true), ("contain", &p.contain, false)]
            {
                for name in list {
                    let Some(t) = c.targets.iter().find(|t| t.name() == name) else {
                        return Err(invalid(
                            format!("containment.policies[{n}].{field}"),
                            format!("no target named `{name}` in containment.targets"),
                        ));
                    };
                    if want_alert && !t.is_alert() && !matches!(t, TargetConfig::Webhook { .. }) {
                        return Err(invalid(
                            format!("containment.policies[{n}].alerts"),
                            format!("`{name}` is a {} target, not an alert target; list it under contain", t.provider()),
                        ));
                    }
                    if !want_alert && t.is_alert() {
                        return Err(invalid(
                            format!("containment.policies[{n}].contain"),
                            format!("`{name}` is an alert target; list it under alerts"),
                        ));
                    }
                }
            }
            if p.deployments.is_empty() || p.metrics.is_empty() {
                return Err(invalid(
                    format!("containment.policies[{n}]"),
                    "deployments and metrics must not be empty (use [\"*\"] for all)",
                ));
            }
        }
        Ok(())
    }

    /// Each metric's share of the family-wise budget, in config order (Bonferroni: they add up
    /// to at most `detection.alpha`).
    pub fn metric_alphas(&self) -> Vec<f64> {
        let explicit: f64 = self.metrics.iter().filter_map(|m| m.alpha).sum();
        let implicit = self
            .metrics
            .iter()
            .filter(|m| m.alpha.is_none())
            .count()
            .max(1);
        let share = (self.detection.alpha - explicit) / implicit as f64;
        self.metrics
            .iter()
            .map(|m| m.alpha.unwrap_or(share))
            .collect()
    }

    /// The expected canary share of a deployment, if the SRM check applies to it.
    pub fn canary_share(&self, deployment: &str) -> Option<f64> {
        self.detection
            .deployments
            .get(deployment)
            .and_then(|o| o.canary_share)
            .or(self.detection.canary_share)
    }

    /// A short, stable hash of the effective config, exported as a metric so operators can see
    /// which config each instance runs. Secrets are references here, never values.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Names of settings that differ from `new` and only take effect on restart.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.kafka != new.kafka {
            changed.push("kafka");
        }
        if self.cohorts != new.cohorts {
            changed.push("cohorts");
        }
        if self.windows != new.windows {
            changed.push("windows");
        }
        if self.metrics != new.metrics {
            changed.push("metrics");
        }
        if self.detection != new.detection {
            changed.push("detection");
        }
        if self.containment != new.containment {
            changed.push("containment");
        }
        if self.admin != new.admin {
            changed.push("admin");
        }
        if self.log.format != new.log.format {
            changed.push("log.format");
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.kafka.topic, "llm.generation.events");
        assert_eq!(c.ingest.max_message_bytes, 65536);
        assert_eq!(c.cohorts.max_cohorts, 10_000);
        assert_eq!(c.windows.buckets(), 360);
        assert_eq!(c.metrics.len(), 4);
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = Config::parse("[kafka]\nbrokerz = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("brokerz"), "{err}");
    }

    #[test]
    fn inline_secret_is_refused() {
        let err =
            Config::parse("[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("sasl.password") && msg.contains("kafka.secrets"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"));
    }

    #[test]
    fn span_must_be_multiple_of_bucket() {
        let err = Config::parse("[windows]\nbucket = \"7s\"\nspan = \"1h\"\n").unwrap_err();
        assert!(err.to_string().contains("windows.span"), "{err}");
    }

    #[test]
    fn tail_metric_needs_a_threshold() {
        let toml = r#"
[[metrics]]
name = "t"
signal = "tone"
kind = "tail"
worse = "up"
range = [-1.0, 1.0]
"#;
        let err = Config::parse(toml).unwrap_err();
        assert!(err.to_string().contains("metrics[0].below"), "{err}");
    }

    #[test]
    fn secrets_resolve_from_env_and_file_without_leaking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut k = KafkaConfig::default();
        k.secrets
            .insert("sasl.password".into(), SecretSource::File(file.clone()));
        assert_eq!(k.client_properties().unwrap()["sasl.password"], "s3cret");
        k.secrets.insert(
            "ssl.key.password".into(),
            SecretSource::Env("DRIFTD_TEST_UNSET_VAR".into()),
        );
        let err = k.client_properties().unwrap_err().to_string();
        assert!(err.contains("ssl.key.password") && err.contains("DRIFTD_TEST_UNSET_VAR"));
        assert!(format!("{:?}", k).contains("file:"));
    }

    #[test]
    fn alpha_budget_is_split_and_checked() {
        let c = Config::default();
        let alphas = c.metric_alphas();
        assert_eq!(alphas.len(), 4);
        assert!((alphas.iter().sum::<f64>() - 0.01).abs() < 1e-12);
        let err = Config::parse(
            "[detection]\nalpha = 0.01\n[[metrics]]\nname = \"r\"\nsignal = \"refused\"\nkind = \"rate\"\nworse = \"up\"\nalpha = 0.02\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("metrics[].alpha"), "{err}");
    }

    #[test]
    fn hash_changes_with_config() {
        let a = Config::default();
        let mut b = Config::default();
        b.ingest.max_message_bytes = 1024;
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash(), Config::default().hash());
    }
}
