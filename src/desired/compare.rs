//! What roster would publish against what is live: the comparison of shadow mode.
//!
//! Both sides are reduced to what a consumer reads: per address (and, for slices, per address type) its
//! readiness, ports, hostname, node, zone, target and hints, never slice packing or names, nor what only
//! records who wrote an object (resourceVersions, the trigger time, roster's ownership and skip-mirror
//! labels, the managed-by label). Each remaining difference is of one [`DifferenceKind`]; the ones that are
//! roster's documented divergences from upstream (README's behaviour table) name their row, so that on a
//! healthy cluster every difference left unexplained is a finding.
//!
//! Hints are compared endpoint by endpoint. Where either side hints an endpoint for a zone other than its
//! own (only the Auto allocation does), the hints of that address type differ as README row F30 says:
//! upstream's choice of which endpoints a zone gives away depends on slice order and map iteration, roster's
//! on endpoint order, and roster sets no hints where a zone has no endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, ObjectReference};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use super::labels::{
    ANNOTATION_OVER_CAPACITY, LABEL_ENDPOINTS_MANAGED_BY, LABEL_MANAGED_BY, LABEL_SKIP_MIRROR,
};
use crate::cache::parse_ip;

/// What differs for one address (or one object).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DifferenceKind {
    /// roster would publish the address; the live object lacks it.
    AddressMissing,
    /// The live object has an address roster would not publish.
    AddressExtra,
    Readiness,
    Ports,
    Hostname,
    NodeName,
    Zone,
    TargetRef,
    Hints,
    Labels,
    Capacity,
    /// roster would publish an object that does not exist, or none where one exists.
    Object,
}

impl DifferenceKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DifferenceKind::AddressMissing => "address_missing",
            DifferenceKind::AddressExtra => "address_extra",
            DifferenceKind::Readiness => "readiness",
            DifferenceKind::Ports => "ports",
            DifferenceKind::Hostname => "hostname",
            DifferenceKind::NodeName => "node_name",
            DifferenceKind::Zone => "zone",
            DifferenceKind::TargetRef => "target_ref",
            DifferenceKind::Hints => "hints",
            DifferenceKind::Labels => "labels",
            DifferenceKind::Capacity => "capacity",
            DifferenceKind::Object => "object",
        }
    }
}

/// One difference: its kind, where (an address, `<kind>` for the whole object), and the README row that
/// explains it when it is one of roster's deliberate divergences.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Difference {
    pub kind: DifferenceKind,
    pub at: String,
    pub explained_by: Option<&'static str>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.label(), self.at)?;
        match self.explained_by {
            Some(row) => write!(f, " ({row})"),
            None => Ok(()),
        }
    }
}

/// An address as an Endpoints object publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EndpointsAddress {
    ready: bool,
    ports: BTreeSet<String>,
    hostname: Option<String>,
    node_name: Option<String>,
    target: Option<String>,
}

type EndpointsView = BTreeMap<String, EndpointsAddress>;

/// Compares the Endpoints roster would write (`None`: none) with the live one.
pub fn compare_endpoints(desired: Option<&Endpoints>, live: Option<&Endpoints>) -> Vec<Difference> {
    let (desired, live) = match (desired, live) {
        (None, None) => return Vec::new(),
        (Some(_), None) | (None, Some(_)) => return vec![object_difference("Endpoints")],
        (Some(d), Some(l)) => (d, l),
    };
    let mut differences = Vec::new();
    if significant_labels(&desired.metadata.labels) != significant_labels(&live.metadata.labels) {
        differences.push(whole(DifferenceKind::Labels, "Endpoints", None));
    }
    if over_capacity(desired) != over_capacity(live) {
        differences.push(whole(DifferenceKind::Capacity, "Endpoints", None));
    }
    let (d, l) = (endpoints_view(desired), endpoints_view(live));
    differences.extend(compare_views(&d, &l, endpoints_address_differences));
    differences
}

fn object_difference(what: &str) -> Difference {
    whole(DifferenceKind::Object, what, None)
}

fn whole(kind: DifferenceKind, what: &str, explained_by: Option<&'static str>) -> Difference {
    Difference {
        kind,
        at: format!("<{what}>"),
        explained_by,
    }
}

/// Labels that say something about the Service, not about who wrote the object.
fn significant_labels(labels: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut labels = labels.clone().unwrap_or_default();
    for key in [LABEL_ENDPOINTS_MANAGED_BY, LABEL_SKIP_MIRROR, LABEL_MANAGED_BY] {
        labels.remove(key);
    }
    labels
}

