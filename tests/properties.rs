//! Properties of the pure layer (`roster::desired`) and of the caches (`roster::cache`), over random Services
//! and pods built through the same decoders the watches use.
//!
//! Every expectation is recomputed here from the documented rules (README rows F6–F20, F24, F27, F31), never
//! by calling roster's own helpers: the produced Endpoints and EndpointSlices are valid API objects, contain
//! exactly the eligible pods, are deterministic and independent of pod and event order, and a second pass
//! over what was just written plans no write.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use roster::cache::{
    Cache, Interner, Labels, NodeLookup, PodProjection, PodRecord, Selector, SelectorSource, ServiceKey,
    ServiceRecord,
};
use roster::desired::{
    self, ANNOTATION_OVER_CAPACITY, EndpointsInput, LABEL_ENDPOINTS_MANAGED_BY, LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME, LABEL_SKIP_MIRROR, MIRRORING_CONTROLLER_NAME, SLICE_CONTROLLER_NAME, SliceInput,
    SlicePlan,
};
use serde_json::{Value, json};

const NS: &str = "ns";
const SVC: &str = "svc";
const SVC_UID: &str = "svc-uid";
/// Container port names the Services' named targetPorts refer to.
const TARGET_NAMES: [&str; 3] = ["http", "metrics", "dns"];
/// Service port names (unique per Service).
const SVC_PORT_NAMES: [&str; 3] = ["web", "alt", "extra"];
const PROTOCOLS: [Option<&str>; 4] = [None, Some("TCP"), Some("UDP"), Some("SCTP")];

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- random Services ----

#[derive(Clone, Debug)]
enum Target {
    Unset,
    Zero,
    Number(i32),
    Name(&'static str),
}

#[derive(Clone, Debug)]
struct PortSpec {
    /// Empty for the single unnamed port.
    name: &'static str,
    port: i32,
    protocol: Option<&'static str>,
    target: Target,
    app_protocol: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

#[derive(Clone, Debug)]
struct SvcSpec {
    ports: Vec<PortSpec>,
    headless: bool,
    /// `spec.ipFamilies`, possibly empty.
    families: Vec<Family>,
    /// Family of the cluster IP when `families` is empty and the Service is not headless.
    v6_cluster_ip: bool,
    pnra: bool,
    annotated_mode: bool,
}

impl SvcSpec {
    fn cluster_ip_family(&self) -> Option<Family> {
        if self.headless {
            return None;
        }
        Some(self.families.first().copied().unwrap_or(if self.v6_cluster_ip {
            Family::V6
        } else {
            Family::V4
        }))
    }

