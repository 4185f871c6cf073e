//! The `driftd` binary: parses the command line, sets up logging, loads config and runs the
//! chosen command. Everything else lives in the library.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use driftd::config::{Config, ConfigError, SecretSource};
use driftd::metrics::Metrics;
use driftd::pipeline::Pipeline;
use driftd::traffic::{Drift, DriftMetric, Pace, Sender, TrafficModel};

#[derive(Parser)]
#[command(
    name = "driftd",
    version,
    about = "Drift containment daemon for LLM canary rollouts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: consume events from Kafka, keep baselines, serve metrics.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Validate a config file and print the effective config hash.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Run the pipeline over JSON-lines events from a file or stdin; print one JSON line per cohort.
    Replay {
        #[command(flatten)]
        config: ConfigArgs,
        /// Input file, or `-` for stdin.
        #[arg(long, default_value = "-")]
        input: String,
    },
    /// Produce synthetic events to Kafka (or JSON lines to a file with --output).
    Gen(GenArgs),
    /// Detection benchmark: false-alarm rate and detection delay of the real detectors on
    /// generated canary lifetimes, beside fixed-window and naive-threshold rules.
    Simulate {
        /// Config whose detection settings are benchmarked (defaults without one).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Lifetimes per drift scenario.
        #[arg(long, default_value_t = 2000)]
        runs: usize,
        /// Lifetimes of the A/A scenario (10,000 or more to read a family-wise rate near 0.01).
        #[arg(long, default_value_t = 2000)]
        aa_runs: usize,
        /// Events per arm per lifetime.
        #[arg(long, default_value_t = 50_000)]
        events_per_arm: u64,
        /// Seed of the first lifetime.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Only the scenarios whose name contains this (e.g. "segments").
        #[arg(long)]
        only: Option<String>,
        /// Also write the full report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Ask a running driftd to release a contained deployment; it takes effect once the
    /// policy's approvers approved it (an approver's request is its approval).
    Release(OperatorArgs),
    /// Contain a deployment by hand (asks a running driftd).
    Contain(OperatorArgs),
    /// Approve the pending release of a deployment, or promoting its canary version.
    Approve(ApproveArgs),
    /// Show the identity and roles a running driftd gives your token.
    Whoami(ClientArgs),
    /// Write one incident's post-incident report (timeline, evidence at each decision, actions,
    /// release, config hash) from a running driftd's audit log or from the audit files.
    Report(ReportArgs),
    /// Run the whole daemon on an in-process Kafka with a drifting canary.
    Demo {
        /// How long to produce traffic.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Events per second.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        /// Admin server address (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8787")]
        admin_addr: SocketAddr,
        /// Fraction of the run after which the canary drifts.
        #[arg(long, default_value_t = 0.4)]
        drift_at: f64,
        /// Random seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

#[derive(Args)]
struct ConfigArgs {
    /// Config file (TOML). Every key has a default, so it is optional.
    #[arg(long, env = "DRIFTD_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides kafka.brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Overrides kafka.topic.
    #[arg(long)]
    topic: Option<String>,
    /// Overrides kafka.group_id.
    #[arg(long)]
    group: Option<String>,
    /// Overrides admin.addr.
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(b) = &self.brokers {
            config.kafka.brokers = b.clone();
        }
        if let Some(t) = &self.topic {
            config.kafka.topic = t.clone();
        }
        if let Some(g) = &self.group {
            config.kafka.group_id = g.clone();
        }
        if let Some(a) = self.admin_addr {
            config.admin.addr = a;
        }
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args)]
struct ClientArgs {
    /// Base URL of the driftd admin server.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    admin_url: String,
    /// File holding your bearer token (of `admin.operators`, or the admin token); default: the
    /// DRIFTD_ADMIN_TOKEN environment variable.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Args)]
struct OperatorArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The deployment.
    #[arg(long)]
    deployment: String,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    /// A comment naming who is asking; the audit log records the identity of the token.
    #[arg(long)]
    operator: Option<String>,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["release", "promotion"]))]
