//! One task per BackendSet: resolves its DNS names, probes its addresses, and publishes its view whenever
//! something changed. A spec change reconfigures the task in place (readiness of addresses that stay is
//! kept).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use rand::Rng;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::args::BackendArgs;
use super::crd::BackendSet;
use super::deny::DenyList;
use super::probe::{Outcome, Prober};
use super::resolve::{Dns, DnsState, next_lookup};
use super::spec::{Handler, ParsedSpec, ProbeSpec, Source, Timing, ValidBackend, service_name};
use super::threshold::Threshold;
use super::view::{BackendSetRef, BackendView, HostnameState, ViewInput, build_view, classify};
use super::views::Views;
use crate::cache::BackendSetKey;
use crate::metrics::Metrics;

/// What every worker shares.
pub struct WorkerContext {
    pub args: BackendArgs,
    pub deny: Arc<DenyList>,
    pub dns: Dns,
    pub prober: Prober,
    pub probes_in_flight: Arc<Semaphore>,
    pub metrics: Metrics,
    /// Where every new view of a BackendSet goes.
    pub views: Arc<Views>,
}

enum Event {
    Probe {
        ip: IpAddr,
        epoch: u64,
        outcome: Outcome,
    },
    Lookup {
        name: String,
        result: Result<Vec<IpAddr>, String>,
    },
}

/// What a prober task probes; a change restarts the task.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    handler: Handler,
    timing: Timing,
    /// The DNS name the address came from (HTTP `Host` and TLS server name).
    hostname: Option<String>,
    ports: BTreeMap<String, i32>,
}

impl Target {
    fn new(probe: &ProbeSpec, backend: &ValidBackend) -> Target {
        Target {
            handler: probe.handler.clone(),
            timing: probe.timing,
            hostname: match &backend.source {
                Source::Hostname(name) => Some(name.clone()),
                Source::Ip(_) => None,
            },
            ports: backend.ports.clone(),
        }
    }
}

struct ProberTask {
    target: Target,
    epoch: u64,
    task: JoinHandle<()>,
}

