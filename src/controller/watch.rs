//! One watch per kind, all run by one helper ([`spawn`]). Each event updates the caches, and the keys whose
//! reconcile may change go into the work queue: pod changes after the batch window, everything else at once.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::queue::WorkKey;
use super::{Context, holddown};
use crate::args::ServicesMode;
use crate::backendset::BackendSet;
use crate::cache::written::{Kind, ObjectId, Seen, Version};
use crate::cache::{
    Affected, BackendSetKey, NodeProjection, ObjectKey, PodProjection, PodRecord, slice_service,
};
use crate::desired;
use crate::write::Recorded;

/// A kind roster watches, and what its events do to the caches.
pub trait Watched: Resource + Clone + DeserializeOwned + Debug + Send + 'static {
    /// The metric label of the kind.
    const LABEL: &'static str;
    /// How an object is held while a (re)list is in progress (see [`Watched::hold`]).
    type Held: Send;

    /// Every object of a list is alive at once until the list ends, so pods are compacted as they arrive,
    /// and an object the caches hold unchanged (same uid and resourceVersion) is held as the cached copy.
    fn hold(ctx: &Context, obj: Self) -> Self::Held;
    /// Applies an added or modified object; returns the keys to queue.
    fn apply(ctx: &Context, obj: Self) -> Vec<WorkKey>;
    fn delete(ctx: &Context, obj: Self) -> Vec<WorkKey>;
    /// A (re)list begins.
    fn relist_began(_ctx: &Context) {}
    /// The complete current set after a (re)list.
    fn relisted(ctx: &Context, all: Vec<Self::Held>) -> Vec<WorkKey>;
    /// How long the keys its events queue wait: the batch window for pods, nothing for the rest.
    fn delay(_ctx: &Context) -> Duration {
        Duration::ZERO
    }
}

/// A running watch: flips `synced` after its first complete list.
pub struct Running {
    pub synced: watch::Receiver<bool>,
    pub task: JoinHandle<()>,
}

/// Starts the watch of `api` (with `config`), feeding the caches through `K`'s [`Watched`] handlers.
pub fn spawn<K: Watched>(ctx: &Arc<Context>, api: Api<K>, config: watcher::Config) -> Running
where
    K::DynamicType: Default,
{
    let (synced_tx, synced) = watch::channel(false);
    let task = tokio::spawn(run::<K>(ctx.clone(), api, config, synced_tx));
    Running { synced, task }
}

async fn run<K: Watched>(ctx: Arc<Context>, api: Api<K>, config: watcher::Config, synced: watch::Sender<bool>)
where
    K::DynamicType: Default,
{
    let mut buffer: Vec<K::Held> = Vec::new();
    let events = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(events);
    loop {
        let event = match events.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(err) => {
                // A malformed object fails its list page or watch event here; the watcher backs off and retries.
                ctx.metrics.watch_errors.with_label_values(&[K::LABEL]).inc();
                tracing::warn!(kind = K::LABEL, %err, "watch error; retrying with backoff");
                continue;
            }
        };
        ctx.metrics.watch_events.with_label_values(&[K::LABEL]).inc();
        let keys = match event {
            Event::Init => {
                buffer.clear();
                K::relist_began(&ctx);
                continue;
            }
            Event::InitApply(obj) => {
                buffer.push(K::hold(&ctx, obj));
                continue;
            }
            Event::InitDone => {
                let keys = K::relisted(&ctx, std::mem::take(&mut buffer));
                let _ = synced.send(true);
                keys
            }
            Event::Apply(obj) => K::apply(&ctx, obj),
            Event::Delete(obj) => K::delete(&ctx, obj),
        };
        ctx.enqueue(keys, K::delay(&ctx));
    }
}

fn services(affected: Affected) -> Vec<WorkKey> {
    affected.into_iter().map(WorkKey::Service).collect()
}

impl Watched for PodProjection {
    const LABEL: &'static str = "pod";
    type Held = Arc<PodRecord>;

    fn hold(ctx: &Context, pod: Self) -> Arc<PodRecord> {
        ctx.cache.write().expect("cache lock").hold_pod(&pod)
    }
    fn apply(ctx: &Context, pod: Self) -> Vec<WorkKey> {
        let key = ObjectKey::of(&pod.metadata);
        let mut cache = ctx.cache.write().expect("cache lock");
        let before = cache.pod(&key.namespace, &key.name);
        let affected = cache.upsert_pod(pod);
        holddown::observe(ctx, &cache, &key, before.as_deref(), &affected);
        services(affected)
    }
    fn delete(ctx: &Context, pod: Self) -> Vec<WorkKey> {
        let key = ObjectKey::of(&pod.metadata);
        ctx.ready_history.forget_pod(&key);
        let mut cache = ctx.cache.write().expect("cache lock");
        services(cache.delete_pod(&key.namespace, &key.name))
    }
    fn relisted(ctx: &Context, all: Vec<Arc<PodRecord>>) -> Vec<WorkKey> {
        let mut cache = ctx.cache.write().expect("cache lock");
        let affected = cache.replace_pods(all);
        holddown::relisted(ctx, &cache);
        services(affected)
    }
    fn delay(ctx: &Context) -> Duration {
        ctx.config.batch_window
    }
}

