//! The controller under test as a separate process — roster's release binary or upstream's
//! kube-controller-manager — with its RSS and CPU time sampled from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use serde::Serialize;

use crate::cluster::Cluster;

/// Which controller, in which configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControllerKind {
    /// roster at its defaults (`--services all`, 5 workers, the adaptive write budget up to 200 writes/s,
    /// no batch window).
    Roster,
    /// kube-controller-manager `--controllers=endpoint` at its defaults (5 syncs, 20 QPS / burst 30).
    Upstream,
    /// kube-controller-manager with the scale-test flags (100 QPS / burst 100, 500 ms batch period).
    UpstreamScale,
    /// roster configured like upstream's scale-test flags: `--write-budget fixed --write-qps 100
    /// --write-burst 100 --batch-window 500ms`, the like-for-like peer of `upstream-scale`.
    RosterScale,
}

impl ControllerKind {
    /// Flags that lift the controller's write budget, for building a world's Endpoints quickly in a
    /// phase that is not measured.
    pub fn boost_flags(self) -> Vec<String> {
        let flags: &[&str] = match self {
            ControllerKind::Roster | ControllerKind::RosterScale => {
                &["--write-qps", "1000", "--write-burst", "1000"]
            }
            _ => &["--kube-api-qps=1000", "--kube-api-burst=1000"],
        };
        flags.iter().map(|f| f.to_string()).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            ControllerKind::Roster => "roster",
            ControllerKind::Upstream => "upstream",
            ControllerKind::UpstreamScale => "upstream-scale",
            ControllerKind::RosterScale => "roster-scale",
        }
    }

    pub fn is_upstream(self) -> bool {
        matches!(self, ControllerKind::Upstream | ControllerKind::UpstreamScale)
    }

    /// The upstream configuration this one is compared with in the ratio rows.
    pub fn peers(self) -> &'static [ControllerKind] {
        match self {
            ControllerKind::Roster => &[ControllerKind::Upstream, ControllerKind::UpstreamScale],
            ControllerKind::RosterScale => &[ControllerKind::UpstreamScale],
            _ => &[],
        }
    }
}

/// A running controller process.
pub struct Controller {
    pub kind: ControllerKind,
    child: Child,
    admin: Option<SocketAddr>,
    log: PathBuf,
    pub started: Instant,
    sampler: Sampler,
    _dir: tempfile::TempDir,
}

impl Controller {
    /// Starts `kind` against `cluster`; `extra` flags are appended (later flags win).
    pub fn start(kind: ControllerKind, cluster: &Cluster, extra: &[String]) -> anyhow::Result<Controller> {
        let dir = tempfile::tempdir()?;
        // BENCH_LOG_DIR keeps every controller's log (for diagnosis); ROSTER_BENCH_LOG sets roster's level.
        let log = match std::env::var_os("BENCH_LOG_DIR") {
            Some(d) => PathBuf::from(d).join(format!("{}-{}.log", kind.name(), log_stamp())),
            None => dir.path().join(format!("{}.log", kind.name())),
        };
        let out = std::fs::File::create(&log)?;
        let kubeconfig = cluster.controller_kubeconfig();
        let (mut cmd, admin) = match kind {
            ControllerKind::Roster => roster_command(kubeconfig, extra)?,
            ControllerKind::RosterScale => {
                let scale = [
                    "--write-budget",
                    "fixed",
                    "--write-qps",
                    "100",
                    "--write-burst",
                    "100",
                    "--batch-window",
                    "500ms",
                ];
                roster_command(kubeconfig, &override_flags(&scale.map(String::from), extra))?
            }
            _ => (upstream_command(kind, kubeconfig, cluster, extra)?, None),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))?;
        roster_envtest::real::spawn_watchdog(child.id())?;
        let sampler = Sampler::start(child.id());
        Ok(Controller {
            kind,
            child,
            admin,
            log,
            started: Instant::now(),
            sampler,
            _dir: dir,
        })
    }

    /// Waits until the controller has synced its caches and works: roster's `/readyz`, upstream's
    /// "Caches are synced for endpoint" log line. Returns the instant it was seen.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}):\n{}", self.kind.name(), self.log_tail(30));
            }
            let ready = match self.admin {
                Some(addr) => admin_get(addr, "/readyz").await.is_some_and(|(c, _)| c == 200),
                None => std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .contains("Caches are synced for endpoint"),
            };
            if ready {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {timeout:?}:\n{}",
                    self.kind.name(),
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the controller has used no CPU for `quiet`; returns the last instant it was busy.
    pub async fn wait_idle(&self, quiet: Duration, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.sampler.last_busy();
            if last.elapsed() >= quiet || Instant::now() > deadline {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|status| status.is_none())
    }

    pub fn cpu_seconds(&self) -> f64 {
        self.sampler.state().cpu_seconds
    }

    pub fn rss_mib(&self) -> f64 {
        self.sampler.state().rss_mib
    }

    /// Highest RSS seen since the last [`Controller::reset_peak`].
    pub fn peak_rss_mib(&self) -> f64 {
        self.sampler.state().peak_mib
    }

    pub fn reset_peak(&self) {
        let mut s = self.sampler.shared.lock().unwrap();
        s.peak_mib = s.rss_mib;
    }

    /// The sum of every series of roster's metric `name` (None: no admin server, or not exported).
    pub async fn metric_sum(&self, name: &str) -> Option<f64> {
        let (code, body) = admin_get(self.admin?, "/metrics").await?;
        if code != 200 {
            return None;
        }
        let values: Vec<f64> = body
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// The controller's process id (for attaching a profiler or debugger to a run).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.sampler.stop.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn roster_command(kubeconfig: &Path, extra: &[String]) -> anyhow::Result<(Command, Option<SocketAddr>)> {
    let port = roster_envtest::real::free_port()?;
    let admin: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let level = std::env::var("ROSTER_BENCH_LOG").unwrap_or_else(|_| "warn".into());
    // ROSTER_BENCH_BIN runs another build of roster (an A/B comparison of two commits side by side).
    let binary = std::env::var_os("ROSTER_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_roster").into());
    let mut cmd = Command::new(binary);
    cmd.args(["run", "--kubeconfig"])
        .arg(kubeconfig)
        .args([
            "--services",
            "all",
            // One replica, as upstream runs here (`--leader-elect=false`): no Lease writes.
            "--leader-elect=false",
            "--admin-addr",
            &admin.to_string(),
            "--log-level",
            &level,
        ])
        .args(extra);
    Ok((cmd, Some(admin)))
}

