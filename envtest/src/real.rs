//! The real tier: `etcd` + `kube-apiserver` from `KUBEBUILDER_ASSETS`, as Go's envtest runs them.
//!
//! Processes are started on free loopback ports with a temporary data directory (on tmpfs when there is one),
//! token authentication, RBAC, a service CIDR, the ServiceAccount admission plugin off and the EndpointSlice
//! feature gates the v1 facade needs ([`FEATURE_GATES`]). A watchdog shell kills them when the test process
//! goes away, so a crashed or aborted test leaves nothing running.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Token of the `system:masters` user the test environment's kubeconfig uses.
pub const ADMIN_TOKEN: &str = "roster-envtest-admin";
/// Service CIDR of the real tier (large enough for the benchmark populations).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// 1.20's alpha gates that make discovery.k8s.io/v1beta1 keep what v1 has: the serving and terminating
/// conditions and `nodeName` (the facade serves v1 from them; kube-controller-manager needs the same gates
/// to write them).
pub const FEATURE_GATES: &str = "EndpointSliceTerminatingCondition=true,EndpointSliceNodeName=true";

/// A running etcd + kube-apiserver pair.
pub struct RealApiServer {
    dir: tempfile::TempDir,
    assets: PathBuf,
    etcd: Child,
    apiserver: Child,
    port: u16,
    etcd_url: String,
    extra_tokens: Vec<String>,
}

impl RealApiServer {
    /// The directory named by `KUBEBUILDER_ASSETS`, when it holds `kube-apiserver` and `etcd`.
    pub fn assets_from_env() -> Option<PathBuf> {
        let dir = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS")?);
        (dir.join("kube-apiserver").is_file() && dir.join("etcd").is_file()).then_some(dir)
    }

