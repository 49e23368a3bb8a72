//! The cases, each run on a plane (see `plane.rs`) in a namespace of its own. Pods are the seed notes'
//! examples (examples/*.yaml) where they fit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use roster::backendset::BackendSet;
use roster_envtest::dataplane::Outcome;
use roster_envtest::fixtures;
use serde_json::{Value, json};

use crate::plane::Plane;
use crate::support::eventually;
use crate::world::{BATCH, World, example};

/// The seed notes' three webserver pods, the `http` container port of each set to `ports[i]`.
fn webservers(ports: [i32; 3]) -> Vec<Pod> {
    let mut pods: Vec<Pod> = example("webserver.yaml", "Pod");
    for (pod, port) in pods.iter_mut().zip(ports) {
        let container = &mut pod.spec.as_mut().unwrap().containers[0];
        container.ports.as_mut().unwrap()[0].container_port = port;
    }
    pods
}

fn example_service(file: &str) -> Service {
    example(file, "Service").remove(0)
}

/// hostname-svc-clusterip: port 8080 → targetPort 80 reaches the two ready webservers and never the third.
pub async fn cluster_ip_reaches_exactly_the_ready_pods(plane: &'static Plane) {
    let mut w = World::new(plane, "dp-clusterip").await;
    for (i, pod) in webservers([80; 3]).into_iter().enumerate() {
        w.run_pod(pod, i != 2).await;
    }
    let addr = w.service(&example_service("hostname-svc-clusterip.yaml")).await[0];
    assert_eq!(addr.port(), 8080);
    let want = [("webserver-0", 80), ("webserver-1", 80)];
    w.wait_answered_by(addr, &want).await;
    let tally = w.ask(addr, BATCH).await;
    assert!(tally.failures.is_empty(), "{tally:?}");
    assert!(
        w.sandbox("webserver-2").served().is_empty(),
        "the pod that is not ready was reached through the Service"
    );
}

/// hostname-svc-named without session affinity: the named targetPort `http` is a different number on
/// each pod, and each pod is reached on its own.
pub async fn named_target_port_reaches_each_pods_own_port(plane: &'static Plane) {
    let mut w = World::new(plane, "dp-named").await;
    for pod in webservers([80, 8081, 8082]) {
        w.run_pod(pod, true).await;
    }
    let mut svc = example_service("hostname-svc-named.yaml");
    svc.spec.as_mut().unwrap().session_affinity = None;
    let addr = w.service(&svc).await[0];
    let want = [("webserver-0", 80), ("webserver-1", 8081), ("webserver-2", 8082)];
    w.wait_answered_by(addr, &want).await;
}

/// Two Service ports, one by number and one by name, each reaching its own container port on every pod.
pub async fn multi_port_service_maps_each_port(plane: &'static Plane) {
    let mut w = World::new(plane, "dp-multiport").await;
    let labels = [("app", "multi")];
    for name in ["multi-a", "multi-b"] {
        let pod = fixtures::pod(name, &labels, "", &[("http", 80), ("metrics", 9100)]);
        w.run_pod(pod, true).await;
    }
    let ports = [("web", 8080, "80"), ("metrics", 9090, "metrics")];
    let addrs = w.service(&fixtures::service("multi", &labels, &ports)).await;
    w.wait_answered_by(addrs[0], &[("multi-a", 80), ("multi-b", 80)])
        .await;
    w.wait_answered_by(addrs[1], &[("multi-a", 9100), ("multi-b", 9100)])
        .await;
}

/// hostname-svc-named as written (`sessionAffinity: ClientIP`): once all three pods are in the rules, every
/// connection of the one client lands on the same pod; when that pod stops being ready, the client moves to
/// another one and stays there.
pub async fn client_ip_affinity_keeps_a_client_on_one_pod(plane: &'static Plane) {
    let mut w = World::new(plane, "dp-affinity").await;
    let mut ips = Vec::new();
    for pod in webservers([80, 8081, 8082]) {
        ips.push(w.run_pod(pod, true).await);
    }
    let addr = w.service(&example_service("hostname-svc-named.yaml")).await[0];
    wait_routed(&w, &ips, true).await;
    let first = one_pod(&w, addr).await;
    w.set_ready(&first, false).await;
    let gone = w.sandbox(&first).ip();
    eventually("the unready pod leaves the rules", || async {
        !plane.dataplane.routes_to(gone).unwrap()
    })
    .await;
    let second = one_pod(&w, addr).await;
    assert_ne!(first, second, "the client stayed on a pod that is not ready");
}

