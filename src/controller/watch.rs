//! One watch per kind, all run by one helper ([`spawn`]) over one list and watch loop ([`list_watch`]).
//! Each event updates the caches, and the keys whose reconcile may change go into the work queue: pod
//! changes after the batch window, everything else at once.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::list_watch::list_watch;
use super::queue::{Urgency, WorkKey};
use super::{Context, holddown};
use crate::admin::Liveness;
use crate::args::ServicesMode;
use crate::backendset::BackendSet;
use crate::cache::written::{Kind, ObjectId, Seen, Version};
use crate::cache::{Affected, BackendSetKey, NodeProjection, ObjectKey, Packed, PodProjection, PodRecord};
use crate::desired;
use crate::write::Recorded;

/// A kind roster watches, and what its events do to the caches.
pub trait Watched: Resource + Clone + DeserializeOwned + Debug + Send + 'static {
    /// The metric label of the kind.
    const LABEL: &'static str;
    /// Decodes the kind's protobuf message, for kinds whose list and watch ask for protobuf.
    const PROTOBUF: Option<ProtobufDecoder<Self>> = None;
    /// How an object is held while a (re)list is in progress (see [`Watched::hold`]).
    type Held: Send;

    /// Every object of a list is alive at once until the list ends, so pods are compacted as they arrive,
    /// and an object the caches hold unchanged (same uid and resourceVersion) is held as the cached copy.
    fn hold(ctx: &Context, obj: Self) -> Self::Held;
    /// Applies an added or modified object; returns the keys to queue.
    fn apply(ctx: &Context, obj: Self) -> Queued;
    fn delete(ctx: &Context, obj: Self) -> Queued;
    /// A (re)list begins.
    fn relist_began(_ctx: &Context) {}
    /// The complete current set after a (re)list.
    fn relisted(ctx: &Context, all: Vec<Self::Held>) -> Queued;
    /// How long the keys its events queue wait: the batch window for pods, nothing for the rest.
    fn delay(_ctx: &Context) -> Duration {
        Duration::ZERO
    }
}

/// Decodes a kind's protobuf message (the `raw` of its `runtime.Unknown` envelope).
pub type ProtobufDecoder<K> = fn(&[u8]) -> Result<K, prost::DecodeError>;

/// Keys an event queues, and how urgently.
#[derive(Debug, Default)]
pub struct Queued {
    pub keys: Vec<WorkKey>,
    pub urgency: Urgency,
}

impl From<Vec<WorkKey>> for Queued {
    fn from(keys: Vec<WorkKey>) -> Queued {
        Queued {
            keys,
            urgency: Urgency::Normal,
        }
    }
}

impl From<Option<WorkKey>> for Queued {
    fn from(key: Option<WorkKey>) -> Queued {
        Queued::from(Vec::from_iter(key))
    }
}

/// A running watch: flips `synced` after its first complete list.
pub struct Running {
    pub synced: watch::Receiver<bool>,
    pub task: JoinHandle<()>,
}

/// Starts the watch of `api` (with `config`), feeding the caches through `K`'s [`Watched`] handlers;
/// `liveness` checks it makes progress.
pub fn spawn<K: Watched>(
    ctx: &Arc<Context>,
    api: Api<K>,
    config: watcher::Config,
    liveness: &Liveness,
) -> Running
where
    K::DynamicType: Default,
{
    let (synced_tx, synced) = watch::channel(false);
    let resource = K::plural(&K::DynamicType::default()).into_owned();
    liveness.expect_watch(&resource);
    let progress = Progress {
        liveness: liveness.clone(),
        resource,
        every: liveness.progress_every(),
        stamped: None,
    };
    let task = tokio::spawn(run::<K>(ctx.clone(), api, config, synced_tx, progress));
    Running { synced, task }
}

/// Where a watch reports that it makes progress, at most once per `every` ([`Liveness::progress_every`]).
struct Progress {
    liveness: Liveness,
    resource: String,
    every: Duration,
    stamped: Option<Instant>,
}

impl Progress {
    fn made(&mut self, now: Instant) {
        if self
            .stamped
            .is_none_or(|last| now.duration_since(last) >= self.every)
        {
            self.liveness.watch_progress(&self.resource);
            self.stamped = Some(now);
        }
    }
}

