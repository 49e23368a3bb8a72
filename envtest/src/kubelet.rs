//! Playing the kubelet (and the scheduler) through the API, identically on both tiers: Nodes, pod IPs,
//! the Ready condition and phase through `pods/status`, and graceful deletion.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::fixtures;

/// The label kubelet sets for a Node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

#[derive(Clone)]
pub struct Kubelet {
    client: kube::Client,
}

impl Kubelet {
    pub fn new(client: kube::Client) -> Self {
        Kubelet { client }
    }

    /// Creates a Ready Node, labelled with `zone` when given.
    pub async fn create_node(&self, name: &str, zone: Option<&str>) -> kube::Result<Node> {
        let nodes = Api::<Node>::all(self.client.clone());
        let node = nodes
            .create(&PostParams::default(), &fixtures::node(name, zone))
            .await?;
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .or(Ok(node))
    }

    /// Starts a pod: phase Running, the given IPs (first one is `podIP`), and the Ready condition.
    pub async fn start_pod(&self, ns: &str, name: &str, ips: &[&str], ready: bool) -> kube::Result<Pod> {
        let mut status = running_status(ips);
        status["conditions"] = conditions(ready);
        self.patch_status(ns, name, json!({ "status": status })).await
    }

    /// Flips the Ready condition (with a fresh `lastTransitionTime`), as a failing or passing probe would.
    pub async fn set_ready(&self, ns: &str, name: &str, ready: bool) -> kube::Result<Pod> {
        self.patch_status(ns, name, json!({"status": {"conditions": conditions(ready)}}))
            .await
    }

    /// Sets the pod's phase (for example Succeeded or Failed, which remove it from Endpoints).
    pub async fn set_phase(&self, ns: &str, name: &str, phase: &str) -> kube::Result<Pod> {
        self.patch_status(ns, name, json!({"status": {"phase": phase}}))
            .await
    }

    /// Replaces the pod's IPs (dual stack: pass one IP of each family).
    pub async fn set_ips(&self, ns: &str, name: &str, ips: &[&str]) -> kube::Result<Pod> {
        self.patch_status(ns, name, json!({ "status": running_status(ips) }))
            .await
    }

    /// Deletes a pod as a user would: a bound pod becomes terminating and stays until `finish_deletion`.
    pub async fn delete_gracefully(&self, ns: &str, name: &str) -> kube::Result<()> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns);
        pods.delete(name, &DeleteParams::default()).await.map(|_| ())
    }

    /// What kubelet does when the containers have stopped: removes the pod for good.
    pub async fn finish_deletion(&self, ns: &str, name: &str) -> kube::Result<()> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns);
        match pods.delete(name, &DeleteParams::default().grace_period(0)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn patch_status(&self, ns: &str, name: &str, patch: Value) -> kube::Result<Pod> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns);
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
    }
}

fn running_status(ips: &[&str]) -> Value {
    let pod_ips: Vec<Value> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
    json!({"phase": "Running", "podIP": ips.first(), "podIPs": pod_ips})
}

fn conditions(ready: bool) -> Value {
    let status = if ready { "True" } else { "False" };
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    json!([
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
        {"type": "Ready", "status": status, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
    ])
}