    /// Starts etcd and kube-apiserver from `assets`; `extra_tokens` are lines of the static token file
    /// (`token,user,uid,"group1,group2"`) beside the admin token. A start-up that lost one of its ports to
    /// another process before binding it is tried again on new ports.
    pub async fn start(assets: &Path, extra_tokens: &[String]) -> anyhow::Result<Self> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            match Self::start_once(assets, extra_tokens).await {
                Err(e) if attempt < ATTEMPTS && format!("{e:#}").contains(PORT_TAKEN) => {
                    tracing::warn!(
                        attempt,
                        "test environment: a port was taken during start-up, retrying"
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(assets: &Path, extra_tokens: &[String]) -> anyhow::Result<Self> {
        let dir = scratch_dir()?;
        spawn_dir_cleaner(dir.path())?;
        write_service_account_keys(dir.path())?;
        let (etcd, etcd_url) = start_etcd(assets, dir.path())?;
        let port = free_port()?;
        let mut server = RealApiServer {
            apiserver: spawn_placeholder()?,
            dir,
            assets: assets.to_owned(),
            etcd,
            port,
            etcd_url,
            extra_tokens: extra_tokens.to_vec(),
        };
        server.apiserver = server.spawn_apiserver()?;
        server.wait_ready(Duration::from_secs(90)).await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where kube-apiserver keeps its self-signed serving certificate (`apiserver.crt`, `apiserver.key`).
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.id()
    }

    /// Kills kube-apiserver (SIGKILL) and starts it again on the same port against the same etcd.
    pub async fn restart_apiserver(&mut self) -> anyhow::Result<()> {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        self.apiserver = self.spawn_apiserver()?;
        self.wait_ready(Duration::from_secs(90)).await
    }

    /// Kills kube-apiserver without restarting it (for outage tests); `restart_apiserver` brings it back.
    pub fn kill_apiserver(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
    }

    /// The last `lines` lines of both processes' logs, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        ["etcd.log", "kube-apiserver.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f} (last {lines} lines) ---\n{}",
                    tail(&self.dir.path().join(f), lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts a second kube-apiserver on another port against the same etcd, as a highly available control
    /// plane has: it keeps serving (and clients of it keep changing objects) while this one is down.
    pub async fn start_peer(&self) -> anyhow::Result<PeerApiServer> {
        let port = free_port()?;
        let mut peer = PeerApiServer {
            child: self.spawn_apiserver_at(port, "-peer")?,
            port,
        };
        let started = Instant::now();
        while !readyz(port).await {
            if let Some(status) = peer.child.try_wait()? {
                bail!(
                    "the peer kube-apiserver exited during start-up ({status})\n{}",
                    tail(&self.dir.path().join("kube-apiserver-peer.log"), 30)
                );
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!("the peer kube-apiserver is not ready after 90s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(peer)
    }

    fn spawn_apiserver(&self) -> anyhow::Result<Child> {
        self.spawn_apiserver_at(self.port, "")
    }

    /// kube-apiserver on `port`; `suffix` keeps a peer's certificates, audit log and log apart.
    fn spawn_apiserver_at(&self, port: u16, suffix: &str) -> anyhow::Result<Child> {
        let d = self.dir.path();
        let mut tokens = format!("{ADMIN_TOKEN},admin,admin-uid,system:masters\n");
        for line in &self.extra_tokens {
            tokens.push_str(line);
            tokens.push('\n');
        }
        std::fs::write(d.join("tokens.csv"), tokens)?;
        let p = |f: &str| d.join(f).display().to_string();
        let args = [
            format!("--etcd-servers={}", self.etcd_url),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", p(&format!("certs{suffix}"))),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allow-privileged=true".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            format!("--audit-log-path={}", p(&format!("audit{suffix}.log"))),
            format!("--audit-policy-file={}", write_audit_policy(d)?),
            "--audit-log-format=json".into(),
            format!("--feature-gates={FEATURE_GATES}"),
        ];
        spawn_logged(
            &self.assets.join("kube-apiserver"),
            &args,
            &d.join(format!("kube-apiserver{suffix}.log")),
        )
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.apiserver.try_wait()? {
                bail!(
                    "kube-apiserver exited during start-up ({status})\n{}",
                    self.log_tail(30)
                );
            }
            if let Some(status) = self.etcd.try_wait()? {
                bail!("etcd exited during start-up ({status})\n{}", self.log_tail(30));
            }
            if readyz(self.port).await {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "kube-apiserver not ready after {timeout:?}\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A second kube-apiserver on the same etcd ([`RealApiServer::start_peer`]); killed on drop.
pub struct PeerApiServer {
    child: Child,
    port: u16,
}

impl PeerApiServer {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for PeerApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RealApiServer {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The audit log records every request with verb, resource and user: the benchmarks count writes from it.
fn write_audit_policy(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("audit-policy.yaml");
    std::fs::write(
        &path,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
         - level: None\n  nonResourceURLs: ['/readyz*', '/livez*', '/healthz*', '/version', '/metrics']\n\
         - level: Metadata\n",
    )?;
    Ok(path.display().to_string())
}

async fn readyz(port: u16) -> bool {
    // /readyz answers anonymous requests; a plain TLS-free probe is not possible, so use a kube client.
    let Ok(config) = crate::kubeconfig::admin_config(&format!("https://127.0.0.1:{port}")).await else {
        return false;
    };
    let Ok(client) = kube::Client::try_from(config) else {
        return false;
    };
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("static request");
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.request_text(req)).await,
        Ok(Ok(body)) if body.trim() == "ok"
    )
}

fn start_etcd(assets: &Path, dir: &Path) -> anyhow::Result<(Child, String)> {
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let args = [
        format!("--data-dir={}", dir.join("etcd-data").display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        "--quota-backend-bytes=8589934592".into(),
        "--log-level=warn".into(),
    ];
    let child = spawn_logged(&assets.join("etcd"), &args, &dir.join("etcd.log"))?;
    Ok((child, client_url))
}

fn spawn_logged(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    spawn_watchdog(child.id())?;
    Ok(child)
}

/// Kills `pid` once this test process is gone, even when it dies without running destructors.
pub fn spawn_watchdog(pid: u32) -> anyhow::Result<()> {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null"
    );
    spawn_shell(&script).context("starting the process watchdog")
}

/// Runs `script` in a shell of its own, detached from this process's standard streams, without waiting.
pub fn spawn_shell(script: &str) -> std::io::Result<()> {
    Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
}

/// Removes `dir` once this test process is gone: the shared server of a test binary lives in a static, whose
/// destructor never runs, and its etcd data would otherwise stay on tmpfs.
pub(crate) fn spawn_dir_cleaner(dir: &Path) -> anyhow::Result<()> {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; sleep 2; rm -rf '{}'",
        dir.display()
    );
    spawn_shell(&script).context("starting the scratch directory cleaner")
}

fn spawn_placeholder() -> anyhow::Result<Child> {
    Ok(Command::new("true").spawn()?)
}

fn write_service_account_keys(dir: &Path) -> anyhow::Result<()> {
    let key = dir.join("sa.key");
    run_quiet(
        Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048"),
    )?;
    run_quiet(
        Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(dir.join("sa.pub")),
    )
}

fn run_quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new()
        .prefix("roster-envtest-")
        .tempdir_in(if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        });
    Ok(builder?)
}

/// What etcd and kube-apiserver log when a port they were given is bound by someone else.
const PORT_TAKEN: &str = "address already in use";

/// First port [`free_port`] hands out; it counts up from there to the kernel's ephemeral range.
const FIXED_PORTS_START: u16 = 20_000;

/// A loopback port nothing listens on, for a process the test starts later.
///
/// It comes from below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), so that between this
/// check and the process binding it no socket bound to port 0 (another test's in-memory server) and no
/// outgoing connection can be handed the same port. Each test process starts at its own offset and counts
/// up, so parallel tests and test processes do not pick the same one.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::Ordering;
    let ports = &*FIXED_PORTS;
    let span = u32::from(ports.end - FIXED_PORTS_START);
    for _ in 0..span {
        let offset = ports.next.fetch_add(1, Ordering::Relaxed) % span;
        let port = FIXED_PORTS_START + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port in {FIXED_PORTS_START}..{}", ports.end)
}

/// The ports [`free_port`] hands out (`FIXED_PORTS_START..end`) and the offset of the next one, which
/// starts where this process's id puts it.
struct FixedPorts {
    end: u16,
    next: std::sync::atomic::AtomicU32,
}

static FIXED_PORTS: std::sync::LazyLock<FixedPorts> = std::sync::LazyLock::new(|| {
    let end = ephemeral_range_start().max(FIXED_PORTS_START + 1_000);
    let span = u32::from(end - FIXED_PORTS_START);
    let first = std::process::id().wrapping_mul(7_919) % span;
    FixedPorts {
        end,
        next: std::sync::atomic::AtomicU32::new(first),
    }
});

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let end = ephemeral_range_start();
        for port in &ports {
            assert!((FIXED_PORTS_START..end).contains(port), "port {port}");
            TcpListener::bind(("127.0.0.1", *port)).expect("a port handed out is free");
        }
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    }
}
