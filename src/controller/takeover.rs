//! Moving Services between kube-controller-manager's controllers and roster, with no moment in which a
//! Service has no endpoints.
//!
//! **Takeover** (`--services=all` on a cluster the built-in controllers have been serving): roster adopts
//! their Endpoints in place (see [`crate::desired::EndpointsInput::adopt`]) and deletes their EndpointSlices
//! of a Service only once its own slices for it exist and the watch has shown them (make before break).
//! While the built-in controllers still run (one of their slices is created or changed after roster's caches
//! synced), roster leaves their slices alone, raises a Warning Event on each Service it would have taken
//! over, and sets `roster_upstream_controllers_active`, until no such change has been seen for
//! `--upstream-quiet`.
//!
//! **Handback** (`--services=annotated` after `all`): for a Service roster no longer manages, its Endpoints
//! lose roster's ownership label (the built-in Endpoints controller adopts them in place) and roster's slices
//! are deleted once a slice of the matching built-in controller exists for the Service. Past
//! `--handback-warn-after` without one, a Warning Event says so, and roster keeps its slices and waits.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntGauge;

use k8s_openapi::api::core::v1::Endpoints;

use super::Context;
use super::queue::{Urgency, WorkKey};
use super::reconcile::service_reference;
use crate::cache::written::Kind;
use crate::cache::{ServiceKey, ServiceRecord};
use crate::desired::{self, SlicePlan};
use crate::error::Result;

/// What roster knows of the built-in controllers.
pub struct Upstream {
    /// How long after the last change to one of their slices roster deletes their slices again.
    quiet: Duration,
    /// `roster_upstream_controllers_active`.
    active_gauge: IntGauge,
    /// The last time, after the caches synced, that one of their slices was created or changed.
    last_change: Mutex<Option<Instant>>,
    /// Services told (by a Warning Event) that their built-in slices stay while the controllers run.
    warned_active: Mutex<HashSet<ServiceKey>>,
    /// Services handed back whose slices wait for the built-in controller's, since when, and whether the
    /// wait has been reported.
    waiting: Mutex<HashMap<ServiceKey, (Instant, bool)>>,
}

impl Upstream {
    pub fn new(quiet: Duration, active_gauge: IntGauge) -> Upstream {
        Upstream {
            quiet,
            active_gauge,
            last_change: Mutex::default(),
            warned_active: Mutex::default(),
            waiting: Mutex::default(),
        }
    }

    /// A built-in controller created or changed one of its slices.
    pub fn changed(&self, now: Instant) {
        let mut last = self.last_change.lock().expect("upstream lock");
        if last.is_none_or(|t| now.duration_since(t) >= self.quiet) {
            tracing::warn!(
                "kube-controller-manager's EndpointSlice controllers are still writing: roster leaves their \
                 slices in place. Disable them (--controllers=*,-endpoint,-endpointslice,-endpointslicemirroring) \
                 to finish the takeover; roster resumes {}s after their last write",
                self.quiet.as_secs()
            );
        }
        *last = Some(now);
        self.active_gauge.set(1);
    }

    pub fn is_active(&self, now: Instant) -> bool {
        let last = *self.last_change.lock().expect("upstream lock");
        last.is_some_and(|t| now.duration_since(t) < self.quiet)
    }

    /// Whether the built-in controllers just went quiet: then the Services whose slices roster kept for them
    /// are due again (it says so once per quiet period).
    pub fn went_quiet(&self, now: Instant) -> bool {
        if self.is_active(now) {
            return false;
        }
        self.active_gauge.set(0);
        let mut warned = self.warned_active.lock().expect("upstream lock");
        let due = !warned.is_empty();
        warned.clear();
        due
    }

    pub fn waiting(&self) -> usize {
        self.waiting.lock().expect("upstream lock").len()
    }

    fn first_warning(&self, key: &ServiceKey) -> bool {
        self.warned_active
            .lock()
            .expect("upstream lock")
            .insert(key.clone())
    }
}

const ROSTER_MANAGERS: [&str; 2] = [desired::SLICE_CONTROLLER_NAME, desired::MIRRORING_CONTROLLER_NAME];

/// Whether roster's own slices of `key` (of `manager`) exist and the watch has shown every write of them.
fn own_slices_shown(ctx: &Context, key: &ServiceKey, manager: &str) -> bool {
    let work = WorkKey::Service(key.clone());
    let unshown = ctx.writer.unshown_keys(Kind::EndpointSlice).contains(&work);
    let objects = ctx.objects.read().expect("objects lock");
    !unshown && objects.has_slices_of(key, &[manager])
}

