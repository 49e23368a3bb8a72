//! The BackendSet runtime: watches BackendSets and Services, runs one worker per BackendSet, keeps the
//! bindings and the registry, queues the Services whose published backends changed, and writes status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::TryStreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, Semaphore};

use super::args::BackendArgs;
use super::binding::{Binding, ServiceFacts, SetFacts, SetKey, bind};
use super::crd::BackendSet;
use super::deny::DenyList;
use super::probe::Prober;
use super::registry::BackendRegistry;
use super::resolve::Dns;
use super::spec::service_name;
use super::status::{desired_status, status_needs_write};
use super::view::BackendView;
use super::worker::{Worker, WorkerContext, WorkerHandle};
use crate::write::{Writer, reference};
use crate::cache::ServiceKey;
use crate::error::Error;
use crate::metrics::Metrics;

/// How often every BackendSet's status is compared again (a new leader writes what its predecessor
/// did not).
const STATUS_RESYNC: Duration = Duration::from_secs(30);
/// Delay before a failed status write is retried.
const STATUS_RETRY: Duration = Duration::from_secs(2);

/// Queues a Service for reconcile (the controller's work queue).
pub type Enqueue = Arc<dyn Fn(ServiceKey) + Send + Sync>;

/// Health-checked backends for selectorless Services. Build it, hand [`Backends::registry`] to the
/// reconcile, then `run` it.
pub struct Backends {
    client: Client,
    namespace: Option<String>,
    shared: Arc<Shared>,
}

struct SetEntry {
    bs: Arc<BackendSet>,
    view: Arc<BackendView>,
    worker: WorkerHandle,
}

#[derive(Default)]
struct State {
    sets: BTreeMap<SetKey, SetEntry>,
    services: HashMap<ServiceKey, ServiceFacts>,
    bindings: BTreeMap<SetKey, Binding>,
    sets_listed: bool,
    services_listed: bool,
}

struct Shared {
    state: Mutex<State>,
    registry: Arc<BackendRegistry>,
    workers: Arc<WorkerContext>,
    enqueue: Enqueue,
    writer: Arc<Writer>,
    metrics: Metrics,
    dirty: Mutex<BTreeSet<SetKey>>,
    dirty_notify: Notify,
}

impl Backends {
    /// `namespace`: watch only this namespace (`--namespace`), else all.
    pub fn new(
        client: Client,
        args: BackendArgs,
        namespace: Option<String>,
        metrics: Metrics,
        writer: Arc<Writer>,
        enqueue: Enqueue,
    ) -> Backends {
        let deny = Arc::new(DenyList::new(args.deny_list()));
        let shared = Arc::new_cyclic(|me: &Weak<Shared>| {
            let me = me.clone();
            let workers = Arc::new(WorkerContext {
                dns: Dns::new(args.dns_server),
                prober: Prober::new(deny.clone()),
                probes_in_flight: Arc::new(Semaphore::new(args.probe_concurrency as usize)),
                deny,
                args,
                metrics: metrics.clone(),
                publish: Box::new(move |key, view| {
                    if let Some(shared) = me.upgrade() {
                        shared.publish(key, view);
                    }
                }),
            });
            Shared {
                state: Mutex::new(State::default()),
                registry: Arc::new(BackendRegistry::new()),
                workers,
                enqueue,
                writer,
                metrics,
                dirty: Mutex::new(BTreeSet::new()),
                dirty_notify: Notify::new(),
            }
        });
        Backends {
            client,
            namespace,
            shared,
        }
    }

    pub fn registry(&self) -> Arc<BackendRegistry> {
        self.shared.registry.clone()
    }

    /// Watches, probes and writes status until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (sets, services): (Api<BackendSet>, Api<Service>) = match &self.namespace {
            Some(ns) => (
                Api::namespaced(self.client.clone(), ns),
                Api::namespaced(self.client.clone(), ns),
            ),
            None => (Api::all(self.client.clone()), Api::all(self.client.clone())),
        };
        let tasks = [
            tokio::spawn(watch_sets(self.shared.clone(), sets)),
            tokio::spawn(watch_services(self.shared.clone(), services)),
            tokio::spawn(write_statuses(self.shared.clone())),
        ];
        shutdown.await;
        for task in &tasks {
            task.abort();
        }
        self.shared.state.lock().expect("backends lock").sets.clear();
    }
}

fn set_key(bs: &BackendSet) -> SetKey {
    (bs.namespace().unwrap_or_default(), bs.name_any())
}