    fn mode(&self) -> SelectorSource {
        if self.annotated_mode {
            SelectorSource::Annotation
        } else {
            SelectorSource::Spec
        }
    }
}

fn target_strategy() -> impl Strategy<Value = Target> {
    prop_oneof![
        1 => Just(Target::Unset),
        1 => Just(Target::Zero),
        2 => (1..=65535i32).prop_map(Target::Number),
        4 => select(&TARGET_NAMES[..]).prop_map(Target::Name),
    ]
}

fn ports_strategy() -> impl Strategy<Value = Vec<PortSpec>> {
    let one = (
        select(&PROTOCOLS[..]),
        target_strategy(),
        proptest::option::of(select(&["http", "kubernetes.io/h2c"][..])),
    );
    (
        0..=3usize,
        1..=65000i32,
        any::<bool>(),
        proptest::collection::vec(one, 3),
    )
        .prop_map(|(n, base, unnamed_single, specs)| {
            specs
                .into_iter()
                .take(n)
                .enumerate()
                .map(|(i, (protocol, target, app_protocol))| PortSpec {
                    name: if n == 1 && unnamed_single {
                        ""
                    } else {
                        SVC_PORT_NAMES[i]
                    },
                    port: base + i as i32, // distinct (port, protocol) pairs, as validation demands
                    protocol,
                    target,
                    app_protocol,
                })
                .collect()
        })
}

fn families_strategy() -> impl Strategy<Value = Vec<Family>> {
    select(vec![
        vec![],
        vec![Family::V4],
        vec![Family::V6],
        vec![Family::V4, Family::V6],
        vec![Family::V6, Family::V4],
    ])
}

fn service_strategy() -> impl Strategy<Value = SvcSpec> {
    (
        ports_strategy(),
        any::<bool>(),
        families_strategy(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(ports, headless, families, v6_cluster_ip, pnra, annotated_mode)| SvcSpec {
                // A Service with a cluster IP must have ports; a headless one may have none.
                headless: headless || ports.is_empty(),
                ports,
                families,
                v6_cluster_ip,
                pnra,
                annotated_mode,
            },
        )
}

fn service_object(spec: &SvcSpec) -> Service {
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .map(|p| {
            let mut port = json!({ "port": p.port });
            if !p.name.is_empty() {
                port["name"] = json!(p.name);
            }
            if let Some(protocol) = p.protocol {
                port["protocol"] = json!(protocol);
            }
            match p.target {
                Target::Unset => {}
                Target::Zero => port["targetPort"] = json!(0),
                Target::Number(n) => port["targetPort"] = json!(n),
                Target::Name(name) => port["targetPort"] = json!(name),
            }
            if let Some(app) = p.app_protocol {
                port["appProtocol"] = json!(app);
            }
            port
        })
        .collect();
    let cluster_ip = match spec.cluster_ip_family() {
        None => "None",
        Some(Family::V4) => "10.96.0.10",
        Some(Family::V6) => "fd00:96::10",
    };
    let families: Vec<&str> = spec.families.iter().map(|f| f.address_type()).collect();
    let mut body = json!({
        "metadata": {"namespace": NS, "name": SVC, "uid": SVC_UID, "labels": {"team": "a"}},
        "spec": {"ports": ports, "clusterIP": cluster_ip, "publishNotReadyAddresses": spec.pnra}
    });
    if !families.is_empty() {
        body["spec"]["ipFamilies"] = json!(families);
    }
    if spec.annotated_mode {
        body["metadata"]["annotations"] = json!({"roster.dev/selector": "app=web"});
    } else {
        body["spec"]["selector"] = json!({"app": "web"});
    }
    serde_json::from_value(body).expect("Service JSON")
}

fn service_record(spec: &SvcSpec) -> ServiceRecord {
    ServiceRecord::from_service(&service_object(spec), spec.mode(), &mut Interner::new())
}

// ---- random pods ----

type ContainerPort = (Option<&'static str>, i32, Option<&'static str>);

#[derive(Clone, Debug)]
struct PodSpec {
    v4: Option<(u8, u8)>,
    /// Write the IPv4 address with leading zeros (legacy form, normalised on decode).
    v4_legacy: bool,
    v6: Option<u16>,
    v6_first: bool,
    phase: Option<&'static str>,
    /// Status of the Ready condition, if there is one.
    ready: Option<&'static str>,
    terminating: bool,
    /// n1: zone-a; n2: no zone; n3: not in the Node cache; "": unset.
    node: Option<&'static str>,
    hostname: bool,
    subdomain: Option<&'static str>,
    ports: Vec<ContainerPort>,
    /// (restartPolicy Always, port) of init containers: only sidecars' ports count.
    init_ports: Vec<(bool, ContainerPort)>,
}

fn container_port() -> impl Strategy<Value = ContainerPort> {
    (
        proptest::option::weighted(0.85, select(&TARGET_NAMES[..])),
        1..=65535i32,
        select(&PROTOCOLS[..3]), // SCTP named ports are rare; TCP/UDP suffice to test protocol matching
    )
}

fn pod_strategy() -> impl Strategy<Value = PodSpec> {
    let ips = (
        proptest::option::weighted(0.8, (0..3u8, 1..=254u8)),
        any::<bool>(),
        proptest::option::weighted(0.4, 1..=2000u16),
        any::<bool>(),
    );
    let status = (
        select(vec![
            None,
            Some("Running"),
            Some("Pending"),
            Some("Succeeded"),
            Some("Failed"),
            Some("Unknown"),
        ]),
        select(vec![
            None,
            Some("True"),
            Some("True"),
            Some("False"),
            Some("Unknown"),
        ]),
        proptest::bool::weighted(0.2),
    );
    let placement = (
        select(vec![
            Some("n1"),
            Some("n1"),
            Some("n2"),
            Some("n3"),
            Some(""),
            None,
        ]),
        any::<bool>(),
        select(vec![None, Some(SVC), Some("other")]),
    );
    let ports = (
        proptest::collection::vec(container_port(), 0..4),
        proptest::collection::vec((any::<bool>(), container_port()), 0..2),
    );
    (ips, status, placement, ports).prop_map(
        |(
            (v4, v4_legacy, v6, v6_first),
            (phase, ready, terminating),
            (node, hostname, subdomain),
            (ports, init_ports),
        )| PodSpec {
            v4,
            v4_legacy,
            v6,
            v6_first,
            phase,
            ready,
            terminating,
            node,
            hostname,
            subdomain,
            ports,
            init_ports,
        },
    )
}

impl PodSpec {
    /// The pod's IPs as roster should read them: `podIP` first, normalised.
    fn ips(&self) -> Vec<IpAddr> {
        let v4 = self.v4.map(|(a, b)| IpAddr::V4(Ipv4Addr::new(10, 1, a, b)));
        let v6 = self
            .v6
            .map(|x| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, x)));
        let ordered = if self.v6_first { [v6, v4] } else { [v4, v6] };
        ordered.into_iter().flatten().collect()
    }

    fn ip_texts(&self) -> Vec<String> {
        self.ips()
            .iter()
            .map(|ip| match (ip, self.v4_legacy) {
                (IpAddr::V4(v4), true) => {
                    let o = v4.octets();
                    format!("{:03}.{:03}.{:03}.{:03}", o[0], o[1], o[2], o[3])
                }
                (ip, _) => ip.to_string(),
            })
            .collect()
    }

    fn node_name(&self) -> Option<&'static str> {
        self.node.filter(|n| !n.is_empty())
    }

    fn is_ready(&self) -> bool {
        self.ready == Some("True")
    }

    fn is_terminal(&self) -> bool {
        matches!(self.phase, Some("Succeeded") | Some("Failed"))
    }

    /// Named ports in resolution order: containers, then sidecar (restartPolicy Always) init containers.
    fn named_ports(&self) -> impl Iterator<Item = &ContainerPort> {
        let sidecars = self.init_ports.iter().filter(|(s, _)| *s).map(|(_, p)| p);
        self.ports.iter().chain(sidecars)
    }
}

