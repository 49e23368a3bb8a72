//! The harness's own watch on Endpoints: what every Service's Endpoints contain right now, when each
//! expected change first became visible (latency, on the harness's monotonic clock), and when the whole
//! world matched its targets (convergence).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Endpoints;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::Notify;

pub type SvcKey = Arc<str>;

/// Endpoints above this many addresses may be truncated (roster, upstream ≥ 1.22).
const MAX_ADDRESSES: usize = 1000;
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// What a Service's Endpoints must eventually contain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Content {
        ready: BTreeSet<u32>,
        not_ready: BTreeSet<u32>,
    },
    Gone,
}

/// One change the harness waits to see.
#[derive(Clone, Debug)]
pub enum Expect {
    /// The IP is in `addresses`.
    Ready(u32),
    /// The IP is in `notReadyAddresses`.
    NotReady(u32),
    /// The IP is not in `addresses` (not ready, or left out by truncation).
    NotServing(u32),
    /// The IP is in neither list.
    Absent(u32),
    /// The whole object matches.
    Target(Target),
}

impl Expect {
    fn ip(&self) -> Option<u32> {
        match self {
            Expect::Ready(ip) | Expect::NotReady(ip) | Expect::NotServing(ip) | Expect::Absent(ip) => {
                Some(*ip)
            }
            Expect::Target(_) => None,
        }
    }

    fn holds(&self, ep: Option<&Observed>) -> bool {
        let in_ready = |ip| ep.is_some_and(|e| e.ready.contains(&ip));
        let in_not_ready = |ip| ep.is_some_and(|e| e.not_ready.contains(&ip));
        match self {
            Expect::Ready(ip) => in_ready(*ip),
            Expect::NotReady(ip) => in_not_ready(*ip),
            Expect::NotServing(ip) => !in_ready(*ip),
            Expect::Absent(ip) => !in_ready(*ip) && !in_not_ready(*ip),
            Expect::Target(t) => matches(ep, t),
        }
    }
}

/// Whether observed Endpoints match a target; truncated objects (over-capacity annotation) match when they
/// hold 1,000 of the target's addresses, ready ones first.
pub fn matches(ep: Option<&Observed>, target: &Target) -> bool {
    match (ep, target) {
        (None, Target::Gone) => true,
        (Some(_), Target::Gone) | (None, Target::Content { .. }) => false,
        (Some(e), Target::Content { ready, not_ready }) if e.truncated => {
            let total = ready.len() + not_ready.len();
            total > MAX_ADDRESSES
                && e.ready.len() == ready.len().min(MAX_ADDRESSES)
                && e.ready.len() + e.not_ready.len() == MAX_ADDRESSES
                && e.ready.iter().all(|ip| ready.contains(ip))
                && e.not_ready.iter().all(|ip| not_ready.contains(ip))
        }
        (Some(e), Target::Content { ready, not_ready }) => {
            e.ready.len() == ready.len()
                && e.not_ready.len() == not_ready.len()
                && ready.iter().all(|ip| e.ready.contains(ip))
                && not_ready.iter().all(|ip| e.not_ready.contains(ip))
        }
    }
}

/// The IPv4 addresses of one Endpoints object.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub ready: HashSet<u32>,
    pub not_ready: HashSet<u32>,
    pub truncated: bool,
    rv: String,
}

impl Observed {
    fn of(ep: &Endpoints) -> Observed {
        let mut o = Observed {
            truncated: ep
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(OVER_CAPACITY))
                .is_some_and(|v| v == "truncated"),
            rv: ep.metadata.resource_version.clone().unwrap_or_default(),
            ..Observed::default()
        };
        let ip =
            |a: &k8s_openapi::api::core::v1::EndpointAddress| a.ip.parse::<Ipv4Addr>().ok().map(u32::from);
        for s in ep.subsets.iter().flatten() {
            o.ready.extend(s.addresses.iter().flatten().filter_map(ip));
            o.not_ready
                .extend(s.not_ready_addresses.iter().flatten().filter_map(ip));
        }
        o
    }
}

struct Pending {
    id: u64,
    label: &'static str,
    expect: Expect,
    issued: Instant,
    returned: Option<Instant>,
    seen: Option<Instant>,
}

/// One measured change.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub label: &'static str,
    pub latency: Duration,
    /// From before the harness's write was sent (the write's own round trip included).
    pub since_issue: Duration,
}

