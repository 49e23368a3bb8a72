//! E2E: propagation through the data plane, from a pod's status PATCH to the node's rules. kube-proxy v1.20.2
//! (iptables mode, reading v1 Endpoints, its default 1 s minimum between rule rewrites) runs in a node network
//! namespace against the cluster (roster_envtest::dataplane). Random pods flip readiness at a steady rate;
//! each flip to NotReady is timed from just before its status PATCH to the first dump of the node's rules
//! (`iptables-save`, polled back to back) with no rule sending new connections to the pod: from then on no
//! new connection reaches it (tests/dataplane.rs shows these rules decide where connections go). The
//! phase's p50/p99 are these end-to-end times; `endpoints_*` notes give the Endpoints part alone.
//!
//! Needs the real tier, root, iptables and kube-proxy (`scripts/envtest-assets --with-kube-proxy`).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use roster_envtest::dataplane::{DataPlane, KubeProxyOptions};
use roster_envtest::real::ADMIN_TOKEN;

use crate::controller::{Controller, ControllerKind};
use crate::observer::{Expect, Latencies};
use crate::report::{LatencySummary, PhaseReport};
use crate::run::{Bench, Params};
use crate::small_services;
use crate::workload::readiness_churn_observed;

pub fn defaults(size: &str) -> Vec<(&'static str, f64)> {
    let seconds = match size {
        "small" => 10.0,
        "medium" => 30.0,
        _ => 60.0,
    };
    vec![
        ("namespaces", 1.0),
        ("services", 10.0),
        ("pods_per_service", 10.0),
        ("nodes", 1.0),
        ("seconds", seconds),
        ("slow_rate", 10.0),
        ("fast_rate", 50.0),
        ("min_sync_ms", 1000.0),
    ]
}

/// The world of S1 (Services each selecting their own ready pods), in one namespace.
pub async fn setup(b: &Arc<Bench>, p: &Params) -> anyhow::Result<()> {
    if let Some(why) = DataPlane::unavailable() {
        bail!("{why}");
    }
    if b.cluster.memory().is_some() {
        bail!("the data plane runs kube-proxy against a real API server: use --tier real");
    }
    small_services::setup(b, p).await
}

/// A cold start, then kube-proxy on its Endpoints, then the flips at the slow and at the fast rate.
pub async fn run(b: &Arc<Bench>, p: &Params, kind: ControllerKind) -> anyhow::Result<Vec<PhaseReport>> {
    b.reset(small_services::PREFIX).await?;
    let (ctl, cold) = b.cold_start(kind, &[]).await?;
    let options = KubeProxyOptions {
        endpoint_slices: false,
        min_sync_period: Duration::from_millis(p.n("min_sync_ms") as u64),
    };
    let plane = Arc::new(DataPlane::start(&b.cluster.url(), ADMIN_TOKEN, &options).await?);
    let pods: Vec<usize> = (0..b.world.model().pods.len()).collect();
    wait_routed(b, &plane, &pods).await?;
    let mut phases = vec![cold];
    for rate in [p.f("slow_rate"), p.f("fast_rate")] {
        phases.push(flips(b, &plane, &ctl, &pods, rate, p.secs("seconds")).await?);
        ready_again(b, &plane, &pods).await?;
    }
    ctl.stop().await;
    Ok(phases)
}

/// One phase: readiness flips of random pods at `rate` per second for `duration`.
async fn flips(
    b: &Arc<Bench>,
    plane: &Arc<DataPlane>,
    ctl: &Controller,
    pods: &[usize],
    rate: f64,
    duration: Duration,
) -> anyhow::Result<PhaseReport> {
    let tracker = Arc::new(Propagation::default());
    tracker.observe(plane.routed()?, Duration::ZERO);
    let poller = Poller::start(tracker.clone(), plane.clone());
    let mut m = b.begin(&format!("flips-{rate}/s"), Some(ctl));
    let on_flip = {
        let tracker = tracker.clone();
        move |ip, ready| tracker.flipped(Ipv4Addr::from(ip), ready)
    };
    let writes = readiness_churn_observed(b, pods, rate, duration, Expect::NotReady, on_flip).await?;
    m.last_write = writes.last;
    b.obs.wait_pending_seen(b.timeout).await;
    b.converge(&mut m).await?;
    tracker.wait_drained(b.timeout).await;
    poller.stop().await?;
    let mut report = b.finish(m, ctl).await?;
    tracker.report(&mut report);
    Ok(report)
}

