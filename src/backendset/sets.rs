//! BackendSets as a source of addresses. The controller's BackendSet watch hands every BackendSet here; each
//! gets a worker (DNS and probes, [`super::worker`]) whose views [`Views`] keeps. The Service reconcile reads
//! the view of the BackendSet bound to a Service, the status reconcile a BackendSet's own.
//!
//! Every replica runs the workers, followers included: a new leader then publishes current readiness at
//! once, without waiting for probe thresholds again. The cost is probe traffic that grows with the replicas.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use tokio::sync::Semaphore;

use super::args::BackendArgs;
use super::binding::{Binding, ServiceFacts, SetFacts, bind};
use super::crd::BackendSet;
use super::deny::DenyList;
use super::probe::Prober;
use super::resolve::Dns;
use super::spec::service_name;
use super::view::BackendView;
use super::views::Views;
use super::worker::{Worker, WorkerContext, WorkerHandle};
use crate::cache::{BackendSetKey, ServiceKey, ServiceRecord};
use crate::controller::queue::{WorkKey, WorkQueue};
use crate::metrics::Metrics;

struct Entry {
    bs: Arc<BackendSet>,
    worker: WorkerHandle,
}

/// A problem reported by a Warning Event: (reason, note).
pub type Problem = (String, String);

pub struct BackendSets {
    sets: Mutex<BTreeMap<BackendSetKey, Entry>>,
    views: Arc<Views>,
    workers: Arc<WorkerContext>,
    /// Problems already reported, by BackendSet uid.
    warned: Mutex<HashMap<String, BTreeSet<Problem>>>,
}

