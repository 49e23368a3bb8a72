//! Topology hints end to end (README row F30): `trafficDistribution` and `topology-mode: Auto` on the
//! in-memory tier (Nodes with zones and allocatable CPU, changes of Nodes, zones, readiness and mode), zero
//! writes when nothing changed, and on the real tier (kube-apiserver 1.20, which cannot store hints) slices
//! without hints and a Warning instead of a write that fails forever.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use roster_envtest::{TestEnv, Tier, fixtures};
use serde_json::{Value, json};
use support::*;

const WEB: &[(&str, &str)] = &[("app", "web")];

/// Service `web` (port 8080 to the pods' `http`) with these `spec` fields and annotations added.
fn web_service(spec: Value, annotations: Value) -> Service {
    let mut svc = serde_json::to_value(fixtures::service("web", WEB, &[("http", 8080, "http")])).unwrap();
    for (key, value) in spec.as_object().unwrap() {
        svc["spec"][key] = value.clone();
    }
    svc["metadata"]["annotations"] = annotations;
    serde_json::from_value(svc).unwrap()
}

/// Ready pod `web-<i>` at 10.6.0.<i+1> on `node`.
fn web_pod(i: usize, node: &str) -> PodPlan {
    let mut pod = PodPlan::new(format!("web-{i}"), WEB, format!("10.6.0.{}", i + 1)).port("http", 80);
    pod.node = node.to_owned();
    pod
}

/// What kubelet reports of a Node: allocatable CPU and the Ready condition, with a fresh heartbeat (which
/// roster does not read).
async fn report_node(env: &TestEnv, name: &str, cpu: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let heartbeat = jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"allocatable": {"cpu": cpu, "pods": "110"},
        "conditions": [{"type": "Ready", "status": status, "reason": "KubeletReady",
                        "lastHeartbeatTime": heartbeat}]}});
    Api::<Node>::all(env.client())
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap_or_else(|err| panic!("reporting Node {name}: {err}"));
}

async fn label_node_zone(env: &TestEnv, name: &str, zone: &str) {
    let patch = json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}});
    Api::<Node>::all(env.client())
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap_or_else(|err| panic!("labelling Node {name}: {err}"));
}

/// One endpoint as a proxy reads it: (address, zone, zones hinted, nodes hinted).
type Hinted = (String, Option<String>, Vec<String>, Vec<String>);

async fn hints(env: &TestEnv, ns: &str, service: &str) -> Vec<Hinted> {
    let mut all: Vec<Hinted> = slices(env, ns, service)
        .await
        .iter()
        .flat_map(|s| s.endpoints.clone())
        .map(|e| {
            let h = e.hints.unwrap_or_default();
            let zones = h
                .for_zones
                .unwrap_or_default()
                .into_iter()
                .map(|z| z.name)
                .collect();
            let nodes = h
                .for_nodes
                .unwrap_or_default()
                .into_iter()
                .map(|n| n.name)
                .collect();
            (e.addresses[0].clone(), e.zone, zones, nodes)
        })
        .collect();
    all.sort();
    all
}

/// Waits until the endpoints of `web` are `want`: (address, zone, zone hinted, node hinted), `""` for none.
async fn wait_hints(env: &TestEnv, ns: &str, what: &str, want: &[(&str, &str, &str, &str)]) {
    let names = |name: &str| name.split_terminator(',').map(str::to_owned).collect();
    let want: Vec<Hinted> = want
        .iter()
        .map(|(ip, zone, zones, nodes)| (ip.to_string(), Some(zone.to_string()), names(zones), names(nodes)))
        .collect();
    wait_web(env, ns, what, |got| *got == want).await;
}

/// Waits until the endpoints of `web` satisfy `holds`, and returns them.
async fn wait_web(env: &TestEnv, ns: &str, what: &str, holds: impl Fn(&Vec<Hinted>) -> bool) -> Vec<Hinted> {
    eventually_value(what, || hints(env, ns, "web"), holds).await
}

/// How many ready endpoints are hinted for each zone.
fn per_zone(endpoints: &[Hinted]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, _, zones, _) in endpoints {
        for zone in zones {
            *counts.entry(zone.clone()).or_default() += 1;
        }
    }
    counts
}

