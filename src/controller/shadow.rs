//! Shadow mode: roster computes what `--services=all` would publish for every Service and compares it with
//! what is live (the built-in controllers' Endpoints and EndpointSlices), writing nothing. A difference
//! counts once it has lasted `--shadow-settle` (one side may just not have caught up); a Service that starts
//! to differ gets one log line with the differences, and one when it matches again. Differences that are
//! roster's documented divergences from upstream are counted apart, by README row.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::Context;
use super::queue::{Urgency, WorkKey};
use crate::cache::ServiceKey;
use crate::desired::compare::{Difference, DifferenceKind, compare_endpoints, compare_slices};

/// How a Service compares.
enum State {
    Same,
    /// Differs since `since`; `reported` once it has lasted the settle window.
    Differs {
        since: Instant,
        reported: bool,
        differences: Vec<Difference>,
    },
}

/// Shadow mode's record of every Service compared.
#[derive(Default)]
pub struct Shadow {
    services: Mutex<HashMap<ServiceKey, State>>,
}

/// One Service's two sides: what roster would write, and what is live.
pub struct Sides {
    pub desired_endpoints: Option<Endpoints>,
    pub live_endpoints: Option<Endpoints>,
    pub desired_slices: Vec<EndpointSlice>,
    pub live_slices: Vec<EndpointSlice>,
    pub service_has_ports: bool,
    /// Objects upstream leaves behind where roster publishes none are this README row's divergence.
    pub stale_explained_by: Option<&'static str>,
}

impl Shadow {
    /// Compares `sides` and records the outcome for `key`.
    pub fn compare(&self, ctx: &Context, key: &ServiceKey, sides: Option<Sides>) {
        let Some(sides) = sides else {
            self.services.lock().expect("shadow lock").remove(key);
            return;
        };
        let mut differences =
            compare_endpoints(sides.desired_endpoints.as_ref(), sides.live_endpoints.as_ref());
        differences.extend(compare_slices(
            &sides.desired_slices,
            &sides.live_slices,
            sides.service_has_ports,
        ));
        for d in differences
            .iter_mut()
            .filter(|d| d.kind == DifferenceKind::Object)
        {
            d.explained_by = d.explained_by.or(sides.stale_explained_by);
        }
        differences.sort();
        self.record(ctx, key, differences);
    }

    fn record(&self, ctx: &Context, key: &ServiceKey, differences: Vec<Difference>) {
        let now = Instant::now();
        let settle = ctx.config.shadow_settle;
        let mut services = self.services.lock().expect("shadow lock");
        let state = services.entry(key.clone()).or_insert(State::Same);
        if differences.is_empty() {
            if let State::Differs { reported: true, .. } = state {
                tracing::info!(service = %key, "shadow: matches what is live again");
            }
            *state = State::Same;
            return;
        }
        let since = match state {
            State::Differs { since, .. } => *since,
            State::Same => now,
        };
        let settled = now.duration_since(since) >= settle;
        let was_reported = matches!(state, State::Differs { reported: true, .. });
        if settled && !was_reported {
            report(ctx, key, &differences);
        }
        if !settled {
            let key = WorkKey::Service(key.clone());
            ctx.queue
                .add_after(key, settle - now.duration_since(since), Urgency::Normal);
        }
        *state = State::Differs {
            since,
            reported: settled || was_reported,
            differences,
        };
    }

    /// Services by state: `same`, `different` (reported), `settling` (a difference not yet lasting the
    /// settle window).
    pub fn counts(&self) -> [(&'static str, usize); 3] {
        let services = self.services.lock().expect("shadow lock");
        let mut counts = [("same", 0), ("different", 0), ("settling", 0)];
        for state in services.values() {
            let index = match state {
                State::Same => 0,
                State::Differs { reported: true, .. } => 1,
                State::Differs { reported: false, .. } => 2,
            };
            counts[index].1 += 1;
        }
        counts
    }

    /// The differences of Services that differ, for `/debug`-style inspection in tests.
    pub fn differences(&self, key: &ServiceKey) -> Vec<Difference> {
        match self.services.lock().expect("shadow lock").get(key) {
            Some(State::Differs { differences, .. }) => differences.clone(),
            _ => Vec::new(),
        }
    }
}

/// One log line and the counters for a Service that starts to differ.
fn report(ctx: &Context, key: &ServiceKey, differences: &[Difference]) {
    let (explained, unexplained): (Vec<&Difference>, Vec<&Difference>) =
        differences.iter().partition(|d| d.explained_by.is_some());
    for d in &unexplained {
        ctx.metrics
            .adoption
            .shadow_differences
            .with_label_values(&[d.kind.label()])
            .inc();
    }
    for d in &explained {
        let row = d.explained_by.unwrap_or_default();
        ctx.metrics
            .adoption
            .shadow_divergences
            .with_label_values(&[row])
            .inc();
    }
    let list = |ds: &[&Difference]| ds.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if unexplained.is_empty() {
        tracing::info!(service = %key, divergences = %list(&explained), "shadow: differs only by roster's documented divergences");
    } else {
        tracing::warn!(service = %key, differences = %list(&unexplained), divergences = %list(&explained),
            "shadow: what is live differs from what roster would write");
    }
}
