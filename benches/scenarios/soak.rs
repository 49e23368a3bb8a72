//! Soak (issue 8): hours of randomized churn against the in-memory tier with roster running, an invariant
//! check after every churn cycle, and roster's RSS and CPU sampled at every check. roster only.
//!
//! A cycle: `cycle_s` seconds of churn at `rate` operations per second (readiness flips, pods created,
//! deleted gracefully and relabelled, no-op pod updates, Services created, deleted and re-pointed), the
//! kubelet's final delete of the cycle's terminating pods, then the checks:
//! * every Service's Endpoints reach the model's target within `converge_timeout_s`;
//! * every live Service's EndpointSlices hold exactly its ready IPs as ready, no IP twice, and nothing else
//!   than its not-ready or terminating pods; a deleted Service keeps no slice;
//! * no update that changed nothing (the server's no-op counter stays 0).
//!
//! Every `fault_every` cycles the server misbehaves during the churn, in turn: every watch ends with 410
//! Expired, every watch is cut, the controller's next Endpoints/EndpointSlice writes get 500s, or 429s
//! with Retry-After. RSS is judged after `warmup_s`: its least-squares slope per hour, and the last hour's
//! mean against the first hour's.
//!
//! The world keeps its size, so that growth of roster is not confused with growth of the world: a fixed set
//! of apps (`apps_per_service` per Service), new pods and relabelled pods go to a uniformly random app, and
//! Services are created for or re-pointed to an app no other Service selects. The `addresses` column
//! (addresses the live Services' Endpoints must hold) shows it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use rand::Rng;
use roster_envtest::memory::{Fault, FaultAction, Verb};

use crate::controller::{Controller, ControllerKind};
use crate::observer::Target;
use crate::report::PhaseReport;
use crate::run::{Bench, Params};
use crate::workload::ticker;

pub const PREFIX: &str = "bench-soak";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub fn defaults(size: &str) -> Vec<(&'static str, f64)> {
    let (namespaces, services, duration_s, warmup_s) = match size {
        "small" => (4.0, 20.0, 60.0, 20.0),
        "medium" => (10.0, 200.0, 1800.0, 300.0),
        _ => (20.0, 500.0, 7200.0, 600.0),
    };
    vec![
        ("namespaces", namespaces),
        ("services", services),
        ("pods_per_service", 8.0),
        ("apps_per_service", 1.25),
        ("nodes", 50.0),
        ("duration_s", duration_s),
        ("warmup_s", warmup_s),
        ("cycle_s", 10.0),
        ("rate", 30.0),
        ("fault_every", 6.0),
        ("converge_timeout_s", 60.0),
    ]
}

/// Namespaces, apps `a<j>` of `pods_per_service` pods each, `apps_per_service` of them per Service, and
/// Services `s<i>` each selecting its own app (the other apps have no Service yet).
pub async fn setup(b: &Arc<Bench>, p: &Params) -> anyhow::Result<()> {
    if b.cluster.memory().is_none() {
        bail!("the soak runs on the in-memory tier (--tier memory)");
    }
    b.world
        .create_namespaces_and_nodes(&b.cluster, PREFIX, p.n("namespaces"), p.n("nodes"))
        .await?;
    let (svcs, pods) = {
        let mut m = b.world.model();
        let (mut svcs, mut pods) = (Vec::new(), Vec::new());
        for j in 0..apps(p) {
            let (ns, app) = app_of(p, j);
            if j < p.n("services") {
                svcs.push(m.add_service(ns, &app));
            }
            for k in 0..p.n("pods_per_service") {
                pods.push(m.add_pod(ns, &app, k % 4 != 0));
            }
        }
        (svcs, pods)
    };
    b.world.create_services(&b.cluster, &svcs, 1).await?;
    b.world.create_pods(&b.cluster, &pods, 32).await
}

/// How many apps the world has: a fixed set, so that it keeps its size (pods per app, Services per app and
/// the addresses roster holds stay where they start).
fn apps(p: &Params) -> usize {
    (p.f("services") * p.f("apps_per_service")).ceil() as usize
}

/// Namespace and name of app `j`.
fn app_of(p: &Params, j: usize) -> (usize, String) {
    (j % p.n("namespaces"), format!("a{j}"))
}

/// One churn operation.
#[derive(Clone, Copy, Debug)]
enum Op {
    Flip,
    /// A pod is created below the initial population, deleted (gracefully) at or above it.
    PodTurnover,
    Relabel,
    Touch,
    /// A Service is created below the initial count, deleted at or above it.
    ServiceTurnover,
    Repoint,
}

