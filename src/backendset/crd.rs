//! The `BackendSet` custom resource (roster.dev/v1alpha1): backends outside the cluster for a selectorless
//! Service, static IPs or DNS names, health-checked by roster with Kubernetes-style readiness probes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "roster.dev",
    version = "v1alpha1",
    kind = "BackendSet",
    namespaced,
    status = "BackendSetStatus",
    shortname = "bks",
    category = "roster",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".status.serviceName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackendSetSpec {
    /// The selectorless Service in this namespace whose Endpoints these backends become
    /// (default: the BackendSet's own name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The backends: each an IP address or a DNS name.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// How roster checks each backend address; without a probe every resolved address is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// A literal IPv4 or IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// A DNS name, resolved and re-resolved; every A/AAAA record becomes an address of this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Published as the endpoints' `nodeName` (for topology-aware routing to backends that run on a Node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Published as the EndpointSlice endpoints' `zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Named ports (name → number) for the Service's named targetPorts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, i32>,
}

/// The shape of a container readinessProbe. `exec` is accepted by the schema only to be rejected with a
/// clear status message: roster cannot run commands on external machines.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub exec: Option<serde_json::Value>,
    #[serde(default = "default_period")]
    pub period_seconds: u32,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    #[serde(default = "default_one")]
    pub success_threshold: u32,
    #[serde(default = "default_failure")]
    pub failure_threshold: u32,
    #[serde(default)]
    pub initial_delay_seconds: u32,
}

fn default_period() -> u32 {
    10
}
fn default_timeout() -> u32 {
    1
}
fn default_one() -> u32 {
    1
}
fn default_failure() -> u32 {
    3
}

/// A port number or the name of one of the backend's `ports`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(untagged)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocketProbe {
    #[schemars(schema_with = "int_or_string")]
    pub port: PortRef,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetProbe {
    #[schemars(schema_with = "int_or_string")]
    pub port: PortRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP or HTTPS (certificates are not verified, as kubelet does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct GrpcProbe {
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendSetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Service these backends are published to (`spec.serviceName`, defaulted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Ready, Resolved and ServiceBound. Always serialized: status is written as a merge patch, which
    /// replaces lists whole and would keep a list that is left out.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub ready_count: u32,
    #[serde(default)]
    pub total_count: u32,
    /// "ready/total", for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Every address roster found, published or not (denied, invalid, unresolved), with why. Always
    /// serialized, as `conditions`.
    #[serde(default)]
    pub addresses: Vec<AddressStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressStatus {
    /// The IP address; for a backend that gave no address (an invalid IP, an unresolvable name) the text
    /// of its `ip` or `hostname`.
    pub address: String,
    /// The DNS name the address was resolved from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub ready: bool,
    /// When roster last probed the address, as of the last status write (a probe alone does not write
    /// status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    /// When `ready` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Why the address is not ready or not published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"x-kubernetes-int-or-string": true})
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}
