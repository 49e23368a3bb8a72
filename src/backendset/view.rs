//! A BackendSet's current state: its publishable addresses with their readiness, the addresses it may not
//! publish and why, and how its DNS names resolve. Built purely from the spec, DNS answers and probe
//! thresholds; the Service reconcile publishes its addresses and the status reconcile reports it.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use super::crd::BackendSet;
use super::deny::{DenyList, unpublishable};
use super::spec::{ParsedSpec, Source, ValidBackend};
use super::threshold::Threshold;
use crate::cache::{NodeLookup, ServiceKey, ServicePortRecord, ServiceRecord, TargetPort, ip_sort_key};
use crate::desired::{EndpointSource, Exclusion};

/// Identifies the BackendSet a view comes from (the owner of the objects published from it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendSetRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The Service it names (`spec.serviceName`, defaulted), in its namespace.
    pub service: String,
}

impl BackendSetRef {
    pub fn service_key(&self) -> ServiceKey {
        ServiceKey::new(&self.namespace, &self.service)
    }
}

/// A publishable address and its readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressState {
    pub ip: IpAddr,
    /// The DNS name the address was resolved from (`None` for a literal IP).
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    /// The backend's named ports, for the Service's named targetPorts.
    pub ports: BTreeMap<String, i32>,
    pub ready: bool,
    /// The name's lookups are failing: this is a last known address, kept for `--dns-failure-grace`.
    pub stale: bool,
    pub last_probe_time: Option<Timestamp>,
    pub last_transition_time: Option<Timestamp>,
    /// The last probe failure, while failing.
    pub message: Option<String>,
}

impl AddressState {
    /// Whether the fields the Endpoints and EndpointSlices are built from are equal.
    fn publishes_same(&self, other: &AddressState) -> bool {
        self.ip == other.ip
            && self.ready == other.ready
            && self.node_name == other.node_name
            && self.zone == other.zone
            && self.ports == other.ports
    }
}

/// A backend address is an endpoint source like a pod: never terminating, placed where its spec says, with
/// its named ports for any protocol, no hostname (an endpoint hostname must be a DNS label, which a backend's
/// DNS name is not) and no `targetRef` (there is no pod).
impl EndpointSource for AddressState {
    fn ips(&self) -> &[IpAddr] {
        std::slice::from_ref(&self.ip)
    }

    fn exclusion(&self, _include_terminating: bool) -> Option<Exclusion> {
        None
    }

    fn ready(&self) -> bool {
        self.ready
    }

    fn terminating(&self) -> bool {
        false
    }

    fn hostname(&self, _svc: &ServiceRecord) -> Option<String> {
        None
    }

    fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }

    fn placement(&self, _nodes: &dyn Fn(&str) -> NodeLookup) -> NodeLookup {
        NodeLookup::Found {
            zone: self.zone.as_deref().map(Arc::from),
        }
    }

    fn port(&self, service_port: &ServicePortRecord) -> Option<i32> {
        match &service_port.target_port {
            TargetPort::Number(port) => Some(*port),
            TargetPort::Name(name) => self.ports.get(&**name).copied(),
        }
    }

    fn target_ref(&self) -> Option<ObjectReference> {
        None
    }
}

/// An address (or a backend without one) that is not published, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExcludedAddress {
    /// The IP, or the backend's text when it gave none.
    pub address: String,
    pub hostname: Option<String>,
    pub message: String,
    /// In the deny list (as opposed to invalid).
    pub denied: bool,
}

