//! The EndpointSlices of a Service, planned against the slices that exist.
//!
//! Packing follows the upstream EndpointSlice controller: it prefers few writes over perfect packing and never
//! rebalances. Per address type and per distinct port list: existing slices keep the endpoints still desired
//! (updated in place when one changed or went away); new endpoints first fill the slices already being
//! updated, fullest first; a remainder smaller than a slice then goes into the one unchanged slice it fits
//! best, and anything else into new slices. Deletes are recycled into updates of new slices, and an address
//! type with no endpoints keeps one empty placeholder slice. Slices that already match are not touched.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::hints::{HintsMode, HintsOutcome, TopologyInput, set_hints};
use super::labels::{
    ANNOTATION_TRIGGER_TIME, LABEL_HEADLESS, LABEL_MANAGED_BY, LABEL_SERVICE_NAME,
    MAX_ENDPOINTS_PER_SLICE_LIMIT, MAX_MIRRORED_PER_SUBSET, RESERVED_SLICE_LABELS, SLICE_CONTROLLER_NAME,
};
use super::readiness::slice_conditions;
use super::source::EndpointSource;
use super::trigger::format_trigger_time;
use super::verdict::{Exclusion, ResolvedPort, slice_entry};
use crate::cache::{IpFamily, NodeLookup, ServiceRecord};

/// Why an address was not published (mirroring). Each maps to a Warning Event reason on the Endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The address is not an IP; the entry's text is the address.
    InvalidIp,
    /// The subset had more addresses than are mirrored; the entry's text describes the subset's ports.
    TooManyAddresses { skipped: usize },
}

impl SkipReason {
    pub fn event_reason(&self) -> &'static str {
        match self {
            SkipReason::InvalidIp => "InvalidIPAddress",
            SkipReason::TooManyAddresses { .. } => "TooManyAddressesToMirror",
        }
    }
}

/// Counts for the `endpoint_slice_controller_*` style metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceStats {
    /// Endpoints in the desired state.
    pub endpoints_desired: usize,
    /// Desired endpoints not found in any existing slice.
    pub endpoints_added: usize,
    /// Existing endpoints kept but changed (conditions, zone, node, ...).
    pub endpoints_updated: usize,
    /// Existing endpoints no longer desired.
    pub endpoints_removed: usize,
    /// Slices an ideal packing would need (at least one per address type: the placeholder).
    pub slices_desired: usize,
}

/// The writes that bring the existing EndpointSlices to the desired state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlicePlan {
    /// New slices, named by `generateName`.
    pub create: Vec<EndpointSlice>,
    /// Full replacements of existing slices, carrying their name and resourceVersion.
    pub update: Vec<EndpointSlice>,
    /// Existing slices to delete, as listed.
    pub delete: Vec<EndpointSlice>,
    /// Nodes of pods that were left out because the Node is not in the cache (retry later); `""` stands for
    /// pods without `spec.nodeName`.
    pub missing_nodes: Vec<String>,
    /// Addresses left out, with why (mirroring only).
    pub skipped: Vec<(String, SkipReason)>,
    /// The hints each address type's endpoints got (not for mirroring).
    pub hints: Vec<(IpFamily, HintsOutcome)>,
    pub stats: SliceStats,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::InvalidIp => f.write_str("not a valid IP address, not mirrored"),
            SkipReason::TooManyAddresses { skipped } => write!(
                f,
                "at most {MAX_MIRRORED_PER_SUBSET} addresses per subset are mirrored, {skipped} were skipped"
            ),
        }
    }
}

impl SlicePlan {
    /// A plan that deletes these slices and writes nothing else.
    pub fn delete_all(slices: Vec<EndpointSlice>) -> Self {
        let endpoints_removed = slices.iter().map(|s| s.endpoints.len()).sum();
        SlicePlan {
            delete: slices,
            stats: SliceStats {
                endpoints_removed,
                ..SliceStats::default()
            },
            ..SlicePlan::default()
        }
    }

    /// No API writes are needed.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Inputs of [`desired_slices`] besides the Service, its endpoint sources and the existing slices.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceInput {
    /// Most endpoints in one slice, clamped to 1..=1000.
    pub max_per_slice: usize,
    /// From [`super::TriggerTimeTracker::compute`].
    pub trigger_time: Option<Timestamp>,
    /// The controller owner of the slices: the Service, or the BackendSet that publishes to it.
    pub owner: OwnerReference,
    /// Whether hints can be written, and the Nodes' CPU per zone.
    pub topology: TopologyInput,
}

