//! What roster should produce, recomputed from the documented rules; roster's output flattened to compare
//! with it; the validation kube-apiserver applies; and what the API server does with a plan of writes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use roster::cache::{SelectorSource, ServiceRecord};
use roster::desired::{
    self, EndpointsInput, LABEL_ENDPOINTS_MANAGED_BY, LABEL_MANAGED_BY, LABEL_SERVICE_NAME,
    LABEL_SKIP_MIRROR, SLICE_CONTROLLER_NAME, SliceInput, SlicePlan,
};

use crate::generators::*;

// ---- the model: eligibility recomputed from the documented rules ----

/// (name, port, protocol, appProtocol); the name is "" for an unnamed port.
pub type PortTuple = (String, i32, String, Option<String>);

pub fn resolve_port(port: &PortSpec, pod: &PodSpec) -> Option<PortTuple> {
    let protocol = port.protocol.unwrap_or("TCP");
    let number = match port.target {
        Target::Unset | Target::Zero => port.port,
        Target::Number(n) => n,
        Target::Name(name) => {
            let found = pod
                .named_ports()
                .find(|(n, _, p)| *n == Some(name) && p.unwrap_or("TCP") == protocol)?;
            found.1
        }
    };
    Some((
        port.name.to_owned(),
        number,
        protocol.to_owned(),
        port.app_protocol.map(str::to_owned),
    ))
}

pub fn hostname_for(name: &str, pod: &PodSpec) -> Option<String> {
    (pod.hostname && pod.subdomain == Some(SVC)).then(|| format!("host-{name}"))
}

/// One address of one port in the Endpoints: (port or None for a port-less subset, ip, pod, ready, hostname,
/// nodeName).
pub type EpTuple = (
    Option<PortTuple>,
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
);

/// The one family the Endpoints carry (F16): `ipFamilies[0]`, else the cluster IP's, else (headless) the
/// pod's primary IP's. `ips` is not empty.
pub fn endpoints_family(svc: &SvcSpec, ips: &[IpAddr]) -> Family {
    let service_family = svc.families.first().copied().or(svc.cluster_ip_family());
    service_family.unwrap_or(Family::of(&ips[0]))
}

pub fn model_endpoints(svc: &SvcSpec, pods: &[(String, PodSpec)]) -> BTreeSet<EpTuple> {
    let mut out = BTreeSet::new();
    for (name, pod) in pods {
        let ips = pod.ips();
        if pod.is_terminal() || ips.is_empty() || (pod.terminating && !svc.pnra) {
            continue;
        }
        let family = endpoints_family(svc, &ips);
        let Some(ip) = ips.iter().find(|ip| Family::of(ip) == family) else {
            continue;
        };
        let ready = svc.pnra || pod.is_ready();
        let address = |port: Option<PortTuple>| {
            (
                port,
                ip.to_string(),
                name.clone(),
                ready,
                hostname_for(name, pod),
                pod.node_name().map(str::to_owned),
            )
        };
        if svc.ports.is_empty() && svc.headless {
            out.insert(address(None));
        }
        for port in svc.ports.iter().filter_map(|p| resolve_port(p, pod)) {
            out.insert(address(Some(port)));
        }
    }
    out
}

/// One endpoint of the slices: (addressType, sorted ports, addresses, pod, (ready, serving, terminating), zone,
/// hostname, nodeName).
pub type SliceTuple = (
    String,
    Vec<PortTuple>,
    Vec<String>,
    String,
    (bool, bool, bool),
    Option<String>,
    Option<String>,
    Option<String>,
);

pub fn slice_families(svc: &SvcSpec) -> Vec<Family> {
    let mut families = Vec::new();
    for f in &svc.families {
        if !families.contains(f) {
            families.push(*f);
        }
    }
    if families.is_empty() {
        match svc.cluster_ip_family() {
            Some(f) => families.push(f),
            None => families.extend([Family::V4, Family::V6]),
        }
    }
    families
}

/// The slices' endpoints, and the nodes whose absence kept a pod out.
pub fn model_slices(svc: &SvcSpec, pods: &[(String, PodSpec)]) -> (BTreeSet<SliceTuple>, BTreeSet<String>) {
    let mut out = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for (name, pod) in pods {
        let ips = pod.ips();
        if pod.is_terminal() || ips.is_empty() {
            continue;
        }
        let mut ports: Vec<PortTuple> = svc.ports.iter().filter_map(|p| resolve_port(p, pod)).collect();
        if ports.is_empty() && !svc.ports.is_empty() {
            continue; // no port resolves: left out, as in the Endpoints (F18)
        }
        ports.sort();
        let zone = match pod.node_name() {
            Some("n1") => Some("zone-a".to_owned()),
            Some("n2") => None,
            _ if svc.pnra => None,
            other => {
                missing.insert(other.unwrap_or_default().to_owned());
                continue;
            }
        };
        let conditions = (
            svc.pnra || (pod.is_ready() && !pod.terminating),
            pod.is_ready(),
            pod.terminating,
        );
        for family in slice_families(svc) {
            let addresses: Vec<String> = ips
                .iter()
                .filter(|ip| Family::of(ip) == family)
                .map(IpAddr::to_string)
                .collect();
            if addresses.is_empty() {
                continue;
            }
            out.insert((
                family.address_type().to_owned(),
                ports.clone(),
                addresses,
                name.clone(),
                conditions,
                zone.clone(),
                hostname_for(name, pod),
                pod.node_name().map(str::to_owned),
            ));
        }
    }
    (out, missing)
}

