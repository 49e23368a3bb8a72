//! The explanation of one Service, computed without I/O from what [`super::read`] read: what the Service is,
//! where its endpoints come from, every selected pod's verdict and its near-misses, what is live and who
//! manages it, and how that differs from what roster computes.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Service;
use serde::Serialize;

use super::drift::{self, Drift, Live};
use super::hints;
use super::pods::{self, NearMiss, PodExplanation};
use super::read::Objects;
use crate::backendset::binding::{Binding, ServiceFacts, SetFacts, bind};
use crate::backendset::{BackendSet, BackendSetStatus};
use crate::cache::{
    Interner, NodeLookup, NodeProjection, PodRecord, SelectorSource, ServiceRecord, ServiceType,
};
use crate::desired::{self, DesiredEndpoints, EndpointsInput};

/// Everything `roster explain` says about a Service.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub service: ServiceSummary,
    pub source: Source,
    /// The pods the Service selects, by name.
    pub pods: Vec<PodExplanation>,
    /// Pods that match all but one requirement of the selector.
    pub near_misses: Vec<NearMiss>,
    pub live: Live,
    pub drift: Drift,
    /// Ready endpoints of the live Endpoints or EndpointSlices, whichever has more.
    pub ready_endpoints: usize,
    /// Facts that limit or qualify the explanation.
    pub notes: Vec<String>,
    /// The rest of the troubleshooting checklist, where it applies.
    pub hints: Vec<String>,
    pub outcome: Outcome,
    pub exit_code: u8,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSummary {
    pub namespace: String,
    pub name: String,
    /// ClusterIP, NodePort, LoadBalancer or ExternalName.
    #[serde(rename = "type")]
    pub type_: String,
    pub headless: bool,
    pub cluster_ip: Option<String>,
    pub ports: Vec<PortSummary>,
    pub publish_not_ready_addresses: bool,
}

/// A Service port: `port` on the Service, `targetPort` (a number or a container port name) on the pods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSummary {
    pub name: String,
    pub port: i32,
    pub target_port: String,
    pub protocol: String,
}

/// Where a Service's endpoints come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Source {
    /// The pods matching a selector: `spec.selector`, or the `roster.dev/selector` annotation of a
    /// selectorless Service.
    #[serde(rename_all = "camelCase")]
    Selector { selector: String, from_annotation: bool },
    /// A `roster.dev/selector` annotation that does not parse: roster leaves the Service's objects alone.
    InvalidSelector { message: String },
    /// Selectorless, with Endpoints or EndpointSlices someone wrote.
    HandMade,
    /// Selectorless, fed by a BackendSet.
    #[serde(rename_all = "camelCase")]
    BackendSet {
        name: String,
        status: Option<BackendSetStatus>,
    },
    /// Selectorless, and nothing to publish.
    Nothing,
    /// `type: ExternalName`: a DNS CNAME, without endpoints by design.
    #[serde(rename_all = "camelCase")]
    ExternalName { external_name: String },
}

/// How `roster explain` ends, as a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Ready endpoints, and the live objects hold what roster computes.
    Healthy,
    /// No ready endpoint is live (an ExternalName Service has none by design).
    NoReadyEndpoints,
    /// Ready endpoints, but the live objects differ from what roster computes.
    Drift,
}

impl Outcome {
    /// 0, 3 and 4; 1 is left for errors (no such Service, the API server unreachable) and 2 for usage.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Healthy => 0,
            Outcome::NoReadyEndpoints => 3,
            Outcome::Drift => 4,
        }
    }
}

/// Explains the Service of `objects` as of `now`.
pub fn explain(objects: &Objects, now: Timestamp) -> Report {
    let mut interner = Interner::new();
    let svc = service_record(&objects.service, &mut interner);
    let records: Vec<PodRecord> = objects
        .pods
        .iter()
        .map(|pod| PodRecord::from_projection(pod, &mut interner))
        .collect();
    let bindings = backendset_bindings(&svc, objects);
    let source = source(&svc, objects, &bindings);
    let selector = matches!(source, Source::Selector { .. })
        .then(|| svc.active_selector())
        .flatten();
    let mut selected: Vec<&PodRecord> = records
        .iter()
        .filter(|pod| selector.is_some_and(|s| s.matches(&pod.labels)))
        .collect();
    selected.sort_by(|a, b| a.name.cmp(&b.name));
    let nodes = Nodes::of(objects);
    let lookup = |name: &str| nodes.lookup(name);
    let desired = desired::desired_endpoints(&svc, &selected, EndpointsInput::default());
    let pods = selected
        .iter()
        .map(|pod| pods::explain_pod(&svc, pod, &lookup, &desired, now))
        .collect();
    let near_misses = selector.map_or_else(Vec::new, |s| pods::near_misses(s, &records));
    let live = drift::live(&svc, objects);
    let drift = match &source {
        Source::Selector { .. } => drift::selected(&svc, &selected, &lookup, &desired, objects),
        Source::HandMade => drift::mirrored(&svc, objects),
        _ => Drift::not_compared(&source),
    };
    let ready_endpoints = live.ready_endpoints();
    let outcome = match (ready_endpoints, drift.unexplained()) {
        (0, _) => Outcome::NoReadyEndpoints,
        (_, 0) => Outcome::Healthy,
        _ => Outcome::Drift,
    };
    let mut report = Report {
        service: service_summary(&svc, &objects.service),
        source,
        pods,
        near_misses,
        live,
        drift,
        ready_endpoints,
        notes: notes(objects, &desired, &svc, &bindings),
        hints: Vec::new(),
        outcome,
        exit_code: outcome.exit_code(),
    };
    report.hints = hints::hints(&report);
    report
}

