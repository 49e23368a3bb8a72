//! Reconcile one Service: read the caches, compute the desired Endpoints and EndpointSlices (pure) from the
//! Service's endpoint sources (its pods, or its BackendSet's backends), diff them against what the server
//! has, and hand the differences to the writer.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, ObjectReference};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tracing::Instrument;

use super::queue::WorkKey;
use super::shadow::Sides;
use super::{Context, holddown, takeover};
use crate::args::ServicesMode;
use crate::backendset::BackendView;
use crate::cache::{PodRecord, ServiceKey, ServiceRecord};
use crate::desired::{self, EndpointSource, EndpointsInput, SliceInput, SlicePlan, TopologyInput};
use crate::error::{Error, Result};
use crate::write::reference;

/// What roster does for a Service key.
enum Plan {
    /// A Service whose pods roster selects (spec.selector, or the roster.dev/selector annotation).
    Select(Arc<ServiceRecord>),
    /// A selectorless Service (services=all): mirror hand-made Endpoints into EndpointSlices.
    Mirror(Arc<ServiceRecord>),
    /// A selectorless Service a BackendSet is bound to: publish its backends.
    BackendSet(Arc<ServiceRecord>, Arc<BackendView>),
    /// Annotated mode: a Service roster does not manage (any more): hand it back to the built-in controllers.
    HandBack(Arc<ServiceRecord>),
    /// No Service, or an ExternalName Service: remove what roster made.
    CleanUp,
    /// An annotated Service whose selector does not parse: warn, and leave its objects as they are.
    InvalidSelector(Arc<ServiceRecord>, String),
}

pub async fn reconcile(ctx: &Context, key: &ServiceKey, waited: Duration) -> Result<()> {
    let span = tracing::info_span!("reconcile", namespace = %key.namespace, service = %key.name);
    async {
        let started = Instant::now();
        let plan = plan(ctx, key);
        if !matches!(plan, Plan::Select(_)) {
            holddown::forget_service(ctx, key);
        }
        if let Some(shadow) = &ctx.shadow {
            shadow.compare(ctx, key, shadow_sides(ctx, key, &plan));
            return Ok(());
        }
        let writes = match plan {
            Plan::Select(svc) => select(ctx, key, &svc).await,
            Plan::Mirror(svc) => mirror(ctx, key, &svc).await,
            Plan::BackendSet(svc, view) => backendset(ctx, key, &svc, &view).await,
            Plan::HandBack(svc) => takeover::hand_back(ctx, key, &svc).await,
            Plan::CleanUp => clean_up(ctx, key).await,
            Plan::InvalidSelector(svc, message) => invalid_selector(ctx, &svc, message).await,
        };
        ctx.metrics
            .reconcile
            .duration
            .observe(started.elapsed().as_secs_f64());
        if matches!(writes, Ok(n) if n > 0) {
            ctx.metrics
                .reconcile
                .propagation_latency
                .observe((waited + started.elapsed()).as_secs_f64());
        }
        writes.map(|_| ())
    }
    .instrument(span)
    .await
}

fn plan(ctx: &Context, key: &ServiceKey) -> Plan {
    let Some(svc) = ctx.cache.read().expect("cache lock").service(key) else {
        return Plan::CleanUp;
    };
    if svc.is_external_name() {
        return Plan::CleanUp;
    }
    if let Some(view) = ctx.backendsets.as_ref().and_then(|sets| sets.bound_view(&svc)) {
        return Plan::BackendSet(svc, view);
    }
    match (&svc.selector, ctx.config.services) {
        (Err(err), _) => {
            let message = err.to_string();
            Plan::InvalidSelector(svc, message)
        }
        (Ok(Some(_)), _) => Plan::Select(svc),
        (Ok(None), ServicesMode::All) => Plan::Mirror(svc),
        (Ok(None), ServicesMode::Annotated) => Plan::HandBack(svc),
    }
}

