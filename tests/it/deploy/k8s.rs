//! `deploy/k8s` as `kubectl kustomize` renders it (the base and the example overlay): valid
//! against the Kubernetes API's schemas (kubernetes-validate, strict), the pod's security settings, its config (through `driftd check-config`) agreeing with the mounts,
//! probes, Service and ServiceMonitor, the selectors, RBAC granting exactly what the config's
//! `argo_rollouts` targets use, the PrometheusRule carrying deploy/prometheus's rules, and the
//! Argo Rollouts / Flagger manifests of deploy/rollouts pointing at the rendered Service.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::{admin_addr, check_config, key, repo, run_ok, secret_files, yaml_docs};

/// The rendered objects of a kustomization under deploy/k8s.
struct Render {
    objects: Vec<Value>,
}

impl Render {
    fn of(dir: &str) -> Render {
        let path = repo(&format!("deploy/k8s/{dir}"));
        let text = run_ok("kubectl", &["kustomize", path.to_str().unwrap()], "kubectl");
        Render {
            objects: yaml_docs(&text),
        }
    }

    /// Validates the render against the Kubernetes API's schemas (strict: an unknown field is
    /// an error). kubernetes-validate has no schema for the Prometheus Operator's kinds: their
    /// fields are checked by hand in [`check_driftd`].
    fn of_validated(dir: &str) -> Render {
        let r = Render::of(dir);
        let file = tempfile::NamedTempFile::new().unwrap();
        let text: Vec<String> = r
            .objects
            .iter()
            .map(|o| serde_norway::to_string(o).unwrap())
            .collect();
        std::fs::write(file.path(), text.join("---\n")).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .arg(file.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{dir}: the Kubernetes schemas refuse the render (kubernetes-validate from PyPI; \
             scripts/test.sh installs it):\n{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let unchecked: Vec<&str> = said
            .lines()
            .filter(|l| l.contains("Couldn't find schema"))
            .collect();
        assert_eq!(
            unchecked.len(),
            2,
            "only ServiceMonitor and PrometheusRule: {unchecked:?}"
        );
        r
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        match self.all(kind)[..] {
            [o] => o,
            ref found => panic!("one {kind}, found {}", found.len()),
        }
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.all(kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in the render"))
    }
}

/// Whether every pair of `selector` (a `matchLabels` map) is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().expect("a label map");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The effective value of a security setting: the container's, else the pod's.
fn effective<'a>(pod: &'a Value, container: &'a Value, field: &str) -> &'a Value {
    match &container["securityContext"][field] {
        Value::Null => &pod["securityContext"][field],
        v => v,
    }
}

/// The checks both renders share; returns driftd's config as delivered by the ConfigMap.
fn check_driftd(r: &Render, label: &str) -> toml::Table {
    let deployment = r.named("Deployment", "driftd");
    let ns = deployment["metadata"]["namespace"].as_str().unwrap();
    assert_eq!(
        deployment["spec"]["replicas"], 1,
        "several replicas are not supported"
    );
    assert_eq!(
        deployment["spec"]["strategy"]["type"], "Recreate",
        "never two consumers on one state volume"
    );
    let template = &deployment["spec"]["template"];
    let pod_labels = &template["metadata"]["labels"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let pod = &template["spec"];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host], true, "{host}");
    }
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(effective(pod, c, "runAsNonRoot"), true);
    let uid = effective(pod, c, "runAsUser")
        .as_u64()
        .expect("a numeric runAsUser");
    assert_ne!(uid, 0);
    assert_eq!(
        effective(pod, c, "seccompProfile")["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_ne!(sc["privileged"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null(), "no capability added");
    for (kind, res) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "cpu"),
        ("limits", "memory"),
    ] {
        assert!(
            c["resources"][kind][res].is_string(),
            "resources.{kind}.{res}"
        );
    }

    let volume = |name: &str| -> &Value {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount_of = |dir: &Path| -> (&Value, &Value) {
        let m = mounts
            .iter()
            .find(|m| dir.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{label}: nothing is mounted at {}", dir.display()));
        (m, volume(m["name"].as_str().unwrap()))
    };
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = Path::new(args[args.iter().position(|a| *a == "--config").unwrap() + 1]);
    let (_, config_volume) = mount_of(config_path.parent().unwrap());
    let config_map = r.named(
        "ConfigMap",
        config_volume["configMap"]["name"].as_str().unwrap(),
    );
    let text = config_map["data"][config_path.file_name().unwrap().to_str().unwrap()]
        .as_str()
        .expect("the ConfigMap holds the file --config names");
    let config = check_config(text, &format!("{label}: the rendered ConfigMap"));

    let state_dir = key(&config, "containment.state_dir")
        .unwrap()
        .as_str()
        .unwrap();
    let mut writes = vec![state_dir];
    if let Some(d) = key(&config, "persist.dir") {
        writes.push(d.as_str().unwrap());
    }
    for dir in writes {
        let (m, v) = mount_of(Path::new(dir));
        assert_ne!(m["readOnly"], true, "{dir} is writable");
        let claim = v["persistentVolumeClaim"]["claimName"]
            .as_str()
            .unwrap_or_else(|| panic!("{dir} survives a restart: a PersistentVolumeClaim"));
        r.named("PersistentVolumeClaim", claim);
    }
    let secrets = secret_files(&config);
    assert!(
        secrets.iter().any(|(k, _)| k == "containment.admin_token"),
        "{label}: the admin token is a Secret reference: {secrets:?}"
    );
    for (k, f) in &secrets {
        let (m, v) = mount_of(Path::new(f).parent().unwrap());
        assert_eq!(
            Path::new(m["mountPath"].as_str().unwrap()),
            Path::new(f).parent().unwrap()
        );
        assert!(
            v["secret"]["secretName"].is_string(),
            "{k} = {f}: from a Secret"
        );
        assert!(
            m["subPath"].is_null(),
            "a subPath mount never sees an updated Secret"
        );
    }

    let addr = admin_addr(&config);
    assert!(
        addr.ip().is_unspecified(),
        "{label}: admin.addr {addr} is not reachable through the Service"
    );
    let port = addr.port();
    let ports = c["ports"].as_array().unwrap();
    let named = ports
        .iter()
        .find(|p| p["containerPort"] == port)
        .unwrap_or_else(|| panic!("{label}: no container port {port}"));
    let port_name = named["name"].as_str().unwrap();
    let resolves = |p: &Value| *p == port || p == port_name;
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert!(resolves(&c[probe]["httpGet"]["port"]), "{probe} port");
    }
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    let deadline = key(&config, "shutdown.deadline").map_or("10s", |v| v.as_str().unwrap());
    assert!(humantime::parse_duration(deadline).unwrap().as_secs() < grace);

    let service = r.named("Service", "driftd");
    assert!(selects(&service["spec"]["selector"], pod_labels));
    let sport = &service["spec"]["ports"][0];
    assert!(resolves(&sport["targetPort"]), "Service targetPort");
    let monitor = r.one("ServiceMonitor");
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], sport["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    let pdb = r.one("PodDisruptionBudget");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));
    let netpol = r.one("NetworkPolicy");
    assert!(selects(
        &netpol["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    let types = &netpol["spec"]["policyTypes"];
    assert_eq!(*types, serde_json::json!(["Ingress", "Egress"]));
    for rule in netpol["spec"]["ingress"].as_array().unwrap() {
        assert!(rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| resolves(&p["port"])));
    }
    let sa = pod["serviceAccountName"].as_str().unwrap();
    assert_eq!(r.named("ServiceAccount", sa)["metadata"]["namespace"], ns);
    for o in &r.objects {
        let kind = o["kind"].as_str().unwrap();
        assert!(
            !kind.starts_with("Cluster"),
            "{label}: no cluster-wide {kind}"
        );
        if !matches!(kind, "Namespace" | "Role" | "RoleBinding") {
            assert_eq!(o["metadata"]["namespace"], ns, "{kind}");
        }
    }
    config
}

/// The (namespace, rollout) pairs the render lets driftd's service account abort, failing on
/// any Role that grants more than a PATCH of named rollouts' status, or any RoleBinding that
/// binds anyone else.
fn rollout_grants(r: &Render) -> BTreeSet<(String, String)> {
    let deployment = r.named("Deployment", "driftd");
    let ns = deployment["metadata"]["namespace"].as_str().unwrap();
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let mut granted = BTreeSet::new();
    for binding in r.all("RoleBinding") {
        let bns = binding["metadata"]["namespace"].as_str().unwrap();
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}]),
            "a RoleBinding binds driftd's service account alone"
        );
        assert_eq!(binding["roleRef"]["kind"], "Role");
        let role = r
            .all("Role")
            .into_iter()
            .find(|role| {
                role["metadata"]["namespace"] == bns
                    && role["metadata"]["name"] == binding["roleRef"]["name"]
            })
            .expect("the bound Role is in the render, in the binding's namespace");
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(rule["apiGroups"], serde_json::json!(["argoproj.io"]));
            assert_eq!(rule["resources"], serde_json::json!(["rollouts/status"]));
            assert_eq!(rule["verbs"], serde_json::json!(["patch"]));
            let names = rule["resourceNames"]
                .as_array()
                .expect("by name: resourceNames");
            assert!(!names.is_empty());
            for n in names {
                granted.insert((bns.to_string(), n.as_str().unwrap().to_string()));
            }
        }
    }
    assert_eq!(
        r.all("Role").len(),
        r.all("RoleBinding").len(),
        "no Role left unbound"
    );
    granted
}

