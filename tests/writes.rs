//! Writes roster makes, counted by the in-memory API server: none when everything is already right, never a
//! write that changes nothing, and only the leader writes.

mod support;

use std::time::Duration;

use roster_envtest::memory::{Fault, FaultAction};
use roster_envtest::{TestEnv, Tier, fixtures};
use support::*;

const WEB: &[(&str, &str)] = &[("app", "web")];

/// Three Services over six pods, some not ready, one headless, converged by a first roster.
async fn converged_world(env: &TestEnv, ns: &str) {
    add_node(env, "n1", Some("zone-a")).await;
    create(env, ns, &fixtures::service("web", WEB, &[("http", 8080, "http")])).await;
    create(
        env,
        ns,
        &fixtures::headless_service("web-headless", WEB, &[("http", 80, "80")]),
    )
    .await;
    create(
        env,
        ns,
        &fixtures::service(
            "web-multi",
            WEB,
            &[("http", 80, "http"), ("metrics", 9090, "9090")],
        ),
    )
    .await;
    let pod = |i: usize| {
        PodPlan::new(format!("web-{i}"), WEB, format!("10.2.0.{}", 10 + i))
            .port("http", 80)
            .ready(!i.is_multiple_of(3))
    };
    start_pods(env, ns, (0..6).map(pod)).await;
}

async fn empty_world(prefix: &str) -> (TestEnv, String) {
    let World { env, ns } = World::builder(Tier::Memory, prefix).build().await;
    (env, ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_everything_correct_makes_zero_writes() {
    let (env, ns) = empty_world("restart").await;
    let first = Roster::start(&env, &ns, &["--services", "all"]).await;
    converged_world(&env, &ns).await;
    eventually("all Endpoints written", || async {
        let mut n = 0;
        for svc in ["web", "web-headless", "web-multi"] {
            n += endpoints(&env, &ns, svc)
                .await
                .map(|ep| endpoint_ips(&ep).0.len())
                .unwrap_or(0);
        }
        n == 12
    })
    .await;
    settled(&first, 3).await;
    first.stop().await;

    let server = env.memory_server().unwrap();
    server.reset_request_counts();
    let reset_at = std::time::SystemTime::now();
    let second = Roster::start(&env, &ns, &["--services", "all"]).await;
    settled(&second, 3).await;
    let counts = server.request_counts();
    for r in server
        .request_log()
        .iter()
        .filter(|r| r.method != "GET" && r.time > reset_at)
    {
        eprintln!("after restart: {} {} -> {}", r.method, r.path, r.status);
    }
    assert_eq!(
        counts.writes("endpoints"),
        0,
        "Endpoints rewritten after a restart"
    );
    assert_eq!(
        counts.writes("endpointslices"),
        0,
        "EndpointSlices rewritten after a restart"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_scenario_makes_no_noop_writes() {
    let (env, ns) = empty_world("noop").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    converged_world(&env, &ns).await;
    let kubelet = env.kubelet();
    for round in 0..3 {
        for i in 0..6 {
            kubelet
                .set_ready(&ns, &format!("web-{i}"), (i + round) % 2 == 0)
                .await
                .unwrap();
        }
    }
    kubelet.delete_gracefully(&ns, "web-5").await.unwrap();
    kubelet.finish_deletion(&ns, "web-5").await.unwrap();
    settled(&roster, 3).await;
    let counts = env.memory_server().unwrap().request_counts();
    assert!(counts.writes("endpoints") > 0, "the scenario made roster write");
    assert_no_noop_writes(&counts);
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_killed_leader_hands_over() {
    let (env, ns) = empty_world("lease").await;
    let a = RosterProcess::start(&env, &ns, &[&LEADER_ELECTION[..], &["--identity", "a"]].concat()).await;
    let b = RosterProcess::start(&env, &ns, &[&LEADER_ELECTION[..], &["--identity", "b"]].concat()).await;
    eventually("exactly one leader", || async {
        metric(&a.metrics().await, "roster_leader") + metric(&b.metrics().await, "roster_leader") == 1.0
    })
    .await;
    converged_world(&env, &ns).await;
    wait_endpoints_where(&env, &ns, "web", "4 ready", |ips| ips.0.len() == 4).await;
    let a_leads = eventually_some("exactly one leader, after the writes", || async {
        let (a_leads, b_leads) = (
            metric(&a.metrics().await, "roster_leader"),
            metric(&b.metrics().await, "roster_leader"),
        );
        (a_leads + b_leads == 1.0).then_some(a_leads == 1.0)
    })
    .await;
    let (leader, follower) = if a_leads { (a, b) } else { (b, a) };
    // Only web's Endpoints were waited for; the other Services' writes are made by other workers.
    eventually("the leader wrote the Endpoints", || async {
        api_writes(&leader.metrics().await) >= 3.0
    })
    .await;
    assert_eq!(api_writes(&follower.metrics().await), 0.0, "the follower wrote");

    leader.kill(); // no release: the follower must wait for the Lease to expire
    env.kubelet().set_ready(&ns, "web-1", false).await.unwrap();
    eventually("the follower took over", || async {
        metric(&follower.metrics().await, "roster_leader") == 1.0
    })
    .await;
    let published = |ips: &EndpointIps| ips.1.contains(&"10.2.0.11".to_string());
    wait_endpoints_where(&env, &ns, "web", "the change made while nobody led", published).await;
    assert_eq!(follower.terminate().code(), Some(0), "graceful exit on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_writing_when_its_lease_expires() {
    let (env, ns) = empty_world("renew").await;
    let roster = Roster::start(&env, &ns, &LEADER_ELECTION).await;
    eventually("leader", || async {
        metric(&roster.metrics().await, "roster_leader") == 1.0
    })
    .await;
    converged_world(&env, &ns).await;
    wait_endpoints_where(&env, &ns, "web", "4 ready", |ips| ips.0.len() == 4).await;
    let server = env.memory_server().unwrap();
    let broken = Fault {
        resource: Some("leases".into()),
        ..Fault::new(FaultAction::Status {
            code: 500,
            retry_after_secs: None,
        })
    };
    server.inject_fault(broken);
    server.close_all_watches();
    eventually("leadership dropped once the Lease expired", || async {
        metric(&roster.metrics().await, "roster_leader") == 0.0
    })
    .await;
    server.reset_request_counts();
    env.kubelet().set_ready(&ns, "web-1", false).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        server.request_counts().writes("endpoints"),
        0,
        "a replica without a valid Lease wrote"
    );
    roster.stop().await;
}
