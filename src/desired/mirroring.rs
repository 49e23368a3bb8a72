//! EndpointSlices mirrored from the Endpoints of selectorless Services.
//!
//! Each canonical subset yields at most [`MAX_MIRRORED_PER_SUBSET`] endpoints (ready addresses first), split
//! by address type into one slice per `(address type, ports)`. Mirrored slices are owned by the Endpoints and
//! carry its labels and annotations (minus the trigger time and kubectl's last-applied configuration).
//! Every invalid address is reported, also past the per-subset cap (upstream only notices those before it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::labels::{
    ANNOTATION_LAST_APPLIED, ANNOTATION_LEADER, ANNOTATION_TRIGGER_TIME, LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME, LABEL_SKIP_MIRROR, MAX_MIRRORED_PER_SUBSET, MIRRORING_CONTROLLER_NAME,
};
use super::repack::repack_subsets;
use super::slices::{
    EndpointKey, PortsKey, SkipReason, SlicePlan, comparable, controller_reference, endpoint_key, owned_by,
    ports_key, recycle_deletes,
};
use crate::cache::{IpFamily, ServiceRecord, parse_ip};

type MirrorKey = (IpFamily, PortsKey);

#[derive(Default)]
struct MirrorGroup {
    ports: Vec<EndpointPort>,
    endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// Plans the mirrored EndpointSlices of a Service's Endpoints. `existing` are the slices labelled with the
/// Service name and roster's mirroring managed-by value.
///
/// Everything is deleted when the Endpoints must not be mirrored: skip-mirror label, leader-election
/// annotation, or a Service that selects pods (by `spec.selector`, or roster's own selector in annotation
/// mode, whose Endpoints roster publishes as slices itself).
pub fn desired_mirrored_slices(
    svc: &ServiceRecord,
    endpoints: &Endpoints,
    existing: &[EndpointSlice],
) -> SlicePlan {
    if !should_mirror(svc, endpoints) {
        return SlicePlan::delete_all(existing.to_vec());
    }
    let mut plan = SlicePlan::default();
    let owner = endpoints_owner(endpoints);
    let mut existing: Vec<&EndpointSlice> = existing.iter().collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut by_key: BTreeMap<MirrorKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        match IpFamily::from_address_type(&slice.address_type) {
            Some(family) if owned_by(slice, &owner) => {
                by_key
                    .entry((family, ports_key(slice.ports.as_deref())))
                    .or_default()
                    .push(slice);
            }
            _ => plan.delete.push(slice.clone()),
        }
    }

    let groups = desired_groups(endpoints, &mut plan);
    for (key, group) in groups {
        let slices = by_key.remove(&key).unwrap_or_default();
        plan_key(endpoints, key.0, group, &slices, &mut plan);
    }
    for slice in by_key.into_values().flatten() {
        plan.stats.endpoints_removed += slice.endpoints.len();
        plan.delete.push(slice.clone());
    }
    recycle_deletes(&mut plan, |slice| owned_by(slice, &owner));
    if endpoints.metadata.deletion_timestamp.is_some() {
        plan.create.clear();
    }
    plan
}

fn should_mirror(svc: &ServiceRecord, endpoints: &Endpoints) -> bool {
    let meta = &endpoints.metadata;
    let skip = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SKIP_MIRROR))
        .is_some_and(|v| v == "true");
    let leader = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_LEADER));
    !skip && !leader && !svc.has_spec_selector && svc.active_selector().is_none()
}

fn desired_groups(endpoints: &Endpoints, plan: &mut SlicePlan) -> BTreeMap<MirrorKey, MirrorGroup> {
    let mut groups: BTreeMap<MirrorKey, MirrorGroup> = BTreeMap::new();
    for subset in repack_subsets(endpoints.subsets.as_deref().unwrap_or_default()) {
        let ports = mirrored_ports(&subset);
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| (a, false));
        let (mut added, mut invalid, mut total) = (0, 0, 0);
        for (address, is_ready) in ready.chain(not_ready) {
            total += 1;
            let Some(ip) = parse_ip(&address.ip) else {
                invalid += 1;
                plan.skipped.push((address.ip.clone(), SkipReason::InvalidIp));
                continue;
            };
            if added >= MAX_MIRRORED_PER_SUBSET {
                continue;
            }
            let endpoint = address_endpoint(address, ip.to_string(), is_ready);
            let group = groups
                .entry((IpFamily::of(&ip), ports_key(Some(&ports))))
                .or_default();
            group.ports.clone_from(&ports);
            group.endpoints.insert(endpoint_key(&endpoint), endpoint);
            added += 1;
        }
        let skipped = total - added - invalid;
        if skipped > 0 {
            plan.skipped
                .push((describe_ports(&ports), SkipReason::TooManyAddresses { skipped }));
        }
    }
    groups
}

