//! kube-controller-manager v1.20.2 as a process: the upstream peer of the differential test and the built-in
//! controllers roster takes over from and hands back to.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use roster_envtest::RealApiServer;
use roster_envtest::real::FEATURE_GATES;

use crate::support::{self, admin_get};

/// The Endpoints, EndpointSlice and EndpointSlice mirroring controllers, with the names of their work queues.
pub const ENDPOINT_CONTROLLERS: [(&str, &str); 3] = [
    ("endpoint", "endpoint"),
    ("endpointslice", "endpoint_slice"),
    ("endpointslicemirroring", "endpoint_slice_mirroring"),
];

/// kube-apiserver, etcd and kube-controller-manager from KUBEBUILDER_ASSETS, or `None` (printed) to skip.
/// `what` names the test in the skip message.
pub fn assets(what: &str) -> Option<(PathBuf, PathBuf)> {
    let why = match RealApiServer::assets_from_env() {
        None => "KUBEBUILDER_ASSETS with kube-apiserver and etcd is not set".to_string(),
        Some(dir) if !dir.join("kube-controller-manager").is_file() => format!(
            "{} has no kube-controller-manager (scripts/envtest-assets --with-controller-manager)",
            dir.display()
        ),
        Some(dir) => return Some((dir.clone(), dir.join("kube-controller-manager"))),
    };
    assert!(std::env::var_os("CI").is_none(), "{why} (scripts/test builds it)");
    eprintln!("{what} skipped: {why}");
    None
}

/// The flags every kube-controller-manager of the tests runs with: only `controllers`, the kubeconfig's
/// credentials for all of them, no leader election, no secure port (so it needs no delegated
/// authentication), the real tier's feature gates.
pub fn args(kubeconfig: &Path, controllers: &[&str]) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--controllers={}", controllers.join(",")),
        format!("--feature-gates={FEATURE_GATES}"),
        "--leader-elect=false".into(),
        "--use-service-account-credentials=false".into(),
        "--secure-port=0".into(),
    ]
}

/// kube-controller-manager 1.20.2 running only the given controllers, with its deprecated insecure port open for `/metrics` (work queue depths) and no secure port
/// (so it needs no delegated authentication).
pub struct Upstream {
    child: Child,
    controllers: Vec<(&'static str, &'static str)>,
    kcm: PathBuf,
    kubeconfig: PathBuf,
    metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Upstream {
    /// Starts kube-controller-manager with `controllers` (name, work queue) and waits for their caches.
    pub async fn start(
        kcm: &Path,
        kubeconfig: &Path,
        controllers: &[(&'static str, &'static str)],
    ) -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kube-controller-manager.log");
        let (child, metrics) = Upstream::spawn(kcm, kubeconfig, &log, controllers);
        let upstream = Upstream {
            child,
            controllers: controllers.to_vec(),
            kcm: kcm.to_owned(),
            kubeconfig: kubeconfig.to_owned(),
            metrics,
            log,
            _dir: dir,
        };
        upstream.wait_synced().await;
        upstream
    }

    /// Stops kube-controller-manager and starts a fresh one (empty caches, every Service synced again).
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        (self.child, self.metrics) =
            Upstream::spawn(&self.kcm, &self.kubeconfig, &self.log, &self.controllers);
        self.wait_synced().await;
    }

    fn spawn(kcm: &Path, kubeconfig: &Path, log: &Path, controllers: &[(&str, &str)]) -> (Child, SocketAddr) {
        let out = std::fs::File::create(log).unwrap();
        let port = roster_envtest::real::free_port().unwrap();
        let names: Vec<&str> = controllers.iter().map(|(name, _)| *name).collect();
        let child = Command::new(kcm)
            .args(args(kubeconfig, &names))
            .args(["--address=127.0.0.1", &format!("--port={port}")])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting kube-controller-manager");
        watchdog(child.id());
        (child, format!("127.0.0.1:{port}").parse().unwrap())
    }

    async fn wait_synced(&self) {
        support::eventually("kube-controller-manager synced its caches", || async {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            self.controllers
                .iter()
                .all(|(_, queue)| log.contains(&format!("Caches are synced for {queue} ")))
        })
        .await;
    }

    /// Whether every controller's work queue is empty and idle.
    pub async fn queue_empty(&self) -> bool {
        let Some((200, text)) = admin_get(self.metrics, "/metrics").await else {
            return false;
        };
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        self.controllers.iter().all(|(_, queue)| {
            value(&format!("workqueue_depth{{name=\"{queue}\"}}")) == Some(0.0)
                && value(&format!("workqueue_unfinished_work_seconds{{name=\"{queue}\"}}")) == Some(0.0)
        })
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Kills `pid` once this test process is gone, even when it dies without running destructors.
fn watchdog(pid: u32) {
    roster_envtest::real::spawn_watchdog(pid).expect("starting the process watchdog");
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
