//! Compact caches of Pods, Services and Nodes, the label index between pods and Services, the objects roster
//! writes as its watches show them ([`Objects`]), and the record of roster's own writes the watches have not
//! shown yet ([`written`]).
//!
//! Watch events come in as projections ([`PodProjection`], [`NodeProjection`]) or full Services and are
//! reduced to small interned records kept in `Arc`s, so a reconcile can take a consistent snapshot under a
//! short read lock. Every update returns the [`ServiceKey`]s whose Endpoints may change, and nothing when no
//! field roster reads changed.

mod index;
mod interner;
mod ip;
mod labels;
mod meta;
mod node;
mod objects;
mod packed;
mod pod;
mod pod_protobuf;
mod selector;
mod service;
pub mod written;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use index::NamespaceIndex;

use crate::desired::ZoneCapacity;

pub use interner::Interner;
pub use ip::{IpFamily, ip_sort_key, parse_ip};
pub use labels::Labels;
pub use node::{
    AllocatableProjection, NodeConditionProjection, NodeLookup, NodeProjection, NodeRecord,
    NodeStatusProjection, cpu_millis,
};
pub use objects::{Objects, SERVICE_NAME_LABEL, key_of, slice_service};
pub use packed::Packed;
pub use pod::{
    ContainerPortProjection, ContainerProjection, NamedPort, PodConditionProjection, PodIpProjection,
    PodPhase, PodProjection, PodRecord, PodSpecProjection, PodStatusProjection, Protocol,
};
pub use selector::{Operator, Requirement, Selector, SelectorError};
pub use service::{SelectorSource, ServicePortRecord, ServiceRecord, ServiceType, TargetPort};

