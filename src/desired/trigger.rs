//! The `endpoints.kubernetes.io/last-change-trigger-time` annotation.
//!
//! kube-proxy measures network programming latency from this time: the earliest Pod readiness transition or
//! Service creation that changed since the Service was last synced.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;

use crate::cache::{PodRecord, ServiceKey, ServiceRecord};

#[derive(Clone, Debug, Default)]
struct ServiceTriggers {
    service: Option<Timestamp>,
    /// Each pod's last `Ready` transition, sorted by pod name (a vector is half the size of a map here).
    pods: Box<[(Arc<str>, Timestamp)]>,
}

impl ServiceTriggers {
    fn pod(&self, name: &str) -> Option<&Timestamp> {
        let found = self.pods.binary_search_by(|(pod, _)| pod.as_ref().cmp(name));
        found.ok().map(|i| &self.pods[i].1)
    }
}

/// Remembers, per Service, the trigger times seen at the last sync. Pure state: no clock, no I/O. The
/// controller calls [`TriggerTimeTracker::compute`] on every sync of a Service (writes or not) and
/// [`TriggerTimeTracker::forget`] when the Service is gone.
#[derive(Clone, Debug, Default)]
pub struct TriggerTimeTracker {
    services: HashMap<ServiceKey, ServiceTriggers>,
}

impl TriggerTimeTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The trigger time for this sync: the Service's creation time the first time the Service is seen,
    /// afterwards the earliest pod `Ready` transition (or Service creation) newer than what the previous sync
    /// saw, or `None` when nothing changed.
    pub fn compute(&mut self, svc: &ServiceRecord, pods: &[Arc<PodRecord>]) -> Option<Timestamp> {
        let key = svc.key();
        let known = self.services.contains_key(&key);
        let state = self.services.entry(key).or_default();
        let newer = |now: Timestamp, last: Option<&Timestamp>| last.is_none_or(|last| now > *last);

        let mut earliest: Option<Timestamp> = None;
        let mut pod_triggers = Vec::with_capacity(pods.len());
        for pod in pods {
            let Some(at) = pod.ready_transition else { continue };
            if newer(at, state.pod(&pod.name)) {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
            pod_triggers.push((pod.name.clone(), at));
        }
        pod_triggers.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        if let Some(created) = svc.creation_timestamp
            && newer(created, state.service.as_ref())
        {
            earliest = Some(earliest.map_or(created, |e| e.min(created)));
        }
        state.pods = pod_triggers.into_boxed_slice();
        state.service = svc.creation_timestamp;
        if known { earliest } else { svc.creation_timestamp }
    }

    pub fn forget(&mut self, key: &ServiceKey) {
        self.services.remove(key);
    }

    /// Number of Services tracked.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// Formats a trigger time as the annotation value: RFC 3339 in UTC, fractional seconds without trailing zeros.
pub fn format_trigger_time(at: Timestamp) -> String {
    at.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{CREATED, PodFixture, ServiceFixture, ts};

    #[test]
    fn trigger_time_is_creation_on_first_sight_then_earliest_change() {
        let svc = ServiceFixture::new("web").build();
        let mut tracker = TriggerTimeTracker::new();
        let a = PodFixture::new("a").ready_at("2024-02-01T00:00:00Z").build();
        let b = PodFixture::new("b").ready_at("2024-02-02T00:00:00Z").build();
        assert_eq!(tracker.compute(&svc, &[a.clone(), b.clone()]), Some(ts(CREATED)));
        assert_eq!(
            tracker.compute(&svc, &[a.clone(), b.clone()]),
            None,
            "nothing changed"
        );

        let b2 = PodFixture::new("b").ready_at("2024-03-02T00:00:00Z").build();
        let c = PodFixture::new("c").ready_at("2024-03-01T00:00:00Z").build();
        assert_eq!(
            tracker.compute(&svc, &[a.clone(), b2.clone(), c.clone()]),
            Some(ts("2024-03-01T00:00:00Z"))
        );
        assert_eq!(
            tracker.compute(&svc, &[a.clone(), b2.clone()]),
            None,
            "pod removal has no trigger time"
        );

        tracker.forget(&svc.key());
        assert!(tracker.is_empty());
        assert_eq!(tracker.compute(&svc, &[a]), Some(ts(CREATED)));
    }

    #[test]
    fn trigger_time_counts_service_recreation() {
        let mut tracker = TriggerTimeTracker::new();
        let pods = [PodFixture::new("a").build()];
        tracker.compute(&ServiceFixture::new("web").build(), &pods);
        let mut recreated = ServiceFixture::new("web").uid("new").build();
        recreated.creation_timestamp = Some(ts("2024-05-01T00:00:00Z"));
        assert_eq!(
            tracker.compute(&recreated, &pods),
            Some(ts("2024-05-01T00:00:00Z"))
        );
    }

    #[test]
    fn trigger_time_formats_like_rfc3339_nano() {
        assert_eq!(
            format_trigger_time(ts("2024-01-01T00:00:00Z")),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            format_trigger_time(ts("2024-01-01T00:00:00.120Z")),
            "2024-01-01T00:00:00.12Z"
        );
        assert_eq!(
            format_trigger_time(ts("2024-01-01T09:00:00.000000001+09:00")),
            "2024-01-01T00:00:00.000000001Z"
        );
    }
}