async fn invalid_selector(ctx: &Context, svc: &ServiceRecord, message: String) -> Result<usize> {
    let what = format!("selector of Service {}", svc.key());
    ctx.metrics
        .reconcile
        .invalid_objects
        .with_label_values(&["service"])
        .inc();
    ctx.writer
        .warn(
            &service_reference(svc),
            "InvalidSelector",
            "Reconcile",
            message.clone(),
        )
        .await;
    Err(Error::Invalid { what, message })
}

/// An ObjectReference to the Service, for Events.
pub fn service_reference(svc: &ServiceRecord) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some(svc.namespace.to_string()),
        name: Some(svc.name.to_string()),
        uid: Some(svc.uid.to_string()),
        ..Default::default()
    }
}

/// How a Service's endpoint sources are published.
struct Publication {
    endpoints: EndpointsInput,
    slices: SliceInput,
}

/// roster writes the slices of a selectorless Service itself, so mirroring controllers must skip its
/// Endpoints; a Service with `spec.selector` is never mirrored anyway.
fn skip_mirror(ctx: &Context, svc: &ServiceRecord) -> bool {
    ctx.slices_enabled && !svc.has_spec_selector
}

/// What topology hints need: whether the server stores them, and the Nodes' CPU per zone.
fn topology(ctx: &Context) -> TopologyInput {
    TopologyInput {
        hints_supported: ctx.hints_supported,
        zones: ctx.cache.read().expect("cache lock").zone_capacity(),
    }
}

/// How the pods of `svc` are published: Endpoints adopted in place in `all` mode, slices owned by the Service.
fn pods_publication(ctx: &Context, svc: &ServiceRecord, pods: &[Arc<PodRecord>]) -> Publication {
    let trigger_time = ctx.triggers.lock().expect("triggers lock").compute(svc, pods);
    let max = ctx.config.max_endpoints_per_slice;
    Publication {
        endpoints: EndpointsInput {
            trigger_time,
            skip_mirror: skip_mirror(ctx, svc),
            owner: None,
            adopt: ctx.config.services == ServicesMode::All,
        },
        slices: SliceInput {
            topology: topology(ctx),
            ..SliceInput::owned_by_service(svc, max, trigger_time)
        },
    }
}

/// How the addresses of a BackendSet are published: everything owned by the BackendSet.
fn backendset_publication(ctx: &Context, svc: &ServiceRecord, view: &BackendView) -> Publication {
    let owner = view.owner_reference();
    Publication {
        endpoints: EndpointsInput {
            trigger_time: None,
            skip_mirror: skip_mirror(ctx, svc),
            owner: Some(owner.clone()),
            adopt: false,
        },
        slices: SliceInput {
            max_per_slice: ctx.config.max_endpoints_per_slice,
            trigger_time: None,
            owner,
            topology: topology(ctx),
        },
    }
}

/// In `all` mode roster takes Services over from the built-in controllers (see [`takeover`]).
async fn take_over(ctx: &Context, key: &ServiceKey, manager: Option<&str>) -> Result<usize> {
    match ctx.config.services {
        ServicesMode::All => takeover::retire_upstream(ctx, key, manager).await,
        ServicesMode::Annotated => Ok(0),
    }
}

async fn select(ctx: &Context, key: &ServiceKey, svc: &ServiceRecord) -> Result<usize> {
    let pods: Vec<Arc<PodRecord>> = ctx.cache.read().expect("cache lock").pods_for_service(key);
    let hold_down = holddown::apply(ctx, svc, pods, Instant::now());
    let publication = pods_publication(ctx, svc, &hold_down.pods);
    let writes = publish(ctx, key, svc, &hold_down.pods, publication).await?;
    holddown::announce(ctx, svc, &hold_down).await;
    Ok(writes + take_over(ctx, key, Some(desired::SLICE_CONTROLLER_NAME)).await?)
}

