//! Load and awkward input at modest sizes, on the in-memory tier (fast enough for CI in debug builds):
//! readiness and churn storms converge with a bounded queue and without starving an unrelated Service;
//! Services over 10,000 endpoints; pods with 200 labels; IPv6-only and dual-stack pods on single-stack
//! Services; annotated selectors that match everything (or are empty); Service turnover leaves no entry in
//! roster's overlay of unconfirmed writes.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use roster_envtest::{TestEnv, Tier, fixtures};
use serde_json::json;
use support::*;

/// Node `n1` in zone-a and `services`, on the in-memory tier.
async fn memory_world(prefix: &str, services: impl IntoIterator<Item = Service>) -> (TestEnv, String) {
    let world = World::builder(Tier::Memory, prefix).node("n1", Some("zone-a"));
    let World { env, ns } = world.services(services).build().await;
    (env, ns)
}

/// A Service selecting `app=<app>`, port 80 to container port 8080.
fn app_service(name: &str, app: &str) -> Service {
    fixtures::service(name, &[("app", app)], &[("http", 80, "8080")])
}

/// Services `<prefix><s>` selecting `app=<prefix><s>`, for `s` in `0..count`.
fn app_services(prefix: &str, count: usize) -> impl Iterator<Item = Service> {
    (0..count).map(move |s| app_service(&format!("{prefix}{s}"), &format!("{prefix}{s}")))
}

/// A pod of the Services above: labelled `app`, container port `http` 8080.
fn app_pod(name: String, app: &str, ip: String, ready: bool) -> PodPlan {
    PodPlan::new(name, &[("app", app)], ip)
        .port("http", 8080)
        .ready(ready)
}