/// Service `web` with `trafficDistribution` and pods web-0 (n1, zone-a), web-1 (n2, zone-b), web-2 (n1).
async fn close_world(prefix: &str, traffic_distribution: &str) -> (TestEnv, String) {
    let World { env, ns } = World::builder(Tier::Memory, prefix)
        .node("n1", Some("zone-a"))
        .node("n2", Some("zone-b"))
        .service(web_service(
            json!({"trafficDistribution": traffic_distribution}),
            json!({}),
        ))
        .pods([web_pod(0, "n1"), web_pod(1, "n2"), web_pod(2, "n1")])
        .build()
        .await;
    (env, ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_distribution_hints_follow_zones_and_readiness() {
    let (env, ns) = close_world("close", "PreferClose").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let own_zones = [
        ("10.6.0.1", "zone-a", "zone-a", ""),
        ("10.6.0.2", "zone-b", "zone-b", ""),
        ("10.6.0.3", "zone-a", "zone-a", ""),
    ];
    wait_hints(
        &env,
        &ns,
        "PreferClose: each endpoint for its own zone",
        &own_zones,
    )
    .await;

    env.kubelet().set_ready(&ns, "web-1", false).await.unwrap();
    label_node_zone(&env, "n1", "zone-c").await;
    let moved = [
        ("10.6.0.1", "zone-c", "zone-c", ""),
        ("10.6.0.2", "zone-b", "", ""),
        ("10.6.0.3", "zone-c", "zone-c", ""),
    ];
    wait_hints(&env, &ns, "no hint when not ready; a new zone", &moved).await;
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_distribution_changes_change_the_hints() {
    let (env, ns) = close_world("samenode", "PreferSameNode").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let own_nodes = [
        ("10.6.0.1", "zone-a", "zone-a", "n1"),
        ("10.6.0.2", "zone-b", "zone-b", "n2"),
        ("10.6.0.3", "zone-a", "zone-a", "n1"),
    ];
    wait_hints(&env, &ns, "PreferSameNode: own node and own zone", &own_nodes).await;

    let same_zone = json!({"spec": {"trafficDistribution": "PreferSameZone"}});
    merge_patch::<Service>(&env, &ns, "web", same_zone).await;
    let own_zones = own_nodes.map(|(ip, zone, hint, _)| (ip, zone, hint, ""));
    wait_hints(&env, &ns, "PreferSameZone: own zone only", &own_zones).await;

    merge_patch::<Service>(&env, &ns, "web", json!({"spec": {"trafficDistribution": null}})).await;
    let none = own_nodes.map(|(ip, zone, _, _)| (ip, zone, "", ""));
    wait_hints(&env, &ns, "no trafficDistribution: hints removed", &none).await;
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_hints_follow_the_cpu_and_readiness_of_nodes() {
    let auto = json!({"service.kubernetes.io/topology-mode": "Auto"});
    let nodes = ["n1", "n1", "n1", "n2", "n2", "n2"];
    let World { env, ns } = World::builder(Tier::Memory, "auto")
        .node("n1", Some("zone-a"))
        .node("n2", Some("zone-b"))
        // The annotation wins over trafficDistribution.
        .service(web_service(
            json!({"trafficDistribution": "PreferSameNode"}),
            auto,
        ))
        .pods(nodes.iter().enumerate().map(|(i, n)| web_pod(i, n)))
        .build()
        .await;
    report_node(&env, "n1", "4", true).await;
    report_node(&env, "n2", "2", true).await;
    // Started on a complete world, roster's first sync of the Service already sets hints.
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;

    // zone-a has two thirds of the CPU: 4 of the 6 endpoints, so one of zone-b's serves zone-a.
    let two_to_one = BTreeMap::from([("zone-a".into(), 4), ("zone-b".into(), 2)]);
    let split = wait_web(&env, &ns, "hints by CPU share", |got| per_zone(got) == two_to_one).await;
    let given: Vec<&Hinted> = split
        .iter()
        .filter(|(_, zone, zones, _)| Some(&zones[0]) != zone.as_ref())
        .collect();
    assert_eq!(given.len(), 1, "exactly one endpoint changes zone: {split:?}");
    assert_eq!(
        (given[0].1.as_deref(), given[0].3.len()),
        (Some("zone-b"), 0),
        "and no node hint"
    );
    let enabled = wait_event(&env, &ns, "TopologyAwareHintsEnabled", "allocatable CPU").await;
    assert_eq!(enabled.type_.as_deref(), Some("Normal"));

    report_node(&env, "n2", "4", true).await;
    let even = |got: &Vec<Hinted>| got.iter().all(|(_, zone, zones, _)| zone.iter().eq(zones.iter()));
    wait_web(&env, &ns, "even CPU: each for its own zone", even).await;

    report_node(&env, "n2", "4", false).await;
    let none = |got: &Vec<Hinted>| got.len() == 6 && got.iter().all(|h| h.2.is_empty());
    wait_web(&env, &ns, "ready Nodes in one zone: no hints", none).await;
    let disabled = wait_event(&env, &ns, "TopologyAwareHintsDisabled", "all in one zone").await;
    assert_eq!(disabled.type_.as_deref(), Some("Warning"));

    report_node(&env, "n2", "4", true).await;
    wait_web(&env, &ns, "the Node is back: hints back", even).await;
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_hints_cost_no_writes() {
    let World { env, ns } = World::builder(Tier::Memory, "hintnoop")
        .node("n1", Some("zone-a"))
        .node("n2", Some("zone-b"))
        .build()
        .await;
    report_node(&env, "n1", "4", true).await;
    report_node(&env, "n2", "4", true).await;
    let first = Roster::start(&env, &ns, &["--services", "all"]).await;
    let auto = json!({"service.kubernetes.io/topology-mode": "Auto"});
    create(&env, &ns, &web_service(json!({}), auto)).await;
    let mut node = web_service(json!({"trafficDistribution": "PreferSameNode"}), json!({}));
    node.metadata.name = Some("web-node".into());
    create(&env, &ns, &node).await;
    let nodes = ["n1", "n2", "n1", "n2"];
    start_pods(&env, &ns, nodes.iter().enumerate().map(|(i, n)| web_pod(i, n))).await;
    let hinted_all = |got: &Vec<Hinted>| got.len() == 4 && got.iter().all(|h| !h.2.is_empty());
    wait_web(&env, &ns, "Auto hints", hinted_all).await;
    eventually_value(
        "PreferSameNode hints",
        || hints(&env, &ns, "web-node"),
        hinted_all,
    )
    .await;
    settled(&first, 2).await;

    // A heartbeat changes nothing roster reads; a restart reconciles every Service again.
    let server = env.memory_server().unwrap();
    server.reset_request_counts();
    let node_events = || async { metric(&first.metrics().await, "roster_watch_events_total{kind=\"node\"}") };
    let seen = node_events().await;
    report_node(&env, "n1", "4", true).await;
    eventually("the heartbeat seen", || async { node_events().await > seen }).await;
    first.stop().await;
    let second = Roster::start(&env, &ns, &["--services", "all"]).await;
    settled(&second, 2).await;
    let counts = server.request_counts();
    assert_eq!(counts.writes("endpointslices"), 0, "hinted slices rewritten");
    assert_eq!(counts.writes("endpoints"), 0, "Endpoints rewritten");
    assert_no_noop_writes(&counts);
    second.stop().await;
}

/// kube-apiserver 1.20 has no hints (its facade refuses them with a 422): roster writes slices without
/// them and says why, once, instead of failing on every sync. A server of the test's own, so that its Nodes
/// alone decide what the Auto allocation would do: here, hint every endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_store_hints_gets_slices_without_them() {
    if !tier_available(Tier::Real) {
        return;
    }
    let auto = json!({"service.kubernetes.io/topology-mode": "Auto"});
    let World { env, ns } = World::builder(Tier::Real, "nohints")
        .dedicated()
        .node("n1", Some("zone-a"))
        .node("n2", Some("zone-b"))
        .service(web_service(json!({}), auto))
        .pods([web_pod(0, "n1"), web_pod(1, "n2")])
        .build()
        .await;
    report_node(&env, "n1", "4", true).await;
    report_node(&env, "n2", "4", true).await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_hints(
        &env,
        &ns,
        "slices without hints",
        &[("10.6.0.1", "zone-a", "", ""), ("10.6.0.2", "zone-b", "", "")],
    )
    .await;
    let disabled = wait_event(
        &env,
        &ns,
        "TopologyAwareHintsDisabled",
        "cannot store EndpointSlice hints",
    )
    .await;
    assert_eq!(disabled.type_.as_deref(), Some("Warning"));
    env.kubelet().set_ready(&ns, "web-1", false).await.unwrap();
    wait_endpoint_ips(&env, &ns, "web", &["10.6.0.1"], &["10.6.0.2"]).await;
    settled(&roster, 2).await;
    let metrics = roster.metrics().await;
    assert_eq!(
        metric(&metrics, "roster_reconciles_total{result=\"invalid\"}"),
        0.0,
        "a write was refused"
    );
    assert_eq!(
        metric_sum(&metrics, "roster_queue_retries_total"),
        0.0,
        "a write failed"
    );
    roster.stop().await;
}