impl SliceInput {
    /// Slices owned by the Service itself.
    pub fn owned_by_service(
        svc: &ServiceRecord,
        max_per_slice: usize,
        trigger_time: Option<Timestamp>,
    ) -> Self {
        SliceInput {
            max_per_slice,
            trigger_time,
            owner: controller_reference("Service", &svc.name, &svc.uid),
            topology: TopologyInput::default(),
        }
    }
}

/// Identifies a port list regardless of order: sorted `(name, port, protocol, appProtocol)`.
pub(crate) type PortsKey = Vec<(String, Option<i32>, String, Option<String>)>;

pub(crate) fn ports_key(ports: Option<&[EndpointPort]>) -> PortsKey {
    let mut key: PortsKey = ports
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                protocol,
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

/// Identifies an endpoint across syncs: sorted addresses, hostname, and the target's namespace and name.
pub(crate) type EndpointKey = (Vec<String>, Option<String>, Option<String>, Option<String>);

pub(crate) fn endpoint_key(endpoint: &Endpoint) -> EndpointKey {
    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    let target = endpoint.target_ref.as_ref();
    (
        addresses,
        endpoint.hostname.clone(),
        target.and_then(|t| t.namespace.clone()),
        target.and_then(|t| t.name.clone()),
    )
}

/// An endpoint as compared: the target's resourceVersion is noise.
pub(crate) fn comparable(endpoint: &Endpoint) -> Endpoint {
    let mut endpoint = endpoint.clone();
    if let Some(target) = &mut endpoint.target_ref {
        target.resource_version = None;
    }
    endpoint
}

/// A desired group: one port list and its endpoints, in key order.
#[derive(Debug, Default)]
struct Group {
    ports: Vec<EndpointPort>,
    endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// Plans the EndpointSlices of a Service.
///
/// `existing` are the slices labelled with this Service's name and roster's managed-by value; `nodes` tells
/// the zone of a pod's node. Existing slices not owned by `input.owner` are replaced. Endpoints carry the
/// hints the Service asks for ([`super::hints`]), so they are compared, and written, with them.
///
/// Divergence from upstream: a source on which none of the Service's ports resolve (a named `targetPort` the
/// pod does not declare) is left out, as in the Endpoints, instead of being published in a `ports: []` slice
/// that consumers read as "all ports" (kubernetes#109627). A source on which some ports resolve is published
/// with those, as upstream. A Service without ports publishes its endpoints with `ports: []`.
pub fn desired_slices<P>(
    svc: &ServiceRecord,
    sources: &[P],
    nodes: &dyn Fn(&str) -> NodeLookup,
    existing: &[EndpointSlice],
    input: &SliceInput,
) -> SlicePlan
where
    P: Deref<Target: EndpointSource>,
{
    let max = input.max_per_slice.clamp(1, MAX_ENDPOINTS_PER_SLICE_LIMIT);
    let families = slice_families(svc);
    let mut plan = SlicePlan::default();
    let mut missing_nodes = BTreeSet::new();
    let mut desired = desired_groups(svc, sources, nodes, &families, &mut missing_nodes);
    plan.missing_nodes = missing_nodes.into_iter().collect();

    let mut existing: Vec<&EndpointSlice> = existing.iter().collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let template = SliceTemplate {
        svc,
        labels: slice_labels(svc),
        owner: &input.owner,
    };
    let mode = HintsMode::of(svc);
    for family in &families {
        let of_family: Vec<&EndpointSlice> = existing
            .iter()
            .copied()
            .filter(|s| s.address_type == family.address_type())
            .collect();
        let mut groups = desired.remove(family).unwrap_or_default();
        let hints = hint_family(mode, &input.topology, &mut groups, &of_family);
        plan.hints.push((*family, hints));
        plan_family(&template, *family, groups, of_family, max, &mut plan);
    }
    let unsupported = existing
        .iter()
        .filter(|s| IpFamily::from_address_type(&s.address_type).is_none_or(|f| !families.contains(&f)));
    plan.delete.extend(unsupported.map(|s| (*s).clone()));

    recycle_deletes(&mut plan, |slice| owned_by(slice, &input.owner));
    if svc.deleting {
        plan.create.clear();
    }
    for slice in plan.create.iter_mut().chain(plan.update.iter_mut()) {
        set_trigger_time(slice, input.trigger_time);
    }
    plan
}

/// What every slice of one Service carries.
struct SliceTemplate<'a> {
    svc: &'a ServiceRecord,
    labels: BTreeMap<String, String>,
    owner: &'a OwnerReference,
}

/// Address types a Service's slices use: its `ipFamilies`; else the cluster IP's family; headless without
/// families gets both.
pub fn slice_families(svc: &ServiceRecord) -> Vec<IpFamily> {
    let mut families: Vec<IpFamily> = Vec::new();
    for family in &svc.ip_families {
        if !families.contains(family) {
            families.push(*family);
        }
    }
    if families.is_empty() {
        match &svc.cluster_ip {
            Some(ip) => families.push(IpFamily::of(ip)),
            None => families.extend([IpFamily::V4, IpFamily::V6]),
        }
    }
    families
}

/// Labels of a Service's slices: its labels without the reserved keys, then the headless label, the Service
/// name and roster's managed-by value.
pub fn slice_labels(svc: &ServiceRecord) -> BTreeMap<String, String> {
    let mut labels = svc.labels.to_map();
    labels.retain(|k, _| !RESERVED_SLICE_LABELS.contains(&k.as_str()));
    if svc.is_headless() {
        labels.insert(LABEL_HEADLESS.to_owned(), String::new());
    }
    labels.insert(LABEL_SERVICE_NAME.to_owned(), svc.name.to_string());
    labels.insert(LABEL_MANAGED_BY.to_owned(), SLICE_CONTROLLER_NAME.to_owned());
    labels
}

type DesiredGroups = BTreeMap<IpFamily, BTreeMap<PortsKey, Group>>;

fn desired_groups<P>(
    svc: &ServiceRecord,
    sources: &[P],
    nodes: &dyn Fn(&str) -> NodeLookup,
    families: &[IpFamily],
    missing_nodes: &mut BTreeSet<String>,
) -> DesiredGroups
where
    P: Deref<Target: EndpointSource>,
{
    let mut groups = DesiredGroups::new();
    for source in sources.iter().map(|s| &**s) {
        let entry = match slice_entry(svc, source, nodes, families) {
            Ok(entry) => entry,
            Err(Exclusion::NodeMissing) => {
                missing_nodes.insert(source.node_name().unwrap_or_default().to_owned());
                continue;
            }
            Err(_) => continue,
        };
        let ports = slice_ports(&entry.ports);
        for family in families {
            let Some(endpoint) = source_endpoint(svc, source, *family, entry.zone.as_deref()) else {
                continue;
            };
            let group = groups
                .entry(*family)
                .or_default()
                .entry(ports_key(Some(&ports)))
                .or_default();
            group.ports.clone_from(&ports);
            group.endpoints.insert(endpoint_key(&endpoint), endpoint);
        }
    }
    groups
}

/// Sets the hints of one address type's desired endpoints, computed over all of them. The Auto allocation
/// is told the zone each endpoint is hinted for in the existing slices, so that it moves as few as it can.
fn hint_family(
    mode: HintsMode,
    topology: &TopologyInput,
    groups: &mut BTreeMap<PortsKey, Group>,
    existing: &[&EndpointSlice],
) -> HintsOutcome {
    let previous: HashMap<EndpointKey, Arc<str>> = match mode {
        HintsMode::Auto => existing
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter_map(|e| Some((endpoint_key(e), hinted_zone(e)?)))
            .collect(),
        _ => HashMap::new(),
    };
    let mut endpoints: Vec<&mut Endpoint> = groups
        .values_mut()
        .flat_map(|g| g.endpoints.values_mut())
        .collect();
    let was_for = |e: &Endpoint| previous.get(&endpoint_key(e)).cloned();
    set_hints(mode, topology, &mut endpoints, &was_for)
}

/// The one zone an endpoint is hinted for.
fn hinted_zone(endpoint: &Endpoint) -> Option<Arc<str>> {
    match endpoint.hints.as_ref()?.for_zones.as_deref()? {
        [zone] => Some(Arc::from(zone.name.as_str())),
        _ => None,
    }
}

/// A source's resolved ports as a slice lists them, sorted.
fn slice_ports(resolved: &[ResolvedPort<'_>]) -> Vec<EndpointPort> {
    let mut ports: Vec<EndpointPort> = resolved
        .iter()
        .map(|(sp, port)| EndpointPort {
            name: Some(sp.name.to_string()),
            port: Some(*port),
            protocol: Some(sp.protocol.as_str().to_owned()),
            app_protocol: sp.app_protocol.as_ref().map(|p| p.to_string()),
        })
        .collect();
    ports.sort_by_key(|p| ports_key(Some(std::slice::from_ref(p))));
    ports
}

fn source_endpoint<S: EndpointSource + ?Sized>(
    svc: &ServiceRecord,
    source: &S,
    family: IpFamily,
    zone: Option<&str>,
) -> Option<Endpoint> {
    let addresses: Vec<String> = source
        .ips()
        .iter()
        .filter(|ip| IpFamily::of(ip) == family)
        .map(|ip| ip.to_string())
        .collect();
    if addresses.is_empty() {
        return None;
    }
    Some(Endpoint {
        addresses,
        conditions: Some(slice_conditions(source, svc)),
        hostname: source.hostname(svc),
        node_name: source.node_name().map(str::to_owned),
        target_ref: source.target_ref(),
        zone: zone.map(str::to_owned),
        ..Endpoint::default()
    })
}

/// Plans one address type: existing slices grouped by port list, desired groups packed, stale groups deleted,
/// and the placeholder when nothing else would remain.
fn plan_family(
    template: &SliceTemplate<'_>,
    family: IpFamily,
    groups: BTreeMap<PortsKey, Group>,
    existing: Vec<&EndpointSlice>,
    max: usize,
    plan: &mut SlicePlan,
) {
    let existing_count = existing.len();
    let mut creates = Vec::new();
    let mut deletes = Vec::new();
    let mut by_ports: BTreeMap<PortsKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, template.owner) {
            by_ports
                .entry(ports_key(slice.ports.as_deref()))
                .or_default()
                .push(slice);
        } else {
            deletes.push(slice.clone());
        }
    }
    plan.stats.slices_desired += groups
        .values()
        .map(|g| g.endpoints.len().div_ceil(max))
        .sum::<usize>()
        .max(1);
    for (key, group) in groups {
        let slices = by_ports.remove(&key).unwrap_or_default();
        let new = template.new_slice(family, group.ports.clone());
        let packed = pack_group(
            group.endpoints,
            slices,
            &template.labels,
            &new,
            max,
            &mut plan.stats,
        );
        plan.update.extend(packed.update);
        creates.extend(packed.create);
        deletes.extend(packed.delete);
    }
    for slice in by_ports.into_values().flatten() {
        plan.stats.endpoints_removed += slice.endpoints.len();
        deletes.push(slice.clone());
    }
    if deletes.len() == existing_count && creates.is_empty() {
        let placeholder = template.new_slice(family, Vec::new());
        if let [only] = deletes.as_slice()
            && template.is_same_placeholder(only, &placeholder)
        {
            deletes.clear();
        } else {
            creates.push(placeholder);
        }
    }
    plan.create.extend(creates);
    plan.delete.extend(deletes);
}

