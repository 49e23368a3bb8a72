//! Reconcile one BackendSet's status: its binding to its Service (from the Service cache), its view (from
//! its worker) and the time give the desired status (pure); it is written when it differs, and each new
//! problem is reported once as a Warning Event.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::Context;
use super::queue::WorkKey;
use crate::backendset::spec::service_name;
use crate::backendset::status::problems;
use crate::backendset::{BackendSet, BackendView, Binding, desired_status, status_needs_write};
use crate::cache::{BackendSetKey, ServiceKey};
use crate::error::Result;
use crate::write::reference;

pub async fn reconcile(ctx: &Context, key: &BackendSetKey) -> Result<()> {
    let Some(sets) = &ctx.backendsets else {
        return Ok(());
    };
    let Some((cached, view)) = sets.get(key) else {
        return Ok(()); // deleted: nothing to report
    };
    let bs = ctx.writer.view(key, Some(cached)).expect("a cached BackendSet");
    let service = ServiceKey::new(&key.namespace, &service_name(&bs));
    let record = ctx.cache.read().expect("cache lock").service(&service);
    let binding = sets.binding(key, &service, record.as_deref());
    warn(ctx, &bs, &binding, &view).await;
    let status = desired_status(&bs, &binding, Some(&view), Timestamp::now());
    if !status_needs_write(bs.status.as_ref(), &status) {
        return Ok(());
    }
    let work = WorkKey::BackendSet(key.clone());
    ctx.writer.patch_status(&work, bs.as_ref(), &status).await?;
    Ok(())
}

/// A Warning Event for each problem not reported yet.
async fn warn(ctx: &Context, bs: &BackendSet, binding: &Binding, view: &BackendView) {
    let Some(sets) = &ctx.backendsets else { return };
    let problems: BTreeSet<_> = problems(bs, binding, view);
    for (reason, note) in sets.unreported(bs, problems) {
        ctx.writer.warn(&reference(bs), &reason, "Validate", note).await;
    }
}