fn over_capacity(ep: &Endpoints) -> bool {
    let annotations = ep.metadata.annotations.as_ref();
    annotations.is_some_and(|a| a.contains_key(ANNOTATION_OVER_CAPACITY))
}

/// The canonical text of an IP (so `::ffff:10.0.0.1` or `010.0.0.1` compare equal to roster's form).
pub fn canonical_ip(text: &str) -> String {
    parse_ip(text).map_or_else(|| text.to_owned(), |ip| ip.to_string())
}

fn endpoints_view(ep: &Endpoints) -> EndpointsView {
    let mut view = EndpointsView::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: BTreeSet<String> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| port_text(p.name.as_deref(), p.port, p.protocol.as_deref()))
            .collect();
        let all = [(true, &subset.addresses), (false, &subset.not_ready_addresses)];
        for (ready, addresses) in all {
            for address in addresses.iter().flatten() {
                let entry = view
                    .entry(canonical_ip(&address.ip))
                    .or_insert_with(|| endpoints_address(address, ready));
                entry.ready &= ready;
                entry.ports.extend(ports.iter().cloned());
            }
        }
    }
    view
}

/// A port as `name:port/protocol`, for comparing and showing.
fn port_text(name: Option<&str>, port: i32, protocol: Option<&str>) -> String {
    format!("{}:{port}/{}", name.unwrap_or(""), protocol.unwrap_or("TCP"))
}

/// A target reference as `namespace/name/uid`, for comparing and showing.
fn target_text(t: &ObjectReference) -> String {
    let field = |f: &Option<String>| f.clone().unwrap_or_default();
    format!("{}/{}/{}", field(&t.namespace), field(&t.name), field(&t.uid))
}

fn endpoints_address(address: &EndpointAddress, ready: bool) -> EndpointsAddress {
    EndpointsAddress {
        ready,
        ports: BTreeSet::new(),
        hostname: address.hostname.clone(),
        node_name: address.node_name.clone(),
        target: address.target_ref.as_ref().map(target_text),
    }
}

fn endpoints_address_differences(
    d: &EndpointsAddress,
    l: &EndpointsAddress,
) -> Vec<(DifferenceKind, Option<&'static str>)> {
    let mut kinds = Vec::new();
    if d.ready != l.ready {
        kinds.push((DifferenceKind::Readiness, None));
    }
    if d.ports != l.ports {
        kinds.push((DifferenceKind::Ports, None));
    }
    if d.hostname != l.hostname {
        kinds.push((DifferenceKind::Hostname, None));
    }
    if d.node_name != l.node_name {
        // Upstream writes `nodeName: ""` for a pod without a node; roster leaves it out.
        let empty_against_none = d.node_name.is_none() && l.node_name.as_deref() == Some("");
        kinds.push((DifferenceKind::NodeName, empty_against_none.then_some("F13")));
    }
    if d.target != l.target {
        kinds.push((DifferenceKind::TargetRef, None));
    }
    kinds
}

/// Per-address differences between two views: missing, extra, and what differs where both have it.
fn compare_views<K: Ord + fmt::Display, V>(
    desired: &BTreeMap<K, V>,
    live: &BTreeMap<K, V>,
    differ: impl Fn(&V, &V) -> Vec<(DifferenceKind, Option<&'static str>)>,
) -> Vec<Difference> {
    let mut differences = Vec::new();
    for (at, d) in desired {
        let found = live.get(at).map(|l| differ(d, l));
        let kinds = found.unwrap_or_else(|| vec![(DifferenceKind::AddressMissing, None)]);
        differences.extend(kinds.into_iter().map(|(kind, explained_by)| Difference {
            kind,
            at: at.to_string(),
            explained_by,
        }));
    }
    let extra = live.keys().filter(|at| !desired.contains_key(*at));
    differences.extend(extra.map(|at| Difference {
        kind: DifferenceKind::AddressExtra,
        at: at.to_string(),
        explained_by: None,
    }));
    differences
}

/// An endpoint as a slice publishes it, with its slice's ports.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SliceEndpoint {
    conditions: (Option<bool>, Option<bool>, Option<bool>),
    ports: BTreeSet<String>,
    zone: Option<String>,
    node_name: Option<String>,
    hostname: Option<String>,
    target: Option<String>,
    /// Zones and nodes hinted, when there are hints.
    hints: Option<(Vec<String>, Vec<String>)>,
}