/// The changes measured since the last [`Observer::take`].
#[derive(Debug, Default)]
pub struct Latencies {
    pub samples: Vec<Sample>,
    /// Replaced by a later change of the same IP before being seen.
    pub superseded: u64,
    /// Still not seen when taken.
    pub unobserved: u64,
    /// Already true when registered (not measured).
    pub trivial: u64,
}

/// Endpoints events seen: new revisions, deletions and their (re-serialised) size.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventStats {
    pub revisions: u64,
    pub deletions: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct State {
    eps: HashMap<SvcKey, Observed>,
    pending: HashMap<SvcKey, Vec<Pending>>,
    next_id: u64,
    lat: Latencies,
    stats: EventStats,
    targets: HashMap<SvcKey, Target>,
    mismatched: HashSet<SvcKey>,
    converged_at: Option<Instant>,
    relist: Option<HashSet<SvcKey>>,
    synced: bool,
}

impl State {
    fn apply(&mut self, ep: &Endpoints, now: Instant) {
        let (Some(ns), Some(name)) = (&ep.metadata.namespace, &ep.metadata.name) else {
            return;
        };
        let key: SvcKey = format!("{ns}/{name}").into();
        if let Some(seen) = self.relist.as_mut() {
            seen.insert(key.clone());
        }
        let observed = Observed::of(ep);
        if self.eps.get(&key).is_some_and(|o| o.rv == observed.rv) {
            return;
        }
        self.stats.revisions += 1;
        self.stats.bytes += serde_json::to_vec(ep).map_or(0, |v| v.len() as u64);
        self.eps.insert(key.clone(), observed);
        self.evaluate(&key, now);
    }

    fn delete(&mut self, key: &SvcKey, now: Instant) {
        if self.eps.remove(key).is_some() {
            self.stats.deletions += 1;
            self.evaluate(key, now);
        }
    }

    fn evaluate(&mut self, key: &SvcKey, now: Instant) {
        let ep = self.eps.get(key);
        if let Some(list) = self.pending.get_mut(key) {
            let lat = &mut self.lat;
            list.retain_mut(|p| {
                if p.seen.is_some() || !p.expect.holds(ep) {
                    return true;
                }
                match p.returned {
                    Some(r) => {
                        lat.samples.push(Sample {
                            label: p.label,
                            latency: now.saturating_duration_since(r),
                            since_issue: now.saturating_duration_since(p.issued),
                        });
                        false
                    }
                    None => {
                        p.seen = Some(now);
                        true
                    }
                }
            });
        }
        if let Some(target) = self.targets.get(key) {
            if matches(ep, target) {
                self.mismatched.remove(key);
                if self.mismatched.is_empty() && self.converged_at.is_none() {
                    self.converged_at = Some(now);
                }
            } else {
                self.mismatched.insert(key.clone());
                self.converged_at = None;
            }
        }
    }
}

