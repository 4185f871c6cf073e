//! The compose trial stack (deploy/compose): `docker-compose config` accepts it (no Docker
//! daemon needed), every file it mounts exists, every image is pinned, and its parts agree —
//! driftd's config passes `check-config` and is the one mounted, `driftd gen` produces what
//! driftd consumes with the canary share it expects, Prometheus (`promtool check config`, the
//! rules included) scrapes driftd's port as job `driftd`, Alertmanager's config passes `amtool`,
//! and Grafana's provisioning finds the dashboards where they are mounted.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{admin_addr, check_config, key, repo, run_ok, yaml_docs};

const DIR: &str = "deploy/compose";

/// A `source:target[:mode]` bind mount of a service: the source on this machine (relative to
/// deploy/compose) and the target in the container; named volumes are skipped.
fn binds(service: &Value) -> Vec<(PathBuf, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let mut parts = v.as_str().unwrap().split(':');
            let (src, dst) = (parts.next().unwrap(), parts.next().unwrap());
            src.starts_with('.')
                .then(|| (repo(DIR).join(src), dst.to_string()))
        })
        .collect()
}

/// The source of the bind mount that holds `target` (the mount itself or a file under it).
fn source_of(service: &Value, target: &str) -> PathBuf {
    binds(service)
        .into_iter()
        .find_map(|(src, dst)| {
            Path::new(target).strip_prefix(&dst).ok().map(|rest| {
                if rest.as_os_str().is_empty() {
                    src.clone()
                } else {
                    src.join(rest)
                }
            })
        })
        .unwrap_or_else(|| panic!("nothing mounted at {target}"))
}

/// `--name=value` or `--name value` from a command list.
fn flag<'a>(command: &'a [String], name: &str) -> &'a str {
    let eq = format!("{name}=");
    command
        .iter()
        .enumerate()
        .find_map(|(i, a)| {
            a.strip_prefix(&eq)
                .or_else(|| (a == name).then(|| command[i + 1].as_str()))
        })
        .unwrap_or_else(|| panic!("{name} in {command:?}"))
}

fn command(service: &Value) -> Vec<String> {
    serde_json::from_value(service["command"].clone()).unwrap()
}

