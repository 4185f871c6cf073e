//! The Grafana dashboards (`dashboards/`) and the alert rules' runbooks, checked without a
//! service: the JSON parses in Grafana's model (unique panel ids, a title and the `${datasource}`
//! variable on every panel and query), it is what `scripts/gen_dashboards.py` writes, and every
//! alert of `deploy/prometheus/driftd-rules.yml` has its runbook page and no page is orphaned.
//! Running every query against a real Prometheus is `dashboards_e2e.rs`; the rules' own unit
//! tests are promtool's (also run there).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// The dashboard files under `dashboards/`.
pub const DASHBOARDS: [&str; 3] = [
    "driftd-overview.json",
    "driftd-deployment.json",
    "driftd-pipeline.json",
];

/// Grafana 12's classic dashboard JSON model.
const SCHEMA_VERSION: u64 = 41;

/// The datasource every panel, query and annotation names: the dashboard variable.
const DATASOURCE_UID: &str = "${datasource}";

/// A path in the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// One dashboard, parsed.
pub fn load(name: &str) -> Value {
    let path = repo_path(&format!("dashboards/{name}"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// Where a query of a dashboard sits, and its text (Grafana variables not substituted).
pub struct Query {
    /// e.g. `driftd-overview.json panel 3 "Active containments" A`.
    pub place: String,
    /// The panel title, or the variable or annotation name.
    pub title: String,
    /// What kind of query: a panel target, a template variable or an annotation.
    pub kind: QueryKind,
    /// The PromQL (for a variable: its `label_values(…)` query).
    pub expr: String,
}

/// The three places a dashboard holds PromQL.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QueryKind {
    /// A panel's target.
    Panel,
    /// A template variable's `label_values(expr, label)`.
    Variable,
    /// An annotation query.
    Annotation,
}

/// Every query of dashboard `name`.
pub fn queries(name: &str, dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!("{name} panel {} {title:?} {}", p["id"], t["refId"]),
                title: title.clone(),
                kind: QueryKind::Panel,
                expr: t["expr"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if v["type"] == "query" {
            out.push(Query {
                place: format!("{name} variable {}", v["name"]),
                title: v["name"].as_str().unwrap_or_default().to_string(),
                kind: QueryKind::Variable,
                expr: v["query"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        if let Some(expr) = a["expr"].as_str() {
            out.push(Query {
                place: format!("{name} annotation {}", a["name"]),
                title: a["name"].as_str().unwrap_or_default().to_string(),
                kind: QueryKind::Annotation,
                expr: expr.to_string(),
            });
        }
    }
    out
}

/// The `driftd_*` and `process_*` series names a PromQL expression reads.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["driftd_", "process_"] {
        let mut rest = expr;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(tail[..len].to_string());
            }
            rest = &tail[len..];
        }
    }
    names
}

/// One alerting rule of the rules file: its name and its lines.
pub struct Rule {
    /// The alert name.
    pub name: String,
    /// The rule's text, up to the next rule.
    pub text: String,
}

/// The alerting rules of `deploy/prometheus/driftd-rules.yml`, read line by line (promtool
/// checks the YAML itself).
pub fn rules() -> Vec<Rule> {
    let path = repo_path("deploy/prometheus/driftd-rules.yml");
    let text = std::fs::read_to_string(&path).expect("the rules file");
    let mut rules: Vec<Rule> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert: ") {
            rules.push(Rule {
                name: name.trim().to_string(),
                text: String::new(),
            });
        } else if let Some(r) = rules.last_mut() {
            r.text.push_str(line);
            r.text.push('\n');
        }
    }
    rules
}

