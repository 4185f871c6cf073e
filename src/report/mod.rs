//! `driftd report`: one incident's story for the post-incident review, from the audit log.
//!
//! Owns picking an incident's records out of the audit log ([`build`]), the document they make
//! (summary, timeline, the evidence at each decision, what each action did, the release, the
//! config hash in force) and its two spellings, Markdown and standalone HTML ([`render`]). The
//! records come from the admin API or the audit files ([`source`]); the same document results
//! either way.
//!
//! Read-only: it must not change containment, call a target, or show anything the audit log does
//! not hold — the log holds verdict evidence and operator input, never event payloads, so neither
//! does a report. Every string from the log is escaped for the format it is written in.

pub mod render;
pub mod source;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::contain::providers::release_command;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The log has no incident of that deployment.
    #[error(
        "the audit log has no incident of deployment `{deployment}`: check the name against \
         /v1/deployments, or give the audit.log of the driftd that contained it"
    )]
    NoIncident {
        /// The deployment asked for.
        deployment: String,
    },
    /// The log has incidents of the deployment, but not that one.
    #[error(
        "the audit log has no incident `{incident}` of deployment `{deployment}`; its incidents \
         are: {found} (leave out --incident for the latest)"
    )]
    UnknownIncident {
        /// The deployment asked for.
        deployment: String,
        /// The incident asked for.
        incident: String,
        /// The incidents the log has, comma-separated.
        found: String,
    },
    /// An audit file could not be read.
    #[error("cannot read the audit log {path}: {source}; give the audit.log under containment.state_dir")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The admin API did not answer with audit records.
    #[error("cannot read the audit log from {url}: {detail}; check --admin-url and that your token has the viewer role")]
    Api {
        /// The URL asked.
        url: String,
        /// What went wrong.
        detail: String,
    },
}

/// A format-neutral document: what the report says, before it is spelled as Markdown or HTML.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The title.
    pub title: String,
    /// The sections, in order.
    pub sections: Vec<Section>,
}

/// One section of a [`Document`].
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Its heading.
    pub heading: String,
    /// Its content, in order.
    pub blocks: Vec<Block>,
}

/// A piece of a [`Section`].
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A paragraph of plain text.
    Para(String),
    /// A table: header cells, then rows of cells.
    Table(Vec<String>, Vec<Vec<String>>),
    /// Text shown verbatim (a command to run).
    Code(String),
}

/// The deployment a record is about, if it names one.
fn deployment_of(r: &Value) -> Option<&str> {
    r.get("deployment")
        .or_else(|| r.pointer("/transition/deployment"))
        .and_then(Value::as_str)
}

/// The incident a record belongs to, if it names one. Action keys are
/// `{incident}/{target}/{op}`, so a failed action's alert belongs to the key's incident.
fn incident_of(r: &Value) -> Option<&str> {
    let s = |p: &str| r.pointer(p).and_then(Value::as_str);
    match s("/event")? {
        "transition" => s("/transition/incident"),
        "action" => s("/incident"),
        "approval" if s("/kind") == Some("release") => s("/subject"),
        "action_failure_alert" => s("/failed").and_then(|k| k.split('/').next()),
        _ => None,
    }
}

fn seq(r: &Value) -> u64 {
    r.get("seq").and_then(Value::as_u64).unwrap_or(0)
}

fn text<'a>(r: &'a Value, pointer: &str) -> &'a str {
    r.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// `a` to `b` as an operator reads it: milliseconds under a second, then seconds, minutes.
fn span(a: &str, b: &str) -> Option<String> {
    let ms = (parse_time(b)? - parse_time(a)?).whole_milliseconds();
    Some(duration_ms(ms.max(0) as u64))
}

fn duration_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=119_999 => format!("{:.1} s", ms as f64 / 1e3),
        _ => format!("{:.1} min", ms as f64 / 60e3),
    }
}