/// A running watch on every Endpoints object of the cluster.
pub struct Observer {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Starts the watch and waits for its initial list.
    pub async fn start(client: kube::Client) -> anyhow::Result<Observer> {
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        let api: Api<Endpoints> = Api::all(client);
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                let Ok(ev) = ev else { continue };
                let mut st = s.lock().unwrap();
                match ev {
                    watcher::Event::Apply(ep) | watcher::Event::InitApply(ep) => st.apply(&ep, now),
                    watcher::Event::Delete(ep) => {
                        let key = format!(
                            "{}/{}",
                            ep.metadata.namespace.unwrap_or_default(),
                            ep.metadata.name.unwrap_or_default()
                        );
                        st.delete(&key.into(), now);
                    }
                    watcher::Event::Init => st.relist = Some(HashSet::new()),
                    watcher::Event::InitDone => {
                        let seen = st.relist.take().unwrap_or_default();
                        let gone: Vec<SvcKey> =
                            st.eps.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                        for k in gone {
                            st.delete(&k, now);
                        }
                        st.synced = true;
                    }
                }
                drop(st);
                c.notify_waiters();
            }
        });
        let obs = Observer { state, changed, task };
        obs.wait_until(Duration::from_secs(60), |s| s.synced).await;
        Ok(obs)
    }

    /// Registers a change about to be written; call [`Observer::returned`] when the write returns.
    pub fn expect(&self, key: &SvcKey, label: &'static str, expect: Expect) -> u64 {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        st.next_id += 1;
        let id = st.next_id;
        let already = expect.holds(st.eps.get(key));
        let mut superseded = 0;
        let list = st.pending.entry(key.clone()).or_default();
        if let Some(ip) = expect.ip() {
            let before = list.len();
            list.retain(|p| p.expect.ip() != Some(ip));
            superseded = (before - list.len()) as u64;
        }
        if already {
            st.lat.trivial += 1;
        } else {
            list.push(Pending {
                id,
                label,
                expect,
                issued: Instant::now(),
                returned: None,
                seen: None,
            });
        }
        st.lat.superseded += superseded;
        id
    }

    /// The write behind expectation `id` returned now: latency counts from here.
    pub fn returned(&self, key: &SvcKey, id: u64) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        let mut sample = None;
        if let Some(list) = st.pending.get_mut(key)
            && let Some(pos) = list.iter().position(|p| p.id == id)
        {
            if list[pos].seen.is_some() {
                let p = list.remove(pos);
                sample = Some(Sample {
                    label: p.label,
                    latency: Duration::ZERO,
                    since_issue: p.seen.unwrap_or(now).saturating_duration_since(p.issued),
                });
            } else {
                list[pos].returned = Some(now);
            }
        }
        if let Some(s) = sample {
            st.lat.samples.push(s);
        }
    }

    /// Whether a change of `ip` in `key` is registered and not yet seen.
    pub fn is_pending(&self, key: &SvcKey, ip: u32) -> bool {
        let st = self.state.lock().unwrap();
        st.pending
            .get(key)
            .is_some_and(|l| l.iter().any(|p| p.expect.ip() == Some(ip)))
    }

    /// Waits until every registered change was seen (or `timeout`).
    pub async fn wait_pending_seen(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.pending.values().all(Vec::is_empty))
            .await
    }

    /// The measured changes since the last call; unseen expectations are dropped and counted.
    pub fn take(&self) -> Latencies {
        let mut st = self.state.lock().unwrap();
        let unobserved = st.pending.values().map(|v| v.len() as u64).sum();
        st.pending.clear();
        let mut lat = std::mem::take(&mut st.lat);
        lat.unobserved = unobserved;
        lat
    }

    pub fn stats(&self) -> EventStats {
        self.state.lock().unwrap().stats
    }

    /// Sets what every listed Service must reach; [`Observer::wait_converged`] waits for it.
    pub fn set_targets(&self, targets: HashMap<SvcKey, Target>) {
        let now = Instant::now();
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        st.mismatched = targets
            .iter()
            .filter(|(k, t)| !matches(st.eps.get(*k), t))
            .map(|(k, _)| k.clone())
            .collect();
        st.converged_at = st.mismatched.is_empty().then_some(now);
        st.targets = targets;
    }

    /// The instant the world first matched its targets (`None` after `timeout`).
    pub async fn wait_converged(&self, timeout: Duration) -> Option<Instant> {
        self.wait_until(timeout, |s| s.converged_at.is_some()).await;
        self.state.lock().unwrap().converged_at
    }

    /// A few mismatched Services, for error messages.
    pub fn mismatch_report(&self, n: usize) -> String {
        let st = self.state.lock().unwrap();
        let mut lines = vec![format!(
            "{} of {} Services not at target",
            st.mismatched.len(),
            st.targets.len()
        )];
        for key in st.mismatched.iter().take(n) {
            let ep = st.eps.get(key);
            let got = ep.map_or("absent".to_string(), |e| {
                format!(
                    "{} ready, {} not ready, truncated={}",
                    e.ready.len(),
                    e.not_ready.len(),
                    e.truncated
                )
            });
            let want = match &st.targets[key] {
                Target::Gone => "absent".to_string(),
                Target::Content { ready, not_ready } => {
                    format!("{} ready, {} not ready", ready.len(), not_ready.len())
                }
            };
            lines.push(format!("  {key}: has {got}; wants {want}"));
        }
        lines.join("\n")
    }

    /// Number of Endpoints objects currently seen in namespaces starting with `prefix`.
    pub fn count_in(&self, prefix: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.eps.keys().filter(|k| k.starts_with(prefix)).count()
    }

    /// Observed content of one Service's Endpoints.
    pub fn get(&self, key: &SvcKey) -> Option<Observed> {
        self.state.lock().unwrap().eps.get(key).cloned()
    }

    async fn wait_until(&self, timeout: Duration, cond: impl Fn(&State) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if cond(&self.state.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond(&self.state.lock().unwrap());
            }
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
