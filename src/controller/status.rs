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
    let why = status_change(bs.status.as_ref(), &status);
    ctx.writer.patch_status(&work, bs.as_ref(), &status, &why).await?;
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

/// The conditions that changed, for the logs.
fn status_change(
    current: Option<&crate::backendset::BackendSetStatus>,
    next: &crate::backendset::BackendSetStatus,
) -> String {
    let reasons = |s: Option<&crate::backendset::BackendSetStatus>| -> Vec<String> {
        let conditions = s.map(|s| s.conditions.as_slice()).unwrap_or_default();
        conditions
            .iter()
            .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason))
            .collect()
    };
    let (before, after) = (reasons(current), reasons(Some(next)));
    let changed: Vec<&String> = after.iter().filter(|c| !before.contains(c)).collect();
    match changed.is_empty() {
        true => format!("addresses: {}", next.summary.as_deref().unwrap_or_default()),
        false => changed.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
    }
}
