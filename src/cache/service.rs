//! Services: the compact record built from a full `Service`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ServiceKey;
use super::interner::Interner;
use super::ip::{IpFamily, parse_ip};
use super::labels::Labels;
use super::pod::Protocol;
use super::selector::{Selector, SelectorError};
use crate::args::parse_duration;
use crate::desired::labels::{
    ANNOTATION_PREFIX_ROSTER, ANNOTATION_READY_HOLD_DOWN, ANNOTATION_SELECTOR,
    ANNOTATION_TOPOLOGY_AWARE_HINTS, ANNOTATION_TOPOLOGY_MODE,
};

/// Where a Service's pod selector comes from (the `--services` mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SelectorSource {
    /// `--services=all`: `spec.selector`, as the upstream Endpoints controller.
    #[default]
    Spec,
    /// `--services=annotated`: the `roster.dev/selector` annotation, only on Services without
    /// `spec.selector` (Services with one are left to the upstream controllers).
    Annotation,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

impl ServiceType {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => ServiceType::ExternalName,
            _ => ServiceType::ClusterIP,
        }
    }
}

/// A Service port's `targetPort`: a number (unset and 0 already replaced by `port`) or a container port name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetPort {
    Number(i32),
    Name(Arc<str>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePortRecord {
    /// Empty for the single unnamed port a Service may have.
    pub name: Arc<str>,
    pub port: i32,
    pub protocol: Protocol,
    pub app_protocol: Option<Arc<str>>,
    pub target_port: TargetPort,
}

impl ServicePortRecord {
    fn from_port(port: &ServicePort, interner: &mut Interner) -> Self {
        let target_port = match &port.target_port {
            Some(IntOrString::Int(n)) if *n != 0 => TargetPort::Number(*n),
            Some(IntOrString::String(name)) if !name.is_empty() => TargetPort::Name(interner.intern(name)),
            _ => TargetPort::Number(port.port),
        };
        ServicePortRecord {
            name: interner.intern(port.name.as_deref().unwrap_or_default()),
            port: port.port,
            protocol: Protocol::parse(port.protocol.as_deref()),
            app_protocol: port.app_protocol.as_deref().map(|p| interner.intern(p)),
            target_port,
        }
    }
}

/// What the cache keeps of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub uid: Arc<str>,
    pub creation_timestamp: Option<Timestamp>,
    /// `metadata.deletionTimestamp` is set: no new EndpointSlices are created for it.
    pub deleting: bool,
    pub labels: Labels,
    /// The pod selector roster uses. `Ok(None)`: roster does not select pods for this Service (selectorless,
    /// an empty selector, or in annotation mode a Service without the annotation or with `spec.selector`).
    /// `Err`: the annotation does not parse; the controller reports it and leaves the Service's objects alone.
    pub selector: Result<Option<Selector>, SelectorError>,
    /// `spec.selector` is set and non-empty (whatever the mode); the mirroring rules key on it.
    pub has_spec_selector: bool,
    pub type_: ServiceType,
    /// `None` when headless (`clusterIP` is `None` or unset).
    pub cluster_ip: Option<IpAddr>,
    /// `spec.ipFamilies`, unknown entries dropped.
    pub ip_families: Vec<IpFamily>,
    pub ports: Vec<ServicePortRecord>,
    pub publish_not_ready_addresses: bool,
    /// The annotations roster reads: those under the `roster.dev/` prefix.
    pub annotations: BTreeMap<Arc<str>, Arc<str>>,
    /// `spec.trafficDistribution`.
    pub traffic_distribution: Option<Arc<str>>,
    /// The topology annotation in effect: `service.kubernetes.io/topology-aware-hints` when set (the
    /// deprecated name takes precedence, as upstream), else `service.kubernetes.io/topology-mode`.
    pub topology_mode: Option<Arc<str>>,
    /// `roster.dev/ready-hold-down`: none, the hold-down, or why the value does not parse.
    pub ready_hold_down: Result<Option<Duration>, String>,
    pub resource_version: String,
}

