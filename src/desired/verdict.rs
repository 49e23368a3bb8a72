//! Whether a source is one of a Service's endpoints, how, and if not why: the one decision behind the
//! Endpoints ([`super::desired_endpoints`]), the EndpointSlices ([`super::desired_slices`]) and
//! `roster explain`, so that an explanation cannot drift from what is published.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::endpoints::endpoints_ip;
use super::source::EndpointSource;
use crate::cache::{IpFamily, NodeLookup, ServicePortRecord, ServiceRecord};

/// Why a source is left out of a Service's Endpoints or EndpointSlices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Exclusion {
    /// A pod in phase Succeeded or Failed: it never serves again.
    Terminal,
    /// No IP yet.
    NoIp,
    /// Being deleted: the Endpoints leave it out unless the Service publishes not-ready addresses; the
    /// EndpointSlices keep it, marked terminating.
    Terminating,
    /// None of its IPs is of a family the object carries.
    NoIpOfFamily,
    /// The Service has ports and none resolves on it (a named `targetPort` it does not declare for the
    /// port's protocol).
    NoPort,
    /// EndpointSlices only: its Node is unknown, and so is its zone; retried until the Node exists (a
    /// Service publishing not-ready addresses publishes it without a zone).
    NodeMissing,
}

/// A Service port that resolves on a source, and the port it reaches there.
pub type ResolvedPort<'s> = (&'s ServicePortRecord, i32);

/// The Service ports that resolve on a source, in the Service's order.
pub fn resolved_ports<'s, S>(svc: &'s ServiceRecord, source: &S) -> Vec<ResolvedPort<'s>>
where
    S: EndpointSource + ?Sized,
{
    let resolve = |sp: &'s ServicePortRecord| Some((sp, source.port(sp)?));
    svc.ports.iter().filter_map(resolve).collect()
}

/// A source as the Endpoints publish it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointsEntry<'s> {
    pub ip: IpAddr,
    /// Listed under `addresses`; else under `notReadyAddresses`.
    pub ready: bool,
    /// Empty only for a headless Service without ports.
    pub ports: Vec<ResolvedPort<'s>>,
}

/// How a source appears in the Endpoints of `svc`, or why it does not: it must be published at all
/// ([`EndpointSource::exclusion`], terminating sources only with `publishNotReadyAddresses`), have an IP of
/// the Service's primary family ([`endpoints_ip`]) and a port that resolves (a headless Service without
/// ports needs none). It is ready when the Service publishes not-ready addresses or the source is ready.
pub fn endpoints_entry<'s, S>(svc: &'s ServiceRecord, source: &S) -> Result<EndpointsEntry<'s>, Exclusion>
where
    S: EndpointSource + ?Sized,
{
    if let Some(why) = source.exclusion(svc.publish_not_ready_addresses) {
        return Err(why);
    }
    let ip = endpoints_ip(svc, source).ok_or(Exclusion::NoIpOfFamily)?;
    let ports = resolved_ports(svc, source);
    let portless_headless = svc.ports.is_empty() && svc.is_headless();
    if ports.is_empty() && !portless_headless {
        return Err(Exclusion::NoPort);
    }
    let ready = svc.publish_not_ready_addresses || source.ready();
    Ok(EndpointsEntry { ip, ready, ports })
}

/// A source as the EndpointSlices publish it: one endpoint per address type it has an IP of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEntry<'s> {
    /// Empty when the Service has no ports.
    pub ports: Vec<ResolvedPort<'s>>,
    pub zone: Option<Arc<str>>,
}

/// How a source appears in the EndpointSlices of `svc` (whose address types are `families`), or why it
/// does not: terminating sources stay (see [`super::readiness::slice_conditions`]); a source on which no
/// port resolves is left out (not published in a `ports: []` slice, as upstream does); a pod whose Node is
/// unknown is left out unless the Service publishes not-ready addresses.
pub fn slice_entry<'s, S>(
    svc: &'s ServiceRecord,
    source: &S,
    nodes: &dyn Fn(&str) -> NodeLookup,
    families: &[IpFamily],
) -> Result<SliceEntry<'s>, Exclusion>
where
    S: EndpointSource + ?Sized,
{
    if let Some(why) = source.exclusion(true) {
        return Err(why);
    }
    let ports = resolved_ports(svc, source);
    if ports.is_empty() && !svc.ports.is_empty() {
        return Err(Exclusion::NoPort);
    }
    let zone = match source.placement(nodes) {
        NodeLookup::Found { zone } => zone,
        NodeLookup::Missing if svc.publish_not_ready_addresses => None,
        NodeLookup::Missing => return Err(Exclusion::NodeMissing),
    };
    let has_family = |ip: &IpAddr| families.contains(&IpFamily::of(ip));
    if !source.ips().iter().any(has_family) {
        return Err(Exclusion::NoIpOfFamily);
    }
    Ok(SliceEntry { ports, zone })
}
