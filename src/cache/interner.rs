//! String interning for the compact caches.
//!
//! Namespaces, label keys and values, node names and container port lists repeat across thousands of pods;
//! the cache keeps one `Arc` per distinct value.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use super::pod::NamedPort;

/// Entries below this count are never collected: collecting a small table costs more than it saves.
const MIN_COLLECT_LEN: usize = 1024;

/// A pod's labels: `(key, value)` pairs sorted by key.
pub type LabelPairs = Arc<[(Arc<str>, Arc<str>)]>;

#[derive(Debug, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    port_lists: HashSet<Arc<[NamedPort]>>,
    label_sets: HashSet<LabelPairs>,
    len_after_collect: usize,
}

/// The shared copy of `value` in `set`, made from `value` when there is none yet.
fn share<T: ?Sized + Eq + Hash, V: AsRef<T> + Into<Arc<T>>>(set: &mut HashSet<Arc<T>>, value: V) -> Arc<T> {
    if let Some(shared) = set.get(value.as_ref()) {
        return shared.clone();
    }
    let shared: Arc<T> = value.into();
    set.insert(shared.clone());
    shared
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn intern(&mut self, value: &str) -> Arc<str> {
        let shared = share(&mut self.strings, value);
        self.maybe_collect();
        shared
    }

    pub fn intern_ports(&mut self, ports: Vec<NamedPort>) -> Arc<[NamedPort]> {
        let shared = share(&mut self.port_lists, ports);
        self.maybe_collect();
        shared
    }

    /// One shared copy per distinct label set: the pods of one workload carry the same labels.
    pub fn intern_labels(&mut self, pairs: Vec<(Arc<str>, Arc<str>)>) -> LabelPairs {
        let shared = share(&mut self.label_sets, pairs);
        self.maybe_collect();
        shared
    }

    pub fn len(&self) -> usize {
        self.strings.len() + self.port_lists.len() + self.label_sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops values no record holds any more.
    pub fn collect(&mut self) {
        self.label_sets.retain(|l| Arc::strong_count(l) > 1);
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.port_lists.retain(|p| Arc::strong_count(p) > 1);
        self.len_after_collect = self.len();
    }

    fn maybe_collect(&mut self) {
        let len = self.len();
        if len >= MIN_COLLECT_LEN && len >= 2 * self.len_after_collect {
            self.collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_strings_share_one_allocation() {
        let mut interner = Interner::new();
        let a = interner.intern("app");
        let b = interner.intern("app");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(interner.len(), 1);
    }

    #[test]
    fn collect_drops_unreferenced_values() {
        let mut interner = Interner::new();
        let kept = interner.intern("kept");
        drop(interner.intern("dropped"));
        interner.collect();
        assert_eq!(interner.len(), 1);
        assert!(Arc::ptr_eq(&kept, &interner.intern("kept")));
    }

    #[test]
    fn equal_label_sets_share_one_allocation_until_unreferenced() {
        let mut interner = Interner::new();
        let pair = (interner.intern("app"), interner.intern("web"));
        let a = interner.intern_labels(vec![pair.clone()]);
        let b = interner.intern_labels(vec![pair.clone()]);
        assert!(Arc::ptr_eq(&a, &b));
        let other = interner.intern_labels(vec![pair.clone(), pair]);
        assert!(!Arc::ptr_eq(&a, &other));
        drop((a, b, other));
        interner.collect();
        assert_eq!(
            interner.len(),
            0,
            "the label sets, then their strings, are collected"
        );
    }
}
