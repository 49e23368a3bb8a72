//! The latency floor: one watch delivery plus one write round trip. A trivial echo client watches the pods
//! of one Service and, on every event, writes the Service's whole Endpoints object, each pod's IP with its
//! node and target reference in `addresses` or `notReadyAddresses` (one update, no read); the harness
//! flips one pod's readiness and times, exactly as in the scenarios, until its own watch sees the echo.
//! With `pods` set to S2's size the echo writes an object as large as S2's: the floor of that scenario.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, PostParams};
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
        ("pods", 1.0),
    ]
}

pub async fn run(b: &Arc<Bench>, p: &Params) -> anyhow::Result<PhaseReport> {
    b.world
        .create_namespaces_and_nodes(&b.cluster, PREFIX, 1, 1)
        .await?;
    let pods: Vec<usize> = {
        let mut m = b.world.model();
        m.add_service(0, "echo");
        (0..p.n("pods").max(1))
            .map(|_| m.add_pod(0, "echo", true))
            .collect()
    };
    b.world.create_pods(&b.cluster, &pods, 48).await?;
    let pod = pods[0];
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

/// One pod as the echo writes it into the Endpoints.
struct EchoPod {
    ip: String,
    ready: bool,
    address: serde_json::Value,
}

fn echo_pod(pod: Pod) -> Option<(String, EchoPod)> {
    let status = pod.status.unwrap_or_default();
    let ip = status.pod_ip?;
    let ready = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let meta = pod.metadata;
    let name = meta.name.unwrap_or_default();
    let address = json!({
        "ip": ip,
        "nodeName": pod.spec.and_then(|s| s.node_name),
        "targetRef": {"kind": "Pod", "namespace": meta.namespace, "name": name, "uid": meta.uid},
    });
    Some((name, EchoPod { ip, ready, address }))
}

/// The Endpoints subsets of `pods`, ready and not ready addresses each in IP order.
fn echo_subsets(pods: &HashMap<String, EchoPod>) -> serde_json::Value {
    let mut sorted: Vec<&EchoPod> = pods.values().collect();
    sorted.sort_by(|a, b| a.ip.cmp(&b.ip));
    let of = |ready: bool| -> Vec<&serde_json::Value> {
        sorted
            .iter()
            .filter(|p| p.ready == ready)
            .map(|p| &p.address)
            .collect()
    };
    json!([{"addresses": of(true), "notReadyAddresses": of(false), "ports": [{"port": 80}]}])
}

/// Watches the pods of `ns` and writes the Endpoints `s0` of all of them, one unconditional update (no
/// resourceVersion, so no read) per event and one after the initial list.
async fn echo(client: kube::Client, ns: String) -> anyhow::Result<()> {
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let ep: Endpoints = serde_json::from_value(json!({"metadata": {"name": "s0"}}))?;
    let _ = eps.create(&PostParams::default(), &ep).await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let mut known = HashMap::new();
    let mut stream = watcher(pods, watcher::Config::default()).boxed();
    while let Some(ev) = stream.next().await {
        match ev? {
            watcher::Event::InitApply(pod) => {
                known.extend(echo_pod(pod));
                continue;
            }
            watcher::Event::Apply(pod) => known.extend(echo_pod(pod)),
            watcher::Event::InitDone => {}
            _ => continue,
        }
        let ep = json!({"metadata": {"name": "s0"}, "subsets": echo_subsets(&known)});
        eps.replace("s0", &PostParams::default(), &serde_json::from_value(ep)?)
            .await?;
    }
    Ok(())
}