fn mirrored_ports(subset: &EndpointSubset) -> Vec<EndpointPort> {
    let ports = subset.ports.iter().flatten().map(|p| EndpointPort {
        name: p.name.clone(),
        port: Some(p.port),
        protocol: p.protocol.clone(),
        app_protocol: p.app_protocol.clone(),
    });
    ports.collect()
}

fn describe_ports(ports: &[EndpointPort]) -> String {
    let each = ports.iter().map(|p| {
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        format!(
            "{}:{}/{protocol}",
            p.name.as_deref().unwrap_or_default(),
            p.port.unwrap_or_default()
        )
    });
    format!("subset with ports [{}]", each.collect::<Vec<_>>().join(","))
}

fn address_endpoint(address: &EndpointAddress, ip: String, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..EndpointConditions::default()
        }),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        node_name: address.node_name.clone(),
        target_ref: address.target_ref.clone(),
        ..Endpoint::default()
    }
}

/// One slice per key: the first existing slice is updated when its endpoints, labels or annotations differ;
/// any others are deleted; with none, one is created.
fn plan_key(
    endpoints: &Endpoints,
    family: IpFamily,
    group: MirrorGroup,
    existing: &[&EndpointSlice],
    plan: &mut SlicePlan,
) {
    plan.stats.endpoints_desired += group.endpoints.len();
    plan.stats.slices_desired += 1;
    let mut slice = mirrored_slice(endpoints, family, group.ports);
    let Some((first, rest)) = existing.split_first() else {
        plan.stats.endpoints_added += group.endpoints.len();
        slice.endpoints = group.endpoints.into_values().collect();
        plan.create.push(slice);
        return;
    };
    plan.delete.extend(rest.iter().map(|s| (*s).clone()));
    count_changes(first, &group.endpoints, plan);
    let current: BTreeMap<EndpointKey, Endpoint> = first
        .endpoints
        .iter()
        .map(|e| (endpoint_key(e), comparable(e)))
        .collect();
    let wanted: BTreeMap<EndpointKey, Endpoint> = group
        .endpoints
        .iter()
        .map(|(k, e)| (k.clone(), comparable(e)))
        .collect();
    let same = current == wanted
        && first.endpoints.len() == wanted.len()
        && first.metadata.labels == slice.metadata.labels
        && first.metadata.annotations.clone().unwrap_or_default()
            == slice.metadata.annotations.clone().unwrap_or_default();
    if !same {
        slice.metadata.name = first.metadata.name.clone();
        slice.metadata.generate_name = None;
        slice.metadata.resource_version = first.metadata.resource_version.clone();
        slice.endpoints = group.endpoints.into_values().collect();
        plan.update.push(slice);
    }
}

fn count_changes(existing: &EndpointSlice, desired: &BTreeMap<EndpointKey, Endpoint>, plan: &mut SlicePlan) {
    let current: BTreeMap<EndpointKey, &Endpoint> =
        existing.endpoints.iter().map(|e| (endpoint_key(e), e)).collect();
    for (key, want) in desired {
        match current.get(key) {
            None => plan.stats.endpoints_added += 1,
            Some(have) if comparable(have) != comparable(want) => plan.stats.endpoints_updated += 1,
            Some(_) => {}
        }
    }
    plan.stats.endpoints_removed += current.keys().filter(|k| !desired.contains_key(*k)).count();
}

fn mirrored_slice(endpoints: &Endpoints, family: IpFamily, ports: Vec<EndpointPort>) -> EndpointSlice {
    let meta = &endpoints.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(LABEL_SERVICE_NAME.to_owned(), name.clone());
    labels.insert(LABEL_MANAGED_BY.to_owned(), MIRRORING_CONTROLLER_NAME.to_owned());
    let mut annotations = meta.annotations.clone().unwrap_or_default();
    annotations.remove(ANNOTATION_TRIGGER_TIME);
    annotations.remove(ANNOTATION_LAST_APPLIED);
    EndpointSlice {
        address_type: family.address_type().to_owned(),
        endpoints: Vec::new(),
        ports: Some(ports),
        metadata: ObjectMeta {
            namespace: meta.namespace.clone(),
            generate_name: Some(format!("{name}-")),
            labels: Some(labels),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            owner_references: Some(vec![endpoints_owner(endpoints)]),
            ..ObjectMeta::default()
        },
    }
}

/// The owner of mirrored slices: their Endpoints.
fn endpoints_owner(endpoints: &Endpoints) -> OwnerReference {
    let meta = &endpoints.metadata;
    controller_reference(
        "Endpoints",
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default(),
    )
}
