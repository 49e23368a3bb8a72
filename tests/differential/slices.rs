//! Comparing both sides' EndpointSlices: each Service's slices become one set of endpoints, each entry
//! carrying its address family, its slice's ports and which controller made it (the Service's own or the
//! mirroring one), so packing and slice names never matter. Both sides are read as discovery.k8s.io/v1
//! through the test environment's facade (upstream's from kube-controller-manager 1.20's v1beta1).
//!
//! What legitimately differs, and each documented divergence (README behaviour table, by row), is removed
//! here by name; anything else that differs is a finding.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};

use crate::normalize::{Side, Tally, documented_absence, ip_text, is_target_in, target};
use crate::scenario::Scenario;

const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// Which controller made a slice. F29/F31: each side names its controllers its own way, so the
/// managed-by values are mapped by name; any other value is kept whole, and shows up as a finding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Maker {
    Service,
    Mirroring,
    Other(String),
}

fn maker(side: Side, managed_by: &str) -> Maker {
    match (side, managed_by) {
        (Side::Upstream, "endpointslice-controller.k8s.io")
        | (Side::Roster, "endpointslice-controller.roster.dev") => Maker::Service,
        (Side::Upstream, "endpointslicemirroring-controller.k8s.io")
        | (Side::Roster, "endpointslicemirroring-controller.roster.dev") => Maker::Mirroring,
        (_, other) => Maker::Other(other.to_string()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Port {
    name: Option<String>,
    port: Option<i32>,
    protocol: Option<String>,
    app_protocol: Option<String>,
}

/// One endpoint of a Service, with what it shares with its slice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    maker: Maker,
    family: String,
    ports: Vec<Port>,
    addresses: Vec<String>,
    /// ready, serving, terminating.
    conditions: (Option<bool>, Option<bool>, Option<bool>),
    zone: Option<String>,
    node_name: Option<String>,
    hostname: Option<String>,
    target: Option<String>,
}

pub type Entries = BTreeSet<Entry>;

/// Every slice's endpoints, by the Service named in its `kubernetes.io/service-name` label; `endpoints`
/// are the same side's Endpoints, which its mirroring controller reads.
pub fn by_service(
    slices: &[EndpointSlice],
    endpoints: &BTreeMap<String, Endpoints>,
    side: Side,
    scenario: &Scenario,
    tally: &mut Tally,
) -> BTreeMap<String, Entries> {
    let terminal = scenario.terminal_pods();
    let not_ready = not_ready_addresses(endpoints);
    let mut out: BTreeMap<String, Entries> = BTreeMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        let service = labels.get(SERVICE_NAME).cloned().unwrap_or_default();
        let maker = maker(side, labels.get(MANAGED_BY).map_or("", String::as_str));
        let model = scenario.services.iter().find(|s| s.name == service && s.exists);
        let has_ports = model.is_some_and(|s| s.has_ports);
        if side == Side::Upstream && maker == Maker::Mirroring && model.is_some_and(|s| s.selector.is_some())
        {
            // F3 (#91072): a selectorless Service that gains a selector keeps its mirrored slices upstream;
            // roster removes the slices it mirrored, as it removes its objects when a selector goes away.
            *tally.entry("F3 selector added (mirrored slices)").or_default() += slice.endpoints.len();
            continue;
        }
        let mut ports: Vec<Port> = slice.ports.iter().flatten().map(port).collect();
        ports.sort();
        if side == Side::Upstream && maker == Maker::Service && ports.is_empty() && has_ports {
            // F18: upstream publishes pods whose named target port resolves nowhere in a `ports: []`
            // group (#109627); roster leaves them out of slices, as both leave them out of Endpoints.
            *tally.entry("F18 unresolvable named port (slices)").or_default() += slice.endpoints.len();
            continue;
        }
        let set = out.entry(service.clone()).or_default();
        for ep in &slice.endpoints {
            let mut entry = entry(ep, side, tally, (&maker, &slice.address_type, &ports));
            let was_not_ready = |a: &String| not_ready.contains(&(service.clone(), a.clone()));
            if side == Side::Upstream
                && maker == Maker::Mirroring
                && entry.conditions.0 == Some(true)
                && entry.addresses.iter().any(was_not_ready)
            {
                // F31 (1.20.2 only): its mirroring controller marks an Endpoints' notReadyAddresses ready
                // (kubernetes#102683, fixed in later patch releases); roster mirrors them as not ready.
                *tally
                    .entry("F31 mirrored notReadyAddresses (1.20.2)")
                    .or_default() += 1;
                entry.conditions.0 = Some(false);
            }
            if side == Side::Upstream && is_target_in(entry.target.as_ref(), &terminal) {
                // F6 (1.20 only), as for Endpoints: 1.20 keeps some terminal pods by restartPolicy.
                *tally.entry("F6 terminal pods (1.20, slices)").or_default() += 1;
                continue;
            }
            set.insert(entry);
        }
    }
    out
}

fn entry(ep: &Endpoint, side: Side, tally: &mut Tally, slice: (&Maker, &str, &[Port])) -> Entry {
    let (maker, family, ports) = slice;
    let mut addresses: Vec<String> = ep.addresses.iter().map(|a| ip_text(a, side)).collect();
    if addresses != ep.addresses {
        *tally.entry("F16 IP text (slices)").or_default() += 1;
    }
    addresses.sort();
    let c = ep.conditions.clone().unwrap_or_default();
    Entry {
        maker: maker.clone(),
        family: family.to_string(),
        ports: ports.to_vec(),
        addresses,
        conditions: (c.ready, c.serving, c.terminating),
        zone: ep.zone.clone(),
        node_name: ep.node_name.clone(),
        hostname: ep.hostname.clone(),
        target: ep.target_ref.as_ref().map(target),
    }
}

/// (Service, IP) of every not-ready address in `endpoints`.
fn not_ready_addresses(endpoints: &BTreeMap<String, Endpoints>) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (name, ep) in endpoints {
        for subset in ep.subsets.iter().flatten() {
            for address in subset.not_ready_addresses.iter().flatten() {
                out.insert((name.clone(), address.ip.clone()));
            }
        }
    }
    out
}