/// Weights of the operations.
const OPS: [(Op, u32); 6] = [
    (Op::Flip, 45),
    (Op::PodTurnover, 20),
    (Op::Relabel, 8),
    (Op::Touch, 15),
    (Op::ServiceTurnover, 8),
    (Op::Repoint, 4),
];

/// IPs a Service's Endpoints must hold (none once it is gone).
fn target_addresses(target: &Target) -> usize {
    match target {
        Target::Content { ready, not_ready } => ready.len() + not_ready.len(),
        Target::Gone => 0,
    }
}

/// One row of the soak record, written at every check.
struct Sample {
    at_s: f64,
    cycle: usize,
    pods: usize,
    services: usize,
    /// Addresses the live Services' Endpoints must hold: the world's size for roster.
    addresses: usize,
    ops: u64,
    converge_s: f64,
    rss_mib: f64,
    cpu_s: f64,
    harness_rss_mib: f64,
    unconfirmed_writes: f64,
    fault: &'static str,
}

pub async fn run(b: &Arc<Bench>, p: &Params, csv: Option<&Path>) -> anyhow::Result<Vec<PhaseReport>> {
    let mut ctl = Controller::start(ControllerKind::Roster, &b.cluster, &[])?;
    ctl.wait_ready(b.timeout).await?;
    eprintln!("   soak: roster runs as pid {}", ctl.pid());
    let mut m = b.begin("soak", Some(&ctl));
    b.converge(&mut m).await?;
    let mut csv = match csv {
        Some(path) => {
            let mut f = std::fs::File::create(path)?;
            writeln!(
                f,
                "at_s,cycle,pods,services,addresses,ops,converge_s,roster_rss_mib,roster_cpu_s,harness_rss_mib,unconfirmed_writes,fault"
            )?;
            Some(f)
        }
        None => None,
    };
    let start = Instant::now();
    let (mut samples, mut violations, mut ops) = (Vec::new(), Vec::<String>::new(), 0u64);
    let mut cycle = 0;
    while start.elapsed() < p.secs("duration_s") {
        cycle += 1;
        let fault = fault_for(b, p, cycle);
        ops += churn(b, p).await?;
        b.cluster.memory().expect("memory tier").clear_faults();
        finish_deletions(b).await?;
        let checked = Instant::now();
        let converged = check(b, p).await;
        let converge_s = checked.elapsed().as_secs_f64();
        if let Err(e) = converged {
            eprintln!("   soak cycle {cycle}: VIOLATION: {e:#}");
            violations.push(format!("cycle {cycle}: {e:#}"));
        }
        let (pods, services, addresses) = {
            let m = b.world.model();
            (
                m.pods.iter().filter(|p| p.alive).count(),
                m.services.iter().filter(|s| s.alive).count(),
                (0..m.services.len())
                    .map(|s| target_addresses(&m.target(s)))
                    .sum(),
            )
        };
        let s = Sample {
            at_s: start.elapsed().as_secs_f64(),
            cycle,
            pods,
            services,
            addresses,
            ops,
            converge_s,
            rss_mib: ctl.rss_mib(),
            cpu_s: ctl.cpu_seconds(),
            harness_rss_mib: self_rss_mib(),
            unconfirmed_writes: ctl
                .metric_sum("roster_unconfirmed_writes")
                .await
                .unwrap_or(f64::NAN),
            fault,
        };
        if let Some(f) = csv.as_mut() {
            writeln!(
                f,
                "{:.1},{},{},{},{},{},{:.3},{:.2},{:.2},{:.1},{},{}",
                s.at_s,
                s.cycle,
                s.pods,
                s.services,
                s.addresses,
                s.ops,
                s.converge_s,
                s.rss_mib,
                s.cpu_s,
                s.harness_rss_mib,
                s.unconfirmed_writes,
                s.fault
            )?;
        }
        if cycle % 30 == 1 {
            eprintln!(
                "   soak {:>6.0} s cycle {cycle}: {} pods, {} Services ({} addresses), {} ops, converged in {:.2} s, roster RSS {:.1} MiB, CPU {:.1} s, unconfirmed writes {}, violations {}",
                s.at_s,
                s.pods,
                s.services,
                s.addresses,
                s.ops,
                s.converge_s,
                s.rss_mib,
                s.cpu_s,
                s.unconfirmed_writes,
                violations.len()
            );
        }
        samples.push(s);
        if !ctl.is_running() {
            bail!("roster exited during the soak:\n{}", ctl.log_tail(30));
        }
    }
    let mut report = b.finish(m, &ctl).await?;
    ctl.stop().await;
    summarize(&mut report, &samples, p.f("warmup_s"), violations.len(), ops);
    if !violations.is_empty() {
        bail!(
            "{} invariant violations in {cycle} cycles; first: {}",
            violations.len(),
            violations[0]
        );
    }
    if report.noop_writes > 0 {
        bail!("{} no-op writes during the soak", report.noop_writes);
    }
    Ok(vec![report])
}