impl BackendSets {
    pub fn new(args: BackendArgs, metrics: Metrics, queue: Arc<WorkQueue<WorkKey>>) -> BackendSets {
        let deny = Arc::new(DenyList::new(args.deny_list()));
        let views = Arc::new(Views::new(queue, metrics.clone()));
        let workers = Arc::new(WorkerContext {
            dns: Dns::new(args.dns_server),
            prober: Prober::new(deny.clone()),
            probes_in_flight: Arc::new(Semaphore::new(args.probe_concurrency as usize)),
            deny,
            args,
            metrics,
            views: views.clone(),
        });
        BackendSets {
            sets: Mutex::new(BTreeMap::new()),
            views,
            workers,
            warned: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<BackendSetKey, Entry>> {
        self.sets.lock().expect("backendsets lock")
    }

    // ---- the watch side ----

    /// A BackendSet from the watch: starts its worker, or hands it a changed spec. Returns the keys whose
    /// reconcile a new BackendSet, or one that names another Service now, may change: the Services it names
    /// (now and before) and the BackendSets naming them.
    pub fn apply(&self, bs: BackendSet) -> Vec<WorkKey> {
        let bs = Arc::new(bs);
        let key = BackendSetKey::of(&bs.metadata);
        let mut sets = self.lock();
        let services = match sets.get_mut(&key) {
            Some(entry) if entry.bs.uid() == bs.uid() => {
                let before = service_key(&entry.bs);
                let changed =
                    entry.bs.spec != bs.spec || entry.bs.metadata.generation != bs.metadata.generation;
                entry.bs = bs.clone();
                if changed {
                    entry.worker.update(bs.clone()); // its next view queues what it changes
                }
                let after = service_key(&bs);
                if before == after {
                    return Vec::new();
                }
                vec![before, after]
            }
            _ => {
                let old = sets.remove(&key).map(|entry| service_key(&entry.bs));
                let (worker, view) = Worker::start(self.workers.clone(), bs.clone());
                self.views.set(&key, view);
                sets.insert(
                    key,
                    Entry {
                        bs: bs.clone(),
                        worker,
                    },
                );
                old.into_iter().chain([service_key(&bs)]).collect()
            }
        };
        affected(&sets, services)
    }

    /// A deleted BackendSet: stops its worker and forgets its view.
    pub fn delete(&self, bs: &BackendSet) -> Vec<WorkKey> {
        let key = BackendSetKey::of(&bs.metadata);
        let mut sets = self.lock();
        let Some(entry) = sets.remove(&key) else {
            return Vec::new();
        };
        self.views.remove(&key);
        self.forget_warnings(&entry.bs);
        affected(&sets, vec![service_key(&entry.bs)])
    }

    /// Every BackendSet after a (re)list.
    pub fn relist(&self, all: Vec<BackendSet>) -> Vec<WorkKey> {
        let listed: BTreeSet<BackendSetKey> = all.iter().map(|bs| BackendSetKey::of(&bs.metadata)).collect();
        let gone: Vec<Arc<BackendSet>> = {
            let sets = self.lock();
            let gone = sets.iter().filter(|(key, _)| !listed.contains(*key));
            gone.map(|(_, entry)| entry.bs.clone()).collect()
        };
        let mut keys: Vec<WorkKey> = gone.iter().flat_map(|bs| self.delete(bs)).collect();
        keys.extend(all.into_iter().flat_map(|bs| self.apply(bs)));
        keys.sort();
        keys.dedup();
        keys
    }

    // ---- the reconcile side ----

    /// A BackendSet as last seen, with its current view.
    pub fn get(&self, key: &BackendSetKey) -> Option<(Arc<BackendSet>, Arc<BackendView>)> {
        let bs = self.lock().get(key)?.bs.clone();
        Some((bs, self.views.get(key)?))
    }

    pub fn keys(&self) -> Vec<BackendSetKey> {
        self.lock().keys().cloned().collect()
    }

    /// The BackendSets naming `service`, as status keys.
    pub fn naming(&self, service: &ServiceKey) -> Vec<WorkKey> {
        naming(&self.lock(), service)
            .map(|facts| WorkKey::BackendSet(facts.key()))
            .collect()
    }

    /// The view `svc` publishes: that of the BackendSet bound to it, if any.
    pub fn bound_view(&self, svc: &ServiceRecord) -> Option<Arc<BackendView>> {
        let bindings = self.bindings(&svc.key(), Some(svc));
        let (bound, _) = bindings.iter().find(|(_, b)| **b == Binding::Bound)?;
        self.views.get(bound)
    }

    /// The binding of the BackendSet `key`, which names the Service `svc` (`None`: not in the cache).
    pub fn binding(&self, key: &BackendSetKey, service: &ServiceKey, svc: Option<&ServiceRecord>) -> Binding {
        let mut bindings = self.bindings(service, svc);
        bindings.remove(key).unwrap_or(Binding::ServiceNotFound)
    }

    fn bindings(
        &self,
        service: &ServiceKey,
        svc: Option<&ServiceRecord>,
    ) -> BTreeMap<BackendSetKey, Binding> {
        let claimants: Vec<SetFacts> = naming(&self.lock(), service).collect();
        let facts = svc.map(ServiceFacts::of);
        bind(&claimants, &|_| facts.clone())
    }

    /// Of `problems`, those not reported yet for `bs`; remembers them all as reported.
    pub fn unreported(&self, bs: &BackendSet, problems: BTreeSet<Problem>) -> Vec<Problem> {
        let uid = bs.uid().unwrap_or_default();
        let mut warned = self.warned.lock().expect("warned lock");
        let known = warned.remove(&uid).unwrap_or_default();
        let new = problems.difference(&known).cloned().collect();
        warned.insert(uid, problems);
        new
    }

    fn forget_warnings(&self, bs: &BackendSet) {
        let uid = bs.uid().unwrap_or_default();
        self.warned.lock().expect("warned lock").remove(&uid);
    }
}

fn service_key(bs: &BackendSet) -> ServiceKey {
    ServiceKey::new(&bs.namespace().unwrap_or_default(), &service_name(bs))
}

fn naming<'a>(
    sets: &'a BTreeMap<BackendSetKey, Entry>,
    service: &'a ServiceKey,
) -> impl Iterator<Item = SetFacts> + 'a {
    let namespace = BackendSetKey::new(&service.namespace, "");
    sets.range(namespace..)
        .take_while(|(key, _)| key.namespace == service.namespace)
        .map(|(_, entry)| SetFacts::of(&entry.bs))
        .filter(|facts| facts.service == *service.name)
}

/// The Services and every BackendSet naming one of them, as keys to queue.
fn affected(sets: &BTreeMap<BackendSetKey, Entry>, mut services: Vec<ServiceKey>) -> Vec<WorkKey> {
    services.sort();
    services.dedup();
    let statuses: Vec<WorkKey> = services
        .iter()
        .flat_map(|service| naming(sets, service))
        .map(|facts| WorkKey::BackendSet(facts.key()))
        .collect();
    services
        .into_iter()
        .map(WorkKey::Service)
        .chain(statuses)
        .collect()
}
