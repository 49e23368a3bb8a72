//! What roster knows of the objects it writes: Endpoints (all of them: roster's own, and hand-made ones of
//! selectorless Services, which it mirrors but never writes) and the EndpointSlices roster manages, plus an
//! overlay of roster's own recent writes that the watch has not delivered yet.
//!
//! The overlay is the fix for acting on a stale cache (upstream bugs #125638 and #126578, duplicate slices
//! #92928): after a write, reconciles use the object the server returned until the watch catches up, so a
//! fast second change is computed against the truth, never against the replaced object, and a server-side
//! no-op write (same resourceVersion) needs no waiting at all.
//!
//! Entries leave the overlay when the watch shows the write (or a newer object, or the object gone), when a
//! relist settles them, or after [`UNCONFIRMED_TTL`]; never because a write conflicted. The view never
//! prefers an entry over a newer object from the watch, so after a 409 the retry just waits for the watch;
//! dropping the entries instead would fall back to a cache that may not have seen roster's creates yet, and
//! the next plan would create those endpoints again in new slices (#92928).
//!
//! `managedFields` are dropped on arrival: roster never reads them, and on a real API server they are often
//! the larger part of an object's metadata. (An update without them leaves the server's copy as it is.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Resource, ResourceExt};

use crate::cache::{ServiceKey, same_version};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Default)]
pub struct Objects {
    endpoints: HashMap<ServiceKey, Arc<Endpoints>>,
    slices: HashMap<ServiceKey, BTreeMap<String, Arc<EndpointSlice>>>,
    written_endpoints: HashMap<ServiceKey, Written<Endpoints>>,
    written_slices: HashMap<ServiceKey, BTreeMap<String, Written<EndpointSlice>>>,
    /// uids of Endpoints and slices whose delete events arrived, for [`UNCONFIRMED_TTL`]: a write of one of
    /// them whose answer comes after its delete event is not recorded (the object is gone).
    deleted: HashMap<String, Instant>,
}

/// How long an overlay entry may wait for its watch event. Past it the entry is dropped and the watch's
/// cache is trusted again: if the watch really is that far behind, a reconcile may read a stale object, and
/// the write it bases on it fails with a 409 and is retried: a retry, never a wrong object. The bound keeps
/// the overlay at most a minute of roster's writes, whatever happens to the events.
pub const UNCONFIRMED_TTL: Duration = Duration::from_secs(60);

/// An object roster wrote (or deleted) that the watch may not have delivered yet, recorded at `since`.
#[derive(Clone)]
enum Written<T> {
    /// Written: the server's answer.
    Object {
        obj: Arc<T>,
        history: History,
        since: Instant,
    },
    /// Deleted; the deleted version is the last of `history`.
    Deleted { history: History, since: Instant },
}

/// The Endpoints versions behind an overlay entry that the watch may still deliver: the version roster's
/// first unconfirmed write replaced (none when it created the object), then each of roster's own writes
/// since, up to the one the entry holds (excluded) or deletes (included). Several writes can land before the
/// watch shows the first: an event of any of these versions is old news that neither settles the entry nor
/// hides it. (Slices settle by `metadata.generation`, which only grows, and keep this empty.)
#[derive(Clone, Default)]
struct History {
    created: bool,
    versions: Vec<String>,
}

impl History {
    fn contains(&self, rv: Option<&str>) -> bool {
        rv.is_some_and(|rv| self.versions.iter().any(|v| v == rv))
    }
}

impl<T> Written<T> {
    fn since(&self) -> Instant {
        match self {
            Written::Object { since, .. } | Written::Deleted { since, .. } => *since,
        }
    }
}

pub fn key_of<K: kube::Resource>(obj: &K) -> ServiceKey {
    ServiceKey::new(
        obj.namespace().unwrap_or_default().as_str(),
        obj.name_any().as_str(),
    )
}