/// Turns on this cycle's fault, if any: faults rotate every `fault_every` cycles.
fn fault_for(b: &Arc<Bench>, p: &Params, cycle: usize) -> &'static str {
    let every = p.n("fault_every").max(1);
    if !cycle.is_multiple_of(every) {
        return "";
    }
    let server = b.cluster.memory().expect("memory tier");
    let writes_fail = |code: u16, retry_after_secs: Option<u32>| {
        for (resource, verb) in [
            ("endpoints", Verb::Update),
            ("endpoints", Verb::Create),
            ("endpointslices", Verb::Update),
            ("endpointslices", Verb::Create),
        ] {
            server.inject_fault(Fault {
                verb: Some(verb),
                resource: Some(resource.to_string()),
                times: Some(10),
                ..Fault::new(FaultAction::Status {
                    code,
                    retry_after_secs,
                })
            });
        }
    };
    match (cycle / every) % 4 {
        0 => {
            server.expire_all_watches();
            "410"
        }
        1 => {
            server.close_all_watches();
            "watch-cut"
        }
        2 => {
            writes_fail(500, None);
            "500"
        }
        _ => {
            writes_fail(429, Some(1));
            "429"
        }
    }
}

/// `cycle_s` seconds of random operations at `rate`; returns how many were made.
async fn churn(b: &Arc<Bench>, p: &Params) -> anyhow::Result<u64> {
    let total: u32 = OPS.iter().map(|(_, w)| w).sum();
    let mut tick = ticker(p.f("rate"));
    let end = Instant::now() + p.secs("cycle_s");
    let mut done = 0;
    while Instant::now() < end {
        tick.tick().await;
        let mut pick = b.rng().random_range(0..total);
        let op = OPS
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .map_or(Op::Flip, |(op, _)| *op);
        if apply(b, p, op).await? {
            done += 1;
        }
    }
    Ok(done)
}

/// Makes one operation in the model and then through the API; false when there was nothing to do it on.
async fn apply(b: &Arc<Bench>, p: &Params, op: Op) -> anyhow::Result<bool> {
    let w = &b.world;
    let pods_wanted = apps(p) * p.n("pods_per_service");
    match op {
        Op::Flip => {
            let Some(pod) = random_pod(b) else {
                return Ok(false);
            };
            let ready = {
                let mut m = w.model();
                m.pods[pod].ready = !m.pods[pod].ready;
                m.pods[pod].ready
            };
            w.set_ready(pod, ready).await?;
        }
        Op::Touch => {
            let Some(pod) = random_pod(b) else {
                return Ok(false);
            };
            let value: u64 = b.rng().random();
            w.touch(pod, value).await?;
        }
        Op::PodTurnover if live_pods(b) < pods_wanted => {
            let (ns, app) = app_of(p, b.rng().random_range(0..apps(p)));
            let ready = b.rng().random_bool(0.7);
            let pod = w.model().add_pod(ns, &app, ready);
            w.create_pods(&b.cluster, &[pod], 1).await?;
        }
        Op::PodTurnover => {
            let Some(pod) = random_pod(b) else {
                return Ok(false);
            };
            w.model().pods[pod].terminating = true;
            w.delete_gracefully(pod).await?;
        }
        Op::Relabel => {
            let Some(pod) = random_pod(b) else {
                return Ok(false);
            };
            let ns = w.model().pods[pod].ns;
            let app = random_app_in(b, p, ns);
            w.model().relabel(pod, &app);
            w.set_app(pod, &app).await?;
        }
        Op::ServiceTurnover if live_services(b) < p.n("services") => {
            let namespaces = w.model().namespaces.len();
            let ns = b.rng().random_range(0..namespaces);
            let Some(app) = unselected_app_in(b, p, ns) else {
                return Ok(false);
            };
            let svc = w.model().add_service(ns, &app);
            w.create_services(&b.cluster, &[svc], 1).await?;
        }
        Op::ServiceTurnover => {
            let Some(svc) = random_service(b) else {
                return Ok(false);
            };
            w.model().services[svc].alive = false;
            w.delete_service(svc).await?;
        }
        Op::Repoint => {
            let Some(svc) = random_service(b) else {
                return Ok(false);
            };
            let ns = w.model().services[svc].ns;
            let Some(app) = unselected_app_in(b, p, ns) else {
                return Ok(false);
            };
            w.model().services[svc].app = app.clone();
            w.set_selector(svc, &app).await?;
        }
    }
    Ok(true)
}

