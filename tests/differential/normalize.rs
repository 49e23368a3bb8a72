//! Normalising both controllers' Endpoints before comparing them: what legitimately differs between two
//! API servers (uids, resourceVersions, timestamps) and each documented divergence (README behaviour table,
//! by row; and where kube-controller-manager 1.20 predates today's upstream, said so) is removed explicitly
//! here. Anything else that differs is a finding.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, Endpoints, ObjectReference};

use crate::scenario::{Scenario, SvcKind};

const ROSTER_OWNERSHIP_LABEL: &str = "endpoints.roster.dev/managed-by";
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Upstream,
    Roster,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Address {
    ip: String,
    hostname: Option<String>,
    node_name: Option<String>,
    /// `kind/namespace/name`; the uid differs between the two servers, the resourceVersion too.
    target: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Port {
    name: Option<String>,
    port: i32,
    protocol: Option<String>,
    app_protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Subset {
    ports: Vec<Port>,
    ready: Vec<Address>,
    not_ready: Vec<Address>,
}

/// One Endpoints object, reduced to what both controllers must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    subsets: Vec<Subset>,
}

/// How often each normalisation changed something, by README row (printed by the test).
pub type Tally = BTreeMap<&'static str, usize>;

pub fn normalize(
    ep: &Endpoints,
    side: Side,
    terminal_pods: &BTreeSet<String>,
    tally: &mut Tally,
) -> Normalized {
    let mut labels = ep.metadata.labels.clone().unwrap_or_default();
    if side == Side::Roster && labels.get(ROSTER_OWNERSHIP_LABEL).map(String::as_str) == Some("roster") {
        // F22: roster adds its ownership label to the Service's labels (and only ever deletes what carries it).
        labels.remove(ROSTER_OWNERSHIP_LABEL);
        *tally.entry("F22 ownership label").or_default() += 1;
    }
    let mut annotations = ep.metadata.annotations.clone().unwrap_or_default();
    // F23: the trigger time is a timestamp of the change each controller saw; it differs by nature.
    annotations.remove(TRIGGER_TIME);
    let mut subsets: Vec<Subset> = ep
        .subsets
        .iter()
        .flatten()
        .map(|s| subset(s, side, tally))
        .collect();
    if side == Side::Upstream {
        let before: usize = subsets.iter().map(|s| s.ready.len() + s.not_ready.len()).sum();
        // F6 (1.20 only): kube-controller-manager 1.20 decides by restartPolicy whether a pod in a terminal
        // phase stays (Always: kept as not ready; with publishNotReadyAddresses even as ready). Later
        // releases exclude every Failed/Succeeded pod (ShouldPodBeInEndpoints), as roster does.
        for s in &mut subsets {
            s.ready.retain(|a| !is_pod_in(a, terminal_pods));
            s.not_ready.retain(|a| !is_pod_in(a, terminal_pods));
        }
        let after: usize = subsets.iter().map(|s| s.ready.len() + s.not_ready.len()).sum();
        if after != before {
            *tally.entry("F6 terminal pods (1.20)").or_default() += before - after;
            subsets = repack(&subsets);
        }
    }
    subsets.retain(|s| !s.ready.is_empty() || !s.not_ready.is_empty());
    subsets.sort();
    Normalized {
        labels,
        annotations,
        subsets,
    }
}

fn subset(s: &k8s_openapi::api::core::v1::EndpointSubset, side: Side, tally: &mut Tally) -> Subset {
    let mut addresses = |list: &Option<Vec<EndpointAddress>>| {
        let mut out: Vec<Address> = list.iter().flatten().map(|a| address(a, side, tally)).collect();
        out.sort();
        out
    };
    let ready = addresses(&s.addresses);
    let not_ready = addresses(&s.not_ready_addresses);
    let mut ports: Vec<Port> = s.ports.iter().flatten().map(port).collect();
    ports.sort();
    Subset {
        ports,
        ready,
        not_ready,
    }
}

fn address(a: &EndpointAddress, side: Side, tally: &mut Tally) -> Address {
    let ip = ip_text(&a.ip, side);
    let node_name = match (side, a.node_name.as_deref()) {
        // F13: upstream writes `nodeName: ""` for a pod without a Node, roster leaves it out. (On 1.20 the API
        // server rejects the empty name, so upstream cannot publish such a pod at all; the scenario gives every
        // pod with an IP a Node, as a kubelet would.)
        (Side::Upstream, Some("")) => {
            *tally.entry("F13 empty nodeName").or_default() += 1;
            None
        }
        (_, n) => n.map(str::to_string),
    };
    if ip != a.ip {
        *tally.entry("F16 IP text").or_default() += 1;
    }
    if a.target_ref
        .as_ref()
        .is_some_and(|t| t.resource_version.is_some())
    {
        *tally.entry("F15 targetRef resourceVersion (1.20)").or_default() += 1;
    }
    Address {
        ip,
        hostname: a.hostname.clone(),
        node_name,
        target: a.target_ref.as_ref().map(target),
    }
}

/// F16: roster writes IPs in canonical text; 1.20 (like later releases, for Endpoints) copies the pod's
/// string as it is.
pub fn ip_text(ip: &str, side: Side) -> String {
    match side {
        Side::Upstream => ip.parse::<IpAddr>().map_or(ip.to_string(), |ip| ip.to_string()),
        Side::Roster => ip.to_string(),
    }
}

/// F15: kind, namespace and name must agree; 1.20 also copies the pod's resourceVersion (later releases do
/// not, and roster does not), and uids are per server.
pub fn target(t: &ObjectReference) -> String {
    format!(
        "{}/{}/{}",
        t.kind.as_deref().unwrap_or(""),
        t.namespace.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or("")
    )
}

/// Whether `target` (as [`target`] writes it) is one of `pods`.
pub fn is_target_in(target: Option<&String>, pods: &BTreeSet<String>) -> bool {
    target
        .and_then(|t| t.rsplit('/').next())
        .is_some_and(|name| pods.contains(name))
}

/// The README row under which a Service must have no objects of roster's at all, while upstream may keep
/// some: F2 (ExternalName) and F3 (selector removed).
pub fn documented_absence(scenario: &Scenario, name: &str) -> Option<&'static str> {
    match scenario.services.iter().find(|s| s.name == name && s.exists) {
        // F2: upstream (1.20, before kubernetes#114814) publishes Endpoints for an ExternalName Service
        // with a selector; roster publishes none.
        Some(s) if s.kind == SvcKind::ExternalName => Some("F2 ExternalName"),
        // F3: when a Service loses its selector upstream leaves its Endpoints as they were (#91072);
        // roster removes the ones it made.
        Some(s) if s.selector.is_none() && s.lost_selector => Some("F3 selector removed"),
        _ => None,
    }
}