impl SliceEndpoint {
    /// Hinted for a zone not its own: handed to another zone by the Auto allocation.
    fn donated(&self) -> bool {
        let hinted = self.hints.iter().flat_map(|(zones, _)| zones);
        hinted.into_iter().any(|zone| Some(zone) != self.zone.as_ref())
    }
}

/// Address type and address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SliceAddress(String, String);

impl fmt::Display for SliceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// Compares the slices roster would write with the live ones of the same Service, as sets of endpoints
/// per address type. `service_has_ports`: a live endpoint in a slice without ports, of a Service that has
/// ports, is upstream's `ports: []` group for pods without a resolvable port (roster leaves them out).
pub fn compare_slices(
    desired: &[EndpointSlice],
    live: &[EndpointSlice],
    service_has_ports: bool,
) -> Vec<Difference> {
    let (d, l) = (slices_view(desired), slices_view(live));
    let mut differences = compare_views(&d, &l, slice_endpoint_differences);
    let allocated: BTreeSet<&str> = d
        .iter()
        .chain(&l)
        .filter(|(_, e)| e.donated())
        .map(|(a, _)| a.0.as_str())
        .collect();
    for difference in &mut differences {
        let portless = |at: &str| l.iter().any(|(a, e)| a.to_string() == at && e.ports.is_empty());
        if difference.kind == DifferenceKind::AddressExtra && service_has_ports && portless(&difference.at) {
            difference.explained_by = Some("F18");
        }
        let address_type = difference.at.split(' ').next().unwrap_or_default();
        if difference.kind == DifferenceKind::Hints && allocated.contains(address_type) {
            difference.explained_by = Some("F30");
        }
    }
    let labels = |slices: &[EndpointSlice]| -> BTreeSet<BTreeMap<String, String>> {
        slices
            .iter()
            .map(|s| significant_labels(&s.metadata.labels))
            .collect()
    };
    if !desired.is_empty() && !live.is_empty() && labels(desired) != labels(live) {
        differences.push(whole(DifferenceKind::Labels, "EndpointSlices", None));
    }
    if desired.is_empty() != live.is_empty() {
        differences.push(object_difference("EndpointSlices"));
    }
    differences
}

fn slices_view(slices: &[EndpointSlice]) -> BTreeMap<SliceAddress, SliceEndpoint> {
    let mut view = BTreeMap::new();
    for slice in slices {
        let ports: BTreeSet<String> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| port_text(p.name.as_deref(), p.port.unwrap_or(0), p.protocol.as_deref()))
            .collect();
        for endpoint in &slice.endpoints {
            for address in &endpoint.addresses {
                let at = SliceAddress(slice.address_type.clone(), canonical_ip(address));
                view.insert(at, slice_endpoint(endpoint, &ports));
            }
        }
    }
    view
}

fn slice_endpoint(endpoint: &Endpoint, ports: &BTreeSet<String>) -> SliceEndpoint {
    let c = endpoint.conditions.clone().unwrap_or_default();
    SliceEndpoint {
        conditions: (c.ready, c.serving, c.terminating),
        ports: ports.clone(),
        zone: endpoint.zone.clone(),
        node_name: endpoint.node_name.clone(),
        hostname: endpoint.hostname.clone(),
        target: endpoint.target_ref.as_ref().map(target_text),
        hints: endpoint.hints.as_ref().map(|h| {
            let zones = h.for_zones.iter().flatten().map(|z| z.name.clone());
            let nodes = h.for_nodes.iter().flatten().map(|n| n.name.clone());
            (sorted(zones), sorted(nodes))
        }),
    }
}

fn sorted(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.collect();
    names.sort();
    names
}

fn slice_endpoint_differences(
    d: &SliceEndpoint,
    l: &SliceEndpoint,
) -> Vec<(DifferenceKind, Option<&'static str>)> {
    let checks = [
        (d.conditions != l.conditions, DifferenceKind::Readiness, None),
        (d.ports != l.ports, DifferenceKind::Ports, None),
        (d.zone != l.zone, DifferenceKind::Zone, None),
        (d.node_name != l.node_name, DifferenceKind::NodeName, None),
        (d.hostname != l.hostname, DifferenceKind::Hostname, None),
        (d.target != l.target, DifferenceKind::TargetRef, None),
        (d.hints != l.hints, DifferenceKind::Hints, None),
    ];
    checks
        .into_iter()
        .filter(|(differs, _, _)| *differs)
        .map(|(_, kind, row)| (kind, row))
        .collect()
}

#[cfg(test)]
#[path = "compare_tests.rs"]
mod tests;
