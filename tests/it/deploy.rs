//! `deploy/` checked by the tools that consume it: every `driftd.toml` there by
//! `driftd check-config`, the systemd unit by `systemd-analyze verify` and `security`, the
//! container recipe by a lint (and `docker build` where a Docker daemon answers), and — in the
//! submodules — the Kubernetes manifests as `kubectl kustomize` renders them and the compose
//! stack by `docker-compose config`, `promtool` and `amtool`.
//!
//! Beyond "it parses", each test checks that the pieces agree with each other: the port driftd
//! listens on is the one probed, published and scraped; the state directory is the volume; a
//! secret the config reads is a file the unit or the pod provides. The tools come from
//! `scripts/test.sh` (kubectl, systemd, docker-compose, prometheus, prometheus-alertmanager from
//! Debian; kubernetes-validate from PyPI); a missing one fails the test with how to install it.

mod compose;
mod k8s;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

/// A path in the repository.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `program` with `args`; fails the test if it cannot be started (naming the package).
fn run(program: &str, args: &[&str], package: &str) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install the Debian package `{package}` (scripts/test.sh does)")
        })
}

/// Runs `program` and returns its stdout; fails the test on a non-zero exit.
fn run_ok(program: &str, args: &[&str], package: &str) -> String {
    let out = run(program, args, package);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The documents of a YAML stream, as JSON values.
fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| serde_json::to_value(serde_norway::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// `driftd check-config` on `text` (what `label` names); returns the parsed TOML.
fn check_config(text: &str, label: &str) -> toml::Table {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("driftd.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_driftd"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{label}: driftd check-config refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{label}: {}", String::from_utf8_lossy(&out.stdout).trim());
    text.parse().unwrap()
}

/// A dotted key of a config, e.g. `containment.state_dir`.
fn key<'a>(config: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let first = config.get(parts.next()?)?;
    parts.try_fold(first, |v, k| v.get(k))
}

/// The port of `admin.addr` (driftd's default when unset).
fn admin_addr(config: &toml::Table) -> std::net::SocketAddr {
    let addr = key(config, "admin.addr").map_or("127.0.0.1:8787", |v| v.as_str().unwrap());
    addr.parse().unwrap()
}

/// Every `{ file = "…" }` secret reference of a config, with the key that holds it.
fn secret_files(config: &toml::Table) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
        if let Some(t) = v.as_table() {
            if let (1, Some(f)) = (t.len(), t.get("file").and_then(|f| f.as_str())) {
                out.push((prefix.to_string(), f.to_string()));
                return;
            }
            for (k, v) in t {
                walk(&format!("{prefix}.{k}"), v, out);
            }
        } else if let Some(a) = v.as_array() {
            for (i, v) in a.iter().enumerate() {
                walk(&format!("{prefix}[{i}]"), v, out);
            }
        }
    }
    let mut out = Vec::new();
    for (k, v) in config {
        walk(k, v, &mut out);
    }
    out
}

/// Every file under `deploy/` named `*.toml` passes `driftd check-config`: a config added there
/// later is covered without naming it here.
#[test]
fn every_driftd_toml_under_deploy_passes_check_config() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo("deploy"), &mut files);
    files.sort();
    assert!(
        files.len() >= 4,
        "the base, example overlay, compose and systemd configs: {files:?}"
    );
    for f in &files {
        check_config(
            &std::fs::read_to_string(f).unwrap(),
            &f.display().to_string(),
        );
    }
}

/// A systemd unit as `section → key → values` (a key may repeat).
fn unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{line}"));
        out.entry(section.clone())
            .or_default()
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    out
}