// ---- flattening roster's output ----

pub fn endpoints_tuples(subsets: &[k8s_openapi::api::core::v1::EndpointSubset]) -> Vec<EpTuple> {
    let mut out = Vec::new();
    for subset in subsets {
        let ports: Vec<Option<PortTuple>> = match subset.ports.as_deref() {
            None | Some([]) => vec![None],
            Some(ports) => ports
                .iter()
                .map(|p| {
                    Some((
                        p.name.clone().unwrap_or_default(),
                        p.port,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.app_protocol.clone(),
                    ))
                })
                .collect(),
        };
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| (a, false));
        for (address, is_ready) in ready.chain(not_ready) {
            for port in &ports {
                let pod = address.target_ref.as_ref().and_then(|r| r.name.clone());
                out.push((
                    port.clone(),
                    address.ip.clone(),
                    pod.unwrap_or_default(),
                    is_ready,
                    address.hostname.clone(),
                    address.node_name.clone(),
                ));
            }
        }
    }
    out
}

pub fn slice_port_tuples(slice: &EndpointSlice) -> Vec<PortTuple> {
    let mut ports: Vec<PortTuple> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    ports.sort();
    ports
}

pub fn slice_tuples(slices: &[EndpointSlice]) -> Vec<SliceTuple> {
    let mut out = Vec::new();
    for slice in slices {
        let ports = slice_port_tuples(slice);
        for e in &slice.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            out.push((
                slice.address_type.clone(),
                ports.clone(),
                e.addresses.clone(),
                e.target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .unwrap_or_default(),
                (
                    c.ready.unwrap_or(false),
                    c.serving.unwrap_or(false),
                    c.terminating.unwrap_or(false),
                ),
                e.zone.clone(),
                e.hostname.clone(),
                e.node_name.clone(),
            ));
        }
    }
    out
}

pub fn as_set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

// ---- API validation, as kube-apiserver checks it ----

/// A canonical, usable endpoint IP (the generators never produce loopback, link-local or multicast ones).
pub fn usable_ip(text: &str) -> bool {
    let Ok(ip) = text.parse::<IpAddr>() else {
        return false;
    };
    let special = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6.to_ipv4_mapped().is_some(),
    };
    ip.to_string() == text && !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast() && !special
}

pub fn valid_protocol(protocol: Option<&str>) -> bool {
    matches!(protocol, Some("TCP" | "UDP" | "SCTP"))
}

