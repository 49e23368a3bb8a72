//! Faults only a real control plane can make: kube-apiserver killed and restarted mid-run (same etcd) while
//! pods change through a peer API server, and a second writer racing roster on its Endpoints. kube-apiserver
//! 1.20 serves no discovery.k8s.io/v1, so roster maintains Endpoints only here.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use kube::api::{Api, Patch, PatchParams};
use roster_envtest::{Kubelet, TestEnv, Tier, fixtures, kubeconfig};
use serde_json::json;
use support::*;

/// Waits for exactly these ready and not-ready pods in the `api` Endpoints.
async fn wait_endpoints(env: &TestEnv, ns: &str, ready: &[usize], not_ready: &[usize]) {
    wait_endpoint_ips(env, ns, "api", &api_ips(ready), &api_ips(not_ready)).await;
}

/// Lines the API server's audit log gained since `offset` bytes.
fn audit_since(dir: &std::path::Path, offset: usize) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap_or_default();
    text.get(offset..)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// kube-apiserver is SIGKILLed under a running roster; while it is down, pods change through a peer
/// kube-apiserver on the same etcd (as in an HA control plane): a readiness loss, a new pod, a pod that
/// finished, a pod deleted for good, and a flip that goes and comes back. After the restart roster publishes
/// every change, lists afresh, and keeps following changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restart_mid_run_loses_no_change() {
    if !tier_available(Tier::Real) {
        return;
    }
    let World { env, ns } = api_world(Tier::Real, "restart", 4).dedicated().build().await;
    // /livez with a bound of 20 s: the outage below lasts about 12 s, during which the watches retry (and
    // fail) well within it, so roster stays live; a restart would not bring the API server back.
    let roster = Roster::start(&env, &ns, &["--services", "all", "--livez-stall-after", "20s"]).await;
    wait_endpoints(&env, &ns, &[0, 1, 2, 3], &[]).await;

    let server = env.dedicated_real_server().unwrap();
    let peer = server.lock().await.start_peer().await.unwrap();
    let peer_client = kube::Client::try_from(kubeconfig::admin_config(&peer.url()).await.unwrap()).unwrap();
    let kubelet = Kubelet::new(peer_client.clone());
    server.lock().await.kill_apiserver();

    kubelet.set_ready(&ns, "api-0", false).await.unwrap();
    start_pod(&peer_client, &ns, &api_pod(4, true)).await;
    kubelet.set_phase(&ns, "api-2", "Succeeded").await.unwrap();
    kubelet.delete_gracefully(&ns, "api-3").await.unwrap();
    kubelet.finish_deletion(&ns, "api-3").await.unwrap();
    kubelet.set_ready(&ns, "api-1", false).await.unwrap();
    kubelet.set_ready(&ns, "api-1", true).await.unwrap();
    // roster's watches fail and back off meanwhile; it stays live all along.
    let down_until = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < down_until {
        assert_eq!(
            roster.get("/livez").await.map(|(code, _)| code),
            Some(200),
            "roster stays live while the API server is down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let audit_offset =
        std::fs::metadata(server.lock().await.dir().join("audit.log")).map_or(0, |m| m.len() as usize);
    server.lock().await.restart_apiserver().await.unwrap();
    drop(peer);
    wait_endpoints(&env, &ns, &[1, 4], &[0]).await;

    // Changes after the restart are followed too.
    env.kubelet().set_ready(&ns, "api-0", true).await.unwrap();
    wait_endpoints(&env, &ns, &[0, 1, 4], &[]).await;

    let dir = server.lock().await.dir().to_owned();
    let pod_lists = audit_since(&dir, audit_offset)
        .into_iter()
        .filter(|e| e["verb"] == "list" && e["objectRef"]["resource"] == "pods")
        .filter(|e| e["user"]["username"] == "admin") // roster's token; the server's own clients are others
        .count();
    eprintln!("pod lists after the restart: {pod_lists}");
    assert!(
        pod_lists >= 1,
        "roster's pod watch could not resume across the restart (410): it must relist"
    );
    roster.stop().await;
}

/// A second writer keeps overwriting roster's Endpoints (bogus subsets, roster's ownership label removed)
/// at the same moment as pods change readiness, so roster's updates race it and may conflict. roster always
/// ends at the correct Endpoints, owned by it again.
async fn a_racing_second_writer_never_wins(tier: Tier) {
    let World { env, ns } = api_world(tier, "racer", 4).build().await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_endpoints(&env, &ns, &[0, 1, 2, 3], &[]).await;
    let eps = Api::<Endpoints>::namespaced(env.client(), &ns);
    let mut ready = [true; 4];
    let mut round = 0;
    // Race until roster has hit at least one conflict (a few rounds in practice), so the retry path ran.
    while round < 12 || (conflicts(&roster.metrics().await) == 0.0 && round < 60) {
        round += 1;
        let pod = round % 4;
        ready[pod] = !ready[pod];
        let bogus = json!({
            "metadata": {"labels": {"endpoints.roster.dev/managed-by": null}},
            "subsets": [{"addresses": [{"ip": "192.0.2.99"}], "ports": [{"name": "http", "port": 8080}]}]
        });
        let (kubelet, name, params, patch) = (
            env.kubelet(),
            format!("api-{pod}"),
            PatchParams::default(),
            Patch::Merge(bogus),
        );
        let (flip, edit) = tokio::join!(
            kubelet.set_ready(&ns, &name, ready[pod]),
            eps.patch("api", &params, &patch),
        );
        flip.unwrap();
        edit.unwrap();
        let (want_ready, want_not): (Vec<usize>, Vec<usize>) = (0..4).partition(|i| ready[*i]);
        wait_endpoints(&env, &ns, &want_ready, &want_not).await;
    }
    let ep = endpoints(&env, &ns, "api").await.unwrap();
    assert_eq!(
        ep.metadata
            .labels
            .unwrap_or_default()
            .get("endpoints.roster.dev/managed-by")
            .map(String::as_str),
        Some("roster"),
        "roster's ownership label restored"
    );
    let conflicts = conflicts(&roster.metrics().await);
    eprintln!("{tier}: {conflicts} conflicts in {round} rounds");
    assert!(
        conflicts >= 1.0,
        "the second writer never made roster's update conflict"
    );
    roster.stop().await;
}

fn conflicts(metrics: &str) -> f64 {
    metric_sum(
        metrics,
        "roster_api_writes_total{outcome=\"conflict\",resource=\"endpoints\"",
    )
}

on_both_tiers!(a_racing_second_writer_never_wins);

/// A Service deleted while roster is down: nothing removes roster's slices (and, on the in-memory server,
/// its Endpoints) meanwhile, since no garbage collector runs here, and roster removes them when it starts
/// again, leaving a hand-made Endpoints and another Service's objects untouched.
async fn a_service_deleted_while_roster_is_down_is_cleaned_up_at_restart(tier: Tier) {
    let World { env, ns } = api_world(tier, "gone", 2).build().await;
    create(
        &env,
        &ns,
        &fixtures::service("keep", API, &[("http", 80, "http")]),
    )
    .await;
    let manual: Endpoints = serde_json::from_value(json!({"metadata": {"name": "manual"},
        "subsets": [{"addresses": [{"ip": "192.0.2.5"}], "ports": [{"port": 80}]}]}))
    .unwrap();
    let manual = create(&env, &ns, &manual).await;
    let first = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_endpoints(&env, &ns, &[0, 1], &[]).await;
    let keep = eventually_some("keep's Endpoints", || async {
        endpoints(&env, &ns, "keep")
            .await
            .filter(|e| endpoint_ips(e).0.len() == 2)
    })
    .await;
    if env.serves_endpointslices_v1() {
        eventually("api's slices", || async {
            slice_endpoints(&slices(&env, &ns, "api").await).len() == 2
        })
        .await;
    }
    first.stop().await;

    Api::<k8s_openapi::api::core::v1::Service>::namespaced(env.client(), &ns)
        .delete("api", &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // kube-apiserver 1.20 deletes a deleted Service's same-named Endpoints itself; the in-memory server,
    // like newer ones, leaves them.
    if tier == Tier::Memory {
        assert!(
            endpoints(&env, &ns, "api").await.is_some(),
            "nothing but roster removes them while it is down"
        );
    }
    if env.serves_endpointslices_v1() {
        assert!(
            !slices(&env, &ns, "api").await.is_empty(),
            "the slices stay while roster is down"
        );
    }

    let second = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_unpublished(&env, &ns, "api", "roster removes a deleted Service's objects").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rv = |e: Option<Endpoints>| e.and_then(|e| e.metadata.resource_version);
    assert_eq!(
        rv(endpoints(&env, &ns, "keep").await),
        keep.metadata.resource_version,
        "another Service's Endpoints were rewritten"
    );
    assert_eq!(
        rv(endpoints(&env, &ns, "manual").await),
        manual.metadata.resource_version,
        "a hand-made Endpoints was touched"
    );
    second.stop().await;
}

on_both_tiers!(a_service_deleted_while_roster_is_down_is_cleaned_up_at_restart);

/// Slow responses: every write to one Service's Endpoints takes ten seconds. The other Services' changes
/// are published meanwhile (a slow call holds up one worker, not the queue), and the slow write lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_writes_for_one_service_do_not_hold_up_the_others() {
    use roster_envtest::memory::{Fault, FaultAction, Verb};
    let mut world = api_world(Tier::Memory, "slow", 1);
    for s in 0..4 {
        let app = format!("other-{s}");
        let labels = [("app", app.as_str())];
        world = world
            .service(fixtures::service(&app, &labels, &[("http", 80, "8080")]))
            .pods([PodPlan::new(
                format!("{app}-pod"),
                &labels,
                format!("10.4.1.{}", s + 1),
            )]);
    }
    let World { env, ns } = world.build().await;
    let roster = Roster::start(&env, &ns, &["--services", "all", "--workers", "2"]).await;
    wait_endpoints(&env, &ns, &[0], &[]).await;
    let others_ready = |ready: bool| {
        let (env, ns) = (&env, &ns);
        async move {
            for s in 0..4 {
                let ep = endpoints(env, ns, &format!("other-{s}")).await;
                let ips = ep.map(|e| endpoint_ips(&e)).unwrap_or_default();
                if (ips.0.len() == 1) != ready || (ips.1.len() == 1) == ready {
                    return false;
                }
            }
            true
        }
    };
    eventually("the other Services converge", || others_ready(true)).await;

    let slow = Fault {
        verb: Some(Verb::Update),
        path_contains: Some("/endpoints/api".into()),
        ..Fault::new(FaultAction::Delay(Duration::from_secs(10)))
    };
    env.memory_server().unwrap().inject_fault(slow);
    env.kubelet().set_ready(&ns, "api-0", false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // a worker is now inside the slow write
    for s in 0..4 {
        env.kubelet()
            .set_ready(&ns, &format!("other-{s}-pod"), false)
            .await
            .unwrap();
    }
    eventually("the other Services converge while api's write hangs", || {
        others_ready(false)
    })
    .await;
    assert_eq!(
        endpoints(&env, &ns, "api").await.map(|e| endpoint_ips(&e)),
        Some((api_ips(&[0]), vec![])),
        "the other Services waited for the slow write (head-of-line blocking)"
    );
    wait_endpoints(&env, &ns, &[], &[0]).await;
    roster.stop().await;
}

/// An object roster cannot decode must not stop the Services' other pods from being followed. Here one pod's
/// status carries a condition without `status` (the in-memory server stores it as sent; kube-apiserver would
/// write `status: ""`), which `PodProjection` rejects.
///
/// Before the fix, the bad pod's own change was dropped and, after the next relist, every pod list failed, so
/// no pod change in the namespace was published any more. The projection now decodes leniently, as
/// k8s-openapi does (`#[serde(default)]` on the fields a sloppy server may omit, src/cache/pod.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_pod_does_not_stop_other_pods_from_being_followed() {
    use k8s_openapi::api::core::v1::Pod;
    let World { env, ns } = api_world(Tier::Memory, "undecodable", 2).build().await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_endpoints(&env, &ns, &[0, 1], &[]).await;
    let broken = json!({"status": {"conditions": [{"type": "Ready"}]}});
    Api::<Pod>::namespaced(env.client(), &ns)
        .patch_status("api-1", &PatchParams::default(), &Patch::Merge(broken))
        .await
        .unwrap();
    env.kubelet().set_ready(&ns, "api-0", false).await.unwrap();
    env.memory_server().unwrap().expire_all_watches(); // every watcher relists
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.kubelet().set_ready(&ns, "api-0", true).await.unwrap();
    // api-1 has no Ready=True condition any more: not ready; api-0 is ready again.
    wait_endpoints(&env, &ns, &[0], &[1]).await;
    roster.stop().await;
}