/// `systemd-analyze verify` on the unit (any warning fails, not only errors), the exposure
/// score of `systemd-analyze security`, the hardening the issue asks for, and the example config
/// agreeing with the unit: the state directory, the credential, the config path.
///
/// `verify` checks that ExecStart's binary exists and is executable, so it runs on a copy of the
/// unit whose `/usr/local/bin/driftd` is the binary under test; nothing else is changed.
#[test]
fn the_systemd_unit_verifies_is_hardened_and_matches_its_config() {
    let text = std::fs::read_to_string(repo("deploy/systemd/driftd.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("driftd.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/driftd", env!("CARGO_BIN_EXE_driftd")),
    )
    .unwrap();
    let copy = copy.to_str().unwrap();
    let out = run("systemd-analyze", &["verify", copy], "systemd");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let security = run_ok(
        "systemd-analyze",
        &["security", "--offline=true", copy],
        "systemd",
    );
    let exposure: f64 = security
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for driftd.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"))
        .parse()
        .unwrap();
    println!("systemd-analyze security: exposure {exposure} (0 = locked down, 10 = exposed)");
    assert!(exposure <= 2.0, "exposure {exposure}:\n{security}");

    let u = unit(&text);
    let one = |k: &str| -> &str {
        let v = &u["Service"][k];
        assert_eq!(v.len(), 1, "{k}: {v:?}");
        &v[0]
    };
    for (k, want) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "driftd"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("Restart", "on-failure"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(k), want, "{k}");
    }
    let reload = &u["Service"]["ExecReload"];
    assert_eq!(
        reload.last().unwrap(),
        "/bin/kill -HUP $MAINPID",
        "reload ends in SIGHUP"
    );
    let start: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(start[..2], ["/usr/local/bin/driftd", "run"]);
    let config_path = start[start.iter().position(|a| *a == "--config").unwrap() + 1];
    assert_eq!(config_path, "/etc/driftd/driftd.toml");
    assert!(
        reload[0].ends_with(&format!("check-config {config_path}")),
        "reload validates the file first: {reload:?}"
    );

    let config = check_config(
        &std::fs::read_to_string(repo("deploy/systemd/driftd.toml")).unwrap(),
        "deploy/systemd/driftd.toml",
    );
    assert_eq!(
        key(&config, "containment.state_dir").unwrap().as_str(),
        Some("/var/lib/driftd"),
        "the StateDirectory"
    );
    let credentials: Vec<&str> = u["Service"]["LoadCredential"]
        .iter()
        .map(|c| c.split_once(':').unwrap().0)
        .collect();
    let files = secret_files(&config);
    assert!(
        files.iter().any(|(k, _)| k == "containment.admin_token"),
        "{files:?}"
    );
    for (k, f) in files {
        let name = f
            .strip_prefix("/run/credentials/driftd.service/")
            .unwrap_or_else(|| panic!("{k} = {f}: not a credential of the unit"));
        assert!(
            credentials.contains(&name),
            "{k} = {f}: no LoadCredential={name}:…"
        );
    }
    let deadline = key(&config, "shutdown.deadline").map_or("10s", |v| v.as_str().unwrap());
    let stop = humantime::parse_duration(one("TimeoutStopSec")).unwrap();
    assert!(stop > humantime::parse_duration(deadline).unwrap());
}

