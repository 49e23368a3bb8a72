//! kube-proxy v1.20.2 in iptables mode, as a node of the cluster would run it, inside the node namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;

use super::netns::Netns;
use super::process::NodeProcess;

/// What kube-proxy reads and how often it may rewrite its rules.
#[derive(Clone, Debug)]
pub struct KubeProxyOptions {
    /// `EndpointSliceProxying`: off, kube-proxy 1.20 reads v1 Endpoints; on, it reads
    /// `discovery.k8s.io/v1beta1` EndpointSlices.
    pub endpoint_slices: bool,
    /// `--iptables-min-sync-period`: the least time between two rewrites of the rules (1 s by default, as
    /// kube-proxy's own default; rule changes in between wait for it).
    pub min_sync_period: Duration,
}

impl Default for KubeProxyOptions {
    fn default() -> Self {
        KubeProxyOptions {
            endpoint_slices: false,
            min_sync_period: Duration::from_secs(1),
        }
    }
}

/// The Node kube-proxy runs as: its name, its address, and the pod range it counts as the cluster's.
pub struct Node<'a> {
    pub name: &'a str,
    pub ip: Ipv4Addr,
    pub pod_cidr: &'a str,
}

/// kube-proxy of `KUBEBUILDER_ASSETS`, when it is there.
pub fn binary() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS")?).join("kube-proxy");
    path.is_file().then_some(path)
}

/// kube-proxy's flags: iptables mode; the node's address on the pod bridge as its node IP; no conntrack
/// sysctl it would change (the namespace's defaults do); health and metrics on the node's own loopback.
fn args(kubeconfig: &Path, node: &Node, options: &KubeProxyOptions) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--proxy-mode=iptables".into(),
        format!("--hostname-override={}", node.name),
        format!("--bind-address={}", node.ip),
        format!("--cluster-cidr={}", node.pod_cidr),
        "--masquerade-all=false".into(),
        format!(
            "--feature-gates=EndpointSliceProxying={}",
            options.endpoint_slices
        ),
        format!(
            "--iptables-min-sync-period={}ms",
            options.min_sync_period.as_millis()
        ),
        "--conntrack-max-per-core=0".into(),
        "--conntrack-tcp-timeout-established=0s".into(),
        "--conntrack-tcp-timeout-close-wait=0s".into(),
        "--healthz-bind-address=127.0.0.1:10256".into(),
        "--metrics-bind-address=127.0.0.1:10249".into(),
        "--oom-score-adj=0".into(),
        "--v=2".into(),
    ]
}

/// Starts kube-proxy in `node` and waits until it has written its rules once (the `kubernetes` Service's
/// are there).
pub async fn start(
    netns: &Netns,
    kubeconfig: &Path,
    node: &Node<'_>,
    options: &KubeProxyOptions,
    log: PathBuf,
) -> anyhow::Result<NodeProcess> {
    let Some(program) = binary() else {
        bail!("no kube-proxy in KUBEBUILDER_ASSETS (scripts/envtest-assets --with-kube-proxy)");
    };
    let args = args(kubeconfig, node, options);
    let mut proxy = NodeProcess::spawn(netns, &program, &args, log)?;
    let started = Instant::now();
    loop {
        if let Some(status) = proxy.exited() {
            bail!(
                "kube-proxy exited during start-up ({status}):\n{}",
                proxy.log_tail(30)
            );
        }
        if rules(netns)?.contains("default/kubernetes:https") {
            return Ok(proxy);
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("kube-proxy wrote no rules within 60 s:\n{}", proxy.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every table of `node` as `iptables-save` prints it.
pub fn rules(node: &Netns) -> anyhow::Result<String> {
    node.output("iptables-save", &[])
}