/// The Service as roster reads it: its `spec.selector`, or for a selectorless Service the
/// `roster.dev/selector` annotation.
fn service_record(service: &Service, interner: &mut Interner) -> ServiceRecord {
    let record = ServiceRecord::from_service(service, SelectorSource::Spec, interner);
    if record.has_spec_selector {
        return record;
    }
    ServiceRecord::from_service(service, SelectorSource::Annotation, interner)
}

fn source(svc: &ServiceRecord, objects: &Objects, bindings: &[(&BackendSet, Binding)]) -> Source {
    if svc.is_external_name() {
        let spec = objects.service.spec.as_ref();
        let external_name = spec.and_then(|s| s.external_name.clone());
        return Source::ExternalName {
            external_name: external_name.unwrap_or_default(),
        };
    }
    if let Some((bs, _)) = bindings.iter().find(|(_, b)| *b == Binding::Bound) {
        return Source::BackendSet {
            name: bs.metadata.name.clone().unwrap_or_default(),
            status: bs.status.clone(),
        };
    }
    match &svc.selector {
        Err(err) => Source::InvalidSelector {
            message: err.to_string(),
        },
        Ok(Some(selector)) => Source::Selector {
            selector: selector.to_string(),
            from_annotation: !svc.has_spec_selector,
        },
        Ok(None) if objects.endpoints.is_some() || !objects.slices.is_empty() => Source::HandMade,
        Ok(None) => Source::Nothing,
    }
}

/// The BackendSets naming the Service, each with its binding, by the rules roster binds them with.
fn backendset_bindings<'a>(svc: &ServiceRecord, objects: &'a Objects) -> Vec<(&'a BackendSet, Binding)> {
    let sets = objects.backendsets.as_deref().unwrap_or_default();
    let naming: Vec<(&BackendSet, SetFacts)> = sets
        .iter()
        .map(|bs| (bs, SetFacts::of(bs)))
        .filter(|(_, facts)| facts.service == *svc.name)
        .collect();
    let claimants: Vec<SetFacts> = naming.iter().map(|(_, facts)| facts.clone()).collect();
    let service = ServiceFacts::of(svc);
    let mut bindings = bind(&claimants, &|_| Some(service.clone()));
    let with_binding = |(bs, facts): (&'a BackendSet, SetFacts)| Some((bs, bindings.remove(&facts.key())?));
    naming.into_iter().filter_map(with_binding).collect()
}

/// The Nodes as the EndpointSlices need them (name → zone); when they could not be listed, every Node
/// counts as found, without a zone.
struct Nodes(Option<HashMap<String, Option<Arc<str>>>>);

impl Nodes {
    fn of(objects: &Objects) -> Nodes {
        let zones = objects.nodes.as_ref().ok().map(|nodes| {
            let zone = |n: &NodeProjection| n.zone().map(Arc::from);
            let name = |n: &NodeProjection| n.metadata.name.clone().unwrap_or_default();
            nodes.iter().map(|n| (name(n), zone(n))).collect()
        });
        Nodes(zones)
    }

    fn lookup(&self, name: &str) -> NodeLookup {
        match &self.0 {
            None => NodeLookup::Found { zone: None },
            Some(zones) => zones
                .get(name)
                .map_or(NodeLookup::Missing, |zone| NodeLookup::Found {
                    zone: zone.clone(),
                }),
        }
    }
}

fn service_summary(svc: &ServiceRecord, service: &Service) -> ServiceSummary {
    let type_ = match svc.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
        ServiceType::ExternalName => "ExternalName",
    };
    let ports = svc.ports.iter().map(|p| PortSummary {
        name: p.name.to_string(),
        port: p.port,
        target_port: pods::target_port(&p.target_port),
        protocol: p.protocol.as_str().to_owned(),
    });
    let spec_ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    ServiceSummary {
        namespace: svc.namespace.to_string(),
        name: svc.name.to_string(),
        type_: type_.to_owned(),
        headless: svc.is_headless() && !svc.is_external_name(),
        cluster_ip: svc
            .cluster_ip
            .map(|ip| ip.to_string())
            .or(spec_ip.map(str::to_owned)),
        ports: ports.collect(),
        publish_not_ready_addresses: svc.publish_not_ready_addresses,
    }
}

fn notes(
    objects: &Objects,
    desired: &DesiredEndpoints,
    svc: &ServiceRecord,
    bindings: &[(&BackendSet, Binding)],
) -> Vec<String> {
    let mut notes = Vec::new();
    if let Err(why) = &objects.nodes {
        notes.push(format!("{why}: Node checks and EndpointSlice drift are skipped"));
    }
    if let Err(why) = &objects.backendsets {
        notes.push(why.clone());
    }
    if desired.truncated {
        notes.push(format!(
            "over capacity: the Endpoints hold {} addresses at most (endpoints.kubernetes.io/over-capacity: \
             truncated); the EndpointSlices hold them all",
            desired::MAX_ENDPOINTS_ADDRESSES
        ));
    }
    if svc.deleting {
        notes.push("the Service is being deleted".to_owned());
    }
    notes.extend(unbound_backendsets(svc, bindings));
    notes
}

/// BackendSets that name the Service but do not publish to it, with why.
fn unbound_backendsets(svc: &ServiceRecord, bindings: &[(&BackendSet, Binding)]) -> Vec<String> {
    let unbound = bindings.iter().filter(|(_, binding)| *binding != Binding::Bound);
    unbound
        .map(|(bs, binding)| {
            let name = bs.metadata.name.as_deref().unwrap_or_default();
            let why = binding.message(&svc.name);
            format!("BackendSet {name} names this Service but does not publish to it: {why}")
        })
        .collect()
}