pub fn check_endpoints_valid(ep: &Endpoints, svc: &SvcSpec) -> Result<(), TestCaseError> {
    let subsets = ep.subsets.as_deref().unwrap_or_default();
    let mut total = 0;
    for subset in subsets {
        let addresses: Vec<_> = subset
            .addresses
            .iter()
            .flatten()
            .chain(subset.not_ready_addresses.iter().flatten())
            .collect();
        prop_assert!(!addresses.is_empty(), "empty subset {subset:?}");
        total += addresses.len();
        for a in &addresses {
            prop_assert!(usable_ip(&a.ip), "invalid address {:?}", a.ip);
            if let Some(family) = svc.families.first().copied().or(svc.cluster_ip_family()) {
                let ip: IpAddr = a.ip.parse().unwrap();
                prop_assert_eq!(Family::of(&ip), family, "address outside the primary family");
            }
            let target = a.target_ref.as_ref().expect("targetRef");
            prop_assert_eq!(target.kind.as_deref(), Some("Pod"));
            prop_assert_eq!(target.namespace.as_deref(), Some(NS));
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        let names: BTreeSet<_> = ports.iter().map(|p| p.name.clone().unwrap_or_default()).collect();
        prop_assert_eq!(names.len(), ports.len(), "duplicate port names in {:?}", ports);
        for p in ports {
            prop_assert!((1..=65535).contains(&p.port), "port {}", p.port);
            prop_assert!(valid_protocol(p.protocol.as_deref()));
            prop_assert!(ports.len() == 1 || p.name.as_deref().is_some_and(|n| !n.is_empty()));
        }
    }
    prop_assert!(total <= desired::MAX_ENDPOINTS_ADDRESSES, "{total} addresses");
    let labels = ep.metadata.labels.clone().unwrap_or_default();
    prop_assert_eq!(
        labels.get(LABEL_ENDPOINTS_MANAGED_BY).map(String::as_str),
        Some("roster")
    );
    prop_assert_eq!(
        labels.contains_key(LABEL_SKIP_MIRROR),
        svc.annotated_mode,
        "skip-mirror exactly in annotated mode"
    );
    Ok(())
}

pub fn check_slices_valid(slices: &[EndpointSlice], svc: &SvcSpec, max: usize) -> Result<(), TestCaseError> {
    let families = slice_families(svc);
    for slice in slices {
        let family = match slice.address_type.as_str() {
            "IPv4" => Family::V4,
            "IPv6" => Family::V6,
            other => return Err(TestCaseError::fail(format!("addressType {other}"))),
        };
        prop_assert!(families.contains(&family), "slice of a family the Service lacks");
        prop_assert!(
            slice.endpoints.len() <= max,
            "{} endpoints > {max}",
            slice.endpoints.len()
        );
        for e in &slice.endpoints {
            prop_assert!((1..=100).contains(&e.addresses.len()));
            for a in &e.addresses {
                prop_assert!(usable_ip(a), "invalid address {a:?}");
                prop_assert_eq!(Family::of(&a.parse().unwrap()), family, "address type mismatch");
            }
            prop_assert!(e.conditions.is_some());
        }
        let ports = slice.ports.as_deref().unwrap_or_default();
        prop_assert!(ports.len() <= 100);
        let names: BTreeSet<_> = ports.iter().map(|p| p.name.clone().unwrap_or_default()).collect();
        prop_assert_eq!(names.len(), ports.len(), "duplicate port names");
        for p in ports {
            prop_assert!(p.port.is_some_and(|n| (1..=65535).contains(&n)));
            prop_assert!(valid_protocol(p.protocol.as_deref()));
        }
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        prop_assert_eq!(labels.get(LABEL_SERVICE_NAME).map(String::as_str), Some(SVC));
        prop_assert_eq!(
            labels.get(LABEL_MANAGED_BY).map(String::as_str),
            Some(SLICE_CONTROLLER_NAME)
        );
        let owner = slice.metadata.owner_references.as_deref().unwrap_or_default();
        prop_assert!(
            owner
                .iter()
                .any(|o| o.uid == SVC_UID && o.controller == Some(true))
        );
    }
    let tuples = slice_tuples(slices);
    prop_assert_eq!(as_set(&tuples).len(), tuples.len(), "an endpoint published twice");
    Ok(())
}

// ---- what the API server does with writes ----

/// Applies a plan to the slices that exist, as the server would: creates get a name, updates must name an
/// existing slice, deletes remove one.
pub fn apply_plan(
    existing: &[EndpointSlice],
    plan: &SlicePlan,
    serial: &mut usize,
) -> Result<Vec<EndpointSlice>, TestCaseError> {
    let mut by_name: BTreeMap<String, EndpointSlice> = existing
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s.clone()))
        .collect();
    let mut touched = BTreeSet::new();
    for slice in &plan.create {
        prop_assert!(slice.metadata.name.is_none(), "a create carries a name");
        *serial += 1;
        let mut s = slice.clone();
        let name = format!("{}{serial:05}", s.metadata.generate_name.clone().unwrap());
        s.metadata.name = Some(name.clone());
        s.metadata.resource_version = Some(serial.to_string());
        by_name.insert(name, s);
    }
    for slice in &plan.update {
        let name = slice.metadata.name.clone().expect("an update names its slice");
        prop_assert!(by_name.contains_key(&name), "update of missing slice {name}");
        prop_assert!(touched.insert(name.clone()), "slice {name} written twice");
        *serial += 1;
        let mut s = slice.clone();
        s.metadata.resource_version = Some(serial.to_string());
        by_name.insert(name, s);
    }
    for slice in &plan.delete {
        let name = slice.metadata.name.clone().expect("a delete names its slice");
        prop_assert!(touched.insert(name.clone()), "slice {name} written twice");
        prop_assert!(by_name.remove(&name).is_some(), "delete of missing slice {name}");
    }
    Ok(by_name.into_values().collect())
}

pub fn endpoints_input(svc: &SvcSpec) -> EndpointsInput {
    EndpointsInput {
        skip_mirror: svc.mode() == SelectorSource::Annotation,
        ..EndpointsInput::default()
    }
}

pub fn slice_input(record: &ServiceRecord, max: usize) -> SliceInput {
    SliceInput::owned_by_service(record, max, None)
}

/// The Endpoints as the server stores them after roster's first write.
pub fn written_endpoints(desired: &desired::DesiredEndpoints) -> Endpoints {
    let mut ep = desired::endpoints_need_write(None, desired).expect("no Endpoints yet: a create");
    ep.metadata.resource_version = Some("1".into());
    ep.metadata.uid = Some("ep-uid".into());
    ep
}