/// A batch of requests all answered by one pod; its name.
async fn one_pod(w: &World, addr: SocketAddr) -> String {
    let tally = w.ask(addr, BATCH).await;
    assert!(tally.failures.is_empty(), "{tally:?}");
    let who = tally.who();
    assert_eq!(who.len(), 1, "ClientIP affinity let one client reach {who:?}");
    who.into_iter().next().unwrap().0
}

/// Waits until kube-proxy's rules send (or no longer send) new connections to every one of `ips`.
async fn wait_routed(w: &World, ips: &[String], routed: bool) {
    let dataplane = &w.plane.dataplane;
    eventually(
        &format!("the node's rules route to {ips:?}: {routed}"),
        || async {
            ips.iter()
                .all(|ip| dataplane.routes_to(ip.parse().unwrap()).unwrap() == routed)
        },
    )
    .await;
}

/// Readiness: a pod whose Ready condition turns False receives no new connections (while it keeps
/// serving); once True again, it does.
pub async fn a_pod_that_is_not_ready_gets_no_new_connections(plane: &'static Plane) {
    let mut w = World::new(plane, "dp-readiness").await;
    for pod in webservers([80; 3]) {
        w.run_pod(pod, true).await;
    }
    let addr = w.service(&example_service("hostname-svc-clusterip.yaml")).await[0];
    let all = [("webserver-0", 80), ("webserver-1", 80), ("webserver-2", 80)];
    w.wait_answered_by(addr, &all).await;

    w.set_ready("webserver-0", false).await;
    w.wait_answered_by(addr, &all[1..]).await;
    let since = Instant::now();
    let tally = w.ask(addr, BATCH).await;
    assert!(tally.failures.is_empty(), "{tally:?}");
    assert_eq!(
        w.sandbox("webserver-0").served_since(since),
        0,
        "a pod that is not ready got new connections"
    );

    w.set_ready("webserver-0", true).await;
    w.wait_answered_by(addr, &all).await;
}

