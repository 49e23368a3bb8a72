//! Named network namespaces (`ip netns`), sockets made inside them, and their removal.
//!
//! Every namespace is named `roster-dp-<pid>-<n>`, so leftovers can be traced to a test process. A watchdog
//! shell, started with the first namespace, removes every namespace of that prefix (and kills what runs in
//! it) once the test process is gone, also when it was killed and ran no destructor.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use nix::sched::{CloneFlags, setns};

/// Where `ip netns add` mounts a namespace.
const NETNS_DIR: &str = "/run/netns";

/// The name prefix of this process's namespaces.
pub fn prefix() -> String {
    format!("roster-dp-{}-", std::process::id())
}

/// A network namespace of this test process; deleted (with every process inside) on drop.
pub struct Netns {
    name: String,
    handle: File,
}

impl Netns {
    /// Creates a fresh namespace with its loopback up.
    pub fn create() -> anyhow::Result<Netns> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        spawn_watchdog()?;
        let name = format!("{}{}", prefix(), NEXT.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name])?;
        let handle = File::open(format!("{NETNS_DIR}/{name}"));
        let netns = Netns {
            handle: handle.with_context(|| format!("opening {NETNS_DIR}/{name}"))?,
            name,
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <this namespace> <args>`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `program` as a command that runs inside this namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace: sockets `f` creates belong to it for good,
    /// whichever thread uses them afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> std::io::Result<T> + Send) -> std::io::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(&self.handle, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                    f()
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
        })
    }

    /// An unconnected TCP socket of this namespace, to connect from the tokio runtime.
    pub fn tcp_socket(&self) -> std::io::Result<tokio::net::TcpSocket> {
        self.run(tokio::net::TcpSocket::new_v4)
    }

    /// A blocking listener bound to `addr` in this namespace.
    pub fn listen(&self, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        self.run(|| std::net::TcpListener::bind(addr))
    }

    /// Output of `program args` run inside this namespace.
    pub fn output(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(program).args(args).output()?;
        if !out.status.success() {
            bail!(
                "{program} {} in {}: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &remove(&self.name)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A shell command that kills the processes in namespace `name` (a shell word), then deletes it. Links
/// inside go with it; a veth pair goes when either end does.
fn remove(name: &str) -> String {
    format!("ip netns pids {name} | xargs -r kill -9; ip netns del {name}")
}

/// Deletes every namespace of this process once it is gone (at most once per process).
fn spawn_watchdog() -> anyhow::Result<()> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        let me = std::process::id();
        let script = format!(
            "trap '' HUP INT TERM; while kill -0 {me} 2>/dev/null; do sleep 1; done; \
             for n in $(ip netns list | cut -d' ' -f1 | grep '^{}'); do {}; done",
            prefix(),
            remove("\"$n\"")
        );
        crate::real::spawn_shell(&script).map_err(|e| format!("starting the namespace watchdog: {e}"))
    });
    started.clone().map_err(anyhow::Error::msg)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `a.b.c.d/len` for `ip addr`.
pub fn cidr(ip: Ipv4Addr, len: u8) -> String {
    format!("{ip}/{len}")
}
