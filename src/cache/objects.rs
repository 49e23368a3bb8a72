//! The objects roster writes, as its watches show them: every Endpoints (roster's own, and the hand-made
//! ones of selectorless Services, which it mirrors but never writes) and the EndpointSlices it manages.
//!
//! They are kept packed ([`Packed`]): identity in the clear, the rest compressed and decoded when read.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Resource, ResourceExt};

use super::ServiceKey;
use super::packed::{Packable, Packed};
use crate::desired::UPSTREAM_MANAGERS;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The objects, packed (see [`Packed`]).
#[derive(Default)]
pub struct Objects {
    endpoints: HashMap<ServiceKey, Packed<Endpoints>>,
    slices: HashMap<ServiceKey, Slices>,
}

/// The slices of one Service, sorted by name: most Services have one or two, so a vector is smaller than a
/// map (a map's node alone is more than a kilobyte).
#[derive(Default)]
struct Slices(Vec<Packed<EndpointSlice>>);

impl Slices {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|s| s.name().as_ref().cmp(name))
    }

    fn get(&self, name: &str) -> Option<&Packed<EndpointSlice>> {
        self.find(name).ok().map(|i| &self.0[i])
    }

    fn insert(&mut self, slice: Packed<EndpointSlice>) {
        match self.find(slice.name()) {
            Ok(i) => self.0[i] = slice,
            Err(i) => self.0.insert(i, slice),
        }
    }

    fn remove(&mut self, name: &str) {
        if let Ok(i) = self.find(name) {
            self.0.remove(i);
        }
    }
}

/// The Service an object belongs to by its own namespace and name (Endpoints, Services).
pub fn key_of<K: Resource>(obj: &K) -> ServiceKey {
    ServiceKey::new(
        obj.namespace().unwrap_or_default().as_str(),
        obj.name_any().as_str(),
    )
}

/// The Service a slice belongs to, by its service-name label.
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some(ServiceKey::new(
        slice.namespace().unwrap_or_default().as_str(),
        service.as_str(),
    ))
}

/// How an object from the watch is kept: as `cached` when that is the very same object version (a relist
/// then packs only what changed), otherwise packed anew.
fn held<K: Packable>(cached: Option<&Packed<K>>, obj: K) -> Packed<K> {
    match cached {
        Some(cached) if cached.is(obj.meta()) => cached.clone(),
        _ => Packed::new(obj),
    }
}

impl Objects {
    /// Caches `ep` and returns its Service.
    pub fn apply_endpoints(&mut self, ep: Endpoints) -> ServiceKey {
        let key = key_of(&ep);
        self.endpoints.insert(key.clone(), Packed::new(ep));
        key
    }

    /// How a (re)list holds an Endpoints until the list is complete: the cached one when the list shows it
    /// unchanged (same uid and resourceVersion), so a relist packs only what changed.
    pub fn hold_endpoints(&self, ep: Endpoints) -> Packed<Endpoints> {
        held(self.endpoints.get(&key_of(&ep)), ep)
    }

    pub fn delete_endpoints(&mut self, ep: &Endpoints) -> ServiceKey {
        let key = key_of(ep);
        self.endpoints.remove(&key);
        key
    }

    /// Replaces every Endpoints after a relist; returns the keys that were or are cached.
    pub fn relist_endpoints(&mut self, all: Vec<Packed<Endpoints>>) -> Vec<ServiceKey> {
        let mut touched: Vec<ServiceKey> = self.endpoints.keys().cloned().collect();
        self.endpoints = all.into_iter().map(|ep| (ep.key(), ep)).collect();
        touched.extend(self.endpoints.keys().cloned());
        touched.sort();
        touched.dedup();
        touched
    }

    /// Caches `slice`; returns its Service (none without the service-name label).
    pub fn apply_slice(&mut self, slice: EndpointSlice) -> Option<ServiceKey> {
        let key = slice_service(&slice)?;
        self.slices
            .entry(key.clone())
            .or_default()
            .insert(Packed::new(slice));
        Some(key)
    }

    /// [`Objects::hold_endpoints`] for a slice.
    pub fn hold_slice(&self, slice: EndpointSlice) -> Packed<EndpointSlice> {
        let cached = slice_service(&slice)
            .and_then(|key| self.slices.get(&key))
            .and_then(|slices| slices.get(slice.metadata.name.as_deref().unwrap_or_default()));
        held(cached, slice)
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) -> Option<ServiceKey> {
        let key = slice_service(slice)?;
        if let Some(map) = self.slices.get_mut(&key) {
            map.remove(slice.name_any().as_str());
            if map.0.is_empty() {
                self.slices.remove(&key);
            }
        }
        Some(key)
    }

