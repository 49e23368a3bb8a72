//! Each selected pod's verdict, from the decision the Endpoints and EndpointSlices are built with
//! ([`desired::endpoints_entry`], [`desired::slice_entry`]), and the pods the selector narrowly misses.

use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;

use crate::cache::{
    NodeLookup, Operator, PodPhase, PodRecord, Requirement, Selector, ServicePortRecord, ServiceRecord,
    TargetPort,
};
use crate::desired::readiness::slice_conditions;
use crate::desired::{self, DesiredEndpoints, EndpointSource, Exclusion};

/// One selected pod: where roster publishes it, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodExplanation {
    pub name: String,
    pub ips: Vec<String>,
    pub node: Option<String>,
    pub verdict: Verdict,
    pub endpoints: Placement,
    pub slices: SlicePlacement,
    /// `lastTransitionTime` of the Ready condition.
    pub ready_since: Option<Timestamp>,
    pub ports: Vec<PortResolution>,
    /// The hostname the endpoints carry (its `spec.subdomain` names the Service).
    pub hostname: Option<String>,
    /// Why, in words: the verdict's reason first, then what qualifies it.
    pub why: Vec<String>,
}

/// A pod's state as far as the Service is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    Ready,
    NotReady,
    Terminating,
    /// Phase Succeeded or Failed.
    Terminal,
    NoIp,
    NoIpOfFamily,
    NoPort,
    /// In the Endpoints, left out of the EndpointSlices.
    NodeMissing,
    /// Left out of an Endpoints object over capacity.
    Truncated,
}

/// Where the Endpoints list a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "in", rename_all = "camelCase")]
pub enum Placement {
    Addresses,
    NotReadyAddresses,
    /// Eligible, but cut from an Endpoints object over capacity.
    Truncated,
    Absent {
        why: Exclusion,
    },
}

/// How the EndpointSlices list a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "in", rename_all = "camelCase")]
pub enum SlicePlacement {
    Endpoint {
        ready: bool,
        serving: bool,
        terminating: bool,
    },
    Absent {
        why: Exclusion,
    },
}

/// A Service port on one pod: the port it reaches, `None` when a named `targetPort` does not resolve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortResolution {
    pub service_port: String,
    pub target_port: String,
    pub protocol: String,
    pub resolved: Option<i32>,
}

/// A pod that matches all but one requirement of the selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NearMiss {
    pub name: String,
    /// The requirement it fails, as a selector says it (`tier=web`).
    pub requirement: String,
    /// Its label of that key (`tier=frontend`), `None` when it has none.
    pub label: Option<String>,
}

/// Explains one selected pod; `desired` are the Endpoints computed from every selected pod (to tell a pod
/// cut by truncation).
pub fn explain_pod(
    svc: &ServiceRecord,
    pod: &PodRecord,
    nodes: &dyn Fn(&str) -> NodeLookup,
    desired: &DesiredEndpoints,
    now: Timestamp,
) -> PodExplanation {
    let endpoints = endpoints_placement(svc, pod, desired);
    let slices = slice_placement(svc, pod, nodes);
    let verdict = verdict(pod, endpoints, slices);
    let ports = port_resolutions(svc, pod);
    let mut why = vec![reason(svc, pod, verdict, now)];
    why.extend(qualifications(svc, pod, verdict, &ports));
    PodExplanation {
        name: pod.name.to_string(),
        ips: pod.ips.iter().map(ToString::to_string).collect(),
        node: pod.node_name.as_deref().map(str::to_owned),
        verdict,
        endpoints,
        slices,
        ready_since: pod.ready_transition,
        ports,
        hostname: pod.hostname(svc),
        why,
    }
}

fn endpoints_placement(svc: &ServiceRecord, pod: &PodRecord, desired: &DesiredEndpoints) -> Placement {
    match desired::endpoints_entry(svc, pod) {
        Err(why) => Placement::Absent { why },
        Ok(_) if desired.truncated && !listed(desired, pod) => Placement::Truncated,
        Ok(entry) if entry.ready => Placement::Addresses,
        Ok(_) => Placement::NotReadyAddresses,
    }
}

/// Whether the Endpoints list the pod (by its `targetRef`).
fn listed(desired: &DesiredEndpoints, pod: &PodRecord) -> bool {
    let subsets = desired.subsets.iter();
    let addresses = subsets.flat_map(|s| s.addresses.iter().chain(s.not_ready_addresses.iter()).flatten());
    addresses
        .filter_map(|a| a.target_ref.as_ref()?.name.as_deref())
        .any(|name| name == &*pod.name)
}