/// A Service change may also change the binding, and so the status, of the BackendSets naming it.
fn with_backendsets(ctx: &Context, affected: Affected) -> Vec<WorkKey> {
    let statuses: Vec<WorkKey> = match &ctx.backendsets {
        Some(sets) => affected
            .services
            .iter()
            .flat_map(|key| sets.naming(key))
            .collect(),
        None => Vec::new(),
    };
    let mut keys = services(affected);
    keys.extend(statuses);
    keys
}

impl Watched for Service {
    const LABEL: &'static str = "service";
    type Held = Self;

    fn hold(_: &Context, svc: Self) -> Self {
        svc
    }
    fn apply(ctx: &Context, svc: Self) -> Vec<WorkKey> {
        let source = ctx.config.selector_source();
        let affected = ctx
            .cache
            .write()
            .expect("cache lock")
            .upsert_service(&svc, source);
        with_backendsets(ctx, affected)
    }
    fn delete(ctx: &Context, svc: Self) -> Vec<WorkKey> {
        let key = ObjectKey::of(&svc.metadata);
        let affected = ctx
            .cache
            .write()
            .expect("cache lock")
            .delete_service(&key.namespace, &key.name);
        with_backendsets(ctx, affected)
    }
    fn relisted(ctx: &Context, all: Vec<Self>) -> Vec<WorkKey> {
        let source = ctx.config.selector_source();
        let affected = ctx
            .cache
            .write()
            .expect("cache lock")
            .replace_services(&all, source);
        with_backendsets(ctx, affected)
    }
}

impl Watched for NodeProjection {
    const LABEL: &'static str = "node";
    type Held = Self;

    fn hold(_: &Context, node: Self) -> Self {
        node
    }
    fn apply(ctx: &Context, node: Self) -> Vec<WorkKey> {
        services(ctx.cache.write().expect("cache lock").upsert_node(node))
    }
    fn delete(ctx: &Context, node: Self) -> Vec<WorkKey> {
        let name = node.metadata.name.unwrap_or_default();
        services(ctx.cache.write().expect("cache lock").delete_node(&name))
    }
    fn relisted(ctx: &Context, all: Vec<Self>) -> Vec<WorkKey> {
        services(ctx.cache.write().expect("cache lock").replace_nodes(all))
    }
}

/// What the record of roster's own writes learns from an event about `obj`.
fn seen<K: Recorded>(obj: &K, deleted: bool) -> (ObjectId, Seen) {
    let meta = obj.meta();
    let seen = if deleted {
        Seen::Deleted(meta.uid.clone().unwrap_or_default())
    } else {
        Seen::Object(Version::of(meta))
    };
    (ObjectId::of(K::KIND, meta), seen)
}