#[derive(Default)]
struct Packed {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<EndpointSlice>,
}

/// Packs one port group's desired endpoints into its existing slices (see the module doc).
fn pack_group(
    mut desired: BTreeMap<EndpointKey, Endpoint>,
    existing: Vec<&EndpointSlice>,
    labels: &BTreeMap<String, String>,
    template: &EndpointSlice,
    max: usize,
    stats: &mut SliceStats,
) -> Packed {
    stats.endpoints_desired += desired.len();
    let mut packed = Packed::default();
    let mut unchanged: Vec<&EndpointSlice> = Vec::new();
    for slice in existing {
        match keep_desired(slice, &mut desired, labels, max, stats) {
            Kept::Unchanged => unchanged.push(slice),
            Kept::Nothing => packed.delete.push(slice.clone()),
            Kept::Changed(update) => packed.update.push(*update),
        }
    }
    stats.endpoints_added += desired.len();

    packed.update.sort_by_key(|s| Reverse(s.endpoints.len()));
    for slice in &mut packed.update {
        fill(slice, &mut desired, max);
    }
    while !desired.is_empty() {
        let mut slice = match slice_to_fill(&mut unchanged, desired.len(), max) {
            Some(existing) => existing.clone(),
            None => template.clone(),
        };
        fill(&mut slice, &mut desired, max);
        if slice.metadata.name.is_some() {
            packed.update.push(slice)
        } else {
            packed.create.push(slice)
        }
    }
    packed
}

