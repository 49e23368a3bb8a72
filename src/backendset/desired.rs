//! The Endpoints and EndpointSlices of a Service whose backends come from a BackendSet. Pure: built from the
//! Service record and the BackendSet's [`BackendView`].
//!
//! Both carry every publishable address of the view: ready ones (by the probes) as ready, the others as not
//! ready. Ports come from the Service: a numeric `targetPort` as is, a named one through the backend's
//! `ports` (a backend on which no port resolves is left out, as a pod would be). No `hostname` is set (it
//! must be a DNS label, which a backend's DNS name is not) and no `targetRef` (there is no pod).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use super::crd::BackendSet;
use super::view::{AddressState, BackendView};
use crate::cache::{IpFamily, SelectorSource, ServicePortRecord, ServiceRecord, TargetPort, ip_sort_key};
use crate::desired::{
    self, ANNOTATION_OVER_CAPACITY, DesiredEndpoints, MAX_ENDPOINTS_ADDRESSES, MAX_ENDPOINTS_PER_SLICE_LIMIT,
    OVER_CAPACITY_TRUNCATED, SlicePlan, SliceStats,
};

/// The controller owner reference to the BackendSet, set on everything published from it so that deleting
/// it removes them (garbage collection) and `kubectl` shows where they come from.
pub fn backend_owner_reference(view: &BackendView) -> OwnerReference {
    OwnerReference {
        api_version: BackendSet::api_version(&()).into_owned(),
        kind: BackendSet::kind(&()).into_owned(),
        name: view.backendset.name.clone(),
        uid: view.backendset.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The address families a Service's backends are published in: all for a headless Service, else its
/// families (`ipFamilies`, else the cluster IP's), as the proxies of a family only read that family.
fn published_families(svc: &ServiceRecord) -> Vec<IpFamily> {
    if svc.is_headless() {
        return vec![IpFamily::V4, IpFamily::V6];
    }
    desired::slice_families(svc)
}

/// The Endpoints of a Service published from a BackendSet. Labels: the Service's, roster's ownership
/// label, and skip-mirror (roster writes the EndpointSlices itself). Endpoints carry the Service's primary
/// family only (all families when headless). `publishNotReadyAddresses` publishes every address as ready.
///
/// The result is canonical, so [`desired::endpoints_need_write`] compares it with the current object; the
/// caller adds [`backend_owner_reference`] to the object it writes.
pub fn desired_backend_endpoints(svc: &ServiceRecord, view: &BackendView) -> DesiredEndpoints {
    let family = (!svc.is_headless()).then(|| published_families(svc)[0]);
    let mut addresses: Vec<&AddressState> = view
        .addresses
        .iter()
        .filter(|a| family.is_none_or(|f| IpFamily::of(&a.ip) == f))
        .collect();
    let truncated = addresses.len() > MAX_ENDPOINTS_ADDRESSES;
    if truncated {
        addresses.sort_by_key(|a| (!a.ready, ip_sort_key(&a.ip)));
        addresses.truncate(MAX_ENDPOINTS_ADDRESSES);
    }
    let per_address: Vec<EndpointSubset> = addresses
        .into_iter()
        .filter_map(|a| address_subset(svc, a))
        .collect();
    let mut annotations = BTreeMap::new();
    if truncated {
        annotations.insert(
            ANNOTATION_OVER_CAPACITY.to_owned(),
            OVER_CAPACITY_TRUNCATED.to_owned(),
        );
    }
    DesiredEndpoints {
        namespace: svc.namespace.to_string(),
        name: svc.name.to_string(),
        subsets: desired::repack_subsets(&per_address),
        labels: desired::endpoints_labels(svc, SelectorSource::Annotation),
        annotations,
        truncated,
    }
}

/// The Endpoints object to write for a Service published from a BackendSet, or `None` when `current`
/// already matches: [`desired::endpoints_need_write`], plus the owner reference to the BackendSet (a
/// current object with another owner, or none, is written to fix it).
pub fn backend_endpoints_need_write(
    current: Option<&Endpoints>,
    desired: &DesiredEndpoints,
    view: &BackendView,
) -> Option<Endpoints> {
    let owner = backend_owner_reference(view);
    let owned =
        |ep: &Endpoints| ep.metadata.owner_references.as_deref() == Some(std::slice::from_ref(&owner));
    let mut obj = match (desired::endpoints_need_write(current, desired), current) {
        (Some(obj), _) => obj,
        (None, Some(current)) if !owned(current) => current.clone(),
        (None, _) => return None,
    };
    obj.metadata.owner_references = Some(vec![owner]);
    Some(obj)
}

/// The port a Service port reaches on a backend, `None` when a named `targetPort` is not in its `ports`.
fn backend_port(service_port: &ServicePortRecord, ports: &BTreeMap<String, i32>) -> Option<i32> {
    match &service_port.target_port {
        TargetPort::Number(port) => Some(*port),
        TargetPort::Name(name) => ports.get(&**name).copied(),
    }
}

fn address_subset(svc: &ServiceRecord, address: &AddressState) -> Option<EndpointSubset> {
    let ports: Vec<EndpointPort> = svc
        .ports
        .iter()
        .filter_map(|sp| {
            Some(EndpointPort {
                name: Some(sp.name.to_string()).filter(|n| !n.is_empty()),
                port: backend_port(sp, &address.ports)?,
                protocol: Some(sp.protocol.as_str().to_owned()),
                app_protocol: sp.app_protocol.as_ref().map(|p| p.to_string()),
            })
        })
        .collect();
    if ports.is_empty() && !(svc.ports.is_empty() && svc.is_headless()) {
        return None;
    }
    let endpoint_address = EndpointAddress {
        ip: address.ip.to_string(),
        node_name: address.node_name.clone(),
        ..EndpointAddress::default()
    };
    let ready = svc.publish_not_ready_addresses || address.ready;
    Some(EndpointSubset {
        addresses: ready.then(|| vec![endpoint_address.clone()]),
        not_ready_addresses: (!ready).then(|| vec![endpoint_address]),
        ports: Some(ports).filter(|p| !p.is_empty()),
    })
}

/// Orders and identifies a port list: `(name, port, protocol, appProtocol)` of each port, sorted.
type PortsKey = Vec<(String, i32, String, Option<String>)>;

fn ports_key(ports: &[SlicePort]) -> PortsKey {
    let mut key: PortsKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

/// Desired endpoints of one address type and port list, by IP order.
#[derive(Default)]
struct Group {
    ports: Vec<SlicePort>,
    endpoints: BTreeMap<[u8; 16], Endpoint>,
}

type Groups = BTreeMap<(IpFamily, PortsKey), Group>;

/// Plans the EndpointSlices of a Service published from a BackendSet, against `existing` (the Service's
/// slices managed by [`desired::SLICE_CONTROLLER_NAME`]).
///
/// One set of slices per address type with addresses (of the Service's families; both when headless) and
/// per distinct port list, at most `max_per_slice` endpoints each (clamped to 1..=1000), owned by the
/// BackendSet. Existing slices keep the endpoints they hold that are still desired (their names stay, an
/// update carries their resourceVersion); new endpoints fill their free room first, then new slices
/// (`generateName: <service>-`). A slice that already matches is not written; slices left without
/// endpoints are reused for new ones of their address type, or deleted. No addresses: no slices.
pub fn desired_backend_slices(
    svc: &ServiceRecord,
    view: &BackendView,
    existing: &[EndpointSlice],
    max_per_slice: usize,
) -> SlicePlan {
    let max = max_per_slice.clamp(1, MAX_ENDPOINTS_PER_SLICE_LIMIT);
    let template = SliceTemplate {
        svc,
        labels: desired::slice_labels(svc),
        owner: backend_owner_reference(view),
    };
    let groups = slice_groups(svc, view);
    let mut plan = SlicePlan {
        stats: SliceStats {
            endpoints_desired: groups.values().map(|g| g.endpoints.len()).sum(),
            slices_desired: groups.values().map(|g| g.endpoints.len().div_ceil(max)).sum(),
            ..SliceStats::default()
        },
        ..SlicePlan::default()
    };
    let mut existing: Vec<&EndpointSlice> = existing.iter().collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut spare: Vec<&EndpointSlice> = Vec::new();
    let mut used = vec![false; existing.len()];
    for ((family, key), group) in groups {
        let mine: Vec<usize> = (0..existing.len())
            .filter(|i| !used[*i] && slice_group(existing[*i]) == Some((family, key.clone())))
            .collect();
        for &i in &mine {
            used[i] = true;
        }
        let slices: Vec<&EndpointSlice> = mine.iter().map(|i| existing[*i]).collect();
        pack_group(&template, family, group, &slices, max, &mut plan, &mut spare);
    }
    spare.extend(existing.iter().zip(&used).filter(|(_, u)| !**u).map(|(s, _)| *s));
    reuse_spare(&mut plan, spare);
    if svc.deleting {
        plan.create.clear();
    }
    plan
}

/// What every slice of the Service carries.
struct SliceTemplate<'a> {
    svc: &'a ServiceRecord,
    labels: BTreeMap<String, String>,
    owner: OwnerReference,
}

impl SliceTemplate<'_> {
    fn new_slice(&self, family: IpFamily, ports: Vec<SlicePort>, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: family.address_type().to_owned(),
            endpoints,
            ports: Some(ports),
            metadata: ObjectMeta {
                namespace: Some(self.svc.namespace.to_string()),
                generate_name: Some(format!("{}-", self.svc.name)),
                labels: Some(self.labels.clone()),
                owner_references: Some(vec![self.owner.clone()]),
                ..ObjectMeta::default()
            },
        }
    }

    /// `existing` with this content, keeping its name, resourceVersion and other metadata.
    fn rewrite(
        &self,
        existing: &EndpointSlice,
        ports: Vec<SlicePort>,
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        let mut slice = existing.clone();
        slice.endpoints = endpoints;
        slice.ports = Some(ports);
        slice.metadata.labels = Some(self.labels.clone());
        slice.metadata.owner_references = Some(vec![self.owner.clone()]);
        slice
    }

    fn matches(&self, existing: &EndpointSlice, ports: &[SlicePort], endpoints: &[Endpoint]) -> bool {
        let mut current = existing.endpoints.clone();
        current.sort_by_key(endpoint_order);
        current == endpoints
            && ports_key(existing.ports.as_deref().unwrap_or_default()) == ports_key(ports)
            && existing.metadata.labels.as_ref() == Some(&self.labels)
            && existing.metadata.owner_references.as_deref() == Some(std::slice::from_ref(&self.owner))
    }
}