/// Identifies a namespaced object by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// Identifies a Service (and its Endpoints, which share the name).
pub type ServiceKey = ObjectKey;
/// Identifies a BackendSet.
pub type BackendSetKey = ObjectKey;

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: Arc::from(namespace),
            name: Arc::from(name),
        }
    }

    /// The key of an object from its metadata.
    pub fn of(meta: &ObjectMeta) -> Self {
        ObjectKey::new(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a cache update means for reconciliation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Affected {
    /// Something roster reads changed (false for resyncs and status-only churn).
    pub changed: bool,
    /// Services to reconcile, sorted and without duplicates.
    pub services: Vec<ServiceKey>,
}

impl Affected {
    fn unchanged() -> Self {
        Affected::default()
    }

    fn changed(services: BTreeSet<ServiceKey>) -> Self {
        Affected {
            changed: true,
            services: services.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    fn merge(mut self, other: Affected) -> Self {
        self.changed |= other.changed;
        self.services.extend(other.services);
        self.services.sort();
        self.services.dedup();
        self
    }
}

impl IntoIterator for Affected {
    type Item = ServiceKey;
    type IntoIter = std::vec::IntoIter<ServiceKey>;

    fn into_iter(self) -> Self::IntoIter {
        self.services.into_iter()
    }
}

type PodKey = (Arc<str>, Arc<str>);

fn namespaced_name(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Whether `meta` is the object a cached record or object was made from: same uid, same non-empty
/// resourceVersion (the server changes it with every write, so the content is the same too).
pub fn same_version(uid: &str, resource_version: &str, meta: &ObjectMeta) -> bool {
    !resource_version.is_empty()
        && meta.resource_version.as_deref() == Some(resource_version)
        && meta.uid.as_deref().unwrap_or_default() == uid
}

/// The caches. A plain synchronous struct: the controller wraps it in a lock.
#[derive(Debug, Default)]
pub struct Cache {
    interner: Interner,
    namespaces: HashMap<Arc<str>, NamespaceIndex>,
    nodes: HashMap<Arc<str>, NodeRecord>,
    /// Allocatable CPU per zone, from `nodes` (for topology-mode Auto).
    zone_capacity: Arc<ZoneCapacity>,
    pods_by_node: HashMap<Arc<str>, HashSet<PodKey>>,
    pod_count: usize,
    service_count: usize,
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a pod. Returns the Services it matches now and matched before, or nothing when no
    /// field roster reads changed.
    pub fn upsert_pod(&mut self, pod: PodProjection) -> Affected {
        let record = self.compact_pod(&pod);
        self.upsert_pod_record(record)
    }

    /// The compact record of a pod, its strings shared through the cache's interner.
    pub fn compact_pod(&mut self, pod: &PodProjection) -> Arc<PodRecord> {
        Arc::new(PodRecord::from_projection(pod, &mut self.interner))
    }

    /// How a (re)list holds a pod until the list is complete: as its compact record (a few hundred bytes
    /// instead of the decoded kilobytes), and as the cached record itself when the cache holds the pod at
    /// the same resourceVersion, so a relist builds records only for the pods that changed instead of a
    /// second copy of the cache.
    pub fn hold_pod(&mut self, pod: &PodProjection) -> Arc<PodRecord> {
        let meta = &pod.metadata;
        let cached = self.pod(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        match cached {
            Some(cached) if same_version(&cached.uid, &cached.resource_version, meta) => cached,
            _ => self.compact_pod(pod),
        }
    }

    /// [`Cache::upsert_pod`] for a record made by [`Cache::hold_pod`] or [`Cache::compact_pod`].
    pub fn upsert_pod_record(&mut self, record: Arc<PodRecord>) -> Affected {
        let ns = self.namespaces.entry(record.namespace.clone()).or_default();
        let old = ns.pods.insert(record.name.clone(), record.clone());
        if let Some(old) = &old
            && old.relevant_eq(&record)
        {
            return Affected::unchanged();
        }
        let mut services: BTreeSet<ServiceKey> =
            ns.services_matching(&record.labels).map(|s| s.key()).collect();
        match &old {
            Some(old) if old.labels == record.labels => {}
            Some(old) => {
                services.extend(ns.services_matching(&old.labels).map(|s| s.key()));
                ns.unindex_pod_labels(&old.name, &old.labels);
                ns.index_pod_labels(&record.name, &record.labels);
            }
            None => {
                self.pod_count += 1;
                ns.index_pod_labels(&record.name, &record.labels);
            }
        }
        if old.as_ref().map(|o| &o.node_name) != Some(&record.node_name) {
            self.unindex_pod_node(old.as_deref());
            self.index_pod_node(&record);
        }
        Affected::changed(services)
    }

    /// Removes a pod. Returns the Services it matched.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) -> Affected {
        let Some(ns) = self.namespaces.get_mut(namespace) else {
            return Affected::unchanged();
        };
        let Some(old) = ns.pods.remove(name) else {
            return Affected::unchanged();
        };
        self.pod_count -= 1;
        ns.unindex_pod_labels(&old.name, &old.labels);
        let services = ns.services_matching(&old.labels).map(|s| s.key()).collect();
        self.unindex_pod_node(Some(&old));
        self.prune_namespace(namespace);
        Affected::changed(services)
    }

    /// Replaces all pods after a relist: upserts every listed pod and deletes cached pods not listed.
    pub fn replace_pods(&mut self, pods: Vec<Arc<PodRecord>>) -> Affected {
        let listed: HashSet<PodKey> = pods
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let mut affected = Affected::unchanged();
        for pod in pods {
            affected = affected.merge(self.upsert_pod_record(pod));
        }
        let gone: Vec<PodKey> = self.pod_keys().filter(|key| !listed.contains(key)).collect();
        for (ns, name) in gone {
            affected = affected.merge(self.delete_pod(&ns, &name));
        }
        affected
    }

    /// Replaces all Services after a relist.
    pub fn replace_services(&mut self, services: &[Service], source: SelectorSource) -> Affected {
        let listed: HashSet<(String, String)> =
            services.iter().map(|s| namespaced_name(&s.metadata)).collect();
        let mut affected = Affected::unchanged();
        for svc in services {
            affected = affected.merge(self.upsert_service(svc, source));
        }
        let gone: Vec<ServiceKey> = self
            .services()
            .filter(|k| !listed.contains(&(k.namespace.to_string(), k.name.to_string())))
            .collect();
        for key in gone {
            affected = affected.merge(self.delete_service(&key.namespace, &key.name));
        }
        affected
    }

    /// Replaces all nodes after a relist.
    pub fn replace_nodes(&mut self, nodes: Vec<NodeProjection>) -> Affected {
        let listed: HashSet<String> = nodes
            .iter()
            .map(|n| n.metadata.name.clone().unwrap_or_default())
            .collect();
        let mut services = BTreeSet::new();
        let mut changed = false;
        for node in &nodes {
            changed |= self.put_node(node, &mut services);
        }
        let gone: Vec<Arc<str>> = self
            .node_names()
            .filter(|n| !listed.contains(n.as_ref()))
            .collect();
        for name in gone {
            changed |= self.remove_node(&name, &mut services);
        }
        self.nodes_changed(changed, services)
    }

    /// Adds or replaces a Service. Returns its key when anything roster reads changed.
    pub fn upsert_service(&mut self, svc: &Service, source: SelectorSource) -> Affected {
        let record = Arc::new(ServiceRecord::from_service(svc, source, &mut self.interner));
        let ns = self.namespaces.entry(record.namespace.clone()).or_default();
        if let Some(old) = ns.services.get(&record.name)
            && old.resource_version == record.resource_version
            && old.relevant_eq(&record)
        {
            return Affected::unchanged(); // a relist or resync of an unchanged Service: keep the cached record
        }
        let old = ns.services.insert(record.name.clone(), record.clone());
        if old.is_none() {
            self.service_count += 1;
        }
        if let Some(old) = &old
            && old.relevant_eq(&record)
        {
            return Affected::unchanged();
        }
        if old.as_ref().map(|o| o.active_selector()) != Some(record.active_selector()) {
            ns.unindex_service(&record.name);
            ns.index_service(&record);
        }
        Affected::changed(BTreeSet::from([record.key()]))
    }

    /// Removes a Service. Returns its key if it was cached.
    pub fn delete_service(&mut self, namespace: &str, name: &str) -> Affected {
        let Some(ns) = self.namespaces.get_mut(namespace) else {
            return Affected::unchanged();
        };
        let Some(old) = ns.services.remove(name) else {
            return Affected::unchanged();
        };
        self.service_count -= 1;
        ns.unindex_service(name);
        self.prune_namespace(namespace);
        Affected::changed(BTreeSet::from([old.key()]))
    }

    /// Adds or replaces a node. A new node or a zone change affects the Services selecting its pods; a change
    /// of the allocatable CPU per zone affects the Services asking for hints by it.
    pub fn upsert_node(&mut self, node: NodeProjection) -> Affected {
        let mut services = BTreeSet::new();
        let changed = self.put_node(&node, &mut services);
        self.nodes_changed(changed, services)
    }

    /// Removes a node. Affects the Services selecting its pods, and those asking for hints by CPU per zone
    /// when that changes.
    pub fn delete_node(&mut self, name: &str) -> Affected {
        let mut services = BTreeSet::new();
        let changed = self.remove_node(name, &mut services);
        self.nodes_changed(changed, services)
    }

    /// Stores a node's record; adds to `services` those selecting its pods when its zone is new. Returns
    /// whether anything roster reads changed.
    fn put_node(&mut self, node: &NodeProjection, services: &mut BTreeSet<ServiceKey>) -> bool {
        let name = self
            .interner
            .intern(node.metadata.name.as_deref().unwrap_or_default());
        let record = NodeRecord::from_projection(node, &mut self.interner);
        let old = self.nodes.insert(name.clone(), record.clone());
        if old.as_ref().map(|o| &o.zone) != Some(&record.zone) {
            services.extend(self.services_on_node(&name));
        }
        old.as_ref() != Some(&record)
    }

    fn remove_node(&mut self, name: &str, services: &mut BTreeSet<ServiceKey>) -> bool {
        if self.nodes.remove(name).is_none() {
            return false;
        }
        services.extend(self.services_on_node(name));
        true
    }

    /// After node changes: the CPU per zone is recomputed, and when it changed every Service asking for hints
    /// by it is affected too.
    fn nodes_changed(&mut self, changed: bool, mut services: BTreeSet<ServiceKey>) -> Affected {
        if !changed {
            return Affected::unchanged();
        }
        let capacity = ZoneCapacity::of_nodes(self.nodes.values());
        if capacity != *self.zone_capacity {
            self.zone_capacity = Arc::new(capacity);
            services.extend(self.services_with_auto_hints());
        }
        Affected::changed(services)
    }

    fn services_with_auto_hints(&self) -> impl Iterator<Item = ServiceKey> + '_ {
        let records = self.namespaces.values().flat_map(|ns| ns.services.values());
        records.filter(|s| s.topology_auto()).map(|s| s.key())
    }

    /// Allocatable CPU per zone of the Nodes that count for topology-mode Auto.
    pub fn zone_capacity(&self) -> Arc<ZoneCapacity> {
        self.zone_capacity.clone()
    }

    /// The pods selected by a Service (same namespace, selector matches), sorted by name. Examines only the
    /// posting list of the selector's rarest equality pair.
    pub fn pods_for_service(&self, key: &ServiceKey) -> Vec<Arc<PodRecord>> {
        let Some(ns) = self.namespaces.get(&key.namespace) else {
            return Vec::new();
        };
        let Some(selector) = ns.services.get(&key.name).and_then(|s| s.active_selector()) else {
            return Vec::new();
        };
        ns.pods_matching(selector)
    }

    /// How many pods [`Cache::pods_for_service`] examines for this Service.
    pub fn candidate_pods_for_service(&self, key: &ServiceKey) -> usize {
        let Some(ns) = self.namespaces.get(&key.namespace) else {
            return 0;
        };
        let selector = ns.services.get(&key.name).and_then(|s| s.active_selector());
        selector.map_or(0, |s| ns.candidate_pods(s))
    }

    pub fn service(&self, key: &ServiceKey) -> Option<Arc<ServiceRecord>> {
        self.namespaces
            .get(&key.namespace)?
            .services
            .get(&key.name)
            .cloned()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<PodRecord>> {
        self.namespaces.get(namespace)?.pods.get(name).cloned()
    }

    /// The zone label of a node, `None` if the node is missing or has no zone.
    pub fn node_zone(&self, name: &str) -> Option<Arc<str>> {
        self.nodes.get(name)?.zone.clone()
    }

    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.get(name)
    }

    pub fn node_exists(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    /// What the EndpointSlice desired state needs to know about a pod's node.
    pub fn node_lookup(&self, name: &str) -> NodeLookup {
        match self.nodes.get(name) {
            Some(node) => NodeLookup::Found {
                zone: node.zone.clone(),
            },
            None => NodeLookup::Missing,
        }
    }

    /// All cached Service keys (unordered).
    pub fn services(&self) -> impl Iterator<Item = ServiceKey> + '_ {
        self.namespaces.iter().flat_map(|(ns, index)| {
            index.services.keys().map(|name| ServiceKey {
                namespace: ns.clone(),
                name: name.clone(),
            })
        })
    }

    /// All cached Service keys, sorted.
    pub fn service_keys(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.services().collect();
        keys.sort();
        keys
    }

    /// All cached pods as `(namespace, name)` (unordered).
    pub fn pod_keys(&self) -> impl Iterator<Item = (Arc<str>, Arc<str>)> + '_ {
        self.namespaces
            .iter()
            .flat_map(|(ns, index)| index.pods.keys().map(|name| (ns.clone(), name.clone())))
    }

    /// All cached node names (unordered).
    pub fn node_names(&self) -> impl Iterator<Item = Arc<str>> + '_ {
        self.nodes.keys().cloned()
    }

    pub fn len_pods(&self) -> usize {
        self.pod_count
    }

    pub fn len_services(&self) -> usize {
        self.service_count
    }

    pub fn len_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Distinct interned strings and port lists.
    pub fn len_interned(&self) -> usize {
        self.interner.len()
    }

    fn services_on_node(&self, node: &str) -> BTreeSet<ServiceKey> {
        let Some(pods) = self.pods_by_node.get(node) else {
            return BTreeSet::new();
        };
        let mut services = BTreeSet::new();
        for (namespace, name) in pods {
            let Some(ns) = self.namespaces.get(namespace) else {
                continue;
            };
            let Some(pod) = ns.pods.get(name) else { continue };
            services.extend(ns.services_matching(&pod.labels).map(|s| s.key()));
        }
        services
    }

    fn index_pod_node(&mut self, pod: &PodRecord) {
        if let Some(node) = &pod.node_name {
            let pods = self.pods_by_node.entry(node.clone()).or_default();
            pods.insert((pod.namespace.clone(), pod.name.clone()));
        }
    }

    fn unindex_pod_node(&mut self, pod: Option<&PodRecord>) {
        let Some(pod) = pod else { return };
        let Some(node) = &pod.node_name else { return };
        if let Some(pods) = self.pods_by_node.get_mut(node) {
            pods.remove(&(pod.namespace.clone(), pod.name.clone()));
            if pods.is_empty() {
                self.pods_by_node.remove(node);
            }
        }
    }

    fn prune_namespace(&mut self, namespace: &str) {
        if self
            .namespaces
            .get(namespace)
            .is_some_and(NamespaceIndex::is_empty)
        {
            self.namespaces.remove(namespace);
        }
    }
}