/// Pods that exist and are not terminating.
fn live_pods(b: &Arc<Bench>) -> usize {
    let m = b.world.model();
    m.pods.iter().filter(|p| p.alive && !p.terminating).count()
}

fn live_services(b: &Arc<Bench>) -> usize {
    b.world.model().services.iter().filter(|s| s.alive).count()
}

/// A random pod that exists and is not terminating.
fn random_pod(b: &Arc<Bench>) -> Option<usize> {
    let m = b.world.model();
    (0..32)
        .map(|_| b.rng().random_range(0..m.pods.len()))
        .find(|&p| m.pods[p].alive && !m.pods[p].terminating)
}

fn random_service(b: &Arc<Bench>) -> Option<usize> {
    let m = b.world.model();
    (0..32)
        .map(|_| b.rng().random_range(0..m.services.len()))
        .find(|&s| m.services[s].alive)
}

/// The apps of namespace `ns`.
fn apps_in(p: &Params, ns: usize) -> impl Iterator<Item = String> + '_ {
    (ns..apps(p))
        .step_by(p.n("namespaces"))
        .map(move |j| app_of(p, j).1)
}

/// A uniformly random app of namespace `ns` (not one weighted by its pods, which would concentrate them).
fn random_app_in(b: &Arc<Bench>, p: &Params, ns: usize) -> String {
    let all: Vec<String> = apps_in(p, ns).collect();
    all[b.rng().random_range(0..all.len())].clone()
}

/// A uniformly random app of namespace `ns` that no living Service selects, so that Services never come to
/// share apps; `None` when every app has one.
fn unselected_app_in(b: &Arc<Bench>, p: &Params, ns: usize) -> Option<String> {
    let free: Vec<String> = {
        let m = b.world.model();
        let selected: HashSet<&str> = m
            .services
            .iter()
            .filter(|s| s.alive && s.ns == ns)
            .map(|s| s.app.as_str())
            .collect();
        apps_in(p, ns)
            .filter(|a| !selected.contains(a.as_str()))
            .collect()
    };
    (!free.is_empty()).then(|| free[b.rng().random_range(0..free.len())].clone())
}

/// The kubelet removes every terminating pod for good.
async fn finish_deletions(b: &Arc<Bench>) -> anyhow::Result<()> {
    let terminating: Vec<usize> = {
        let m = b.world.model();
        (0..m.pods.len())
            .filter(|&p| m.pods[p].alive && m.pods[p].terminating)
            .collect()
    };
    for p in terminating {
        b.world.finish_deletion(p).await?;
        b.world.model().remove_pod(p);
    }
    Ok(())
}

