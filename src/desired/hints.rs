//! Topology hints of EndpointSlice endpoints, as upstream's EndpointSlice controller sets them.
//!
//! Which hints a Service asks for ([`HintsMode::of`]): the topology annotation (`topology-mode`, or the
//! deprecated `topology-aware-hints`, which wins when both are set) at `Auto` asks for the allocation by
//! allocatable CPU per zone and takes precedence over `spec.trafficDistribution`; otherwise `PreferClose` and
//! `PreferSameZone` hint each ready endpoint for its own zone and `PreferSameNode` for its own node and zone.
//! Anything else asks for none, and hints found on existing slices are removed.
//!
//! The Auto allocation is in [`super::allocation`]; where it is not safe no endpoint gets a hint (see
//! [`HintsDisabled`]).
//!
//! Hints are computed from the whole desired set of an address type, so the same endpoints and Nodes give
//! the same hints whatever the slice packing: an endpoint whose hints change is an endpoint that changed (and
//! is written), unchanged hints cost nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointHints, ForNode, ForZone};

use super::allocation;
use crate::cache::{NodeRecord, ServiceRecord};

/// The most expected overload of one zone's endpoints the Auto allocation accepts (20 %).
pub const OVERLOAD_THRESHOLD: f64 = 0.2;

/// The hints a Service asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintsMode {
    /// None: existing hints are removed.
    Off,
    /// `topology-mode: Auto`: zones allocated by allocatable CPU.
    Auto,
    /// `trafficDistribution: PreferClose` or `PreferSameZone`: each ready endpoint for its own zone.
    SameZone,
    /// `trafficDistribution: PreferSameNode`: each ready endpoint for its own node and its own zone.
    SameNode,
}

impl HintsMode {
    pub fn of(svc: &ServiceRecord) -> HintsMode {
        if svc.topology_auto() {
            return HintsMode::Auto;
        }
        match svc.traffic_distribution.as_deref() {
            Some("PreferClose" | "PreferSameZone") => HintsMode::SameZone,
            Some("PreferSameNode") => HintsMode::SameNode,
            _ => HintsMode::Off,
        }
    }
}

/// Allocatable CPU per zone of the Nodes that count for the Auto allocation: ready, and not labelled as
/// control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ZoneCapacity {
    /// No counted Node, or one without a zone or without allocatable CPU: no Auto hints anywhere.
    #[default]
    Insufficient,
    /// Millicores per zone, every one above zero.
    Known(BTreeMap<Arc<str>, u64>),
}

impl ZoneCapacity {
    pub fn of_nodes<'a>(nodes: impl IntoIterator<Item = &'a NodeRecord>) -> ZoneCapacity {
        let mut zones: BTreeMap<Arc<str>, u64> = BTreeMap::new();
        for node in nodes.into_iter().filter(|n| n.ready && !n.control_plane) {
            match &node.zone {
                Some(zone) if node.cpu_millis > 0 => {
                    let cpu = zones.entry(zone.clone()).or_default();
                    *cpu = cpu.saturating_add(node.cpu_millis);
                }
                _ => return ZoneCapacity::Insufficient,
            }
        }
        match zones.is_empty() {
            true => ZoneCapacity::Insufficient,
            false => ZoneCapacity::Known(zones),
        }
    }
}

/// What hints need besides the Service and its endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopologyInput {
    /// The API server stores EndpointSlice hints (Kubernetes 1.21 and later); without it none is written.
    pub hints_supported: bool,
    /// For `topology-mode: Auto`.
    pub zones: Arc<ZoneCapacity>,
}

/// Why a Service that asks for hints gets none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HintsDisabled {
    ServerCannotStoreHints,
    InsufficientNodeInfo,
    NodesInOneZone,
    TooFewEndpoints { endpoints: usize, zones: usize },
    Overloaded { endpoints: usize, zones: usize },
    EndpointWithoutZone,
    ZoneWithoutEndpoints(Arc<str>),
}

impl fmt::Display for HintsDisabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HintsDisabled::ServerCannotStoreHints => {
                f.write_str("the API server cannot store EndpointSlice hints (it predates Kubernetes 1.21)")
            }
            HintsDisabled::InsufficientNodeInfo => f.write_str(
                "a ready Node without a control-plane label has no zone label or no allocatable CPU",
            ),
            HintsDisabled::NodesInOneZone => f.write_str("the ready Nodes are all in one zone"),
            HintsDisabled::TooFewEndpoints { endpoints, zones } => {
                write!(f, "fewer ready endpoints ({endpoints}) than zones ({zones})")
            }
            HintsDisabled::Overloaded { endpoints, zones } => write!(
                f,
                "{endpoints} ready endpoints cannot be spread over {zones} zones without overloading one \
                 zone's endpoints by more than {}%",
                OVERLOAD_THRESHOLD * 100.0
            ),
            HintsDisabled::EndpointWithoutZone => f.write_str("a ready endpoint has no zone"),
            HintsDisabled::ZoneWithoutEndpoints(zone) => write!(f, "zone {zone} has no ready endpoint"),
        }
    }
}

/// The hints one address type's endpoints got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HintsOutcome {
    /// None asked for.
    NotRequested,
    /// As `spec.trafficDistribution` asks.
    TrafficDistribution,
    /// By the Auto allocation.
    Allocated,
    /// Asked for, but none set, for this reason.
    Disabled(HintsDisabled),
}

/// Sets the hints of one address type's desired endpoints. `previous` tells the zone an endpoint was hinted
/// for in the existing slices (the Auto allocation keeps it where it can).
pub fn set_hints(
    mode: HintsMode,
    topology: &TopologyInput,
    endpoints: &mut [&mut Endpoint],
    previous: &dyn Fn(&Endpoint) -> Option<Arc<str>>,
) -> HintsOutcome {
    for endpoint in endpoints.iter_mut() {
        endpoint.hints = None;
    }
    match mode {
        HintsMode::Off => HintsOutcome::NotRequested,
        _ if !topology.hints_supported => HintsOutcome::Disabled(HintsDisabled::ServerCannotStoreHints),
        HintsMode::Auto => match allocation::allocate(&topology.zones, endpoints, previous) {
            Ok(()) => HintsOutcome::Allocated,
            Err(why) => HintsOutcome::Disabled(why),
        },
        HintsMode::SameZone | HintsMode::SameNode => {
            for endpoint in endpoints.iter_mut().filter(|e| is_ready(e)) {
                endpoint.hints = close_hints(endpoint, mode == HintsMode::SameNode);
            }
            HintsOutcome::TrafficDistribution
        }
    }
}

pub(super) fn is_ready(endpoint: &Endpoint) -> bool {
    endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(true)
}

/// The endpoint's own zone, and with `node` its own node; `None` when it has neither.
fn close_hints(endpoint: &Endpoint, node: bool) -> Option<EndpointHints> {
    let for_zones = endpoint.zone.clone().map(|name| vec![ForZone { name }]);
    let for_nodes = node
        .then(|| endpoint.node_name.clone())
        .flatten()
        .map(|name| vec![ForNode { name }]);
    (for_zones.is_some() || for_nodes.is_some()).then_some(EndpointHints { for_nodes, for_zones })
}

pub(super) fn zone_hint(zone: &str) -> Option<EndpointHints> {
    Some(EndpointHints {
        for_zones: Some(vec![ForZone {
            name: zone.to_owned(),
        }]),
        for_nodes: None,
    })
}

#[cfg(test)]
#[path = "hints_tests.rs"]
mod tests;