/// What an existing slice keeps of the desired endpoints.
enum Kept {
    Unchanged,
    /// None of its endpoints is desired any more.
    Nothing,
    /// The slice with the desired versions of the endpoints it keeps.
    Changed(Box<EndpointSlice>),
}

/// Takes out of `desired` the endpoints `slice` holds (at most `max`; a slice over a lowered limit gives the
/// excess back for placement elsewhere).
fn keep_desired(
    slice: &EndpointSlice,
    desired: &mut BTreeMap<EndpointKey, Endpoint>,
    labels: &BTreeMap<String, String>,
    max: usize,
    stats: &mut SliceStats,
) -> Kept {
    let mut kept = Vec::with_capacity(slice.endpoints.len());
    let mut changed = false;
    for endpoint in &slice.endpoints {
        match desired.remove(&endpoint_key(endpoint)) {
            Some(want) => {
                if comparable(endpoint) != want {
                    changed = true;
                    stats.endpoints_updated += 1;
                }
                kept.push(want);
            }
            None => stats.endpoints_removed += 1,
        }
    }
    for extra in kept.split_off(kept.len().min(max)) {
        desired.insert(endpoint_key(&extra), extra);
    }
    let labels_changed = slice.metadata.labels.as_ref() != Some(labels);
    if !changed && kept.len() == slice.endpoints.len() && !labels_changed {
        return Kept::Unchanged;
    }
    if kept.is_empty() {
        return Kept::Nothing;
    }
    let mut update = slice.clone();
    update.endpoints = kept;
    update.metadata.labels = Some(labels.clone());
    Kept::Changed(Box::new(update))
}

