//! S6: scale and restart on the in-memory tier — the ClusterLoader2 load-test mix (per namespace 149
//! Services of 5 pods, 12 of 30, 1 of 250; the rest of the pods behind no Service), roster only.
//!
//! Phases: the initial sync (from no Endpoints; roster's write budget raised so 8,100 creates do not take
//! 7 minutes at 20/s), a restart over correct Endpoints (time to ready, writes: must be 0), and a forced
//! relist (every watch ends with 410 Expired). Memory per pod is roster's RSS over its RSS on an empty
//! cluster, divided by the pods.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::controller::{Controller, ControllerKind};
use crate::report::PhaseReport;
use crate::run::{Bench, Params};

pub const PREFIX: &str = "bench-scale";
/// CL2 load test: per namespace, (Services, pods each).
const MIX: [(usize, usize); 3] = [(149, 5), (12, 30), (1, 250)];

pub fn defaults(size: &str) -> Vec<(&'static str, f64)> {
    let (namespaces, pods, nodes) = match size {
        "small" => (2.0, 6_000.0, 20.0),
        "medium" => (10.0, 30_000.0, 100.0),
        _ => (50.0, 150_000.0, 500.0),
    };
    vec![
        ("namespaces", namespaces),
        ("pods", pods),
        ("nodes", nodes),
        ("initial_write_qps", 5000.0),
    ]
}

/// Measures roster on the empty cluster, then loads the world (in-process creates, HTTP status patches).
pub async fn setup(b: &Arc<Bench>, p: &Params) -> anyhow::Result<f64> {
    if b.cluster.memory().is_none() {
        bail!("S6 runs on the in-memory tier (--tier memory)");
    }
    let empty_rss = empty_cluster_rss(b).await?;
    b.world
        .create_namespaces_and_nodes(&b.cluster, PREFIX, p.n("namespaces"), p.n("nodes"))
        .await?;
    let (svcs, pods) = populate_model(b, p);
    let t = Instant::now();
    b.world.create_services(&b.cluster, &svcs, 1).await?;
    b.world.create_pods(&b.cluster, &pods, 64).await?;
    println!(
        "S6: loaded {} pods, {} Services, {} Nodes in {:.1} s",
        pods.len(),
        svcs.len(),
        p.n("nodes"),
        t.elapsed().as_secs_f64()
    );
    Ok(empty_rss)
}

fn populate_model(b: &Arc<Bench>, p: &Params) -> (Vec<usize>, Vec<usize>) {
    let mut m = b.world.model();
    let namespaces = p.n("namespaces");
    let per_ns = p.n("pods") / namespaces;
    let (mut svcs, mut pods) = (Vec::new(), Vec::new());
    for ns in 0..namespaces {
        let mut in_ns = 0;
        for (kind, (count, size)) in MIX.iter().enumerate() {
            for i in 0..*count {
                let app = format!("m{kind}-{i}");
                svcs.push(m.add_service(ns, &app));
                pods.extend((0..*size).map(|_| m.add_pod(ns, &app, true)));
                in_ns += size;
            }
        }
        // Pods of Deployments no Service exposes.
        pods.extend((in_ns..per_ns).map(|i| m.add_pod(ns, &format!("free-{}", i % 300), true)));
    }
    (svcs, pods)
}

/// roster's RSS, idle on a cluster without pods or Services.
async fn empty_cluster_rss(b: &Arc<Bench>) -> anyhow::Result<f64> {
    let mut ctl = Controller::start(ControllerKind::Roster, &b.cluster, &[])?;
    ctl.wait_ready(b.timeout).await?;
    ctl.wait_idle(Duration::from_secs(1), Duration::from_secs(20))
        .await;
    let rss = ctl.rss_mib();
    ctl.stop().await;
    Ok(rss)
}

pub async fn run(b: &Arc<Bench>, p: &Params, empty_rss: f64) -> anyhow::Result<Vec<PhaseReport>> {
    b.reset(PREFIX).await?;
    let qps = p.f("initial_write_qps").to_string();
    let initial = [
        "--write-qps".to_string(),
        qps.clone(),
        "--write-burst".to_string(),
        qps,
    ];
    let (ctl, mut first) = b.cold_start(ControllerKind::Roster, &initial).await?;
    first.phase = "initial-sync".into();
    let (ctl, mut restart) = b.restart(ctl, &[]).await?;
    let pods = b.world.model().pods.iter().filter(|p| p.alive).count() as f64;
    restart.notes.insert("rss_empty_mib".into(), empty_rss);
    restart.notes.insert(
        "bytes_per_pod".into(),
        (restart.rss_end_mib - empty_rss) * 1024.0 * 1024.0 / pods,
    );
    let relist = relist(b, &ctl).await?;
    ctl.stop().await;
    Ok(vec![first, restart, relist])
}

/// Ends every watch with 410 Expired: roster re-lists everything; measures the RSS peak and writes.
async fn relist(b: &Arc<Bench>, ctl: &Controller) -> anyhow::Result<PhaseReport> {
    let steady = ctl.rss_mib();
    let mut m = b.begin("relist", Some(ctl));
    let memory = b.cluster.memory().expect("memory tier");
    memory.expire_all_watches();
    // Wait for the relist to start using CPU, then for it to go quiet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctl.cpu_seconds() - m.cpu0 < 0.05 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy = ctl.wait_idle(Duration::from_secs(2), b.timeout).await;
    m.note("relist_s", busy.saturating_duration_since(m.start).as_secs_f64());
    m.note("rss_steady_before_mib", steady);
    b.converge(&mut m).await?;
    let mut report = b.finish(m, ctl).await?;
    report
        .notes
        .insert("peak_over_steady".into(), report.rss_peak_mib / steady);
    Ok(report)
}
