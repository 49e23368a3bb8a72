//! Small builders of cache records for the desired-state tests.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;

use crate::cache::{
    Interner, IpFamily, Labels, NamedPort, PodPhase, PodRecord, Protocol, Selector, ServicePortRecord,
    ServiceRecord, ServiceType, TargetPort,
};

pub const CREATED: &str = "2024-01-01T00:00:00Z";

pub fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

pub fn port(name: &str, port: i32, protocol: Protocol, target_port: TargetPort) -> ServicePortRecord {
    ServicePortRecord {
        name: name.into(),
        port,
        protocol,
        app_protocol: None,
        target_port,
    }
}

/// A ready, running pod `shop/<name>` labelled `app=web` on `node-a` with IP 10.0.0.1.
pub struct PodFixture(PodRecord);

impl PodFixture {
    pub fn new(name: &str) -> Self {
        PodFixture(PodRecord {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}").into(),
            labels: Labels::from_pairs([("app", "web")], &mut Interner::new()),
            node_name: Some("node-a".into()),
            hostname: None,
            subdomain: None,
            ips: vec!["10.0.0.1".parse().unwrap()].into(),
            phase: PodPhase::Running,
            ready: true,
            ready_transition: Some(ts(CREATED)),
            terminating: false,
            ports: Arc::from(Vec::new()),
            resource_version: "1".into(),
        })
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0.namespace = namespace.into();
        self
    }

    pub fn ip(self, ip: &str) -> Self {
        self.ips(&[ip])
    }

    pub fn ips(mut self, ips: &[&str]) -> Self {
        self.0.ips = ips.iter().map(|ip| ip.parse::<IpAddr>().unwrap()).collect();
        self
    }

    pub fn node(mut self, node: Option<&str>) -> Self {
        self.0.node_name = node.map(Arc::from);
        self
    }

    pub fn not_ready(mut self) -> Self {
        self.0.ready = false;
        self
    }

    pub fn ready_at(mut self, at: &str) -> Self {
        self.0.ready_transition = Some(ts(at));
        self
    }

    pub fn terminating(mut self) -> Self {
        self.0.terminating = true;
        self
    }

    pub fn phase(mut self, phase: PodPhase) -> Self {
        self.0.phase = phase;
        self
    }

    pub fn hostname(mut self, hostname: &str, subdomain: &str) -> Self {
        self.0.hostname = Some(hostname.into());
        self.0.subdomain = Some(subdomain.into());
        self
    }

    pub fn port(mut self, name: &str, port: i32, protocol: Protocol) -> Self {
        let mut ports = self.0.ports.to_vec();
        ports.push(NamedPort {
            name: name.into(),
            port,
            protocol,
        });
        self.0.ports = ports.into();
        self
    }

    pub fn build(self) -> Arc<PodRecord> {
        Arc::new(self.0)
    }
}

/// Service `shop/<name>` (uid `svc-uid`), selector `app=web`, cluster IP 10.96.0.10 (IPv4), one port
/// `web-port` 8080 → 80, as the seed example `hostname-svc-clusterip`.
pub struct ServiceFixture(ServiceRecord);

impl ServiceFixture {
    pub fn new(name: &str) -> Self {
        let mut interner = Interner::new();
        let selector = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        ServiceFixture(ServiceRecord {
            namespace: "shop".into(),
            name: name.into(),
            uid: "svc-uid".into(),
            creation_timestamp: Some(ts(CREATED)),
            deleting: false,
            labels: Labels::default(),
            selector: Ok(Some(Selector::from_map(&selector, &mut interner))),
            has_spec_selector: true,
            type_: ServiceType::ClusterIP,
            cluster_ip: Some("10.96.0.10".parse().unwrap()),
            ip_families: vec![IpFamily::V4],
            ports: vec![port("web-port", 8080, Protocol::Tcp, TargetPort::Number(80))],
            publish_not_ready_addresses: false,
            annotations: BTreeMap::new(),
            traffic_distribution: None,
            topology_mode: None,
            ready_hold_down: Ok(None),
            resource_version: "1".into(),
        })
    }

    pub fn traffic_distribution(mut self, value: &str) -> Self {
        self.0.traffic_distribution = Some(value.into());
        self
    }

    pub fn topology_mode(mut self, value: &str) -> Self {
        self.0.topology_mode = Some(value.into());
        self
    }

    pub fn headless(mut self) -> Self {
        self.0.cluster_ip = None;
        self
    }

    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.0.cluster_ip = Some(ip.parse().unwrap());
        self
    }

    pub fn families(mut self, families: &[IpFamily]) -> Self {
        self.0.ip_families = families.to_vec();
        self
    }

    pub fn ports(mut self, ports: Vec<ServicePortRecord>) -> Self {
        self.0.ports = ports;
        self
    }

    pub fn publish_not_ready(mut self) -> Self {
        self.0.publish_not_ready_addresses = true;
        self
    }

    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.0.labels = Labels::from_pairs(labels.iter().copied(), &mut Interner::new());
        self
    }

    pub fn uid(mut self, uid: &str) -> Self {
        self.0.uid = uid.into();
        self
    }

    pub fn deleting(mut self) -> Self {
        self.0.deleting = true;
        self
    }

    pub fn selectorless(mut self) -> Self {
        self.0.selector = Ok(None);
        self.0.has_spec_selector = false;
        self
    }

    pub fn build(self) -> ServiceRecord {
        self.0
    }
}