fn port(p: &EndpointPort) -> Port {
    Port {
        name: p.name.clone(),
        port: p.port,
        protocol: p.protocol.clone(),
        app_protocol: p.app_protocol.clone(),
    }
}

fn is_pod_in(a: &Address, pods: &BTreeSet<String>) -> bool {
    is_target_in(a.target.as_ref(), pods)
}

/// The canonical grouping again after addresses were removed: ports that now serve identical addresses
/// share one subset (F21).
fn repack(subsets: &[Subset]) -> Vec<Subset> {
    let mut by_port: BTreeMap<Option<Port>, BTreeSet<(Address, bool)>> = BTreeMap::new();
    for s in subsets {
        let ports: Vec<Option<Port>> = if s.ports.is_empty() {
            vec![None]
        } else {
            s.ports.iter().cloned().map(Some).collect()
        };
        for p in ports {
            let set = by_port.entry(p).or_default();
            set.extend(s.ready.iter().map(|a| (a.clone(), true)));
            set.extend(s.not_ready.iter().map(|a| (a.clone(), false)));
        }
    }
    let mut by_addresses: BTreeMap<BTreeSet<(Address, bool)>, Vec<Port>> = BTreeMap::new();
    for (port, addresses) in by_port.into_iter().filter(|(_, a)| !a.is_empty()) {
        let ports = by_addresses.entry(addresses).or_default();
        ports.extend(port);
    }
    by_addresses
        .into_iter()
        .map(|(addresses, mut ports)| {
            ports.sort();
            Subset {
                ports,
                ready: addresses
                    .iter()
                    .filter(|(_, r)| *r)
                    .map(|(a, _)| a.clone())
                    .collect(),
                not_ready: addresses
                    .iter()
                    .filter(|(_, r)| !*r)
                    .map(|(a, _)| a.clone())
                    .collect(),
            }
        })
        .collect()
}

