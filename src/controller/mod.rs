//! The controller: watches fill the caches and queue Service keys; workers reconcile one Service at a time
//! (read caches → pure desired state → diff → the writer).

pub mod objects;
pub mod queue;
mod reconcile;
pub mod watch;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch as signal;

use crate::admin::Readiness;
use crate::write::Writer;
use crate::args::{ControllerArgs, ServicesMode};
use crate::backendset::BackendRegistry;
use crate::cache::{Cache, NodeProjection, PodProjection, SelectorSource, ServiceKey};
use crate::desired::{self, TriggerTimeTracker};
use crate::metrics::Metrics;
use objects::Objects;
use queue::WorkQueue;

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
}

impl Config {
    pub fn from_args(args: &ControllerArgs) -> Config {
        Config {
            services: args.services,
            namespace: args.namespace.clone(),
            workers: usize::from(args.workers),
            batch_window: args.batch_window,
            max_endpoints_per_slice: usize::from(args.max_endpoints_per_slice),
            endpoints: args.endpoints,
            endpointslices: args.endpointslices,
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
    pub slices_enabled: bool,
    pub cache: RwLock<Cache>,
    pub objects: Mutex<Objects>,
    pub triggers: Mutex<TriggerTimeTracker>,
    pub queue: WorkQueue<ServiceKey>,
    pub writer: Arc<Writer>,
    pub metrics: Metrics,
    /// BackendSet views, when the BackendSet controller runs.
    pub backends: Option<Arc<BackendRegistry>>,
}

impl Context {
    pub fn new(config: Config, slices_enabled: bool, writer: Arc<Writer>, metrics: Metrics) -> Context {
        Context {
            config,
            slices_enabled,
            cache: RwLock::new(Cache::default()),
            objects: Mutex::new(Objects::default()),
            triggers: Mutex::new(TriggerTimeTracker::default()),
            queue: WorkQueue::default(),
            writer,
            metrics,
            backends: None,
        }
    }

    /// Queues `keys`; pod-triggered keys wait for the batch window so a burst of pod changes is one write.
    pub fn enqueue_all(&self, keys: impl IntoIterator<Item = ServiceKey>, from_pods: bool) {
        let delay = if from_pods {
            self.config.batch_window
        } else {
            Duration::ZERO
        };
        for key in keys {
            self.queue.add_after(key, delay);
        }
        self.metrics.queue_depth.set(self.queue.len() as i64);
    }

    /// Every key roster may need to look at: Services, and objects whose Service may be gone.
    pub fn all_keys(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.cache.read().expect("cache lock").service_keys();
        keys.extend(
            self.backends
                .iter()
                .flat_map(|registry| registry.bound_services()),
        );
        let objects = self.objects.lock().expect("objects lock");
        keys.extend(objects.endpoints_keys());
        keys.extend(objects.slice_keys());
        keys.sort();
        keys.dedup();
        keys
    }

    fn update_cache_gauges(&self) {
        let cache = self.cache.read().expect("cache lock");
        let objects = self.objects.lock().expect("objects lock");
        let g = &self.metrics.cached_objects;
        g.with_label_values(&["pod"]).set(cache.len_pods() as i64);
        g.with_label_values(&["service"]).set(cache.len_services() as i64);
        g.with_label_values(&["node"]).set(cache.len_nodes() as i64);
        g.with_label_values(&["endpoints"])
            .set(objects.len_endpoints() as i64);
        g.with_label_values(&["endpointslice"])
            .set(objects.len_slices() as i64);
        let u = &self.metrics.unconfirmed_writes;
        u.with_label_values(&["endpoints"])
            .set(objects.len_unconfirmed_endpoints() as i64);
        u.with_label_values(&["endpointslice"])
            .set(objects.len_unconfirmed_slices() as i64);
    }
}

/// Whether the server serves discovery.k8s.io/v1 (kube-apiserver 1.20 does not).
pub async fn server_serves_slices_v1(client: &Client) -> bool {
    server_serves(client, "discovery.k8s.io/v1", "endpointslices").await
}

/// Whether the server serves `resource` in `group_version` (e.g. a CRD that is installed).
pub async fn server_serves(client: &Client, group_version: &str, resource: &str) -> bool {
    let list = client.list_api_group_resources(group_version).await;
    list.is_ok_and(|list| list.resources.iter().any(|r| r.name == resource))
}

/// Runs watches and workers until `shutdown` resolves. `became_leader` bumps when this replica gains the
/// Lease: every key is then reconciled once, since a follower's queue was not worked.
pub async fn run(
    ctx: Arc<Context>,
    client: Client,
    readiness: Readiness,
    mut became_leader: signal::Receiver<u64>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (synced, watches) = start_watches(&ctx, &client);
    let _stop_watches = AbortOnDrop(watches);
    tokio::pin!(shutdown);
    let backends_synced = async {
        if let Some(registry) = &ctx.backends {
            registry.wait_synced().await;
        }
    };
    tokio::select! {
        _ = async { tokio::join!(wait_all_synced(synced), backends_synced) } => {}
        _ = &mut shutdown => return,
    }
    tracing::info!("caches synced");
    // Workers start only now: acting on a half-filled cache would rewrite or recreate objects that exist.
    let workers: Vec<_> = (0..ctx.config.workers)
        .map(|_| tokio::spawn(worker(ctx.clone())))
        .collect();
    readiness.set_ready(true);
    let resync_on_leadership = async {
        loop {
            if ctx.writer.leader().is_leader() {
                ctx.enqueue_all(ctx.all_keys(), false);
            }
            if became_leader.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let housekeeping = async {
        loop {
            ctx.objects
                .lock()
                .expect("objects lock")
                .expire_unconfirmed(std::time::Instant::now());
            ctx.update_cache_gauges();
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    };
    tokio::select! {
        _ = resync_on_leadership => {}
        _ = housekeeping => {}
        _ = shutdown => {}
    }
    readiness.set_ready(false);
    ctx.queue.shutdown();
    for w in workers {
        let _ = w.await;
    }
}

/// Aborts the watch tasks when the controller stops.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

type Spawner = Box<dyn FnOnce(signal::Sender<bool>) -> tokio::task::JoinHandle<()>>;

fn start_watches(
    ctx: &Arc<Context>,
    client: &Client,
) -> (Vec<signal::Receiver<bool>>, Vec<tokio::task::JoinHandle<()>>) {
    let mut synced = Vec::new();
    let mut tasks = Vec::new();
    let mut spawn = |f: Spawner| {
        let (tx, rx) = signal::channel(false);
        synced.push(rx);
        tasks.push(f(tx));
    };
    let cfg = &ctx.config;
    let (c, k) = (ctx.clone(), client.clone());
    let pods: Api<PodProjection> = cfg.api(&k);
    spawn(Box::new(move |tx| {
        tokio::spawn(watch::run(
            pods,
            watcher::Config::default(),
            "pod",
            c,
            tx,
            watch::pods,
        ))
    }));
    let c = ctx.clone();
    let services: Api<Service> = cfg.api(&k);
    spawn(Box::new(move |tx| {
        tokio::spawn(watch::run(
            services,
            watcher::Config::default(),
            "service",
            c,
            tx,
            watch::services,
        ))
    }));
    let c = ctx.clone();
    let nodes: Api<NodeProjection> = Api::all(k.clone());
    spawn(Box::new(move |tx| {
        tokio::spawn(watch::run(
            nodes,
            watcher::Config::default(),
            "node",
            c,
            tx,
            watch::nodes,
        ))
    }));
    let c = ctx.clone();
    let endpoints: Api<Endpoints> = cfg.api(&k);
    spawn(Box::new(move |tx| {
        tokio::spawn(watch::run(
            endpoints,
            watcher::Config::default(),
            "endpoints",
            c,
            tx,
            watch::endpoints,
        ))
    }));
    if ctx.slices_enabled {
        let c = ctx.clone();
        let slices: Api<EndpointSlice> = cfg.api(&k);
        let selector = format!(
            "{} in ({},{})",
            desired::LABEL_MANAGED_BY,
            desired::SLICE_CONTROLLER_NAME,
            desired::MIRRORING_CONTROLLER_NAME
        );
        let wc = watcher::Config::default().labels(&selector);
        spawn(Box::new(move |tx| {
            tokio::spawn(watch::run(slices, wc, "endpointslice", c, tx, watch::slices))
        }));
    }
    (synced, tasks)
}

async fn wait_all_synced(mut synced: Vec<signal::Receiver<bool>>) {
    for rx in &mut synced {
        let _ = rx.wait_for(|s| *s).await;
    }
}

async fn worker(ctx: Arc<Context>) {
    while let Some(item) = ctx.queue.get().await {
        ctx.metrics.queue_wait.observe(item.waited.as_secs_f64());
        ctx.metrics.queue_depth.set(ctx.queue.len() as i64);
        if !ctx.writer.leader().is_leader() {
            ctx.queue.done(&item.key);
            continue; // a follower writes nothing; gaining the Lease resyncs every key
        }
        let result = reconcile::reconcile(&ctx, &item.key, item.waited).await;
        reconcile::error_policy(&ctx, &item.key, result);
        ctx.queue.done(&item.key);
    }
}
