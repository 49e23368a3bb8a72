//! What tests wait for and assert on Endpoints: the ready and not-ready addresses, and truncation over
//! capacity.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Endpoints;
use roster_envtest::TestEnv;

use super::{endpoint_ips, endpoints, eventually_some};

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
