//! Topology hints of EndpointSlice endpoints, as upstream's EndpointSlice controller sets them.
//!
//! Which hints a Service asks for ([`HintsMode::of`]): the topology annotation (`topology-mode`, or the
//! deprecated `topology-aware-hints`, which wins when both are set) at `Auto` asks for the allocation by
//! allocatable CPU per zone and takes precedence over `spec.trafficDistribution`; otherwise `PreferClose` and
//! `PreferSameZone` hint each ready endpoint for its own zone and `PreferSameNode` for its own node and zone.
//! Anything else asks for none, and hints found on existing slices are removed.
//!
//! The Auto allocation ([`allocate`]): each zone of the ready worker Nodes should receive endpoints in
//! proportion to its CPU, and no zone less than that share divided by 1 + [`OVERLOAD_THRESHOLD`]. Each ready
//! endpoint starts hinted for its own zone; zones above their share then give endpoints to zones below it,
//! one at a time from the largest surplus to the largest deficit. Where that is not safe no endpoint gets a
//! hint (see [`HintsDisabled`]).
//!
//! Hints are computed from the whole desired set of an address type, so the same endpoints and Nodes give
//! the same hints whatever the slice packing: an endpoint whose hints change is an endpoint that changed (and
//! is written), unchanged hints cost nothing. Which endpoints a zone gives away is chosen in endpoint order,
//! except that an endpoint already hinted for a zone that still receives keeps that hint.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointHints, ForNode, ForZone};

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
        HintsMode::Auto => match allocate(&topology.zones, endpoints, previous) {
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

fn is_ready(endpoint: &Endpoint) -> bool {
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

fn zone_hint(zone: &str) -> Option<EndpointHints> {
    Some(EndpointHints {
        for_zones: Some(vec![ForZone {
            name: zone.to_owned(),
        }]),
        for_nodes: None,
    })
}

/// The Auto allocation (see the module doc): every ready endpoint hinted, or the reason none is.
pub fn allocate(
    capacity: &ZoneCapacity,
    endpoints: &mut [&mut Endpoint],
    previous: &dyn Fn(&Endpoint) -> Option<Arc<str>>,
) -> Result<(), HintsDisabled> {
    let ZoneCapacity::Known(zones) = capacity else {
        return Err(HintsDisabled::InsufficientNodeInfo);
    };
    if zones.len() < 2 {
        return Err(HintsDisabled::NodesInOneZone);
    }
    let ready: Vec<usize> = (0..endpoints.len()).filter(|i| is_ready(endpoints[*i])).collect();
    let (n, zone_count) = (ready.len(), zones.len());
    if zone_count > n {
        return Err(HintsDisabled::TooFewEndpoints {
            endpoints: n,
            zones: zone_count,
        });
    }
    let targets = zone_targets(zones, n).ok_or(HintsDisabled::Overloaded {
        endpoints: n,
        zones: zone_count,
    })?;
    let by_zone = ready_by_zone(endpoints, &ready)?;
    if let Some(zone) = zones.keys().find(|z| !by_zone.contains_key(*z)) {
        return Err(HintsDisabled::ZoneWithoutEndpoints(zone.clone()));
    }
    let counts = by_zone.iter().map(|(z, e)| (z.clone(), e.len())).collect();
    let (give, receive) = transfers(&targets, &counts);
    let was_for = |i: usize| previous(endpoints[i]);
    let donated = donations(&by_zone, give, receive, &was_for);
    for (zone, members) in &by_zone {
        for i in members {
            let hinted = donated.get(i).unwrap_or(zone);
            endpoints[*i].hints = zone_hint(hinted);
        }
    }
    Ok(())
}

/// The ready endpoints (indices) of each zone, or the reason when one has no zone.
fn ready_by_zone(
    endpoints: &[&mut Endpoint],
    ready: &[usize],
) -> Result<BTreeMap<Arc<str>, Vec<usize>>, HintsDisabled> {
    let mut by_zone: BTreeMap<Arc<str>, Vec<usize>> = BTreeMap::new();
    for i in ready {
        let zone = endpoints[*i].zone.as_deref().filter(|z| !z.is_empty());
        let zone = zone.ok_or(HintsDisabled::EndpointWithoutZone)?;
        by_zone.entry(Arc::from(zone)).or_default().push(*i);
    }
    Ok(by_zone)
}

/// How many of `n` endpoints each zone should receive: its CPU share, and at least that share divided by
/// 1 + [`OVERLOAD_THRESHOLD`] rounded up. `None` when those minimums alone need more than `n`.
fn zone_targets(zones: &BTreeMap<Arc<str>, u64>, n: usize) -> Option<BTreeMap<Arc<str>, f64>> {
    let total: u64 = zones.values().sum();
    let mut minimums = 0;
    let mut targets = BTreeMap::new();
    for (zone, cpu) in zones {
        let share = *cpu as f64 / total as f64 * n as f64;
        let minimum = (share * (1.0 / (1.0 + OVERLOAD_THRESHOLD))).ceil() as usize;
        minimums += minimum;
        if minimums > n {
            return None;
        }
        targets.insert(zone.clone(), share.max(minimum as f64));
    }
    Some(targets)
}

type ZoneCounts = BTreeMap<Arc<str>, usize>;

/// How many endpoints each zone gives away and receives: one at a time from the zone with the largest
/// surplus over its target to the zone with the largest deficit, while both have at least half an endpoint
/// to move and one of them a whole one.
fn transfers(targets: &BTreeMap<Arc<str>, f64>, counts: &ZoneCounts) -> (ZoneCounts, ZoneCounts) {
    let mut surplus = BTreeMap::new();
    let mut deficit = BTreeMap::new();
    for (zone, target) in targets {
        let have = counts.get(zone).copied().unwrap_or(0) as f64;
        if have > *target {
            surplus.insert(zone.clone(), have - target);
        } else if have < *target {
            deficit.insert(zone.clone(), target - have);
        }
    }
    let (mut give, mut receive) = (ZoneCounts::new(), ZoneCounts::new());
    while let (Some((from, giving)), Some((to, taking))) = (largest(&surplus), largest(&deficit)) {
        if (giving < 1.0 && taking < 1.0) || giving < 0.5 || taking < 0.5 {
            break;
        }
        *give.entry(from.clone()).or_default() += 1;
        *receive.entry(to.clone()).or_default() += 1;
        *surplus.get_mut(&from).expect("listed") -= 1.0;
        *deficit.get_mut(&to).expect("listed") -= 1.0;
    }
    (give, receive)
}

/// The zone with the largest positive value (the first by name among equals).
fn largest(values: &BTreeMap<Arc<str>, f64>) -> Option<(Arc<str>, f64)> {
    let mut best: Option<(&Arc<str>, f64)> = None;
    for (zone, value) in values {
        if *value > best.map_or(0.0, |(_, b)| b) {
            best = Some((zone, *value));
        }
    }
    best.map(|(zone, value)| (zone.clone(), value))
}

/// Which endpoints the giving zones hand to which receiving zones: first those already hinted for a zone
/// that still receives, then the rest in endpoint order.
fn donations(
    by_zone: &BTreeMap<Arc<str>, Vec<usize>>,
    mut give: ZoneCounts,
    mut receive: ZoneCounts,
    was_for: &dyn Fn(usize) -> Option<Arc<str>>,
) -> BTreeMap<usize, Arc<str>> {
    let mut donated = BTreeMap::new();
    for (from, quota) in give.iter_mut() {
        for i in &by_zone[from] {
            let Some(to) = was_for(*i).filter(|to| receive.get(to).is_some_and(|n| *n > 0)) else {
                continue;
            };
            if *quota == 0 {
                break;
            }
            *quota -= 1;
            *receive.get_mut(&to).expect("receiving") -= 1;
            donated.insert(*i, to);
        }
    }
    for (to, need) in receive {
        for _ in 0..need {
            let Some((from, quota)) = give.iter_mut().find(|(_, q)| **q > 0) else {
                break;
            };
            let donor = by_zone[from].iter().find(|i| !donated.contains_key(*i));
            let Some(donor) = donor else { break };
            *quota -= 1;
            donated.insert(*donor, to.clone());
        }
    }
    donated
}

#[cfg(test)]
#[path = "hints_tests.rs"]
mod tests;