#[test]
fn the_compose_stack_validates_and_its_parts_agree() {
    let file = repo(&format!("{DIR}/compose.yaml"));
    let compose = &yaml_docs(&std::fs::read_to_string(&file).unwrap())[0];
    let token = "a-token-for-docker-compose-config";
    let out = std::process::Command::new("docker-compose")
        .args(["-f", file.to_str().unwrap(), "config", "--quiet"])
        .env("DRIFTD_ADMIN_TOKEN", token)
        .output()
        .expect(
            "docker-compose: install the Debian package `docker-compose` (scripts/test.sh does)",
        );
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let services = compose["services"].as_object().unwrap();
    for name in [
        "kafka",
        "driftd",
        "gen",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(services.contains_key(name), "service {name}");
    }
    let built: Vec<&str> = services
        .values()
        .filter(|s| !s["build"].is_null())
        .filter_map(|s| s["image"].as_str())
        .collect();
    for (name, s) in services {
        for (src, _) in binds(s) {
            assert!(
                src.exists(),
                "{name} mounts {}, which does not exist",
                src.display()
            );
        }
        match (s["image"].as_str(), s["build"].is_null()) {
            (Some(image), true) if built.contains(&image) => {}
            (Some(image), true) => {
                let tag = image
                    .split('@')
                    .next()
                    .unwrap()
                    .rsplit_once(':')
                    .map(|t| t.1);
                assert!(
                    tag.is_some_and(|t| t != "latest" && t.contains(|c: char| c.is_ascii_digit())),
                    "{name}: pin {image} to a version"
                );
            }
            (_, false) => {
                let context = repo(DIR).join(s["build"]["context"].as_str().unwrap());
                let dockerfile = context.join(s["build"]["dockerfile"].as_str().unwrap());
                assert_eq!(
                    dockerfile.canonicalize().unwrap(),
                    repo("deploy/container/Dockerfile").canonicalize().unwrap()
                );
            }
            (None, true) => panic!("{name}: neither image nor build"),
        }
    }

    let driftd = &services["driftd"];
    let run = command(driftd);
    assert_eq!(run[0], "run");
    let config_path = flag(&run, "--config");
    let config = check_config(
        &std::fs::read_to_string(source_of(driftd, config_path)).unwrap(),
        "deploy/compose/driftd.toml",
    );
    let addr = admin_addr(&config);
    assert!(
        addr.ip().is_unspecified(),
        "reachable from the other containers"
    );
    let port = addr.port();
    assert!(
        driftd["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().ends_with(&format!(":{port}"))),
        "the admin port is published"
    );
    let token_var = key(&config, "containment.admin_token.env")
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        driftd["environment"][token_var].is_string(),
        "{token_var} is set"
    );
    let state = key(&config, "containment.state_dir")
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        driftd["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str().unwrap().split(':').nth(1) == Some(state)),
        "{state} is a volume (the root filesystem is read-only)"
    );
    assert_eq!(driftd["read_only"], true);
    assert_eq!(driftd["cap_drop"], serde_json::json!(["ALL"]));

    let gen = command(&services["gen"]);
    assert_eq!(gen[0], "gen");
    assert_eq!(
        Some(flag(&gen, "--brokers")),
        key(&config, "kafka.brokers").and_then(|v| v.as_str())
    );
    assert_eq!(
        Some(flag(&gen, "--topic")),
        key(&config, "kafka.topic").and_then(|v| v.as_str())
    );
    assert_eq!(
        flag(&gen, "--canary-share").parse::<f64>().ok(),
        key(&config, "detection.canary_share").and_then(|v| v.as_float()),
        "the sample-ratio check expects the share gen produces"
    );
    let topics = command(&services["topics"]);
    assert_eq!(topics[..3], ["topic", "create", flag(&gen, "--topic")]);

    let prometheus = &services["prometheus"];
    let prom_config = source_of(prometheus, flag(&command(prometheus), "--config.file"));
    let prom_text = std::fs::read_to_string(&prom_config).unwrap();
    let prom = &yaml_docs(&prom_text)[0];
    let job = &prom["scrape_configs"][0];
    assert_eq!(
        job["job_name"], "driftd",
        "the rules look for up{{job=\"driftd\"}}"
    );
    assert_eq!(
        job["static_configs"][0]["targets"],
        serde_json::json!([format!("driftd:{port}")])
    );
    let mut local = prom_text.clone();
    for rule_file in prom["rule_files"].as_array().unwrap() {
        let in_container = rule_file.as_str().unwrap();
        let here = source_of(prometheus, in_container);
        local = local.replace(in_container, here.to_str().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let checked = dir.path().join("prometheus.yml");
    std::fs::write(&checked, local).unwrap();
    let said = run_ok(
        "promtool",
        &["check", "config", checked.to_str().unwrap()],
        "prometheus",
    );
    println!(
        "promtool check config: {}",
        said.trim().replace('\n', " | ")
    );
    let alerting = &prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0];
    let am_url = key(&config, "containment.targets")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"].as_str() == Some("alertmanager"))
        .and_then(|t| t.get("url"))
        .and_then(|u| u.as_str())
        .unwrap()
        .to_string();
    assert_eq!(
        Some(am_url.trim_start_matches("http://")),
        alerting.as_str(),
        "one Alertmanager for both"
    );

    let alertmanager = &services["alertmanager"];
    let am_config = source_of(alertmanager, flag(&command(alertmanager), "--config.file"));
    run_ok(
        "amtool",
        &["check-config", am_config.to_str().unwrap()],
        "prometheus-alertmanager",
    );

    let grafana = &services["grafana"];
    let providers_dir = source_of(grafana, "/etc/grafana/provisioning/dashboards");
    let mut providers = 0;
    for entry in std::fs::read_dir(&providers_dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for p in yaml_docs(&text)[0]["providers"].as_array().unwrap() {
            let path = p["options"]["path"].as_str().unwrap();
            let dashboards = source_of(grafana, path);
            let json = std::fs::read_dir(&dashboards)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "json")
                })
                .count();
            assert!(json > 0, "no dashboard in {}", dashboards.display());
            providers += 1;
        }
    }
    assert!(
        providers > 0,
        "a dashboard provider in {}",
        providers_dir.display()
    );
    let datasources = source_of(grafana, "/etc/grafana/provisioning/datasources");
    for entry in std::fs::read_dir(&datasources).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for d in yaml_docs(&text)[0]["datasources"].as_array().unwrap() {
            let url = d["url"].as_str().unwrap();
            let host = url.trim_start_matches("http://").split(':').next().unwrap();
            assert!(
                services.contains_key(host),
                "datasource {url}: a service of the stack"
            );
        }
    }
}
