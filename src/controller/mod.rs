//! The controller: watches fill the caches and queue keys; workers reconcile one key at a time: a Service
//! (read caches → pure desired state → diff → the writer), or a BackendSet's status.

mod holddown;
mod list_watch;
pub mod queue;
mod reconcile;
pub mod shadow;
mod status;
pub mod takeover;
pub mod topology;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::admin::{Health, Liveness};
use crate::args::{ControllerArgs, ServicesMode};
use crate::backendset::{BackendArgs, BackendSet, BackendSets};
use crate::cache::written::Kind;
use crate::cache::{Cache, NodeProjection, Objects, Packed, PodProjection, SelectorSource, ServiceKey};
use crate::desired::{self, SliceStats, TriggerTimeTracker};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::write::{Gains, Writer};
use holddown::ReadyHistory;
use queue::{Urgency, WorkKey, WorkQueue};
use shadow::Shadow;
use takeover::Upstream;
use topology::HintsEvents;

/// What the controller was asked to do, fixed at start-up.
#[derive(Clone, Debug)]
pub struct Config {
    pub services: ServicesMode,
    pub namespace: Option<String>,
    pub workers: usize,
    pub batch_window: Duration,
    pub max_endpoints_per_slice: usize,
    pub endpoints: bool,
    pub endpointslices: bool,
    /// Shadow mode: compare, write nothing (implies `services: All`).
    pub shadow: bool,
    pub shadow_settle: Duration,
    pub upstream_quiet: Duration,
    pub handback_warn_after: Duration,
    /// Seconds a watch request stays open before it is renewed (see [`crate::admin::Liveness`]).
    pub watch_timeout: u32,
}

impl Config {
    pub fn from_args(args: &ControllerArgs) -> Config {
        Config {
            services: if args.shadow {
                ServicesMode::All
            } else {
                args.services
            },
            namespace: args.namespace.clone(),
            workers: usize::from(args.workers),
            batch_window: args.batch_window,
            max_endpoints_per_slice: usize::from(args.max_endpoints_per_slice),
            endpoints: args.endpoints,
            endpointslices: args.endpointslices,
            shadow: args.shadow,
            shadow_settle: args.shadow_settle,
            upstream_quiet: args.upstream_quiet,
            handback_warn_after: args.handback_warn_after,
            watch_timeout: 290,
        }
    }

    pub fn selector_source(&self) -> SelectorSource {
        match self.services {
            ServicesMode::All => SelectorSource::Spec,
            ServicesMode::Annotated => SelectorSource::Annotation,
        }
    }

    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// Everything a worker needs, shared by the watches and the workers.
pub struct Context {
    pub config: Config,
    /// The server serves discovery.k8s.io/v1 and `--endpointslices` asks for slices: roster writes them.
    pub slices_enabled: bool,
    pub cache: RwLock<Cache>,
    pub objects: RwLock<Objects>,
    pub triggers: Mutex<TriggerTimeTracker>,
    pub queue: Arc<WorkQueue<WorkKey>>,
    pub writer: Writer,
    pub metrics: Metrics,
    /// BackendSets as a source of addresses, when the CRD is installed and `--backendsets` is on.
    pub backendsets: Option<BackendSets>,
    /// Shadow mode's comparisons, in shadow mode.
    pub shadow: Option<Shadow>,
    /// What roster knows of the built-in controllers it takes over from and hands back to.
    pub upstream: Upstream,
    /// Each Service's desired EndpointSlices and endpoints, for the gauges.
    slice_stats: Mutex<HashMap<ServiceKey, (usize, usize)>>,
    /// The server stores EndpointSlice hints ([`topology::server_stores_hints`]); without it none is written.
    pub hints_supported: bool,
    /// What was last said in Events about each Service's topology hints.
    pub hints_events: HintsEvents,
    /// Readiness transitions of the pods under a readiness hold-down.
    pub ready_history: ReadyHistory,
}

impl Context {
    pub fn new(
        config: Config,
        slices_enabled: bool,
        writer: Writer,
        metrics: Metrics,
        backendsets: Option<BackendArgs>,
    ) -> Context {
        let queue = Arc::new(WorkQueue::default());
        let backendsets = backendsets.map(|args| BackendSets::new(args, metrics.clone(), queue.clone()));
        Context {
            shadow: config.shadow.then(Shadow::default),
            upstream: Upstream::new(config.upstream_quiet, metrics.adoption.upstream_active.clone()),
            config,
            slices_enabled,
            cache: RwLock::new(Cache::default()),
            objects: RwLock::new(Objects::default()),
            triggers: Mutex::new(TriggerTimeTracker::default()),
            queue,
            writer,
            metrics,
            backendsets,
            slice_stats: Mutex::default(),
            hints_supported: false,
            hints_events: HintsEvents::default(),
            ready_history: ReadyHistory::default(),
        }
    }

