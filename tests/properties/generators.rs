//! The random inputs: Services, pods (as the JSON the watches decode) and label selectors, and the proptest
//! configuration every property uses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use proptest::prelude::*;
use proptest::sample::select;
use roster::cache::{Interner, NodeLookup, PodProjection, PodRecord, SelectorSource, ServiceRecord};
use serde_json::{Value, json};

pub const NS: &str = "ns";
pub const SVC: &str = "svc";
pub const SVC_UID: &str = "svc-uid";
/// Container port names the Services' named targetPorts refer to.
pub const TARGET_NAMES: [&str; 3] = ["http", "metrics", "dns"];
/// Service port names (unique per Service).
pub const SVC_PORT_NAMES: [&str; 3] = ["web", "alt", "extra"];
pub const PROTOCOLS: [Option<&str>; 4] = [None, Some("TCP"), Some("UDP"), Some("SCTP")];

/// `cases` random cases, and no file of failures kept between runs.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- random Services ----

#[derive(Clone, Debug)]
pub enum Target {
    Unset,
    Zero,
    Number(i32),
    Name(&'static str),
}

#[derive(Clone, Debug)]
pub struct PortSpec {
    /// Empty for the single unnamed port.
    pub name: &'static str,
    pub port: i32,
    pub protocol: Option<&'static str>,
    pub target: Target,
    pub app_protocol: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    pub fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SvcSpec {
    pub ports: Vec<PortSpec>,
    pub headless: bool,
    /// `spec.ipFamilies`, possibly empty.
    pub families: Vec<Family>,
    /// Family of the cluster IP when `families` is empty and the Service is not headless.
    pub v6_cluster_ip: bool,
    pub pnra: bool,
    pub annotated_mode: bool,
}

impl SvcSpec {
    pub fn cluster_ip_family(&self) -> Option<Family> {
        if self.headless {
            return None;
        }
        Some(self.families.first().copied().unwrap_or(if self.v6_cluster_ip {
            Family::V6
        } else {
            Family::V4
        }))
    }

    pub fn mode(&self) -> SelectorSource {
        if self.annotated_mode {
            SelectorSource::Annotation
        } else {
            SelectorSource::Spec
        }
    }
}

pub fn target_strategy() -> impl Strategy<Value = Target> {
    prop_oneof![
        1 => Just(Target::Unset),
        1 => Just(Target::Zero),
        2 => (1..=65535i32).prop_map(Target::Number),
        4 => select(&TARGET_NAMES[..]).prop_map(Target::Name),
    ]
}

pub fn ports_strategy() -> impl Strategy<Value = Vec<PortSpec>> {
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

pub fn families_strategy() -> impl Strategy<Value = Vec<Family>> {
    select(vec![
        vec![],
        vec![Family::V4],
        vec![Family::V6],
        vec![Family::V4, Family::V6],
        vec![Family::V6, Family::V4],
    ])
}

pub fn service_strategy() -> impl Strategy<Value = SvcSpec> {
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

pub fn service_object(spec: &SvcSpec) -> Service {
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

pub fn service_record(spec: &SvcSpec) -> ServiceRecord {
    ServiceRecord::from_service(&service_object(spec), spec.mode(), &mut Interner::new())
}

// ---- random pods ----

pub type ContainerPort = (Option<&'static str>, i32, Option<&'static str>);

#[derive(Clone, Debug)]
pub struct PodSpec {
    pub v4: Option<(u8, u8)>,
    /// Write the IPv4 address with leading zeros (legacy form, normalised on decode).
    pub v4_legacy: bool,
    pub v6: Option<u16>,
    pub v6_first: bool,
    pub phase: Option<&'static str>,
    /// Status of the Ready condition, if there is one.
    pub ready: Option<&'static str>,
    pub terminating: bool,
    /// n1: zone-a; n2: no zone; n3: not in the Node cache; "": unset.
    pub node: Option<&'static str>,
    pub hostname: bool,
    pub subdomain: Option<&'static str>,
    pub ports: Vec<ContainerPort>,
    /// (restartPolicy Always, port) of init containers: only sidecars' ports count.
    pub init_ports: Vec<(bool, ContainerPort)>,
}

pub fn container_port() -> impl Strategy<Value = ContainerPort> {
    (
        proptest::option::weighted(0.85, select(&TARGET_NAMES[..])),
        1..=65535i32,
        select(&PROTOCOLS[..3]), // SCTP named ports are rare; TCP/UDP suffice to test protocol matching
    )
}

pub fn pod_strategy() -> impl Strategy<Value = PodSpec> {
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
    pub fn ips(&self) -> Vec<IpAddr> {
        let v4 = self.v4.map(|(a, b)| IpAddr::V4(Ipv4Addr::new(10, 1, a, b)));
        let v6 = self
            .v6
            .map(|x| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, x)));
        let ordered = if self.v6_first { [v6, v4] } else { [v4, v6] };
        ordered.into_iter().flatten().collect()
    }

    pub fn ip_texts(&self) -> Vec<String> {
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

    pub fn node_name(&self) -> Option<&'static str> {
        self.node.filter(|n| !n.is_empty())
    }

    pub fn is_ready(&self) -> bool {
        self.ready == Some("True")
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.phase, Some("Succeeded") | Some("Failed"))
    }

    /// Named ports in resolution order: containers, then sidecar (restartPolicy Always) init containers.
    pub fn named_ports(&self) -> impl Iterator<Item = &ContainerPort> {
        let sidecars = self.init_ports.iter().filter(|(s, _)| *s).map(|(_, p)| p);
        self.ports.iter().chain(sidecars)
    }
}

pub fn pod_json(name: &str, spec: &PodSpec, labels: &BTreeMap<String, String>) -> Value {
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

pub fn app_web() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), "web".to_owned())])
}