#[test]
fn dashboards_parse_with_unique_ids_a_datasource_and_a_title() {
    let mut uids = BTreeSet::new();
    for name in DASHBOARDS {
        let d = load(name);
        assert_eq!(d["schemaVersion"], SCHEMA_VERSION, "{name}");
        assert!(
            uids.insert(d["uid"].as_str().expect("uid").to_string()),
            "{name}: uid reused"
        );
        assert!(
            !d["title"].as_str().unwrap_or_default().is_empty(),
            "{name}: title"
        );
        let vars = d["templating"]["list"].as_array().expect("templating");
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{name}");
        assert_eq!(ds["query"], "prometheus", "{name}");
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(v["datasource"]["uid"], DATASOURCE_UID, "{name}: {v}");
        }
        let panels = d["panels"].as_array().expect("panels");
        assert!(panels.len() >= 5, "{name}: {} panels", panels.len());
        let mut ids = BTreeSet::new();
        for p in panels {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: panel id {p}"));
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{name}: panel {id} has no title");
            assert_eq!(p["datasource"]["type"], "prometheus", "{name}: {title}");
            assert_eq!(p["datasource"]["uid"], DATASOURCE_UID, "{name}: {title}");
            let grid = &p["gridPos"];
            let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
            assert!(
                x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
                "{name}: {title}"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: {title} has no query");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert_eq!(t["datasource"]["uid"], DATASOURCE_UID, "{name}: {title}");
                assert!(
                    refs.insert(t["refId"].to_string()),
                    "{name}: {title}: refId"
                );
            }
        }
        for a in d["annotations"]["list"].as_array().expect("annotations") {
            if a.get("builtIn").is_none() {
                assert_eq!(a["datasource"]["uid"], DATASOURCE_UID, "{name}: {a}");
            }
        }
        for q in queries(name, &d) {
            assert!(!q.expr.trim().is_empty(), "{}: empty query", q.place);
            assert!(
                !metric_names(&q.expr).is_empty() || q.expr.contains("vector("),
                "{}",
                q.place
            );
        }
    }
}

#[test]
fn the_drill_down_has_its_variables_and_containment_annotations() {
    let d = load("driftd-deployment.json");
    let qs = queries("driftd-deployment.json", &d);
    let vars: Vec<&str> = qs
        .iter()
        .filter(|q| q.kind == QueryKind::Variable)
        .map(|q| q.title.as_str())
        .collect();
    assert_eq!(vars, ["deployment", "metric"]);
    let annotations: Vec<&Query> = qs
        .iter()
        .filter(|q| q.kind == QueryKind::Annotation)
        .collect();
    assert_eq!(annotations.len(), 2, "contained and released");
    assert!(annotations
        .iter()
        .all(|q| q.expr.contains("driftd_contained")));
    assert!(
        d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["type"] == "state-timeline"),
        "the verdict state as a timeline"
    );
}

#[test]
fn the_committed_dashboards_are_what_the_generator_writes() {
    let out = std::process::Command::new("python3")
        .arg(repo_path("scripts/gen_dashboards.py"))
        .arg("--check")
        .output()
        .expect("python3 runs scripts/gen_dashboards.py (install python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_alert_has_labels_annotations_and_a_runbook_and_every_runbook_an_alert() {
    let rules = rules();
    assert!(rules.len() >= 14, "{} rules", rules.len());
    let mut names = BTreeSet::new();
    for r in &rules {
        assert!(names.insert(r.name.clone()), "{} defined twice", r.name);
        assert!(
            r.text.contains("severity: critical") || r.text.contains("severity: warning"),
            "{}: severity",
            r.name
        );
        for key in ["expr:", "summary:", "description:"] {
            assert!(r.text.contains(key), "{}: {key}", r.name);
        }
        let page = format!("docs/runbooks/{}.md", r.name);
        assert!(
            r.text.contains(&format!("runbook_url: {page}\n")),
            "{}: runbook_url {page}",
            r.name
        );
        let text =
            std::fs::read_to_string(repo_path(&page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(&format!("# {}\n", r.name)), "{page} title");
        for section in [
            "## What it means",
            "## How to check",
            "## Release or escalate",
        ] {
            assert!(text.contains(section), "{page}: {section}");
        }
    }
    let index = std::fs::read_to_string(repo_path("docs/runbooks/README.md")).unwrap();
    for entry in std::fs::read_dir(repo_path("docs/runbooks")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if file == "README.md" {
            continue;
        }
        let alert = file.strip_suffix(".md").expect("runbooks are Markdown");
        assert!(names.contains(alert), "{file} is the runbook of no alert");
        assert!(
            index.contains(&format!("[{file}]({file})")),
            "README.md lists {file}"
        );
    }
}
