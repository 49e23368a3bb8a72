//! The data plane: what Endpoints are for. kube-proxy v1.20.2 (iptables mode, reading v1 Endpoints) turns the
//! Endpoints of roster, or of kube-controller-manager's endpoint controller as a cross-check of the harness,
//! into rules of a node network namespace; clients there open real TCP connections to ClusterIPs, and the
//! pods (network namespaces on the node's bridge, see `roster_envtest::dataplane`) say who answered.
//!
//! Needs root, iproute2, iptables, conntrack and kube-proxy, kube-apiserver, etcd and kube-controller-manager
//! in KUBEBUILDER_ASSETS (`scripts/envtest-assets --with-controller-manager --with-kube-proxy`); skipped with
//! the reason printed otherwise, failed instead when `CI` is set.
//!
//! ```sh
//! KUBEBUILDER_ASSETS=$(scripts/envtest-assets --with-controller-manager --with-kube-proxy) \
//!     cargo test -j2 --test dataplane
//! ```

#[path = "support/backends.rs"]
mod backends;
#[path = "dataplane/cases.rs"]
mod cases;
#[path = "support/kcm.rs"]
mod kcm;
#[path = "dataplane/plane.rs"]
mod plane;
mod support;
#[path = "dataplane/world.rs"]
mod world;

/// A test `$test` running `cases::$case` on the plane of `Controller::$controller`.
macro_rules! case_test {
    ($case:ident, $test:ident, $controller:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            use crate::plane::{Controller, Plane};
            if let Some(plane) = Plane::of(Controller::$controller).await {
                crate::cases::$case(plane).await
            }
        }
    };
}

/// Declares `<case>::roster` and `<case>::upstream`.
macro_rules! with_both_controllers {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            case_test!($case, roster, Roster);
            case_test!($case, upstream, Upstream);
        }
    )*};
}

/// Declares `<case>::roster` alone: BackendSets are roster's own, kube-controller-manager has no peer.
macro_rules! with_roster {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            case_test!($case, roster, Roster);
        }
    )*};
}

with_both_controllers!(
    cluster_ip_reaches_exactly_the_ready_pods,
    named_target_port_reaches_each_pods_own_port,
    multi_port_service_maps_each_port,
    client_ip_affinity_keeps_a_client_on_one_pod,
    a_pod_that_is_not_ready_gets_no_new_connections,
    rolling_update_fails_no_request,
    selectorless_service_reaches_hand_made_endpoints,
    external_name_gets_no_rules,
);

with_roster!(
    backendset_backend_is_reachable_through_the_cluster_ip,
    backendset_backend_failing_its_probe_gets_no_traffic,
);
