//! The roster binary run as the chart runs it: the Deployment's args, the pod's environment, and a
//! kubeconfig holding a ServiceAccount token minted with the TokenRequest API
//! ([`crate::support::credentials`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::{CONVERGE, admin_get};

/// The chart's args with the admin server moved to a free loopback port. Every flag must be one `roster run`
/// has: the chart would crash-loop on any other.
pub fn local_args(chart_args: &[String], admin: SocketAddr) -> Vec<String> {
    let unknown = unknown_flags(chart_args);
    assert!(
        unknown.is_empty(),
        "the chart passes flags `roster run` does not have: {unknown:?}"
    );
    chart_args
        .iter()
        .filter(|a| !a.starts_with("--admin-addr"))
        .cloned()
        .chain([format!("--admin-addr={admin}")])
        .collect()
}

/// Long flags in `args` that `roster run` does not define: the chart would crash-loop on any of them.
pub fn unknown_flags(args: &[String]) -> Vec<String> {
    let known = run_flags();
    let mut unknown: Vec<String> = args
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .filter(|flag| !known.contains(&flag[2..].to_string()))
        .collect();
    unknown.sort();
    unknown.dedup();
    unknown
}

/// Every long flag of `roster run`, as clap defines them.
pub fn run_flags() -> Vec<String> {
    use clap::CommandFactory;
    let cli = roster::args::Cli::command();
    let run = cli.find_subcommand("run").expect("roster run");
    run.get_arguments()
        .filter_map(|a| a.get_long())
        .map(str::to_string)
        .collect()
}

/// roster as a separate process with its own kubeconfig; SIGKILLed on drop.
pub struct RosterProcess {
    child: Child,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl RosterProcess {
    /// Starts `roster <args>` as pod `pod` of namespace `pod_ns` (POD_NAME, POD_NAMESPACE as the chart sets
    /// them) and waits for /readyz.
    pub async fn start(
        kubeconfig: &Path,
        chart_args: &[String],
        pod_ns: &str,
        pod: &str,
        dir: &Path,
    ) -> Self {
        let port = roster_envtest::real::free_port().expect("free port");
        let admin: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.join(format!("{pod}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(local_args(chart_args, admin))
            .env("ROSTER_KUBECONFIG", kubeconfig)
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", pod_ns)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting the roster binary");
        let mut process = RosterProcess { child, admin, log };
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while admin_get(admin, "/readyz")
            .await
            .is_none_or(|(code, _)| code != 200)
        {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("roster {pod} exited ({status}):\n{}", process.log_text());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "roster {pod} not ready:\n{}",
                process.log_text()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        process
    }

    pub async fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as kubelet stops a pod; roster releases its Lease and exits 0.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("roster exits");
        assert!(
            status.success(),
            "roster exited with {status}:\n{}",
            self.log_text()
        );
    }
}

impl Drop for RosterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
