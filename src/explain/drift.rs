//! What is live and who manages it, and how it differs from what roster computes ([`desired::compare`]).

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;

use super::read::Objects;
use super::report::Source;
use crate::cache::{NodeLookup, PodRecord, ServiceRecord};
use crate::desired::compare::{Difference, canonical_ip, compare_endpoints, compare_slices};
use crate::desired::{self, DesiredEndpoints, SliceInput};

/// The live Endpoints and EndpointSlices of the Service.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Live {
    pub endpoints: Option<LiveEndpoints>,
    pub slices: Vec<LiveSlice>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveEndpoints {
    pub managed_by: ManagedBy,
    /// Distinct addresses under `addresses`, and under `notReadyAddresses` only.
    pub ready: usize,
    pub not_ready: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveSlice {
    pub name: String,
    pub address_type: String,
    pub managed_by: ManagedBy,
    pub endpoints: usize,
    /// Endpoints whose `ready` condition is true or unset (which consumers read as ready).
    pub ready: usize,
}

/// Who writes an object: its `managed-by` label's value, or for Endpoints roster's ownership label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedBy {
    pub who: Who,
    /// The label's value, or the owner the object names.
    pub by: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Who {
    Roster,
    /// kube-controller-manager's Endpoints, EndpointSlice or mirroring controller.
    Upstream,
    /// Another controller, by its `managed-by` value.
    Other,
    /// No manager label: written by hand (or by a tool that does not say).
    ByHand,
}

/// How the live objects differ from what roster computes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    pub endpoints: Vec<DriftItem>,
    pub slices: Vec<DriftItem>,
    /// Why some of it was not compared.
    pub not_compared: Vec<String>,
}

/// One difference ([`Difference`]), with the pod whose address it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftItem {
    /// A [`crate::desired::compare::DifferenceKind`] label: `address_missing`, `readiness`, ...
    pub kind: String,
    /// An address (`IPv4 10.0.0.1` in slices), or `<Endpoints>` for the whole object.
    pub at: String,
    pub pod: Option<String>,
    /// Who manages the live object holding the address (or the whole object); `None` when none holds it.
    pub managed_by: Option<ManagedBy>,
    /// The README row of roster's deliberate divergence from upstream this is, if it is one.
    pub explained_by: Option<String>,
}

impl Drift {
    /// No comparison, with why.
    pub fn not_compared(source: &Source) -> Drift {
        let why = match source {
            Source::BackendSet { .. } => {
                "a BackendSet's addresses follow roster's probes, which only roster sees: see the BackendSet's status"
            }
            Source::ExternalName { .. } => "an ExternalName Service has no endpoints to compare",
            Source::InvalidSelector { .. } => {
                "roster leaves the objects of a Service with an invalid selector alone"
            }
            _ => "nothing to publish, nothing to compare",
        };
        Drift {
            not_compared: vec![why.to_owned()],
            ..Drift::default()
        }
    }

    /// Differences that are not roster's documented divergences from upstream.
    pub fn unexplained(&self) -> usize {
        let all = self.endpoints.iter().chain(&self.slices);
        all.filter(|d| d.explained_by.is_none()).count()
    }
}

/// Drift of a Service whose pods roster selects: the live Endpoints and every live EndpointSlice of the
/// Service against what roster computes from `selected`.
pub fn selected(
    svc: &ServiceRecord,
    selected: &[&PodRecord],
    nodes: &dyn Fn(&str) -> NodeLookup,
    desired: &DesiredEndpoints,
    objects: &Objects,
) -> Drift {
    let pods = pods_by_ip(selected);
    let want = desired::endpoints_need_write(None, desired);
    let endpoints = compare_endpoints(want.as_ref(), objects.endpoints.as_ref());
    let endpoints_manager = objects.endpoints.as_ref().map(|ep| endpoints_manager(svc, ep));
    let mut drift = Drift {
        endpoints: items(endpoints, &pods, &|_| endpoints_manager.clone()),
        ..Drift::default()
    };
    if objects.nodes.is_err() {
        drift
            .not_compared
            .push("EndpointSlices: the Nodes (zones) are unknown".to_owned());
        return drift;
    }
    let input = SliceInput::owned_by_service(svc, desired::DEFAULT_MAX_ENDPOINTS_PER_SLICE, None);
    let want = desired::desired_slices(svc, selected, nodes, &[], &input).create;
    let slices = compare_slices(&want, &objects.slices, !svc.ports.is_empty());
    drift.slices = items(slices, &pods, &|at| holding_slice(&objects.slices, at));
    drift
}

/// Drift of a selectorless Service: the live EndpointSlices against the mirror of its hand-made Endpoints.
pub fn mirrored(svc: &ServiceRecord, objects: &Objects) -> Drift {
    let hand_made = objects
        .endpoints
        .as_ref()
        .filter(|ep| !desired::is_roster_endpoints(ep));
    let Some(endpoints) = hand_made else {
        let why = "EndpointSlices made by hand, without Endpoints to mirror";
        return Drift {
            not_compared: vec![why.to_owned()],
            ..Drift::default()
        };
    };
    let want = desired::desired_mirrored_slices(svc, endpoints, &[]).create;
    let slices = compare_slices(&want, &objects.slices, !svc.ports.is_empty());
    Drift {
        slices: items(slices, &HashMap::new(), &|at| holding_slice(&objects.slices, at)),
        ..Drift::default()
    }
}

