//! The data-plane tier: kube-proxy v1.20.2 turning a real API server's Endpoints into iptables rules, and real
//! TCP connections through them, all inside network namespaces of this machine.
//!
//! * The **node** namespace holds a bridge with the pod range's gateway address, a route for the Service
//!   CIDR onto that bridge (so a ClusterIP has a route and kube-proxy's DNAT applies to locally made
//!   connections), kube-proxy, and a relay on its loopback to the API server on the host's loopback.
//! * Each **sandbox** (a pod, or any backend) is a namespace on that bridge with one address of
//!   [`POD_CIDR`] and HTTP servers that answer with their name and port ([`Sandbox`]).
//! * **Clients** connect from the node namespace ([`Client`]), as a pod on the host network would.
//!
//! No namespace has a route out of the machine: the node knows the pod range and the Service CIDR, a
//! sandbox only the pod range. Every namespace is deleted (its links, rules and processes with it) when its
//! owner is dropped, and by a watchdog when the test process dies (see [`netns`]). Needs root, `ip`,
//! `iptables`, `conntrack` and kube-proxy in `KUBEBUILDER_ASSETS` ([`DataPlane::unavailable`] says what is
//! missing).

mod client;
mod forward;
mod kube_proxy;
pub mod netns;
mod process;
mod sandbox;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;

pub use client::{Answer, Client, Load, Outcome};
pub use kube_proxy::KubeProxyOptions;
pub use netns::Netns;
pub use process::NodeProcess;
pub use sandbox::{Sandbox, Served};

use forward::Forward;

/// Addresses of sandboxes; the node's bridge has the first one.
pub const POD_CIDR: &str = "10.244.0.0/16";
const POD_PREFIX_LEN: u8 = 16;
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const BRIDGE: &str = "cni0";
/// Where the relay to the API server listens, on the node namespace's loopback.
pub const NODE_APISERVER: &str = "127.0.0.1:6443";
/// The Node name kube-proxy runs as.
pub const NODE_NAME: &str = "dataplane-node";

/// A node namespace with kube-proxy running against an API server, and the sandboxes plugged into it.
pub struct DataPlane {
    // Field order is drop order: processes before the relay they talk through, the namespace last.
    kube_proxy: NodeProcess,
    _relay: Forward,
    node: Arc<Netns>,
    kubeconfig: PathBuf,
    next_sandbox: AtomicU32,
    dir: tempfile::TempDir,
}

impl DataPlane {
    /// Why the tier cannot run here, or `None` when it can.
    pub fn unavailable() -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("the data-plane tier needs root (network namespaces, iptables)".into());
        }
        if kube_proxy::binary().is_none() {
            return Some(
                "KUBEBUILDER_ASSETS has no kube-proxy (scripts/envtest-assets --with-kube-proxy)".into(),
            );
        }
        let missing: Vec<&str> = ["ip", "iptables", "iptables-save", "iptables-restore", "conntrack"]
            .into_iter()
            .filter(|tool| !on_path(tool))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "the data-plane tier needs {} on PATH (Debian: iproute2, iptables, conntrack)",
                missing.join(", ")
            )
        })
    }

    /// Makes the node namespace and starts kube-proxy against the API server at `apiserver_url` (an
    /// `https://127.0.0.1:PORT` URL of the real tier), authenticating with `token`.
    pub async fn start(
        apiserver_url: &str,
        token: &str,
        options: &KubeProxyOptions,
    ) -> anyhow::Result<DataPlane> {
        let dir = tempfile::Builder::new().prefix("roster-dataplane-").tempdir()?;
        // A plane shared by a test binary lives in a static and is never dropped.
        crate::real::spawn_dir_cleaner(dir.path())?;
        let node = Arc::new(Netns::create()?);
        wire_node(&node)?;
        let relay = relay_to(&node, apiserver_url)?;
        let kubeconfig = dir.path().join("node.kubeconfig");
        crate::kubeconfig::write(&kubeconfig, &format!("https://{NODE_APISERVER}"), Some(token))?;
        let log = dir.path().join("kube-proxy.log");
        let node_spec = kube_proxy::Node {
            name: NODE_NAME,
            ip: GATEWAY,
            pod_cidr: POD_CIDR,
        };
        let kube_proxy = kube_proxy::start(&node, &kubeconfig, &node_spec, options, log).await?;
        Ok(DataPlane {
            kube_proxy,
            _relay: relay,
            node,
            kubeconfig,
            next_sandbox: AtomicU32::new(0),
            dir,
        })
    }

    /// A kubeconfig for processes inside the node namespace (through the relay).
    pub fn node_kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Starts `program args` inside the node namespace, logging to `<name>.log` in the plane's directory.
    pub fn spawn(&self, name: &str, program: &Path, args: &[String]) -> anyhow::Result<NodeProcess> {
        let log = self.dir.path().join(format!("{name}.log"));
        NodeProcess::spawn(&self.node, program, args, log)
    }

    /// A new sandbox on the node's bridge with the next free address of [`POD_CIDR`].
    pub fn sandbox(&self, name: &str) -> anyhow::Result<Sandbox> {
        let n = self.next_sandbox.fetch_add(1, Ordering::Relaxed);
        let ip = sandbox_ip(n).context("the pod range is exhausted")?;
        Sandbox::create(&self.node, BRIDGE, &format!("veth{n}"), name, ip, POD_PREFIX_LEN)
    }

    /// A client making connections from the node namespace.
    pub fn client(&self) -> Client {
        Client::new(self.node.clone())
    }

    /// The node's rules as `iptables-save` prints them (kube-proxy's Service rules among them).
    pub fn rules(&self) -> anyhow::Result<String> {
        kube_proxy::rules(&self.node)
    }

    /// Whether kube-proxy's rules send new connections to `ip` (a DNAT to it exists).
    pub fn routes_to(&self, ip: Ipv4Addr) -> anyhow::Result<bool> {
        Ok(self.routed()?.contains(&ip))
    }

    /// Every address kube-proxy's rules send new connections to (the targets of its DNAT rules).
    pub fn routed(&self) -> anyhow::Result<HashSet<Ipv4Addr>> {
        Ok(dnat_targets(&self.rules()?))
    }

    pub fn kube_proxy(&mut self) -> &mut NodeProcess {
        &mut self.kube_proxy
    }

    pub fn node(&self) -> &Netns {
        &self.node
    }
}