/// The records of `incident` (default: the deployment's latest) and the operator records of the
/// deployment between its first and last record, plus config reloads in that span: everything
/// a reviewer needs, in `seq` order.
fn select<'a>(
    records: &'a [Value],
    deployment: &str,
    incident: Option<&str>,
) -> Result<(String, Vec<&'a Value>), ReportError> {
    let mut incidents: Vec<&str> = Vec::new();
    for r in records {
        if deployment_of(r) == Some(deployment) && r["event"] == "transition" {
            if let Some(i) = incident_of(r) {
                if !incidents.contains(&i) {
                    incidents.push(i);
                }
            }
        }
    }
    let chosen = match incident {
        Some(i) if incidents.contains(&i) => i,
        Some(i) => {
            return Err(ReportError::UnknownIncident {
                deployment: deployment.into(),
                incident: i.into(),
                found: if incidents.is_empty() {
                    "none".into()
                } else {
                    incidents.join(", ")
                },
            })
        }
        None => *incidents.last().ok_or_else(|| ReportError::NoIncident {
            deployment: deployment.into(),
        })?,
    };
    let own: Vec<u64> = records
        .iter()
        .filter(|r| incident_of(r) == Some(chosen))
        .map(seq)
        .collect();
    let first = own.iter().copied().min().unwrap_or(0);
    // An incident still open runs to the end of the log.
    let released = records.iter().any(|r| {
        incident_of(r) == Some(chosen)
            && r["event"] == "transition"
            && r.pointer("/transition/to") == Some(&Value::from("released"))
    });
    let last = if released {
        own.iter().copied().max().unwrap_or(u64::MAX)
    } else {
        u64::MAX
    };
    let within = |r: &Value| (first..=last).contains(&seq(r));
    let mut chosen_records: Vec<&Value> = records
        .iter()
        .filter(|r| {
            incident_of(r) == Some(chosen)
                || (within(r)
                    && incident_of(r).is_none()
                    && (deployment_of(r) == Some(deployment) || r["event"] == "config_reload"))
        })
        .collect();
    chosen_records.sort_by_key(|r| seq(r));
    Ok((chosen.to_string(), chosen_records))
}

/// One timeline row: time, seq, what, who, detail.
fn timeline_row(r: &Value) -> Vec<String> {
    let at = text(r, "/at").to_string();
    let (what, who, detail) = match text(r, "/event") {
        "transition" => (
            format!(
                "decision: {} → {}",
                text(r, "/transition/from"),
                text(r, "/transition/to")
            ),
            r.pointer("/transition/operator")
                .and_then(Value::as_str)
                .unwrap_or("driftd")
                .to_string(),
            text(r, "/transition/why").to_string(),
        ),
        "action" => {
            let detail = match text(r, "/result") {
                "dry_run" => "dry run: not attempted".to_string(),
                result => {
                    let mut d = format!(
                        "{result}, attempt {}, {} after the decision",
                        r["attempt"].as_u64().unwrap_or(0),
                        duration_ms(r["elapsed_ms"].as_u64().unwrap_or(0))
                    );
                    if let Some(e) = r["error"].as_str() {
                        d.push_str(&format!(": {e}"));
                    }
                    d
                }
            };
            (
                format!(
                    "action: {} {} ({})",
                    text(r, "/op"),
                    text(r, "/target"),
                    text(r, "/provider")
                ),
                "driftd".into(),
                detail,
            )
        }
        "approval" => (
            format!("{} approval: {}", text(r, "/kind"), text(r, "/step")),
            r["identity"].as_str().unwrap_or("(lapsed)").to_string(),
            format!(
                "{} of {} approvals{}",
                r["approved_by"].as_array().map_or(0, Vec::len),
                r["needed"].as_u64().unwrap_or(0),
                r["reason"]
                    .as_str()
                    .map(|x| format!("; reason: {x}"))
                    .unwrap_or_default()
            ),
        ),
        "request_refused" => (
            format!("{} refused", text(r, "/request")),
            text(r, "/operator").to_string(),
            text(r, "/error").to_string(),
        ),
        "stale" => (
            format!(
                "stale {}{}",
                text(r, "/kind"),
                if r["held"] == true {
                    ", held"
                } else {
                    ", not acted on"
                }
            ),
            "driftd".into(),
            format!(
                "event time {} was {:.0} s behind (max {:.0} s)",
                text(r, "/at"),
                r["age_seconds"].as_f64().unwrap_or(0.0),
                r["max_evidence_age_seconds"].as_f64().unwrap_or(0.0)
            ),
        ),
        "config_reload" => (
            format!("config reload: {}", text(r, "/outcome")),
            "operator".into(),
            r["detail"]
                .as_str()
                .or(r["loaded_hash"].as_str())
                .unwrap_or("")
                .to_string(),
        ),
        "action_failure_alert" => (
            "action failed for good: alerted".into(),
            "driftd".into(),
            format!("{}: {}", text(r, "/failed"), text(r, "/error")),
        ),
        other => (other.to_string(), String::new(), String::new()),
    };
    vec![at, seq(r).to_string(), what, who, detail]
}

