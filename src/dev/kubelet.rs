//! The dev server's stand-in kubelet. It plays the kubelet only where asked: a pod bound to a Node
//! (`spec.nodeName`) gets an IP from the pod CIDR, phase Running and Ready=True; afterwards Ready follows the
//! annotation `roster.dev/ready` when the pod has one, and is otherwise left alone, so
//! `kubectl patch pod --subresource=status` flips stick. A terminating pod is removed once its grace period
//! (at most 10 s here) has passed. It never pretends to run containers.

use std::collections::HashMap;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The annotation that sets a dev pod's Ready condition: `kubectl annotate pod NAME roster.dev/ready=false --overwrite`.
pub const READY_ANNOTATION: &str = "roster.dev/ready";
/// Pod IPs come from 10.244.0.0/16.
const POD_CIDR_PREFIX: [u8; 2] = [10, 244];
const MAX_GRACE: Duration = Duration::from_secs(10);

pub async fn run(client: Client) {
    let mut ips: HashMap<String, String> = HashMap::new();
    let mut next: u32 = 2;
    let api: Api<Pod> = Api::all(client.clone());
    let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(events);
    while let Ok(Some(event)) = events.try_next().await {
        let pod = match event {
            Event::Apply(pod) | Event::InitApply(pod) => pod,
            _ => continue,
        };
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let ip = ips.entry(key).or_insert_with(|| {
            next += 1;
            format!(
                "{}.{}.{}.{}",
                POD_CIDR_PREFIX[0],
                POD_CIDR_PREFIX[1],
                next / 256,
                next % 256
            )
        });
        if let Err(err) = tend(&client, &pod, ip).await {
            tracing::warn!(pod = %pod.name_any(), %err, "dev kubelet could not update a pod");
        }
    }
}

async fn tend(client: &Client, pod: &Pod, ip: &str) -> kube::Result<()> {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(());
    };
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if pod.metadata.deletion_timestamp.is_some() {
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64;
        let (api, name) = (api.clone(), pod.name_any());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(grace).min(MAX_GRACE)).await;
            let _ = api.delete(&name, &DeleteParams::default().grace_period(0)).await;
        });
        return Ok(());
    }
    let status = pod.status.clone().unwrap_or_default();
    let has_ip = status.pod_ip.as_deref().is_some_and(|i| !i.is_empty());
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status == "True");
    let want_ready = match pod.annotations().get(READY_ANNOTATION) {
        Some(value) => value != "false",
        None => ready.unwrap_or(true),
    };
    let terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    if terminal || (has_ip && ready == Some(want_ready)) {
        return Ok(());
    }
    let pod_ip = status
        .pod_ip
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| ip.to_string());
    let flag = if want_ready { "True" } else { "False" };
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let patch = json!({"status": {
        "phase": "Running", "hostIP": "192.168.0.1", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now}
        ]
    }});
    let _ = node;
    api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
}