    /// A Service's slice plan: its changes counted, what it desires kept for the gauges (`None`: roster
    /// publishes no slices for it any more).
    pub fn record_slice_stats(&self, key: &ServiceKey, stats: Option<&SliceStats>) {
        let mut all = self.slice_stats.lock().expect("slice stats lock");
        let Some(stats) = stats else {
            all.remove(key);
            return;
        };
        let changes = &self.metrics.slices.endpoint_changes;
        changes
            .with_label_values(&["added"])
            .inc_by(stats.endpoints_added as u64);
        changes
            .with_label_values(&["updated"])
            .inc_by(stats.endpoints_updated as u64);
        changes
            .with_label_values(&["removed"])
            .inc_by(stats.endpoints_removed as u64);
        all.insert(key.clone(), (stats.slices_desired, stats.endpoints_desired));
    }

    /// Queues `keys` after `delay` (pod changes wait for the batch window, so a burst is one write).
    pub fn enqueue(&self, keys: impl IntoIterator<Item = WorkKey>, delay: Duration, urgency: Urgency) {
        for key in keys {
            self.metrics.queue.adds.with_label_values(&[key.kind()]).inc();
            self.queue.add_after(key, delay, urgency);
        }
        self.metrics.queue.depth.set(self.queue.len() as i64);
    }

    /// Every key roster may need to look at: Services, objects whose Service may be gone (in the caches, or
    /// only in roster's unshown writes), BackendSets.
    pub fn all_keys(&self) -> Vec<WorkKey> {
        let mut services = self.cache.read().expect("cache lock").service_keys();
        services.extend(self.objects.read().expect("objects lock").keys());
        let sets = self.backendsets.iter().flat_map(BackendSets::keys);
        let mut keys: Vec<WorkKey> = services.into_iter().map(WorkKey::Service).collect();
        keys.extend(sets.map(WorkKey::BackendSet));
        keys.extend(self.writer.unshown_keys(Kind::Endpoints));
        keys.extend(self.writer.unshown_keys(Kind::EndpointSlice));
        keys.sort();
        keys.dedup();
        keys
    }

    /// The Endpoints of `key` as roster sees them: the watch's, or roster's own write the watch has not shown.
    pub fn endpoints(&self, key: &ServiceKey) -> Option<Arc<Endpoints>> {
        let cached = self.objects.read().expect("objects lock").endpoints(key);
        self.writer.view(key, cached.map(|ep| ep.decode()))
    }

    /// The slices of `key` managed by one of `managers`, as roster sees them (see [`Context::endpoints`]).
    /// Only those are decoded.
    pub fn slices(&self, key: &ServiceKey, managers: &[&str]) -> Vec<EndpointSlice> {
        let of = |manager: Option<&str>| manager.is_some_and(|m| managers.contains(&m));
        let cached = self.objects.read().expect("objects lock").slices(key);
        let decoded = cached
            .iter()
            .filter(|s| of(s.manager()))
            .map(Packed::decode)
            .collect();
        let seen = self.writer.view_all(&WorkKey::Service(key.clone()), decoded);
        let mine = seen.into_iter().filter(|s| of(desired::slice_manager(s)));
        mine.map(Arc::unwrap_or_clone).collect()
    }

