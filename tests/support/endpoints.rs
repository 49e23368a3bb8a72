//! What tests wait for and assert on Endpoints and EndpointSlices: the ready and not-ready addresses, their
//! removal, and truncation over capacity.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use roster_envtest::TestEnv;

use super::{endpoint_ips, endpoints, eventually, eventually_some, slices};

/// The most addresses an Endpoints object holds; beyond that it is truncated.
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;

/// The annotation a truncated Endpoints carries, and its value.
const OVER_CAPACITY: (&str, &str) = ("endpoints.kubernetes.io/over-capacity", "truncated");

/// (ready, not-ready) IPs of an Endpoints object, each sorted.
pub type EndpointIps = (Vec<String>, Vec<String>);

/// Waits until the Endpoints `name` exist and their addresses satisfy `holds`; returns them.
pub async fn wait_endpoints_where(
    env: &TestEnv,
    ns: &str,
    name: &str,
    what: &str,
    holds: impl Fn(&EndpointIps) -> bool,
) -> Endpoints {
    eventually_some(&format!("Endpoints {ns}/{name}: {what}"), || async {
        endpoints(env, ns, name)
            .await
            .filter(|ep| holds(&endpoint_ips(ep)))
    })
    .await
}

/// Waits until the Endpoints `name` hold exactly these ready and not-ready IPs (sorted); returns them.
pub async fn wait_endpoint_ips<S: AsRef<str>>(
    env: &TestEnv,
    ns: &str,
    name: &str,
    ready: &[S],
    not_ready: &[S],
) -> Endpoints {
    let want = (texts(ready), texts(not_ready));
    let what = format!("ready {:?}, not ready {:?}", want.0, want.1);
    wait_endpoints_where(env, ns, name, &what, |ips| *ips == want).await
}

/// Waits until the ready IPs of the Endpoints `name` are exactly `ready` (sorted), whatever the not-ready ones.
pub async fn wait_ready_ips<S: AsRef<str>>(env: &TestEnv, ns: &str, name: &str, ready: &[S]) -> Endpoints {
    let want = texts(ready);
    let what = format!("ready {want:?}");
    wait_endpoints_where(env, ns, name, &what, |ips| ips.0 == want).await
}

/// Waits until the Endpoints `name` are gone (`why` says what removes them).
pub async fn wait_endpoints_gone(env: &TestEnv, ns: &str, name: &str, why: &str) {
    eventually(&format!("Endpoints {ns}/{name} gone: {why}"), || async {
        endpoints(env, ns, name).await.is_none()
    })
    .await;
}

/// Waits until the Endpoints of Service `name` are gone, and its EndpointSlices where the server serves
/// them (`why` says what removes them).
pub async fn wait_unpublished(env: &TestEnv, ns: &str, name: &str, why: &str) {
    wait_endpoints_gone(env, ns, name, why).await;
    if env.serves_endpointslices_v1() {
        eventually(&format!("slices of {ns}/{name} gone: {why}"), || async {
            slices(env, ns, name).await.is_empty()
        })
        .await;
    }
}

/// Waits for an EndpointSlice of Service `name` that holds an endpoint, and returns it.
pub async fn wait_filled_slice(env: &TestEnv, ns: &str, name: &str) -> EndpointSlice {
    eventually_some(&format!("a slice of {ns}/{name} with endpoints"), || async {
        let all = slices(env, ns, name).await;
        all.into_iter().find(|s| !s.endpoints.is_empty())
    })
    .await
}

fn texts<S: AsRef<str>>(ips: &[S]) -> Vec<String> {
    ips.iter().map(|ip| ip.as_ref().to_owned()).collect()
}

/// Waits until the Endpoints `name` are full (their addresses at capacity) and asserts that they are
/// truncated as they should be from the selected pods' `ready` and `not_ready` IPs ([`assert_truncated`]).
pub async fn wait_truncated(
    env: &TestEnv,
    ns: &str,
    name: &str,
    ready: &[String],
    not_ready: &[String],
) -> Endpoints {
    let full = |ips: &EndpointIps| ips.0.len() + ips.1.len() == MAX_ENDPOINTS_ADDRESSES;
    let ep = wait_endpoints_where(env, ns, name, "truncated", full).await;
    assert_truncated(&ep, ready, not_ready);
    ep
}

/// An Endpoints over capacity, of pods with these `ready` and `not_ready` IPs, carries the over-capacity
/// annotation and keeps exactly the capacity: every ready address first (up to the capacity), then
/// not-ready ones; each address kept under its own readiness.
pub fn assert_truncated(ep: &Endpoints, ready: &[String], not_ready: &[String]) {
    let annotations = ep.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get(OVER_CAPACITY.0).map(String::as_str),
        Some(OVER_CAPACITY.1),
        "the over-capacity annotation"
    );
    let (kept_ready, kept_not_ready) = endpoint_ips(ep);
    assert_eq!(
        kept_ready.len() + kept_not_ready.len(),
        MAX_ENDPOINTS_ADDRESSES,
        "a truncated Endpoints keeps exactly the capacity"
    );
    assert_eq!(
        kept_ready.len(),
        ready.len().min(MAX_ENDPOINTS_ADDRESSES),
        "every ready address kept, not-ready ones fill the rest"
    );
    let (ready, not_ready): (BTreeSet<&String>, BTreeSet<&String>) =
        (ready.iter().collect(), not_ready.iter().collect());
    assert!(
        kept_ready.iter().all(|ip| ready.contains(ip)),
        "kept as ready: an address not of a ready pod"
    );
    assert!(
        kept_not_ready.iter().all(|ip| not_ready.contains(ip)),
        "kept as not ready: an address not of a not-ready pod"
    );
}