impl Shared {
    fn enqueue_all(&self, keys: Vec<ServiceKey>) {
        for key in keys {
            (self.enqueue)(key);
        }
    }

    fn mark_dirty(&self, keys: impl IntoIterator<Item = SetKey>) {
        self.dirty.lock().expect("dirty lock").extend(keys);
        self.dirty_notify.notify_one();
    }

    fn apply_set(&self, bs: BackendSet) {
        let keys = {
            let mut state = self.state.lock().expect("backends lock");
            self.upsert(&mut state, Arc::new(bs));
            self.rebind(&mut state)
        };
        self.enqueue_all(keys);
    }

    fn delete_set(&self, bs: &BackendSet) {
        let key = set_key(bs);
        let keys = {
            let mut state = self.state.lock().expect("backends lock");
            state.sets.remove(&key);
            self.rebind(&mut state)
        };
        self.enqueue_all(keys);
    }

    fn relist_sets(&self, all: Vec<BackendSet>) {
        let keys = {
            let mut state = self.state.lock().expect("backends lock");
            let listed: BTreeSet<SetKey> = all.iter().map(set_key).collect();
            state.sets.retain(|key, _| listed.contains(key));
            for bs in all {
                self.upsert(&mut state, Arc::new(bs));
            }
            state.sets_listed = true;
            self.rebind(&mut state)
        };
        self.enqueue_all(keys);
    }

    /// Adds a BackendSet (starting its worker), or hands a changed spec to its worker.
    fn upsert(&self, state: &mut State, bs: Arc<BackendSet>) {
        let key = set_key(&bs);
        self.mark_dirty([key.clone()]);
        if let Some(entry) = state.sets.get_mut(&key)
            && entry.bs.uid() == bs.uid()
        {
            let changed = entry.bs.spec != bs.spec || entry.bs.metadata.generation != bs.metadata.generation;
            entry.bs = bs.clone();
            if changed {
                entry.worker.update(bs);
            }
            return;
        }
        let (worker, view) = Worker::start(self.workers.clone(), bs.clone());
        state.sets.insert(key, SetEntry { bs, view, worker });
    }

    fn apply_service(&self, svc: &Service) {
        let key = ServiceKey::new(&svc.namespace().unwrap_or_default(), &svc.name_any());
        let facts = ServiceFacts::of(svc);
        let keys = {
            let mut state = self.state.lock().expect("backends lock");
            if state.services.get(&key) == Some(&facts) {
                return;
            }
            state.services.insert(key, facts);
            self.rebind(&mut state)
        };
        self.enqueue_all(keys);
    }

    fn delete_service(&self, svc: &Service) {
        let key = ServiceKey::new(&svc.namespace().unwrap_or_default(), &svc.name_any());
        let keys = {
            let mut state = self.state.lock().expect("backends lock");
            if state.services.remove(&key).is_none() {
                return;
            }
            self.rebind(&mut state)
        };
        self.enqueue_all(keys);
    }

    fn relist_services(&self, all: &[Service]) {
        let keys = {
            let mut state = self.state.lock().expect("backends lock");
            state.services = all
                .iter()
                .map(|svc| {
                    let key = ServiceKey::new(&svc.namespace().unwrap_or_default(), &svc.name_any());
                    (key, ServiceFacts::of(svc))
                })
                .collect();
            state.services_listed = true;
            self.rebind(&mut state)
        };
        self.enqueue_all(keys);
    }

    /// Recomputes every binding and the registry; returns the Services whose publication changed.
    fn rebind(&self, state: &mut State) -> Vec<ServiceKey> {
        let facts: Vec<SetFacts> = state
            .sets
            .values()
            .map(|e| SetFacts {
                namespace: e.bs.namespace().unwrap_or_default(),
                name: e.bs.name_any(),
                created: e.bs.metadata.creation_timestamp.as_ref().map(|t| t.0),
                service: service_name(&e.bs),
            })
            .collect();
        let services = &state.services;
        let bindings = bind(&facts, &|key| services.get(key).cloned());
        let changed: Vec<SetKey> = bindings
            .iter()
            .filter(|(key, binding)| state.bindings.get(*key) != Some(*binding))
            .map(|(key, binding)| {
                let (namespace, name) = key;
                tracing::info!(%namespace, backendset = %name, binding = binding.reason(), "BackendSet binding");
                key.clone()
            })
            .collect();
        self.mark_dirty(changed);
        state.bindings = bindings;
        self.update_gauges(state);
        let changed = self.sync_registry(state);
        if state.sets_listed && state.services_listed {
            self.registry.mark_synced();
        }
        changed
    }