/// The invariants: Endpoints converge to the model, and EndpointSlices agree with it.
async fn check(b: &Arc<Bench>, p: &Params) -> anyhow::Result<()> {
    let targets = b.world.model().targets();
    b.obs.set_targets(targets.clone());
    if b.obs.wait_converged(p.secs("converge_timeout_s")).await.is_none() {
        bail!("Endpoints did not converge: {}", b.obs.mismatch_report(5));
    }
    // Slices follow the same writes a moment later: give them until the same deadline.
    let deadline = Instant::now() + p.secs("converge_timeout_s");
    loop {
        match check_slices(b, &targets).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn check_slices(b: &Arc<Bench>, targets: &HashMap<Arc<str>, Target>) -> anyhow::Result<()> {
    let api: Api<EndpointSlice> = Api::all(b.cluster.client());
    let slices = api.list(&ListParams::default()).await?;
    let mut by_service: HashMap<String, Vec<&EndpointSlice>> = HashMap::new();
    for s in &slices.items {
        let ns = s.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
            by_service.entry(format!("{ns}/{svc}")).or_default().push(s);
        }
    }
    let terminating = terminating_ips(b);
    for (key, target) in targets {
        let slices = by_service.remove(&**key).unwrap_or_default();
        match target {
            Target::Gone if !slices.is_empty() => bail!("{key}: deleted but keeps {} slices", slices.len()),
            Target::Gone => {}
            Target::Content { ready, not_ready } => {
                check_service_slices(key, &slices, ready, not_ready, &terminating)?
            }
        }
    }
    if let Some((key, s)) = by_service.iter().find(|(k, _)| k.starts_with(PREFIX)) {
        bail!("{key}: {} slices of a Service the harness never made", s.len());
    }
    Ok(())
}

fn check_service_slices(
    key: &str,
    slices: &[&EndpointSlice],
    ready: &BTreeSet<u32>,
    not_ready: &BTreeSet<u32>,
    terminating: &BTreeSet<u32>,
) -> anyhow::Result<()> {
    let mut seen: BTreeMap<u32, bool> = BTreeMap::new();
    for s in slices {
        for e in &s.endpoints {
            let is_ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            for ip in e.addresses.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok()) {
                if seen.insert(u32::from(ip), is_ready).is_some() {
                    bail!("{key}: {ip} is in two slices");
                }
            }
        }
    }
    let slice_ready: BTreeSet<u32> = seen.iter().filter(|(_, r)| **r).map(|(ip, _)| *ip).collect();
    if &slice_ready != ready {
        bail!(
            "{key}: slices hold {} ready IPs, the Service has {}",
            slice_ready.len(),
            ready.len()
        );
    }
    if let Some(ip) = seen
        .iter()
        .find(|(ip, r)| !**r && !not_ready.contains(ip) && !terminating.contains(ip))
    {
        bail!(
            "{key}: slices hold {} which is no pod of the Service",
            Ipv4Addr::from(*ip.0)
        );
    }
    if let Some(ip) = not_ready.iter().find(|ip| !seen.contains_key(ip)) {
        bail!(
            "{key}: not-ready pod {} missing from the slices",
            Ipv4Addr::from(*ip)
        );
    }
    Ok(())
}

fn terminating_ips(b: &Arc<Bench>) -> BTreeSet<u32> {
    let m = b.world.model();
    m.pods
        .iter()
        .filter(|p| p.alive && p.terminating)
        .map(|p| p.ip)
        .collect()
}

fn self_rss_mib() -> f64 {
    crate::controller::proc_status_kib(std::process::id(), "VmRSS:").map_or(0.0, |k| k as f64 / 1024.0)
}

/// RSS after the warm-up: its slope per hour (least squares), first and last hour's means, the range.
fn summarize(report: &mut PhaseReport, samples: &[Sample], warmup_s: f64, violations: usize, ops: u64) {
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.at_s >= warmup_s).collect();
    let n = steady.len() as f64;
    let notes = &mut report.notes;
    notes.insert("cycles".into(), samples.len() as f64);
    notes.insert("operations".into(), ops as f64);
    notes.insert("violations".into(), violations as f64);
    notes.insert(
        "max_converge_s".into(),
        samples.iter().map(|s| s.converge_s).fold(0.0, f64::max),
    );
    if n < 2.0 {
        return;
    }
    let (mx, my) = (
        steady.iter().map(|s| s.at_s).sum::<f64>() / n,
        steady.iter().map(|s| s.rss_mib).sum::<f64>() / n,
    );
    let sxy: f64 = steady.iter().map(|s| (s.at_s - mx) * (s.rss_mib - my)).sum();
    let sxx: f64 = steady.iter().map(|s| (s.at_s - mx).powi(2)).sum();
    notes.insert("rss_slope_mib_per_h".into(), sxy / sxx.max(f64::EPSILON) * 3600.0);
    let mean = |from: f64, to: f64| {
        let v: Vec<f64> = steady
            .iter()
            .filter(|s| s.at_s >= from && s.at_s < to)
            .map(|s| s.rss_mib)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let end = steady.last().map_or(0.0, |s| s.at_s);
    let window = ((end - warmup_s) / 2.0).min(3600.0);
    notes.insert("rss_first_window_mib".into(), mean(warmup_s, warmup_s + window));
    notes.insert("rss_last_window_mib".into(), mean(end - window, end + 1.0));
    notes.insert("rss_window_s".into(), window);
    let rss = steady.iter().map(|s| s.rss_mib);
    notes.insert("rss_min_mib".into(), rss.clone().fold(f64::MAX, f64::min));
    notes.insert("rss_max_mib".into(), rss.fold(0.0, f64::max));
    let cpu = samples.last().map_or(0.0, |s| s.cpu_s) - samples.first().map_or(0.0, |s| s.cpu_s);
    notes.insert("roster_cpu_s".into(), cpu);
    let addresses = |s: Option<&&Sample>| s.map_or(0.0, |s| s.addresses as f64);
    notes.insert("addresses_after_warmup".into(), addresses(steady.first()));
    notes.insert("addresses_at_end".into(), addresses(steady.last()));
}