    fn update_gauges(&self) {
        let g = &self.metrics.watch.cached_objects;
        {
            let cache = self.cache.read().expect("cache lock");
            g.with_label_values(&["pod"]).set(cache.len_pods() as i64);
            g.with_label_values(&["service"]).set(cache.len_services() as i64);
            g.with_label_values(&["node"]).set(cache.len_nodes() as i64);
        }
        {
            let objects = self.objects.read().expect("objects lock");
            g.with_label_values(&["endpoints"])
                .set(objects.len_endpoints() as i64);
            g.with_label_values(&["endpointslice"])
                .set(objects.len_slices() as i64);
        }
        for kind in Kind::ALL {
            let unshown = self.writer.unshown(kind) as i64;
            let gauge = self
                .metrics
                .watch
                .unconfirmed_writes
                .with_label_values(&[kind.label()]);
            gauge.set(unshown);
        }
        self.metrics
            .adoption
            .handback_waiting
            .set(self.upstream.waiting() as i64);
        let (slices, endpoints) = {
            let stats = self.slice_stats.lock().expect("slice stats lock");
            stats.values().fold((0, 0), |(s, e), (ds, de)| (s + ds, e + de))
        };
        self.metrics.slices.desired.set(slices as i64);
        self.metrics.slices.endpoints_desired.set(endpoints as i64);
        if let Some(shadow) = &self.shadow {
            self.update_shadow_gauges(shadow);
        }
    }

