//! The readiness hold-down around the pure decision ([`crate::desired::holddown`]): the controller keeps the
//! last readiness transitions of each pod a Service with `roster.dev/ready-hold-down` selects (at most
//! [`FLAP_TRANSITIONS`] per pod, forgotten with the pod), publishes held pods as not ready, queues the
//! Service again for when the first hold ends, and says so once per hold with an Event on the pod.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;

use super::Context;
use super::queue::{Urgency, WorkKey};
use super::reconcile::service_reference;
use crate::cache::{Affected, Cache, ObjectKey, PodRecord, ServiceKey, ServiceRecord};
use crate::desired::holddown::{FLAP_TRANSITIONS, FLAP_WINDOW, Transition, held_until, withheld};
use crate::desired::pod_reference;

#[derive(Debug, Default)]
struct PodHistory {
    /// Oldest first.
    transitions: VecDeque<Transition>,
    /// The Ready transition whose hold was announced.
    announced: Option<Instant>,
}

impl PodHistory {
    /// Keeps the last [`FLAP_TRANSITIONS`]: the decision looks at no more.
    fn push(&mut self, transition: Transition) {
        if self.transitions.len() == FLAP_TRANSITIONS {
            self.transitions.pop_front();
        }
        self.transitions.push_back(transition);
    }
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<ObjectKey, PodHistory>,
    /// Pods held per Service at its last reconcile.
    held: HashMap<ServiceKey, usize>,
}

/// The readiness transitions of the pods under a hold-down, and the holds in force.
#[derive(Debug, Default)]
pub struct ReadyHistory {
    state: Mutex<State>,
}

/// A pod held out of a Service's ready endpoints.
pub struct Held {
    pod: Arc<PodRecord>,
    until: Instant,
    /// Not announced yet.
    news: bool,
}

/// A Service's pods as published under its hold-down.
pub struct HoldDown {
    pub pods: Vec<Arc<PodRecord>>,
    held: Vec<Held>,
    hold: Duration,
    /// The annotation does not parse: no hold-down, and a Warning.
    invalid: Option<String>,
}

impl ReadyHistory {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("ready history lock")
    }

    /// A pod whose readiness changed; `follow` when a Service selecting it holds down (a pod followed
    /// already is always recorded).
    fn record(&self, key: &ObjectKey, ready: bool, at: Instant, follow: bool) {
        let mut state = self.state();
        let history = match state.pods.get_mut(key) {
            Some(history) => history,
            None if follow => state.pods.entry(key.clone()).or_default(),
            None => return,
        };
        history.push(Transition { at, ready });
    }

    pub fn forget_pod(&self, key: &ObjectKey) {
        self.state().pods.remove(key);
    }

    /// Records how many pods a Service holds; returns how many all Services hold.
    fn set_held(&self, key: &ServiceKey, held: usize) -> usize {
        let mut state = self.state();
        match held {
            0 => state.held.remove(key),
            n => state.held.insert(key.clone(), n),
        };
        state.held.values().sum()
    }

    /// Decides each pod of a Service with hold-down `hold` at `now`.
    fn decide(&self, pods: &[Arc<PodRecord>], hold: Duration, now: Instant) -> Vec<Held> {
        let mut state = self.state();
        let mut held = Vec::new();
        for pod in pods {
            let key = ObjectKey {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
            };
            let Some(history) = state.pods.get_mut(&key) else {
                continue;
            };
            let transitions = history.transitions.make_contiguous();
            let Some(until) = held_until(pod.ready, transitions, hold, now) else {
                continue;
            };
            let since = transitions.last().map(|t| t.at);
            let news = history.announced != since;
            history.announced = since;
            held.push(Held {
                pod: pod.clone(),
                until,
                news,
            });
        }
        held
    }
}

/// A Service whose pods roster no longer selects holds none.
pub fn forget_service(ctx: &Context, key: &ServiceKey) {
    set_held(ctx, key, 0);
}

