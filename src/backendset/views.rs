//! The current view of every BackendSet, as its worker publishes it. A view that publishes something else
//! queues the Service it publishes to; every new view queues the BackendSet's status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::view::BackendView;
use crate::cache::BackendSetKey;
use crate::controller::queue::{Urgency, WorkKey, WorkQueue};
use crate::metrics::Metrics;

pub struct Views {
    views: Mutex<HashMap<BackendSetKey, Arc<BackendView>>>,
    queue: Arc<WorkQueue<WorkKey>>,
    metrics: Metrics,
}

impl Views {
    pub fn new(queue: Arc<WorkQueue<WorkKey>>, metrics: Metrics) -> Views {
        Views {
            views: Mutex::new(HashMap::new()),
            queue,
            metrics,
        }
    }

    pub fn get(&self, key: &BackendSetKey) -> Option<Arc<BackendView>> {
        self.lock().get(key).cloned()
    }

    /// Sets the view of `key` without queueing anything (the caller queues what it affects).
    pub fn set(&self, key: &BackendSetKey, view: Arc<BackendView>) {
        let mut views = self.lock();
        views.insert(key.clone(), view);
        self.update_gauges(&views);
    }

    /// A worker's new view: queues the Services whose publication changed, and the BackendSet's status.
    pub fn publish(&self, key: &BackendSetKey, view: Arc<BackendView>) {
        let old = {
            let mut views = self.lock();
            let old = views.insert(key.clone(), view.clone());
            self.update_gauges(&views);
            old
        };
        if let Some(old) = &old {
            log_transitions(key, old, &view);
        }
        if old.as_ref().is_none_or(|old| !old.publishes_same(&view)) {
            let urgency = match &old {
                Some(old) if loses_ready_address(old, &view) => Urgency::Urgent,
                _ => Urgency::Normal,
            };
            let services = old.iter().chain([&view]).map(|v| v.backendset.service_key());
            for service in services {
                self.add(WorkKey::Service(service), urgency);
            }
        }
        self.add(WorkKey::BackendSet(key.clone()), Urgency::Normal);
    }

    fn add(&self, key: WorkKey, urgency: Urgency) {
        self.metrics.queue.adds.with_label_values(&[key.kind()]).inc();
        self.queue.add_after(key, std::time::Duration::ZERO, urgency);
    }

    pub fn remove(&self, key: &BackendSetKey) -> Option<Arc<BackendView>> {
        let mut views = self.lock();
        let old = views.remove(key);
        self.update_gauges(&views);
        old
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BackendSetKey, Arc<BackendView>>> {
        self.views.lock().expect("views lock")
    }

    fn update_gauges(&self, views: &HashMap<BackendSetKey, Arc<BackendView>>) {
        let (ready, total) = views.values().fold((0, 0), |(r, t), view| {
            (r + view.ready_count(), t + view.addresses.len())
        });
        let gauge = &self.metrics.backendset.backends;
        gauge.with_label_values(&["true"]).set(ready as i64);
        gauge.with_label_values(&["false"]).set((total - ready) as i64);
    }
}

/// Whether an address that was ready is not any more (failed its probes, or left the BackendSet).
fn loses_ready_address(old: &BackendView, new: &BackendView) -> bool {
    let ready_now = |ip| new.addresses.iter().any(|a| a.ip == ip && a.ready);
    old.addresses.iter().any(|a| a.ready && !ready_now(a.ip))
}

/// One info line per backend address whose readiness changed.
fn log_transitions(key: &BackendSetKey, old: &BackendView, new: &BackendView) {
    for address in &new.addresses {
        let before = old.addresses.iter().find(|a| a.ip == address.ip).map(|a| a.ready);
        if before.is_some_and(|was| was != address.ready) {
            let why = address.message.as_deref().unwrap_or("probe succeeded");
            tracing::info!(backendset = %key, address = %address.ip, ready = address.ready, why,
                "backend readiness changed");
        }
    }
}