/// The handle the controller keeps: send a new BackendSet to reconfigure, drop (or `stop`) to end.
pub struct WorkerHandle {
    spec_tx: watch::Sender<Arc<BackendSet>>,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    /// Hands a changed BackendSet to the worker.
    pub fn update(&self, bs: Arc<BackendSet>) {
        self.spec_tx.send_replace(bs);
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Worker {
    key: BackendSetKey,
    ctx: Arc<WorkerContext>,
    bs: Arc<BackendSet>,
    spec: ParsedSpec,
    dns: BTreeMap<String, DnsState>,
    resolvers: HashMap<String, JoinHandle<()>>,
    thresholds: HashMap<IpAddr, Threshold>,
    probers: HashMap<IpAddr, ProberTask>,
    next_epoch: u64,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    published: Option<Arc<BackendView>>,
    /// Addresses in the deny list, counted once each in `roster_probes_total{result="denied"}`.
    denied: HashSet<IpAddr>,
}

impl Worker {
    /// Starts the worker of `bs` and returns its first view (which it does not publish), seeded from the
    /// status a previous roster wrote (readiness and last known DNS answers), so that a restart publishes
    /// what was published before until probes and lookups say otherwise.
    pub fn start(ctx: Arc<WorkerContext>, bs: Arc<BackendSet>) -> (WorkerHandle, Arc<BackendView>) {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (spec_tx, spec_rx) = watch::channel(bs.clone());
        let spec = ParsedSpec::parse(&bs);
        let mut worker = Worker {
            key: BackendSetKey::of(&bs.metadata),
            ctx,
            bs: bs.clone(),
            spec,
            dns: BTreeMap::new(),
            resolvers: HashMap::new(),
            thresholds: HashMap::new(),
            probers: HashMap::new(),
            next_epoch: 0,
            events_tx,
            events_rx,
            published: None,
            denied: HashSet::new(),
        };
        worker.seed_from_status();
        let now = Timestamp::now();
        worker.sync(now);
        let view = Arc::new(worker.view(now));
        worker.published = Some(view.clone());
        let handle = WorkerHandle {
            spec_tx,
            task: tokio::spawn(worker.run(spec_rx)),
        };
        (handle, view)
    }

    fn seed_from_status(&mut self) {
        let Some(status) = &self.bs.status else { return };
        let hostnames = self.spec.hostnames();
        let probed = matches!(self.spec.probe, Ok(Some(_)));
        let mut seeds: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for address in &status.addresses {
            let Ok(ip) = address.address.parse::<IpAddr>() else {
                continue;
            };
            if let Some(name) = address.hostname.as_ref().filter(|h| hostnames.contains(h)) {
                seeds.entry(name.clone()).or_default().push(ip);
            }
            let since = address
                .last_transition_time
                .as_deref()
                .and_then(|t| t.parse().ok());
            if probed {
                self.thresholds
                    .insert(ip, Threshold::resume(address.ready, since));
            }
        }
        self.dns = seeds
            .into_iter()
            .map(|(name, ips)| (name, DnsState::seeded(ips)))
            .collect();
    }

    async fn run(mut self, mut spec_rx: watch::Receiver<Arc<BackendSet>>) {
        loop {
            let grace_check = self.next_grace_end();
            tokio::select! {
                changed = spec_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let bs = spec_rx.borrow_and_update().clone();
                    self.reconfigure(bs);
                }
                Some(event) = self.events_rx.recv() => self.handle(event),
                _ = sleep_until(grace_check) => {}
            }
            self.sync(Timestamp::now());
            self.publish();
        }
        self.stop_tasks();
    }

    fn reconfigure(&mut self, bs: Arc<BackendSet>) {
        let spec = ParsedSpec::parse(&bs);
        let now = Timestamp::now();
        let old_probe = std::mem::replace(&mut self.spec.probe, spec.probe.clone());
        match (&old_probe, &spec.probe) {
            (Ok(Some(_)) | Err(_), Ok(None)) => {
                for t in self.thresholds.values_mut() {
                    t.probe_removed(now);
                }
            }
            // Nothing was published while the probe was invalid: start over, not ready.
            (Err(_), Ok(Some(_))) => self.thresholds.clear(),
            (old, new) if old != new => self.thresholds.values_mut().for_each(Threshold::probe_changed),
            _ => {}
        }
        self.spec = spec;
        self.bs = bs;
    }

    fn handle(&mut self, event: Event) {
        let now = Timestamp::now();
        match event {
            Event::Probe { ip, epoch, outcome } => {
                let current = self.probers.get(&ip).is_some_and(|p| p.epoch == epoch);
                let timing = match &self.spec.probe {
                    Ok(Some(probe)) => probe.timing,
                    _ => return,
                };
                if let (true, Some(threshold)) = (current, self.thresholds.get_mut(&ip)) {
                    threshold.record(outcome.into_result(), &timing, now);
                }
            }
            Event::Lookup { name, result } => {
                let Some(state) = self.dns.get_mut(&name) else {
                    return;
                };
                match result {
                    Ok(addresses) => state.succeeded(addresses),
                    Err(error) => state.failed(error, now),
                }
            }
        }
    }

    /// Brings resolver tasks, thresholds and prober tasks in line with the spec and the DNS answers.
    fn sync(&mut self, now: Timestamp) {
        let hostnames = self.spec.hostnames();
        self.dns.retain(|name, _| hostnames.contains(name));
        self.resolvers.retain(|name, task| {
            let keep = hostnames.contains(name);
            if !keep {
                task.abort();
            }
            keep
        });
        for name in hostnames {
            self.dns.entry(name.clone()).or_default();
            if !self.resolvers.contains_key(&name) {
                let task = tokio::spawn(resolve_loop(
                    self.ctx.clone(),
                    name.clone(),
                    self.events_tx.clone(),
                ));
                self.resolvers.insert(name, task);
            }
        }
        let grace = self.ctx.args.dns_failure_grace;
        let dns = &self.dns;
        let resolved = |name: &str| {
            dns.get(name)
                .map(|d| d.addresses(now, grace).to_vec())
                .unwrap_or_default()
        };
        let (candidates, excluded) = classify(&self.spec, &resolved, &self.ctx.deny);
        let denied: HashSet<IpAddr> = excluded
            .iter()
            .filter(|e| e.denied)
            .filter_map(|e| e.address.parse().ok())
            .collect();
        let newly_denied = denied.difference(&self.denied).count();
        self.ctx
            .metrics
            .backendset
            .probes
            .with_label_values(&["denied"])
            .inc_by(newly_denied as u64);
        self.denied = denied;
        let probe = self.spec.probe.clone();
        let has_probe = matches!(probe, Ok(Some(_)));
        let targets: HashMap<IpAddr, &ValidBackend> = candidates.iter().map(|c| (c.ip, c.backend)).collect();
        self.thresholds.retain(|ip, _| targets.contains_key(ip));
        for ip in targets.keys() {
            self.thresholds
                .entry(*ip)
                .or_insert_with(|| Threshold::new(has_probe, now));
        }
        let wanted: HashMap<IpAddr, Target> = match probe {
            Ok(Some(probe)) => targets
                .into_iter()
                .map(|(ip, backend)| (ip, Target::new(&probe, backend)))
                .collect(),
            _ => HashMap::new(),
        };
        self.sync_probers(wanted);
    }

    fn sync_probers(&mut self, wanted: HashMap<IpAddr, Target>) {
        self.probers.retain(|ip, prober| {
            let keep = wanted.get(ip) == Some(&prober.target);
            if !keep {
                prober.task.abort();
            }
            keep
        });
        for (ip, target) in wanted {
            if self.probers.contains_key(&ip) {
                continue;
            }
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let first = self.first_probe_delay(ip, &target.timing);
            let task = tokio::spawn(probe_loop(
                self.ctx.clone(),
                ip,
                target.clone(),
                first,
                epoch,
                self.events_tx.clone(),
            ));
            self.probers.insert(ip, ProberTask { target, epoch, task });
        }
    }

    /// A new address waits `initialDelaySeconds`; one whose readiness is known (probed before, or from
    /// status) is probed within a tenth of the period. Both with jitter, so probes spread out.
    fn first_probe_delay(&self, ip: IpAddr, timing: &Timing) -> Duration {
        let known = self.thresholds.get(&ip).is_some_and(Threshold::known);
        let jitter = timing.period.mul_f64(rand::rng().random_range(0.0..0.1));
        if known {
            jitter
        } else {
            timing.initial_delay + jitter
        }
    }

    fn next_grace_end(&self) -> Option<Instant> {
        let now = Timestamp::now();
        let grace = self.ctx.args.dns_failure_grace;
        let end = self
            .dns
            .values()
            .filter_map(|d| d.grace_ends(grace))
            .filter(|end| *end > now)
            .min()?;
        let wait = now.duration_until(end).unsigned_abs();
        Some(Instant::now() + wait + Duration::from_millis(10))
    }

    fn view(&self, now: Timestamp) -> BackendView {
        let grace = self.ctx.args.dns_failure_grace;
        let resolved = |name: &str| {
            self.dns
                .get(name)
                .map(|d| d.addresses(now, grace).to_vec())
                .unwrap_or_default()
        };
        let hostnames = self
            .spec
            .hostnames()
            .into_iter()
            .map(|name| HostnameState {
                resolution: self
                    .dns
                    .get(&name)
                    .cloned()
                    .unwrap_or_default()
                    .resolution(now, grace),
                hostname: name,
            })
            .collect();
        build_view(ViewInput {
            backendset: BackendSetRef {
                name: self.bs.name_any(),
                namespace: self.bs.namespace().unwrap_or_default(),
                uid: self.bs.uid().unwrap_or_default(),
                service: service_name(&self.bs),
            },
            generation: self.bs.metadata.generation,
            spec: &self.spec,
            deny: &self.ctx.deny,
            hostnames,
            resolved: &resolved,
            readiness: &|ip| self.thresholds.get(&ip),
        })
    }

    fn publish(&mut self) {
        let view = self.view(Timestamp::now());
        if self.published.as_deref() == Some(&view) {
            return;
        }
        let view = Arc::new(view);
        self.published = Some(view.clone());
        self.ctx.views.publish(&self.key, view);
    }

    fn stop_tasks(&mut self) {
        for task in self.resolvers.values() {
            task.abort();
        }
        for prober in self.probers.values() {
            prober.task.abort();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn resolve_loop(ctx: Arc<WorkerContext>, name: String, events: mpsc::UnboundedSender<Event>) {
    loop {
        let result = ctx.dns.lookup(&name).await;
        let wait = next_lookup(result.as_ref().ok().map(|(_, ttl)| *ttl), ctx.args.ttl_bounds());
        let outcome = if result.is_ok() { "success" } else { "failure" };
        ctx.metrics
            .backendset
            .dns_lookups
            .with_label_values(&[outcome])
            .inc();
        if let Err(err) = &result {
            tracing::debug!(hostname = %name, %err, "DNS lookup failed");
        }
        let result = result.map(|(addresses, _)| addresses);
        if events
            .send(Event::Lookup {
                name: name.clone(),
                result,
            })
            .is_err()
        {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

async fn probe_loop(
    ctx: Arc<WorkerContext>,
    ip: IpAddr,
    target: Target,
    first: Duration,
    epoch: u64,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut wait = first;
    loop {
        tokio::time::sleep(wait).await;
        let outcome = {
            let _permit = ctx
                .probes_in_flight
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let started = Instant::now();
            let outcome = ctx
                .prober
                .probe(
                    ip,
                    target.hostname.as_deref(),
                    &target.handler,
                    &target.ports,
                    target.timing.timeout,
                )
                .await;
            ctx.metrics
                .backendset
                .probe_duration
                .observe(started.elapsed().as_secs_f64());
            outcome
        };
        ctx.metrics
            .backendset
            .probes
            .with_label_values(&[outcome.label()])
            .inc();
        if events.send(Event::Probe { ip, epoch, outcome }).is_err() {
            return;
        }
        wait = target.timing.period.mul_f64(rand::rng().random_range(0.9..1.1));
    }
}
