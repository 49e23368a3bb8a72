//! The readiness hold-down (`roster.dev/ready-hold-down`, roster's own extension), end to end on both
//! tiers: a pod that flaps is held out of the ready endpoints until it stays Ready for the hold-down, says
//! so in an Event and a metric; a steady pod, or one that fails a probe once, is never held; NotReady is
//! never delayed.

mod support;

use k8s_openapi::api::core::v1::Service;
use roster_envtest::{TestEnv, Tier, fixtures};
use serde_json::json;
use support::*;

const WEB: &[(&str, &str)] = &[("app", "web")];

/// Service `web` holding flapping pods down for `hold`, and ready pods `web-0` and `web-1`.
async fn world(tier: Tier, prefix: &str, hold: &str) -> (TestEnv, String) {
    let mut svc = fixtures::service("web", WEB, &[("http", 8080, "http")]);
    let annotations = [("roster.dev/ready-hold-down".to_owned(), hold.to_owned())];
    svc.metadata.annotations = Some(annotations.into());
    let pods =
        (0..2).map(|i| PodPlan::new(format!("web-{i}"), WEB, format!("10.7.0.{}", i + 1)).port("http", 80));
    let World { env, ns } = World::builder(tier, prefix)
        .node("n1", Some("zone-a"))
        .service(svc)
        .pods(pods)
        .build()
        .await;
    (env, ns)
}

const BOTH: [&str; 2] = ["10.7.0.1", "10.7.0.2"];
const FIRST: [&str; 1] = ["10.7.0.1"];
const SECOND: [&str; 1] = ["10.7.0.2"];

/// Flips `web-1`'s readiness and waits until the Endpoints show it: a NotReady flip is never delayed.
async fn flip(env: &TestEnv, ns: &str, ready: bool) {
    env.kubelet().set_ready(ns, "web-1", ready).await.unwrap();
    match ready {
        true => wait_endpoint_ips(env, ns, "web", &BOTH, &[] as &[&str]).await,
        false => wait_endpoint_ips(env, ns, "web", &FIRST, &SECOND).await,
    };
}

/// A hold-down of an hour: any hold would outlast the test.
async fn steady_pods_and_single_failures_are_never_held(tier: Tier) {
    let (env, ns) = world(tier, "steady", "1h").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_endpoint_ips(&env, &ns, "web", &BOTH, &[] as &[&str]).await;
    flip(&env, &ns, false).await;
    flip(&env, &ns, true).await; // one failed probe: two transitions seen, no flap
    let late = PodPlan::new("web-2", WEB, "10.7.0.3")
        .port("http", 80)
        .ready(false);
    start_pod(&env.client(), &ns, &late).await;
    wait_endpoint_ips(&env, &ns, "web", &BOTH, &["10.7.0.3"]).await;
    env.kubelet().set_ready(&ns, "web-2", true).await.unwrap();
    wait_endpoint_ips(
        &env,
        &ns,
        "web",
        &["10.7.0.1", "10.7.0.2", "10.7.0.3"],
        &[] as &[&str],
    )
    .await;
    settled(&roster, 1).await;
    assert!(
        events_with_reason(&env, &ns, "ReadyHeldDown").await.is_empty(),
        "a pod was held"
    );
    assert_eq!(metric(&roster.metrics().await, "roster_ready_held_pods"), 0.0);
    roster.stop().await;
}

/// A hold-down of 15 s: long enough that the hold is still on when its Event has been read.
async fn a_flapping_pod_is_held_until_it_stays_ready(tier: Tier) {
    let (env, ns) = world(tier, "flap", "15s").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_endpoint_ips(&env, &ns, "web", &BOTH, &[] as &[&str]).await;
    flip(&env, &ns, false).await;
    flip(&env, &ns, true).await;
    flip(&env, &ns, false).await; // the fourth transition within the window: web-1 flaps

    env.kubelet().set_ready(&ns, "web-1", true).await.unwrap();
    let events = eventually_value(
        "a ReadyHeldDown Event",
        || events_with_reason(&env, &ns, "ReadyHeldDown"),
        |e| !e.is_empty(),
    )
    .await;
    let regarding = events[0].regarding.clone().unwrap_or_default();
    assert_eq!(
        (regarding.kind.as_deref(), regarding.name.as_deref()),
        (Some("Pod"), Some("web-1"))
    );
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    let held = endpoints(&env, &ns, "web").await.expect("Endpoints");
    assert_eq!(
        endpoint_ips(&held),
        (vec![FIRST[0].to_owned()], vec![SECOND[0].to_owned()]),
        "not held"
    );
    assert_eq!(metric(&roster.metrics().await, "roster_ready_held_pods"), 1.0);

    // Once it has been Ready for the hold-down it rejoins, without any other change.
    wait_endpoint_ips(&env, &ns, "web", &BOTH, &[] as &[&str]).await;
    eventually("the gauge back to 0", || async {
        metric(&roster.metrics().await, "roster_ready_held_pods") == 0.0
    })
    .await;
    flip(&env, &ns, false).await; // NotReady is never held, flapping or not
    roster.stop().await;
}

/// An annotation that does not parse holds nothing and says so.
async fn an_invalid_hold_down_is_reported_and_ignored(tier: Tier) {
    let (env, ns) = world(tier, "badhold", "soon").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_endpoint_ips(&env, &ns, "web", &BOTH, &[] as &[&str]).await;
    let warning = wait_event(&env, &ns, "InvalidReadyHoldDown", "invalid duration").await;
    assert_eq!(warning.regarding.and_then(|r| r.kind).as_deref(), Some("Service"));
    let fixed = json!({"metadata": {"annotations": {"roster.dev/ready-hold-down": "1h"}}});
    merge_patch::<Service>(&env, &ns, "web", fixed).await;
    flip(&env, &ns, false).await;
    flip(&env, &ns, true).await;
    roster.stop().await;
}

on_both_tiers!(
    steady_pods_and_single_failures_are_never_held,
    a_flapping_pod_is_held_until_it_stays_ready,
    an_invalid_hold_down_is_reported_and_ignored,
);