async fn backendset(
    ctx: &Context,
    key: &ServiceKey,
    svc: &ServiceRecord,
    view: &BackendView,
) -> Result<usize> {
    let addresses: Vec<_> = view.addresses.iter().collect();
    let publication = backendset_publication(ctx, svc, view);
    let writes = publish(ctx, key, svc, &addresses, publication).await?;
    Ok(writes + take_over(ctx, key, Some(desired::SLICE_CONTROLLER_NAME)).await?)
}

/// Writes the Endpoints and EndpointSlices of `sources`, and removes mirrored slices a selectorless past
/// left behind.
async fn publish<P>(
    ctx: &Context,
    key: &ServiceKey,
    svc: &ServiceRecord,
    sources: &[P],
    publication: Publication,
) -> Result<usize>
where
    P: Deref<Target: EndpointSource>,
{
    let work = WorkKey::Service(key.clone());
    let mut writes = 0;
    if ctx.config.endpoints {
        let desired = desired::desired_endpoints(svc, sources, publication.endpoints);
        let current = ctx.endpoints(key);
        let obj = desired::endpoints_need_write(current.as_deref(), &desired);
        writes += write_endpoints(ctx, &work, current.as_deref(), obj).await?;
    }
    if !ctx.slices_enabled {
        return Ok(writes);
    }
    writes += delete_slices(
        ctx,
        key,
        desired::MIRRORING_CONTROLLER_NAME,
        "the Service selects pods",
    )
    .await?;
    let existing = ctx.slices(key, &[desired::SLICE_CONTROLLER_NAME]);
    let node = |name: &str| ctx.cache.read().expect("cache lock").node_lookup(name);
    let plan = desired::desired_slices(svc, sources, &node, &existing, &publication.slices);
    ctx.record_slice_stats(key, Some(&plan.stats));
    writes += apply_slice_plan(ctx, &work, &plan, "publish").await?;
    ctx.hints_events.announce(ctx, svc, &plan.hints).await;
    if !plan.missing_nodes.is_empty() {
        return Err(Error::NodesMissing(plan.missing_nodes.clone()));
    }
    Ok(writes)
}

async fn mirror(ctx: &Context, key: &ServiceKey, svc: &ServiceRecord) -> Result<usize> {
    let work = WorkKey::Service(key.clone());
    let current = ctx.endpoints(key);
    let mut writes = 0;
    if let Some(ep) = current.as_ref().filter(|ep| desired::is_roster_endpoints(ep)) {
        let why = "the Service has no selector any more";
        ctx.writer.delete(&work, ep.as_ref(), why).await?;
        writes += 1;
    }
    if !ctx.slices_enabled {
        return Ok(writes);
    }
    writes += delete_slices(
        ctx,
        key,
        desired::SLICE_CONTROLLER_NAME,
        "the Service has no selector",
    )
    .await?;
    let hand_made = current.filter(|ep| !desired::is_roster_endpoints(ep));
    let existing = ctx.slices(key, &[desired::MIRRORING_CONTROLLER_NAME]);
    let plan = match &hand_made {
        Some(ep) => desired::desired_mirrored_slices(svc, ep, &existing),
        None => SlicePlan::delete_all(existing),
    };
    if let Some(ep) = &hand_made {
        warn_skipped(ctx, ep, &plan).await;
    }
    writes += apply_slice_plan(ctx, &work, &plan, "mirror").await?;
    let made = hand_made.is_some().then_some(desired::MIRRORING_CONTROLLER_NAME);
    Ok(writes + take_over(ctx, key, made).await?)
}

/// A Warning Event on the Endpoints for each address mirroring left out.
async fn warn_skipped(ctx: &Context, ep: &Endpoints, plan: &SlicePlan) {
    for (address, why) in &plan.skipped {
        let note = format!("{address}: {why}");
        ctx.writer
            .warn(&reference(ep), why.event_reason(), "Mirroring", note)
            .await;
    }
}

const CLEAN_UP: &str = "no Service, or an ExternalName one: no endpoints";