struct ApproveArgs {
    #[command(flatten)]
    request: OperatorArgs,
    /// Approve the pending release.
    #[arg(long)]
    release: bool,
    /// Approve promoting the canary version.
    #[arg(long)]
    promotion: bool,
    /// With --promotion: the canary version you looked at (refused if driftd now sees another);
    /// default: the one driftd sees.
    #[arg(long, requires = "promotion")]
    model_version: Option<String>,
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The deployment.
    #[arg(long)]
    deployment: String,
    /// The incident (`deployment:version`); default: the deployment's latest.
    #[arg(long)]
    incident: Option<String>,
    /// Read this audit log (`audit.log` under `containment.state_dir`, with its rotated
    /// generations) instead of asking the admin server.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Markdown to paste into a review, or one standalone HTML page.
    #[arg(long, value_enum, default_value = "md")]
    format: ReportFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    /// Markdown.
    Md,
    /// HTML.
    Html,
}

#[derive(Args)]
struct GenArgs {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to produce to.
    #[arg(long, default_value = "llm.generation.events")]
    topic: String,
    /// Events per second (0 = as fast as possible).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Produce for this long (at --rate); ignored when --count is given.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Number of events.
    #[arg(long)]
    count: Option<u64>,
    /// Number of deployments.
    #[arg(long, default_value_t = 2)]
    deployments: usize,
    /// Share of traffic on the canary arm.
    #[arg(long, default_value_t = 0.5)]
    canary_share: f64,
    /// Metric that drifts in the canary arm.
    #[arg(long, value_enum)]
    drift_metric: Option<DriftMetric>,
    /// New rate (refusal, escalation) or mean shift (tone).
    #[arg(long, default_value_t = 0.10)]
    drift_to: f64,
    /// Fraction of the events after which the drift starts.
    #[arg(long, default_value_t = 0.5)]
    drift_at: f64,
    /// How many deployments drift (the first N).
    #[arg(long, default_value_t = 1)]
    drift_deployments: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write JSON lines here (`-` = stdout) instead of producing to Kafka; event time then
    /// advances by 1/rate per event from --start.
    #[arg(long)]
    output: Option<String>,
    /// First event time for --output (RFC 3339); default now.
    #[arg(long)]
    start: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("driftd: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config } => run(config),
        Command::Replay { config, input } => replay(config, &input),
        Command::Gen(args) => generate(args),
        Command::Release(args) => operator_request(&args, "release", None),
        Command::Contain(args) => operator_request(&args, "contain", None),
        Command::Approve(a) => match a.release {
            true => operator_request(&a.request, "release/approve", None),
            false => operator_request(&a.request, "promotion/approve", a.model_version),
        },
        Command::Whoami(client) => whoami(&client),
        Command::Report(args) => report(&args),
        Command::Simulate {
            config,
            runs,
            aa_runs,
            events_per_arm,
            seed,
            threads,
            only,
            json,
        } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            let opts = driftd::simulate::SimOptions {
                runs,
                aa_runs,
                events_per_arm,
                seed,
                threads,
                only,
                ..driftd::simulate::SimOptions::default()
            };
            let report = driftd::simulate::run(&config, &opts);
            print!("{}", driftd::simulate::markdown(&report));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            duration,
            rate,
            admin_addr,
            drift_at,
            seed,
        } => {
            driftd::logging::init(&driftd::config::LogConfig {
                format: driftd::config::LogFormat::Human,
                level: "error".into(),
            });
            let opts = driftd::demo::DemoOptions {
                duration,
                rate,
                admin_addr,
                drift_at,
                seed,
            };
            runtime()?.block_on(driftd::demo::run(opts, &mut std::io::stdout()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check_config(file: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(file) {
        Ok(c) => {
            println!("{}: ok (config hash {})", file.display(), c.hash());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("driftd: {}", driftd::logging::chain(&e));
            Ok(ExitCode::from(2))
        }
    }
}

fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    driftd::logging::init(&config.log);
    let rt = runtime()?;
    let metrics = Arc::new(Metrics::new(&config));
    let deadline = config.shutdown.deadline;
    let controls = driftd::signals::install(
        config.clone(),
        move || args.load(),
        metrics.clone(),
        deadline,
    )
    .context("cannot install signal handlers")?;
    rt.block_on(async {
        let listener = driftd::admin::bind(config.admin.addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "admin server listening");
        let pipeline = Pipeline::new(&config, metrics.clone(), true);
        driftd::daemon::run(config, metrics, pipeline, listener, controls).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

impl ClientArgs {
    /// The token, read the way the server reads its own, so the same file works on both sides.
    fn token(&self) -> anyhow::Result<String> {
        let source = match &self.token_file {
            Some(f) => SecretSource::File(f.clone()),
            None => SecretSource::Env("DRIFTD_ADMIN_TOKEN".into()),
        };
        source
            .resolve()
            .map_err(anyhow::Error::msg)
            .context("give --token-file or set DRIFTD_ADMIN_TOKEN")
    }

    /// Sends `request` with the token; prints the body; exit 1 unless 2xx.
    fn send(
        &self,
        what: &str,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<ExitCode> {
        let token = self.token()?;
        let (status, body) = runtime()?.block_on(async {
            let resp = request
                .bearer_auth(&token)
                .send()
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            anyhow::Ok((resp.status(), resp.text().await.unwrap_or_default()))
        })?;
        println!("{body}");
        if status.is_success() {
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("driftd: {what} refused: HTTP {status}");
            Ok(ExitCode::from(1))
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.admin_url.trim_end_matches('/'))
    }
}

fn operator_request(
    a: &OperatorArgs,
    action: &str,
    model_version: Option<String>,
) -> anyhow::Result<ExitCode> {
    let url = a
        .client
        .url(&format!("/v1/deployments/{}/{action}", a.deployment));
    let mut body = serde_json::json!({"reason": a.reason});
    if let Some(o) = &a.operator {
        body["operator"] = o.as_str().into();
    }
    if let Some(v) = model_version {
        body["model_version"] = v.into();
    }
    let request = reqwest::Client::new().post(&url).json(&body);
    a.client.send(action, &url, request)
}

fn whoami(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let url = client.url("/v1/whoami");
    client.send("whoami", &url, reqwest::Client::new().get(&url))
}

fn report(a: &ReportArgs) -> anyhow::Result<ExitCode> {
    use driftd::report;
    let records = match &a.audit_log {
        Some(path) => report::source::read_files(path)?,
        None => {
            let token = a.client.token()?;
            runtime()?.block_on(report::source::fetch(&a.client.admin_url, &token))?
        }
    };
    let doc = report::build(
        &records,
        &a.deployment,
        a.incident.as_deref(),
        &a.client.admin_url,
    )?;
    print!(
        "{}",
        match a.format {
            ReportFormat::Md => report::render::markdown(&doc),
            ReportFormat::Html => report::render::html(&doc),
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn replay(args: ConfigArgs, input: &str) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    driftd::logging::init(&config.log);
    let metrics = Arc::new(Metrics::new(&config));
    let (mut pipeline, _snapshots) = Pipeline::new(&config, metrics, false);
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(input).with_context(|| format!("cannot open {input}"))?;
        Box::new(std::io::BufReader::new(file))
    };
    let summary = driftd::ingest::replay::replay(&mut pipeline, reader, std::io::stdout().lock())?;
    eprintln!("{}", serde_json::to_string(&summary)?);
    Ok(ExitCode::SUCCESS)
}

fn generate(a: GenArgs) -> anyhow::Result<ExitCode> {
    let model = TrafficModel {
        deployments: a.deployments,
        canary_share: a.canary_share,
        drift: a
            .drift_metric
            .map(|metric| Drift {
                metric,
                to: a.drift_to,
                at: a.drift_at,
                deployments: a.drift_deployments,
            })
            .into_iter()
            .collect(),
        seed: a.seed,
        ..TrafficModel::default()
    };
    let count = match (a.count, a.duration) {
        (Some(c), _) => c,
        (None, Some(d)) => (d.as_secs_f64() * a.rate).round() as u64,
        (None, None) => anyhow::bail!("give --count or --duration"),
    };
    if let Some(output) = a.output {
        let start_ms = match &a.start {
            Some(s) => driftd::event::parse_rfc3339_ms(s)
                .context("--start must be RFC 3339, e.g. 2026-11-29T05:00:00Z")?,
            None => driftd::clock::wall_ms(),
        };
        if output == "-" {
            driftd::traffic::write_lines(
                model,
                count,
                a.rate,
                start_ms,
                &mut std::io::stdout().lock(),
            )?;
        } else {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&output)
                    .with_context(|| format!("cannot create {output}"))?,
            );
            driftd::traffic::write_lines(model, count, a.rate, start_ms, &mut f)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    driftd::logging::init(&driftd::config::LogConfig::default());
    let sent = runtime()?.block_on(async {
        let mut sender = Sender::new(&a.brokers, &a.topic, &[])?;
        driftd::traffic::produce(
            model,
            Pace {
                rate: a.rate,
                count,
            },
            &mut sender,
        )
        .await;
        sender.finish().await
    })?;
    eprintln!(
        "driftd gen: {sent} events acknowledged by {} on {}",
        a.brokers, a.topic
    );
    Ok(ExitCode::SUCCESS)
}