fn port(p: &EndpointPort) -> Port {
    Port {
        name: p.name.clone(),
        port: p.port,
        protocol: p.protocol.clone(),
        app_protocol: p.app_protocol.clone(),
    }
}

/// Every difference between the two sides' slices, one readable block per Service; empty when they agree.
pub fn compare(
    scenario: &Scenario,
    upstream: &BTreeMap<String, Entries>,
    roster: &BTreeMap<String, Entries>,
    tally: &mut Tally,
) -> Vec<String> {
    let names: BTreeSet<&String> = upstream.keys().chain(roster.keys()).collect();
    let empty = Entries::new();
    let mut out = Vec::new();
    for name in names {
        let (u, r) = (
            upstream.get(name).unwrap_or(&empty),
            roster.get(name).unwrap_or(&empty),
        );
        let deleted = !scenario.services.iter().any(|s| &s.name == name && s.exists);
        // F1: upstream leaves a deleted Service's slices to the garbage collector, which does not run here.
        let absence = documented_absence(scenario, name).or(deleted.then_some("F1 Service deleted (slices)"));
        if let Some(row) = absence {
            if !u.is_empty() {
                *tally.entry(row).or_default() += 1;
            }
            if !r.is_empty() {
                out.push(format!(
                    "EndpointSlices of {name}: roster must publish none (README {row}), has:\n{}",
                    render(r.iter())
                ));
            }
            continue;
        }
        if u != r {
            out.push(format!(
                "EndpointSlices of {name} differ:\n--- only upstream\n{}+++ only roster\n{}",
                render(u.difference(r)),
                render(r.difference(u))
            ));
        }
    }
    out
}

fn render<'a>(entries: impl Iterator<Item = &'a Entry>) -> String {
    let mut s = String::new();
    for e in entries {
        let ports: Vec<String> = e
            .ports
            .iter()
            .map(|p| {
                let name = p.name.as_deref().unwrap_or("");
                let proto = p.protocol.as_deref().unwrap_or("");
                let app = p
                    .app_protocol
                    .as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default();
                format!("{name}:{}/{proto}{app}", p.port.unwrap_or(0))
            })
            .collect();
        let _ = writeln!(
            s,
            "  {:?} {} [{}] {} ready={:?} serving={:?} terminating={:?} zone={:?} node={:?} hostname={:?} {}",
            e.maker,
            e.family,
            ports.join(", "),
            e.addresses.join(","),
            e.conditions.0,
            e.conditions.1,
            e.conditions.2,
            e.zone,
            e.node_name,
            e.hostname,
            e.target.as_deref().unwrap_or("-"),
        );
    }
    s
}
