//! Compact, interned label sets.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::interner::{Interner, LabelPairs};

/// A label set: interned `(key, value)` pairs sorted by key, looked up by binary search.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(LabelPairs);

impl Labels {
    /// Interns a Kubernetes label map (already sorted by key, as a `BTreeMap` is), its strings and the set.
    pub fn from_map(map: &BTreeMap<String, String>, interner: &mut Interner) -> Self {
        let pairs = map
            .iter()
            .map(|(k, v)| (interner.intern(k), interner.intern(v)))
            .collect();
        Labels(interner.intern_labels(pairs))
    }

    /// Builds a label set from pairs in any order; a later duplicate key wins.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
        interner: &mut Interner,
    ) -> Self {
        let map: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        Self::from_map(&map, interner)
    }

    pub fn get(&self, key: &str) -> Option<&Arc<str>> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Arc<str>, Arc<str>)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels as a Kubernetes label map, for objects roster writes.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_get_finds_values_by_key() {
        let mut interner = Interner::new();
        let labels = Labels::from_pairs([("tier", "web"), ("app", "shop")], &mut interner);
        assert_eq!(labels.get("app").map(|v| v.as_ref()), Some("shop"));
        assert_eq!(labels.get("tier").map(|v| v.as_ref()), Some("web"));
        assert_eq!(labels.get("zone"), None);
        assert_eq!(labels.to_map().keys().collect::<Vec<_>>(), ["app", "tier"]);
    }
}