    fn update_shadow_gauges(&self, shadow: &Shadow) {
        let services = self.cache.read().expect("cache lock").len_services();
        let counts = shadow.counts();
        let compared: usize = counts.iter().map(|(_, n)| n).sum();
        let not_compared = ("not_compared", services.saturating_sub(compared));
        for (state, n) in counts.into_iter().chain([not_compared]) {
            self.metrics
                .adoption
                .shadow_services
                .with_label_values(&[state])
                .set(n as i64);
        }
    }
}

/// Whether the server serves `resource` in `group_version` (e.g. a CRD that is installed).
pub async fn server_serves(client: &Client, group_version: &str, resource: &str) -> bool {
    let list = client.list_api_group_resources(group_version).await;
    list.is_ok_and(|list| list.resources.iter().any(|r| r.name == resource))
}

/// Runs watches and workers until `stop`. Gaining leadership reconciles every key once, since a follower's
/// queue was not worked.
pub async fn run(ctx: Arc<Context>, client: Client, health: Health, stop: CancellationToken) {
    let watches = start_watches(&ctx, &client, &health.liveness);
    let _abort = AbortOnDrop(watches.iter().map(|w| w.task.abort_handle()).collect());
    let synced = async {
        for mut watch in watches.into_iter().map(|w| w.synced) {
            let _ = watch.wait_for(|s| *s).await;
        }
    };
    tokio::select! {
        _ = synced => {}
        _ = stop.cancelled() => return,
    }
    tracing::info!("caches synced");
    // Every key is queued now; a follower's workers skip them, so they are queued again when it leads.
    let gains = ctx.writer.leadership().gains();
    // Workers start only now: acting on a half-filled cache would rewrite or recreate objects that exist.
    let workers: Vec<_> = (0..ctx.config.workers)
        .map(|id| tokio::spawn(worker(ctx.clone(), id, health.liveness.clone())))
        .collect();
    health.readiness.set_ready(true);
    tokio::select! {
        _ = resync_on_leadership(&ctx, gains) => {}
        _ = housekeeping(&ctx) => {}
        _ = stop.cancelled() => {}
    }
    health.readiness.set_ready(false);
    ctx.queue.shutdown();
    for w in workers {
        let _ = w.await;
    }
}

/// Aborts the watch tasks when the controller stops.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

fn start_watches(ctx: &Arc<Context>, client: &Client, liveness: &Liveness) -> Vec<watch::Running> {
    let cfg = &ctx.config;
    let all = || watcher::Config::default().timeout(cfg.watch_timeout);
    let mut watches = vec![
        watch::spawn(ctx, cfg.api::<PodProjection>(client), all(), liveness),
        watch::spawn(ctx, cfg.api::<Service>(client), all(), liveness),
        watch::spawn(ctx, Api::<NodeProjection>::all(client.clone()), all(), liveness),
        watch::spawn(ctx, cfg.api::<Endpoints>(client), all(), liveness),
    ];
    if ctx.slices_enabled {
        let managers = desired::WATCHED_SLICE_MANAGERS.join(",");
        let watched = format!("{} in ({managers})", desired::LABEL_MANAGED_BY);
        let slices = all().labels(&watched);
        watches.push(watch::spawn(
            ctx,
            cfg.api::<EndpointSlice>(client),
            slices,
            liveness,
        ));
    }
    if ctx.backendsets.is_some() {
        watches.push(watch::spawn(ctx, cfg.api::<BackendSet>(client), all(), liveness));
    }
    watches
}

async fn resync_on_leadership(ctx: &Context, mut gains: Gains) {
    loop {
        gains.next().await;
        ctx.enqueue(ctx.all_keys(), Duration::ZERO, Urgency::Normal);
    }
}

async fn housekeeping(ctx: &Context) {
    let mut summary = Summary::default();
    loop {
        let now = std::time::Instant::now();
        ctx.writer.expire_unshown(now);
        if ctx.upstream.went_quiet(now) {
            let kept = ctx
                .objects
                .read()
                .expect("objects lock")
                .keys_with_upstream_slices();
            let keys = kept.into_iter().map(WorkKey::Service);
            ctx.enqueue(keys, Duration::ZERO, Urgency::Normal);
        }
        ctx.update_gauges();
        summary.log_if_due(ctx, now);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// The periodic info line: what roster did in the last minute, while it does anything.
#[derive(Default)]
struct Summary {
    last: Option<std::time::Instant>,
    writes: (u64, u64),
}

impl Summary {
    const EVERY: Duration = Duration::from_secs(60);

    fn log_if_due(&mut self, ctx: &Context, now: std::time::Instant) {
        if self.last.is_some_and(|t| now.duration_since(t) < Summary::EVERY) {
            return;
        }
        let (writes, failed) = ctx.writer.activity();
        let (new, new_failed) = (writes - self.writes.0, failed - self.writes.1);
        let depth = ctx.queue.len();
        if new > 0 || new_failed > 0 || depth > 0 {
            tracing::info!(
                writes = new,
                failed = new_failed,
                queue_depth = depth,
                "activity in the last minute"
            );
        }
        self.last = Some(now);
        self.writes = (writes, failed);
    }
}

async fn worker(ctx: Arc<Context>, id: usize, liveness: Liveness) {
    while let Some(item) = ctx.queue.get().await {
        ctx.metrics.queue.wait.observe(item.waited.as_secs_f64());
        ctx.metrics.queue.depth.set(ctx.queue.len() as i64);
        let key = &item.key;
        if !ctx.writer.leadership().is_leader() && ctx.shadow.is_none() {
            done(&ctx, key);
            continue; // a follower writes nothing; gaining leadership reconciles every key
        }
        liveness.worker_busy(id);
        let started = std::time::Instant::now();
        let result = loop {
            let result = match key {
                WorkKey::Service(service) => reconcile::reconcile(&ctx, service, item.waited).await,
                WorkKey::BackendSet(set) => status::reconcile(&ctx, set).await,
            };
            if !matches!(result, Err(Error::Recompute)) {
                break result;
            }
        };
        ctx.writer.settle(key);
        let work = ctx.metrics.queue.work_duration.with_label_values(&[key.kind()]);
        work.observe(started.elapsed().as_secs_f64());
        liveness.worker_idle(id);
        reconcile::error_policy(&ctx, key, result);
        done(&ctx, key);
    }
}

/// `key`'s turn is over; a change or retry that came meanwhile queues it again, and the depth says so.
fn done(ctx: &Context, key: &WorkKey) {
    ctx.queue.done(key);
    ctx.metrics.queue.depth.set(ctx.queue.len() as i64);
}
