//! Differential correctness check against the upstream Go controllers: the same randomized scenario
//! (Services with selectors, named and multiple ports, headless, publishNotReadyAddresses, ExternalName and
//! selectorless ones with hand-made Endpoints; pods ready, not ready, terminating, failed, succeeded,
//! without an IP; label, selector and port changes; deletions) is applied to two real kube-apiservers
//! v1.20.2, one managed by kube-controller-manager (`--controllers=endpoint,endpointslice,
//! endpointslicemirroring`, with 1.20's EndpointSlice feature gates), one by roster (`--services all`).
//! After each round, once both sides are quiet, every Service's Endpoints must be equal, and so must its
//! EndpointSlices, compared as sets of endpoints per Service and address family; `differential/normalize.rs`
//! and `differential/slices.rs` name each documented divergence they remove. Both sides are read through
//! the test environment's facade: roster writes discovery.k8s.io/v1 through it, kube-controller-manager
//! 1.20 v1beta1 (passed through).
//!
//! `ROSTER_DIFF_SEED` (default 42, the seed CI runs) picks the scenario, `ROSTER_DIFF_SIZE` (default 1)
//! scales it and `ROSTER_DIFF_ROUNDS` (default 3) sets the rounds. Skipped (reason printed) without
//! kube-apiserver, etcd and kube-controller-manager in KUBEBUILDER_ASSETS (`scripts/envtest-assets
//! --with-controller-manager`); failed instead when `CI` is set.

#[path = "differential/normalize.rs"]
mod normalize;
#[path = "differential/scenario.rs"]
mod scenario;
#[path = "differential/slices.rs"]
mod slices;
mod support;

#[path = "support/kcm.rs"]
mod kcm;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Namespace};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use roster_envtest::{RealApiServer, TestEnv};
use serde_json::json;

use kcm::Upstream;
use scenario::{NODES, Op, Scenario};
use support::RosterProcess;

const NAMESPACE: &str = "diff";
/// How long both sides must stay unchanged, with empty work queues, to count as converged.
const QUIET: Duration = Duration::from_millis(4000);
/// Only bounds a hang: on a loaded machine (CI beside other runs) settling has taken over 45 s.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_and_upstream_publish_the_same_endpoints() {
    let Some((assets, kcm)) = kcm::assets("differential check") else {
        return;
    };
    let seed: u64 = env_or("ROSTER_DIFF_SEED", 42);
    let size: usize = env_or("ROSTER_DIFF_SIZE", 1);
    let rounds: usize = env_or("ROSTER_DIFF_ROUNDS", 3);
    let started = Instant::now();
    let (a, b) = tokio::join!(
        RealApiServer::start(&assets, &[]),
        RealApiServer::start(&assets, &[])
    );
    let upstream_env = TestEnv::with_real(Arc::new(a.expect("upstream's API server")))
        .await
        .unwrap();
    let roster_env = TestEnv::with_real(Arc::new(b.expect("roster's API server")))
        .await
        .unwrap();
    for env in [&upstream_env, &roster_env] {
        prepare(env).await;
    }
    let mut upstream = Upstream::start(&kcm, upstream_env.kubeconfig(), &kcm::ENDPOINT_CONTROLLERS).await;
    let roster = RosterProcess::start(&roster_env, NAMESPACE, &["--services", "all"]).await;

    let mut scenario = Scenario::new(seed, size);
    let mut log: Vec<Op> = Vec::new();
    let mut findings = Vec::new();
    let mut tally = normalize::Tally::new();
    for round in 0..rounds {
        let ops = if round == 0 {
            scenario.populate()
        } else {
            scenario.mutate()
        };
        for op in &ops {
            apply_both(op, &upstream_env, &roster_env).await;
        }
        log.extend(ops);
        let (mut u, mut r) = converge(&upstream, &roster, &upstream_env, &roster_env, round).await;
        let mut diffs = compare(&scenario, &u, &r, &mut tally);
        if !diffs.is_empty() {
            // F35: kube-controller-manager 1.20 can compare against a stale informer copy of its own last
            // write and skip a needed update for good (kubernetes#125638, fixed later by #125675). A restart re-lists
            // and syncs every Service; what it repairs was upstream's lost update, not a disagreement.
            upstream.restart().await;
            (u, r) = converge(&upstream, &roster, &upstream_env, &roster_env, round).await;
            let after = compare(&scenario, &u, &r, &mut tally);
            for lost in diffs.iter().filter(|d| !after.contains(d)) {
                eprintln!(
                    "differential: round {round}: upstream lost an update (F35), repaired by its restart:\n{lost}"
                );
            }
            diffs = after;
        }
        for diff in diffs {
            findings.push(format!("round {round}: {diff}"));
        }
        eprintln!(
            "differential: round {round}: {} operations so far, {} Endpoints and {} slices upstream, {} and {} \
             roster, {} findings",
            log.len(),
            u.endpoints.len(),
            u.slices.len(),
            r.endpoints.len(),
            r.slices.len(),
            findings.len()
        );
    }
    eprintln!(
        "differential: seed {seed}, size {size}, {rounds} rounds, {} operations in {:.1} s; normalised: {tally:?}",
        log.len(),
        started.elapsed().as_secs_f64()
    );
    if !findings.is_empty() {
        let ops: Vec<String> = log
            .iter()
            .enumerate()
            .map(|(i, op)| format!("{i:4} {op:?}"))
            .collect();
        panic!(
            "roster and kube-controller-manager 1.20.2 disagree (ROSTER_DIFF_SEED={seed} ROSTER_DIFF_SIZE={size}):\n\n{}\n\noperations:\n{}\n\nkube-controller-manager log tail:\n{}",
            findings.join("\n"),
            ops.join("\n"),
            upstream.log_tail(20)
        );
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The namespace and the Nodes every pod with an IP is bound to.
async fn prepare(env: &TestEnv) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    Api::<Namespace>::all(env.client())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    for node in NODES {
        env.kubelet()
            .create_node(node, Some("zone-a"))
            .await
            .expect("node");
    }
}