/// Takeover: deletes the built-in controllers' slices of `key` once roster's own slices of `manager` are
/// shown (`manager: None`: roster publishes no slices for it, so nothing has to be made first).
pub async fn retire_upstream(ctx: &Context, key: &ServiceKey, manager: Option<&str>) -> Result<usize> {
    let upstream = ctx.slices(key, &desired::UPSTREAM_MANAGERS);
    if upstream.is_empty() || !ctx.slices_enabled {
        return Ok(0);
    }
    if ctx.upstream.is_active(Instant::now()) {
        warn_active(ctx, key).await;
        return Ok(0);
    }
    if manager.is_some_and(|m| !own_slices_shown(ctx, key, m)) {
        return Ok(0); // the watch event of roster's slice queues the Service again
    }
    let work = WorkKey::Service(key.clone());
    let why = "taken over from the built-in controller";
    super::reconcile::apply_slice_plan(ctx, &work, &SlicePlan::delete_all(upstream), why).await
}

async fn warn_active(ctx: &Context, key: &ServiceKey) {
    if !ctx.upstream.first_warning(key) {
        return;
    }
    let Some(svc) = ctx.cache.read().expect("cache lock").service(key) else {
        return;
    };
    let note =
        "kube-controller-manager's EndpointSlice controllers still write this Service's slices; roster \
                keeps them until those controllers are disabled"
            .to_owned();
    ctx.writer
        .warn(
            &service_reference(&svc),
            "UpstreamControllerActive",
            "TakeOver",
            note,
        )
        .await;
}

/// Handback: roster no longer manages `svc` (annotated mode, and it is neither annotated nor bound to a
/// BackendSet). Returns the writes made.
pub async fn hand_back(ctx: &Context, key: &ServiceKey, svc: &ServiceRecord) -> Result<usize> {
    let work = WorkKey::Service(key.clone());
    let current = ctx.endpoints(key);
    let mut writes = release_endpoints(ctx, &work, svc, current.as_deref()).await?;
    if !ctx.slices_enabled {
        return Ok(writes);
    }
    let own = ctx.slices(key, &ROSTER_MANAGERS);
    if own.is_empty() {
        ctx.upstream.waiting.lock().expect("upstream lock").remove(key);
        return Ok(writes);
    }
    let hand_made = current.is_some_and(|ep| !desired::is_roster_endpoints(&ep));
    let counterpart = match svc.has_spec_selector {
        true => Some(desired::UPSTREAM_SLICE_CONTROLLER_NAME),
        false => hand_made.then_some(desired::UPSTREAM_MIRRORING_CONTROLLER_NAME),
    };
    if counterpart.is_some_and(|m| ctx.slices(key, &[m]).is_empty()) {
        wait_for_upstream(ctx, key, svc).await;
        return Ok(writes);
    }
    ctx.upstream.waiting.lock().expect("upstream lock").remove(key);
    let why = "handed back: the built-in controller publishes the Service";
    writes += super::reconcile::apply_slice_plan(ctx, &work, &SlicePlan::delete_all(own), why).await?;
    Ok(writes)
}

/// roster's Endpoints of a Service with a selector lose roster's label; those of a selectorless Service,
/// which nobody else publishes, go.
async fn release_endpoints(
    ctx: &Context,
    work: &WorkKey,
    svc: &ServiceRecord,
    current: Option<&Endpoints>,
) -> Result<usize> {
    let Some(ep) = current.filter(|ep| desired::is_roster_endpoints(ep)) else {
        return Ok(0);
    };
    match desired::released_endpoints(ep).filter(|_| svc.has_spec_selector) {
        Some(released) => ctx.writer.replace(work, &released, "handed back").await?,
        None => {
            ctx.writer
                .delete(work, ep, "roster does not manage the Service")
                .await?
        }
    }
    Ok(1)
}

/// Keeps roster's slices while the built-in controller has none for the Service; reports a long wait once.
async fn wait_for_upstream(ctx: &Context, key: &ServiceKey, svc: &ServiceRecord) {
    let now = Instant::now();
    let warn_after = ctx.config.handback_warn_after;
    let report = {
        let mut waiting = ctx.upstream.waiting.lock().expect("upstream lock");
        let (since, reported) = waiting.entry(key.clone()).or_insert((now, false));
        let due = now.duration_since(*since) >= warn_after && !*reported;
        *reported |= due;
        if !due && !*reported {
            ctx.queue.add_after(
                WorkKey::Service(key.clone()),
                warn_after - now.duration_since(*since),
                Urgency::Normal,
            );
        }
        due
    };
    if report {
        let note = format!(
            "handing this Service back: no EndpointSlice of kube-controller-manager after {}s; roster keeps its \
             own until one exists (is the built-in EndpointSlice controller running?)",
            warn_after.as_secs()
        );
        tracing::warn!(service = %key, "{note}");
        ctx.writer
            .warn(&service_reference(svc), "HandBackWaiting", "HandBack", note)
            .await;
    }
}
