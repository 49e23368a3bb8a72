//! Regression tests for the upstream bugs roster fixes (upstream-behaviour.md, section M), on the in-memory
//! tier where the server's counters and fault hooks can prove them.

mod support;

use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use roster_envtest::memory::{Fault, FaultAction, Verb};
use roster_envtest::{TestEnv, Tier, fixtures};
use support::*;

const APP: &[(&str, &str)] = &[("app", "big")];

async fn memory_env(prefix: &str) -> (TestEnv, String) {
    let world = World::builder(Tier::Memory, prefix).node("n1", Some("zone-a"));
    let World { env, ns } = world.build().await;
    (env, ns)
}

/// Pod `p-<i>` of Service `big`.
fn big_pod(i: usize, ready: bool) -> PodPlan {
    PodPlan::new(format!("p-{i}"), APP, big_ip(i))
        .port("http", 80)
        .ready(ready)
}

fn big_ip(i: usize) -> String {
    format!("10.3.{}.{}", i / 250, i % 250 + 1)
}

fn big_ips(indices: impl Iterator<Item = usize>) -> Vec<String> {
    let mut ips: Vec<String> = indices.map(big_ip).collect();
    ips.sort();
    ips
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
    start_pods(&env, &ns, (0..3).map(|i| big_pod(i, true))).await;
    wait_ready_ips(&env, &ns, "big", &big_ips(0..3)).await;
    let server = env.memory_server().unwrap();
    let cut = Fault {
        verb: Some(Verb::Watch),
        resource: Some("endpoints".into()),
        ..Fault::new(FaultAction::DropStream)
    };
    server.inject_fault(cut);
    server.close_all_watches();
    env.kubelet().set_ready(&ns, "p-1", false).await.unwrap();
    wait_endpoints_where(&env, &ns, "big", "p-1 not ready", |ips| ips.1 == [big_ip(1)]).await;
    for round in 0..6 {
        env.kubelet().set_ready(&ns, "p-1", round % 2 == 1).await.unwrap();
    }
    env.kubelet().set_ready(&ns, "p-1", true).await.unwrap();
    // p-1 ready again, although roster's Endpoints cache still shows the first state.
    wait_endpoint_ips(&env, &ns, "big", &big_ips(0..3), &[]).await;
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
    let pods: Vec<PodPlan> = (0..1010).map(|i| big_pod(i, i % 10 != 0)).collect();
    start_pods_in_bulk(&env, &ns, pods).await;
    let roster = Roster::start(
        &env,
        &ns,
        &["--services", "all", "--write-qps", "500", "--write-burst", "500"],
    )
    .await;
    let (ready, not_ready): (Vec<usize>, Vec<usize>) = (0..1010).partition(|i| i % 10 != 0);
    wait_truncated(
        &env,
        &ns,
        "big",
        &big_ips(ready.into_iter()),
        &big_ips(not_ready.into_iter()),
    )
    .await;
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
    wait_endpoints_where(&env, &ns, "big", "p-1 gone", |ips| !ips.0.contains(&big_ip(1))).await;
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

/// A Service's slices, shown one a line: the slice's name and its endpoints' addresses.
struct SliceLayout(Vec<EndpointSlice>);

impl std::fmt::Debug for SliceLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for slice in &self.0 {
            let ips: Vec<_> = slice.endpoints.iter().map(|e| e.addresses.join(",")).collect();
            let name = slice.metadata.name.as_deref().unwrap_or("?");
            writeln!(f, "{name}: [{}]", ips.join(" "))?;
        }
        Ok(())
    }
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
    start_pods(&env, &ns, (0..12).map(|i| big_pod(i, true))).await;
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
    let SliceLayout(all) = eventually_value(
        "12 endpoints at 5 per slice in 3 slices",
        || async { SliceLayout(slices(&env, &ns, "big").await) },
        |layout| layout.0.len() == 3,
    )
    .await;
    let ips = slice_ips(&all);
    assert!(!has_repeats(&ips), "an endpoint appears in two slices: {ips:?}");
    // roster is the only writer here: a conflict would mean it based a write on an old version of its own
    // (the watches lag behind several of its writes while they reconnect).
    let metrics = roster.metrics().await;
    for resource in ["endpoints", "endpointslices"] {
        let name = format!("roster_api_writes_total{{outcome=\"conflict\",resource=\"{resource}\"");
        assert_eq!(metric_sum(&metrics, &name), 0.0, "{name}");
    }
    roster.stop().await;
}
