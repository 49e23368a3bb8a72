//! S2: one huge Service — readiness flips every 100 ms, then a scale down to half and back up.
//!
//! Endpoints over 1,000 addresses are truncated by roster (and by upstream from v1.22; kube-controller-manager
//! 1.20 writes them whole). Flips therefore touch only the pods with the lowest IPs, which both keep, and a
//! flip to NotReady must take the IP out of `addresses` (upstream moves it to `notReadyAddresses`, roster's
//! truncation drops it while more than 1,000 pods are ready).

use std::sync::Arc;
use std::time::Duration;

use crate::controller::{Controller, ControllerKind};
use crate::observer::Expect;
use crate::report::PhaseReport;
use crate::run::{Bench, Params};
use crate::workload::readiness_churn;
use crate::world::for_each_concurrent;

pub const PREFIX: &str = "bench-big";

pub fn defaults(size: &str) -> Vec<(&'static str, f64)> {
    let (pods, flip_s) = match size {
        "small" => (300.0, 3.0),
        "medium" => (1_500.0, 10.0),
        _ => (5_000.0, 60.0),
    };
    vec![
        ("pods", pods),
        ("nodes", 50.0),
        ("flip_interval_ms", 100.0),
        ("flip_s", flip_s),
        ("flip_targets", 200.0),
    ]
}

pub async fn setup(b: &Arc<Bench>, p: &Params) -> anyhow::Result<()> {
    b.world
        .create_namespaces_and_nodes(&b.cluster, PREFIX, 1, p.n("nodes"))
        .await?;
    let (svc, pods) = {
        let mut m = b.world.model();
        let svc = m.add_service(0, "big");
        let pods: Vec<usize> = (0..p.n("pods")).map(|_| m.add_pod(0, "big", true)).collect();
        (svc, pods)
    };
    b.world.create_services(&b.cluster, &[svc], 1).await?;
    b.world.create_pods(&b.cluster, &pods, 48).await
}

pub async fn run(b: &Arc<Bench>, p: &Params, kind: ControllerKind) -> anyhow::Result<Vec<PhaseReport>> {
    b.reset(PREFIX).await?;
    let (ctl, cold) = b.cold_start(kind, &[]).await?;
    let flips = flip(b, p, &ctl).await?;
    let down = scale_down(b, &ctl).await?;
    let up = scale_up(b, &ctl, p.n("pods")).await?;
    ctl.stop().await;
    Ok(vec![cold, flips, down, up])
}

async fn flip(b: &Arc<Bench>, p: &Params, ctl: &Controller) -> anyhow::Result<PhaseReport> {
    // The lowest-IP pods are never scaled away, so they stay within any truncation.
    let targets: Vec<usize> = (0..p.n("flip_targets").min(p.n("pods") / 4)).collect();
    let rate = 1000.0 / p.f("flip_interval_ms");
    let mut m = b.begin("flip", Some(ctl));
    let writes = readiness_churn(b, &targets, rate, p.secs("flip_s"), Expect::NotServing).await?;
    m.last_write = writes.last;
    b.obs.wait_pending_seen(b.timeout).await;
    b.converge(&mut m).await?;
    ctl.wait_idle(Duration::from_millis(500), Duration::from_secs(30))
        .await;
    b.finish(m, ctl).await
}

/// Deletes the newest half of the pods gracefully (terminating, then gone).
async fn scale_down(b: &Arc<Bench>, ctl: &Controller) -> anyhow::Result<PhaseReport> {
    let victims: Vec<usize> = {
        let mut m = b.world.model();
        let alive: Vec<usize> = m.pods_of(0, "big");
        let victims = alive[alive.len() / 2..].to_vec();
        for &v in &victims {
            m.pods[v].terminating = true;
        }
        victims
    };
    let mut m = b.begin("scale-down", Some(ctl));
    for_each_concurrent(victims.clone(), 16, |v| async move {
        b.world.delete_gracefully(v).await
    })
    .await?;
    m.last_write = Some(std::time::Instant::now());
    b.converge(&mut m).await?;
    for_each_concurrent(victims.clone(), 16, |v| async move {
        b.world.finish_deletion(v).await
    })
    .await?;
    {
        let mut model = b.world.model();
        victims.iter().for_each(|&v| model.remove_pod(v));
    }
    ctl.wait_idle(Duration::from_millis(500), Duration::from_secs(30))
        .await;
    m.note("pods", victims.len() as f64);
    b.finish(m, ctl).await
}

/// Starts new ready pods until the Service has `pods` again.
async fn scale_up(b: &Arc<Bench>, ctl: &Controller, pods: usize) -> anyhow::Result<PhaseReport> {
    let new: Vec<usize> = {
        let mut m = b.world.model();
        let have = m.pods_of(0, "big").len();
        (have..pods).map(|_| m.add_pod(0, "big", true)).collect()
    };
    let mut m = b.begin("scale-up", Some(ctl));
    b.world.create_pods(&b.cluster, &new, 16).await?;
    m.last_write = Some(std::time::Instant::now());
    b.converge(&mut m).await?;
    ctl.wait_idle(Duration::from_millis(500), Duration::from_secs(30))
        .await;
    m.note("pods", new.len() as f64);
    b.finish(m, ctl).await
}
