//! Regression tests for the upstream bugs roster fixes (upstream-behaviour.md, section M), on the in-memory
//! tier where the server's counters and fault hooks can prove them.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use roster_envtest::memory::{Fault, FaultAction, Verb};
use roster_envtest::{TestEnv, Tier, fixtures};
use support::*;

const APP: &[(&str, &str)] = &[("app", "big")];

async fn memory_env(prefix: &str) -> (TestEnv, String) {
    let env = TestEnv::start_tier(Tier::Memory).await.unwrap();
    let ns = env.create_namespace(prefix).await.unwrap();
    env.kubelet().create_node("n1", Some("zone-a")).await.unwrap();
    (env, ns)
}

async fn add_pods(env: &TestEnv, ns: &str, count: usize, ready: impl Fn(usize) -> bool) {
    let pods = Api::<Pod>::namespaced(env.client(), ns);
    for i in 0..count {
        let name = format!("p-{i}");
        pods.create(
            &PostParams::default(),
            &fixtures::pod(&name, APP, "n1", &[("http", 80)]),
        )
        .await
        .unwrap();
        let ip = format!("10.3.{}.{}", i / 250, i % 250 + 1);
        env.kubelet()
            .start_pod(ns, &name, &[&ip], ready(i))
            .await
            .unwrap();
    }
}

/// #125638 / #117193: a Ready flip right after the controller's own write was lost when it compared against
/// its stale informer copy and concluded "nothing to do". Here roster's Endpoints watch is cut for good, so
/// its cache keeps the state from before the flips; the final flip back to ready equals that stale copy.
/// roster computes against its own last write, so the flip is still published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_ready_flips_are_never_lost() {
    let (env, ns) = memory_env("flips").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    create(&env, &ns, &fixtures::service("big", APP, &[("http", 80, "http")])).await;
    add_pods(&env, &ns, 3, |_| true).await;
    eventually("3 ready", || async {
        endpoints(&env, &ns, "big")
            .await
            .is_some_and(|e| endpoint_ips(&e).0.len() == 3)
    })
    .await;
    let server = env.memory_server().unwrap();
    let cut = Fault {
        verb: Some(Verb::Watch),
        resource: Some("endpoints".into()),
        ..Fault::new(FaultAction::DropStream)
    };
    server.inject_fault(cut);
    server.close_all_watches();
    env.kubelet().set_ready(&ns, "p-1", false).await.unwrap();
    eventually("p-1 not ready", || async {
        endpoints(&env, &ns, "big")
            .await
            .is_some_and(|e| endpoint_ips(&e).1 == vec!["10.3.0.2".to_string()])
    })
    .await;
    for round in 0..6 {
        env.kubelet().set_ready(&ns, "p-1", round % 2 == 1).await.unwrap();
    }
    env.kubelet().set_ready(&ns, "p-1", true).await.unwrap();
    eventually(
        "p-1 ready again, although roster's Endpoints cache still shows the first state",
        || async {
            endpoints(&env, &ns, "big").await.is_some_and(|e| {
                endpoint_ips(&e)
                    == (
                        vec!["10.3.0.1".into(), "10.3.0.2".into(), "10.3.0.3".into()],
                        vec![],
                    )
            })
        },
    )
    .await;
    server.clear_faults();
    roster.stop().await;
}