/// A list of a kind roster writes, as the record of its own writes takes it.
fn listed<'a, K: Recorded + 'a>(
    objects: impl Iterator<Item = (&'a K, WorkKey)>,
) -> HashMap<ObjectId, (WorkKey, Version)> {
    objects
        .map(|(obj, key)| (ObjectId::of(K::KIND, obj.meta()), (key, Version::of(obj.meta()))))
        .collect()
}

impl Watched for Endpoints {
    const LABEL: &'static str = "endpoints";
    type Held = Arc<Self>;

    fn hold(ctx: &Context, ep: Self) -> Arc<Self> {
        ctx.objects.read().expect("objects lock").hold_endpoints(ep)
    }
    fn apply(ctx: &Context, ep: Self) -> Vec<WorkKey> {
        let (id, seen) = seen(&ep, false);
        let key = ctx.objects.write().expect("objects lock").apply_endpoints(ep);
        ctx.writer
            .observe(WorkKey::Service(key), &id, seen)
            .into_iter()
            .collect()
    }
    fn delete(ctx: &Context, ep: Self) -> Vec<WorkKey> {
        let (id, seen) = seen(&ep, true);
        let key = ctx.objects.write().expect("objects lock").delete_endpoints(&ep);
        ctx.writer
            .observe(WorkKey::Service(key), &id, seen)
            .into_iter()
            .collect()
    }
    fn relist_began(ctx: &Context) {
        ctx.writer.relist_began(Kind::Endpoints);
    }
    fn relisted(ctx: &Context, all: Vec<Arc<Self>>) -> Vec<WorkKey> {
        let keyed = all
            .iter()
            .map(|ep| (ep.as_ref(), WorkKey::Service(ObjectKey::of(&ep.metadata))));
        let listed = listed(keyed);
        let touched = ctx.objects.write().expect("objects lock").relist_endpoints(all);
        ctx.writer.relisted(Kind::Endpoints, &listed);
        touched.into_iter().map(WorkKey::Service).collect()
    }
}

impl Watched for EndpointSlice {
    const LABEL: &'static str = "endpointslice";
    type Held = Arc<Self>;

    fn hold(ctx: &Context, slice: Self) -> Arc<Self> {
        let slice = keep_of_upstream(ctx, slice);
        ctx.objects.read().expect("objects lock").hold_slice(slice)
    }
    fn apply(ctx: &Context, slice: Self) -> Vec<WorkKey> {
        let upstream = desired::is_upstream_slice(&slice);
        let (id, seen) = seen(&slice, false);
        let slice = keep_of_upstream(ctx, slice);
        let Some(key) = ctx.objects.write().expect("objects lock").apply_slice(slice) else {
            return Vec::new();
        };
        let taking_over = ctx.config.services == ServicesMode::All && ctx.shadow.is_none();
        if upstream && taking_over {
            ctx.upstream.changed(std::time::Instant::now());
        }
        let work = WorkKey::Service(key.clone());
        match ctx.writer.observe(work.clone(), &id, seen) {
            Some(news) => vec![news],
            // roster's own slice is shown: the Service may now retire the built-in controllers' slices.
            None if taking_over && has_upstream_slices(ctx, &key) => vec![work],
            None => Vec::new(),
        }
    }
    fn delete(ctx: &Context, slice: Self) -> Vec<WorkKey> {
        let (id, seen) = seen(&slice, true);
        let Some(key) = ctx.objects.write().expect("objects lock").delete_slice(&slice) else {
            return Vec::new();
        };
        ctx.writer
            .observe(WorkKey::Service(key), &id, seen)
            .into_iter()
            .collect()
    }
    fn relist_began(ctx: &Context) {
        ctx.writer.relist_began(Kind::EndpointSlice);
    }
    fn relisted(ctx: &Context, all: Vec<Arc<Self>>) -> Vec<WorkKey> {
        let keyed = all
            .iter()
            .filter_map(|slice| Some((slice.as_ref(), WorkKey::Service(slice_service(slice)?))));
        let listed = listed(keyed);
        let touched = ctx.objects.write().expect("objects lock").relist_slices(all);
        ctx.writer.relisted(Kind::EndpointSlice, &listed);
        touched.into_iter().map(WorkKey::Service).collect()
    }
}

/// Of the built-in controllers' slices roster keeps only what it needs to take over from them or hand back
/// to them (which slices exist, to delete or wait for), unless shadow mode compares their content.
fn keep_of_upstream(ctx: &Context, mut slice: EndpointSlice) -> EndpointSlice {
    if ctx.shadow.is_none() && desired::is_upstream_slice(&slice) {
        slice.endpoints = Vec::new();
        slice.ports = None;
        slice.metadata.annotations = None;
    }
    slice
}

fn has_upstream_slices(ctx: &Context, key: &ObjectKey) -> bool {
    let slices = ctx.objects.read().expect("objects lock").slices(key);
    slices.iter().any(|s| desired::is_upstream_slice(s))
}

impl Watched for BackendSet {
    const LABEL: &'static str = "backendset";
    type Held = Self;

    fn hold(_: &Context, bs: Self) -> Self {
        bs
    }
    fn apply(ctx: &Context, bs: Self) -> Vec<WorkKey> {
        let Some(sets) = &ctx.backendsets else {
            return Vec::new();
        };
        let (id, seen) = seen(&bs, false);
        let key = WorkKey::BackendSet(BackendSetKey::of(&bs.metadata));
        let mut keys = sets.apply(bs);
        keys.extend(ctx.writer.observe(key, &id, seen));
        keys
    }
    fn delete(ctx: &Context, bs: Self) -> Vec<WorkKey> {
        let Some(sets) = &ctx.backendsets else {
            return Vec::new();
        };
        let (id, seen) = seen(&bs, true);
        let key = WorkKey::BackendSet(BackendSetKey::of(&bs.metadata));
        let mut keys = sets.delete(&bs);
        keys.extend(ctx.writer.observe(key, &id, seen));
        keys
    }
    fn relist_began(ctx: &Context) {
        ctx.writer.relist_began(Kind::BackendSet);
    }
    fn relisted(ctx: &Context, all: Vec<Self>) -> Vec<WorkKey> {
        let Some(sets) = &ctx.backendsets else {
            return Vec::new();
        };
        let keyed = all
            .iter()
            .map(|bs| (bs, WorkKey::BackendSet(BackendSetKey::of(&bs.metadata))));
        let listed = listed(keyed);
        ctx.writer.relisted(Kind::BackendSet, &listed);
        sets.relist(all)
    }
}