/// The `argo_rollouts` targets of a config, as (namespace, rollout).
fn rollout_targets(config: &toml::Table) -> BTreeSet<(String, String)> {
    key(config, "containment.targets")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
        .filter(|t| t["kind"].as_str() == Some("argo_rollouts"))
        .map(|t| {
            (
                t["namespace"].as_str().unwrap().to_string(),
                t["rollout"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_base_renders_hardened_and_consistent() {
    let r = Render::of_validated("base");
    let config = check_driftd(&r, "base");
    assert_eq!(rollout_grants(&r), rollout_targets(&config));
}

#[test]
fn the_example_overlay_renders_hardened_and_grants_exactly_its_rollout_targets() {
    let r = Render::of_validated("overlays/example");
    let config = check_driftd(&r, "overlays/example");
    let targets = rollout_targets(&config);
    assert!(!targets.is_empty(), "the example aborts a rollout");
    assert_eq!(rollout_grants(&r), targets);
    let image = r.named("Deployment", "driftd")["spec"]["template"]["spec"]["containers"][0]
        ["image"]
        .as_str()
        .unwrap();
    assert!(
        image.contains(':'),
        "the example pins an image tag: {image}"
    );
    assert!(
        key(&config, "kafka.secrets").is_some(),
        "the example reads a Kafka credential"
    );
}

/// Every gate URL of deploy/rollouts is the rendered Service's, and the example Rollout uses
/// templates and arguments that exist.
#[test]
fn the_rollout_manifests_point_at_the_rendered_service() {
    let r = Render::of("base");
    let svc = r.named("Service", "driftd");
    let base = format!(
        "http://{}.{}.svc.cluster.local:{}",
        svc["metadata"]["name"].as_str().unwrap(),
        svc["metadata"]["namespace"].as_str().unwrap(),
        svc["spec"]["ports"][0]["port"]
    );
    let read = |f: &str| {
        yaml_docs(&std::fs::read_to_string(repo(&format!("deploy/rollouts/{f}"))).unwrap())
    };
    let templates = read("argo-analysis-templates.yaml");
    for t in &templates {
        let url_arg = t["spec"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "driftd-url")
            .expect("a driftd-url argument");
        assert_eq!(url_arg["value"], base.as_str());
        for m in t["spec"]["metrics"].as_array().unwrap() {
            let url = m["provider"]["web"]["url"].as_str().unwrap();
            assert!(url.starts_with("{{args.driftd-url}}/v1/gate/"), "{url}");
        }
    }
    for hook in read("flagger-canary.yaml")[0]["spec"]["analysis"]["webhooks"]
        .as_array()
        .unwrap()
    {
        let url = hook["url"].as_str().unwrap();
        assert!(url.starts_with(&format!("{base}/v1/gate/")), "{url}");
    }
    let rollout = &read("argo-rollout-example.yaml")[0];
    let canary = &rollout["spec"]["strategy"]["canary"];
    let mut uses = vec![&canary["analysis"]];
    for step in canary["steps"].as_array().unwrap() {
        if !step["analysis"].is_null() {
            uses.push(&step["analysis"]);
        }
    }
    assert_eq!(uses.len(), 2, "background analysis and a promotion step");
    for u in uses {
        for tref in u["templates"].as_array().unwrap() {
            let t = templates
                .iter()
                .find(|t| t["metadata"]["name"] == tref["templateName"])
                .unwrap_or_else(|| panic!("template {}", tref["templateName"]));
            let declared: Vec<&Value> = t["spec"]["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| &a["name"])
                .collect();
            for a in u["args"].as_array().unwrap() {
                assert!(declared.contains(&&a["name"]), "argument {}", a["name"]);
            }
        }
    }
}

const RULES: &str = "deploy/prometheus/driftd-rules.yml";
const PROMETHEUS_RULE: &str = "deploy/k8s/base/prometheusrule.yaml";

/// The PrometheusRule written from the rule file: its `groups:` block, indented under `spec:`.
fn prometheus_rule_from(rules: &str) -> String {
    let start = rules.find("\ngroups:").map_or(0, |i| i + 1);
    let mut out = String::from(
        "# Generated from deploy/prometheus/driftd-rules.yml by tests/it/deploy/k8s.rs, which fails\n\
         # when the two differ. After editing the rule file, regenerate:\n\
         #   DRIFTD_BLESS=1 cargo test --features e2e --test it -- deploy::k8s::the_prometheus_rule\n\
         apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: driftd\nspec:\n",
    );
    for line in rules[start..].lines() {
        if !line.is_empty() {
            out.push_str("  ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The rendered PrometheusRule holds exactly the rule groups of deploy/prometheus (which
/// promtool tests), so the cluster alerts as the compose stack does.
#[test]
fn the_prometheus_rule_carries_the_rule_file() {
    let rules = std::fs::read_to_string(repo(RULES))
        .unwrap_or_else(|e| panic!("{RULES}: {e} (written by the dashboards and rules work)"));
    if std::env::var_os("DRIFTD_BLESS").is_some() {
        std::fs::write(repo(PROMETHEUS_RULE), prometheus_rule_from(&rules)).unwrap();
    }
    let want = &yaml_docs(&rules)[0]["groups"];
    assert!(!want.as_array().unwrap().is_empty());
    let r = Render::of("base");
    assert_eq!(
        &r.one("PrometheusRule")["spec"]["groups"],
        want,
        "{PROMETHEUS_RULE} differs from {RULES}: regenerate it with \
         DRIFTD_BLESS=1 cargo test --features e2e --test it -- deploy::k8s::the_prometheus_rule"
    );
}
