//! Debian's Prometheus server (package `prometheus`) as a test process: a scrape config like the chart's
//! ServiceMonitor's, roster's alert rules, storage in a temporary directory; killed, and its directory
//! removed, on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// One scrape job: its name (the ServiceMonitor's job is the metrics Service's name) and roster admin servers.
pub struct Job<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub targets: Vec<SocketAddr>,
}

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// `rules` (a rules file) with every `for:` removed, so that an alert fires at the first evaluation whose
/// expression holds: the test shows the conditions, the promtool unit tests the durations.
pub fn without_for(rules: &Path) -> String {
    let text = std::fs::read_to_string(rules).expect("the rules file");
    let mut doc: Value = serde_saphyr::from_str(&text).expect("the rules file is YAML");
    for group in doc["groups"].as_array_mut().expect("groups") {
        for rule in group["rules"].as_array_mut().expect("rules") {
            rule.as_object_mut().expect("a rule").remove("for");
        }
    }
    serde_json::to_string(&doc).expect("JSON is YAML")
}

impl Prometheus {
    /// Starts `prometheus` scraping `jobs` every second and evaluating `rules` (the file's text) every second.
    pub fn start(jobs: &[Job<'_>], rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("a directory for Prometheus");
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), config(jobs)).unwrap();
        let port = roster_envtest::real::free_port().expect("a free port");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("starting prometheus ({err}): apt-get install prometheus (scripts/test does)")
            });
        Prometheus { child, addr, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` of the HTTP API; `data` of a successful answer, `None` otherwise (not up yet, an error).
    pub async fn api(&mut self, path: &str) -> Option<Value> {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("prometheus exited ({status}):\n{}", self.log());
        }
        let (code, body) = roster_envtest::http::get(self.addr, path).await?;
        let answer: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && answer["status"] == "success").then(|| answer["data"].clone())
    }

    /// The result of an instant query.
    pub async fn query(&mut self, promql: &str) -> Option<Vec<Value>> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(promql)))
            .await?;
        data["result"].as_array().cloned()
    }

    /// Alerts pending or firing.
    pub async fn alerts(&mut self) -> Vec<Value> {
        let data = self.api("/api/v1/alerts").await;
        data.and_then(|d| d["alerts"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The firing alerts named `name`.
    pub async fn firing(&mut self, name: &str) -> Vec<Value> {
        let alerts = self.alerts().await.into_iter();
        alerts
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .collect()
    }

    /// When every rule group was last evaluated (the earliest of them); `None` before the first evaluation.
    pub async fn last_evaluation(&mut self) -> Option<jiff::Timestamp> {
        let data = self.api("/api/v1/rules").await?;
        let groups = data["groups"].as_array()?;
        let times = groups.iter().map(|g| g["lastEvaluation"].as_str()?.parse().ok());
        times.collect::<Option<Vec<jiff::Timestamp>>>()?.into_iter().min()
    }

    /// (job, scrape URL, health) of every active target.
    pub async fn targets(&mut self) -> Vec<(String, String, String)> {
        let data = self.api("/api/v1/targets?state=active").await;
        let active = data
            .and_then(|d| d["activeTargets"].as_array().cloned())
            .unwrap_or_default();
        let field = |t: &Value, k: &str| t[k].as_str().unwrap_or_default().to_owned();
        let mut out: Vec<_> = active
            .iter()
            .map(|t| {
                (
                    field(&t["labels"], "job"),
                    field(t, "scrapeUrl"),
                    field(t, "health"),
                )
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scrape job per roster installation, with the labels the ServiceMonitor's targets get (`job`, `namespace`).
fn config(jobs: &[Job<'_>]) -> String {
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|job| {
            let targets: Vec<String> = job.targets.iter().map(SocketAddr::to_string).collect();
            serde_json::json!({
                "job_name": job.name,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": targets, "labels": {"namespace": job.namespace}}],
            })
        })
        .collect();
    let config = serde_json::json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": jobs,
    });
    serde_json::to_string_pretty(&config).expect("JSON is YAML")
}

/// Percent-encoding of a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