/// kube-controller-manager 1.20.2 standalone: only the endpoint controller, no leader election, no serving
/// ports (so it needs no delegated authentication), the kubeconfig's token for every controller.
fn upstream_command(
    kind: ControllerKind,
    kubeconfig: &Path,
    cluster: &Cluster,
    extra: &[String],
) -> anyhow::Result<Command> {
    let kcm = kube_controller_manager().context("kube-controller-manager not in KUBEBUILDER_ASSETS")?;
    let mut cmd = Command::new(kcm);
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display())).args([
        "--controllers=endpoint",
        "--leader-elect=false",
        "--use-service-account-credentials=false",
        "--secure-port=0",
        "--port=0",
        "--concurrent-endpoint-syncs=5",
        "-v=1",
    ]);
    if kind == ControllerKind::UpstreamScale {
        cmd.args([
            "--kube-api-qps=100",
            "--kube-api-burst=100",
            "--endpoint-updates-batch-period=500ms",
        ]);
    } else {
        cmd.args(["--kube-api-qps=20", "--kube-api-burst=30"]);
    }
    if cluster.memory().is_some() {
        // The in-memory server speaks JSON only.
        cmd.arg("--kube-api-content-type=application/json");
    }
    cmd.args(extra);
    Ok(cmd)
}

/// `$KUBEBUILDER_ASSETS/kube-controller-manager`, when present.
pub fn kube_controller_manager() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS")?).join("kube-controller-manager");
    path.is_file().then_some(path)
}

/// `base` (`--flag value` pairs) with every flag that `extra` sets replaced by `extra`'s value: clap
/// refuses a flag given twice, so "later flags win" has to be done here.
fn override_flags(base: &[String], extra: &[String]) -> Vec<String> {
    let set_by_extra = |flag: &String| extra.iter().step_by(2).any(|f| f == flag);
    let mut out: Vec<String> = base
        .chunks(2)
        .filter(|pair| !set_by_extra(&pair[0]))
        .flatten()
        .cloned()
        .collect();
    out.extend_from_slice(extra);
    out
}

fn log_stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A plain-HTTP GET of an admin endpoint (roster's or kube-controller-manager's), chunked bodies decoded.
pub use roster_envtest::http::get as admin_get;

#[derive(Clone, Copy)]
struct SampleState {
    cpu_seconds: f64,
    rss_mib: f64,
    peak_mib: f64,
    last_busy: Instant,
}

/// Reads the run time of every thread of the process (`/proc/<pid>/task/*/schedstat`, nanoseconds: the
/// clock-tick counters of /proc/<pid>/stat would make a per-event figure ±5 µs over a 2,000-event phase)
/// and /proc/<pid>/status (VmRSS) every 25 ms on a thread. A thread that exits keeps the run time it had at
/// the last sample.
struct Sampler {
    shared: Arc<Mutex<SampleState>>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let shared = Arc::new(Mutex::new(SampleState {
            cpu_seconds: 0.0,
            rss_mib: 0.0,
            peak_mib: 0.0,
            last_busy: Instant::now(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut threads = std::collections::HashMap::new();
            let mut ticks = 0;
            while !st.load(Ordering::Relaxed) {
                if !thread_run_ns(pid, &mut threads) {
                    break;
                }
                let rss = proc_status_kib(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
                // Busy means a clock tick's worth of CPU: a Go runtime's housekeeping never looks idle in ns.
                let now_ticks = proc_cpu_ticks(pid).unwrap_or(ticks);
                {
                    let mut g = s.lock().unwrap();
                    if now_ticks > ticks {
                        g.last_busy = Instant::now();
                    }
                    ticks = now_ticks;
                    g.cpu_seconds = threads.values().sum::<u64>() as f64 / 1e9;
                    g.rss_mib = rss;
                    g.peak_mib = g.peak_mib.max(rss);
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        Sampler { shared, stop }
    }

    fn state(&self) -> SampleState {
        *self.shared.lock().unwrap()
    }

    fn last_busy(&self) -> Instant {
        self.state().last_busy
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// utime + stime of `pid`, in clock ticks.
pub fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Updates `threads` (thread id → run time in ns) from /proc/<pid>/task/*/schedstat; false when the process
/// is gone.
fn thread_run_ns(pid: u32, threads: &mut std::collections::HashMap<u32, u64>) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        if let Some(ns) = schedstat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
        {
            threads.insert(tid, ns);
        }
    }
    true
}

/// A `kB` line of /proc/<pid>/status (VmRSS:, VmHWM:).
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds of `pid` (utime + stime).
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    Some(proc_cpu_ticks(pid)? as f64 / clock_ticks())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
