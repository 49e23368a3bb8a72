//! The `BackendSet` custom resource (roster.dev/v1alpha1): backends outside the cluster for a selectorless
//! Service, static IPs or DNS names, health-checked by roster with Kubernetes-style readiness probes.
//!
//! The schema rejects at admission what it can express: exactly one of `ip` and `hostname` (`oneOf`), port
//! numbers outside 1-65535, a scheme other than HTTP or HTTPS, probe periods and thresholds below 1, and
//! `exec` probes (`not`). The cross-field checks are also `x-kubernetes-validations` (CEL) rules, for their
//! clearer messages on servers that run them (1.25 and later; older servers drop them). The runtime checks
//! in [`super::spec`] stay: objects stored before this schema, and servers that skip a rule, still reach
//! roster, which reports them in status.
//!
//! The optional spec fields that `oneOf` names or that carry an `enum` or `pattern` are not `nullable`: the
//! API server drops a null there (as for any non-nullable field) rather than checking it against `oneOf` or
//! `enum`, which a null would fail. The others keep kube's `nullable`, because kube-apiserver 1.20 checks an
//! empty string inside a list item as null: a non-nullable `zone: ""` would be refused there.

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
    doc = "BackendSet publishes backends outside the cluster (IP addresses or DNS names) as the Endpoints and \
           EndpointSlices of a selectorless Service in its namespace, checked by a Kubernetes-style readiness \
           probe. Whoever may create BackendSets may point a Service at any address roster may reach; grant it \
           as you would grant writing Endpoints.",
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
    #[schemars(length(max = 63), regex(pattern = r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$"))]
    #[schemars(with = "String")]
    pub service_name: Option<String>,
    /// The backends: each an IP address or a DNS name.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// How roster checks each backend address; without a probe every resolved address is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Probe")]
    pub readiness_probe: Option<Probe>,
}

/// One backend: exactly one of `ip` and `hostname`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend(
    "oneOf" = [{"required": ["ip"]}, {"required": ["hostname"]}],
    "x-kubernetes-validations" = [
        {"rule": "has(self.ip) != has(self.hostname)", "message": "set exactly one of ip and hostname"}
    ]
))]
pub struct Backend {
    /// A literal IPv4 or IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 45))]
    #[schemars(with = "String")]
    pub ip: Option<String>,
    /// A DNS name, resolved and re-resolved; every A/AAAA record becomes an address of this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 254))]
    #[schemars(with = "String")]
    pub hostname: Option<String>,
    /// Published as the endpoints' `nodeName` (for topology-aware routing to backends that run on a Node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub node_name: Option<String>,
    /// Published as the EndpointSlice endpoints' `zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Named ports (name → number, 1-65535) for the Service's named targetPorts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "named_ports")]
    pub ports: BTreeMap<String, i32>,
}

/// The shape of a container readinessProbe: exactly one of tcpSocket, httpGet and grpc, with the numbers
/// Kubernetes allows in a probe (periods, timeout and thresholds at least 1).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend(
    "oneOf" = [{"required": ["tcpSocket"]}, {"required": ["httpGet"]}, {"required": ["grpc"]}],
    "not" = {"required": ["exec"]},
    "x-kubernetes-validations" = [
        {
            "rule": "(has(self.tcpSocket) ? 1 : 0) + (has(self.httpGet) ? 1 : 0) + (has(self.grpc) ? 1 : 0) == 1",
            "message": "set exactly one of tcpSocket, httpGet and grpc"
        },
        {"rule": "!has(self.exec)", "message": super::spec::EXEC_NOT_SUPPORTED}
    ]
))]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "TcpSocketProbe")]
    pub tcp_socket: Option<TcpSocketProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "HttpGetProbe")]
    pub http_get: Option<HttpGetProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "GrpcProbe")]
    pub grpc: Option<GrpcProbe>,
    /// Not supported: roster cannot run commands on external backends. The field is in the schema so that
    /// a probe copied from a container is refused for this reason rather than pruned to no handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "refused_exec")]
    pub exec: Option<serde_json::Value>,
    /// How often to probe each address, in seconds.
    #[serde(default = "default_period")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub period_seconds: u32,
    /// How long one probe may take, in seconds.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub timeout_seconds: u32,
    /// Consecutive successes that make an address ready.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub success_threshold: u32,
    /// Consecutive failures that make an address not ready.
    #[serde(default = "default_failure")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub failure_threshold: u32,
    /// Seconds from an address's discovery to its first probe.
    #[serde(default)]
    #[schemars(range(max = 2147483647))]
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
    /// A port number (1-65535) or the name of one of the backend's `ports`.
    #[schemars(schema_with = "port_number_or_name")]
    pub port: PortRef,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetProbe {
    /// A port number (1-65535) or the name of one of the backend's `ports`.
    #[schemars(schema_with = "port_number_or_name")]
    pub port: PortRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP (the default) or HTTPS (certificates are not verified, as kubelet does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["HTTP", "HTTPS"]))]
    #[schemars(with = "String")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct HttpHeader {
    #[schemars(length(min = 1))]
    pub name: String,
    pub value: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct GrpcProbe {
    #[schemars(range(min = 1, max = 65535))]
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
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
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

/// An IANA service name, as Kubernetes checks container port names: 1-15 of `a-z0-9-`, at least one letter,
/// no hyphen at either end or twice in a row (what [`super::spec::is_port_name`] checks at runtime).
const PORT_NAME_PATTERN: &str = r"^([0-9]+-?)*[a-z]([a-z0-9]|-[a-z0-9])*$";

/// Kubernetes' int-or-string port: the bounds apply to numbers, the length and pattern to names.
fn port_number_or_name(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "minimum": 1,
        "maximum": 65535,
        "maxLength": 15,
        "pattern": PORT_NAME_PATTERN,
    })
}

/// A map of port name to number. The names are checked at runtime only: a structural schema cannot
/// constrain map keys, and a CEL rule over them has no cost bound the API server would accept.
fn named_ports(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
    })
}

/// An object with no fields: whatever `exec` holds is pruned, and its presence is refused by the probe's
/// `not` and CEL rule.
fn refused_exec(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object"})
}