/// How a DNS name resolves now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Not looked up yet.
    Pending,
    Resolved,
    /// Lookups fail since `since`; the last known addresses are kept until `until`.
    Stale {
        error: String,
        since: Timestamp,
        until: Timestamp,
    },
    /// Lookups fail and no address is kept.
    Failed {
        error: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostnameState {
    pub hostname: String,
    pub resolution: Resolution,
}

/// One BackendSet's state, as its worker publishes it into [`super::Views`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendView {
    pub backendset: BackendSetRef,
    /// `metadata.generation` of the spec this view follows.
    pub generation: Option<i64>,
    /// Publishable addresses, sorted by IP.
    pub addresses: Vec<AddressState>,
    /// Denied, invalid and unresolved backends, and everything while the probe is invalid.
    pub excluded: Vec<ExcludedAddress>,
    /// The DNS names, in spec order.
    pub hostnames: Vec<HostnameState>,
    /// Why the readiness probe is invalid (nothing is published then).
    pub invalid_probe: Option<String>,
}

impl BackendView {
    /// Whether `other` publishes the same Endpoints and EndpointSlices (probe times and messages aside).
    pub fn publishes_same(&self, other: &BackendView) -> bool {
        self.backendset == other.backendset
            && self.addresses.len() == other.addresses.len()
            && self
                .addresses
                .iter()
                .zip(&other.addresses)
                .all(|(a, b)| a.publishes_same(b))
    }

    /// The controller owner reference to the BackendSet, set on everything published from it so that
    /// deleting it removes them (garbage collection) and `kubectl` shows where they come from.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: BackendSet::api_version(&()).into_owned(),
            kind: BackendSet::kind(&()).into_owned(),
            name: self.backendset.name.clone(),
            uid: self.backendset.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    pub fn ready_count(&self) -> usize {
        self.addresses.iter().filter(|a| a.ready).count()
    }
}

/// An address roster probes: where it came from and the backend that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub ip: IpAddr,
    pub backend: &'a ValidBackend,
}

/// The addresses of a spec, split into publishable candidates (first backend wins for an IP listed twice)
/// and excluded ones. `resolved` gives the current addresses of a DNS name.
pub fn classify<'a>(
    spec: &'a ParsedSpec,
    resolved: &dyn Fn(&str) -> Vec<IpAddr>,
    deny: &DenyList,
) -> (Vec<Candidate<'a>>, Vec<ExcludedAddress>) {
    let mut candidates = Vec::new();
    let mut excluded: Vec<ExcludedAddress> = spec
        .invalid
        .iter()
        .map(|bad| ExcludedAddress {
            address: bad.address.clone(),
            hostname: bad.hostname.clone(),
            message: bad.message.clone(),
            denied: false,
        })
        .collect();
    let mut seen = HashSet::new();
    for backend in &spec.backends {
        let ips = match &backend.source {
            Source::Ip(ip) => vec![*ip],
            Source::Hostname(name) => resolved(name),
        };
        for ip in ips {
            if !seen.insert(ip) {
                continue;
            }
            let hostname = match &backend.source {
                Source::Hostname(name) => Some(name.clone()),
                Source::Ip(_) => None,
            };
            let refused = match deny.check(ip) {
                Some(message) => Some((message, true)),
                None => unpublishable(ip).map(|m| (m.to_owned(), false)),
            };
            match refused {
                Some((message, denied)) => excluded.push(ExcludedAddress {
                    address: ip.to_string(),
                    hostname,
                    message,
                    denied,
                }),
                None => candidates.push(Candidate { ip, backend }),
            }
        }
    }
    candidates.sort_by_key(|c| ip_sort_key(&c.ip));
    (candidates, excluded)
}

/// Everything [`build_view`] combines.
pub struct ViewInput<'a> {
    pub backendset: BackendSetRef,
    pub generation: Option<i64>,
    pub spec: &'a ParsedSpec,
    pub deny: &'a DenyList,
    pub hostnames: Vec<HostnameState>,
    /// Current addresses of each DNS name.
    pub resolved: &'a dyn Fn(&str) -> Vec<IpAddr>,
    /// Readiness of each probed address (missing: not probed yet).
    pub readiness: &'a dyn Fn(IpAddr) -> Option<&'a Threshold>,
}

