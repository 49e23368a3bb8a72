//! S4: a rolling update of every Service at once (maxSurge 1, maxUnavailable 0): per pod, a new pod starts
//! not ready, becomes ready, then an old pod terminates and is removed.

use std::sync::Arc;
use std::time::Duration;

use crate::controller::ControllerKind;
use crate::observer::Expect;
use crate::report::PhaseReport;
use crate::run::{Bench, Params};

pub const PREFIX: &str = "bench-roll";

pub fn defaults(size: &str) -> Vec<(&'static str, f64)> {
    let (services, pods) = match size {
        "small" => (5.0, 5.0),
        "medium" => (20.0, 20.0),
        _ => (100.0, 50.0),
    };
    vec![
        ("services", services),
        ("pods_per_service", pods),
        ("nodes", 50.0),
        ("startup_ms", 200.0),
        ("termination_ms", 200.0),
    ]
}

pub async fn setup(b: &Arc<Bench>, p: &Params) -> anyhow::Result<()> {
    b.world
        .create_namespaces_and_nodes(&b.cluster, PREFIX, 1, p.n("nodes"))
        .await?;
    let (svcs, pods) = {
        let mut m = b.world.model();
        let (mut svcs, mut pods) = (Vec::new(), Vec::new());
        for i in 0..p.n("services") {
            let app = format!("r{i}");
            svcs.push(m.add_service(0, &app));
            pods.extend((0..p.n("pods_per_service")).map(|_| m.add_pod(0, &app, true)));
        }
        (svcs, pods)
    };
    b.world.create_services(&b.cluster, &svcs, 16).await?;
    b.world.create_pods(&b.cluster, &pods, 48).await
}

pub async fn run(b: &Arc<Bench>, p: &Params, kind: ControllerKind) -> anyhow::Result<Vec<PhaseReport>> {
    b.reset(PREFIX).await?;
    let (ctl, cold) = b.cold_start(kind, &[]).await?;
    let mut m = b.begin("rollout", Some(&ctl));
    let services: Vec<usize> = (0..b.world.model().services.len()).collect();
    let (startup, termination) = (p.secs("startup_ms") / 1000, p.secs("termination_ms") / 1000);
    let rollouts = services.iter().map(|&s| roll(b, s, startup, termination));
    let ends = futures::future::try_join_all(rollouts).await?;
    m.last_write = ends.into_iter().max();
    b.obs.wait_pending_seen(b.timeout).await;
    b.converge(&mut m).await?;
    ctl.wait_idle(Duration::from_millis(500), Duration::from_secs(30))
        .await;
    let rollout = b.finish(m, &ctl).await?;
    ctl.stop().await;
    Ok(vec![cold, rollout])
}

/// Replaces every pod of Service `s`, one at a time; returns when the last write returned.
async fn roll(
    b: &Arc<Bench>,
    s: usize,
    startup: Duration,
    termination: Duration,
) -> anyhow::Result<std::time::Instant> {
    let (key, ns, app) = {
        let m = b.world.model();
        (m.key(s), m.services[s].ns, m.services[s].app.clone())
    };
    let old: Vec<usize> = b.world.model().pods_of(ns, &app);
    for old_pod in old {
        let (new, new_ip) = {
            let mut m = b.world.model();
            let new = m.add_pod(ns, &app, false);
            (new, m.pods[new].ip)
        };
        let id = b.obs.expect(&key, "new", Expect::NotReady(new_ip));
        b.world.create_pods(&b.cluster, &[new], 1).await?;
        b.obs.returned(&key, id);
        tokio::time::sleep(startup).await;

        b.world.model().pods[new].ready = true;
        let id = b.obs.expect(&key, "ready", Expect::Ready(new_ip));
        b.world.set_ready(new, true).await?;
        b.obs.returned(&key, id);

        let old_ip = {
            let mut m = b.world.model();
            m.pods[old_pod].terminating = true;
            m.pods[old_pod].ip
        };
        let id = b.obs.expect(&key, "terminating", Expect::Absent(old_ip));
        b.world.delete_gracefully(old_pod).await?;
        b.obs.returned(&key, id);
        tokio::time::sleep(termination).await;
        b.world.finish_deletion(old_pod).await?;
        b.world.model().remove_pod(old_pod);
    }
    Ok(std::time::Instant::now())
}
