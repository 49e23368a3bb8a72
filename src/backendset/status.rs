//! A BackendSet's status, computed purely from the BackendSet (whose current status gives the previous
//! transition times), its binding, its view and the time.
//!
//! Conditions:
//! * `Ready`: True (`AllReady`) when every published address is ready; False with `SomeNotReady`,
//!   `NoneReady`, `NoBackends` (nothing to publish) or `InvalidProbe` (nothing is published); Unknown
//!   (`Pending`) before roster looked at the BackendSet.
//! * `Resolved`: True (`Resolved`) when every DNS name resolves (or there is none); False with
//!   `ResolveFailed` (a name has no address) or `StaleAddresses` (lookups fail, the last known addresses are
//!   kept for the grace period); Unknown (`Resolving`) before the first lookup.
//! * `ServiceBound`: True (`Bound`), or False with `ServiceNotFound`, `ServiceHasSelector`,
//!   `ServiceIsExternalName` or `Conflict`.
//!
//! `lastTransitionTime` moves only when a condition's status changes. Probe times alone never make a write
//! ([`status_needs_write`] ignores them), so `lastProbeTime` is as of the last write.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::binding::Binding;
use super::crd::{AddressStatus, BackendSet, BackendSetStatus};
use super::spec::service_name;
use super::view::{BackendView, Resolution};
use crate::cache::ip_sort_key;
use crate::cache::parse_ip;

pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_RESOLVED: &str = "Resolved";
pub const CONDITION_SERVICE_BOUND: &str = "ServiceBound";