fn pod_json(name: &str, spec: &PodSpec, labels: &BTreeMap<String, String>) -> Value {
    let port_json = |(name, port, protocol): &ContainerPort| {
        let mut p = json!({ "containerPort": port });
        if let Some(name) = name {
            p["name"] = json!(name);
        }
        if let Some(protocol) = protocol {
            p["protocol"] = json!(protocol);
        }
        p
    };
    let containers =
        json!([{ "name": "app", "ports": spec.ports.iter().map(port_json).collect::<Vec<_>>() }]);
    let init: Vec<Value> = spec
        .init_ports
        .iter()
        .map(|(sidecar, port)| {
            let mut c = json!({ "name": "init", "ports": [port_json(port)] });
            if *sidecar {
                c["restartPolicy"] = json!("Always");
            }
            c
        })
        .collect();
    let ips = spec.ip_texts();
    let mut pod = json!({
        "metadata": {"namespace": NS, "name": name, "uid": format!("uid-{name}"), "resourceVersion": "7",
                     "labels": labels},
        "spec": {"containers": containers, "initContainers": init},
        "status": {"podIPs": ips.iter().map(|ip| json!({ "ip": ip })).collect::<Vec<_>>()}
    });
    if let Some(first) = ips.first() {
        pod["status"]["podIP"] = json!(first);
    }
    if let Some(phase) = spec.phase {
        pod["status"]["phase"] = json!(phase);
    }
    if let Some(status) = spec.ready {
        pod["status"]["conditions"] =
            json!([{"type": "Ready", "status": status, "lastTransitionTime": "2024-01-01T00:00:00Z"}]);
    }
    if spec.terminating {
        pod["metadata"]["deletionTimestamp"] = json!("2024-01-02T00:00:00Z");
    }
    if let Some(node) = spec.node {
        pod["spec"]["nodeName"] = json!(node);
    }
    if spec.hostname {
        pod["spec"]["hostname"] = json!(format!("host-{name}"));
    }
    if let Some(subdomain) = spec.subdomain {
        pod["spec"]["subdomain"] = json!(subdomain);
    }
    pod
}

fn app_web() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), "web".to_owned())])
}

/// Decodes the pods exactly as the watch does (JSON → projection → record).
fn pod_records(pods: &[(String, PodSpec)]) -> Vec<Arc<PodRecord>> {
    let mut interner = Interner::new();
    pods.iter()
        .map(|(name, spec)| {
            let bytes = serde_json::to_vec(&pod_json(name, spec, &app_web())).unwrap();
            let projection: PodProjection = serde_json::from_slice(&bytes).expect("pod projection");
            Arc::new(PodRecord::from_projection(&projection, &mut interner))
        })
        .collect()
}

fn named(pods: Vec<PodSpec>) -> Vec<(String, PodSpec)> {
    pods.into_iter()
        .enumerate()
        .map(|(i, p)| (format!("p{i}"), p))
        .collect()
}

/// Pods, and the same pods in another order.
type NamedPods = Vec<(String, PodSpec)>;

fn pods_and_shuffled(max: usize) -> impl Strategy<Value = (NamedPods, NamedPods)> {
    proptest::collection::vec(pod_strategy(), 0..max).prop_flat_map(|pods| {
        let pods = named(pods);
        (Just(pods.clone()), Just(pods).prop_shuffle())
    })
}

fn nodes(name: &str) -> NodeLookup {
    match name {
        "n1" => NodeLookup::Found {
            zone: Some(Arc::from("zone-a")),
        },
        "n2" => NodeLookup::Found { zone: None },
        _ => NodeLookup::Missing,
    }
}

// ---- the model: eligibility recomputed from the documented rules ----

/// (name, port, protocol, appProtocol); the name is "" for an unnamed port.
type PortTuple = (String, i32, String, Option<String>);