impl ServiceRecord {
    pub fn from_service(svc: &Service, source: SelectorSource, interner: &mut Interner) -> Self {
        let meta = &svc.metadata;
        let spec = svc.spec.clone().unwrap_or_default();
        let spec_selector = spec.selector.as_ref().filter(|s| !s.is_empty());
        let annotations: BTreeMap<Arc<str>, Arc<str>> = meta
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX_ROSTER))
            .map(|(k, v)| (interner.intern(k), interner.intern(v)))
            .collect();
        let selector = match (source, spec_selector) {
            (SelectorSource::Spec, selector) => Ok(selector.map(|s| Selector::from_map(s, interner))),
            (SelectorSource::Annotation, Some(_)) => Ok(None),
            (SelectorSource::Annotation, None) => match annotations.get(ANNOTATION_SELECTOR) {
                Some(text) => Selector::parse(text, interner).map(Some),
                None => Ok(None),
            },
        };
        ServiceRecord {
            namespace: interner.intern(meta.namespace.as_deref().unwrap_or_default()),
            name: interner.intern(meta.name.as_deref().unwrap_or_default()),
            uid: Arc::from(meta.uid.as_deref().unwrap_or_default()),
            creation_timestamp: meta.creation_timestamp.as_ref().map(|t| t.0),
            deleting: meta.deletion_timestamp.is_some(),
            labels: meta
                .labels
                .as_ref()
                .map(|l| Labels::from_map(l, interner))
                .unwrap_or_default(),
            selector,
            has_spec_selector: spec_selector.is_some(),
            type_: ServiceType::parse(spec.type_.as_deref()),
            cluster_ip: spec
                .cluster_ip
                .as_deref()
                .filter(|ip| *ip != "None")
                .and_then(parse_ip),
            ip_families: spec
                .ip_families
                .iter()
                .flatten()
                .filter_map(|f| IpFamily::from_service_family(f))
                .collect(),
            ports: spec
                .ports
                .iter()
                .flatten()
                .map(|p| ServicePortRecord::from_port(p, interner))
                .collect(),
            publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
            ready_hold_down: ready_hold_down(annotations.get(ANNOTATION_READY_HOLD_DOWN)),
            annotations,
            traffic_distribution: spec.traffic_distribution.as_deref().map(|t| interner.intern(t)),
            topology_mode: topology_mode(meta.annotations.as_ref()).map(|m| interner.intern(m)),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        }
    }

    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// No cluster IP (`None` or unset): the headless label is added and Endpoints may carry port-less subsets.
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.is_none()
    }

    /// The selector roster selects pods with, if it has a valid one.
    pub fn active_selector(&self) -> Option<&Selector> {
        self.selector.as_ref().ok()?.as_ref()
    }

    pub fn is_external_name(&self) -> bool {
        self.type_ == ServiceType::ExternalName
    }

    /// Whether roster computes Endpoints and EndpointSlices for this Service: it has a valid selector and is
    /// not `ExternalName`.
    pub fn selects_pods(&self) -> bool {
        self.type_ != ServiceType::ExternalName && self.active_selector().is_some()
    }

    /// The topology annotation asks for the allocation by CPU (`Auto`, or `auto`).
    pub fn topology_auto(&self) -> bool {
        matches!(self.topology_mode.as_deref(), Some("Auto" | "auto"))
    }

    /// Whether everything roster reads is the same (the resource version aside).
    pub fn relevant_eq(&self, other: &ServiceRecord) -> bool {
        self.namespace == other.namespace
            && self.name == other.name
            && self.uid == other.uid
            && self.creation_timestamp == other.creation_timestamp
            && self.deleting == other.deleting
            && self.labels == other.labels
            && self.selector == other.selector
            && self.has_spec_selector == other.has_spec_selector
            && self.type_ == other.type_
            && self.cluster_ip == other.cluster_ip
            && self.ip_families == other.ip_families
            && self.ports == other.ports
            && self.publish_not_ready_addresses == other.publish_not_ready_addresses
            && self.annotations == other.annotations
            && self.traffic_distribution == other.traffic_distribution
            && self.topology_mode == other.topology_mode
            && self.ready_hold_down == other.ready_hold_down
    }
}

/// The value of the topology annotation that counts: the deprecated key's when present.
fn topology_mode(annotations: Option<&BTreeMap<String, String>>) -> Option<&str> {
    let annotations = annotations?;
    let value = annotations.get(ANNOTATION_TOPOLOGY_AWARE_HINTS);
    value
        .or_else(|| annotations.get(ANNOTATION_TOPOLOGY_MODE))
        .map(String::as_str)
}

/// `roster.dev/ready-hold-down` read as a duration (`10s`, `1m30s`); `0s` turns it off.
fn ready_hold_down(value: Option<&Arc<str>>) -> Result<Option<Duration>, String> {
    let Some(text) = value else { return Ok(None) };
    let hold = parse_duration(text).map_err(|err| format!("{ANNOTATION_READY_HOLD_DOWN}: {err}"))?;
    Ok((!hold.is_zero()).then_some(hold))
}