    /// Replaces every slice after a relist; returns the Services that had or have slices.
    pub fn relist_slices(&mut self, all: Vec<Packed<EndpointSlice>>) -> Vec<ServiceKey> {
        let mut touched: Vec<ServiceKey> = self.slices.keys().cloned().collect();
        self.slices.clear();
        for slice in all {
            if let Some(key) = slice.service() {
                self.slices.entry(key).or_default().insert(slice);
            }
        }
        touched.extend(self.slices.keys().cloned());
        touched.sort();
        touched.dedup();
        touched
    }

    /// The Endpoints of `key` as the watch shows it, packed: decode it outside the lock.
    pub fn endpoints(&self, key: &ServiceKey) -> Option<Packed<Endpoints>> {
        self.endpoints.get(key).cloned()
    }

    /// The slices of `key` roster manages, as the watch shows them, packed.
    pub fn slices(&self, key: &ServiceKey) -> Vec<Packed<EndpointSlice>> {
        self.slices
            .get(key)
            .map(|slices| slices.0.clone())
            .unwrap_or_default()
    }

    /// Whether `key` has a slice of `managers` in the cache.
    pub fn has_slices_of(&self, key: &ServiceKey, managers: &[&str]) -> bool {
        let of = |s: &Packed<EndpointSlice>| s.manager().is_some_and(|m| managers.contains(&m));
        self.slices.get(key).is_some_and(|slices| slices.0.iter().any(of))
    }

    /// Services that have Endpoints or slices in the cache.
    pub fn keys(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.endpoints.keys().chain(self.slices.keys()).cloned().collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Services that have slices of kube-controller-manager's controllers in the cache.
    pub fn keys_with_upstream_slices(&self) -> Vec<ServiceKey> {
        let keys = self.slices.keys();
        let with = keys.filter(|key| self.has_slices_of(key, &UPSTREAM_MANAGERS));
        with.cloned().collect()
    }

    pub fn len_endpoints(&self) -> usize {
        self.endpoints.len()
    }

    pub fn len_slices(&self) -> usize {
        self.slices.values().map(|slices| slices.0.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn endpoints(rv: &str) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("web".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            subsets: None,
        }
    }

    fn slice(rv: &str) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("web-abcde".into()),
                resource_version: Some(rv.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn managed_fields_are_not_kept() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        let mut ep = endpoints("1");
        ep.metadata.managed_fields = Some(vec![Default::default()]);
        objects.apply_endpoints(ep);
        assert!(
            objects
                .endpoints(&key)
                .unwrap()
                .decode()
                .metadata
                .managed_fields
                .is_none()
        );
        let mut s = slice("1");
        s.metadata.managed_fields = Some(vec![Default::default()]);
        objects.apply_slice(s);
        assert!(objects.slices(&key)[0].decode().metadata.managed_fields.is_none());
    }

    #[test]
    fn a_relist_holds_unchanged_objects_as_the_cached_copies() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(endpoints("1"));
        objects.apply_slice(slice("1"));
        let cached_ep = objects.endpoints(&key).unwrap();
        let cached_slice = objects.slices(&key).remove(0);

        let same_ep = objects.hold_endpoints(endpoints("1"));
        let same_slice = objects.hold_slice(slice("1"));
        assert!(
            same_ep.shares_body(&cached_ep),
            "unchanged Endpoints: the cached copy"
        );
        assert!(
            same_slice.shares_body(&cached_slice),
            "unchanged slice: the cached copy"
        );

        let mut recreated = endpoints("1");
        recreated.metadata.uid = Some("other".into());
        assert!(
            !objects.hold_endpoints(recreated).shares_body(&cached_ep),
            "another object"
        );
        let changed_ep = objects.hold_endpoints(endpoints("2"));
        let changed_slice = objects.hold_slice(slice("2"));
        assert!(
            !changed_ep.shares_body(&cached_ep),
            "changed Endpoints: a new copy"
        );
        assert!(
            !changed_slice.shares_body(&cached_slice),
            "changed slice: a new copy"
        );

        assert_eq!(objects.relist_endpoints(vec![changed_ep]), vec![key.clone()]);
        assert_eq!(objects.relist_slices(vec![changed_slice]), vec![key.clone()]);
        let rv = |ep: Option<Packed<Endpoints>>| ep.and_then(|e| e.decode().resource_version());
        assert_eq!(rv(objects.endpoints(&key)).as_deref(), Some("2"));
        let versions: Vec<_> = objects
            .slices(&key)
            .iter()
            .map(|s| s.decode().resource_version())
            .collect();
        assert_eq!(
            versions,
            vec![Some("2".to_string())],
            "the listed version replaced the cached one"
        );
    }

    #[test]
    fn a_relist_reports_the_services_whose_objects_vanished() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(endpoints("1"));
        objects.apply_slice(slice("1"));
        assert_eq!(objects.relist_endpoints(vec![]), vec![key.clone()]);
        assert_eq!(objects.relist_slices(vec![]), vec![key.clone()]);
        assert!(objects.endpoints(&key).is_none());
        assert!(objects.slices(&key).is_empty());
        assert!(objects.keys().is_empty());
    }
}
