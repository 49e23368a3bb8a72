//! What the desired layer publishes: endpoint sources. A Service's endpoints come from its pods (selected by
//! its selector) or from the backends of the BackendSet bound to it; both are the same kind of thing here, so
//! one Endpoints builder and one slice packer serve both.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::ObjectReference;

use super::ports::find_port;
use super::readiness::{endpoint_hostname, pod_exclusion};
use super::verdict::Exclusion;
use crate::cache::{NodeLookup, PodRecord, ServicePortRecord, ServiceRecord};

/// Something that may be an endpoint of a Service.
pub trait EndpointSource {
    /// Its IPs, primary first.
    fn ips(&self) -> &[IpAddr];
    /// Why it is not published at all, given whether terminating endpoints are (`None`: it is): a pod must
    /// not be terminal, must have an IP, and is left out while terminating unless `include_terminating`.
    fn exclusion(&self, include_terminating: bool) -> Option<Exclusion>;
    /// Ready by its own account: a pod's Ready condition, a backend's probe.
    fn ready(&self) -> bool;
    fn terminating(&self) -> bool;
    /// The endpoint hostname it has under `svc`.
    fn hostname(&self, svc: &ServiceRecord) -> Option<String>;
    fn node_name(&self) -> Option<&str>;
    /// Where it runs: a pod's zone comes from its Node (which may not be cached yet), a backend names its own.
    fn placement(&self, nodes: &dyn Fn(&str) -> NodeLookup) -> NodeLookup;
    /// The port a Service port reaches on it; `None` when a named `targetPort` does not resolve.
    fn port(&self, service_port: &ServicePortRecord) -> Option<i32>;
    /// The object behind it, for `targetRef`.
    fn target_ref(&self) -> Option<ObjectReference>;
}

impl EndpointSource for PodRecord {
    fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    fn exclusion(&self, include_terminating: bool) -> Option<Exclusion> {
        pod_exclusion(self, include_terminating)
    }

    fn ready(&self) -> bool {
        self.ready
    }

    fn terminating(&self) -> bool {
        self.terminating
    }

    fn hostname(&self, svc: &ServiceRecord) -> Option<String> {
        endpoint_hostname(self, svc)
    }

    fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }

    fn placement(&self, nodes: &dyn Fn(&str) -> NodeLookup) -> NodeLookup {
        self.node_name.as_deref().map_or(NodeLookup::Missing, nodes)
    }

    fn port(&self, service_port: &ServicePortRecord) -> Option<i32> {
        find_port(self, service_port)
    }

    fn target_ref(&self) -> Option<ObjectReference> {
        Some(pod_reference(self))
    }
}

/// `{kind: Pod, namespace, name, uid}` without resourceVersion, so pod status churn never shows in the object.
pub fn pod_reference(pod: &PodRecord) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".to_owned()),
        namespace: Some(pod.namespace.to_string()),
        name: Some(pod.name.to_string()),
        uid: Some(pod.uid.to_string()),
        ..ObjectReference::default()
    }
}
