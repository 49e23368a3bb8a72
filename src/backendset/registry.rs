//! What the Service reconcile reads: the view of the BackendSet bound to each Service.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::view::BackendView;
use crate::cache::ServiceKey;

/// Service → the view of its bound BackendSet. Updated by [`super::Backends`]; read by reconcile.
pub struct BackendRegistry {
    views: RwLock<HashMap<ServiceKey, Arc<BackendView>>>,
    synced: watch::Sender<bool>,
}

impl Default for BackendRegistry {
    fn default() -> Self {
        BackendRegistry {
            views: RwLock::new(HashMap::new()),
            synced: watch::channel(false).0,
        }
    }
}

impl BackendRegistry {
    pub fn new() -> BackendRegistry {
        BackendRegistry::default()
    }

    /// The BackendSet bound to this Service, with each address's current readiness; `None` when no
    /// BackendSet is bound to it.
    pub fn view(&self, key: &ServiceKey) -> Option<Arc<BackendView>> {
        self.views.read().expect("registry lock").get(key).cloned()
    }

    /// Every Service a BackendSet is bound to, sorted.
    pub fn bound_services(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self
            .views
            .read()
            .expect("registry lock")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// Whether the BackendSets and Services were listed (and every BackendSet has a view): before that,
    /// a Service without a view may still get one, and its Endpoints must not be cleaned up.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves once [`BackendRegistry::is_synced`].
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|synced| *synced).await;
    }

    pub(crate) fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Sets (or with `None` removes) the view of a Service. Returns whether what is published changed.
    pub(crate) fn set(&self, key: &ServiceKey, view: Option<Arc<BackendView>>) -> bool {
        let mut views = self.views.write().expect("registry lock");
        let old = match view {
            Some(view) => views
                .insert(key.clone(), view.clone())
                .map(|old| (old, Some(view))),
            None => views.remove(key).map(|old| (old, None)),
        };
        match old {
            Some((old, Some(new))) => !old.publishes_same(&new),
            Some((_, None)) => true,
            None => views.contains_key(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backendset::view::BackendSetRef;

    fn view(uid: &str) -> Arc<BackendView> {
        Arc::new(BackendView {
            backendset: BackendSetRef {
                name: "db".into(),
                namespace: "shop".into(),
                uid: uid.into(),
            },
            ..BackendView::default()
        })
    }

    #[test]
    fn set_reports_publication_changes() {
        let registry = BackendRegistry::new();
        let key = ServiceKey::new("shop", "db");
        assert!(registry.set(&key, Some(view("a"))), "added");
        assert!(!registry.set(&key, Some(view("a"))), "same publication");
        assert!(registry.set(&key, Some(view("b"))), "another BackendSet");
        assert_eq!(registry.bound_services(), vec![key.clone()]);
        assert_eq!(registry.view(&key).unwrap().backendset.uid, "b");
        assert!(registry.set(&key, None), "removed");
        assert!(!registry.set(&key, None), "already gone");
        assert!(registry.view(&key).is_none());
        assert!(registry.bound_services().is_empty());
    }

    #[tokio::test]
    async fn synced_once_marked() {
        let registry = Arc::new(BackendRegistry::new());
        assert!(!registry.is_synced());
        let waiter = tokio::spawn({
            let registry = registry.clone();
            async move { registry.wait_synced().await }
        });
        registry.mark_synced();
        waiter.await.unwrap();
        assert!(registry.is_synced());
    }
}
