//! What roster knows of the objects it writes: Endpoints (all of them: roster's own, and hand-made ones of
//! selectorless Services, which it mirrors but never writes) and the EndpointSlices roster manages, plus an
//! overlay of roster's own recent writes that the watch has not delivered yet.
//!
//! The overlay is the fix for acting on a stale cache (upstream bugs #125638 and #126578, duplicate slices
//! #92928): after a write, reconciles use the object the server returned until the watch catches up, so a
//! fast second change is computed against the truth, never against the replaced object, and a server-side
//! no-op write (same resourceVersion) needs no waiting at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::cache::ServiceKey;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Default)]
pub struct Objects {
    endpoints: HashMap<ServiceKey, Arc<Endpoints>>,
    slices: HashMap<ServiceKey, BTreeMap<String, Arc<EndpointSlice>>>,
    written_endpoints: HashMap<ServiceKey, Written<Endpoints>>,
    written_slices: HashMap<ServiceKey, BTreeMap<String, Written<EndpointSlice>>>,
}

/// An object roster wrote (or deleted) that the watch may not have delivered yet.
#[derive(Clone)]
enum Written<T> {
    /// Written: the server's answer; `replaced` is the resourceVersion the write replaced (None: created).
    Object { obj: Arc<T>, replaced: Option<String> },
    /// Deleted: `rv` is the resourceVersion of the deleted object.
    Deleted { rv: Option<String> },
}

pub fn key_of<K: kube::Resource>(obj: &K) -> ServiceKey {
    ServiceKey::new(
        obj.namespace().unwrap_or_default().as_str(),
        obj.name_any().as_str(),
    )
}

fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some(ServiceKey::new(
        slice.namespace().unwrap_or_default().as_str(),
        service.as_str(),
    ))
}

impl Objects {
    // ---- watch side ----

    pub fn apply_endpoints(&mut self, ep: Endpoints) -> ServiceKey {
        let key = key_of(&ep);
        self.settle_endpoints(&key, ep.resource_version().as_deref());
        self.endpoints.insert(key.clone(), Arc::new(ep));
        key
    }

    pub fn delete_endpoints(&mut self, ep: &Endpoints) -> ServiceKey {
        let key = key_of(ep);
        self.endpoints.remove(&key);
        if matches!(self.written_endpoints.get(&key), Some(Written::Deleted { .. })) {
            self.written_endpoints.remove(&key);
        }
        key
    }

    /// Replaces every Endpoints after a relist; returns the keys that appeared, changed or vanished.
    pub fn relist_endpoints(&mut self, all: Vec<Endpoints>) -> Vec<ServiceKey> {
        let mut touched: Vec<ServiceKey> = self.endpoints.keys().cloned().collect();
        self.endpoints.clear();
        for ep in all {
            touched.push(self.apply_endpoints(ep));
        }
        touched.sort();
        touched.dedup();
        touched
    }

    pub fn apply_slice(&mut self, slice: EndpointSlice) -> Option<ServiceKey> {
        let key = slice_service(&slice)?;
        let name = slice.name_any();
        self.settle_slice(&key, &name, slice.metadata.generation, false);
        self.slices
            .entry(key.clone())
            .or_default()
            .insert(name, Arc::new(slice));
        Some(key)
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) -> Option<ServiceKey> {
        let key = slice_service(slice)?;
        let name = slice.name_any();
        if let Some(map) = self.slices.get_mut(&key) {
            map.remove(&name);
            if map.is_empty() {
                self.slices.remove(&key);
            }
        }
        self.settle_slice(&key, &name, None, true);
        Some(key)
    }

    pub fn relist_slices(&mut self, all: Vec<EndpointSlice>) -> Vec<ServiceKey> {
        let mut touched: Vec<ServiceKey> = self.slices.keys().cloned().collect();
        self.slices.clear();
        for slice in all {
            touched.extend(self.apply_slice(slice));
        }
        touched.sort();
        touched.dedup();
        touched
    }

