//! One watch per kind. Each event updates the caches, and the Services whose backends may have changed go
//! into the work queue: pod changes after the batch window, everything else at once.

use std::fmt::Debug;
use std::sync::Arc;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::Context;
use crate::cache::{NodeProjection, PodProjection, PodRecord, ServiceKey};

/// What a watch event means for the caches.
pub enum Change<K: Listed> {
    Applied(K),
    Deleted(K),
    /// The complete current set after a (re)list.
    Relisted(Vec<K::Held>),
}

/// How a kind's objects are held while a (re)list is in progress: every object of the list is alive at
/// once, so pods are compacted as they arrive rather than kept decoded until the list ends, and an object
/// the caches hold unchanged (same resourceVersion) is held as the cached copy, not as a second one.
pub trait Listed: Sized {
    type Held;
    fn hold(ctx: &Context, obj: Self) -> Self::Held;
}

impl Listed for PodProjection {
    type Held = Arc<PodRecord>;
    fn hold(ctx: &Context, pod: Self) -> Arc<PodRecord> {
        ctx.cache.write().expect("cache lock").hold_pod(&pod)
    }
}

macro_rules! held_as_they_are {
    ($($kind:ty),*) => {$(
        impl Listed for $kind {
            type Held = Self;
            fn hold(_: &Context, obj: Self) -> Self {
                obj
            }
        }
    )*};
}
held_as_they_are!(Service, NodeProjection);

impl Listed for Endpoints {
    type Held = Arc<Self>;
    fn hold(ctx: &Context, ep: Self) -> Arc<Self> {
        ctx.objects.lock().expect("objects lock").hold_endpoints(ep)
    }
}

impl Listed for EndpointSlice {
    type Held = Arc<Self>;
    fn hold(ctx: &Context, slice: Self) -> Arc<Self> {
        ctx.objects.lock().expect("objects lock").hold_slice(slice)
    }
}

/// Runs a watch of `api` forever, feeding `handle`; flips `synced` after the first complete list.
pub async fn run<K, F>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    ctx: Arc<Context>,
    synced: watch::Sender<bool>,
    handle: F,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Listed + 'static,
    F: Fn(&Context, Change<K>) -> Vec<ServiceKey>,
{
    let mut buffer: Vec<K::Held> = Vec::new();
    let events = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(events);
    loop {
        match events.try_next().await {
            Ok(Some(event)) => {
                let change = match event {
                    Event::Init => {
                        buffer.clear();
                        continue;
                    }
                    Event::InitApply(obj) => {
                        buffer.push(K::hold(&ctx, obj));
                        continue;
                    }
                    Event::InitDone => Change::Relisted(std::mem::take(&mut buffer)),
                    Event::Apply(obj) => Change::Applied(obj),
                    Event::Delete(obj) => Change::Deleted(obj),
                };
                ctx.metrics.watch_events.with_label_values(&[kind]).inc();
                let relisted = matches!(change, Change::Relisted(_));
                let keys = handle(&ctx, change);
                ctx.enqueue_all(keys, kind == "pod");
                if relisted {
                    let _ = synced.send(true);
                }
            }
            Ok(None) => return,
            Err(err) => {
                // A malformed object fails its list page or watch event here; the watcher backs off and retries.
                ctx.metrics.watch_errors.with_label_values(&[kind]).inc();
                tracing::warn!(kind, %err, "watch error; retrying with backoff");
            }
        }
    }
}

pub fn pods(ctx: &Context, change: Change<PodProjection>) -> Vec<ServiceKey> {
    let mut cache = ctx.cache.write().expect("cache lock");
    match change {
        Change::Applied(pod) => cache.upsert_pod(pod).into_iter().collect(),
        Change::Deleted(pod) => cache
            .delete_pod(&pod.namespace().unwrap_or_default(), &pod.name_any())
            .into_iter()
            .collect(),
        Change::Relisted(all) => cache.replace_pods(all).into_iter().collect(),
    }
}

pub fn services(ctx: &Context, change: Change<Service>) -> Vec<ServiceKey> {
    let source = ctx.config.selector_source();
    let mut cache = ctx.cache.write().expect("cache lock");
    match change {
        Change::Applied(svc) => cache.upsert_service(&svc, source).into_iter().collect(),
        Change::Deleted(svc) => {
            let key = super::objects::key_of(&svc);
            cache
                .delete_service(&key.namespace, &key.name)
                .into_iter()
                .collect()
        }
        Change::Relisted(all) => cache.replace_services(&all, source).into_iter().collect(),
    }
}

pub fn nodes(ctx: &Context, change: Change<NodeProjection>) -> Vec<ServiceKey> {
    let mut cache = ctx.cache.write().expect("cache lock");
    match change {
        Change::Applied(node) => cache.upsert_node(node).into_iter().collect(),
        Change::Deleted(node) => cache.delete_node(&node.name_any()).into_iter().collect(),
        Change::Relisted(all) => cache.replace_nodes(all).into_iter().collect(),
    }
}

pub fn endpoints(ctx: &Context, change: Change<Endpoints>) -> Vec<ServiceKey> {
    let mut objects = ctx.objects.lock().expect("objects lock");
    match change {
        Change::Applied(ep) => objects.apply_endpoints(ep).into_iter().collect(),
        Change::Deleted(ep) => vec![objects.delete_endpoints(&ep)],
        Change::Relisted(all) => objects.relist_endpoints(all),
    }
}

pub fn slices(ctx: &Context, change: Change<EndpointSlice>) -> Vec<ServiceKey> {
    let mut objects = ctx.objects.lock().expect("objects lock");
    match change {
        Change::Applied(slice) => objects.apply_slice(slice).into_iter().collect(),
        Change::Deleted(slice) => objects.delete_slice(&slice).into_iter().collect(),
        Change::Relisted(all) => objects.relist_slices(all),
    }
}