    fn sync_registry(&self, state: &State) -> Vec<ServiceKey> {
        let mut wanted: BTreeMap<ServiceKey, Arc<BackendView>> = BTreeMap::new();
        for (key, entry) in &state.sets {
            if state.bindings.get(key) == Some(&Binding::Bound) {
                let service = ServiceKey::new(&key.0, &service_name(&entry.bs));
                wanted.insert(service, entry.view.clone());
            }
        }
        let mut keys: BTreeSet<ServiceKey> = self.registry.bound_services().into_iter().collect();
        keys.extend(wanted.keys().cloned());
        keys.into_iter()
            .filter(|key| self.registry.set(key, wanted.get(key).cloned()))
            .collect()
    }

    /// A worker's new view.
    fn publish(&self, key: &SetKey, view: Arc<BackendView>) {
        let enqueue = {
            let mut state = self.state.lock().expect("backends lock");
            let Some(entry) = state.sets.get_mut(key) else {
                return;
            };
            if entry.bs.uid().as_deref() != Some(view.backendset.uid.as_str()) {
                return; // a worker of a deleted BackendSet, about to stop
            }
            entry.view = view.clone();
            let service = ServiceKey::new(&key.0, &service_name(&entry.bs));
            let bound = state.bindings.get(key) == Some(&Binding::Bound);
            self.update_gauges(&state);
            (bound && self.registry.set(&service, Some(view))).then_some(service)
        };
        self.mark_dirty([key.clone()]);
        self.enqueue_all(enqueue.into_iter().collect());
    }

    fn update_gauges(&self, state: &State) {
        let (ready, total) = state.sets.values().fold((0, 0), |(r, t), e| {
            (r + e.view.ready_count(), t + e.view.addresses.len())
        });
        let gauge = &self.metrics.backends;
        gauge.with_label_values(&["true"]).set(ready as i64);
        gauge.with_label_values(&["false"]).set((total - ready) as i64);
    }

    /// What status and Events need of one BackendSet.
    fn snapshot(&self, key: &SetKey) -> Option<(Arc<BackendSet>, Binding, Arc<BackendView>)> {
        let state = self.state.lock().expect("backends lock");
        let entry = state.sets.get(key)?;
        let binding = state.bindings.get(key)?.clone();
        Some((entry.bs.clone(), binding, entry.view.clone()))
    }

    fn all_set_keys(&self) -> Vec<SetKey> {
        self.state
            .lock()
            .expect("backends lock")
            .sets
            .keys()
            .cloned()
            .collect()
    }
}

async fn watch_sets(shared: Arc<Shared>, api: Api<BackendSet>) {
    let mut buffer = Vec::new();
    let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(events);
    loop {
        match events.try_next().await {
            Ok(Some(event)) => {
                shared
                    .metrics
                    .watch_events
                    .with_label_values(&["backendset"])
                    .inc();
                match event {
                    Event::Init => buffer.clear(),
                    Event::InitApply(bs) => buffer.push(bs),
                    Event::InitDone => shared.relist_sets(std::mem::take(&mut buffer)),
                    Event::Apply(bs) => shared.apply_set(bs),
                    Event::Delete(bs) => shared.delete_set(&bs),
                }
            }
            Ok(None) => return,
            Err(err) => {
                shared
                    .metrics
                    .invalid_objects
                    .with_label_values(&["backendset"])
                    .inc();
                if is_not_found(&err) {
                    sets_unavailable(&shared);
                }
                tracing::warn!(%err, "BackendSet watch error; retrying with backoff");
            }
        }
    }
}

fn is_not_found(err: &watcher::Error) -> bool {
    matches!(err, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404)
}

/// The BackendSet CRD is not installed: count the BackendSets as listed (none), so that the registry
/// syncs and roster does not wait for them; the watch keeps retrying and picks them up once it is.
fn sets_unavailable(shared: &Shared) {
    let mut state = shared.state.lock().expect("backends lock");
    if !state.sets_listed {
        tracing::warn!("the BackendSet CRD is not installed: BackendSets are ignored until it is");
        state.sets_listed = true;
        let keys = shared.rebind(&mut state);
        drop(state);
        shared.enqueue_all(keys);
    }
}

