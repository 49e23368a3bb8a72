//! Per-namespace records and the label index between pods and the Services selecting them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::labels::Labels;
use super::pod::PodRecord;
use super::selector::Selector;
use super::service::ServiceRecord;

/// Names of the objects carrying one label value.
type Names = HashSet<Arc<str>>;

/// Names indexed by one label `(key, value)` pair: `key → value → names`.
#[derive(Debug, Default)]
struct PairIndex(HashMap<Arc<str>, HashMap<Arc<str>, Names>>);

impl PairIndex {
    fn get(&self, key: &str, value: &str) -> Option<&HashSet<Arc<str>>> {
        self.0.get(key)?.get(value)
    }

    fn len_of(&self, key: &str, value: &str) -> usize {
        self.get(key, value).map_or(0, HashSet::len)
    }

    fn insert(&mut self, key: &Arc<str>, value: &Arc<str>, name: &Arc<str>) {
        let values = self.0.entry(key.clone()).or_default();
        values.entry(value.clone()).or_default().insert(name.clone());
    }

    fn remove(&mut self, key: &str, value: &str, name: &str) {
        let Some(values) = self.0.get_mut(key) else { return };
        if let Some(names) = values.get_mut(value) {
            names.remove(name);
            if names.is_empty() {
                values.remove(value);
            }
        }
        if values.is_empty() {
            self.0.remove(key);
        }
    }
}

/// Where a Service sits in the index: under one of its equality pairs, or in the fallback list of Services
/// whose selectors have only set-based requirements.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Anchor {
    Pair(Arc<str>, Arc<str>),
    SetBased,
}

/// The pods and Services of one namespace and the label index between them.
///
/// Pods are indexed under every label pair they carry; a Service under a single equality pair of its selector
/// (the one with the fewest pods when the Service was indexed). A pod's candidate Services are then those
/// anchored at one of its pairs plus the set-based fallback list; a Service's candidate pods are the posting
/// list of its rarest equality pair.
#[derive(Debug, Default)]
pub(super) struct NamespaceIndex {
    pub pods: HashMap<Arc<str>, Arc<PodRecord>>,
    pub services: HashMap<Arc<str>, Arc<ServiceRecord>>,
    pods_by_pair: PairIndex,
    services_by_pair: PairIndex,
    set_based_services: HashSet<Arc<str>>,
    anchors: HashMap<Arc<str>, Anchor>,
}

impl NamespaceIndex {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.services.is_empty()
    }

    pub fn index_pod_labels(&mut self, name: &Arc<str>, labels: &Labels) {
        for (key, value) in labels.iter() {
            self.pods_by_pair.insert(key, value, name);
        }
    }

    pub fn unindex_pod_labels(&mut self, name: &str, labels: &Labels) {
        for (key, value) in labels.iter() {
            self.pods_by_pair.remove(key, value, name);
        }
    }

    /// Indexes a Service by its active selector; Services without one are not indexed.
    pub fn index_service(&mut self, svc: &ServiceRecord) {
        let Some(selector) = svc.active_selector() else {
            return;
        };
        let rarest = selector
            .equality_pairs()
            .min_by_key(|(k, v)| self.pods_by_pair.len_of(k, v));
        let anchor = match rarest {
            Some((key, value)) => {
                self.services_by_pair.insert(key, value, &svc.name);
                Anchor::Pair(key.clone(), value.clone())
            }
            None => {
                self.set_based_services.insert(svc.name.clone());
                Anchor::SetBased
            }
        };
        self.anchors.insert(svc.name.clone(), anchor);
    }

    pub fn unindex_service(&mut self, name: &str) {
        match self.anchors.remove(name) {
            Some(Anchor::Pair(key, value)) => self.services_by_pair.remove(&key, &value, name),
            Some(Anchor::SetBased) => {
                self.set_based_services.remove(name);
            }
            None => {}
        }
    }

    /// Services whose selector matches `labels`, found through the index.
    pub fn services_matching<'a>(
        &'a self,
        labels: &'a Labels,
    ) -> impl Iterator<Item = &'a Arc<ServiceRecord>> {
        let anchored = labels
            .iter()
            .filter_map(|(k, v)| self.services_by_pair.get(k, v))
            .flatten();
        anchored
            .chain(self.set_based_services.iter())
            .filter_map(|name| self.services.get(name))
            .filter(|svc| svc.active_selector().is_some_and(|s| s.matches(labels)))
    }

    /// Pods matching `selector`: the posting list of its rarest equality pair, filtered; a full scan of the
    /// namespace only for set-based selectors.
    pub fn pods_matching(&self, selector: &Selector) -> Vec<Arc<PodRecord>> {
        let rarest = selector
            .equality_pairs()
            .min_by_key(|(k, v)| self.pods_by_pair.len_of(k, v));
        let candidates: Box<dyn Iterator<Item = &Arc<PodRecord>>> = match rarest {
            Some((key, value)) => Box::new(
                self.pods_by_pair
                    .get(key, value)
                    .into_iter()
                    .flatten()
                    .filter_map(|name| self.pods.get(name)),
            ),
            None => Box::new(self.pods.values()),
        };
        let mut pods: Vec<Arc<PodRecord>> = candidates
            .filter(|p| selector.matches(&p.labels))
            .cloned()
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        pods
    }

    /// How many pods the index would examine for `selector` (for tests and debugging).
    pub fn candidate_pods(&self, selector: &Selector) -> usize {
        match selector
            .equality_pairs()
            .map(|(k, v)| self.pods_by_pair.len_of(k, v))
            .min()
        {
            Some(n) => n,
            None => self.pods.len(),
        }
    }
}
