//! Reconcile one Service: read the caches, compute the desired Endpoints and EndpointSlices (pure), diff
//! them against what the server has, and hand the differences to the writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use tracing::Instrument;

use super::Context;
use crate::write::reference;
use crate::args::ServicesMode;
use crate::backendset::{self, BackendView};
use crate::cache::{PodRecord, ServiceKey, ServiceRecord};
use crate::desired::{self, SlicePlan};
use crate::error::{Error, Result};

/// What roster does for a Service key.
enum Plan {
    /// A Service whose backends roster selects (spec.selector, or the roster.dev/selector annotation).
    Select(Arc<ServiceRecord>),
    /// A selectorless Service (services=all): mirror hand-made Endpoints into EndpointSlices.
    Mirror(Arc<ServiceRecord>),
    /// A selectorless Service a BackendSet is bound to: publish its probed backends.
    Backends(Arc<ServiceRecord>, Arc<BackendView>),
    /// No Service, an ExternalName Service, or one roster does not manage: remove what roster made.
    CleanUp,
    /// An annotated Service whose selector does not parse: warn, and leave its objects as they are.
    InvalidSelector(Arc<ServiceRecord>, String),
}

pub async fn reconcile(ctx: &Context, key: &ServiceKey, waited: Duration) -> Result<()> {
    let span = tracing::info_span!("reconcile", namespace = %key.namespace, service = %key.name);
    async {
        let started = Instant::now();
        let writes = match plan(ctx, key) {
            Plan::Select(svc) => select(ctx, key, &svc).await,
            Plan::Mirror(svc) => mirror(ctx, key, &svc).await,
            Plan::Backends(svc, view) => backends(ctx, key, &svc, &view).await,
            Plan::CleanUp => clean_up(ctx, key).await,
            Plan::InvalidSelector(svc, message) => invalid_selector(ctx, &svc, message).await,
        };
        ctx.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        if matches!(writes, Ok(n) if n > 0) {
            ctx.metrics
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
    if let Some(view) = ctx.backends.as_ref().and_then(|registry| registry.view(key)) {
        return Plan::Backends(svc, view);
    }
    match (&svc.selector, ctx.config.services) {
        (Err(err), _) => {
            let message = err.to_string();
            Plan::InvalidSelector(svc, message)
        }
        (Ok(Some(_)), _) => Plan::Select(svc),
        (Ok(None), ServicesMode::All) => Plan::Mirror(svc),
        (Ok(None), ServicesMode::Annotated) => Plan::CleanUp,
    }
}

async fn invalid_selector(ctx: &Context, svc: &ServiceRecord, message: String) -> Result<usize> {
    let what = format!("selector of Service {}", svc.key());
    ctx.metrics.invalid_objects.with_label_values(&["service"]).inc();
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
fn service_reference(svc: &ServiceRecord) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some(svc.namespace.to_string()),
        name: Some(svc.name.to_string()),
        uid: Some(svc.uid.to_string()),
        ..Default::default()
    }
}

async fn select(ctx: &Context, key: &ServiceKey, svc: &Arc<ServiceRecord>) -> Result<usize> {
    let pods: Vec<Arc<PodRecord>> = ctx.cache.read().expect("cache lock").pods_for_service(key);
    let trigger = ctx.triggers.lock().expect("triggers lock").compute(svc, &pods);
    let mut writes = 0;
    if ctx.config.endpoints {
        let input = desired::EndpointsInput {
            trigger_time: trigger,
            mode: ctx.config.selector_source(),
        };
        let desired = desired::desired_endpoints(svc, &pods, input);
        let current = ctx.objects.lock().expect("objects lock").endpoints(key);
        let obj = desired::endpoints_need_write(current.as_deref(), &desired);
        writes += write_endpoints(ctx, key, current, obj).await?;
    }
    if ctx.slices_enabled {
        writes += delete_slices(ctx, key, desired::MIRRORING_CONTROLLER_NAME).await?;
    }
    if ctx.slices_enabled && ctx.config.endpointslices {
        let existing = managed_slices(ctx, key, desired::SLICE_CONTROLLER_NAME);
        let node = |name: &str| ctx.cache.read().expect("cache lock").node_lookup(name);
        let max = ctx.config.max_endpoints_per_slice;
        let plan = desired::desired_slices(svc, &pods, &node, &existing, max, trigger);
        writes += apply_slice_plan(ctx, key, &plan).await?;
        if !plan.missing_nodes.is_empty() {
            return Err(Error::NodesMissing(plan.missing_nodes.clone()));
        }
    }
    Ok(writes)
}

async fn mirror(ctx: &Context, key: &ServiceKey, svc: &Arc<ServiceRecord>) -> Result<usize> {
    let current = ctx.objects.lock().expect("objects lock").endpoints(key);
    let mut writes = 0;
    if let Some(ep) = current.as_ref().filter(|ep| desired::is_roster_endpoints(ep)) {
        writes += delete_endpoints(ctx, key, ep).await?; // the selector was removed: roster's object goes
    }
    if !ctx.slices_enabled {
        return Ok(writes);
    }
    writes += delete_slices(ctx, key, desired::SLICE_CONTROLLER_NAME).await?;
    let hand_made = current.filter(|ep| !desired::is_roster_endpoints(ep));
    let existing = managed_slices(ctx, key, desired::MIRRORING_CONTROLLER_NAME);
    let plan = match &hand_made {
        Some(ep) => desired::desired_mirrored_slices(svc, ep, &existing),
        None => SlicePlan::delete_all(existing),
    };
    for (address, why) in &plan.skipped {
        if let Some(ep) = &hand_made {
            let reason = why.event_reason();
            ctx.writer
                .warn(
                    &reference(ep.as_ref()),
                    reason,
                    "Mirroring",
                    format!("{address}: {why}"),
                )
                .await;
        }
    }
    Ok(writes + apply_slice_plan(ctx, key, &plan).await?)
}

async fn backends(ctx: &Context, key: &ServiceKey, svc: &ServiceRecord, view: &BackendView) -> Result<usize> {
    let mut writes = 0;
    if ctx.config.endpoints {
        let desired = backendset::desired_backend_endpoints(svc, view);
        let current = ctx.objects.lock().expect("objects lock").endpoints(key);
        let obj = backendset::backend_endpoints_need_write(current.as_deref(), &desired, view);
        writes += write_endpoints(ctx, key, current, obj).await?;
    }
    if ctx.slices_enabled {
        writes += delete_slices(ctx, key, desired::MIRRORING_CONTROLLER_NAME).await?;
    }
    if ctx.slices_enabled && ctx.config.endpointslices {
        let existing = managed_slices(ctx, key, desired::SLICE_CONTROLLER_NAME);
        let max = ctx.config.max_endpoints_per_slice;
        writes += apply_slice_plan(
            ctx,
            key,
            &backendset::desired_backend_slices(svc, view, &existing, max),
        )
        .await?;
    }
    Ok(writes)
}

async fn clean_up(ctx: &Context, key: &ServiceKey) -> Result<usize> {
    let current = ctx.objects.lock().expect("objects lock").endpoints(key);
    let mut writes = 0;
    if let Some(ep) = current.filter(|ep| desired::is_roster_endpoints(ep)) {
        writes += delete_endpoints(ctx, key, &ep).await?;
    }
    if ctx.slices_enabled {
        writes += delete_slices(ctx, key, desired::SLICE_CONTROLLER_NAME).await?;
        writes += delete_slices(ctx, key, desired::MIRRORING_CONTROLLER_NAME).await?;
    }
    ctx.triggers.lock().expect("triggers lock").forget(key);
    Ok(writes)
}

async fn write_endpoints(
    ctx: &Context,
    key: &ServiceKey,
    current: Option<Arc<Endpoints>>,
    obj: Option<Endpoints>,
) -> Result<usize> {
    let Some(obj) = obj else { return Ok(0) };
    let replaced = current.as_ref().and_then(|c| c.resource_version());
    let result = match &current {
        None => ctx.writer.create_endpoints(&obj).await,
        Some(_) => ctx.writer.replace_endpoints(&obj).await,
    };
    if let Err(err) = &result {
        warn_failed_endpoints(ctx, &obj, err).await;
    }
    ctx.objects
        .lock()
        .expect("objects lock")
        .record_endpoints_write(key, result?, replaced);
    Ok(1)
}

async fn warn_failed_endpoints(ctx: &Context, obj: &Endpoints, err: &Error) {
    if matches!(
        err,
        Error::Conflict { .. } | Error::NotLeader | Error::NamespaceTerminating(_)
    ) {
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

async fn delete_endpoints(ctx: &Context, key: &ServiceKey, ep: &Endpoints) -> Result<usize> {
    ctx.writer.delete_endpoints(ep).await?;
    ctx.objects
        .lock()
        .expect("objects lock")
        .record_endpoints_delete(key, ep.resource_version());
    Ok(1)
}

fn managed_slices(ctx: &Context, key: &ServiceKey, manager: &str) -> Vec<EndpointSlice> {
    let slices = ctx.objects.lock().expect("objects lock").slices(key);
    slices
        .into_iter()
        .filter(|s| desired::slice_manager(s) == Some(manager))
        .map(|s| (*s).clone())
        .collect()
}

async fn delete_slices(ctx: &Context, key: &ServiceKey, manager: &str) -> Result<usize> {
    let stale = managed_slices(ctx, key, manager);
    apply_slice_plan(ctx, key, &SlicePlan::delete_all(stale)).await
}

/// Creates, then updates, then deletes (so readers never see a Service without its endpoints).
async fn apply_slice_plan(ctx: &Context, key: &ServiceKey, plan: &SlicePlan) -> Result<usize> {
    for slice in &plan.create {
        let written = ctx.writer.create_slice(slice).await?;
        ctx.objects
            .lock()
            .expect("objects lock")
            .record_slice_write(key, written);
    }
    for slice in &plan.update {
        let written = ctx.writer.replace_slice(slice).await?;
        ctx.objects
            .lock()
            .expect("objects lock")
            .record_slice_write(key, written);
    }
    for slice in &plan.delete {
        ctx.writer.delete_slice(slice).await?;
        ctx.objects
            .lock()
            .expect("objects lock")
            .record_slice_delete(key, slice);
    }
    Ok(plan.create.len() + plan.update.len() + plan.delete.len())
}

/// Errors decide the retry: conflicts retry soon from the watch's state, throttling honours the server's
/// delay, invalid input waits for the object to change, everything else backs off per Service.
pub fn error_policy(ctx: &Context, key: &ServiceKey, result: Result<()>) {
    let err = match result {
        Ok(()) => {
            ctx.queue.forget(key);
            ctx.metrics.reconciles.with_label_values(&["success"]).inc();
            return;
        }
        Err(Error::NotLeader) => return,
        Err(err) => err,
    };
    ctx.metrics.reconciles.with_label_values(&[err.kind()]).inc();
    if err.is_permanent() {
        tracing::warn!(service = %key, %err, "not retrying until the Service or its pods change");
        return;
    }
    let not_before = match &err {
        Error::TooManyRequests(after) => *after,
        _ => None,
    };
    ctx.metrics.queue_retries.with_label_values(&[err.kind()]).inc();
    let delay = ctx.queue.retry(key.clone(), not_before);
    tracing::info!(service = %key, %err, retry_in = ?delay, "reconcile failed; retrying");
}