async fn watch_services(shared: Arc<Shared>, api: Api<Service>) {
    let mut buffer = Vec::new();
    let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(events);
    loop {
        match events.try_next().await {
            Ok(Some(Event::Init)) => buffer.clear(),
            Ok(Some(Event::InitApply(svc))) => buffer.push(svc),
            Ok(Some(Event::InitDone)) => shared.relist_services(&std::mem::take(&mut buffer)),
            Ok(Some(Event::Apply(svc))) => shared.apply_service(&svc),
            Ok(Some(Event::Delete(svc))) => shared.delete_service(&svc),
            Ok(None) => return,
            Err(err) => tracing::warn!(%err, "Service watch (BackendSets) error; retrying with backoff"),
        }
    }
}

/// Status and Events of every BackendSet marked dirty: computed, compared, written only when changed.
async fn write_statuses(shared: Arc<Shared>) {
    let mut writes = StatusWrites::default();
    let mut resync = tokio::time::interval(STATUS_RESYNC);
    loop {
        tokio::select! {
            _ = shared.dirty_notify.notified() => {}
            _ = resync.tick() => shared.mark_dirty(shared.all_set_keys()),
        }
        let keys = std::mem::take(&mut *shared.dirty.lock().expect("dirty lock"));
        for key in keys {
            writes.sync(&shared, &key).await;
        }
        let live: BTreeSet<String> = shared
            .state
            .lock()
            .expect("backends lock")
            .sets
            .values()
            .filter_map(|e| e.bs.uid())
            .collect();
        writes.forget_except(&live);
    }
}

/// What the status writer remembers, by BackendSet UID.
#[derive(Default)]
struct StatusWrites {
    /// The status last written (the watch may not have delivered it yet).
    written: HashMap<String, super::crd::BackendSetStatus>,
    /// Warning Events already published, as (reason, note).
    warned: HashMap<String, BTreeSet<(String, String)>>,
}

impl StatusWrites {
    async fn sync(&mut self, shared: &Arc<Shared>, key: &SetKey) {
        let Some((bs, binding, view)) = shared.snapshot(key) else {
            return;
        };
        let uid = bs.uid().unwrap_or_default();
        self.warn(shared, &bs, &binding, &view).await;
        let mut basis = (*bs).clone();
        if let Some(written) = self.written.get(&uid) {
            basis.status = Some(written.clone());
        }
        let status = desired_status(&basis, &binding, Some(&view), Timestamp::now());
        if !status_needs_write(basis.status.as_ref(), &status)
            || !status_needs_write(bs.status.as_ref(), &status)
        {
            return;
        }
        match shared
            .writer
            .patch_backendset_status(&key.0, &key.1, &status)
            .await
        {
            Ok(()) => {
                self.written.insert(uid, status);
            }
            Err(Error::NotLeader) => {}
            Err(err) => {
                tracing::warn!(namespace = %key.0, backendset = %key.1, %err, "writing BackendSet status failed");
                let (shared, key) = (shared.clone(), key.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(STATUS_RETRY).await;
                    shared.mark_dirty([key]);
                });
            }
        }
    }

    /// Warning Events for invalid backends, an invalid probe and a Service conflict, once per problem.
    async fn warn(&mut self, shared: &Shared, bs: &BackendSet, binding: &Binding, view: &BackendView) {
        if !shared.writer.leader().is_leader() {
            return;
        }
        let mut problems: BTreeSet<(String, String)> = view
            .excluded
            .iter()
            .filter(|e| !e.denied && view.invalid_probe.is_none())
            .map(|e| {
                (
                    "InvalidBackend".to_owned(),
                    format!("{}: {}", e.address, e.message),
                )
            })
            .collect();
        if let Some(problem) = &view.invalid_probe {
            problems.insert(("InvalidProbe".to_owned(), problem.clone()));
        }
        if let Binding::Conflict { .. } = binding {
            problems.insert(("ServiceConflict".to_owned(), binding.message(&service_name(bs))));
        }
        let uid = bs.uid().unwrap_or_default();
        let known = self.warned.remove(&uid).unwrap_or_default();
        for (reason, note) in problems.difference(&known) {
            shared
                .writer
                .warn(&reference(bs), reason, "Validate", note.clone())
                .await;
        }
        self.warned.insert(uid, problems);
    }

    fn forget_except(&mut self, live: &BTreeSet<String>) {
        self.written.retain(|uid, _| live.contains(uid));
        self.warned.retain(|uid, _| live.contains(uid));
    }
}