/// Every Endpoints of the namespace by name, as (ready IPs, not-ready IPs).
async fn all_endpoints(env: &TestEnv, ns: &str) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let list = Api::<Endpoints>::namespaced(env.client(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    list.items
        .iter()
        .map(|e| (e.metadata.name.clone().unwrap(), endpoint_ips(e)))
        .collect()
}

/// Every roster EndpointSlice endpoint of the namespace by Service, as (ip, ready, serving, terminating).
async fn all_slice_endpoints(env: &TestEnv, ns: &str) -> BTreeMap<String, Vec<(String, bool, bool, bool)>> {
    let list = Api::<EndpointSlice>::namespaced(env.client(), ns)
        .list(
            &ListParams::default()
                .labels("endpointslice.kubernetes.io/managed-by=endpointslice-controller.roster.dev"),
        )
        .await
        .unwrap();
    let mut by_service: BTreeMap<String, Vec<EndpointSlice>> = BTreeMap::new();
    for slice in list.items {
        let service = slice.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"].clone();
        by_service.entry(service).or_default().push(slice);
    }
    by_service
        .into_iter()
        .map(|(service, slices)| (service, slice_endpoints(&slices)))
        .collect()
}

/// The state the storm leaves: per Service, (ready, not ready) IPs.
type Want = BTreeMap<String, (Vec<String>, Vec<String>)>;

fn storm_ip(service: usize, pod: usize) -> String {
    format!("10.8.{service}.{}", pod + 1)
}

/// 100 Services × 10 pods; the first pod of every Service flips not ready and back, round after round, as
/// fast as the test can send (S3-like). While that storm runs, an unrelated Service gets its first pod: it
/// must converge while the storm still goes on. roster's queue never holds more keys than there are Services, every
/// Service ends in the state the storm left, and no write is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_storm_keeps_the_queue_bounded_and_starves_no_service() {
    const SERVICES: usize = 100;
    const PODS: usize = 10;
    const ROUNDS: usize = 10;
    const STORM_LIMIT: Duration = Duration::from_secs(120);
    let services = app_services("s", SERVICES).chain([app_service("quiet", "quiet")]);
    let (env, ns) = memory_world("storm", services).await;
    let plans = (0..SERVICES)
        .flat_map(|s| {
            (0..PODS).map(move |p| app_pod(format!("s{s}-{p}"), &format!("s{s}"), storm_ip(s, p), true))
        })
        .collect();
    start_pods_in_bulk(&env, &ns, plans).await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let converged = |want: Want| {
        let env = &env;
        let ns = &ns;
        async move {
            let all = all_endpoints(env, ns).await;
            want.iter().all(|(name, ips)| all.get(name) == Some(ips))
        }
    };
    let mut want: Want = (0..SERVICES)
        .map(|s| {
            (
                format!("s{s}"),
                ((0..PODS).map(|p| storm_ip(s, p)).collect(), vec![]),
            )
        })
        .collect();
    for ips in want.values_mut() {
        ips.0.sort();
    }
    eventually("1000 pods published", || converged(want.clone())).await;
    env.memory_server().unwrap().reset_request_counts();

    // Sample roster's queue depth throughout.
    let sampling = Arc::new(AtomicBool::new(true));
    let max_depth = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let (sampling, max_depth, admin) = (sampling.clone(), max_depth.clone(), roster.admin);
        async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some((_, m)) = admin_get(admin, "/metrics").await {
                    max_depth.fetch_max(metric(&m, "roster_queue_depth") as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    // The storm goes on until the quiet Service has converged (and at least ROUNDS rounds), so that a
    // controller which starved it would fail here whatever the speed of the machine. STORM_LIMIT is only a
    // safety net, longer than `eventually` waits.
    let quiet_converged = Arc::new(AtomicBool::new(false));
    let (first_round_tx, first_round_rx) = tokio::sync::oneshot::channel();
    let storm = tokio::spawn({
        let (kubelet, ns, quiet_converged) = (env.kubelet(), ns.clone(), quiet_converged.clone());
        async move {
            let started = tokio::time::Instant::now();
            let mut first_round_tx = Some(first_round_tx);
            let mut rounds = 0;
            while rounds < ROUNDS || !quiet_converged.load(Ordering::SeqCst) {
                if started.elapsed() > STORM_LIMIT {
                    return false;
                }
                for ready in [false, true] {
                    futures::stream::iter(0..SERVICES)
                        .map(|s| {
                            let (kubelet, ns) = (kubelet.clone(), ns.clone());
                            async move { kubelet.set_ready(&ns, &format!("s{s}-0"), ready).await.unwrap() }
                        })
                        .buffer_unordered(CONCURRENCY)
                        .collect::<Vec<_>>()
                        .await;
                }
                rounds += 1;
                if let Some(tx) = first_round_tx.take() {
                    let _ = tx.send(());
                }
            }
            // The storm leaves the first pod of the first ten Services not ready.
            for s in 0..10 {
                kubelet.set_ready(&ns, &format!("s{s}-0"), false).await.unwrap();
            }
            true
        }
    });
    first_round_rx.await.unwrap();
    start_pods_in_bulk(
        &env,
        &ns,
        vec![app_pod("quiet-0".into(), "quiet", "10.8.200.1".into(), true)],
    )
    .await;
    eventually("the quiet Service converges during the storm", || async {
        endpoints(&env, &ns, "quiet")
            .await
            .is_some_and(|e| endpoint_ips(&e).0 == ["10.8.200.1"])
    })
    .await;
    quiet_converged.store(true, Ordering::SeqCst);
    assert!(
        storm.await.unwrap(),
        "the storm outlived its safety limit: the quiet Service was starved"
    );

    for s in 0..10 {
        let (ready, not_ready) = want.get_mut(&format!("s{s}")).unwrap();
        ready.retain(|ip| *ip != storm_ip(s, 0));
        not_ready.push(storm_ip(s, 0));
    }
    eventually("every Service in the state the storm left", || {
        converged(want.clone())
    })
    .await;
    eventually("every slice in the state the storm left", || async {
        let slices = all_slice_endpoints(&env, &ns).await;
        (0..SERVICES).all(|s| {
            let Some(eps) = slices.get(&format!("s{s}")) else {
                return false;
            };
            let flipped = s < 10;
            eps.len() == PODS
                && eps.iter().all(|(ip, ready, serving, terminating)| {
                    let want_ready = !(flipped && *ip == storm_ip(s, 0));
                    *ready == want_ready && *serving == want_ready && !terminating
                })
        })
    })
    .await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let max_depth = max_depth.load(Ordering::Relaxed);
    eprintln!("largest queue depth seen: {max_depth}");
    assert!(
        max_depth <= SERVICES as u64 + 1,
        "the queue held {max_depth} keys for {} Services",
        SERVICES + 1
    );
    let counts = env.memory_server().unwrap().request_counts();
    assert!(counts.writes("endpoints") > 0);
    assert_no_noop_writes(&counts);
    roster.stop().await;
}

/// Pods come and go, terminate, come back under the same names with new IPs, and move between Services
/// by relabelling, while roster runs. Afterwards every Service publishes exactly its pods (terminating ones
/// only in slices), and roster's pod cache holds exactly the pods that exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_churn_storm_converges_and_leaves_nothing_behind() {
    const SERVICES: usize = 20;
    const PODS: usize = 10;
    let (env, ns) = memory_world("churn", app_services("c", SERVICES)).await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let ip = |s: usize, p: usize, generation: usize| format!("10.9.{s}.{}", p + 1 + 100 * generation);
    // name → (service, ip, ready, terminating)
    let mut model: BTreeMap<String, (usize, String, bool, bool)> = BTreeMap::new();
    let mut plans = Vec::new();
    for s in 0..SERVICES {
        for p in 0..PODS {
            let name = format!("c{s}-{p}");
            model.insert(name.clone(), (s, ip(s, p, 0), true, false));
            plans.push(app_pod(name, &format!("c{s}"), ip(s, p, 0), true));
        }
    }
    start_pods_in_bulk(&env, &ns, plans).await;

    // Even pods are deleted; half of those for good, the others stay terminating.
    let kubelet = env.kubelet();
    let doomed: Vec<String> = model
        .keys()
        .filter(|n| n.rsplit('-').next().unwrap().parse::<usize>().unwrap() % 2 == 0)
        .cloned()
        .collect();
    futures::stream::iter(doomed.clone())
        .map(|name| {
            let (kubelet, ns) = (kubelet.clone(), ns.clone());
            async move {
                kubelet.delete_gracefully(&ns, &name).await.unwrap();
                if name.ends_with("-0") || name.ends_with("-4") || name.ends_with("-8") {
                    kubelet.finish_deletion(&ns, &name).await.unwrap();
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let mut reborn = Vec::new();
    for name in doomed {
        let gone = name.ends_with("-0") || name.ends_with("-4") || name.ends_with("-8");
        let entry = model.get_mut(&name).unwrap();
        if gone {
            // Back under the same name with a new IP, not ready at first.
            let (s, p) = (
                entry.0,
                name.rsplit('-').next().unwrap().parse::<usize>().unwrap(),
            );
            *entry = (s, ip(s, p, 1), false, false);
            reborn.push(app_pod(name, &format!("c{s}"), ip(s, p, 1), false));
        } else {
            entry.3 = true;
        }
    }
    start_pods_in_bulk(&env, &ns, reborn).await;
    // Pod 1 of every Service moves to the next Service.
    for s in 0..SERVICES {
        let name = format!("c{s}-1");
        let target = (s + 1) % SERVICES;
        let patch = json!({"metadata": {"labels": {"app": format!("c{target}")}}});
        merge_patch::<Pod>(&env, &ns, &name, patch).await;
        model.get_mut(&name).unwrap().0 = target;
    }
    // The reborn pods become ready.
    for (name, entry) in model.iter_mut().filter(|(_, e)| !e.2) {
        kubelet.set_ready(&ns, name, true).await.unwrap();
        entry.2 = true;
    }

    let mut want: Want = BTreeMap::new();
    let mut want_slices: BTreeMap<String, Vec<(String, bool, bool, bool)>> = BTreeMap::new();
    for (s, ip, ready, terminating) in model.values() {
        let service = format!("c{s}");
        if !terminating {
            let entry = want.entry(service.clone()).or_default();
            let list = if *ready { &mut entry.0 } else { &mut entry.1 };
            list.push(ip.clone());
        }
        let ready_condition = *ready && !terminating;
        want_slices
            .entry(service)
            .or_default()
            .push((ip.clone(), ready_condition, *ready, *terminating));
    }
    want.values_mut().for_each(|(r, n)| {
        r.sort();
        n.sort();
    });
    want_slices.values_mut().for_each(|v| v.sort());
    eventually("Endpoints match the pods after the churn", || async {
        all_endpoints(&env, &ns).await == want
    })
    .await;
    eventually("slices match the pods after the churn", || async {
        all_slice_endpoints(&env, &ns).await == want_slices
    })
    .await;
    let existing = Api::<Pod>::namespaced(env.client(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(existing, model.len());
    eventually("roster caches exactly the pods that exist", || async {
        metric(&roster.metrics().await, "roster_cached_objects{kind=\"pod\"}") == existing as f64
    })
    .await;
    let counts = env.memory_server().unwrap().request_counts();
    assert_no_noop_writes(&counts);
    roster.stop().await;
}

/// Service turnover: Services created, then half deleted (roster deletes their Endpoints and slices), then
/// readiness flips on the rest. Afterwards roster's overlay of its own writes is empty: every write and delete
/// was confirmed by the watch, including those whose event arrived before roster recorded the write (the
/// soak's memory growth: such entries used to wait forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_turnover_leaves_no_unconfirmed_writes_behind() {
    const SERVICES: usize = 30;
    let (env, ns) = memory_world("turnover", []).await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let mut plans = Vec::new();
    for s in 0..SERVICES {
        create(&env, &ns, &app_service(&format!("t{s}"), &format!("t{s}"))).await;
        for p in 0..2 {
            plans.push(app_pod(
                format!("t{s}-{p}"),
                &format!("t{s}"),
                format!("10.8.{s}.{}", p + 1),
                true,
            ));
        }
    }
    start_pods_in_bulk(&env, &ns, plans).await;
    eventually("every Service has its Endpoints", || async {
        all_endpoints(&env, &ns)
            .await
            .values()
            .filter(|(r, _)| r.len() == 2)
            .count()
            == SERVICES
    })
    .await;
    let services = Api::<Service>::namespaced(env.client(), &ns);
    for s in (0..SERVICES).step_by(2) {
        services
            .delete(&format!("t{s}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let kubelet = env.kubelet();
    for s in (1..SERVICES).step_by(2) {
        kubelet.set_ready(&ns, &format!("t{s}-0"), false).await.unwrap();
    }
    eventually(
        "deleted Services lose their Endpoints and slices; the rest show the flip",
        || async {
            let eps = all_endpoints(&env, &ns).await;
            let slices = all_slice_endpoints(&env, &ns).await;
            eps.len() == SERVICES / 2
                && slices.len() == SERVICES / 2
                && eps
                    .values()
                    .all(|(ready, not_ready)| ready.len() == 1 && not_ready.len() == 1)
        },
    )
    .await;
    // The gauge is refreshed every 10 s: let one refresh pass after convergence. (Entries expire after 60 s;
    // the flips' writes are younger than that here, so only the watch's confirmation can clear them.)
    tokio::time::sleep(Duration::from_secs(11)).await;
    eventually_value(
        "no unconfirmed writes left (unconfirmed Endpoints, unconfirmed slices, cached Endpoints)",
        || async {
            let m = roster.metrics().await;
            [
                metric(&m, "roster_unconfirmed_writes{kind=\"endpoints\"}"),
                metric(&m, "roster_unconfirmed_writes{kind=\"endpointslice\"}"),
                metric(&m, "roster_cached_objects{kind=\"endpoints\"}"),
            ]
        },
        |seen| *seen == [0.0, 0.0, (SERVICES / 2) as f64],
    )
    .await;
    roster.stop().await;
}

/// One Service over 10,000 pods (9 in 10 ready): the Endpoints keep 1,000 ready addresses with the
/// over-capacity annotation, the slices hold every pod in the fewest slices of 100, and a change beyond the
/// truncated part rewrites one slice and not the Endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_over_10000_endpoints_is_truncated_in_endpoints_and_whole_in_slices() {
    const PODS: usize = 10_050;
    let (env, ns) = memory_world("big", [app_service("big", "big")]).await;
    let ip = |i: usize| format!("10.10.{}.{}", i / 250, i % 250 + 1);
    let plans = (0..PODS)
        .map(|i| app_pod(format!("b{i:05}"), "big", ip(i), i % 10 != 0))
        .collect();
    start_pods_in_bulk(&env, &ns, plans).await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let (ready, not_ready): (Vec<usize>, Vec<usize>) = (0..PODS).partition(|i| i % 10 != 0);
    let ips_of = |pods: Vec<usize>| pods.into_iter().map(ip).collect::<Vec<_>>();
    wait_truncated(&env, &ns, "big", &ips_of(ready), &ips_of(not_ready)).await;
    let want_total = PODS;
    let slices = eventually_some("slices hold every pod", || async {
        let s = slices(&env, &ns, "big").await;
        (slice_endpoints(&s).len() == want_total).then_some(s)
    })
    .await;
    assert_eq!(slices.len(), PODS.div_ceil(100), "slices are full");
    assert!(slices.iter().all(|s| s.endpoints.len() <= 100));
    let mut ips: Vec<String> = slice_endpoints(&slices).into_iter().map(|e| e.0).collect();
    ips.dedup();
    assert_eq!(ips.len(), PODS, "an endpoint in two slices");
    let not_ready = slice_endpoints(&slices).iter().filter(|e| !e.1).count();
    assert_eq!(not_ready, PODS.div_ceil(10));

    // A not-ready pod far past the 1000 kept addresses (in address order) turns ready.
    let server = env.memory_server().unwrap();
    settled(&roster, 1).await;
    server.reset_request_counts();
    let last = PODS - 10;
    env.kubelet()
        .set_ready(&ns, &format!("b{last:05}"), true)
        .await
        .unwrap();
    eventually("the slice shows the change", || async {
        slice_endpoints(&slices_now(&env, &ns).await)
            .iter()
            .any(|e| e.0 == ip(last) && e.1)
    })
    .await;
    settled(&roster, 1).await;
    let counts = server.request_counts();
    assert_eq!(
        counts.writes("endpoints"),
        0,
        "the truncated Endpoints were rewritten"
    );
    assert_eq!(counts.writes("endpointslices"), 1, "one slice update");
    roster.stop().await;
}

async fn slices_now(env: &TestEnv, ns: &str) -> Vec<EndpointSlice> {
    slices(env, ns, "big").await
}

/// Pods with 200 labels each: Services select on one, two and three of them; a change to a label no
/// selector reads makes no write; a change to a selected label moves pods between Services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_label_sets_select_correctly_and_irrelevant_label_churn_writes_nothing() {
    const PODS: usize = 50;
    let deep_selector = [
        ("app", "huge"),
        ("example.com/l-000", "v"),
        ("example.com/l-199", "v"),
    ];
    let services = [
        app_service("huge", "huge"),
        fixtures::service(
            "shard-2",
            &[("app", "huge"), ("shard", "2")],
            &[("http", 80, "8080")],
        ),
        fixtures::service("deep", &deep_selector, &[("http", 80, "8080")]),
    ];
    let (env, ns) = memory_world("labels", services).await;
    let ip = |i: usize| format!("10.11.0.{}", i + 1);
    let plans = (0..PODS)
        .map(|i| {
            let pod = app_pod(format!("h{i:02}"), "huge", ip(i), true);
            let labelled = (0..200).fold(pod, |pod, l| pod.label(&format!("example.com/l-{l:03}"), "v"));
            labelled.label("shard", &(i % 5).to_string())
        })
        .collect();
    start_pods_in_bulk(&env, &ns, plans).await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let all: Vec<String> = {
        let mut v: Vec<String> = (0..PODS).map(ip).collect();
        v.sort();
        v
    };
    let shard = |n: usize| {
        let mut v: Vec<String> = (0..PODS).filter(|i| i % 5 == n).map(ip).collect();
        v.sort();
        v
    };
    let ready_ips = |name: &'static str| {
        let env = &env;
        let ns = &ns;
        async move { endpoints(env, ns, name).await.map(|e| endpoint_ips(&e).0) }
    };
    // Both kinds: the request counts are reset next, and a slice of the first sync written after the
    // reset would count as a write of the label churn.
    eventually(
        "huge, shard-2 and deep converge in Endpoints and slices",
        || async {
            let slices = all_slice_endpoints(&env, &ns).await;
            let slice_ips = |name: &str| {
                let mut ips: Vec<String> = slices
                    .get(name)?
                    .iter()
                    .filter(|e| e.1)
                    .map(|e| e.0.clone())
                    .collect();
                ips.sort();
                Some(ips)
            };
            ready_ips("huge").await.as_ref() == Some(&all)
                && ready_ips("shard-2").await == Some(shard(2))
                && ready_ips("deep").await.as_ref() == Some(&all)
                && slice_ips("huge").as_ref() == Some(&all)
                && slice_ips("shard-2") == Some(shard(2))
                && slice_ips("deep").as_ref() == Some(&all)
        },
    )
    .await;

    let server = env.memory_server().unwrap();
    server.reset_request_counts();
    let before = metric(&roster.metrics().await, "roster_watch_events_total{kind=\"pod\"}");
    for i in 0..PODS {
        let patch = json!({"metadata": {"labels": {"example.com/l-100": "w"}}});
        merge_patch::<Pod>(&env, &ns, &format!("h{i:02}"), patch).await;
    }
    eventually("roster saw every label change", || async {
        metric(&roster.metrics().await, "roster_watch_events_total{kind=\"pod\"}") >= before + PODS as f64
    })
    .await;
    settled(&roster, 3).await;
    let counts = server.request_counts();
    assert_eq!(
        counts.writes("endpoints"),
        0,
        "an unselected label change was written"
    );
    assert_eq!(
        counts.writes("endpointslices"),
        0,
        "an unselected label change was written"
    );

    // Shard 0 joins shard 2; pod h00 loses a label "deep" selects.
    for i in (0..PODS).filter(|i| i % 5 == 0) {
        let patch = json!({"metadata": {"labels": {"shard": "2"}}});
        merge_patch::<Pod>(&env, &ns, &format!("h{i:02}"), patch).await;
    }
    let patch = json!({"metadata": {"labels": {"example.com/l-199": null}}});
    merge_patch::<Pod>(&env, &ns, "h00", patch).await;
    let mut shards_0_and_2 = [shard(0), shard(2)].concat();
    shards_0_and_2.sort();
    let deep: Vec<String> = all.iter().filter(|i| **i != ip(0)).cloned().collect();
    eventually("relabelled pods move", || async {
        ready_ips("shard-2").await == Some(shards_0_and_2.clone())
            && ready_ips("deep").await == Some(deep.clone())
    })
    .await;
    roster.stop().await;
}

/// A single-stack IPv4 Service publishes only IPv4 addresses of IPv4-only and dual-stack pods (whichever
/// family the pod lists first) and no IPv6-only pod; a dual-stack headless Service publishes the IPv4
/// family in its Endpoints and one slice set per family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_only_and_dual_stack_pods_on_single_stack_and_dual_stack_services() {
    let dual: Service = serde_json::from_value(json!({
        "metadata": {"name": "dual"},
        "spec": {"clusterIP": "None", "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
                 "selector": {"app": "mixed"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    let (env, ns) = memory_world("families", [app_service("v4", "mixed"), dual]).await;
    let plan = |name: &str, ips: &[&str]| {
        PodPlan::new(name, &[("app", "mixed")], ips[0])
            .ips(ips)
            .port("http", 8080)
    };
    start_pods_in_bulk(
        &env,
        &ns,
        vec![
            plan("v4-only", &["10.7.0.1"]),
            plan("v6-only", &["fd00::7:2"]),
            plan("dual", &["10.7.0.3", "fd00::7:3"]),
            plan("dual-v6-first", &["fd00::7:4", "10.7.0.4"]),
        ],
    )
    .await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let v4: Vec<String> = ["10.7.0.1", "10.7.0.3", "10.7.0.4"].map(String::from).to_vec();
    let v6: Vec<String> = ["fd00::7:2", "fd00::7:3", "fd00::7:4"].map(String::from).to_vec();
    for name in ["v4", "dual"] {
        eventually(&format!("{name}: IPv4 addresses only in Endpoints"), || async {
            endpoints(&env, &ns, name)
                .await
                .is_some_and(|e| endpoint_ips(&e) == (v4.clone(), vec![]))
        })
        .await;
    }
    let by_type = |slices: &[EndpointSlice], address_type: &str| {
        let of_type: Vec<EndpointSlice> = slices
            .iter()
            .filter(|s| s.address_type == address_type)
            .cloned()
            .collect();
        let ips: Vec<String> = slice_endpoints(&of_type).into_iter().map(|e| e.0).collect();
        (of_type.len(), ips)
    };
    eventually("v4: IPv4 slices only", || async {
        let s = slices(&env, &ns, "v4").await;
        by_type(&s, "IPv4").1 == v4 && by_type(&s, "IPv6").0 == 0 && s.len() == 1
    })
    .await;
    eventually("dual: one slice set per family", || async {
        let s = slices(&env, &ns, "dual").await;
        by_type(&s, "IPv4") == (1, v4.clone()) && by_type(&s, "IPv6") == (1, v6.clone())
    })
    .await;
    roster.stop().await;
}

/// In annotated mode, `roster.dev/selector: "app"` selects every pod with an `app` label and `"!canary"`
/// every pod without `canary`, whatever their values; an empty annotation is rejected with an
/// InvalidSelector Event and counted, and publishes nothing. A healthy Service beside them converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_selectors_matching_everything_or_nothing() {
    let (env, ns) = memory_world("everything", []).await;
    let roster = Roster::start(&env, &ns, &["--services", "annotated"]).await;
    let annotated = |name: &str, selector: &str| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"roster.dev/selector": selector}},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .unwrap()
    };
    for (name, selector) in [
        ("any-app", "app"),
        ("no-canary", "!canary"),
        ("empty", ""),
        ("good", "app=x"),
    ] {
        create(&env, &ns, &annotated(name, selector)).await;
    }
    let plan =
        |name: &str, labels: &[(&str, &str)], ip: &str| PodPlan::new(name, labels, ip).port("http", 8080);
    start_pods_in_bulk(
        &env,
        &ns,
        vec![
            plan("a", &[("app", "x")], "10.12.0.1"),
            plan("b", &[("app", "y")], "10.12.0.2"),
            plan("c", &[("tier", "z")], "10.12.0.3"),
            plan("d", &[("app", "x"), ("canary", "true")], "10.12.0.4"),
        ],
    )
    .await;
    let want = [
        ("any-app", vec!["10.12.0.1", "10.12.0.2", "10.12.0.4"]),
        ("no-canary", vec!["10.12.0.1", "10.12.0.2", "10.12.0.3"]),
        ("good", vec!["10.12.0.1", "10.12.0.4"]),
    ];
    for (name, ips) in want {
        eventually(&format!("{name} selects {ips:?}"), || async {
            endpoints(&env, &ns, name)
                .await
                .is_some_and(|e| endpoint_ips(&e).0 == ips)
        })
        .await;
    }
    let events = Api::<Event>::namespaced(env.client(), &ns);
    let warning = eventually_some("InvalidSelector event for the empty selector", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("InvalidSelector")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("empty")
        })
    })
    .await;
    assert!(
        warning.note.unwrap_or_default().contains("empty selector"),
        "the Event says why"
    );
    assert!(
        endpoints(&env, &ns, "empty").await.is_none(),
        "an empty selector publishes nothing"
    );
    // The reconcile counts its result only after the Event it published is answered: wait for the count.
    eventually("the invalid selector is counted", || async {
        let m = roster.metrics().await;
        metric(&m, "roster_reconciles_total{result=\"invalid\"}") >= 1.0
            && metric(&m, "roster_invalid_objects_total{kind=\"service\"}") >= 1.0
    })
    .await;
    // Deleting a pod the catch-all selectors hold updates them too.
    Api::<Pod>::namespaced(env.client(), &ns)
        .delete("b", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("b leaves the catch-all Services", || async {
        let any = endpoints(&env, &ns, "any-app").await.map(|e| endpoint_ips(&e).0);
        let no_canary = endpoints(&env, &ns, "no-canary")
            .await
            .map(|e| endpoint_ips(&e).0);
        any == Some(vec!["10.12.0.1".into(), "10.12.0.4".into()])
            && no_canary == Some(vec!["10.12.0.1".into(), "10.12.0.3".into()])
    })
    .await;
    roster.stop().await;
}

/// Three replicas with leader election; the leader is SIGKILLed in the middle of a readiness storm. Another
/// replica takes over once the Lease expires, the changes made meanwhile are all published, and the replica
/// that never led wrote nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_a_readiness_storm_hands_over_and_followers_never_write() {
    const SERVICES: usize = 20;
    const PODS: usize = 5;
    let (env, ns) = memory_world("failover", app_services("f", SERVICES)).await;
    let ip = |s: usize, p: usize| format!("10.13.{s}.{}", p + 1);
    let plans = (0..SERVICES)
        .flat_map(|s| (0..PODS).map(move |p| app_pod(format!("f{s}-{p}"), &format!("f{s}"), ip(s, p), true)))
        .collect();
    start_pods_in_bulk(&env, &ns, plans).await;
    let mut replicas = Vec::new();
    for id in ["a", "b", "c"] {
        replicas.push(
            RosterProcess::start(&env, &ns, &[&LEADER_ELECTION[..], &["--identity", id]].concat()).await,
        );
    }
    let leader_index = eventually_some("exactly one leader", || async {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if metric(&r.metrics().await, "roster_leader") == 1.0 {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await;
    let converged = |not_ready: usize| {
        let (env, ns) = (&env, &ns);
        async move {
            let all = all_endpoints(env, ns).await;
            (0..SERVICES).all(|s| {
                let flipped = s < not_ready;
                let mut ready: Vec<String> = (0..PODS)
                    .filter(|p| !(flipped && *p == 0))
                    .map(|p| ip(s, p))
                    .collect();
                ready.sort();
                let not: Vec<String> = if flipped { vec![ip(s, 0)] } else { vec![] };
                all.get(&format!("f{s}")) == Some(&(ready, not))
            })
        }
    };
    eventually("the leader publishes every Service", || converged(0)).await;

    let storm_rounds = Arc::new(AtomicU64::new(0));
    let storming = Arc::new(AtomicBool::new(true));
    let storm = tokio::spawn({
        let (kubelet, ns, rounds, storming) =
            (env.kubelet(), ns.clone(), storm_rounds.clone(), storming.clone());
        async move {
            while storming.load(Ordering::SeqCst) {
                for ready in [false, true] {
                    for s in 0..SERVICES {
                        kubelet.set_ready(&ns, &format!("f{s}-0"), ready).await.unwrap();
                    }
                }
                rounds.fetch_add(1, Ordering::SeqCst);
            }
            for s in 0..SERVICES / 2 {
                kubelet.set_ready(&ns, &format!("f{s}-0"), false).await.unwrap();
            }
        }
    });
    eventually("the storm is under way", || async {
        storm_rounds.load(Ordering::SeqCst) >= 1
    })
    .await;
    replicas.remove(leader_index).kill();
    let new_leader = eventually_some("another replica takes over", || async {
        for (i, r) in replicas.iter().enumerate() {
            if metric(&r.metrics().await, "roster_leader") == 1.0 {
                return Some(i);
            }
        }
        None
    })
    .await;
    let handed_over_at = storm_rounds.load(Ordering::SeqCst);
    eventually("the storm goes on under the new leader", || async {
        storm_rounds.load(Ordering::SeqCst) >= handed_over_at + 2
    })
    .await;
    storming.store(false, Ordering::SeqCst);
    storm.await.unwrap();
    eventually("every change of the storm is published", || {
        converged(SERVICES / 2)
    })
    .await;

    let leader = &replicas[new_leader];
    let follower = &replicas[1 - new_leader];
    eventually("the new leader wrote", || async {
        api_writes(&leader.metrics().await) > 0.0
    })
    .await;
    assert_eq!(metric(&follower.metrics().await, "roster_leader"), 0.0);
    assert_eq!(
        api_writes(&follower.metrics().await),
        0.0,
        "a replica that never led wrote"
    );
    let counts = env.memory_server().unwrap().request_counts();
    assert_eq!(counts.noop_writes("endpoints"), 0, "no-op Endpoints writes");
    for r in replicas {
        r.kill();
    }
}