async fn clean_up(ctx: &Context, key: &ServiceKey) -> Result<usize> {
    let work = WorkKey::Service(key.clone());
    let current = ctx.endpoints(key);
    let mut writes = 0;
    if let Some(ep) = current.filter(|ep| desired::is_roster_endpoints(ep)) {
        ctx.writer.delete(&work, ep.as_ref(), CLEAN_UP).await?;
        writes += 1;
    }
    if ctx.slices_enabled {
        writes += delete_slices(ctx, key, desired::SLICE_CONTROLLER_NAME, CLEAN_UP).await?;
        writes += delete_slices(ctx, key, desired::MIRRORING_CONTROLLER_NAME, CLEAN_UP).await?;
    }
    ctx.triggers.lock().expect("triggers lock").forget(key);
    ctx.record_slice_stats(key, None);
    ctx.hints_events.forget(key);
    Ok(writes + take_over(ctx, key, None).await?)
}

/// Creates or replaces the Endpoints (`obj`, when anything changed); a failure is also a Warning Event.
async fn write_endpoints(
    ctx: &Context,
    work: &WorkKey,
    current: Option<&Endpoints>,
    obj: Option<Endpoints>,
) -> Result<usize> {
    let Some(obj) = obj else { return Ok(0) };
    let why = desired::endpoints_change(current, &obj);
    let result = match current {
        None => ctx.writer.create(work, &obj, &why).await,
        Some(_) => ctx.writer.replace(work, &obj, &why).await,
    };
    if let Err(err) = &result {
        warn_failed_endpoints(ctx, &obj, err).await;
    }
    result.map(|_| 1)
}

async fn warn_failed_endpoints(ctx: &Context, obj: &Endpoints, err: &Error) {
    if quiet_failure(err) {
        return;
    }
    let reason = if obj.metadata.resource_version.is_none() {
        "FailedToCreateEndpoint"
    } else {
        "FailedToUpdateEndpoint"
    };
    tracing::warn!(%err, reason, "writing Endpoints failed");
    ctx.writer
        .warn(&reference(obj), reason, "Update", err.to_string())
        .await;
}

async fn delete_slices(ctx: &Context, key: &ServiceKey, manager: &str, why: &str) -> Result<usize> {
    let stale = ctx.slices(key, &[manager]);
    let work = WorkKey::Service(key.clone());
    apply_slice_plan(ctx, &work, &SlicePlan::delete_all(stale), why).await
}

/// Creates, then updates, then deletes (so readers never see a Service without its endpoints); `why` says
/// what for. A failed write is also a Warning Event on the Service.
pub async fn apply_slice_plan(ctx: &Context, work: &WorkKey, plan: &SlicePlan, why: &str) -> Result<usize> {
    let result = write_slices(ctx, work, plan, why).await;
    if let (Err(err), WorkKey::Service(key)) = (&result, work) {
        warn_failed_slices(ctx, key, err).await;
    }
    result
}

async fn write_slices(ctx: &Context, work: &WorkKey, plan: &SlicePlan, why: &str) -> Result<usize> {
    let with = |slice: &EndpointSlice| format!("{why}: {} endpoints", slice.endpoints.len());
    for slice in &plan.create {
        ctx.writer.create(work, slice, &with(slice)).await?;
    }
    for slice in &plan.update {
        ctx.writer.replace(work, slice, &with(slice)).await?;
    }
    for slice in &plan.delete {
        ctx.writer.delete(work, slice, why).await?;
    }
    Ok(plan.create.len() + plan.update.len() + plan.delete.len())
}

async fn warn_failed_slices(ctx: &Context, key: &ServiceKey, err: &Error) {
    if quiet_failure(err) {
        return;
    }
    let Some(svc) = ctx.cache.read().expect("cache lock").service(key) else {
        return;
    };
    tracing::warn!(service = %key, %err, "writing EndpointSlices failed");
    let reason = "FailedToUpdateEndpointSlices";
    ctx.writer
        .warn(&service_reference(&svc), reason, "Update", err.to_string())
        .await;
}