fn fill(slice: &mut EndpointSlice, desired: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, endpoint)) = desired.pop_first() else {
            break;
        };
        slice.endpoints.push(endpoint);
    }
}

/// The unchanged slice that the remaining `needed` endpoints fill most completely, removed from the list;
/// only when the remainder is smaller than a full slice.
fn slice_to_fill<'a>(
    unchanged: &mut Vec<&'a EndpointSlice>,
    needed: usize,
    max: usize,
) -> Option<&'a EndpointSlice> {
    if needed >= max {
        return None;
    }
    let free_after = |s: &&EndpointSlice| max.checked_sub(s.endpoints.len() + needed);
    let (index, _) = unchanged
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, free_after(s)?)))
        .min_by_key(|(_, free)| *free)?;
    Some(unchanged.remove(index))
}

impl SliceTemplate<'_> {
    fn new_slice(&self, family: IpFamily, ports: Vec<EndpointPort>) -> EndpointSlice {
        EndpointSlice {
            address_type: family.address_type().to_owned(),
            endpoints: Vec::new(),
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

    fn is_same_placeholder(&self, existing: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
        existing.address_type == placeholder.address_type
            && existing.metadata.namespace == placeholder.metadata.namespace
            && existing.metadata.labels == placeholder.metadata.labels
            && existing.endpoints.is_empty()
            && existing.ports.as_deref().unwrap_or_default().is_empty()
            && owned_by(existing, self.owner)
    }
}

/// A controller owner reference (`apiVersion: v1`), which also blocks the owner's deletion until the
/// slices are gone.
pub fn controller_reference(kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether a slice has `owner` (same API version, kind and uid) among its owner references.
pub(crate) fn owned_by(slice: &EndpointSlice, owner: &OwnerReference) -> bool {
    let refs = slice.metadata.owner_references.iter().flatten();
    refs.into_iter()
        .any(|r| r.uid == owner.uid && r.kind == owner.kind && r.api_version == owner.api_version)
}

/// Turns creates into updates of slices that would be deleted (same address type, owned), saving a delete
/// and a create each.
pub(crate) fn recycle_deletes(plan: &mut SlicePlan, owned: impl Fn(&EndpointSlice) -> bool) {
    for mut slice in std::mem::take(&mut plan.create) {
        let reusable = plan
            .delete
            .iter()
            .position(|d| d.address_type == slice.address_type && owned(d));
        match reusable {
            Some(index) => {
                let old = plan.delete.remove(index);
                slice.metadata.generate_name = None;
                slice.metadata.name = old.metadata.name;
                slice.metadata.resource_version = old.metadata.resource_version;
                plan.update.push(slice);
            }
            None => plan.create.push(slice),
        }
    }
}

/// Sets the trigger-time annotation when known, removes it otherwise.
fn set_trigger_time(slice: &mut EndpointSlice, trigger_time: Option<Timestamp>) {
    let annotations = slice.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match trigger_time {
        Some(at) => annotations.insert(ANNOTATION_TRIGGER_TIME.to_owned(), format_trigger_time(at)),
        None => annotations.remove(ANNOTATION_TRIGGER_TIME),
    };
    if annotations.is_empty() {
        slice.metadata.annotations = None;
    }
}
