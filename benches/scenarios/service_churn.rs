//! S5: Service churn in one namespace — Services created at 50/s, selectors changed, Services deleted.
//!
//! Pods come in groups of five (`app=g<k>`); each Service selects one group. The base Services' Endpoints
//! are built first with the write budget lifted; the run starts with a restart. On kube-apiserver 1.20 the
//! Service registry deletes a Service's Endpoints itself, so the delete latency there is the API server's.

use std::sync::Arc;
use std::time::Duration;

use crate::controller::{Controller, ControllerKind};
use crate::observer::Expect;
use crate::report::PhaseReport;
use crate::run::{Bench, Meter, Params};
use crate::workload::{Change, Writes, ticker};

pub const PREFIX: &str = "bench-churn";
const GROUP: usize = 5;

pub fn defaults(size: &str) -> Vec<(&'static str, f64)> {
    let (pods, base, create, change) = match size {
        "small" => (100.0, 20.0, 20.0, 10.0),
        "medium" => (1_000.0, 400.0, 200.0, 100.0),
        _ => (5_000.0, 4_000.0, 1_000.0, 500.0),
    };
    vec![
        ("pods", pods),
        ("base_services", base),
        ("create", create),
        ("change", change),
        ("rate", 50.0),
        ("nodes", 50.0),
    ]
}

fn group(k: usize) -> String {
    format!("g{k}")
}

pub async fn setup(b: &Arc<Bench>, p: &Params) -> anyhow::Result<()> {
    b.world
        .create_namespaces_and_nodes(&b.cluster, PREFIX, 1, p.n("nodes"))
        .await?;
    let groups = (p.n("pods") / GROUP).max(1);
    let (svcs, pods) = {
        let mut m = b.world.model();
        let pods: Vec<usize> = (0..p.n("pods"))
            .map(|i| m.add_pod(0, &group(i / GROUP), true))
            .collect();
        let svcs: Vec<usize> = (0..p.n("base_services"))
            .map(|j| m.add_service(0, &group(j % groups)))
            .collect();
        (svcs, pods)
    };
    b.world.create_services(&b.cluster, &svcs, 16).await?;
    b.world.create_pods(&b.cluster, &pods, 48).await
}

pub async fn run(b: &Arc<Bench>, p: &Params, kind: ControllerKind) -> anyhow::Result<Vec<PhaseReport>> {
    b.reset(PREFIX).await?;
    let (ctl, restart) = b.primed_start(kind).await?;
    let groups = (p.n("pods") / GROUP).max(1);
    let base = p.n("base_services");
    let created: Vec<usize> = {
        let mut m = b.world.model();
        (0..p.n("create"))
            .map(|k| m.add_service(0, &group((base + k) % groups)))
            .collect()
    };
    let create = paced(
        b,
        &ctl,
        "create",
        p.f("rate"),
        &created,
        |b: &Arc<Bench>, s: usize| {
            let b = b.clone();
            async move { b.world.create_services(&b.cluster, &[s], 1).await }
        },
    )
    .await?;
    let changed: Vec<usize> = (0..p.n("change").min(base)).collect();
    for &s in &changed {
        let mut m = b.world.model();
        let current: usize = m.services[s].app[1..].parse()?;
        m.services[s].app = group((current + groups / 2 + 1) % groups);
    }
    let select = paced(
        b,
        &ctl,
        "selector",
        p.f("rate"),
        &changed,
        |b: &Arc<Bench>, s: usize| {
            let b = b.clone();
            async move {
                let app = b.world.model().services[s].app.clone();
                b.world.set_selector(s, &app).await
            }
        },
    )
    .await?;
    for &s in &created {
        b.world.model().services[s].alive = false;
    }
    let delete = paced(
        b,
        &ctl,
        "delete",
        p.f("rate"),
        &created,
        |b: &Arc<Bench>, s: usize| {
            let b = b.clone();
            async move { b.world.delete_service(s).await }
        },
    )
    .await?;
    ctl.stop().await;
    Ok(vec![restart, create, select, delete])
}

/// Writes one Service at a time at `rate`, each expecting its (already modelled) target.
async fn paced<F, Fut>(
    b: &Arc<Bench>,
    ctl: &Controller,
    phase: &str,
    rate: f64,
    services: &[usize],
    write: F,
) -> anyhow::Result<PhaseReport>
where
    F: Fn(&Arc<Bench>, usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut m: Meter = b.begin(phase, Some(ctl));
    let mut writes = Writes::default();
    let mut tick = ticker(rate);
    let label: &'static str = match phase {
        "create" => "create",
        "selector" => "selector",
        _ => "delete",
    };
    for &s in services {
        tick.tick().await;
        let (key, target) = {
            let model = b.world.model();
            (model.key(s), model.target(s))
        };
        let expect = Expect::Target(target.clone());
        writes.spawn(b, vec![Change { key, label, expect }], write(b, s));
        writes.throttle(64).await?;
    }
    writes.join().await?;
    m.last_write = writes.last;
    b.obs.wait_pending_seen(b.timeout).await;
    b.converge(&mut m).await?;
    ctl.wait_idle(Duration::from_millis(500), Duration::from_secs(30))
        .await;
    b.finish(m, ctl).await
}