pub fn build_view(input: ViewInput<'_>) -> BackendView {
    let (candidates, mut excluded) = classify(input.spec, input.resolved, input.deny);
    let stale: HashSet<&str> = input
        .hostnames
        .iter()
        .filter(|h| matches!(h.resolution, Resolution::Stale { .. }))
        .map(|h| h.hostname.as_str())
        .collect();
    let mut addresses = Vec::new();
    for Candidate { ip, backend } in candidates {
        let hostname = match &backend.source {
            Source::Hostname(name) => Some(name.clone()),
            Source::Ip(_) => None,
        };
        if let Err(problem) = &input.spec.probe {
            excluded.push(ExcludedAddress {
                address: ip.to_string(),
                hostname,
                message: format!("not published: invalid readinessProbe: {problem}"),
                denied: false,
            });
            continue;
        }
        let threshold = (input.readiness)(ip);
        addresses.push(AddressState {
            ip,
            stale: hostname.as_deref().is_some_and(|h| stale.contains(h)),
            hostname,
            node_name: backend.node_name.clone(),
            zone: backend.zone.clone(),
            ports: backend.ports.clone(),
            ready: threshold.is_some_and(Threshold::ready),
            last_probe_time: threshold.and_then(Threshold::last_probe),
            last_transition_time: threshold.and_then(Threshold::last_transition),
            message: match threshold {
                Some(t) => t.message().map(str::to_owned),
                None => Some("not probed yet".to_owned()),
            },
        });
    }
    BackendView {
        backendset: input.backendset,
        generation: input.generation,
        addresses,
        excluded,
        hostnames: input.hostnames,
        invalid_probe: input.spec.probe.as_ref().err().cloned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::backendset::args::BackendArgs;
    use crate::backendset::crd::BackendSet;

    fn spec(value: serde_json::Value) -> ParsedSpec {
        let bs: BackendSet = serde_json::from_value(json!({
            "apiVersion": "roster.dev/v1alpha1", "kind": "BackendSet",
            "metadata": {"name": "db", "namespace": "shop"}, "spec": value
        }))
        .unwrap();
        ParsedSpec::parse(&bs)
    }

    fn dns(name: &str) -> Vec<IpAddr> {
        match name {
            "db.example.com" => vec!["198.51.100.20".parse().unwrap(), "198.51.100.10".parse().unwrap()],
            "metadata.example.com" => vec!["169.254.169.254".parse().unwrap()],
            _ => vec![],
        }
    }

    #[test]
    fn classify_dedupes_denies_and_reports_invalid() {
        let spec = spec(json!({"backends": [
            {"ip": "198.51.100.10", "zone": "a"},
            {"hostname": "DB.example.com."},
            {"ip": "127.0.0.1"},
            {"hostname": "metadata.example.com"},
            {"ip": "10.0.0"},
            {"hostname": "bad_name"},
            {"ip": "224.0.0.1"},
            {"ip": "198.51.100.30", "ports": {"Bad_Name": 1}},
        ]}));
        let deny = DenyList::new(BackendArgs::default().deny_list());
        let (candidates, excluded) = classify(&spec, &dns, &deny);
        let got: Vec<(String, Option<&str>)> = candidates
            .iter()
            .map(|c| (c.ip.to_string(), c.backend.zone.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("198.51.100.10".into(), Some("a")),
                ("198.51.100.20".into(), None)
            ],
            "the literal IP wins over the same address from DNS"
        );
        let got: Vec<(&str, Option<&str>, &str)> = excluded
            .iter()
            .map(|e| (e.address.as_str(), e.hostname.as_deref(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0", None, "invalid IP"),
                ("bad_name", Some("bad_name"), "invalid hostname"),
                ("198.51.100.30", None, "invalid port name: \"Bad_Name\""),
                (
                    "127.0.0.1",
                    None,
                    "denied: 127.0.0.1 is in --probe-deny-cidrs 127.0.0.0/8"
                ),
                (
                    "169.254.169.254",
                    Some("metadata.example.com"),
                    "denied: 169.254.169.254 is in --probe-deny-cidrs 169.254.0.0/16"
                ),
                ("224.0.0.1", None, "invalid IP: link-local multicast address"),
            ]
        );
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn view_of(
        spec: &ParsedSpec,
        thresholds: &HashMap<IpAddr, Threshold>,
        hostnames: Vec<HostnameState>,
    ) -> BackendView {
        let deny = DenyList::new(BackendArgs::default().deny_list());
        build_view(ViewInput {
            backendset: BackendSetRef {
                name: "db".into(),
                namespace: "shop".into(),
                uid: "u1".into(),
                service: "db".into(),
            },
            generation: Some(3),
            spec,
            deny: &deny,
            hostnames,
            resolved: &dns,
            readiness: &|ip| thresholds.get(&ip),
        })
    }

    #[test]
    fn view_carries_readiness_and_backend_fields() {
        let spec = spec(json!({
            "backends": [{"hostname": "db.example.com", "nodeName": "n1", "ports": {"pg": 5432}}],
            "readinessProbe": {"tcpSocket": {"port": "pg"}}
        }));
        let mut ready = Threshold::new(true, at(0));
        ready.record(Ok(()), &spec.probe.clone().unwrap().unwrap().timing, at(1));
        let thresholds = HashMap::from([("198.51.100.10".parse().unwrap(), ready)]);
        let stale = vec![HostnameState {
            hostname: "db.example.com".into(),
            resolution: Resolution::Stale {
                error: "timed out".into(),
                since: at(0),
                until: at(300),
            },
        }];
        let view = view_of(&spec, &thresholds, stale);
        let got: Vec<_> = view
            .addresses
            .iter()
            .map(|a| {
                (
                    a.ip.to_string(),
                    a.ready,
                    a.stale,
                    a.node_name.as_deref(),
                    a.message.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("198.51.100.10".into(), true, true, Some("n1"), None),
                (
                    "198.51.100.20".into(),
                    false,
                    true,
                    Some("n1"),
                    Some("not probed yet")
                ),
            ]
        );
        assert_eq!(view.addresses[0].last_transition_time, Some(at(1)));
        assert_eq!(view.addresses[0].ports["pg"], 5432);
        assert_eq!(view.ready_count(), 1);
        assert_eq!(view.generation, Some(3));
    }

    #[test]
    fn invalid_probe_publishes_nothing() {
        let spec = spec(json!({
            "backends": [{"ip": "198.51.100.10"}],
            "readinessProbe": {"exec": {"command": ["true"]}}
        }));
        let view = view_of(&spec, &HashMap::new(), vec![]);
        assert!(view.addresses.is_empty());
        assert_eq!(
            view.invalid_probe.as_deref(),
            Some(crate::backendset::spec::EXEC_NOT_SUPPORTED)
        );
        assert_eq!(view.excluded.len(), 1);
        assert_eq!(view.excluded[0].address, "198.51.100.10");
    }

    #[test]
    fn publication_compares_only_published_fields() {
        let spec = spec(
            json!({"backends": [{"ip": "198.51.100.10"}], "readinessProbe": {"tcpSocket": {"port": 5432}}}),
        );
        let timing = spec.probe.clone().unwrap().unwrap().timing;
        let ip: IpAddr = "198.51.100.10".parse().unwrap();
        let mut t = Threshold::new(true, at(0));
        t.record(Ok(()), &timing, at(1));
        let before = view_of(&spec, &HashMap::from([(ip, t.clone())]), vec![]);
        t.record(Ok(()), &timing, at(2));
        let probed_again = view_of(&spec, &HashMap::from([(ip, t.clone())]), vec![]);
        assert_ne!(before, probed_again);
        assert!(
            before.publishes_same(&probed_again),
            "a probe time alone publishes nothing new"
        );
        for _ in 0..3 {
            t.record(Err("connect: connection refused".into()), &timing, at(3));
        }
        let down = view_of(&spec, &HashMap::from([(ip, t)]), vec![]);
        assert!(!before.publishes_same(&down));
    }
}