/// #126578 / #127370 and the F25 quirk: an Endpoints object over 1,000 addresses was rewritten on every sync
/// (a server-side no-op), and with stale tracking the controller then never progressed. roster compares the
/// truncated desired state, so a full resync of a truncated Service writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_endpoints_are_not_rewritten() {
    let (env, ns) = memory_env("trunc").await;
    create(&env, &ns, &fixtures::service("big", APP, &[("http", 80, "http")])).await;
    add_pods(&env, &ns, 1010, |i| i % 10 != 0).await;
    let roster = Roster::start(
        &env,
        &ns,
        &["--services", "all", "--write-qps", "500", "--write-burst", "500"],
    )
    .await;
    let ep = eventually_some("truncated Endpoints", || async {
        endpoints(&env, &ns, "big").await.filter(|e| {
            let (ready, not_ready) = endpoint_ips(e);
            ready.len() + not_ready.len() == 1000
        })
    })
    .await;
    let annotations = ep.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("endpoints.kubernetes.io/over-capacity")
            .map(String::as_str),
        Some("truncated")
    );
    assert_eq!(
        endpoint_ips(&ep).0.len(),
        909,
        "every ready address kept, not-ready ones fill the rest"
    );
    // Let the first roster finish its slices too, so that the second one has nothing left to do.
    settled(&roster, 1).await;
    roster.stop().await;

    let server = env.memory_server().unwrap();
    server.reset_request_counts();
    let again = Roster::start(&env, &ns, &["--services", "all"]).await;
    settled(&again, 1).await;
    let counts = server.request_counts();
    assert_eq!(
        counts.writes("endpoints"),
        0,
        "a truncated Endpoints was rewritten"
    );
    assert_eq!(counts.noop_writes("endpoints"), 0);
    // Progress still happens: a pod leaving is published.
    env.kubelet().set_phase(&ns, "p-1", "Failed").await.unwrap();
    eventually("p-1 gone", || async {
        endpoints(&env, &ns, "big")
            .await
            .is_some_and(|e| !endpoint_ips(&e).0.contains(&"10.3.0.2".to_string()))
    })
    .await;
    again.stop().await;
}

/// Every address in `slices`, sorted, repeats kept.
fn slice_ips(slices: &[EndpointSlice]) -> Vec<String> {
    slice_endpoints(slices).into_iter().map(|e| e.0).collect()
}

/// Whether a sorted list holds an address twice.
fn has_repeats(ips: &[String]) -> bool {
    ips.windows(2).any(|pair| pair[0] == pair[1])
}

/// #92928 / #93374: slices created with generateName were duplicated when the controller acted on a cache
/// that had not seen its own creates yet. The EndpointSlice watch is held back while pods churn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_slice_cache_never_duplicates_slices() {
    let (env, ns) = memory_env("dupes").await;
    let roster = Roster::start(
        &env,
        &ns,
        &["--services", "all", "--max-endpoints-per-slice", "5"],
    )
    .await;
    let server = env.memory_server().unwrap();
    let slow = Fault {
        verb: Some(Verb::Watch),
        resource: Some("endpointslices".into()),
        ..Fault::new(FaultAction::Delay(Duration::from_secs(2)))
    };
    server.inject_fault(slow);
    server.close_all_watches();
    create(&env, &ns, &fixtures::service("big", APP, &[("http", 80, "http")])).await;
    add_pods(&env, &ns, 12, |_| true).await;
    // Sampled while roster works against the stale cache: no endpoint may ever be in two slices at once.
    let duplicated = std::sync::Mutex::new((0, Vec::new()));
    eventually("12 endpoints in slices", || async {
        let ips = slice_ips(&slices(&env, &ns, "big").await);
        let repeated = has_repeats(&ips);
        if repeated {
            let mut seen = duplicated.lock().unwrap();
            seen.0 += 1;
            if seen.1.is_empty() {
                seen.1 = ips.clone();
            }
        }
        !repeated && ips.len() == 12
    })
    .await;
    let (samples, first) = duplicated.into_inner().unwrap();
    assert_eq!(
        samples, 0,
        "{samples} samples had endpoints in two slices at once; the first: {first:?}"
    );
    server.clear_faults();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = slices(&env, &ns, "big").await;
    let layout: Vec<String> = all
        .iter()
        .map(|s| {
            let ips: Vec<_> = s.endpoints.iter().map(|e| e.addresses.join(",")).collect();
            format!(
                "{}: [{}]",
                s.metadata.name.as_deref().unwrap_or("?"),
                ips.join(" ")
            )
        })
        .collect();
    assert_eq!(
        all.len(),
        3,
        "12 endpoints at 5 per slice are 3 slices, got {}:\n{}",
        all.len(),
        layout.join("\n")
    );
    let ips = slice_ips(&all);
    assert!(!has_repeats(&ips), "an endpoint appears in two slices: {ips:?}");
    // roster is the only writer here: a conflict would mean it based a write on an old version of its own
    // (the watches lag behind several of its writes while they reconnect).
    let metrics = roster.metrics().await;
    for resource in ["endpoints", "endpointslices"] {
        let name = format!("roster_conflicts_total{{resource=\"{resource}\"}}");
        assert_eq!(metric(&metrics, &name), 0.0, "{name}");
    }
    roster.stop().await;
}
