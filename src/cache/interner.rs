//! String interning for the compact caches.
//!
//! Namespaces, label keys and values, node names and container port lists repeat across thousands of pods;
//! the cache keeps one `Arc` per distinct value.

use std::collections::HashSet;
use std::sync::Arc;

use super::pod::NamedPort;

/// Entries below this count are never collected: collecting a small table costs more than it saves.
const MIN_COLLECT_LEN: usize = 1024;

/// Deduplicates strings and port lists. Values nobody else references any more are dropped by
/// [`Interner::collect`], which runs by itself whenever the table has doubled since the last collection.
#[derive(Debug, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    port_lists: HashSet<Arc<[NamedPort]>>,
    len_after_collect: usize,
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the shared copy of `value`, adding it on first use.
    pub fn intern(&mut self, value: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(value) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(value);
        self.strings.insert(shared.clone());
        self.maybe_collect();
        shared
    }

    /// Returns the shared copy of a pod's named port list.
    pub fn intern_ports(&mut self, ports: Vec<NamedPort>) -> Arc<[NamedPort]> {
        if let Some(shared) = self.port_lists.get(ports.as_slice()) {
            return shared.clone();
        }
        let shared: Arc<[NamedPort]> = Arc::from(ports);
        self.port_lists.insert(shared.clone());
        self.maybe_collect();
        shared
    }

    /// Number of distinct values held (strings and port lists).
    pub fn len(&self) -> usize {
        self.strings.len() + self.port_lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every value that only the interner still references.
    pub fn collect(&mut self) {
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
}