fn slice_placement(
    svc: &ServiceRecord,
    pod: &PodRecord,
    nodes: &dyn Fn(&str) -> NodeLookup,
) -> SlicePlacement {
    let families = desired::slice_families(svc);
    if let Err(why) = desired::slice_entry(svc, pod, nodes, &families) {
        return SlicePlacement::Absent { why };
    }
    let conditions = slice_conditions(pod, svc);
    SlicePlacement::Endpoint {
        ready: conditions.ready == Some(true),
        serving: conditions.serving == Some(true),
        terminating: conditions.terminating == Some(true),
    }
}

fn verdict(pod: &PodRecord, endpoints: Placement, slices: SlicePlacement) -> Verdict {
    let node_missing = slices
        == SlicePlacement::Absent {
            why: Exclusion::NodeMissing,
        };
    match endpoints {
        Placement::Absent { why } => match why {
            Exclusion::Terminal => Verdict::Terminal,
            Exclusion::NoIp => Verdict::NoIp,
            Exclusion::Terminating => Verdict::Terminating,
            Exclusion::NoIpOfFamily => Verdict::NoIpOfFamily,
            Exclusion::NoPort => Verdict::NoPort,
            Exclusion::NodeMissing => Verdict::NodeMissing,
        },
        Placement::Truncated => Verdict::Truncated,
        _ if pod.terminating => Verdict::Terminating,
        _ if node_missing => Verdict::NodeMissing,
        _ if pod.ready => Verdict::Ready,
        _ => Verdict::NotReady,
    }
}

fn port_resolutions(svc: &ServiceRecord, pod: &PodRecord) -> Vec<PortResolution> {
    let resolved = desired::resolved_ports(svc, pod);
    let port_of = |sp| {
        resolved
            .iter()
            .find(|(p, _)| std::ptr::eq(*p, sp))
            .map(|(_, n)| *n)
    };
    let resolution = |sp| PortResolution {
        service_port: service_port_name(sp),
        target_port: target_port(&sp.target_port),
        protocol: sp.protocol.as_str().to_owned(),
        resolved: port_of(sp),
    };
    svc.ports.iter().map(resolution).collect()
}

/// A `targetPort` as the Service spells it: a number or a container port name.
pub fn target_port(target: &TargetPort) -> String {
    match target {
        TargetPort::Number(n) => n.to_string(),
        TargetPort::Name(name) => name.to_string(),
    }
}

fn service_port_name(sp: &ServicePortRecord) -> String {
    match &*sp.name {
        "" => sp.port.to_string(),
        name => format!("{name} ({})", sp.port),
    }
}

/// The verdict's reason, in words.
fn reason(svc: &ServiceRecord, pod: &PodRecord, verdict: Verdict, now: Timestamp) -> String {
    let since = pod
        .ready_transition
        .map_or_else(String::new, |at| format!(" for {}", age(now, at)));
    let pnra = svc.publish_not_ready_addresses;
    match verdict {
        Verdict::Ready => format!("Ready=True{since}"),
        Verdict::NotReady if pnra => {
            format!("not Ready{since}, published as ready anyway: the Service sets publishNotReadyAddresses")
        }
        Verdict::NotReady => format!(
            "not Ready{since}: a readiness probe fails or a container is not ready (kubectl describe pod {}); \
             it gets no traffic, and it is not restarted for it",
            pod.name
        ),
        Verdict::Terminating if pnra => {
            "terminating, still published: the Service sets publishNotReadyAddresses".to_owned()
        }
        Verdict::Terminating => format!(
            "terminating (being deleted): the Endpoints drop it at once; the EndpointSlices keep it with \
             terminating=true, serving={} so proxies can drain its connections",
            pod.ready
        ),
        Verdict::Terminal => format!("phase {}: a finished pod never serves again", phase(pod.phase)),
        Verdict::NoIp => no_ip(pod),
        Verdict::NoIpOfFamily => "none of its IPs is of the Service's IP family".to_owned(),
        Verdict::NoPort => "no port of the Service resolves on it".to_owned(),
        Verdict::NodeMissing => format!(
            "Node {} does not exist: the EndpointSlices leave the pod out until it does (the Endpoints list it)",
            pod.node_name.as_deref().unwrap_or_default()
        ),
        Verdict::Truncated => format!(
            "left out of the Endpoints, which hold at most {} addresses; the EndpointSlices list it",
            desired::MAX_ENDPOINTS_ADDRESSES
        ),
    }
}

fn no_ip(pod: &PodRecord) -> String {
    match &pod.node_name {
        Some(node) => format!("no IP yet: the pod has not started on Node {node}"),
        None => "no IP yet: the pod is not scheduled to a Node (spec.nodeName is unset)".to_owned(),
    }
}