/// Evidence fields in the order a reviewer reads them; others follow by name.
const EVIDENCE_ORDER: [&str; 17] = [
    "metric",
    "source",
    "state",
    "arm",
    "segment",
    "model_version",
    "estimate",
    "canary_value",
    "control_value",
    "reference",
    "ci_low",
    "ci_high",
    "p_value",
    "statistic",
    "threshold",
    "min_effect",
    "alpha",
];

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(0.0);
            if x != 0.0 && x.abs() < 1e-3 {
                format!("{x:.3e}")
            } else {
                format!("{x:.4}")
            }
        }
        other => other.to_string(),
    }
}

fn evidence_rows(e: &Value) -> Vec<Vec<String>> {
    let Some(obj) = e.as_object() else {
        return vec![vec!["evidence".into(), value_text(e)]];
    };
    let mut rows = Vec::new();
    for key in EVIDENCE_ORDER {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null() && *v != "") {
            rows.push(vec![key.to_string(), value_text(v)]);
        }
    }
    let rest: BTreeMap<&String, &Value> = obj
        .iter()
        .filter(|(k, v)| {
            !EVIDENCE_ORDER.contains(&k.as_str()) && !v.is_null() && k != &"deployment"
        })
        .collect();
    for (k, v) in rest {
        rows.push(vec![k.clone(), value_text(v)]);
    }
    rows
}

