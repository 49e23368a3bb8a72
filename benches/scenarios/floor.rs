//! The latency floor: one watch delivery plus one write round trip. A trivial echo client watches one pod
//! and, on every event, writes an Endpoints object with the pod's IP in `addresses` or `notReadyAddresses`
//! (one merge patch, no read); the harness flips the pod's readiness and times, exactly as in the
//! scenarios, until its own watch sees the echo.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::observer::{Expect, SvcKey};
use crate::report::{LatencySummary, PhaseReport};
use crate::run::{Bench, Params};

pub const PREFIX: &str = "bench-floor";

pub fn defaults(size: &str) -> Vec<(&'static str, f64)> {
    vec![
        ("samples", if size == "small" { 50.0 } else { 300.0 }),
        ("pause_ms", 20.0),
    ]
}

pub async fn run(b: &Arc<Bench>, p: &Params) -> anyhow::Result<PhaseReport> {
    b.world
        .create_namespaces_and_nodes(&b.cluster, PREFIX, 1, 1)
        .await?;
    let pod = {
        let mut m = b.world.model();
        m.add_service(0, "echo");
        m.add_pod(0, "echo", true)
    };
    b.world.create_pods(&b.cluster, &[pod], 1).await?;
    let ns = format!("{PREFIX}-0");
    let config = roster::client::config(Some(b.cluster.controller_kubeconfig())).await?;
    let echo_client = kube::Client::try_from(config)?;
    let echo = tokio::spawn(echo(echo_client, ns.clone()));
    let key: SvcKey = format!("{ns}/s0").into();
    // Wait until the echo has written once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while b.obs.get(&key).is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ip = b.world.model().pods[pod].ip;
    // The first flips open the clients' connections; the floor is the steady state.
    let warm_up = 10;
    for i in 0..p.n("samples") + warm_up {
        if i == warm_up {
            let _ = b.obs.take();
        }
        let ready = i % 2 == 1;
        b.world.model().pods[pod].ready = ready;
        let expect = if ready {
            Expect::Ready(ip)
        } else {
            Expect::NotReady(ip)
        };
        let id = b.obs.expect(&key, "echo", expect);
        b.world.set_ready(pod, ready).await?;
        b.obs.returned(&key, id);
        if !b.obs.wait_pending_seen(Duration::from_secs(10)).await {
            anyhow::bail!("the echo client did not answer within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(p.n("pause_ms") as u64)).await;
    }
    echo.abort();
    let lat = b.obs.take();
    let all: Vec<Duration> = lat.samples.iter().map(|s| s.latency).collect();
    // From before the write was sent: on the in-memory tier the echo can arrive before the response.
    let issued: Vec<Duration> = lat.samples.iter().map(|s| s.since_issue).collect();
    let from_issue = LatencySummary::of(&issued, &lat);
    let notes = [
        ("from_issue_p50_ms".to_string(), from_issue.p50_ms),
        ("from_issue_p99_ms".to_string(), from_issue.p99_ms),
    ];
    Ok(PhaseReport {
        phase: "floor".into(),
        latency: LatencySummary::of(&all, &lat),
        notes: notes.into_iter().collect(),
        ..PhaseReport::default()
    })
}

/// Watches the pods of `ns` and mirrors each one's readiness into the Endpoints `s0`, one patch per event.
async fn echo(client: kube::Client, ns: String) -> anyhow::Result<()> {
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let ep: Endpoints = serde_json::from_value(json!({"metadata": {"name": "s0"}}))?;
    let _ = eps.create(&PostParams::default(), &ep).await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let mut stream = watcher(pods, watcher::Config::default()).boxed();
    while let Some(ev) = stream.next().await {
        let (watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = ev? else {
            continue;
        };
        let status = pod.status.unwrap_or_default();
        let Some(ip) = status.pod_ip else { continue };
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let list = if ready { "addresses" } else { "notReadyAddresses" };
        let patch = json!({"subsets": [{ list: [{"ip": ip}], "ports": [{"port": 80}]}]});
        eps.patch("s0", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}
