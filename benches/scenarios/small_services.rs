//! S1 (many small Services: cold starts and steady readiness churn) and S3 (a readiness storm over the
//! same population).

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;

use crate::controller::{Controller, ControllerKind};
use crate::observer::Expect;
use crate::report::PhaseReport;
use crate::run::{Bench, Params};
use crate::workload::{Change, Writes, readiness_churn};
use crate::world::for_each_concurrent;

pub const PREFIX: &str = "bench-small";

/// S1/S3 sizes (`storm`: S3's). `default` is benchmarks.md's; `medium` is what the shared 2-core machine runs
/// side by side in minutes (S3 keeps more, smaller Services so the storm spans more than the write burst).
pub fn defaults(size: &str, storm: bool) -> Vec<(&'static str, f64)> {
    let (namespaces, services, pods, nodes) = match (size, storm) {
        ("small", _) => (5.0, 20.0, 5.0, 10.0),
        ("medium", false) => (20.0, 100.0, 10.0, 50.0),
        ("medium", true) => (20.0, 400.0, 5.0, 50.0),
        _ => (200.0, 10_000.0, 10.0, 500.0),
    };
    let churn_s = match size {
        "small" => 3.0,
        "medium" => 15.0,
        _ => 600.0,
    };
    vec![
        ("namespaces", namespaces),
        ("services", services),
        ("pods_per_service", pods),
        ("nodes", nodes),
        ("churn_rate", 20.0),
        ("churn_s", churn_s),
        ("storm_fraction", 0.1),
        ("recover_after_s", if size == "default" { 30.0 } else { 5.0 }),
    ]
}

/// Services `s<i>` in namespace `i % namespaces`, each selecting its own ready pods.
pub async fn setup(b: &Arc<Bench>, p: &Params) -> anyhow::Result<()> {
    b.world
        .create_namespaces_and_nodes(&b.cluster, PREFIX, p.n("namespaces"), p.n("nodes"))
        .await?;
    let (svcs, pods) = {
        let mut m = b.world.model();
        let (mut svcs, mut pods) = (Vec::new(), Vec::new());
        for i in 0..p.n("services") {
            let ns = i % p.n("namespaces");
            let app = format!("a{i}");
            svcs.push(m.add_service(ns, &app));
            for _ in 0..p.n("pods_per_service") {
                pods.push(m.add_pod(ns, &app, true));
            }
        }
        (svcs, pods)
    };
    b.world.create_services(&b.cluster, &svcs, 32).await?;
    b.world.create_pods(&b.cluster, &pods, 48).await
}

/// S1: cold start from empty, restart over correct objects, then readiness flips at `churn_rate`.
pub async fn s1(b: &Arc<Bench>, p: &Params, kind: ControllerKind) -> anyhow::Result<Vec<PhaseReport>> {
    b.reset(PREFIX).await?;
    let (ctl, cold) = b.cold_start(kind, &[]).await?;
    let (ctl, restart) = b.restart(ctl, &[]).await?;
    let candidates: Vec<usize> = (0..b.world.model().pods.len()).collect();
    let mut m = b.begin("churn", Some(&ctl));
    let writes = readiness_churn(
        b,
        &candidates,
        p.f("churn_rate"),
        p.secs("churn_s"),
        Expect::NotReady,
    )
    .await?;
    m.last_write = writes.last;
    b.obs.wait_pending_seen(b.timeout).await;
    b.converge(&mut m).await?;
    ctl.wait_idle(Duration::from_millis(500), Duration::from_secs(30))
        .await;
    let churn = b.finish(m, &ctl).await?;
    let noise = pod_noise(b, &ctl, &candidates).await?;
    ctl.stop().await;
    Ok(vec![cold, restart, churn, noise])
}

/// Pod events that change nothing a controller publishes (an annotation), as fast as the server takes
/// them: the controller's CPU per pod event without any write.
async fn pod_noise(b: &Arc<Bench>, ctl: &Controller, pods: &[usize]) -> anyhow::Result<PhaseReport> {
    let mut m = b.begin("pod-noise", Some(ctl));
    // Two passes, each with values never used before, so every patch is a real change.
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let touches: Vec<(usize, u64)> = pods.iter().chain(pods).copied().zip(epoch..).collect();
    for_each_concurrent(touches, 32, |(p, v)| async move { b.world.touch(p, v).await }).await?;
    m.last_write = Some(std::time::Instant::now());
    ctl.wait_idle(Duration::from_millis(500), Duration::from_secs(30))
        .await;
    b.converge(&mut m).await?;
    m.converged = None;
    b.finish(m, ctl).await
}

/// S3: every pod of `storm_fraction` of the Services goes NotReady at once, and back `recover_after_s` later.
/// The world's Endpoints are built first with the write budget lifted; the run starts with a restart.
pub async fn s3(b: &Arc<Bench>, p: &Params, kind: ControllerKind) -> anyhow::Result<Vec<PhaseReport>> {
    b.reset(PREFIX).await?;
    let (ctl, restart) = b.primed_start(kind).await?;
    let pods = storm_pods(b, p);
    let down = storm(b, &ctl, "storm-down", &pods, false).await?;
    tokio::time::sleep(p.secs("recover_after_s")).await;
    let up = storm(b, &ctl, "storm-up", &pods, true).await?;
    ctl.stop().await;
    Ok(vec![restart, down, up])
}

/// The pods of a random `storm_fraction` of the Services.
fn storm_pods(b: &Arc<Bench>, p: &Params) -> Vec<usize> {
    let services = p.n("services");
    let count = ((services as f64 * p.f("storm_fraction")).ceil() as usize).max(1);
    let mut order: Vec<usize> = (0..services).collect();
    order.shuffle(&mut *b.rng());
    let m = b.world.model();
    order[..count]
        .iter()
        .flat_map(|&s| {
            let svc = &m.services[s];
            m.pods_of(svc.ns, &svc.app)
        })
        .collect()
}

async fn storm(
    b: &Arc<Bench>,
    ctl: &Controller,
    phase: &str,
    pods: &[usize],
    ready: bool,
) -> anyhow::Result<PhaseReport> {
    let mut m = b.begin(phase, Some(ctl));
    let mut writes = Writes::default();
    for &pod in pods {
        let (key, ip) = {
            let mut model = b.world.model();
            model.pods[pod].ready = ready;
            let svc = model.services_of(pod)[0];
            (model.key(svc), model.pods[pod].ip)
        };
        let (label, expect) = if ready {
            ("ready", Expect::Ready(ip))
        } else {
            ("not-ready", Expect::NotReady(ip))
        };
        let bench = b.clone();
        writes.spawn(b, vec![Change { key, label, expect }], async move {
            bench.world.set_ready(pod, ready).await
        });
        writes.throttle(64).await?;
    }
    writes.join().await?;
    m.last_write = writes.last;
    m.note("pods", pods.len() as f64);
    m.note(
        "injection_s",
        writes
            .last
            .unwrap_or(m.start)
            .duration_since(m.start)
            .as_secs_f64(),
    );
    b.obs.wait_pending_seen(b.timeout).await;
    b.converge(&mut m).await?;
    ctl.wait_idle(Duration::from_millis(500), Duration::from_secs(30))
        .await;
    b.finish(m, ctl).await
}
