//! Label and annotation keys roster reads and writes, and the values it writes.

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Set on every EndpointSlice to the name of its Service (or mirrored Endpoints).
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Names the controller that manages an EndpointSlice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// `managed-by` value of the EndpointSlices roster computes from pods.
pub const SLICE_CONTROLLER_NAME: &str = "endpointslice-controller.roster.dev";
/// `managed-by` value of the EndpointSlices roster mirrors from selectorless Endpoints.
pub const MIRRORING_CONTROLLER_NAME: &str = "endpointslicemirroring-controller.roster.dev";
/// `managed-by` value of the EndpointSlices kube-controller-manager's EndpointSlice controller writes.
pub const UPSTREAM_SLICE_CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// `managed-by` value of the EndpointSlices kube-controller-manager's mirroring controller writes.
pub const UPSTREAM_MIRRORING_CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// Every managed-by value roster watches: its own, and upstream's (which it takes over from and hands back to).
pub const WATCHED_SLICE_MANAGERS: [&str; 4] = [
    SLICE_CONTROLLER_NAME,
    MIRRORING_CONTROLLER_NAME,
    UPSTREAM_SLICE_CONTROLLER_NAME,
    UPSTREAM_MIRRORING_CONTROLLER_NAME,
];
/// Present (empty value) on Endpoints and EndpointSlices of headless Services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// `"true"` on Endpoints that the mirroring controllers must not mirror.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Marks the Endpoints objects roster wrote, so it only ever cleans up its own.
pub const LABEL_ENDPOINTS_MANAGED_BY: &str = "endpoints.roster.dev/managed-by";
/// Value of [`LABEL_ENDPOINTS_MANAGED_BY`].
pub const ENDPOINTS_MANAGER: &str = "roster";
/// The Node label that gives an endpoint its zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Nodes labelled with either key (any value) run the control plane: their CPU never counts for hints.
pub const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// Time of the Pod or Service change that caused the write (RFC 3339, UTC, nanoseconds trimmed).
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Set to [`OVER_CAPACITY_TRUNCATED`] when an Endpoints object was cut down to [`MAX_ENDPOINTS_ADDRESSES`].
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
pub const OVER_CAPACITY_TRUNCATED: &str = "truncated";
/// Endpoints used as leader-election locks carry this annotation; they are never mirrored.
pub const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";
/// Not copied onto mirrored EndpointSlices.
pub const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Annotations under this prefix are kept in [`crate::cache::ServiceRecord::annotations`].
pub const ANNOTATION_PREFIX_ROSTER: &str = "roster.dev/";
/// In `--services=annotated` mode: the label selector (string syntax) of a selectorless Service.
pub const ANNOTATION_SELECTOR: &str = "roster.dev/selector";
/// roster's own extension: how long a flapping pod must stay Ready before it rejoins (a duration).
pub const ANNOTATION_READY_HOLD_DOWN: &str = "roster.dev/ready-hold-down";
/// `Auto` (or `auto`) asks for topology hints by allocatable CPU per zone.
pub const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
/// The deprecated name of [`ANNOTATION_TOPOLOGY_MODE`]; when present, it is the one that counts.
pub const ANNOTATION_TOPOLOGY_AWARE_HINTS: &str = "service.kubernetes.io/topology-aware-hints";

/// Most addresses (ready and not ready) one Endpoints object carries.
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;
/// Most addresses of one Endpoints subset that are mirrored into EndpointSlices.
pub const MAX_MIRRORED_PER_SUBSET: usize = 1000;
/// Default and upper bound of `--max-endpoints-per-slice`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;
pub const MAX_ENDPOINTS_PER_SLICE_LIMIT: usize = 1000;

/// Labels of EndpointSlices that only the controller sets; Service labels with these keys are not copied.
pub const RESERVED_SLICE_LABELS: [&str; 3] = [LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS];

/// Whether roster wrote this Endpoints object (and may therefore delete it).
pub fn is_roster_endpoints(endpoints: &Endpoints) -> bool {
    label(&endpoints.metadata, LABEL_ENDPOINTS_MANAGED_BY) == Some(ENDPOINTS_MANAGER)
}

/// Whether kube-controller-manager's EndpointSlice or mirroring controller manages this slice.
pub fn is_upstream_slice(slice: &EndpointSlice) -> bool {
    slice_manager(slice).is_some_and(|m| UPSTREAM_MANAGERS.contains(&m))
}

/// The `managed-by` values of kube-controller-manager's slice controllers.
pub const UPSTREAM_MANAGERS: [&str; 2] = [UPSTREAM_SLICE_CONTROLLER_NAME, UPSTREAM_MIRRORING_CONTROLLER_NAME];

/// The `managed-by` label of an EndpointSlice.
pub fn slice_manager(slice: &EndpointSlice) -> Option<&str> {
    label(&slice.metadata, LABEL_MANAGED_BY)
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}