/// The bridge with the gateway address, and the Service CIDR routed onto it.
fn wire_node(node: &Netns) -> anyhow::Result<()> {
    node.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    node.ip(&[
        "addr",
        "add",
        &netns::cidr(GATEWAY, POD_PREFIX_LEN),
        "dev",
        BRIDGE,
    ])?;
    node.ip(&["link", "set", BRIDGE, "up"])?;
    node.ip(&["route", "add", crate::real::SERVICE_CIDR, "dev", BRIDGE])
}

/// A listener on the node's loopback relaying to the API server on the host's loopback.
fn relay_to(node: &Netns, apiserver_url: &str) -> anyhow::Result<Forward> {
    let target: SocketAddr = apiserver_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("the API server URL {apiserver_url} is not https://IP:PORT"))?;
    let listener = node.listen(NODE_APISERVER.parse()?)?;
    Ok(Forward::start(listener, move || TcpStream::connect(target))?)
}

/// The addresses of `--to-destination IP:PORT` in `iptables-save` output.
fn dnat_targets(rules: &str) -> HashSet<Ipv4Addr> {
    rules
        .split("--to-destination ")
        .skip(1)
        .filter_map(|rest| rest.split(':').next()?.parse().ok())
        .collect()
}

/// The `n`th sandbox address: 10.244.1.1 onwards, skipping .0 and .255 of every /24.
fn sandbox_ip(n: u32) -> Option<Ipv4Addr> {
    let (third, fourth) = (1 + n / 254, 1 + n % 254);
    (third < 255).then(|| Ipv4Addr::new(10, 244, third as u8, fourth as u8))
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_addresses_stay_in_the_pod_range_and_off_the_gateway() {
        assert_eq!(sandbox_ip(0), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(sandbox_ip(253), Some(Ipv4Addr::new(10, 244, 1, 254)));
        assert_eq!(sandbox_ip(254), Some(Ipv4Addr::new(10, 244, 2, 1)));
        assert_eq!(sandbox_ip(254 * 254 - 1), Some(Ipv4Addr::new(10, 244, 254, 254)));
        assert_eq!(sandbox_ip(254 * 254), None);
    }

    #[test]
    fn dnat_targets_are_read_from_kube_proxy_rules() {
        let rules = "-A KUBE-SEP-A -p tcp -m comment --comment \"ns/web:web\" -m tcp -j DNAT --to-destination 10.244.1.1:80\n\
                     -A KUBE-SEP-B -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8081\n\
                     -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -j KUBE-SVC-X\n";
        let want: HashSet<Ipv4Addr> = ["10.244.1.1", "10.244.1.2"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        assert_eq!(dnat_targets(rules), want);
        assert!(dnat_targets("-A KUBE-SERVICES -j KUBE-NODEPORTS\n").is_empty());
    }
}