fn set_held(ctx: &Context, key: &ServiceKey, held: usize) {
    let all = ctx.ready_history.set_held(key, held);
    ctx.metrics.ready_held_pods.set(all as i64);
}

/// Records a readiness change the pod watch just delivered: `before` is the pod as cached before the event,
/// `affected` the Services it selects.
pub fn observe(
    ctx: &Context,
    cache: &Cache,
    key: &ObjectKey,
    before: Option<&PodRecord>,
    affected: &Affected,
) {
    let (Some(before), Some(now)) = (before, cache.pod(&key.namespace, &key.name)) else {
        return;
    };
    if before.ready == now.ready {
        return;
    }
    let follow = affected
        .services
        .iter()
        .any(|s| holds_down(cache.service(s).as_deref()));
    ctx.ready_history.record(key, now.ready, Instant::now(), follow);
}

fn holds_down(svc: Option<&ServiceRecord>) -> bool {
    svc.is_some_and(|s| matches!(s.ready_hold_down, Ok(Some(_))))
}

/// After a relist: pods gone are forgotten, and a followed pod whose readiness changed while the watch was
/// down gets that transition, as seen now.
pub fn relisted(ctx: &Context, cache: &Cache) {
    let at = Instant::now();
    let mut state = ctx.ready_history.state();
    state.pods.retain(|key, history| {
        let Some(pod) = cache.pod(&key.namespace, &key.name) else {
            return false;
        };
        if history.transitions.back().is_some_and(|t| t.ready != pod.ready) {
            history.push(Transition { at, ready: pod.ready });
        }
        true
    });
}

/// `svc`'s pods as published at `now`: held ones not ready. Queues the Service again for when the first
/// hold ends and updates the held-pods gauge.
pub fn apply(ctx: &Context, svc: &ServiceRecord, pods: Vec<Arc<PodRecord>>, now: Instant) -> HoldDown {
    let key = svc.key();
    let (hold, invalid) = match &svc.ready_hold_down {
        Ok(Some(hold)) => (*hold, None),
        Ok(None) => (Duration::ZERO, None),
        Err(message) => (Duration::ZERO, Some(message.clone())),
    };
    let held = match hold.is_zero() {
        true => Vec::new(),
        false => ctx.ready_history.decide(&pods, hold, now),
    };
    set_held(ctx, &key, held.len());
    if let Some(first) = held.iter().map(|h| h.until).min() {
        let until = first.saturating_duration_since(now);
        ctx.enqueue([WorkKey::Service(key)], until, Urgency::Normal);
    }
    let pods = pods
        .into_iter()
        .map(|pod| match held.iter().any(|h| Arc::ptr_eq(&h.pod, &pod)) {
            true => withheld(&pod),
            false => pod,
        })
        .collect();
    HoldDown {
        pods,
        held,
        hold,
        invalid,
    }
}

/// The Events of a hold-down: a Warning on each pod newly held, and on the Service when its annotation does
/// not parse.
pub async fn announce(ctx: &Context, svc: &ServiceRecord, hold_down: &HoldDown) {
    if let Some(message) = &hold_down.invalid {
        let note = format!("{message}; no hold-down");
        let regarding = service_reference(svc);
        ctx.writer
            .warn(&regarding, "InvalidReadyHoldDown", "Reconcile", note)
            .await;
    }
    for held in hold_down.held.iter().filter(|h| h.news) {
        let note = format!(
            "readiness flapped ({FLAP_TRANSITIONS} changes within {}s): kept out of the ready endpoints of \
             Service {} until it has been Ready for {}s",
            FLAP_WINDOW.as_secs(),
            svc.key(),
            hold_down.hold.as_secs_f64(),
        );
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            ..pod_reference(&held.pod)
        };
        ctx.writer
            .warn(&regarding, "ReadyHeldDown", "Reconcile", note)
            .await;
    }
}