fn endpoint_order(endpoint: &Endpoint) -> [u8; 16] {
    endpoint
        .addresses
        .first()
        .and_then(|a| a.parse::<IpAddr>().ok())
        .map_or([0xff; 16], |ip| ip_sort_key(&ip))
}

/// The (address type, port list) group of an existing slice; `None` for FQDN or unknown types.
fn slice_group(slice: &EndpointSlice) -> Option<(IpFamily, PortsKey)> {
    let family = IpFamily::from_address_type(&slice.address_type)?;
    Some((family, ports_key(slice.ports.as_deref().unwrap_or_default())))
}

fn slice_groups(svc: &ServiceRecord, view: &BackendView) -> Groups {
    let families = published_families(svc);
    let mut groups = Groups::new();
    for address in &view.addresses {
        let family = IpFamily::of(&address.ip);
        if !families.contains(&family) {
            continue;
        }
        let Some(ports) = slice_ports(svc, address) else {
            continue;
        };
        let group = groups.entry((family, ports_key(&ports))).or_default();
        group.ports = ports;
        group
            .endpoints
            .insert(ip_sort_key(&address.ip), slice_endpoint(svc, address));
    }
    groups
}

/// The address's resolved ports, `None` when the Service has ports and none resolves.
fn slice_ports(svc: &ServiceRecord, address: &AddressState) -> Option<Vec<SlicePort>> {
    let mut ports: Vec<SlicePort> = svc
        .ports
        .iter()
        .filter_map(|sp| {
            Some(SlicePort {
                name: Some(sp.name.to_string()),
                port: Some(backend_port(sp, &address.ports)?),
                protocol: Some(sp.protocol.as_str().to_owned()),
                app_protocol: sp.app_protocol.as_ref().map(|p| p.to_string()),
            })
        })
        .collect();
    if ports.is_empty() && !svc.ports.is_empty() {
        return None;
    }
    ports.sort_by_key(|p| ports_key(std::slice::from_ref(p)));
    Some(ports)
}