fn pods_by_ip(pods: &[&PodRecord]) -> HashMap<String, String> {
    let ips = pods
        .iter()
        .flat_map(|p| p.ips.iter().map(|ip| (ip.to_string(), p.name.to_string())));
    ips.collect()
}

/// The manager of the live slice holding the address `at` (`IPv4 10.0.0.1`); for the whole set of slices
/// (`<EndpointSlices>`), that of the first.
fn holding_slice(slices: &[EndpointSlice], at: &str) -> Option<ManagedBy> {
    let holds = |slice: &&EndpointSlice| match at.split_once(' ') {
        Some((address_type, ip)) => {
            slice.address_type == address_type
                && slice
                    .endpoints
                    .iter()
                    .any(|e| e.addresses.iter().any(|a| canonical_ip(a) == ip))
        }
        None => true,
    };
    slices.iter().find(holds).map(slice_manager)
}

fn items(
    differences: Vec<Difference>,
    pods: &HashMap<String, String>,
    managed_by: &dyn Fn(&str) -> Option<ManagedBy>,
) -> Vec<DriftItem> {
    let item = |d: Difference| {
        let ip = d.at.rsplit(' ').next().unwrap_or_default();
        DriftItem {
            kind: d.kind.label().to_owned(),
            pod: pods.get(ip).cloned(),
            managed_by: managed_by(&d.at),
            at: d.at,
            explained_by: d.explained_by.map(str::to_owned),
        }
    };
    differences.into_iter().map(item).collect()
}

/// What is live, and who manages it.
pub fn live(svc: &ServiceRecord, objects: &Objects) -> Live {
    Live {
        endpoints: objects.endpoints.as_ref().map(|ep| live_endpoints(svc, ep)),
        slices: objects.slices.iter().map(live_slice).collect(),
    }
}

impl Live {
    /// Ready endpoints, as the Endpoints or the EndpointSlices (whichever have more) offer them.
    pub fn ready_endpoints(&self) -> usize {
        let in_endpoints = self.endpoints.as_ref().map_or(0, |ep| ep.ready);
        let in_slices = self.slices.iter().map(|s| s.ready).sum();
        in_endpoints.max(in_slices)
    }
}

fn live_endpoints(svc: &ServiceRecord, ep: &Endpoints) -> LiveEndpoints {
    let mut ready = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    for subset in ep.subsets.iter().flatten() {
        ready.extend(subset.addresses.iter().flatten().map(|a| &a.ip));
        not_ready.extend(subset.not_ready_addresses.iter().flatten().map(|a| &a.ip));
    }
    LiveEndpoints {
        managed_by: endpoints_manager(svc, ep),
        not_ready: not_ready.difference(&ready).count(),
        ready: ready.len(),
    }
}

/// roster's ownership label (and, for a BackendSet's Endpoints, their owner); without it, the upstream
/// Endpoints controller's for a Service with `spec.selector` (it sets no label), else someone's by hand.
fn endpoints_manager(svc: &ServiceRecord, ep: &Endpoints) -> ManagedBy {
    if desired::is_roster_endpoints(ep) {
        let owners = ep.metadata.owner_references.iter().flatten();
        let owner = owners.map(|o| format!("{}/{}", o.kind, o.name)).next();
        return ManagedBy {
            who: Who::Roster,
            by: owner.or(Some(desired::ENDPOINTS_MANAGER.to_owned())),
        };
    }
    match svc.has_spec_selector {
        true => ManagedBy {
            who: Who::Upstream,
            by: None,
        },
        false => ManagedBy {
            who: Who::ByHand,
            by: None,
        },
    }
}

fn live_slice(slice: &EndpointSlice) -> LiveSlice {
    let ready = |e: &&k8s_openapi::api::discovery::v1::Endpoint| {
        e.conditions.as_ref().and_then(|c| c.ready) != Some(false)
    };
    LiveSlice {
        name: slice.metadata.name.clone().unwrap_or_default(),
        address_type: slice.address_type.clone(),
        managed_by: slice_manager(slice),
        endpoints: slice.endpoints.len(),
        ready: slice.endpoints.iter().filter(ready).count(),
    }
}

fn slice_manager(slice: &EndpointSlice) -> ManagedBy {
    let by = desired::slice_manager(slice).map(str::to_owned);
    let who = match by.as_deref() {
        Some(desired::SLICE_CONTROLLER_NAME | desired::MIRRORING_CONTROLLER_NAME) => Who::Roster,
        Some(desired::UPSTREAM_SLICE_CONTROLLER_NAME | desired::UPSTREAM_MIRRORING_CONTROLLER_NAME) => {
            Who::Upstream
        }
        Some(_) => Who::Other,
        None => Who::ByHand,
    };
    ManagedBy { who, by }
}