    /// Drops overlay entries the watch has caught up with.
    fn settle_endpoints(&mut self, key: &ServiceKey, seen_rv: Option<&str>) {
        let caught_up = match self.written_endpoints.get(key) {
            Some(Written::Object { obj, replaced }) => {
                seen_rv != replaced.as_deref() || obj.resource_version().as_deref() == seen_rv
            }
            Some(Written::Deleted { rv }) => seen_rv != rv.as_deref(),
            None => false,
        };
        if caught_up {
            self.written_endpoints.remove(key);
        }
    }

    fn settle_slice(&mut self, key: &ServiceKey, name: &str, seen_generation: Option<i64>, deleted: bool) {
        let Some(map) = self.written_slices.get_mut(key) else {
            return;
        };
        let caught_up = match map.get(name) {
            Some(Written::Object { obj, .. }) => !deleted && seen_generation >= obj.metadata.generation,
            Some(Written::Deleted { .. }) => deleted,
            None => false,
        };
        if caught_up {
            map.remove(name);
            if map.is_empty() {
                self.written_slices.remove(key);
            }
        }
    }

    // ---- reconcile side ----

    /// The current Endpoints of `key` as roster believes it is: its own latest write when the watch lags.
    pub fn endpoints(&self, key: &ServiceKey) -> Option<Arc<Endpoints>> {
        let cached = self.endpoints.get(key);
        match self.written_endpoints.get(key) {
            Some(Written::Object { obj, replaced }) => match cached {
                Some(c)
                    if c.resource_version() != *replaced
                        && c.resource_version() != obj.resource_version() =>
                {
                    Some(c.clone()) // someone else wrote after us
                }
                _ => Some(obj.clone()),
            },
            Some(Written::Deleted { rv }) => match cached {
                Some(c) if c.resource_version() != *rv => Some(c.clone()),
                _ => None,
            },
            None => cached.cloned(),
        }
    }

    /// roster's slices of `key` as roster believes they are (cache overlaid with its own recent writes).
    pub fn slices(&self, key: &ServiceKey) -> Vec<Arc<EndpointSlice>> {
        let mut view: BTreeMap<String, Arc<EndpointSlice>> =
            self.slices.get(key).cloned().unwrap_or_default();
        for (name, written) in self.written_slices.get(key).into_iter().flatten() {
            match written {
                Written::Object { obj, .. } => {
                    let newer = view
                        .get(name)
                        .is_none_or(|c| c.metadata.generation < obj.metadata.generation);
                    if newer {
                        view.insert(name.clone(), obj.clone());
                    }
                }
                Written::Deleted { .. } => {
                    view.remove(name);
                }
            }
        }
        view.into_values().collect()
    }

    pub fn record_endpoints_write(&mut self, key: &ServiceKey, written: Endpoints, replaced: Option<String>) {
        let entry = Written::Object {
            obj: Arc::new(written),
            replaced,
        };
        self.written_endpoints.insert(key.clone(), entry);
    }

    pub fn record_endpoints_delete(&mut self, key: &ServiceKey, rv: Option<String>) {
        self.written_endpoints
            .insert(key.clone(), Written::Deleted { rv });
    }

    pub fn record_slice_write(&mut self, key: &ServiceKey, written: EndpointSlice) {
        let name = written.name_any();
        let entry = Written::Object {
            obj: Arc::new(written),
            replaced: None,
        };
        self.written_slices
            .entry(key.clone())
            .or_default()
            .insert(name, entry);
    }

    pub fn record_slice_delete(&mut self, key: &ServiceKey, slice: &EndpointSlice) {
        let entry = Written::Deleted {
            rv: slice.resource_version(),
        };
        self.written_slices
            .entry(key.clone())
            .or_default()
            .insert(slice.name_any(), entry);
    }

    /// Forgets roster's own writes for `key` (after a conflict: the next reconcile trusts the watch).
    pub fn forget_writes(&mut self, key: &ServiceKey) {
        self.written_endpoints.remove(key);
        self.written_slices.remove(key);
    }

    pub fn endpoints_keys(&self) -> Vec<ServiceKey> {
        self.endpoints.keys().cloned().collect()
    }

    pub fn slice_keys(&self) -> Vec<ServiceKey> {
        self.slices.keys().cloned().collect()
    }

    pub fn len_endpoints(&self) -> usize {
        self.endpoints.len()
    }

    pub fn len_slices(&self) -> usize {
        self.slices.values().map(BTreeMap::len).sum()
    }
}
