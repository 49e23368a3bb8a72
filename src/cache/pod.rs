//! Pods: the watch projection and the compact record the cache keeps.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

use super::interner::Interner;
use super::ip::parse_ip;
use super::labels::Labels;

/// The Pod fields roster reads and nothing else; unknown fields are skipped while decoding.
/// `kube::Api::<PodProjection>` and `kube::runtime::watcher` work with it directly.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PodProjection {
    #[serde(deserialize_with = "super::meta::pod_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpecProjection,
    #[serde(default)]
    pub status: PodStatusProjection,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecProjection {
    pub node_name: Option<String>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    #[serde(default)]
    pub containers: Vec<ContainerProjection>,
    #[serde(default)]
    pub init_containers: Vec<ContainerProjection>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProjection {
    /// Only set on init containers; `Always` marks a sidecar whose ports count.
    pub restart_policy: Option<String>,
    #[serde(default)]
    pub ports: Vec<ContainerPortProjection>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPortProjection {
    pub name: Option<String>,
    #[serde(default)]
    pub container_port: i32,
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatusProjection {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Vec<PodIpProjection>,
    #[serde(default)]
    pub conditions: Vec<PodConditionProjection>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PodIpProjection {
    #[serde(default)]
    pub ip: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodConditionProjection {
    // Missing fields decode as empty (never ready): one odd pod must not fail a whole list or watch.
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    pub last_transition_time: Option<Time>,
}

impl kube::Resource for PodProjection {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A port protocol (`TCP` when unset, as the API server defaults it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Reads an API protocol string; unset or unrecognised values (which validation rejects) read as TCP.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            _ => Protocol::Tcp,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// A named container port, the target of a Service's named `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedPort {
    pub name: Arc<str>,
    pub port: i32,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    #[default]
    Unknown,
}

impl PodPhase {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("Pending") => PodPhase::Pending,
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            _ => PodPhase::Unknown,
        }
    }

    /// Succeeded and Failed pods never come back; they are never endpoints.
    pub fn is_terminal(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// What the cache keeps of a Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRecord {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub uid: Arc<str>,
    pub labels: Labels,
    pub node_name: Option<Arc<str>>,
    pub hostname: Option<Arc<str>>,
    pub subdomain: Option<Arc<str>>,
    /// Parsed and normalised pod IPs: `status.podIP` first, then the other `status.podIPs` in order.
    /// Unparseable entries are dropped.
    pub ips: Box<[IpAddr]>,
    pub phase: PodPhase,
    /// The `Ready` condition has status `True`.
    pub ready: bool,
    /// `lastTransitionTime` of the `Ready` condition, the input of the last-change-trigger-time annotation.
    pub ready_transition: Option<Timestamp>,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// Named ports of the containers, then of the restartable (sidecar) init containers.
    pub ports: Arc<[NamedPort]>,
    pub resource_version: Box<str>,
}

fn non_empty(value: Option<&String>, interner: &mut Interner) -> Option<Arc<str>> {
    value.filter(|v| !v.is_empty()).map(|v| interner.intern(v))
}

impl PodRecord {
    pub fn from_projection(pod: &PodProjection, interner: &mut Interner) -> Self {
        let meta = &pod.metadata;
        let ready_condition = pod.status.conditions.iter().find(|c| c.type_ == "Ready");
        let ports = named_ports(&pod.spec, interner);
        PodRecord {
            namespace: interner.intern(meta.namespace.as_deref().unwrap_or_default()),
            name: Arc::from(meta.name.as_deref().unwrap_or_default()),
            uid: Arc::from(meta.uid.as_deref().unwrap_or_default()),
            labels: meta
                .labels
                .as_ref()
                .map(|l| Labels::from_map(l, interner))
                .unwrap_or_default(),
            node_name: non_empty(pod.spec.node_name.as_ref(), interner),
            hostname: non_empty(pod.spec.hostname.as_ref(), interner),
            subdomain: non_empty(pod.spec.subdomain.as_ref(), interner),
            ips: pod_ips(&pod.status),
            phase: PodPhase::parse(pod.status.phase.as_deref()),
            ready: ready_condition.is_some_and(|c| c.status == "True"),
            ready_transition: ready_condition
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
            terminating: meta.deletion_timestamp.is_some(),
            ports: interner.intern_ports(ports),
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
        }
    }

    /// Whether the pod can take traffic: ready, running (not terminating, not finished) and with an IP.
    pub fn serves(&self) -> bool {
        self.ready && !self.terminating && !self.phase.is_terminal() && !self.ips.is_empty()
    }

    /// Whether everything roster reads is the same (the resource version aside).
    pub fn relevant_eq(&self, other: &PodRecord) -> bool {
        self.namespace == other.namespace
            && self.name == other.name
            && self.uid == other.uid
            && self.labels == other.labels
            && self.node_name == other.node_name
            && self.hostname == other.hostname
            && self.subdomain == other.subdomain
            && self.ips == other.ips
            && self.phase == other.phase
            && self.ready == other.ready
            && self.ready_transition == other.ready_transition
            && self.terminating == other.terminating
            && self.ports == other.ports
    }
}

fn pod_ips(status: &PodStatusProjection) -> Box<[IpAddr]> {
    let mut ips: Vec<IpAddr> = Vec::with_capacity(status.pod_ips.len().max(1));
    let texts = status.pod_ip.iter().chain(status.pod_ips.iter().map(|p| &p.ip));
    for ip in texts.filter_map(|text| parse_ip(text)) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips.into()
}

fn named_ports(spec: &PodSpecProjection, interner: &mut Interner) -> Vec<NamedPort> {
    let sidecars = spec
        .init_containers
        .iter()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            let name = p.name.as_deref().filter(|n| !n.is_empty())?;
            Some(NamedPort {
                name: interner.intern(name),
                port: p.container_port,
                protocol: Protocol::parse(p.protocol.as_deref()),
            })
        })
        .collect()
}
