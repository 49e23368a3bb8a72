//! The chart as Helm renders it (scripts/render_chart.py over PyPI's helm-python-sdk), and the tools the chart
//! tests need: a test whose tools are missing is skipped with the reason, except in CI, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Whether the tools are here; prints why not. In CI (`CI` set) a missing tool fails the test instead.
pub fn tools_available(need_real_tier: bool) -> bool {
    let mut missing = Vec::new();
    let helm = Command::new("python3")
        .args(["-c", "import helm_python"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !helm {
        missing.push("helm (python3 -m pip install helm-python-sdk)");
    }
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        missing.push("kubectl");
    }
    if need_real_tier && roster_envtest::RealApiServer::assets_from_env().is_none() {
        missing.push("KUBEBUILDER_ASSETS with kube-apiserver and etcd (scripts/envtest-assets)");
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("the chart tests need {}", missing.join(", "));
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(!in_ci, "{why} (scripts/test installs them)");
    eprintln!("skipped: {why}");
    false
}

/// One `scripts/render_chart.py render` call: a value set plus overrides, offline or against a cluster.
pub struct Render<'a> {
    pub set: &'a str,
    pub release: &'a str,
    pub namespace: &'a str,
    pub set_json: Vec<String>,
    pub kubeconfig: Option<&'a Path>,
    pub kube_version: Option<&'a str>,
}

impl<'a> Render<'a> {
    pub fn new(set: &'a str, release: &'a str, namespace: &'a str) -> Self {
        Render {
            set,
            release,
            namespace,
            set_json: Vec::new(),
            kubeconfig: None,
            kube_version: None,
        }
    }

    /// `--set-json KEY=JSON`.
    pub fn with(mut self, key: &str, json: Value) -> Self {
        self.set_json.push(format!("{key}={json}"));
        self
    }

    /// Renders into `out` (DIR/manifest.yaml and friends) and returns the rendered objects, CRDs first.
    pub fn run(&self, out: &Path) -> Vec<Value> {
        self.try_run(out)
            .unwrap_or_else(|err| panic!("rendering the chart ({}) failed:\n{err}", self.set))
    }

    /// [`Render::run`], or Helm's refusal (a values schema error, a `fail` in a template).
    pub fn try_run(&self, out: &Path) -> Result<Vec<Value>, String> {
        let mut cmd = Command::new("python3");
        cmd.arg(Path::new(REPO).join("scripts/render_chart.py"))
            .args(["render", "--set", self.set, "--release", self.release])
            .args(["--namespace", self.namespace, "--out"])
            .arg(out);
        for expr in &self.set_json {
            cmd.args(["--set-json", expr]);
        }
        if let Some(kc) = self.kubeconfig {
            cmd.arg("--kubeconfig").arg(kc);
        }
        if let Some(v) = self.kube_version {
            cmd.args(["--kube-version", v]);
        }
        let output = cmd.output().expect("running scripts/render_chart.py");
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        let manifest = std::fs::read_to_string(out.join("manifest.yaml")).expect("manifest.yaml");
        Ok(parse_manifests(&manifest))
    }
}

/// Every YAML document of a multi-document manifest, as JSON values.
pub fn parse_manifests(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).expect("rendered YAML");
    docs.into_iter().filter(|v| !v.is_null()).collect()
}

pub fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

pub fn of_kind<'d>(docs: &'d [Value], k: &str) -> Vec<&'d Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

/// The roster container's args in the rendered Deployment.
pub fn container_args(docs: &[Value]) -> Vec<String> {
    let deployment = of_kind(docs, "Deployment")[0];
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    serde_json::from_value(args.clone()).expect("container args are strings")
}

/// Writes `docs` as one YAML stream, for kubectl.
pub fn write_manifest(path: &Path, docs: &[&Value]) -> PathBuf {
    let text: String = docs
        .iter()
        .map(|d| format!("---\n{}", serde_saphyr::to_string(d).expect("YAML")))
        .collect();
    std::fs::write(path, text).expect("writing a manifest");
    path.to_owned()
}

/// `kubectl --kubeconfig KC ARGS...`: (success, stdout + stderr).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("KUBECACHEDIR", roster_envtest::kubectl_cache_dir(kubeconfig))
        .args(args)
        .output()
        .expect("running kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `roster_*` metric names the dashboard's PromQL queries use, `_bucket` kept (histograms).
pub fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let path = Path::new(REPO).join("charts/roster/dashboards/roster.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            names.extend(metric_names(expr));
        }
    }
    names
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("roster_") {
        let start = i + at;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            names.push(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn metric_names_come_out_of_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum(rate(roster_queue_wait_seconds_bucket[5m])) by (le)) + x_roster_no"
        ),
        ["roster_queue_wait_seconds_bucket"]
    );
    assert_eq!(metric_names("roster_leader"), ["roster_leader"]);
}