/// Decodes the pods exactly as the watch does (JSON → projection → record).
pub fn pod_records(pods: &[(String, PodSpec)]) -> Vec<Arc<PodRecord>> {
    let mut interner = Interner::new();
    pods.iter()
        .map(|(name, spec)| {
            let bytes = serde_json::to_vec(&pod_json(name, spec, &app_web())).unwrap();
            let projection: PodProjection = serde_json::from_slice(&bytes).expect("pod projection");
            Arc::new(PodRecord::from_projection(&projection, &mut interner))
        })
        .collect()
}

pub fn named(pods: Vec<PodSpec>) -> Vec<(String, PodSpec)> {
    pods.into_iter()
        .enumerate()
        .map(|(i, p)| (format!("p{i}"), p))
        .collect()
}

/// Pods, and the same pods in another order.
pub type NamedPods = Vec<(String, PodSpec)>;

pub fn pods_and_shuffled(max: usize) -> impl Strategy<Value = (NamedPods, NamedPods)> {
    proptest::collection::vec(pod_strategy(), 0..max).prop_flat_map(|pods| {
        let pods = named(pods);
        (Just(pods.clone()), Just(pods).prop_shuffle())
    })
}

pub fn nodes(name: &str) -> NodeLookup {
    match name {
        "n1" => NodeLookup::Found {
            zone: Some(Arc::from("zone-a")),
        },
        "n2" => NodeLookup::Found { zone: None },
        _ => NodeLookup::Missing,
    }
}

/// A ClusterIP Service of one IPv4 family with one unnamed port, 80 to 8080.
pub fn one_port_service() -> SvcSpec {
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

// ---- selectors ----

pub const SELECTOR_KEYS: [&str; 4] = ["app", "tier", "env", "example.com/team"];
pub const SELECTOR_VALUES: [&str; 4] = ["web", "db", "a", "b"];

#[derive(Clone, Debug)]
pub enum Req {
    Eq(&'static str, &'static str, bool),
    NotEq(&'static str, &'static str),
    In(&'static str, Vec<&'static str>),
    NotIn(&'static str, Vec<&'static str>),
    Exists(&'static str),
    NotExists(&'static str),
}

impl Req {
    pub fn text(&self) -> String {
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
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
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

pub fn req_strategy() -> impl Strategy<Value = Req> {
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

pub fn labels_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(
        select(&SELECTOR_KEYS[..]).prop_map(str::to_owned),
        prop_oneof![4 => select(&SELECTOR_VALUES[..]), 1 => Just("")].prop_map(str::to_owned),
        0..4,
    )
}

pub fn selector_text(reqs: &[Req]) -> String {
    reqs.iter().map(Req::text).collect::<Vec<_>>().join(", ")
}