async fn run<K: Watched>(
    ctx: Arc<Context>,
    api: Api<K>,
    config: watcher::Config,
    synced: watch::Sender<bool>,
    mut progress: Progress,
) where
    K::DynamicType: Default,
{
    let mut buffer: Vec<K::Held> = Vec::new();
    let events = list_watch(api, config).default_backoff();
    futures::pin_mut!(events);
    let seen = ctx.metrics.watch.events.with_label_values(&[K::LABEL]);
    let errors = ctx.metrics.watch.errors.with_label_values(&[K::LABEL]);
    loop {
        let next = events.try_next().await;
        progress.made(Instant::now());
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(err) => {
                // A malformed object fails its list page or watch event here; the watcher backs off and retries.
                errors.inc();
                tracing::warn!(kind = K::LABEL, %err, "watch error; retrying with backoff");
                continue;
            }
        };
        seen.inc();
        let queued = match event {
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
                let queued = K::relisted(&ctx, std::mem::take(&mut buffer));
                // Synced only once the list's keys are queued: the workers start on this signal, and a key
                // queued after its first turn began would be worked on twice.
                ctx.enqueue(queued.keys, K::delay(&ctx), queued.urgency);
                let _ = synced.send(true);
                continue;
            }
            Event::Apply(obj) => K::apply(&ctx, obj),
            Event::Delete(obj) => K::delete(&ctx, obj),
        };
        ctx.enqueue(queued.keys, K::delay(&ctx), queued.urgency);
    }
}

fn services(affected: Affected) -> Vec<WorkKey> {
    affected.into_iter().map(WorkKey::Service).collect()
}

/// A pod change is urgent when the pod served traffic before and no longer can where it did: it is gone,
/// not ready, terminating or finished, or moved to other addresses or labels.
fn pod_urgency(old: Option<&PodRecord>, new: Option<&PodRecord>) -> Urgency {
    let Some(old) = old.filter(|old| old.serves()) else {
        return Urgency::Normal;
    };
    match new {
        Some(new) if new.serves() && new.ips == old.ips && new.labels == old.labels => Urgency::Normal,
        _ => Urgency::Urgent,
    }
}

impl Watched for PodProjection {
    const LABEL: &'static str = "pod";
    const PROTOBUF: Option<ProtobufDecoder<Self>> = Some(PodProjection::from_protobuf);
    type Held = Arc<PodRecord>;

    fn hold(ctx: &Context, pod: Self) -> Arc<PodRecord> {
        ctx.cache.write().expect("cache lock").hold_pod(&pod)
    }
    fn apply(ctx: &Context, pod: Self) -> Queued {
        let mut cache = ctx.cache.write().expect("cache lock");
        let record = cache.compact_pod(&pod);
        let key = ObjectKey::of(&pod.metadata);
        let before = cache.pod(&record.namespace, &record.name);
        let urgency = pod_urgency(before.as_deref(), Some(&record));
        let affected = cache.upsert_pod_record(record);
        holddown::observe(ctx, &cache, &key, before.as_deref(), &affected);
        Queued {
            keys: services(affected),
            urgency,
        }
    }
    fn delete(ctx: &Context, pod: Self) -> Queued {
        let key = ObjectKey::of(&pod.metadata);
        ctx.ready_history.forget_pod(&key);
        let mut cache = ctx.cache.write().expect("cache lock");
        let old = cache.pod(&key.namespace, &key.name);
        let urgency = pod_urgency(old.as_deref(), None);
        let keys = services(cache.delete_pod(&key.namespace, &key.name));
        Queued { keys, urgency }
    }
    fn relisted(ctx: &Context, all: Vec<Arc<PodRecord>>) -> Queued {
        let mut cache = ctx.cache.write().expect("cache lock");
        let affected = cache.replace_pods(all);
        holddown::relisted(ctx, &cache);
        services(affected).into()
    }
    fn delay(ctx: &Context) -> Duration {
        ctx.config.batch_window
    }
}

/// A Service change may also change the binding, and so the status, of the BackendSets naming it.
fn with_backendsets(ctx: &Context, affected: Affected) -> Queued {
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
    keys.into()
}

impl Watched for Service {
    const LABEL: &'static str = "service";
    type Held = Self;