/// How an object from the watch is kept: as `cached` when that is the very same object version (a relist
/// then copies only what changed), otherwise as itself without `managedFields`.
fn held<K: Resource>(cached: Option<&Arc<K>>, mut obj: K) -> Arc<K> {
    if let Some(cached) = cached {
        let meta = cached.meta();
        let uid = meta.uid.as_deref().unwrap_or_default();
        if same_version(
            uid,
            meta.resource_version.as_deref().unwrap_or_default(),
            obj.meta(),
        ) {
            return cached.clone();
        }
    }
    obj.meta_mut().managed_fields = None;
    Arc::new(obj)
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

    /// Caches `ep`; returns its Service unless the event is the echo of roster's own write (or of a version
    /// before it), which changes nothing roster's reconciles see (they already read the overlay).
    pub fn apply_endpoints(&mut self, ep: Endpoints) -> Option<ServiceKey> {
        self.apply_held_endpoints(held(None, ep))
    }

    fn apply_held_endpoints(&mut self, ep: Arc<Endpoints>) -> Option<ServiceKey> {
        let key = key_of(ep.as_ref());
        let seen = ep.resource_version();
        let echo = match self.written_endpoints.get(&key) {
            Some(Written::Object { obj, history, .. }) => {
                history.contains(seen.as_deref()) || (seen.is_some() && obj.resource_version() == seen)
            }
            Some(Written::Deleted { history, .. }) => history.contains(seen.as_deref()),
            None => false,
        };
        self.settle_endpoints(&key, seen.as_deref());
        self.endpoints.insert(key.clone(), ep);
        (!echo).then_some(key)
    }

    /// How a (re)list holds an Endpoints until the list is complete: the cached one when the list shows it
    /// unchanged (same uid and resourceVersion), so a relist copies only what changed.
    pub fn hold_endpoints(&self, ep: Endpoints) -> Arc<Endpoints> {
        held(self.endpoints.get(&key_of(&ep)), ep)
    }

    /// Forgets `ep`, and roster's own delete or write of that very object (same uid): after its delete event
    /// it is gone, whoever deleted it, and a write the overlay still held would hide the loss from the next
    /// reconcile. A write of another object of the name is kept: roster created it after this one was gone.
    pub fn delete_endpoints(&mut self, ep: &Endpoints) -> ServiceKey {
        let key = key_of(ep);
        self.endpoints.remove(&key);
        self.tombstone(ep.uid());
        let another = matches!(
            self.written_endpoints.get(&key),
            Some(Written::Object { obj, .. }) if obj.uid().is_some() && obj.uid() != ep.uid()
        );
        if !another {
            self.written_endpoints.remove(&key);
        }
        key
    }

    fn tombstone(&mut self, uid: Option<String>) {
        if let Some(uid) = uid {
            self.deleted.insert(uid, Instant::now());
        }
    }

    fn is_deleted<K: Resource>(&self, obj: &K) -> bool {
        obj.meta()
            .uid
            .as_ref()
            .is_some_and(|uid| self.deleted.contains_key(uid))
    }

    /// Replaces every Endpoints after a relist; returns the keys that appeared, changed or vanished.
    pub fn relist_endpoints(&mut self, all: Vec<Arc<Endpoints>>) -> Vec<ServiceKey> {
        let mut touched: Vec<ServiceKey> = self.endpoints.keys().cloned().collect();
        self.endpoints.clear();
        for ep in all {
            touched.push(key_of(ep.as_ref()));
            self.apply_held_endpoints(ep);
        }
        self.settle_endpoints_missing_from_relist();
        touched.sort();
        touched.dedup();
        touched
    }

    /// A relist that does not show an object settles roster's delete of it (the watch that would have
    /// delivered the delete is gone) and roster's update of it (someone deleted the object since: keeping
    /// the update would hide the loss from the next reconcile). Only a create may still be on its way. An
    /// update that landed while the list was in flight may be dropped too: the next write then meets a
    /// conflict and retries from the watch's state, which costs a retry, never a wrong object.
    fn settle_endpoints_missing_from_relist(&mut self) {
        let endpoints = &self.endpoints;
        self.written_endpoints.retain(|key, written| {
            endpoints.contains_key(key)
                || matches!(written, Written::Object { history, .. } if history.created)
        });
    }

    /// Caches `slice`; returns its Service unless the event is the echo of roster's own last write of it.
    pub fn apply_slice(&mut self, slice: EndpointSlice) -> Option<ServiceKey> {
        self.apply_held_slice(held(None, slice))
    }

    fn apply_held_slice(&mut self, slice: Arc<EndpointSlice>) -> Option<ServiceKey> {
        let key = slice_service(&slice)?;
        let name = slice.name_any();
        let echo = matches!(
            self.written_slices.get(&key).and_then(|m| m.get(&name)),
            Some(Written::Object { obj, .. }) if obj.resource_version().is_some() && obj.resource_version() == slice.resource_version()
        );
        self.settle_slice(&key, &name, slice.metadata.generation);
        self.slices.entry(key.clone()).or_default().insert(name, slice);
        (!echo).then_some(key)
    }

    /// [`Objects::hold_endpoints`] for a slice.
    pub fn hold_slice(&self, slice: EndpointSlice) -> Arc<EndpointSlice> {
        let cached = slice_service(&slice)
            .and_then(|key| self.slices.get(&key))
            .and_then(|slices| slices.get(slice.metadata.name.as_deref().unwrap_or_default()));
        held(cached, slice)
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
        // Slice names are generated, so the event is of the very slice roster wrote or deleted: either way
        // it is gone now.
        self.forget_slice_write(&key, &name);
        self.tombstone(slice.uid());
        Some(key)
    }

    pub fn relist_slices(&mut self, all: Vec<Arc<EndpointSlice>>) -> Vec<ServiceKey> {
        let mut touched: Vec<ServiceKey> = self.slices.keys().cloned().collect();
        self.slices.clear();
        for slice in all {
            touched.extend(slice_service(&slice));
            self.apply_held_slice(slice);
        }
        self.settle_slice_deletes_missing_from_relist();
        touched.sort();
        touched.dedup();
        touched
    }

    /// A relist that does not show a slice settles roster's delete of it. (Slice writes record no
    /// replaced version, so a written slice the relist lacks may be a create still on its way: kept.)
    fn settle_slice_deletes_missing_from_relist(&mut self) {
        let slices = &self.slices;
        self.written_slices.retain(|key, written| {
            let listed = slices.get(key);
            written.retain(|name, w| {
                matches!(w, Written::Object { .. }) || listed.is_some_and(|l| l.contains_key(name))
            });
            !written.is_empty()
        });
    }

    /// Drops the overlay entry once the watch shows a version not in its history: roster's write itself, or
    /// someone's newer write (or re-create) after it.
    fn settle_endpoints(&mut self, key: &ServiceKey, seen_rv: Option<&str>) {
        let caught_up = match self.written_endpoints.get_mut(key) {
            Some(Written::Object { history, .. } | Written::Deleted { history, .. }) => {
                let old_news = history.contains(seen_rv);
                // The watch has shown the object: a relist without it now means it was deleted.
                history.created &= !old_news;
                !old_news
            }
            None => false,
        };
        if caught_up {
            self.written_endpoints.remove(key);
        }
    }

    fn settle_slice(&mut self, key: &ServiceKey, name: &str, seen_generation: Option<i64>) {
        let caught_up = matches!(
            self.written_slices.get(key).and_then(|m| m.get(name)),
            Some(Written::Object { obj, .. }) if seen_generation >= obj.metadata.generation
        );
        if caught_up {
            self.forget_slice_write(key, name);
        }
    }

    // ---- reconcile side ----

    /// The current Endpoints of `key` as roster believes it is: its own latest write when the watch lags.
    pub fn endpoints(&self, key: &ServiceKey) -> Option<Arc<Endpoints>> {
        let cached = self.endpoints.get(key);
        match self.written_endpoints.get(key) {
            Some(Written::Object { obj, history, .. }) => match cached {
                Some(c)
                    if !history.contains(c.resource_version().as_deref())
                        && c.resource_version() != obj.resource_version() =>
                {
                    Some(c.clone()) // someone else wrote after us
                }
                _ => Some(obj.clone()),
            },
            Some(Written::Deleted { history, .. }) => match cached {
                Some(c) if !history.contains(c.resource_version().as_deref()) => Some(c.clone()),
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

    // The watch often delivers a write's event before the writer records the write (the server sends the
    // event before its answer arrives). Each `record_*` therefore first asks whether the cache has already
    // caught up, or seen the object deleted; recording such a write would leave an entry no event settles.

    pub fn record_endpoints_write(&mut self, key: &ServiceKey, written: Endpoints, replaced: Option<String>) {
        let echoed = self.endpoints.get(key).is_some_and(|cached| {
            cached.resource_version().is_some() && cached.resource_version() == written.resource_version()
        });
        if echoed || self.is_deleted(&written) {
            self.written_endpoints.remove(key);
            return;
        }
        let entry = Written::Object {
            obj: Arc::new(written),
            history: self.endpoints_history(key, replaced),
            since: Instant::now(),
        };
        self.written_endpoints.insert(key.clone(), entry);
    }

    /// The history of a write or delete of the version `base`: continued from the overlay entry when `base`
    /// is roster's own unconfirmed write, else started afresh.
    fn endpoints_history(&self, key: &ServiceKey, base: Option<String>) -> History {
        match (self.written_endpoints.get(key), base) {
            (Some(Written::Object { obj, history, .. }), Some(base))
                if obj.resource_version().as_deref() == Some(base.as_str()) =>
            {
                let mut history = history.clone();
                history.versions.push(base);
                history
            }
            (_, base) => History {
                created: base.is_none(),
                versions: base.into_iter().collect(),
            },
        }
    }

    /// Records a delete unless its event has arrived: roster deletes only what its cache or its own
    /// unconfirmed write shows, so an object in neither is already gone from the watch's view.
    pub fn record_endpoints_delete(&mut self, key: &ServiceKey, rv: Option<String>) {
        let pending_write = matches!(self.written_endpoints.get(key), Some(Written::Object { .. }));
        if !self.endpoints.contains_key(key) && !pending_write {
            self.written_endpoints.remove(key);
            return;
        }
        let entry = Written::Deleted {
            history: self.endpoints_history(key, rv),
            since: Instant::now(),
        };
        self.written_endpoints.insert(key.clone(), entry);
    }

    pub fn record_slice_write(&mut self, key: &ServiceKey, written: EndpointSlice) {
        let name = written.name_any();
        let cached = self.slices.get(key).and_then(|s| s.get(&name));
        let generation = written.metadata.generation;
        let echoed = generation.is_some() && cached.is_some_and(|c| c.metadata.generation >= generation);
        if echoed || self.is_deleted(&written) {
            self.forget_slice_write(key, &name);
            return;
        }
        let entry = Written::Object {
            obj: Arc::new(written),
            history: History::default(),
            since: Instant::now(),
        };
        self.written_slices
            .entry(key.clone())
            .or_default()
            .insert(name, entry);
    }

    /// Records a slice delete unless its event has arrived (see [`Objects::record_endpoints_delete`]).
    pub fn record_slice_delete(&mut self, key: &ServiceKey, slice: &EndpointSlice) {
        let name = slice.name_any();
        let cached = self.slices.get(key).is_some_and(|s| s.contains_key(&name));
        let pending_write = self
            .written_slices
            .get(key)
            .is_some_and(|w| matches!(w.get(&name), Some(Written::Object { .. })));
        if !cached && !pending_write {
            self.forget_slice_write(key, &name);
            return;
        }
        let entry = Written::Deleted {
            history: History::default(),
            since: Instant::now(),
        };
        self.written_slices
            .entry(key.clone())
            .or_default()
            .insert(name, entry);
    }

    fn forget_slice_write(&mut self, key: &ServiceKey, name: &str) {
        if let Some(written) = self.written_slices.get_mut(key) {
            written.remove(name);
            if written.is_empty() {
                self.written_slices.remove(key);
            }
        }
    }

    /// Drops overlay entries and tombstones older than [`UNCONFIRMED_TTL`] at `now`.
    pub fn expire_unconfirmed(&mut self, now: Instant) {
        let fresh = |since: Instant| now.saturating_duration_since(since) < UNCONFIRMED_TTL;
        self.deleted.retain(|_, since| fresh(*since));
        self.written_endpoints.retain(|_, w| fresh(w.since()));
        self.written_slices.retain(|_, written| {
            written.retain(|_, w| fresh(w.since()));
            !written.is_empty()
        });
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

    /// Writes and deletes in the overlay: the watch's lag behind roster, in objects.
    pub fn len_unconfirmed_endpoints(&self) -> usize {
        self.written_endpoints.len()
    }

    pub fn len_unconfirmed_slices(&self) -> usize {
        self.written_slices.values().map(BTreeMap::len).sum()
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
            ..Endpoints::default()
        }
    }

    fn slice(rv: &str, generation: i64) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("web-abcde".into()),
                resource_version: Some(rv.into()),
                generation: Some(generation),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn the_echo_of_our_own_endpoints_write_needs_no_reconcile() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        assert_eq!(objects.apply_endpoints(endpoints("1")), Some(key.clone()));
        objects.record_endpoints_write(&key, endpoints("2"), Some("1".into()));
        assert_eq!(objects.apply_endpoints(endpoints("2")), None, "echo of our write");
        // Someone else's write after ours is news.
        assert_eq!(objects.apply_endpoints(endpoints("3")), Some(key.clone()));
        assert_eq!(
            objects.endpoints(&key).unwrap().resource_version().as_deref(),
            Some("3")
        );
    }

    #[test]
    fn managed_fields_are_not_kept() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        let mut ep = endpoints("1");
        ep.metadata.managed_fields = Some(vec![Default::default()]);
        objects.apply_endpoints(ep);
        assert!(objects.endpoints(&key).unwrap().metadata.managed_fields.is_none());
        let mut s = slice("1", 1);
        s.metadata.managed_fields = Some(vec![Default::default()]);
        objects.apply_slice(s);
        assert!(objects.slices(&key)[0].metadata.managed_fields.is_none());
    }

    #[test]
    fn an_endpoints_event_before_our_write_is_recorded_still_counts() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(endpoints("1"));
        // The watch delivers a foreign write while ours is in flight: reconcile.
        assert_eq!(objects.apply_endpoints(endpoints("2")), Some(key));
    }

    #[test]
    fn the_echo_of_our_own_slice_write_needs_no_reconcile() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        assert_eq!(objects.apply_slice(slice("1", 1)), Some(key.clone()));
        objects.record_slice_write(&key, slice("5", 2));
        assert_eq!(objects.apply_slice(slice("5", 2)), None, "echo of our write");
        assert_eq!(
            objects.apply_slice(slice("6", 3)),
            Some(key.clone()),
            "someone else's"
        );
        // A relist always reports every Service.
        let held = objects.hold_slice(slice("6", 3));
        assert_eq!(objects.relist_slices(vec![held]), vec![key]);
    }

    #[test]
    fn a_relist_holds_unchanged_objects_as_the_cached_copies() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(endpoints("1"));
        objects.apply_slice(slice("1", 1));
        let cached_ep = objects.endpoints(&key).unwrap();
        let cached_slice = objects.slices(&key).remove(0);

        let same_ep = objects.hold_endpoints(endpoints("1"));
        let same_slice = objects.hold_slice(slice("1", 1));
        assert!(
            Arc::ptr_eq(&same_ep, &cached_ep),
            "unchanged Endpoints: the cached copy"
        );
        assert!(
            Arc::ptr_eq(&same_slice, &cached_slice),
            "unchanged slice: the cached copy"
        );

        let mut recreated = endpoints("1");
        recreated.metadata.uid = Some("other".into());
        assert!(
            !Arc::ptr_eq(&objects.hold_endpoints(recreated), &cached_ep),
            "another object"
        );
        let changed_ep = objects.hold_endpoints(endpoints("2"));
        let changed_slice = objects.hold_slice(slice("2", 2));
        assert!(
            !Arc::ptr_eq(&changed_ep, &cached_ep),
            "changed Endpoints: a new copy"
        );
        assert!(
            !Arc::ptr_eq(&changed_slice, &cached_slice),
            "changed slice: a new copy"
        );

        objects.relist_endpoints(vec![changed_ep]);
        objects.relist_slices(vec![changed_slice]);
        assert_eq!(
            objects.endpoints(&key).unwrap().resource_version().as_deref(),
            Some("2")
        );
        let versions: Vec<_> = objects
            .slices(&key)
            .iter()
            .map(|s| s.resource_version())
            .collect();
        assert_eq!(
            versions,
            vec![Some("2".to_string())],
            "the listed version replaced the cached one"
        );
    }

    #[test]
    fn a_relist_settles_deletes_whose_events_were_lost() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(endpoints("1"));
        objects.apply_slice(slice("1", 1));
        objects.record_endpoints_delete(&key, Some("1".into()));
        objects.record_slice_delete(&key, &slice("1", 1));
        // The watches break before the delete events arrive; the relists no longer show the objects.
        objects.relist_endpoints(vec![]);
        objects.relist_slices(vec![]);
        assert!(objects.written_endpoints.is_empty(), "Endpoints delete settled");
        assert!(objects.written_slices.is_empty(), "slice delete settled");
        assert!(objects.endpoints(&key).is_none());
        assert!(objects.slices(&key).is_empty());
    }

    #[test]
    fn a_relist_keeps_writes_it_may_predate() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        // Created by roster; a list taken before the create landed does not show it yet.
        objects.record_endpoints_write(&key, endpoints("7"), None);
        objects.record_slice_write(&key, slice("7", 1));
        objects.relist_endpoints(vec![]);
        objects.relist_slices(vec![]);
        assert_eq!(
            objects.endpoints(&key).unwrap().resource_version().as_deref(),
            Some("7")
        );
        assert_eq!(objects.slices(&key).len(), 1);
        // An update of an object the relist no longer shows: someone deleted it since; trust the list.
        objects.record_endpoints_write(&key, endpoints("9"), Some("8".into()));
        objects.relist_endpoints(vec![]);
        assert!(objects.endpoints(&key).is_none());
    }

    #[test]
    fn a_write_whose_echo_came_first_leaves_no_entry() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(endpoints("1"));
        objects.apply_slice(slice("1", 1));
        // The server's events for rv 2 / generation 2 arrive before the writer records its writes.
        objects.apply_endpoints(endpoints("2"));
        objects.apply_slice(slice("2", 2));
        objects.record_endpoints_write(&key, endpoints("2"), Some("1".into()));
        objects.record_slice_write(&key, slice("2", 2));
        assert_eq!(objects.len_unconfirmed_endpoints(), 0);
        assert_eq!(objects.len_unconfirmed_slices(), 0);
        assert_eq!(
            objects.endpoints(&key).unwrap().resource_version().as_deref(),
            Some("2")
        );
        // A write the watch has not shown yet is kept.
        objects.record_endpoints_write(&key, endpoints("3"), Some("2".into()));
        objects.record_slice_write(&key, slice("3", 3));
        assert_eq!(objects.len_unconfirmed_endpoints(), 1);
        assert_eq!(objects.len_unconfirmed_slices(), 1);
    }

    #[test]
    fn a_delete_whose_event_came_first_leaves_no_entry() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(endpoints("1"));
        objects.apply_slice(slice("1", 1));
        objects.delete_endpoints(&endpoints("1"));
        objects.delete_slice(&slice("1", 1));
        objects.record_endpoints_delete(&key, Some("1".into()));
        objects.record_slice_delete(&key, &slice("1", 1));
        assert_eq!(objects.len_unconfirmed_endpoints(), 0);
        assert_eq!(objects.len_unconfirmed_slices(), 0);
    }

    #[test]
    fn a_delete_of_an_unconfirmed_create_waits_for_its_events() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.record_endpoints_write(&key, endpoints("1"), None);
        objects.record_endpoints_delete(&key, Some("1".into()));
        // The create's event arrives late: the object stays deleted in roster's view.
        objects.apply_endpoints(endpoints("1"));
        assert!(objects.endpoints(&key).is_none());
        objects.delete_endpoints(&endpoints("1"));
        assert_eq!(objects.len_unconfirmed_endpoints(), 0);
    }

    fn with_uid<K: Resource>(mut obj: K, uid: &str) -> K {
        obj.meta_mut().uid = Some(uid.into());
        obj
    }

    #[test]
    fn a_delete_event_drops_an_unconfirmed_update_of_the_object() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(with_uid(endpoints("1"), "e"));
        objects.apply_slice(with_uid(slice("1", 1), "s"));
        objects.record_endpoints_write(&key, with_uid(endpoints("2"), "e"), Some("1".into()));
        objects.record_slice_write(&key, with_uid(slice("2", 2), "s"));
        // Someone deletes both before the watch shows roster's updates: the next reconcile must see them gone.
        objects.delete_endpoints(&with_uid(endpoints("3"), "e"));
        objects.delete_slice(&with_uid(slice("3", 2), "s"));
        assert!(objects.endpoints(&key).is_none());
        assert!(objects.slices(&key).is_empty());
        assert_eq!(objects.len_unconfirmed_endpoints(), 0);
        assert_eq!(objects.len_unconfirmed_slices(), 0);
    }

    #[test]
    fn a_write_answered_after_its_objects_delete_event_is_not_recorded() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(with_uid(endpoints("1"), "e"));
        objects.apply_slice(with_uid(slice("1", 1), "s"));
        // roster's updates land, someone deletes both, and the delete events arrive before the answers.
        objects.delete_endpoints(&with_uid(endpoints("3"), "e"));
        objects.delete_slice(&with_uid(slice("3", 2), "s"));
        objects.record_endpoints_write(&key, with_uid(endpoints("2"), "e"), Some("1".into()));
        objects.record_slice_write(&key, with_uid(slice("2", 2), "s"));
        assert!(objects.endpoints(&key).is_none());
        assert!(objects.slices(&key).is_empty());
        // The tombstones expire with the overlay.
        objects.expire_unconfirmed(Instant::now() + UNCONFIRMED_TTL);
        assert!(objects.deleted.is_empty());
    }

    #[test]
    fn a_delete_event_keeps_an_unconfirmed_create_of_another_endpoints() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(with_uid(endpoints("1"), "old"));
        // Deleted by someone, then created again by roster before the delete event arrives.
        objects.record_endpoints_write(&key, with_uid(endpoints("3"), "new"), None);
        objects.delete_endpoints(&with_uid(endpoints("2"), "old"));
        assert_eq!(
            objects.endpoints(&key).unwrap().resource_version().as_deref(),
            Some("3")
        );
        // Its own delete event does drop it.
        objects.delete_endpoints(&with_uid(endpoints("4"), "new"));
        assert!(objects.endpoints(&key).is_none());
    }

    #[test]
    fn late_events_of_a_chain_of_writes_neither_settle_nor_hide_the_last() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        // Three writes land before the watch shows the first.
        objects.record_endpoints_write(&key, endpoints("12"), None);
        objects.record_endpoints_write(&key, endpoints("33"), Some("12".into()));
        objects.record_endpoints_write(&key, endpoints("36"), Some("33".into()));
        let view = |objects: &Objects| objects.endpoints(&key).and_then(|e| e.resource_version());
        for old in ["12", "33"] {
            assert_eq!(objects.apply_endpoints(endpoints(old)), None, "{old} is old news");
            assert_eq!(view(&objects).as_deref(), Some("36"), "after the event of {old}");
        }
        assert_eq!(objects.apply_endpoints(endpoints("36")), None);
        assert_eq!(objects.len_unconfirmed_endpoints(), 0, "settled by its own event");
        // A delete of an unconfirmed write continues the history.
        objects.record_endpoints_write(&key, endpoints("40"), Some("36".into()));
        objects.record_endpoints_delete(&key, Some("40".into()));
        objects.apply_endpoints(endpoints("40"));
        assert_eq!(view(&objects), None, "deleted, whatever late events show");
        // A version outside the history is someone else's: it settles the entry and shows.
        assert_eq!(objects.apply_endpoints(endpoints("45")), Some(key.clone()));
        assert_eq!(view(&objects).as_deref(), Some("45"));
        assert_eq!(objects.len_unconfirmed_endpoints(), 0);
    }

    #[test]
    fn a_relist_without_a_created_object_the_watch_has_shown_drops_the_writes() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.record_endpoints_write(&key, endpoints("12"), None);
        objects.record_endpoints_write(&key, endpoints("33"), Some("12".into()));
        objects.relist_endpoints(vec![]);
        assert!(
            objects.endpoints(&key).is_some(),
            "the create may still be on its way"
        );
        objects.apply_endpoints(endpoints("12"));
        objects.relist_endpoints(vec![]);
        assert!(objects.endpoints(&key).is_none(), "shown, then gone: deleted");
    }

    #[test]
    fn unconfirmed_writes_expire() {
        let key = ServiceKey::new("ns", "web");
        let mut objects = Objects::default();
        objects.apply_endpoints(endpoints("1"));
        objects.record_endpoints_write(&key, endpoints("2"), Some("1".into()));
        objects.record_slice_write(&key, slice("2", 2));
        let now = Instant::now();
        objects.expire_unconfirmed(now);
        assert_eq!(objects.len_unconfirmed_endpoints(), 1, "fresh entries stay");
        assert_eq!(objects.len_unconfirmed_slices(), 1);
        objects.expire_unconfirmed(now + UNCONFIRMED_TTL);
        assert_eq!(objects.len_unconfirmed_endpoints(), 0);
        assert_eq!(objects.len_unconfirmed_slices(), 0);
        // The watch's cache is trusted again.
        assert_eq!(
            objects.endpoints(&key).unwrap().resource_version().as_deref(),
            Some("1")
        );
    }
}