/// Makes every pod ready again and waits until the node routes to each one.
async fn ready_again(b: &Arc<Bench>, plane: &DataPlane, pods: &[usize]) -> anyhow::Result<()> {
    let not_ready: Vec<usize> = {
        let mut m = b.world.model();
        let flipped: Vec<usize> = pods.iter().copied().filter(|&p| !m.pods[p].ready).collect();
        for &p in &flipped {
            m.pods[p].ready = true;
        }
        flipped
    };
    for p in not_ready {
        b.world.set_ready(p, true).await?;
    }
    wait_routed(b, plane, pods).await
}

async fn wait_routed(b: &Arc<Bench>, plane: &DataPlane, pods: &[usize]) -> anyhow::Result<()> {
    let ips: Vec<Ipv4Addr> = {
        let m = b.world.model();
        pods.iter().map(|&p| Ipv4Addr::from(m.pods[p].ip)).collect()
    };
    let deadline = Instant::now() + b.timeout;
    loop {
        let routed = plane.routed()?;
        let missing = ips.iter().filter(|ip| !routed.contains(ip)).count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "kube-proxy routes to {missing} pods less than expected after {:?}",
                b.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Flips to NotReady waiting for the node's rules to drop their pod, and the measured times.
#[derive(Default)]
struct Propagation {
    state: Mutex<Tracked>,
}

#[derive(Default)]
struct Tracked {
    /// What the last dump of the rules routed to.
    routed: HashSet<Ipv4Addr>,
    pending: HashMap<Ipv4Addr, Instant>,
    samples: Vec<Duration>,
    /// Flips to NotReady of a pod the rules did not route to yet (its last Ready flip had not arrived).
    unrouted: u64,
    /// Flipped back to Ready before the rules dropped it.
    superseded: u64,
    dumps: u64,
    dump_time: Duration,
}

impl Propagation {
    /// A flip of `ip`, about to be written.
    fn flipped(&self, ip: Ipv4Addr, ready: bool) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        if ready {
            st.superseded += u64::from(st.pending.remove(&ip).is_some());
        } else if st.routed.contains(&ip) {
            st.pending.insert(ip, now);
        } else {
            st.unrouted += 1;
        }
    }

    /// A dump of the rules, taken in `took`, routing to `routed`.
    fn observe(&self, routed: HashSet<Ipv4Addr>, took: Duration) {
        let now = Instant::now();
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        let samples = &mut st.samples;
        st.pending.retain(|ip, at| {
            let dropped = !routed.contains(ip);
            if dropped {
                samples.push(now.saturating_duration_since(*at));
            }
            !dropped
        });
        st.routed = routed;
        st.dumps += 1;
        st.dump_time += took;
    }

    async fn wait_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.state.lock().unwrap().pending.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Puts the end-to-end times in `report.latency`, the Endpoints part and the counts in its notes.
    fn report(&self, report: &mut PhaseReport) {
        let st = self.state.lock().unwrap();
        let counts = Latencies {
            superseded: st.superseded,
            unobserved: st.pending.len() as u64,
            ..Latencies::default()
        };
        if let Some(endpoints) = report.latency_by_kind.get("not-ready") {
            let (p50, p99) = (endpoints.p50_ms, endpoints.p99_ms);
            report.notes.insert("endpoints_not_ready_p50_ms".into(), p50);
            report.notes.insert("endpoints_not_ready_p99_ms".into(), p99);
        }
        report.latency = LatencySummary::of(&st.samples, &counts);
        report.notes.insert("unrouted_at_flip".into(), st.unrouted as f64);
        let dump_ms = st.dump_time.as_secs_f64() * 1e3 / st.dumps.max(1) as f64;
        report.notes.insert("rules_dump_ms".into(), dump_ms);
    }
}

/// Dumps the node's rules back to back on a blocking thread, feeding a [`Propagation`].
struct Poller {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Poller {
    fn start(tracker: Arc<Propagation>, plane: Arc<DataPlane>) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::task::spawn_blocking(move || {
            while !stopped.load(Ordering::Relaxed) {
                let started = Instant::now();
                let routed = plane.routed()?;
                tracker.observe(routed, started.elapsed());
            }
            Ok(())
        });
        Poller { stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}