fn slice_endpoint(svc: &ServiceRecord, address: &AddressState) -> Endpoint {
    Endpoint {
        addresses: vec![address.ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(svc.publish_not_ready_addresses || address.ready),
            serving: Some(address.ready),
            terminating: Some(false),
        }),
        node_name: address.node_name.clone(),
        zone: address.zone.clone(),
        ..Endpoint::default()
    }
}

/// Packs one group into its existing slices (sticky: an endpoint stays in the slice that holds it), then
/// into new ones. Existing slices left empty go to `spare`.
fn pack_group<'a>(
    template: &SliceTemplate<'_>,
    family: IpFamily,
    mut group: Group,
    existing: &[&'a EndpointSlice],
    max: usize,
    plan: &mut SlicePlan,
    spare: &mut Vec<&'a EndpointSlice>,
) {
    let mut kept: Vec<(&EndpointSlice, BTreeMap<[u8; 16], Endpoint>)> = Vec::new();
    for slice in existing {
        let mut mine = BTreeMap::new();
        for endpoint in &slice.endpoints {
            let key = endpoint_order(endpoint);
            if mine.len() < max
                && let Some(want) = group.endpoints.remove(&key)
            {
                mine.insert(key, want);
            }
        }
        plan.stats.endpoints_removed += slice.endpoints.len() - mine.len();
        kept.push((slice, mine));
    }
    plan.stats.endpoints_added += group.endpoints.len();
    for (_, mine) in &mut kept {
        while mine.len() < max {
            let Some((key, endpoint)) = group.endpoints.pop_first() else {
                break;
            };
            mine.insert(key, endpoint);
        }
    }
    for (slice, mine) in kept {
        if mine.is_empty() {
            spare.push(slice);
            continue;
        }
        let endpoints: Vec<Endpoint> = mine.into_values().collect();
        if !template.matches(slice, &group.ports, &endpoints) {
            plan.update
                .push(template.rewrite(slice, group.ports.clone(), endpoints));
        }
    }
    let rest: Vec<Endpoint> = std::mem::take(&mut group.endpoints).into_values().collect();
    for chunk in rest.chunks(max) {
        plan.create
            .push(template.new_slice(family, group.ports.clone(), chunk.to_vec()));
    }
}

/// Turns creates into updates of spare slices of the same address type (saving a delete and a create
/// each); the remaining spare slices are deleted.
fn reuse_spare(plan: &mut SlicePlan, mut spare: Vec<&EndpointSlice>) {
    for mut slice in std::mem::take(&mut plan.create) {
        match spare.iter().position(|s| s.address_type == slice.address_type) {
            Some(index) => {
                let old = spare.remove(index);
                slice.metadata.generate_name = None;
                slice.metadata.name = old.metadata.name.clone();
                slice.metadata.resource_version = old.metadata.resource_version.clone();
                slice.metadata.annotations = old.metadata.annotations.clone();
                plan.update.push(slice);
            }
            None => plan.create.push(slice),
        }
    }
    plan.delete.extend(spare.into_iter().cloned());
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