fn resolve_port(port: &PortSpec, pod: &PodSpec) -> Option<PortTuple> {
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

fn hostname_for(name: &str, pod: &PodSpec) -> Option<String> {
    (pod.hostname && pod.subdomain == Some(SVC)).then(|| format!("host-{name}"))
}

/// One address of one port in the Endpoints: (port or None for a port-less subset, ip, pod, ready, hostname,
/// nodeName).
type EpTuple = (
    Option<PortTuple>,
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
);

fn model_endpoints(svc: &SvcSpec, pods: &[(String, PodSpec)]) -> BTreeSet<EpTuple> {
    let mut out = BTreeSet::new();
    for (name, pod) in pods {
        let ips = pod.ips();
        if pod.is_terminal() || ips.is_empty() || (pod.terminating && !svc.pnra) {
            continue;
        }
        let family = svc
            .families
            .first()
            .copied()
            .or(svc.cluster_ip_family())
            .unwrap_or(Family::of(&ips[0]));
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
type SliceTuple = (
    String,
    Vec<PortTuple>,
    Vec<String>,
    String,
    (bool, bool, bool),
    Option<String>,
    Option<String>,
    Option<String>,
);

fn slice_families(svc: &SvcSpec) -> Vec<Family> {
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
fn model_slices(svc: &SvcSpec, pods: &[(String, PodSpec)]) -> (BTreeSet<SliceTuple>, BTreeSet<String>) {
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

fn endpoints_tuples(subsets: &[k8s_openapi::api::core::v1::EndpointSubset]) -> Vec<EpTuple> {
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

fn slice_port_tuples(slice: &EndpointSlice) -> Vec<PortTuple> {
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

fn slice_tuples(slices: &[EndpointSlice]) -> Vec<SliceTuple> {
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

fn as_set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

// ---- API validation, as kube-apiserver checks it ----

/// A canonical, usable endpoint IP (the generators never produce loopback, link-local or multicast ones).
fn usable_ip(text: &str) -> bool {
    let Ok(ip) = text.parse::<IpAddr>() else {
        return false;
    };
    let special = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6.to_ipv4_mapped().is_some(),
    };
    ip.to_string() == text && !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast() && !special
}

fn valid_protocol(protocol: Option<&str>) -> bool {
    matches!(protocol, Some("TCP" | "UDP" | "SCTP"))
}

fn check_endpoints_valid(ep: &Endpoints, svc: &SvcSpec) -> Result<(), TestCaseError> {
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

fn check_slices_valid(slices: &[EndpointSlice], svc: &SvcSpec, max: usize) -> Result<(), TestCaseError> {
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
fn apply_plan(
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

fn endpoints_input(svc: &SvcSpec) -> EndpointsInput {
    EndpointsInput {
        skip_mirror: svc.mode() == SelectorSource::Annotation,
        ..EndpointsInput::default()
    }
}

fn slice_input(record: &ServiceRecord, max: usize) -> SliceInput {
    SliceInput::owned_by_service(record, max, None)
}

/// The Endpoints as the server stores them after roster's first write.
fn written_endpoints(desired: &desired::DesiredEndpoints) -> Endpoints {
    let mut ep = desired::endpoints_need_write(None, desired).expect("no Endpoints yet: a create");
    ep.metadata.resource_version = Some("1".into());
    ep.metadata.uid = Some("ep-uid".into());
    ep
}

proptest! {
    #![proptest_config(config(256))]

    /// (a) valid, (b) exactly the eligible pods, (c) deterministic, (d) pod order does not matter, (e) writing
    /// the result and planning again gives no write: for Endpoints.
    #[test]
    fn endpoints_are_valid_exact_deterministic_and_idempotent(
        svc in service_strategy(),
        (pods, shuffled) in pods_and_shuffled(24),
    ) {
        let record = service_record(&svc);
        let d = desired::desired_endpoints(&record, &pod_records(&pods), endpoints_input(&svc));
        let written = written_endpoints(&d);
        check_endpoints_valid(&written, &svc)?;

        let got = endpoints_tuples(&d.subsets);
        prop_assert_eq!(as_set(&got).len(), got.len(), "an address listed twice for one port");
        prop_assert_eq!(as_set(&got), model_endpoints(&svc, &pods));
        prop_assert!(!d.truncated);

        let again = desired::desired_endpoints(&service_record(&svc), &pod_records(&pods), endpoints_input(&svc));
        prop_assert_eq!(&again, &d, "same input, different output");
        let permuted = desired::desired_endpoints(&record, &pod_records(&shuffled), endpoints_input(&svc));
        prop_assert_eq!(&permuted, &d, "pod order changed the output");

        prop_assert_eq!(desired::endpoints_need_write(Some(&written), &d), None);
        // The server's copy in another order, with targetRef resourceVersions: still no write.
        let mut noisy = written.clone();
        if let Some(subsets) = &mut noisy.subsets {
            subsets.reverse();
            for s in subsets.iter_mut() {
                for list in [&mut s.addresses, &mut s.not_ready_addresses].into_iter().flatten() {
                    list.reverse();
                    for a in list.iter_mut() {
                        a.target_ref.as_mut().unwrap().resource_version = Some("42".into());
                    }
                }
            }
        }
        prop_assert_eq!(desired::endpoints_need_write(Some(&noisy), &d), None);
    }

    /// From the Endpoints of one pod set, the write for another pod set yields exactly the new desired state,
    /// and nothing after it.
    #[test]
    fn endpoints_converge_from_any_previous_state(
        svc in service_strategy(),
        before in proptest::collection::vec(pod_strategy(), 0..16),
        after in proptest::collection::vec(pod_strategy(), 0..16),
    ) {
        let record = service_record(&svc);
        let (before, after) = (named(before), named(after));
        let old = written_endpoints(&desired::desired_endpoints(&record, &pod_records(&before), endpoints_input(&svc)));
        let want = desired::desired_endpoints(&record, &pod_records(&after), endpoints_input(&svc));
        match desired::endpoints_need_write(Some(&old), &want) {
            None => prop_assert_eq!(as_set(&endpoints_tuples(old.subsets.as_deref().unwrap_or_default())),
                                    model_endpoints(&svc, &after)),
            Some(new) => {
                prop_assert_eq!(new.metadata.resource_version.as_deref(), Some("1"), "optimistic concurrency");
                check_endpoints_valid(&new, &svc)?;
                prop_assert_eq!(as_set(&endpoints_tuples(new.subsets.as_deref().unwrap_or_default())),
                                model_endpoints(&svc, &after));
                prop_assert_eq!(desired::endpoints_need_write(Some(&new), &want), None);
            }
        }
    }

    /// (a)–(e) for EndpointSlices: valid, exactly the eligible endpoints (per family, per port list), packed
    /// into the fewest slices, deterministic, order-independent, and a second plan over the result is empty.
    #[test]
    fn slices_are_valid_exact_deterministic_and_idempotent(
        svc in service_strategy(),
        (pods, shuffled) in pods_and_shuffled(24),
        max in prop_oneof![1..=4usize, Just(100usize)],
    ) {
        let record = service_record(&svc);
        let plan = desired::desired_slices(&record, &pod_records(&pods), &nodes, &[], &slice_input(&record, max));
        prop_assert!(plan.update.is_empty() && plan.delete.is_empty(), "nothing exists: only creates");
        check_slices_valid(&plan.create, &svc, max)?;
        let (want, missing) = model_slices(&svc, &pods);
        prop_assert_eq!(as_set(&slice_tuples(&plan.create)), want);
        prop_assert_eq!(as_set(&plan.missing_nodes), missing);
        prop_assert_eq!(plan.create.len(), plan.stats.slices_desired, "not packed into the fewest slices");
        for family in slice_families(&svc) {
            prop_assert!(plan.create.iter().any(|s| s.address_type == family.address_type()),
                "every address type has a slice (a placeholder when empty)");
        }

        let again = desired::desired_slices(&service_record(&svc), &pod_records(&pods), &nodes, &[], &slice_input(&service_record(&svc), max));
        prop_assert_eq!(&again, &plan, "same input, different plan");
        let permuted = desired::desired_slices(&record, &pod_records(&shuffled), &nodes, &[], &slice_input(&record, max));
        prop_assert_eq!(&permuted, &plan, "pod order changed the plan");

        let mut serial = 0;
        let mut existing = apply_plan(&[], &plan, &mut serial)?;
        let replan = desired::desired_slices(&record, &pod_records(&pods), &nodes, &existing, &slice_input(&record, max));
        prop_assert!(replan.is_empty(), "rewrites what it just wrote: {replan:?}");
        existing.reverse();
        let replan = desired::desired_slices(&record, &pod_records(&shuffled), &nodes, &existing, &slice_input(&record, max));
        prop_assert!(replan.is_empty(), "listing order caused a write");
    }

    /// From the slices of one pod set, one plan reaches exactly the slices of another pod set: no endpoint
    /// lost or duplicated, no slice over the limit, no write to a missing slice, and nothing left to do.
    #[test]
    fn slices_converge_from_any_previous_state_in_one_plan(
        svc in service_strategy(),
        before in proptest::collection::vec(pod_strategy(), 0..20),
        after in proptest::collection::vec(pod_strategy(), 0..20),
        max in prop_oneof![1..=4usize, Just(100usize)],
        lowered_max in 1..=4usize,
    ) {
        let record = service_record(&svc);
        let (before, after) = (named(before), named(after));
        let mut serial = 0;
        let first = desired::desired_slices(&record, &pod_records(&before), &nodes, &[], &slice_input(&record, max));
        let existing = apply_plan(&[], &first, &mut serial)?;
        // Also lower --max-endpoints-per-slice between the two runs, as an operator may.
        for limit in [max, lowered_max.min(max)] {
            let plan = desired::desired_slices(&record, &pod_records(&after), &nodes, &existing, &slice_input(&record, limit));
            let now = apply_plan(&existing, &plan, &mut serial)?;
            check_slices_valid(&now, &svc, limit)?;
            prop_assert_eq!(as_set(&slice_tuples(&now)), model_slices(&svc, &after).0);
            let replan = desired::desired_slices(&record, &pod_records(&after), &nodes, &now, &slice_input(&record, limit));
            prop_assert!(replan.is_empty(), "not converged after one plan: {replan:?}");
        }
    }
}

// ---- over capacity ----

fn simple_pods(ready: &[bool]) -> Vec<(String, PodSpec)> {
    let pod = |i: usize, ready: bool| PodSpec {
        v4: Some(((i / 254) as u8, (i % 254 + 1) as u8)),
        v4_legacy: false,
        v6: None,
        v6_first: false,
        phase: Some("Running"),
        ready: Some(if ready { "True" } else { "False" }),
        terminating: false,
        node: Some("n1"),
        hostname: false,
        subdomain: None,
        ports: vec![],
        init_ports: vec![],
    };
    ready
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("p{i:04}"), pod(i, *r)))
        .collect()
}

fn one_port_service() -> SvcSpec {
    SvcSpec {
        ports: vec![PortSpec {
            name: "",
            port: 80,
            protocol: None,
            target: Target::Number(8080),
            app_protocol: None,
        }],
        headless: false,
        families: vec![Family::V4],
        v6_cluster_ip: false,
        pnra: false,
        annotated_mode: false,
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// Over 1000 addresses: Endpoints keep exactly 1000, ready ones first, with the over-capacity annotation,
    /// and are not rewritten on the next sync (F24, F25); the slices hold every pod.
    #[test]
    fn over_capacity_truncates_ready_first_and_slices_hold_all(
        ready in proptest::collection::vec(proptest::bool::weighted(0.9), 1001..1200),
    ) {
        let svc = one_port_service();
        let pods = simple_pods(&ready);
        let record = service_record(&svc);
        let records = pod_records(&pods);
        let d = desired::desired_endpoints(&record, &records, endpoints_input(&svc));
        prop_assert!(d.truncated);
        let written = written_endpoints(&d);
        check_endpoints_valid(&written, &svc)?;
        let annotations = written.metadata.annotations.clone().unwrap_or_default();
        prop_assert_eq!(annotations.get(ANNOTATION_OVER_CAPACITY).map(String::as_str), Some("truncated"));
        let got = endpoints_tuples(&d.subsets);
        prop_assert_eq!(got.len(), 1000);
        prop_assert!(as_set(&got).is_subset(&model_endpoints(&svc, &pods)));
        let ready_total = ready.iter().filter(|r| **r).count();
        let ready_kept = got.iter().filter(|t| t.3).count();
        prop_assert_eq!(ready_kept, ready_total.min(1000), "ready addresses go first");
        prop_assert_eq!(desired::endpoints_need_write(Some(&written), &d), None, "rewritten every sync");

        let plan = desired::desired_slices(&record, &records, &nodes, &[], &slice_input(&record, 100));
        prop_assert_eq!(plan.create.len(), ready.len().div_ceil(100));
        prop_assert_eq!(as_set(&slice_tuples(&plan.create)), model_slices(&svc, &pods).0);
    }
}

// ---- mirroring ----

/// Address texts of hand-made Endpoints: valid IPv4 and IPv6, and invalid ones that must be skipped.
const MIRROR_IPS: [&str; 8] = [
    "192.0.2.1",
    "192.0.2.2",
    "198.51.100.7",
    "2001:db8::1",
    "2001:db8::2",
    "not-an-ip",
    "10.0.0",
    "2001:db8::zz",
];

type MirrorSubset = (Vec<(usize, bool)>, Vec<(&'static str, i32, Option<&'static str>)>);

fn mirror_subsets() -> impl Strategy<Value = Vec<MirrorSubset>> {
    let address = (0..MIRROR_IPS.len(), any::<bool>());
    let port = (select(&SVC_PORT_NAMES[..]), 1..=5i32, select(&PROTOCOLS[..3]));
    proptest::collection::vec(
        (
            proptest::collection::vec(address, 1..6),
            proptest::collection::vec(port, 1..3).prop_map(|mut ports| {
                // Port names are unique within a subset.
                ports.sort_by_key(|p| p.0);
                ports.dedup_by_key(|p| p.0);
                ports
            }),
        ),
        0..4,
    )
}

fn hand_made_endpoints(subsets: &[MirrorSubset]) -> Endpoints {
    let subsets: Vec<Value> = subsets
        .iter()
        .map(|(addresses, ports)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) = addresses.iter().partition(|(_, r)| *r);
            let list = |v: Vec<&(usize, bool)>| -> Vec<Value> {
                v.iter().map(|(i, _)| json!({ "ip": MIRROR_IPS[*i] })).collect()
            };
            let ports: Vec<Value> = ports
                .iter()
                .map(|(name, port, protocol)| {
                    let mut p = json!({"name": name, "port": port});
                    if let Some(protocol) = protocol {
                        p["protocol"] = json!(protocol);
                    }
                    p
                })
                .collect();
            json!({"addresses": list(ready), "notReadyAddresses": list(not_ready), "ports": ports})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": NS, "name": SVC, "uid": "ep-uid", "labels": {"team": "a"}},
        "subsets": subsets
    }))
    .unwrap()
}

/// (ip, port, ready) of every valid address; an address not ready anywhere for a port is not ready.
fn model_mirrored(subsets: &[MirrorSubset]) -> BTreeSet<(String, PortTuple, bool)> {
    let mut by_key: BTreeMap<(String, PortTuple), bool> = BTreeMap::new();
    for (addresses, ports) in subsets {
        for (i, ready) in addresses {
            let Ok(ip) = MIRROR_IPS[*i].parse::<IpAddr>() else {
                continue;
            };
            for (name, port, protocol) in ports {
                let port = (
                    (*name).to_owned(),
                    *port,
                    protocol.unwrap_or("TCP").to_owned(),
                    None,
                );
                *by_key.entry((ip.to_string(), port)).or_insert(true) &= *ready;
            }
        }
    }
    by_key
        .into_iter()
        .map(|((ip, port), ready)| (ip, port, ready))
        .collect()
}

fn mirrored_tuples(slices: &[EndpointSlice]) -> Vec<(String, PortTuple, bool)> {
    let mut out = Vec::new();
    for slice in slices {
        for port in slice_port_tuples(slice) {
            for e in &slice.endpoints {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
                for a in &e.addresses {
                    out.push((a.clone(), port.clone(), ready));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(config(256))]

    /// Mirrored slices of hand-made Endpoints: valid, exactly the valid addresses (each invalid one reported),
    /// one slice per (address type, ports), deterministic, and no write on the next pass.
    #[test]
    fn mirrored_slices_are_valid_exact_and_idempotent(subsets in mirror_subsets()) {
        let spec = one_port_service();
        let mut svc = service_object(&spec);
        svc.spec.as_mut().unwrap().selector = None;
        let record = ServiceRecord::from_service(&svc, SelectorSource::Spec, &mut Interner::new());
        let ep = hand_made_endpoints(&subsets);
        let plan = desired::desired_mirrored_slices(&record, &ep, &[]);
        let got = mirrored_tuples(&plan.create);
        prop_assert_eq!(as_set(&got).len(), got.len(), "an address mirrored twice");
        prop_assert_eq!(as_set(&got), model_mirrored(&subsets));
        let invalid: BTreeSet<&str> = subsets
            .iter()
            .flat_map(|(a, _)| a.iter().map(|(i, _)| MIRROR_IPS[*i]))
            .filter(|ip| ip.parse::<IpAddr>().is_err())
            .collect();
        let reported: BTreeSet<&str> = plan.skipped.iter().map(|(ip, _)| ip.as_str()).collect();
        prop_assert_eq!(reported, invalid);
        let keys: Vec<_> = plan.create.iter().map(|s| (s.address_type.clone(), slice_port_tuples(s))).collect();
        prop_assert_eq!(as_set(&keys).len(), keys.len(), "two slices for one (address type, ports)");
        for slice in &plan.create {
            let labels = slice.metadata.labels.clone().unwrap_or_default();
            prop_assert_eq!(labels.get(LABEL_MANAGED_BY).map(String::as_str), Some(MIRRORING_CONTROLLER_NAME));
            prop_assert_eq!(labels.get("team").map(String::as_str), Some("a"));
            for e in &slice.endpoints {
                for a in &e.addresses {
                    prop_assert!(usable_ip(a));
                    prop_assert_eq!(Family::of(&a.parse().unwrap()).address_type(), slice.address_type.as_str());
                }
            }
        }
        prop_assert_eq!(&desired::desired_mirrored_slices(&record, &ep, &[]), &plan);
        let mut serial = 0;
        let existing = apply_plan(&[], &plan, &mut serial)?;
        let replan = desired::desired_mirrored_slices(&record, &ep, &existing);
        prop_assert!(replan.is_empty(), "rewrites its own mirror: {replan:?}");
    }
}

// ---- selectors ----

const SELECTOR_KEYS: [&str; 4] = ["app", "tier", "env", "example.com/team"];
const SELECTOR_VALUES: [&str; 4] = ["web", "db", "a", "b"];

#[derive(Clone, Debug)]
enum Req {
    Eq(&'static str, &'static str, bool),
    NotEq(&'static str, &'static str),
    In(&'static str, Vec<&'static str>),
    NotIn(&'static str, Vec<&'static str>),
    Exists(&'static str),
    NotExists(&'static str),
}

impl Req {
    fn text(&self) -> String {
        match self {
            Req::Eq(k, v, double) => format!("{k}{}{v}", if *double { " == " } else { "=" }),
            Req::NotEq(k, v) => format!("{k} != {v}"),
            Req::In(k, vs) => format!("{k} in ({})", vs.join(", ")),
            Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
            Req::Exists(k) => (*k).to_owned(),
            Req::NotExists(k) => format!("!{k}"),
        }
    }

    /// The Kubernetes selector semantics, written out independently of roster.
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &str| labels.get(k).map(String::as_str);
        match self {
            Req::Eq(k, v, _) => get(k) == Some(*v),
            Req::NotEq(k, v) => get(k) != Some(*v),
            Req::In(k, vs) => get(k).is_some_and(|have| vs.contains(&have)),
            Req::NotIn(k, vs) => get(k).is_none_or(|have| !vs.contains(&have)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        }
    }
}

fn req_strategy() -> impl Strategy<Value = Req> {
    let key = select(&SELECTOR_KEYS[..]);
    let value = select(&SELECTOR_VALUES[..]);
    let empty_or_value = prop_oneof![4 => value.clone(), 1 => Just("")];
    let set = proptest::collection::vec(value, 1..3);
    prop_oneof![
        3 => (key.clone(), empty_or_value.clone(), any::<bool>()).prop_map(|(k, v, d)| Req::Eq(k, v, d)),
        1 => (key.clone(), empty_or_value).prop_map(|(k, v)| Req::NotEq(k, v)),
        1 => (key.clone(), set.clone()).prop_map(|(k, vs)| Req::In(k, vs)),
        1 => (key.clone(), set).prop_map(|(k, vs)| Req::NotIn(k, vs)),
        1 => key.clone().prop_map(Req::Exists),
        1 => key.prop_map(Req::NotExists),
    ]
}

fn labels_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(
        select(&SELECTOR_KEYS[..]).prop_map(str::to_owned),
        prop_oneof![4 => select(&SELECTOR_VALUES[..]), 1 => Just("")].prop_map(str::to_owned),
        0..4,
    )
}

fn selector_text(reqs: &[Req]) -> String {
    reqs.iter().map(Req::text).collect::<Vec<_>>().join(", ")
}

proptest! {
    #![proptest_config(config(256))]

    /// Selector strings parse, match exactly as the Kubernetes semantics say, and print in a canonical form
    /// that parses back to the same selector.
    #[test]
    fn selectors_parse_match_and_round_trip(
        reqs in proptest::collection::vec(req_strategy(), 1..4),
        label_sets in proptest::collection::vec(labels_strategy(), 1..8),
    ) {
        let text = selector_text(&reqs);
        let mut interner = Interner::new();
        let selector = Selector::parse(&text, &mut interner).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for labels in &label_sets {
            let want = reqs.iter().all(|r| r.matches(labels));
            let have = selector.matches(&Labels::from_map(labels, &mut interner));
            prop_assert_eq!(have, want, "{} on {:?}", text, labels);
        }
        let reparsed = Selector::parse(&selector.to_string(), &mut interner);
        prop_assert_eq!(reparsed.as_ref(), Ok(&selector));
    }

    /// Arbitrary text from the selector alphabet never panics the parser, and an accepted selector prints
    /// to a string that parses back to it.
    #[test]
    fn selector_parser_survives_arbitrary_text(
        chars in proptest::collection::vec(select(&[
            'a', 'b', 'p', '.', '/', '-', '_', '=', '!', ',', '(', ')', ' ', '<', '>', 'i', 'n', 'o', 't', 'A', '1',
        ][..]), 0..24),
    ) {
        let text: String = chars.into_iter().collect();
        let mut interner = Interner::new();
        match Selector::parse(&text, &mut interner) {
            Ok(selector) => {
                let reparsed = Selector::parse(&selector.to_string(), &mut interner);
                prop_assert_eq!(reparsed.as_ref(), Ok(&selector), "{:?}", text);
            }
            Err(err) => prop_assert_eq!(err.selector, text),
        }
    }
}

// ---- the cache: event order ----

#[derive(Clone, Debug)]
enum PodOp {
    Upsert(BTreeMap<String, String>, PodSpec),
    Delete,
}

#[derive(Clone, Debug)]
struct History {
    namespace: &'static str,
    ops: Vec<PodOp>,
}

fn history_strategy() -> impl Strategy<Value = History> {
    let op = prop_oneof![
        4 => (labels_strategy(), pod_strategy()).prop_map(|(l, p)| PodOp::Upsert(l, p)),
        1 => Just(PodOp::Delete),
    ];
    (
        select(&[NS, NS, NS, "other"][..]),
        proptest::collection::vec(op, 1..4),
    )
        .prop_map(|(namespace, ops)| History { namespace, ops })
}

/// The Services of the cache test: two `spec.selector` maps and two annotation selectors.
fn cache_services(selectors: &[Vec<Req>]) -> Vec<(Service, SelectorSource)> {
    let mut out = Vec::new();
    out.push((
        serde_json::from_value(json!({"metadata": {"namespace": NS, "name": "eq", "uid": "u1"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
        .unwrap(),
        SelectorSource::Spec,
    ));
    out.push((
        serde_json::from_value(json!({"metadata": {"namespace": NS, "name": "eq2", "uid": "u2"},
            "spec": {"selector": {"app": "web", "tier": "db"}, "ports": [{"port": 80}]}}))
        .unwrap(),
        SelectorSource::Spec,
    ));
    for (i, reqs) in selectors.iter().enumerate() {
        out.push((
            serde_json::from_value(json!({"metadata": {"namespace": NS, "name": format!("sel{i}"), "uid": format!("s{i}"),
                "annotations": {"roster.dev/selector": selector_text(reqs)}}, "spec": {"ports": [{"port": 80}]}}))
            .unwrap(),
            SelectorSource::Annotation,
        ));
    }
    out
}

fn selects(svc: &Service, reqs: &[Vec<Req>], labels: &BTreeMap<String, String>) -> bool {
    let name = svc.metadata.name.as_deref().unwrap();
    match name {
        "eq" => labels.get("app").is_some_and(|v| v == "web"),
        "eq2" => {
            labels.get("app").is_some_and(|v| v == "web") && labels.get("tier").is_some_and(|v| v == "db")
        }
        _ => {
            let i: usize = name.trim_start_matches("sel").parse().unwrap();
            reqs[i].iter().all(|r| r.matches(labels))
        }
    }
}

/// Interleaves the per-pod histories in the order given by `order` (the k-th occurrence of pod p is its k-th
/// operation), with the Services added after `services_at` operations.
fn run_cache(
    histories: &[History],
    order: &[usize],
    services: &[(Service, SelectorSource)],
    services_at: usize,
) -> Cache {
    let mut cache = Cache::new();
    let mut next = vec![0; histories.len()];
    for (step, &p) in order.iter().enumerate() {
        if step == services_at {
            for (svc, source) in services {
                cache.upsert_service(svc, *source);
            }
        }
        let op = &histories[p].ops[next[p]];
        next[p] += 1;
        let name = format!("p{p}");
        match op {
            PodOp::Upsert(labels, spec) => {
                let mut pod = pod_json(&name, spec, labels);
                pod["metadata"]["namespace"] = json!(histories[p].namespace);
                cache.upsert_pod(serde_json::from_value(pod).unwrap());
            }
            PodOp::Delete => {
                cache.delete_pod(histories[p].namespace, &name);
            }
        }
    }
    if services_at >= order.len() {
        for (svc, source) in services {
            cache.upsert_service(svc, *source);
        }
    }
    cache
}

type CacheCase = (Vec<History>, Vec<usize>, Vec<usize>, usize, usize, Vec<Vec<Req>>);

fn cache_case() -> impl Strategy<Value = CacheCase> {
    (
        proptest::collection::vec(history_strategy(), 1..8),
        proptest::collection::vec(proptest::collection::vec(req_strategy(), 1..3), 2),
    )
        .prop_flat_map(|(histories, selectors)| {
            let slots: Vec<usize> = histories
                .iter()
                .enumerate()
                .flat_map(|(p, h)| std::iter::repeat_n(p, h.ops.len()))
                .collect();
            let n = slots.len();
            (
                Just(histories),
                Just(slots.clone()).prop_shuffle(),
                Just(slots).prop_shuffle(),
                0..=n,
                0..=n,
                Just(selectors),
            )
        })
}

fn selected(cache: &Cache, name: &str) -> Vec<PodRecord> {
    cache
        .pods_for_service(&ServiceKey::new(NS, name))
        .iter()
        .map(|p| (**p).clone())
        .collect()
}

proptest! {
    #![proptest_config(config(256))]

    /// (d) for the cache: the same pod events interleaved in two orders, with the Services arriving at
    /// different moments, select the same pods; those are exactly the pods of the Service's namespace that
    /// exist at the end and match its selector; and a relist of the final pods from scratch agrees.
    #[test]
    fn cache_selection_is_independent_of_event_order(
        (histories, order_a, order_b, at_a, at_b, selectors) in cache_case(),
    ) {
        let services = cache_services(&selectors);
        let a = run_cache(&histories, &order_a, &services, at_a);
        let b = run_cache(&histories, &order_b, &services, at_b);

        let finals: Vec<PodProjection> = histories
            .iter()
            .enumerate()
            .filter_map(|(p, h)| match h.ops.last()? {
                PodOp::Upsert(labels, spec) => {
                    let mut pod = pod_json(&format!("p{p}"), spec, labels);
                    pod["metadata"]["namespace"] = json!(h.namespace);
                    Some(serde_json::from_value(pod).unwrap())
                }
                PodOp::Delete => None,
            })
            .collect();
        let mut relisted = Cache::new();
        for (svc, source) in &services {
            relisted.upsert_service(svc, *source);
        }
        let records = finals.iter().map(|p: &PodProjection| relisted.compact_pod(p)).collect();
        relisted.replace_pods(records);
        // A relist over a stale cache (order A's) also lands on the same state.
        let mut stale = run_cache(&histories, &order_a[..order_a.len() / 2], &services, 0);
        let records = finals.iter().map(|p| stale.compact_pod(p)).collect();
        stale.replace_pods(records);

        for (svc, _) in &services {
            let name = svc.metadata.name.as_deref().unwrap();
            let want: Vec<String> = histories
                .iter()
                .enumerate()
                .filter(|(_, h)| h.namespace == NS)
                .filter_map(|(p, h)| match h.ops.last()? {
                    PodOp::Upsert(labels, _) if selects(svc, &selectors, labels) => Some(format!("p{p}")),
                    _ => None,
                })
                .collect();
            let mut want = want;
            want.sort();
            let got_a = selected(&a, name);
            let names: Vec<String> = got_a.iter().map(|p| p.name.to_string()).collect();
            prop_assert_eq!(&names, &want, "{} selects the wrong pods", name);
            prop_assert_eq!(&selected(&b, name), &got_a, "event order changed {}'s pods", name);
            prop_assert_eq!(&selected(&relisted, name), &got_a, "relist disagrees for {}", name);
            prop_assert_eq!(&selected(&stale, name), &got_a, "relist over a stale cache disagrees for {}", name);
        }
        prop_assert_eq!(a.len_pods(), b.len_pods());
        prop_assert_eq!(a.len_pods(), relisted.len_pods());
        prop_assert_eq!(a.len_pods(), stale.len_pods());
    }
}