fn phase(phase: PodPhase) -> &'static str {
    match phase {
        PodPhase::Pending => "Pending",
        PodPhase::Running => "Running",
        PodPhase::Succeeded => "Succeeded",
        PodPhase::Failed => "Failed",
        PodPhase::Unknown => "Unknown",
    }
}

/// What else bears on the pod: ports that do not resolve, its hostname under a headless Service.
fn qualifications(
    svc: &ServiceRecord,
    pod: &PodRecord,
    verdict: Verdict,
    ports: &[PortResolution],
) -> Vec<String> {
    let mut notes: Vec<String> = ports
        .iter()
        .filter(|p| p.resolved.is_none())
        .map(|p| unresolved_port(pod, p))
        .collect();
    let published = !matches!(
        verdict,
        Verdict::Terminal | Verdict::NoIp | Verdict::NoIpOfFamily | Verdict::NoPort
    );
    if published {
        notes.extend(hostname_note(svc, pod));
    }
    notes
}

fn unresolved_port(pod: &PodRecord, port: &PortResolution) -> String {
    let named: Vec<String> = pod
        .ports
        .iter()
        .map(|p| format!("{}:{}/{}", p.name, p.port, p.protocol.as_str()))
        .collect();
    let has = match named.is_empty() {
        true => "it names no container port".to_owned(),
        false => format!("its named container ports: {}", named.join(", ")),
    };
    format!(
        "targetPort {} ({}) of Service port {} is not a container port of this pod; {has}",
        port.target_port, port.protocol, port.service_port
    )
}

/// Under a headless Service, whether the pod gets a DNS name of its own.
fn hostname_note(svc: &ServiceRecord, pod: &PodRecord) -> Option<String> {
    if let Some(hostname) = pod.hostname(svc) {
        let (name, ns) = (&svc.name, &svc.namespace);
        return Some(format!(
            "hostname {hostname}: DNS name {hostname}.{name}.{ns}.svc"
        ));
    }
    let names_this = pod.subdomain.as_deref() == Some(&*svc.name);
    match (&pod.hostname, names_this) {
        (None, true) => Some(
            "spec.subdomain names this Service but spec.hostname is unset: no DNS name of its own".to_owned(),
        ),
        (Some(hostname), false) if svc.is_headless() => Some(format!(
            "hostname {hostname} is not published: spec.subdomain is {}, not {}",
            pod.subdomain.as_deref().unwrap_or("unset"),
            svc.name
        )),
        _ => None,
    }
}

/// A duration as kubectl prints ages: `45s`, `3m12s`, `2h5m`, `3d4h`.
fn age(now: Timestamp, since: Timestamp) -> String {
    let secs = now.duration_since(since).as_secs().max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) if m == 0 => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        _ if h == 0 => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

/// Pods that fail exactly one requirement of `selector` and meet another. A one-requirement selector has
/// no other to meet: there, a near-miss is a pod whose value of the key looks like a typo of a wanted value
/// (the same but for case, or a few edits away), or every other pod would be one.
pub fn near_misses(selector: &Selector, pods: &[PodRecord]) -> Vec<NearMiss> {
    let requirements = selector.requirements();
    let near_miss = |pod: &PodRecord| {
        let mut failing = requirements.iter().filter(|r| !r.matches(&pod.labels));
        let (requirement, None) = (failing.next()?, failing.next()) else {
            return None;
        };
        let value = pod.labels.get(&requirement.key);
        if requirements.len() == 1 && !value.is_some_and(|v| looks_like_typo(requirement, v)) {
            return None;
        }
        Some(NearMiss {
            name: pod.name.to_string(),
            requirement: requirement.to_string(),
            label: value.map(|v| format!("{}={v}", requirement.key)),
        })
    };
    let mut misses: Vec<NearMiss> = pods.iter().filter_map(near_miss).collect();
    misses.sort_by(|a, b| a.name.cmp(&b.name));
    misses
}

/// Whether `value` is within a typo of a value `requirement` wants: at most one edit per four characters
/// (at least one), case ignored.
fn looks_like_typo(requirement: &Requirement, value: &str) -> bool {
    let wanted: &[Arc<str>] = match &requirement.operator {
        Operator::Equals(want) => std::slice::from_ref(want),
        Operator::In(set) => set,
        _ => &[],
    };
    let close = |want: &Arc<str>| {
        let (a, b) = (want.to_lowercase(), value.to_lowercase());
        edit_distance(&a, &b) <= (a.chars().count().max(b.chars().count()) / 4).max(1)
    };
    wanted.iter().any(close)
}

/// Levenshtein distance between two strings, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
#[path = "pods_tests.rs"]
mod tests;