/// The report of `incident` of `deployment` (its latest when `None`) from audit `records` (any
/// order). `admin_url` is where the release command points when the incident is still open.
pub fn build(
    records: &[Value],
    deployment: &str,
    incident: Option<&str>,
    admin_url: &str,
) -> Result<Document, ReportError> {
    let (incident, rs) = select(records, deployment, incident)?;
    let transitions: Vec<&Value> = rs
        .iter()
        .copied()
        .filter(|r| r["event"] == "transition" && incident_of(r) == Some(incident.as_str()))
        .collect();
    let opened = transitions.first().map(|r| text(r, "/at")).unwrap_or("");
    let release = transitions
        .iter()
        .find(|r| r.get("release").is_some_and(|x| !x.is_null()));
    let version = transitions
        .iter()
        .find_map(|r| r.pointer("/evidence/model_version").and_then(Value::as_str))
        .or_else(|| incident.split_once(':').map(|(_, v)| v))
        .unwrap_or("");

    let mut summary = vec![
        vec!["deployment".into(), deployment.into()],
        vec!["incident".into(), incident.clone()],
        vec!["canary version".into(), version.into()],
        vec![
            "phase after the last record".into(),
            transitions
                .last()
                .map(|r| text(r, "/transition/to").to_string())
                .unwrap_or_default(),
        ],
    ];
    if let Some(first) = transitions.first() {
        summary.push(vec!["opened".into(), opened.into()]);
        summary.push(vec![
            "decided by".into(),
            text(first, "/transition/why").into(),
        ]);
    }
    let first_done = rs
        .iter()
        .filter(|r| {
            r["event"] == "action"
                && r["result"] == "success"
                && r["op"] != "resolve"
                && incident_of(r) == Some(incident.as_str())
        })
        .filter_map(|r| r["elapsed_ms"].as_u64())
        .min();
    summary.push(vec![
        "first action done".into(),
        first_done.map_or("none succeeded".into(), |ms| {
            format!("{} after the decision", duration_ms(ms))
        }),
    ]);
    if let Some(r) = release {
        let rel = &r["release"];
        summary.push(vec![
            "released".into(),
            format!("{} by {}", text(rel, "/at"), text(rel, "/operator")),
        ]);
        if let Some(s) = span(opened, text(rel, "/at")) {
            summary.push(vec!["contained for".into(), s]);
        }
    }
    let mut hashes: Vec<&str> = Vec::new();
    for r in &rs {
        if let Some(h) = r["config_hash"].as_str() {
            if !hashes.contains(&h) {
                hashes.push(h);
            }
        }
    }
    summary.push(vec![
        "config in force".into(),
        if hashes.is_empty() {
            "not recorded".into()
        } else {
            hashes.join(", then ")
        },
    ]);
    summary.push(vec![
        "audit records".into(),
        format!(
            "seq {}–{}",
            rs.first().map_or(0, |r| seq(r)),
            rs.last().map_or(0, |r| seq(r))
        ),
    ]);

    let mut sections = vec![
        Section {
            heading: "Summary".into(),
            blocks: vec![Block::Table(vec!["item".into(), "value".into()], summary)],
        },
        Section {
            heading: "Timeline".into(),
            blocks: vec![Block::Table(
                ["time", "seq", "what", "who", "detail"]
                    .map(String::from)
                    .to_vec(),
                rs.iter().map(|r| timeline_row(r)).collect(),
            )],
        },
    ];

    let mut evidence = Vec::new();
    let mut shown: Vec<(&Value, u64)> = Vec::new();
    for r in &transitions {
        evidence.push(Block::Para(format!(
            "seq {} at {}: {} → {} — {}",
            seq(r),
            text(r, "/at"),
            text(r, "/transition/from"),
            text(r, "/transition/to"),
            text(r, "/transition/why")
        )));
        match r.get("evidence").filter(|e| !e.is_null()) {
            None => evidence.push(Block::Para("No test evidence: a manual decision.".into())),
            // A manual containment's "evidence" is who asked and why, not a test.
            Some(e) if e.get("source").is_none() && e.get("reason").is_some() => {
                let mut p = format!(
                    "No test evidence: a manual decision by {}, reason: {}",
                    text(e, "/operator"),
                    text(e, "/reason")
                );
                if let Some(s) = e["stated_operator"].as_str() {
                    p.push_str(&format!(" (the request named {s})"));
                }
                evidence.push(Block::Para(p));
            }
            Some(e) => match shown.iter().find(|(s, _)| *s == e) {
                Some((_, at)) => {
                    evidence.push(Block::Para(format!("The same evidence as at seq {at}.")))
                }
                None => {
                    shown.push((e, seq(r)));
                    evidence.push(Block::Table(
                        vec!["evidence".into(), "value".into()],
                        evidence_rows(e),
                    ));
                }
            },
        }
    }
    sections.push(Section {
        heading: "Evidence at each decision".into(),
        blocks: evidence,
    });

    let mut actions: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in rs.iter().filter(|r| r["event"] == "action") {
        let key = (text(r, "/target").to_string(), text(r, "/op").to_string());
        actions.insert(
            key,
            vec![
                text(r, "/target").into(),
                text(r, "/provider").into(),
                text(r, "/op").into(),
                text(r, "/result").into(),
                r["attempt"].as_u64().map_or("-".into(), |a| a.to_string()),
                r["elapsed_ms"].as_u64().map_or("-".into(), duration_ms),
                r["error"].as_str().unwrap_or("").into(),
            ],
        );
    }
    sections.push(Section {
        heading: "Actions".into(),
        blocks: if actions.is_empty() {
            vec![Block::Para("No action was taken.".into())]
        } else {
            vec![
                Block::Para(
                    "The last outcome of each target's operation (every attempt is in the timeline)."
                        .into(),
                ),
                Block::Table(
                    ["target", "provider", "op", "outcome", "attempts", "latency", "last error"]
                        .map(String::from)
                        .to_vec(),
                    actions.into_values().collect(),
                ),
            ]
        },
    });

    let release_blocks = match release {
        Some(r) => {
            let rel = &r["release"];
            let approvers: Vec<&str> = rel["approved_by"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut who = format!(
                "Released by {} at {}",
                text(rel, "/operator"),
                text(rel, "/at")
            );
            if let Some(s) = r.pointer("/transition/stated_operator").and_then(Value::as_str) {
                who.push_str(&format!(" (the request named {s})"));
            }
            if !approvers.is_empty() {
                who.push_str(&format!("; approved by {}", approvers.join(", ")));
            }
            vec![
                Block::Para(format!("{who}.")),
                Block::Para(format!("Reason: {}", text(rel, "/reason"))),
            ]
        }
        None => vec![
            Block::Para(format!(
                "Not released as of the last record (seq {}). To release once the cause is understood:",
                rs.last().map_or(0, |r| seq(r))
            )),
            Block::Code(release_command(admin_url.trim_end_matches('/'), deployment)),
        ],
    };
    sections.push(Section {
        heading: "Release".into(),
        blocks: release_blocks,
    });

    Ok(Document {
        title: format!("driftd incident report: {deployment}, incident {incident}"),
        sections,
    })
}