/// One instruction of a Dockerfile: keyword and the rest, continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(t);
                let (k, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((k.to_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// The shared libraries of gcr.io/distroless/cc-debian12 (its packages libc6, libgcc-s1,
/// libssl3, libstdc++6, libgomp1).
const DISTROLESS_CC_LIBS: &[&str] = &[
    "linux-vdso.so.1",
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libgcc_s.so.1",
    "libssl.so.3",
    "libcrypto.so.3",
    "libstdc++.so.6",
    "libgomp.so.1",
];

/// The container recipe: multi-stage, every base image pinned by tag and digest, no ADD, the
/// release binary built with the lockfile, a numeric non-root user in the runtime stage, every
/// shared library the binary links present in the runtime image (libz linked statically), and
/// the published port the one the image listens on. `docker build` (and a run of the image)
/// where a Docker daemon answers; this machine has none, so there it is the lint alone.
#[test]
fn the_dockerfile_is_pinned_non_root_and_its_runtime_has_what_the_binary_links() {
    let text = std::fs::read_to_string(repo("deploy/container/Dockerfile")).unwrap();
    let steps = instructions(&text);
    let mut stages: Vec<String> = Vec::new();
    let mut stage_of = Vec::new();
    for (k, rest) in &steps {
        if k == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let image = words[0];
            if !stages.iter().any(|s| s == image) {
                let (name_tag, hash) = image
                    .split_once("@sha256:")
                    .unwrap_or_else(|| panic!("FROM {image}: pin it by digest"));
                assert!(is_digest(hash), "FROM {image}: not a sha256 digest");
                let tag = name_tag
                    .rsplit_once(':')
                    .unwrap_or_else(|| panic!("FROM {image}: name the tag the digest is of"))
                    .1;
                assert_ne!(
                    tag, "latest",
                    "FROM {image}: the tag the digest is meant to be"
                );
            }
            stages.push(
                words
                    .iter()
                    .position(|w| w.eq_ignore_ascii_case("as"))
                    .map_or(String::new(), |i| words[i + 1].to_string()),
            );
        }
        assert_ne!(k, "ADD", "COPY, not ADD: {rest}");
        stage_of.push(stages.len());
    }
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let runtime: Vec<&(String, String)> = steps
        .iter()
        .zip(&stage_of)
        .filter(|(_, s)| **s == stages.len())
        .map(|(i, _)| i)
        .collect();
    let build: Vec<&(String, String)> = steps
        .iter()
        .zip(&stage_of)
        .filter(|(_, s)| **s < stages.len())
        .map(|(i, _)| i)
        .collect();
    let last = |k: &str| {
        runtime
            .iter()
            .rev()
            .find(|(i, _)| i == k)
            .map(|(_, r)| r.as_str())
    };
    let user = last("USER").expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid (runAsNonRoot can check it)");
    assert_ne!(uid, 0, "USER {user}");
    assert!(build
        .iter()
        .any(|(k, r)| k == "RUN" && r.contains("cargo build --release --locked")));
    let entry: Vec<String> =
        serde_json::from_str(last("ENTRYPOINT").expect("ENTRYPOINT")).expect("exec form");
    assert!(runtime
        .iter()
        .any(|(k, r)| k == "COPY" && r.ends_with(&format!(" {}", entry[0]))));
    let cmd: Vec<String> = serde_json::from_str(last("CMD").expect("CMD")).expect("exec form");
    let listen = &cmd[cmd.iter().position(|a| a == "--admin-addr").unwrap() + 1];
    let port = listen.parse::<std::net::SocketAddr>().unwrap().port();
    assert_eq!(last("EXPOSE"), Some(port.to_string().as_str()));

    let ldd = run_ok("ldd", &[env!("CARGO_BIN_EXE_driftd")], "libc-bin");
    let static_libz = build
        .iter()
        .any(|(k, r)| k == "ENV" && r.contains("LIBZ_SYS_STATIC=1"))
        && !build.iter().any(|(_, r)| r.contains("zlib1g-dev"));
    for lib in ldd.lines().filter_map(|l| l.split_whitespace().next()) {
        let lib = lib.rsplit('/').next().unwrap();
        assert!(
            DISTROLESS_CC_LIBS.contains(&lib) || (lib == "libz.so.1" && static_libz),
            "driftd links {lib}, which the runtime image does not have"
        );
    }
    let ignore = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    for p in ["target", ".git"] {
        assert!(ignore.lines().any(|l| l.trim() == p), ".dockerignore {p}");
    }

    if !run("docker", &["info"], "docker").status.success() {
        println!("no Docker daemon answers: the Dockerfile was linted, not built");
        return;
    }
    let started = std::time::Instant::now();
    let root = repo("");
    run_ok(
        "docker",
        &[
            "build",
            "-f",
            "deploy/container/Dockerfile",
            "-t",
            "driftd:deploy-test",
            root.to_str().unwrap(),
        ],
        "docker",
    );
    let version = run_ok(
        "docker",
        &["run", "--rm", "driftd:deploy-test", "--version"],
        "docker",
    );
    assert!(version.starts_with("driftd "), "{version}");
    println!("docker build and run: {:?}", started.elapsed());
}

/// 64 lowercase hex digits.
fn is_digest(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