/// A rolling update of 10 pods (one new pod at a time, maxUnavailable 0) under a steady 150 requests per
/// second: no request fails, and no request is answered by a pod after its deletion completed. Playing
/// kubelet, the test starts each new pod's server a moment after the Pod runs (not ready yet), and holds
/// each old pod's deletion (as a preStop hook would) until the node's rules no longer route to it.
pub async fn rolling_update_fails_no_request(plane: &'static Plane) {
    const PODS: usize = 10;
    const PER_SECOND: u32 = 150;
    let mut w = World::new(plane, "dp-rolling").await;
    let labels = [("app", "rolling")];
    let pod = |name: &str| fixtures::pod(name, &labels, "", &[("http", 80)]);
    let mut old = Vec::new();
    for i in 0..PODS {
        old.push(w.run_pod(pod(&format!("v1-{i}")), true).await);
    }
    let svc = fixtures::service("rolling", &labels, &[("web", 8080, "80")]);
    let addr = w.service(&svc).await[0];
    wait_routed(&w, &old, true).await;

    let started = Instant::now();
    let load = w.client.load(addr, PER_SECOND);
    let mut deleted = Vec::new();
    for i in 0..PODS {
        start_slowly(&mut w, pod(&format!("v2-{i}"))).await;
        deleted.push(delete_after_drain(&w, &format!("v1-{i}")).await);
    }
    let outcomes = load.finish().await;
    eprintln!(
        "rolling update: {} requests in {:.1} s",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, the first: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
    for (name, at) in &deleted {
        let late = w.sandbox(name).served_since(*at);
        assert_eq!(
            late, 0,
            "{name} answered {late} requests after its deletion completed"
        );
    }
    let new: Vec<String> = (0..PODS)
        .map(|i| w.sandbox(&format!("v2-{i}")).ip().to_string())
        .collect();
    wait_routed(&w, &new, true).await;
}

/// A new pod of a rollout: Running but not ready, its server up a moment later, then Ready.
async fn start_slowly(w: &mut World, pod: Pod) {
    let name = pod.metadata.name.clone().unwrap();
    w.create_starting_pod(pod).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.serve(&name, 80);
    w.set_ready(&name, true).await;
}

/// Deletes `name` gracefully; once the node no longer routes to it, completes the deletion and returns
/// when that was. The pod's server keeps answering, so a late route would show.
async fn delete_after_drain(w: &World, name: &str) -> (String, Instant) {
    w.kubelet.delete_gracefully(&w.ns, name).await.expect("delete");
    let ip = w.sandbox(name).ip();
    eventually(
        &format!("the terminating {name} leaves the node's rules"),
        || async { !w.plane.dataplane.routes_to(ip).unwrap() },
    )
    .await;
    w.kubelet
        .finish_deletion(&w.ns, name)
        .await
        .expect("finish deletion");
    (name.to_string(), Instant::now())
}

/// my-service: no selector, Endpoints made by hand, pointing at a backend outside any pod.
pub async fn selectorless_service_reaches_hand_made_endpoints(plane: &'static Plane) {
    let mut w = World::new(plane, "dp-selectorless").await;
    let ip = w.backend("my-backend", &[9376]);
    let addr = w.service(&example_service("my-service.yaml")).await[0];
    let mut endpoints: Endpoints = example("my-service.yaml", "Endpoints").remove(0);
    endpoints.subsets.as_mut().unwrap()[0].addresses.as_mut().unwrap()[0].ip = ip;
    w.create(&endpoints).await;
    w.wait_answered_by(addr, &[("my-backend", 9376)]).await;
}

/// ExternalName is only a DNS name: kube-proxy programs nothing for it. A ClusterIP Service created after it
/// shows that kube-proxy has seen both.
pub async fn external_name_gets_no_rules(plane: &'static Plane) {
    let mut w = World::new(plane, "dp-externalname").await;
    w.create(&example_service("externalname.yaml")).await;
    let labels = [("app", "witness")];
    w.run_pod(fixtures::pod("witness", &labels, "", &[("http", 80)]), true)
        .await;
    let witness = fixtures::service("witness", &labels, &[("web", 8080, "80")]);
    let addr = w.service(&witness).await[0];
    w.wait_answered_by(addr, &[("witness", 80)]).await;
    let rules = plane.dataplane.rules().unwrap();
    assert!(rules.contains(&format!("{}/witness:web", w.ns)), "{rules}");
    let search = format!("{}/search", w.ns);
    assert!(
        !rules.contains(&search),
        "kube-proxy programmed {search}:\n{rules}"
    );
}

/// backendset.yaml with its two backends in sandboxes: orders-db's ClusterIP reaches both, each on the
/// port its `pg` names.
pub async fn backendset_backend_is_reachable_through_the_cluster_ip(plane: &'static Plane) {
    let mut w = World::new(plane, "dp-backendset").await;
    let (a, b) = (w.backend("db-a", &[5432]), w.backend("db-b", &[6432]));
    let mut spec = backendset_spec("backendset.yaml");
    spec["backends"][0]["ip"] = json!(a);
    spec["backends"][1]["ip"] = json!(b);
    let addr = w.service(&example_service("backendset.yaml")).await[0];
    create_backendset(&w, "orders-db", spec).await;
    w.wait_answered_by(addr, &[("db-a", 5432), ("db-b", 6432)]).await;
}

/// backendset-probed.yaml with two IP backends: the one whose server stops fails its TCP probe and stops
/// receiving traffic; every request then succeeds on the other.
pub async fn backendset_backend_failing_its_probe_gets_no_traffic(plane: &'static Plane) {
    let mut w = World::new(plane, "dp-probed").await;
    let (a, b) = (w.backend("db-a", &[5432]), w.backend("db-b", &[6432]));
    let mut spec = backendset_spec("backendset-probed.yaml");
    spec["backends"] = json!([{"ip": a, "ports": {"pg": 5432}}, {"ip": b, "ports": {"pg": 6432}}]);
    spec["readinessProbe"]["periodSeconds"] = json!(1);
    let addr = w.service(&example_service("backendset.yaml")).await[0];
    create_backendset(&w, "orders-db", spec).await;
    w.wait_answered_by(addr, &[("db-a", 5432), ("db-b", 6432)]).await;
    w.sandboxes.get_mut("db-a").unwrap().stop(5432);
    w.wait_answered_by(addr, &[("db-b", 6432)]).await;
}

fn backendset_spec(file: &str) -> Value {
    let mut sets: Vec<Value> = example(file, "BackendSet");
    sets.remove(0)["spec"].take()
}

async fn create_backendset(w: &World, name: &str, spec: Value) {
    let set: BackendSet = serde_json::from_value(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "BackendSet",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("BackendSet");
    w.create(&set).await;
}
