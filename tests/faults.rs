//! Faults: dropped watches, forced 410 relists, throttling, server errors, a second writer, and a restart
//! into a wrong world. roster converges, loses no change, and makes only the writes needed.

mod support;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use roster_envtest::memory::{Fault, FaultAction, Verb};
use roster_envtest::{TestEnv, Tier, fixtures};
use serde_json::json;
use support::*;

async fn wait_ready_pods(env: &TestEnv, ns: &str, ready: &[usize]) {
    wait_ready_ips(env, ns, "api", &api_ips(ready)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_and_410_relists_lose_no_change() {
    let World { env, ns } = api_world(Tier::Memory, "relist", 3).build().await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_ready_pods(&env, &ns, &[0, 1, 2]).await;
    let server = env.memory_server().unwrap();
    let cut = Fault {
        verb: Some(Verb::Watch),
        ..Fault::new(FaultAction::DropStream)
    };
    let id = server.inject_fault(cut);
    server.close_all_watches();
    // Changes while roster is blind.
    env.kubelet().set_ready(&ns, "api-0", false).await.unwrap();
    start_pods(&env, &ns, [api_pod(3, true)]).await;
    env.kubelet().set_phase(&ns, "api-2", "Succeeded").await.unwrap();
    server.compact_now(); // the history roster would resume from is gone: it must relist (410)
    server.remove_fault(id);
    // api-0 not ready after the relist, api-2 gone, api-3 new.
    wait_endpoint_ips(&env, &ns, "api", &api_ips(&[1, 3]), &api_ips(&[0])).await;
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried() {
    let World { env, ns } = api_world(Tier::Memory, "errors", 2).build().await;
    let server = env.memory_server().unwrap();
    server.inject_fault(Fault::status(Verb::Create, "endpoints", 429, Some(1)).times(2));
    server.inject_fault(Fault::status(Verb::Update, "endpoints", 500, None).times(3));
    server.inject_fault(Fault::status(Verb::Create, "endpointslices", 500, None).times(1));
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_ready_pods(&env, &ns, &[0, 1]).await;
    env.kubelet().set_ready(&ns, "api-1", false).await.unwrap();
    wait_ready_pods(&env, &ns, &[0]).await;
    let m = roster.metrics().await;
    assert!(
        metric_sum(&m, "roster_queue_retries_total") >= 3.0,
        "the 500s were retried with backoff:\n{m}"
    );
    // Each answer is counted: writes by outcome, requests by code.
    let writes = |outcome: &str, resource: &str, verb: &str| {
        let name = format!(
            "roster_api_writes_total{{outcome=\"{outcome}\",resource=\"{resource}\",verb=\"{verb}\"}}"
        );
        metric(&m, &name)
    };
    assert_eq!(writes("throttled", "endpoints", "create"), 2.0, "{m}");
    assert_eq!(writes("api", "endpoints", "update"), 3.0, "{m}");
    assert_eq!(writes("api", "endpointslices", "create"), 1.0, "{m}");
    assert_eq!(writes("success", "endpoints", "create"), 1.0, "{m}");
    let requests = |code: &str| {
        metric_sum(
            &m,
            &format!("roster_api_requests_total{{code=\"{code}\",resource=\"endpoints\""),
        )
    };
    assert_eq!(requests("429"), 2.0, "{m}");
    assert_eq!(requests("500"), 3.0, "{m}");
    for (reason, kind) in [
        ("FailedToUpdateEndpoint", "Endpoints"),
        ("FailedToUpdateEndpointSlices", "Service"),
    ] {
        let event = warning_event(&env, &ns, reason).await;
        assert_eq!(
            event.regarding.and_then(|r| r.kind).as_deref(),
            Some(kind),
            "{reason}"
        );
    }
    let log = server.request_log();
    let failed_updates = log
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/endpoints/") && r.status == 500)
        .count();
    assert_eq!(failed_updates, 3);
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_editing_rosters_endpoints_is_repaired() {
    let World { env, ns } = api_world(Tier::Memory, "editor", 2).build().await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_ready_pods(&env, &ns, &[0, 1]).await;
    let bogus = json!({"subsets": [{"addresses": [{"ip": "192.0.2.99"}], "ports": [{"name": "http", "port": 8080}]}]});
    merge_patch::<Endpoints>(&env, &ns, "api", bogus).await;
    wait_ready_pods(&env, &ns, &[0, 1]).await;
    roster.stop().await;
}

/// Someone deletes roster's Endpoints and slices at the moment a pod's readiness changes, so a delete event
/// may arrive while roster's update of the object is still unconfirmed: roster recreates both, in the
/// current state, every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_deleting_rosters_objects_is_repaired() {
    let World { env, ns } = api_world(Tier::Memory, "deleter", 3).build().await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_ready_pods(&env, &ns, &[0, 1, 2]).await;
    let eps = Api::<Endpoints>::namespaced(env.client(), &ns);
    let slice_api = Api::<EndpointSlice>::namespaced(env.client(), &ns);
    let mut ready = [true; 3];
    for round in 0..6 {
        let pod = round % 3;
        ready[pod] = !ready[pod];
        let names: Vec<String> = eventually_some(&format!("round {round}: roster's slices"), || async {
            let names: Vec<String> = slices(&env, &ns, "api")
                .await
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect();
            (!names.is_empty()).then_some(names)
        })
        .await;
        let (kubelet, pod_name, params) = (env.kubelet(), format!("api-{pod}"), DeleteParams::default());
        let delete_slices =
            futures::future::join_all(names.iter().map(|name| slice_api.delete(name, &params)));
        let (flip, ep_gone, slices_gone) = tokio::join!(
            kubelet.set_ready(&ns, &pod_name, ready[pod]),
            eps.delete("api", &params),
            delete_slices,
        );
        flip.unwrap();
        ep_gone.unwrap();
        for gone in slices_gone {
            gone.unwrap();
        }
        let want: Vec<usize> = (0..3).filter(|i| ready[*i]).collect();
        wait_ready_pods(&env, &ns, &want).await;
        let want_slices: Vec<(String, bool)> = (0..3).map(|i| (api_ip(i), ready[i])).collect();
        eventually(&format!("round {round}: slices show {want_slices:?}"), || async {
            let got: Vec<(String, bool)> = slice_endpoints(&slices(&env, &ns, "api").await)
                .into_iter()
                .map(|e| (e.0, e.1))
                .collect();
            got == want_slices
        })
        .await;
    }
    roster.stop().await;
}

/// A delete answered 404 means someone else removed the object first, and the watch may have shown that
/// before the delete was sent: roster waits for no confirmation of it. Here the server answers 404 and keeps
/// the Endpoints, so the object's next change must find roster looking at it again, and deleting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_answered_not_found_waits_for_nothing() {
    let World { env, ns } = api_world(Tier::Memory, "gone", 1).build().await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_ready_pods(&env, &ns, &[0]).await;
    let server = env.memory_server().unwrap();
    server.inject_fault(Fault::status(Verb::Delete, "endpoints", 404, None).times(1));
    let services = Api::<Service>::namespaced(env.client(), &ns);
    services.delete("api", &DeleteParams::default()).await.unwrap();
    eventually("roster's delete of the Endpoints was answered", || async {
        server.request_counts().get(Verb::Delete, "endpoints") >= 1
    })
    .await;
    // roster may have looked again already (another event of the Service's objects) and deleted it.
    let eps = Api::<Endpoints>::namespaced(env.client(), &ns);
    let touch = json!({"metadata": {"annotations": {"example.com/touched": "yes"}}});
    match eps
        .patch("api", &PatchParams::default(), &Patch::Merge(touch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => panic!("touching the Endpoints: {err}"),
    }
    eventually("roster deletes the Endpoints it sees again", || async {
        eps.get_opt("api").await.unwrap().is_none()
    })
    .await;
    roster.stop().await;
}

/// A Service throttled on its first write waits in the queue for its retry, and the queue's depth shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_waiting_for_its_retry_counts_in_the_queue_depth() {
    let World { env, ns } = api_world(Tier::Memory, "depth", 1).build().await;
    let throttle = Fault::status(Verb::Create, "endpoints", 429, Some(10)).times(1);
    env.memory_server().unwrap().inject_fault(throttle);
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    eventually_value(
        "the throttled Service waits in the queue",
        || async { queue_state(&roster.metrics().await) },
        |state| metric(state, "roster_queue_depth") == 1.0,
    )
    .await;
    wait_ready_pods(&env, &ns, &[0]).await;
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_into_a_wrong_world_makes_exactly_the_needed_writes() {
    let World { env, ns } = api_world(Tier::Memory, "wrong", 3).build().await;
    create(
        &env,
        &ns,
        &fixtures::service("other", &[("app", "other")], &[("http", 80, "80")]),
    )
    .await;
    let first = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_ready_pods(&env, &ns, &[0, 1, 2]).await;
    eventually("other's Endpoints", || async {
        endpoints(&env, &ns, "other").await.is_some()
    })
    .await;
    let api_slices = wait_filled_slice(&env, &ns, "api").await;
    first.stop().await;

    // Break the world while roster is down: stale Endpoints, a duplicated slice, a missing Endpoints.
    let stale =
        json!({"subsets": [{"addresses": [{"ip": api_ip(0)}], "ports": [{"name": "http", "port": 8080}]}]});
    merge_patch::<Endpoints>(&env, &ns, "api", stale).await;
    Api::<Endpoints>::namespaced(env.client(), &ns)
        .delete("other", &Default::default())
        .await
        .unwrap();
    let mut dup: EndpointSlice = api_slices.clone();
    dup.metadata = kube::api::ObjectMeta {
        generate_name: Some("api-".into()),
        labels: api_slices.metadata.labels.clone(),
        owner_references: api_slices.metadata.owner_references.clone(),
        ..Default::default()
    };
    Api::<EndpointSlice>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &dup)
        .await
        .unwrap();

    let server = env.memory_server().unwrap();
    server.reset_request_counts();
    let second = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_ready_pods(&env, &ns, &[0, 1, 2]).await;
    eventually("other's Endpoints recreated", || async {
        endpoints(&env, &ns, "other").await.is_some()
    })
    .await;
    eventually("no duplicated endpoints in slices", || async {
        let all = slice_endpoints(&slices(&env, &ns, "api").await);
        all.len() == 3
    })
    .await;
    settled(&second, 2).await;
    let counts = server.request_counts();
    assert_eq!(
        counts.get(Verb::Update, "endpoints"),
        1,
        "one update for the stale Endpoints"
    );
    assert_eq!(
        counts.get(Verb::Create, "endpoints"),
        1,
        "one create for the missing Endpoints"
    );
    assert_eq!(
        counts.writes("endpointslices"),
        1,
        "one write removes the duplicate"
    );
    second.stop().await;
}

/// `/livez` with a bound of 3 s: an idle roster stays live (its watches are renewed within the bound), a
/// watch whose requests hang fails it, as does a worker stuck on one write, and both recover once the API
/// server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_fails_on_a_stalled_watch_or_a_stuck_worker_and_recovers() {
    let World { env, ns } = api_world(Tier::Memory, "livez", 2).build().await;
    let roster = Roster::start(&env, &ns, &["--services", "all", "--livez-stall-after", "3s"]).await;
    wait_ready_pods(&env, &ns, &[0, 1]).await;
    let livez = || async { roster.get("/livez").await.expect("/livez answers") };
    let idle_until = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while tokio::time::Instant::now() < idle_until {
        assert_eq!(livez().await.0, 200, "an idle roster is live");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let server = env.memory_server().unwrap();
    let hang = std::time::Duration::from_secs(8);
    server.inject_fault(Fault {
        verb: Some(Verb::Watch),
        resource: Some("pods".into()),
        ..Fault::new(FaultAction::Delay(hang))
    });
    server.close_all_watches();
    let stalled = eventually_value("/livez fails while the pod watch hangs", livez, |(code, _)| {
        *code == 503
    })
    .await;
    assert!(stalled.1.contains("watch of pods"), "{}", stalled.1);
    server.clear_faults();
    eventually("live again once the watch answers", || async {
        livez().await.0 == 200
    })
    .await;

    server.inject_fault(Fault {
        verb: Some(Verb::Update),
        resource: Some("endpoints".into()),
        times: Some(1),
        ..Fault::new(FaultAction::Delay(hang))
    });
    env.kubelet().set_ready(&ns, "api-0", false).await.unwrap();
    let stuck = eventually_value(
        "/livez fails while a worker waits on a write",
        livez,
        |(code, _)| *code == 503,
    )
    .await;
    assert!(stuck.1.contains("worker"), "{}", stuck.1);
    eventually("live again once the write is answered", || async {
        livez().await.0 == 200
    })
    .await;
    wait_ready_pods(&env, &ns, &[1]).await;
    roster.stop().await;
}

/// The first Event of `reason` in `ns`.
async fn warning_event(env: &TestEnv, ns: &str, reason: &str) -> k8s_openapi::api::events::v1::Event {
    let api = Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client(), ns);
    eventually_some(&format!("a {reason} Event"), || async {
        let events = api.list(&Default::default()).await.ok()?.items;
        events.into_iter().find(|e| e.reason.as_deref() == Some(reason))
    })
    .await
}

/// Services `s<i>` of `pods` pods each (`s<i>-<j>` at 10.6.<i>.<j+1>), for the storm.
fn storm_world(services: usize, pods: usize) -> WorldBuilder {
    let service = |i: usize| {
        let app = format!("s{i}");
        fixtures::service(&app, &[("app", &app)], &[("http", 80, "http")])
    };
    let pod = |i: usize, j: usize| {
        let app = format!("s{i}");
        PodPlan::new(
            format!("s{i}-{j}"),
            &[("app", &app)],
            format!("10.6.{i}.{}", j + 1),
        )
        .port("http", 8080)
    };
    World::builder(Tier::Memory, "storm")
        .node("n1", Some("zone-a"))
        .services((0..services).map(service))
        .pods((0..services).flat_map(|i| (0..pods).map(move |j| pod(i, j))))
}

/// A readiness storm while the API server answers 429 with Retry-After, then 503: the adaptive budget slows
/// down (its gauge and cuts show it), no write is sent while Retry-After lasts, every change is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_storm_slows_the_budget_loses_nothing_and_converges() {
    const SERVICES: usize = 12;
    const PODS: usize = 4;
    let World { env, ns } = storm_world(SERVICES, PODS).build().await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let ips = |i: usize, ready: &[usize]| -> Vec<String> {
        ready.iter().map(|j| format!("10.6.{i}.{}", j + 1)).collect()
    };
    for i in 0..SERVICES {
        wait_ready_ips(&env, &ns, &format!("s{i}"), &ips(i, &[0, 1, 2, 3])).await;
    }
    let server = env.memory_server().unwrap();
    let writes = |code: u16, times: u32| {
        Fault::status(Verb::Update, "endpoints", code, (code == 429).then_some(1)).times(times)
    };
    // The first matching rule answers: eight 429s, then five 503s.
    server.inject_fault(writes(429, 8));
    server.inject_fault(writes(503, 5));
    // Every Service loses two pods, and half of them get one back, while the server pushes back.
    let kubelet = env.kubelet();
    let flips = (0..SERVICES).flat_map(|i| [(i, 0, false), (i, 1, false)]);
    let back = (0..SERVICES).filter(|i| i % 2 == 0).map(|i| (i, 0, true));
    for (i, j, ready) in flips.chain(back) {
        kubelet.set_ready(&ns, &format!("s{i}-{j}"), ready).await.unwrap();
    }
    let lowest = std::sync::Mutex::new(f64::INFINITY);
    eventually(
        "the budget was cut for throttling and for server errors",
        || async {
            let m = roster.metrics().await;
            let rate = metric(&m, "roster_write_budget_qps");
            let mut lowest = lowest.lock().unwrap();
            *lowest = lowest.min(rate);
            let cuts = |reason: &str| {
                metric(
                    &m,
                    &format!("roster_write_budget_cuts_total{{reason=\"{reason}\"}}"),
                )
            };
            cuts("throttled") >= 1.0 && cuts("server_error") >= 1.0
        },
    )
    .await;
    let lowest = *lowest.lock().unwrap();
    assert!(
        lowest < 200.0,
        "the budget gauge shows the slower rate: lowest seen {lowest}"
    );
    for i in 0..SERVICES {
        let ready = if i % 2 == 0 { vec![0, 2, 3] } else { vec![2, 3] };
        wait_ready_ips(&env, &ns, &format!("s{i}"), &ips(i, &ready)).await;
    }
    let log = server.request_log();
    let answered = |code: u16| {
        log.iter()
            .filter(|r| r.resource == "endpoints" && r.verb == Some(Verb::Update) && r.status == code)
            .count()
    };
    assert_eq!(
        (answered(429), answered(503)),
        (8, 5),
        "every fault was met and retried"
    );
    // While the first Retry-After (1 s) lasts, only writes already in flight arrive: one per worker at most.
    let first = log.iter().find(|r| r.status == 429).expect("a 429").time;
    let paused = first..first + std::time::Duration::from_millis(900);
    let sent_while_paused = log
        .iter()
        .filter(|r| r.verb.is_some_and(Verb::is_write) && paused.contains(&r.time) && r.time > first)
        .filter(|r| r.resource == "endpoints" || r.resource == "endpointslices")
        .count();
    assert!(
        sent_while_paused <= 5,
        "{sent_while_paused} writes arrived during the Retry-After pause"
    );
    roster.stop().await;
}

/// The queue's depth and what roster did with keys and writes, as the metrics say.
fn queue_state(metrics: &str) -> String {
    let families = [
        "roster_queue_depth",
        "roster_queue_adds_total",
        "roster_queue_retries_total",
        "roster_reconciles_total",
        "roster_api_writes_total",
    ];
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|line| families.iter().any(|f| line.starts_with(f)))
        .collect();
    lines.join("\n")
}