/// The status roster wants `bs` to have now. `observedGeneration` is the generation the view was built
/// from.
pub fn desired_status(
    bs: &BackendSet,
    binding: &Binding,
    view: Option<&BackendView>,
    now: Timestamp,
) -> BackendSetStatus {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let generation = view.and_then(|v| v.generation).or(bs.metadata.generation);
    let previous = bs
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let service = service_name(bs);
    let (ready, total) = view.map_or((0, 0), |v| (v.ready_count(), v.addresses.len()));
    let fresh = [
        ready_condition(view, ready, total),
        resolved_condition(view),
        (
            if *binding == Binding::Bound {
                "True"
            } else {
                "False"
            },
            binding.reason(),
            binding.message(&service),
        ),
    ];
    let conditions = [CONDITION_READY, CONDITION_RESOLVED, CONDITION_SERVICE_BOUND]
        .into_iter()
        .zip(fresh)
        .map(|(type_, (status, reason, message))| Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: Time(transition_time(previous, type_, status, now)),
        })
        .collect();
    BackendSetStatus {
        observed_generation: generation,
        service_name: Some(service),
        conditions,
        ready_count: count(ready),
        total_count: count(total),
        summary: Some(format!("{ready}/{total}")),
        addresses: view.map(address_statuses).unwrap_or_default(),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The previous transition time when the condition kept its status, else `now`.
fn transition_time(previous: &[Condition], type_: &str, status: &str, now: Timestamp) -> Timestamp {
    previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(now, |c| c.last_transition_time.0)
}

type Fresh = (&'static str, &'static str, String);

fn ready_condition(view: Option<&BackendView>, ready: usize, total: usize) -> Fresh {
    let Some(view) = view else {
        return (
            "Unknown",
            "Pending",
            "roster has not looked at the backends yet".into(),
        );
    };
    if let Some(problem) = &view.invalid_probe {
        return (
            "False",
            "InvalidProbe",
            format!("nothing is published: {problem}"),
        );
    }
    match (ready, total) {
        (_, 0) => ("False", "NoBackends", "no address to publish".into()),
        (r, t) if r == t => ("True", "AllReady", format!("{r}/{t} addresses ready")),
        (0, t) => ("False", "NoneReady", format!("0/{t} addresses ready")),
        (r, t) => ("False", "SomeNotReady", format!("{r}/{t} addresses ready")),
    }
}

fn resolved_condition(view: Option<&BackendView>) -> Fresh {
    let hostnames = view.map(|v| v.hostnames.as_slice()).unwrap_or_default();
    let failed: Vec<String> = hostnames
        .iter()
        .filter_map(|h| match &h.resolution {
            Resolution::Failed { error } => Some(format!("{}: {error}", h.hostname)),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        return ("False", "ResolveFailed", failed.join("; "));
    }
    let stale: Vec<String> = hostnames
        .iter()
        .filter_map(|h| match &h.resolution {
            Resolution::Stale { error, since, until } => Some(format!(
                "{}: lookups failing since {} ({error}); keeping the last known addresses until {}",
                h.hostname,
                format_time(*since),
                format_time(*until)
            )),
            _ => None,
        })
        .collect();
    if !stale.is_empty() {
        return ("False", "StaleAddresses", stale.join("; "));
    }
    if view.is_none() || hostnames.iter().any(|h| h.resolution == Resolution::Pending) {
        return ("Unknown", "Resolving", "waiting for the first DNS answers".into());
    }
    let message = match hostnames.len() {
        0 => "no DNS names to resolve".to_owned(),
        n => format!("{n} DNS name(s) resolved"),
    };
    ("True", "Resolved", message)
}

/// Every address of the view, published or not, sorted by address.
fn address_statuses(view: &BackendView) -> Vec<AddressStatus> {
    let stale_note = |hostname: &Option<String>| {
        let name = hostname.as_deref()?;
        view.hostnames.iter().find_map(|h| match &h.resolution {
            Resolution::Stale { until, .. } if h.hostname == name => Some(format!(
                "last known address of {name} (lookups failing), kept until {}",
                format_time(*until)
            )),
            _ => None,
        })
    };
    let mut statuses: Vec<AddressStatus> = view
        .addresses
        .iter()
        .map(|a| {
            let notes: Vec<String> = a.message.iter().cloned().chain(stale_note(&a.hostname)).collect();
            AddressStatus {
                address: a.ip.to_string(),
                hostname: a.hostname.clone(),
                ready: a.ready,
                last_probe_time: a.last_probe_time.map(format_time),
                last_transition_time: a.last_transition_time.map(format_time),
                message: Some(notes.join("; ")).filter(|m| !m.is_empty()),
            }
        })
        .collect();
    statuses.extend(view.excluded.iter().map(|e| AddressStatus {
        address: e.address.clone(),
        hostname: e.hostname.clone(),
        ready: false,
        message: Some(e.message.clone()),
        ..AddressStatus::default()
    }));
    statuses.sort_by(|a, b| {
        let key = |s: &AddressStatus| {
            (
                parse_ip(&s.address).map_or([0xff; 16], |ip| ip_sort_key(&ip)),
                s.address.clone(),
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.hostname.cmp(&b.hostname))
    });
    statuses
}

/// RFC 3339 in UTC, to the second (as Kubernetes writes times).
pub fn format_time(at: Timestamp) -> String {
    Timestamp::from_second(at.as_second()).unwrap_or(at).to_string()
}

/// Whether `desired` differs from `current` in anything but the probe times.
pub fn status_needs_write(current: Option<&BackendSetStatus>, desired: &BackendSetStatus) -> bool {
    let without_probe_times = |s: &BackendSetStatus| {
        let mut s = s.clone();
        for address in &mut s.addresses {
            address.last_probe_time = None;
        }
        s
    };
    current.is_none_or(|c| without_probe_times(c) != without_probe_times(desired))
}

/// The problems Warning Events report, as (reason, note): invalid backends, an invalid probe and a Service
/// conflict. Denied addresses are reported in status only (the operator denied them on purpose).
pub fn problems(bs: &BackendSet, binding: &Binding, view: &BackendView) -> BTreeSet<(String, String)> {
    let mut problems: BTreeSet<(String, String)> = view
        .excluded
        .iter()
        .filter(|e| !e.denied && view.invalid_probe.is_none())
        .map(|e| {
            (
                "InvalidBackend".to_owned(),
                format!("{}: {}", e.address, e.message),
            )
        })
        .collect();
    if let Some(problem) = &view.invalid_probe {
        problems.insert(("InvalidProbe".to_owned(), problem.clone()));
    }
    if let Binding::Conflict { .. } = binding {
        problems.insert(("ServiceConflict".to_owned(), binding.message(&service_name(bs))));
    }
    problems
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