/// Applies `op` to both servers; they must answer alike (both succeed or both refuse).
async fn apply_both(op: &Op, upstream: &TestEnv, roster: &TestEnv) {
    let (upstream_client, roster_client) = (upstream.client(), roster.client());
    let (u, r) = tokio::join!(
        op.apply(&upstream_client, NAMESPACE),
        op.apply(&roster_client, NAMESPACE)
    );
    match (&u, &r) {
        (Ok(()), Ok(())) => {}
        (Err(kube::Error::Api(a)), Err(kube::Error::Api(b))) if a.code == b.code => {}
        _ => panic!("the two API servers answered {op:?} differently: upstream's {u:?}, roster's {r:?}"),
    }
}

/// What one side published: its Endpoints by name, and its EndpointSlices (read as v1).
struct Published {
    endpoints: BTreeMap<String, Endpoints>,
    slices: Vec<EndpointSlice>,
}

impl Published {
    async fn read(env: &TestEnv) -> Published {
        let endpoints = Api::<Endpoints>::namespaced(env.client(), NAMESPACE)
            .list(&ListParams::default())
            .await
            .expect("list endpoints")
            .items
            .into_iter()
            .map(|e| (e.metadata.name.clone().unwrap_or_default(), e))
            .collect();
        let slices = Api::<EndpointSlice>::namespaced(env.client(), NAMESPACE)
            .list(&ListParams::default())
            .await
            .expect("list endpointslices")
            .items;
        Published { endpoints, slices }
    }

    /// Every object's name and resourceVersion: unchanged versions mean nothing was written.
    fn versions(&self) -> Vec<(String, Option<String>)> {
        let endpoints = self.endpoints.values().map(|e| &e.metadata);
        let slices = self.slices.iter().map(|s| &s.metadata);
        endpoints
            .chain(slices)
            .map(|m| (m.name.clone().unwrap_or_default(), m.resource_version.clone()))
            .collect()
    }
}

/// The findings of both comparisons: Endpoints, then EndpointSlices.
fn compare(scenario: &Scenario, u: &Published, r: &Published, tally: &mut normalize::Tally) -> Vec<String> {
    let mut diffs = normalize::compare(scenario, &u.endpoints, &r.endpoints, tally);
    let upstream_slices = slices::by_service(
        &u.slices,
        &u.endpoints,
        normalize::Side::Upstream,
        scenario,
        tally,
    );
    let roster_slices = slices::by_service(&r.slices, &r.endpoints, normalize::Side::Roster, scenario, tally);
    diffs.extend(slices::compare(scenario, &upstream_slices, &roster_slices, tally));
    diffs
}

/// Waits until both sides' Endpoints and slices stay unchanged for [`QUIET`] with every work queue empty,
/// and returns them.
async fn converge(
    upstream: &Upstream,
    roster: &RosterProcess,
    upstream_env: &TestEnv,
    roster_env: &TestEnv,
    round: usize,
) -> (Published, Published) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut last = (
        Published::read(upstream_env).await,
        Published::read(roster_env).await,
    );
    let mut stable_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = (
            Published::read(upstream_env).await,
            Published::read(roster_env).await,
        );
        let idle = (upstream.queue_empty().await, roster_queue_empty(roster).await);
        let moved = (
            now.0.versions() != last.0.versions(),
            now.1.versions() != last.1.versions(),
        );
        if moved.0 || moved.1 || !idle.0 || !idle.1 {
            stable_since = Instant::now();
        }
        last = now;
        if stable_since.elapsed() >= QUIET {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: the controllers did not settle within {CONVERGE_TIMEOUT:?} (last look: queues empty \
             upstream {}, roster {}; objects changing upstream {}, roster {})\nkube-controller-manager:\n{}",
            idle.0,
            idle.1,
            moved.0,
            moved.1,
            upstream.log_tail(20)
        );
    }
}

async fn roster_queue_empty(roster: &RosterProcess) -> bool {
    let metrics = roster.metrics().await;
    metrics.lines().any(|l| l.trim() == "roster_queue_depth 0")
}