/// Every difference between the two sides, one readable block per Service; empty when they agree.
pub fn compare(
    scenario: &Scenario,
    upstream: &BTreeMap<String, Endpoints>,
    roster: &BTreeMap<String, Endpoints>,
    tally: &mut Tally,
) -> Vec<String> {
    let terminal = scenario.terminal_pods();
    let names: BTreeSet<&String> = upstream.keys().chain(roster.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let (u, r) = (upstream.get(name), roster.get(name));
        if let Some(row) = documented_absence(scenario, name) {
            if u.is_some() {
                *tally.entry(row).or_default() += 1;
            }
            if let Some(r) = r {
                out.push(format!(
                    "Endpoints {name}: roster must publish none (README {row}), has:\n{}",
                    render(&normalize(r, Side::Roster, &terminal, tally))
                ));
            }
            continue;
        }
        match (u, r) {
            (Some(u), Some(r)) => {
                let nu = normalize(u, Side::Upstream, &terminal, tally);
                let nr = normalize(r, Side::Roster, &terminal, tally);
                if nu != nr {
                    out.push(format!(
                        "Endpoints {name} differ:\n--- upstream\n{}+++ roster\n{}",
                        render(&nu),
                        render(&nr)
                    ));
                }
            }
            (Some(u), None) => out.push(format!(
                "Endpoints {name}: only upstream has it:\n{}",
                render(&normalize(u, Side::Upstream, &terminal, tally))
            )),
            (None, Some(r)) => out.push(format!(
                "Endpoints {name}: only roster has it:\n{}",
                render(&normalize(r, Side::Roster, &terminal, tally))
            )),
            (None, None) => {}
        }
    }
    out
}

fn render(n: &Normalized) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "  labels: {:?}", n.labels);
    if !n.annotations.is_empty() {
        let _ = writeln!(s, "  annotations: {:?}", n.annotations);
    }
    if n.subsets.is_empty() {
        let _ = writeln!(s, "  (no subsets)");
    }
    for sub in &n.subsets {
        let ports: Vec<String> = sub
            .ports
            .iter()
            .map(|p| {
                format!(
                    "{}:{}/{}{}",
                    p.name.as_deref().unwrap_or(""),
                    p.port,
                    p.protocol.as_deref().unwrap_or(""),
                    p.app_protocol
                        .as_deref()
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let addr = |a: &Address| {
            format!(
                "{} {}{}{}",
                a.ip,
                a.target.as_deref().unwrap_or("-"),
                a.node_name
                    .as_deref()
                    .map(|n| format!(" node={n}"))
                    .unwrap_or_default(),
                a.hostname
                    .as_deref()
                    .map(|h| format!(" hostname={h}"))
                    .unwrap_or_default()
            )
        };
        let _ = writeln!(s, "  subset ports [{}]", ports.join(", "));
        for a in &sub.ready {
            let _ = writeln!(s, "    ready     {}", addr(a));
        }
        for a in &sub.not_ready {
            let _ = writeln!(s, "    not ready {}", addr(a));
        }
    }
    s
}