    fn hold(_: &Context, svc: Self) -> Self {
        svc
    }
    fn apply(ctx: &Context, svc: Self) -> Queued {
        let source = ctx.config.selector_source();
        let affected = ctx
            .cache
            .write()
            .expect("cache lock")
            .upsert_service(&svc, source);
        with_backendsets(ctx, affected)
    }
    fn delete(ctx: &Context, svc: Self) -> Queued {
        let key = ObjectKey::of(&svc.metadata);
        let affected = ctx
            .cache
            .write()
            .expect("cache lock")
            .delete_service(&key.namespace, &key.name);
        with_backendsets(ctx, affected)
    }
    fn relisted(ctx: &Context, all: Vec<Self>) -> Queued {
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
    fn apply(ctx: &Context, node: Self) -> Queued {
        services(ctx.cache.write().expect("cache lock").upsert_node(node)).into()
    }
    fn delete(ctx: &Context, node: Self) -> Queued {
        let name = node.metadata.name.unwrap_or_default();
        services(ctx.cache.write().expect("cache lock").delete_node(&name)).into()
    }
    fn relisted(ctx: &Context, all: Vec<Self>) -> Queued {
        services(ctx.cache.write().expect("cache lock").replace_nodes(all)).into()
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
fn listed(
    objects: impl Iterator<Item = (ObjectId, Version, WorkKey)>,
) -> HashMap<ObjectId, (WorkKey, Version)> {
    objects.map(|(id, version, key)| (id, (key, version))).collect()
}

impl Watched for Endpoints {
    const LABEL: &'static str = "endpoints";
    type Held = Packed<Self>;

    fn hold(ctx: &Context, ep: Self) -> Packed<Self> {
        ctx.objects.read().expect("objects lock").hold_endpoints(ep)
    }
    fn apply(ctx: &Context, ep: Self) -> Queued {
        let (id, seen) = seen(&ep, false);
        let key = ctx.objects.write().expect("objects lock").apply_endpoints(ep);
        ctx.writer.observe(WorkKey::Service(key), &id, seen).into()
    }
    fn delete(ctx: &Context, ep: Self) -> Queued {
        let (id, seen) = seen(&ep, true);
        let key = ctx.objects.write().expect("objects lock").delete_endpoints(&ep);
        ctx.writer.observe(WorkKey::Service(key), &id, seen).into()
    }
    fn relist_began(ctx: &Context) {
        ctx.writer.relist_began(Kind::Endpoints);
    }
    fn relisted(ctx: &Context, all: Vec<Packed<Self>>) -> Queued {
        let keyed = all
            .iter()
            .map(|ep| (ep.id(), ep.version(), WorkKey::Service(ep.key())));
        let listed = listed(keyed);
        let touched = ctx.objects.write().expect("objects lock").relist_endpoints(all);
        ctx.writer.relisted(Kind::Endpoints, &listed);
        touched
            .into_iter()
            .map(WorkKey::Service)
            .collect::<Vec<_>>()
            .into()
    }
}

impl Watched for EndpointSlice {
    const LABEL: &'static str = "endpointslice";
    type Held = Packed<Self>;

    fn hold(ctx: &Context, slice: Self) -> Packed<Self> {
        let slice = keep_of_upstream(ctx, slice);
        ctx.objects.read().expect("objects lock").hold_slice(slice)
    }
    fn apply(ctx: &Context, slice: Self) -> Queued {
        let upstream = desired::is_upstream_slice(&slice);
        let (id, seen) = seen(&slice, false);
        let slice = keep_of_upstream(ctx, slice);
        let Some(key) = ctx.objects.write().expect("objects lock").apply_slice(slice) else {
            return Queued::default();
        };
        let taking_over = ctx.config.services == ServicesMode::All && ctx.shadow.is_none();
        if upstream && taking_over {
            ctx.upstream.changed(Instant::now());
        }
        let work = WorkKey::Service(key.clone());
        match ctx.writer.observe(work.clone(), &id, seen) {
            Some(news) => Some(news).into(),
            // roster's own slice is shown: the Service may now retire the built-in controllers' slices.
            None if taking_over && has_upstream_slices(ctx, &key) => Some(work).into(),
            None => Queued::default(),
        }
    }
    fn delete(ctx: &Context, slice: Self) -> Queued {
        let (id, seen) = seen(&slice, true);
        let Some(key) = ctx.objects.write().expect("objects lock").delete_slice(&slice) else {
            return Queued::default();
        };
        ctx.writer.observe(WorkKey::Service(key), &id, seen).into()
    }
    fn relist_began(ctx: &Context) {
        ctx.writer.relist_began(Kind::EndpointSlice);
    }
    fn relisted(ctx: &Context, all: Vec<Packed<Self>>) -> Queued {
        let keyed = all
            .iter()
            .filter_map(|s| Some((s.id(), s.version(), WorkKey::Service(s.service()?))));
        let listed = listed(keyed);
        let touched = ctx.objects.write().expect("objects lock").relist_slices(all);
        ctx.writer.relisted(Kind::EndpointSlice, &listed);
        touched
            .into_iter()
            .map(WorkKey::Service)
            .collect::<Vec<_>>()
            .into()
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
    let objects = ctx.objects.read().expect("objects lock");
    objects.has_slices_of(key, &desired::UPSTREAM_MANAGERS)
}

impl Watched for BackendSet {
    const LABEL: &'static str = "backendset";
    type Held = Self;

    fn hold(_: &Context, bs: Self) -> Self {
        bs
    }
    fn apply(ctx: &Context, bs: Self) -> Queued {
        let Some(sets) = &ctx.backendsets else {
            return Queued::default();
        };
        let (id, seen) = seen(&bs, false);
        let key = WorkKey::BackendSet(BackendSetKey::of(&bs.metadata));
        let mut keys = sets.apply(bs);
        keys.extend(ctx.writer.observe(key, &id, seen));
        keys.into()
    }
    fn delete(ctx: &Context, bs: Self) -> Queued {
        let Some(sets) = &ctx.backendsets else {
            return Queued::default();
        };
        let (id, seen) = seen(&bs, true);
        let key = WorkKey::BackendSet(BackendSetKey::of(&bs.metadata));
        let mut keys = sets.delete(&bs);
        keys.extend(ctx.writer.observe(key, &id, seen));
        keys.into()
    }
    fn relist_began(ctx: &Context) {
        ctx.writer.relist_began(Kind::BackendSet);
    }
    fn relisted(ctx: &Context, all: Vec<Self>) -> Queued {
        let Some(sets) = &ctx.backendsets else {
            return Queued::default();
        };
        let keyed = all.iter().map(|bs| {
            let key = WorkKey::BackendSet(BackendSetKey::of(&bs.metadata));
            (
                ObjectId::of(Kind::BackendSet, &bs.metadata),
                Version::of(&bs.metadata),
                key,
            )
        });
        let listed = listed(keyed);
        ctx.writer.relisted(Kind::BackendSet, &listed);
        sets.relist(all).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::PodPhase;
    use crate::desired::fixtures::PodFixture;

    #[test]
    fn a_busy_watch_reports_progress_once_per_interval() {
        let mut progress = Progress {
            liveness: Liveness::new(Duration::from_secs(600)),
            resource: "pods".to_owned(),
            every: Duration::from_secs(1),
            stamped: None,
        };
        let start = Instant::now();
        progress.made(start);
        assert_eq!(progress.stamped, Some(start), "the first event reports");
        progress.made(start + Duration::from_millis(999));
        assert_eq!(
            progress.stamped,
            Some(start),
            "within the interval nothing is reported"
        );
        let later = start + Duration::from_secs(1);
        progress.made(later);
        assert_eq!(
            progress.stamped,
            Some(later),
            "after the interval it reports again"
        );
    }

    #[test]
    fn only_a_pod_that_stops_serving_is_urgent() {
        let serving = PodFixture::new("a").build();
        let urgent = [
            None,
            Some(PodFixture::new("a").not_ready().build()),
            Some(PodFixture::new("a").terminating().build()),
            Some(PodFixture::new("a").phase(PodPhase::Failed).build()),
            Some(PodFixture::new("a").ips(&[]).build()),
            Some(PodFixture::new("a").ip("10.0.0.2").build()),
            Some(PodFixture::new("a").namespace("other").build()).map(|p| {
                let mut p = (*p).clone();
                p.labels = Default::default();
                Arc::new(p)
            }),
        ];
        for new in &urgent {
            let got = pod_urgency(Some(&serving), new.as_deref());
            assert_eq!(got, Urgency::Urgent, "{new:?}");
        }
        let normal = [
            (None, Some(serving.clone())),
            (
                Some(serving.clone()),
                Some(PodFixture::new("a").ready_at("2025-01-01T00:00:00Z").build()),
            ),
            (
                Some(PodFixture::new("a").not_ready().build()),
                Some(serving.clone()),
            ),
            (Some(PodFixture::new("a").not_ready().build()), None),
        ];
        for (old, new) in &normal {
            let got = pod_urgency(old.as_deref(), new.as_deref());
            assert_eq!(got, Urgency::Normal, "{old:?} → {new:?}");
        }
    }
}