/// Failures that are no news to an operator: a conflict is retried at once, a follower writes nothing, a
/// terminating namespace takes everything with it, throttling slows the write budget down (which logs it),
/// and a write that waited for the budget is made after computing again.
fn quiet_failure(err: &Error) -> bool {
    matches!(
        err,
        Error::Conflict { .. }
            | Error::NotLeader
            | Error::NamespaceTerminating(_)
            | Error::TooManyRequests
            | Error::Recompute
    )
}

/// Errors decide the retry: conflicts retry soon from the watch's state, throttling honours the server's
/// delay, invalid input waits for the object to change, everything else backs off per key.
pub fn error_policy(ctx: &Context, key: &WorkKey, result: Result<()>) {
    let err = match result {
        Ok(()) => {
            ctx.queue.forget(key);
            ctx.metrics
                .reconcile
                .results
                .with_label_values(&["success"])
                .inc();
            return;
        }
        Err(Error::NotLeader) => return,
        Err(err) => err,
    };
    ctx.metrics
        .reconcile
        .results
        .with_label_values(&[err.kind()])
        .inc();
    if err.is_permanent() {
        tracing::warn!(%key, %err, "not retrying until the object or its inputs change");
        return;
    }
    let not_before = match &err {
        Error::TooManyRequests => ctx.writer.budget().pause_left(),
        _ => None,
    };
    ctx.metrics
        .reconcile
        .retries
        .with_label_values(&[err.kind()])
        .inc();
    let delay = ctx.queue.retry(key.clone(), not_before);
    tracing::info!(%key, %err, retry_in = ?delay, "reconcile failed; retrying");
}

/// Shadow mode: what roster would publish for the Service and what is live, `None` when roster would not
/// compare it (no Service, or a Service fed by a BackendSet, which only roster publishes).
fn shadow_sides(ctx: &Context, key: &ServiceKey, plan: &Plan) -> Option<Sides> {
    let live_slices = |manager: &str| ctx.slices(key, &[manager]);
    let live_endpoints = ctx.endpoints(key).map(Arc::unwrap_or_clone);
    match plan {
        Plan::Select(svc) => {
            let pods: Vec<Arc<PodRecord>> = ctx.cache.read().expect("cache lock").pods_for_service(key);
            let publication = pods_publication(ctx, svc, &pods);
            let desired = desired::desired_endpoints(svc, &pods, publication.endpoints);
            let node = |name: &str| ctx.cache.read().expect("cache lock").node_lookup(name);
            let slices = desired::desired_slices(svc, &pods, &node, &[], &publication.slices);
            Some(Sides {
                desired_endpoints: desired::endpoints_need_write(None, &desired),
                live_endpoints,
                desired_slices: slices.create,
                live_slices: live_slices(desired::UPSTREAM_SLICE_CONTROLLER_NAME),
                service_has_ports: !svc.ports.is_empty(),
                stale_explained_by: None,
            })
        }
        Plan::Mirror(svc) => {
            let hand_made = live_endpoints.filter(|ep| !desired::is_roster_endpoints(ep));
            let mirrored = hand_made.map(|ep| desired::desired_mirrored_slices(svc, &ep, &[]).create);
            Some(Sides {
                desired_endpoints: None,
                live_endpoints: None,
                desired_slices: mirrored.unwrap_or_default(),
                live_slices: live_slices(desired::UPSTREAM_MIRRORING_CONTROLLER_NAME),
                service_has_ports: !svc.ports.is_empty(),
                stale_explained_by: None,
            })
        }
        Plan::CleanUp if live_endpoints.is_some() => Some(Sides {
            desired_endpoints: None,
            live_endpoints,
            desired_slices: Vec::new(),
            live_slices: live_slices(desired::UPSTREAM_SLICE_CONTROLLER_NAME),
            service_has_ports: false,
            stale_explained_by: Some("F2"),
        }),
        _ => None,
    }
}
