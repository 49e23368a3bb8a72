//! The desired `Endpoints` object of a Service, and whether the current one needs a write.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Deref;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::labels::{
    ANNOTATION_OVER_CAPACITY, ANNOTATION_TRIGGER_TIME, ENDPOINTS_MANAGER, LABEL_ENDPOINTS_MANAGED_BY,
    LABEL_HEADLESS, LABEL_SKIP_MIRROR, MAX_ENDPOINTS_ADDRESSES, OVER_CAPACITY_TRUNCATED,
};
use super::repack::{AddressKey, PortKey, repack_subsets};
use super::source::EndpointSource;
use super::trigger::format_trigger_time;
use super::verdict::{EndpointsEntry, endpoints_entry};
use crate::cache::{IpFamily, ServiceRecord};

/// Inputs of [`desired_endpoints`] besides the Service and its endpoint sources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointsInput {
    /// From [`super::TriggerTimeTracker::compute`].
    pub trigger_time: Option<Timestamp>,
    /// The Endpoints carry the skip-mirror label: roster writes this selectorless Service's EndpointSlices
    /// itself, so no mirroring controller may mirror them into a second set.
    pub skip_mirror: bool,
    /// The controller owner of the Endpoints (a BackendSet), if any.
    pub owner: Option<OwnerReference>,
    /// Endpoints another controller wrote are adopted as they are: right content without roster's ownership
    /// label is not a reason to write (the label comes with roster's next real write).
    pub adopt: bool,
}

/// What the Endpoints object of a Service should contain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredEndpoints {
    pub namespace: String,
    pub name: String,
    /// Canonical (repacked) and truncated to [`MAX_ENDPOINTS_ADDRESSES`].
    pub subsets: Vec<EndpointSubset>,
    /// The complete label set: Service labels, the headless label, roster's ownership label and, for
    /// selectorless Services whose slices roster writes, the skip-mirror label.
    pub labels: BTreeMap<String, String>,
    /// The annotations roster owns: over-capacity (when truncated) and the trigger time (when known).
    pub annotations: BTreeMap<String, String>,
    /// The controller owner reference, when one is wanted.
    pub owner: Option<OwnerReference>,
    /// See [`EndpointsInput::adopt`].
    pub adopt: bool,
    /// More than [`MAX_ENDPOINTS_ADDRESSES`] addresses were selected and some were dropped.
    pub truncated: bool,
}

/// Computes the Endpoints of a Service from its endpoint sources (pods, or a BackendSet's backends).
///
/// One address per source, in the Service's primary IP family (`ipFamilies[0]`, else the cluster IP's family,
/// and for headless Services without families the source's own primary family); sources without an IP of
/// that family are left out. A source appears under each Service port whose `targetPort` resolves on it; a
/// headless Service without ports gets one port-less subset. Ready sources (or all, with
/// `publishNotReadyAddresses`, which also keeps terminating pods) go to `addresses`, the rest to
/// `notReadyAddresses`. `nodeName` is set only when the source has one (upstream writes an empty string).
/// The result is canonical and truncated.
pub fn desired_endpoints<P>(svc: &ServiceRecord, sources: &[P], input: EndpointsInput) -> DesiredEndpoints
where
    P: Deref<Target: EndpointSource>,
{
    let (subsets, truncated) = truncate_subsets(canonical_desired_subsets(svc, sources));
    let mut annotations = BTreeMap::new();
    if truncated {
        annotations.insert(
            ANNOTATION_OVER_CAPACITY.to_owned(),
            OVER_CAPACITY_TRUNCATED.to_owned(),
        );
    }
    if let Some(at) = input.trigger_time {
        annotations.insert(ANNOTATION_TRIGGER_TIME.to_owned(), format_trigger_time(at));
    }
    DesiredEndpoints {
        namespace: svc.namespace.to_string(),
        name: svc.name.to_string(),
        subsets,
        labels: endpoints_labels(svc, input.skip_mirror),
        annotations,
        owner: input.owner,
        adopt: input.adopt,
        truncated,
    }
}

/// The labels of a Service's Endpoints.
pub fn endpoints_labels(svc: &ServiceRecord, skip_mirror: bool) -> BTreeMap<String, String> {
    let mut labels = svc.labels.to_map();
    labels.remove(LABEL_HEADLESS);
    if svc.is_headless() {
        labels.insert(LABEL_HEADLESS.to_owned(), String::new());
    }
    labels.insert(
        LABEL_ENDPOINTS_MANAGED_BY.to_owned(),
        ENDPOINTS_MANAGER.to_owned(),
    );
    if skip_mirror {
        labels.insert(LABEL_SKIP_MIRROR.to_owned(), "true".to_owned());
    }
    labels
}

/// The one address the Endpoints carry for a source: its first IP of the Service's primary family.
pub fn endpoints_ip<S: EndpointSource + ?Sized>(svc: &ServiceRecord, source: &S) -> Option<IpAddr> {
    let ips = source.ips();
    let family = svc
        .ip_families
        .first()
        .copied()
        .or(svc.cluster_ip.as_ref().map(IpFamily::of))
        .or(ips.first().map(IpFamily::of))?;
    ips.iter().find(|ip| IpFamily::of(ip) == family).copied()
}

/// The canonical subsets of the sources (see [`repack_subsets`]). When every source resolves the same ports
/// (the usual case) they form one subset, built in canonical order directly; otherwise each source's own
/// subset goes through the repack.
fn canonical_desired_subsets<P>(svc: &ServiceRecord, sources: &[P]) -> Vec<EndpointSubset>
where
    P: Deref<Target: EndpointSource>,
{
    let entries: Vec<(EndpointsEntry<'_>, &P::Target)> = sources
        .iter()
        .filter_map(|s| Some((endpoints_entry(svc, &**s).ok()?, &**s)))
        .collect();
    let Some((first, _)) = entries.first() else {
        return Vec::new();
    };
    if entries.iter().any(|(entry, _)| entry.ports != first.ports) {
        return repacked(svc, &entries);
    }
    vec![one_subset(svc, &entries)]
}

/// The canonical subsets of any sources: each source's subset, repacked.
pub(super) fn repacked<S: EndpointSource + ?Sized>(
    svc: &ServiceRecord,
    entries: &[(EndpointsEntry<'_>, &S)],
) -> Vec<EndpointSubset> {
    let per_source: Vec<EndpointSubset> = entries
        .iter()
        .map(|(entry, source)| source_subset(svc, *source, entry))
        .collect();
    repack_subsets(&per_source)
}

/// The one canonical subset of sources that all resolve the same ports: addresses sorted by [`AddressKey`],
/// an address listed twice kept once (not ready if either is), ports sorted.
pub(super) fn one_subset<S: EndpointSource + ?Sized>(
    svc: &ServiceRecord,
    entries: &[(EndpointsEntry<'_>, &S)],
) -> EndpointSubset {
    let mut addresses: Vec<(AddressKey, bool, EndpointAddress)> = entries
        .iter()
        .map(|(entry, source)| {
            let address = endpoint_address(svc, *source, entry);
            (AddressKey::of(&address), entry.ready, address)
        })
        .collect();
    addresses.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    // Sorted with `false` (not ready) first for equal keys: the first of a run wins.
    addresses.dedup_by(|later, kept| later.0 == kept.0);
    let (ready, not_ready): (Vec<_>, Vec<_>) = addresses.into_iter().partition(|(_, ready, _)| *ready);
    let list = |v: Vec<(AddressKey, bool, EndpointAddress)>| {
        Some(v.into_iter().map(|(_, _, a)| a).collect::<Vec<_>>()).filter(|v| !v.is_empty())
    };
    let mut ports = entry_ports(&entries[0].0);
    ports.sort_by_cached_key(PortKey::of);
    EndpointSubset {
        addresses: list(ready),
        not_ready_addresses: list(not_ready),
        ports: Some(ports).filter(|p| !p.is_empty()),
    }
}

fn endpoint_address<S: EndpointSource + ?Sized>(
    svc: &ServiceRecord,
    source: &S,
    entry: &EndpointsEntry<'_>,
) -> EndpointAddress {
    EndpointAddress {
        ip: entry.ip.to_string(),
        hostname: source.hostname(svc),
        node_name: source.node_name().map(str::to_owned),
        target_ref: source.target_ref(),
    }
}

fn entry_ports(entry: &EndpointsEntry<'_>) -> Vec<EndpointPort> {
    entry
        .ports
        .iter()
        .map(|(sp, port)| EndpointPort {
            name: Some(sp.name.to_string()).filter(|n| !n.is_empty()),
            port: *port,
            protocol: Some(sp.protocol.as_str().to_owned()),
            app_protocol: sp.app_protocol.as_ref().map(|p| p.to_string()),
        })
        .collect()
}

fn source_subset<S: EndpointSource + ?Sized>(
    svc: &ServiceRecord,
    source: &S,
    entry: &EndpointsEntry<'_>,
) -> EndpointSubset {
    let address = endpoint_address(svc, source, entry);
    EndpointSubset {
        addresses: entry.ready.then(|| vec![address.clone()]),
        not_ready_addresses: (!entry.ready).then(|| vec![address]),
        ports: Some(entry_ports(entry)).filter(|p| !p.is_empty()),
    }
}

/// Cuts canonical subsets down to [`MAX_ENDPOINTS_ADDRESSES`] addresses, as upstream: when more than the limit
/// are ready, only ready addresses are kept; otherwise all ready ones and a share of the not-ready ones. Each
/// subset keeps a share proportional to its size (rounded up, within the remaining budget), taking its first
/// addresses in canonical order. The result is repacked again, so it stays canonical.
fn truncate_subsets(mut subsets: Vec<EndpointSubset>) -> (Vec<EndpointSubset>, bool) {
    let len = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| len(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| len(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_ENDPOINTS_ADDRESSES {
        return (subsets, false);
    }
    let truncate_ready = ready > MAX_ENDPOINTS_ADDRESSES;
    let (budget, total) = if truncate_ready {
        (MAX_ENDPOINTS_ADDRESSES, ready)
    } else {
        (MAX_ENDPOINTS_ADDRESSES - ready, not_ready)
    };
    let mut remaining = budget;
    for subset in &mut subsets {
        let list = if truncate_ready {
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let share = (len(list) * budget).div_ceil(total).min(remaining);
        if let Some(list) = list {
            list.truncate(share);
        }
        remaining -= share;
        if truncate_ready {
            subset.not_ready_addresses = None;
        }
    }
    // One subset stays canonical when cut; several may now share an address set and must be regrouped.
    match subsets.len() {
        1 => (subsets, true),
        _ => (repack_subsets(&subsets), true),
    }
}

/// The Endpoints object to write, or `None` when `current` already matches `desired`.
///
/// Compared: subsets after repacking `current` (so ordering and grouping noise and `targetRef.resourceVersion`
/// are ignored), the full label set, and the over-capacity annotation. The desired subsets are already
/// truncated, so an Endpoints object over capacity is not rewritten on every sync. The trigger-time annotation
/// is not compared: it is only written along with another change. A wanted owner reference must be the
/// object's only one. When adopting, a missing ownership label alone is no reason to write. The object written is `current` with subsets, labels, roster's annotations and the
/// wanted owner replaced; other annotations and the resourceVersion (for optimistic concurrency) are kept.
pub fn endpoints_need_write(current: Option<&Endpoints>, desired: &DesiredEndpoints) -> Option<Endpoints> {
    let Some(current) = current else {
        let metadata = ObjectMeta {
            namespace: Some(desired.namespace.clone()),
            name: Some(desired.name.clone()),
            ..ObjectMeta::default()
        };
        return Some(apply_desired(
            Endpoints {
                metadata,
                subsets: None,
            },
            desired,
        ));
    };
    let over_capacity = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_OVER_CAPACITY));
    let capacity_ok = over_capacity.is_some() == desired.truncated;
    let labels_ok = labels_match(current.metadata.labels.as_ref(), desired);
    let owner_ok = desired.owner.as_ref().is_none_or(|owner| {
        current.metadata.owner_references.as_deref() == Some(std::slice::from_ref(owner))
    });
    if capacity_ok && labels_ok && owner_ok && same_subsets(current, &desired.subsets) {
        return None;
    }
    Some(apply_desired(current.clone(), desired))
}

/// The current labels are the desired ones, or, when adopting, the desired ones but roster's ownership label.
fn labels_match(current: Option<&BTreeMap<String, String>>, desired: &DesiredEndpoints) -> bool {
    let current = current.cloned().unwrap_or_default();
    if current == desired.labels {
        return true;
    }
    let mut unowned = desired.labels.clone();
    unowned.remove(LABEL_ENDPOINTS_MANAGED_BY);
    desired.adopt && current == unowned
}

/// Whether the subsets of `current` repack to `canonical` (`targetRef.resourceVersion` ignored). Both are
/// flattened into sorted (port, readiness, address) entries and compared without copying; only an object with
/// an address listed twice for a port, or with port-less addresses beside ported ones (which the repack
/// merges), is repacked to compare.
pub(super) fn same_subsets(current: &Endpoints, canonical: &[EndpointSubset]) -> bool {
    let subsets = current.subsets.as_deref().unwrap_or_default();
    let mixed = subsets
        .iter()
        .any(|s| s.ports.as_deref().is_none_or(<[_]>::is_empty))
        && subsets
            .iter()
            .any(|s| s.ports.as_deref().is_some_and(|p| !p.is_empty()));
    let have = flat_entries(subsets);
    let repeated = have.windows(2).any(|w| w[0].same_address(&w[1]));
    if mixed || repeated {
        return canonical_subsets(current) == canonical;
    }
    have == flat_entries(canonical)
}

/// A port as [`same_subsets`] compares it: name (empty as none), port, protocol (TCP when unset),
/// appProtocol.
type PortView<'a> = (Option<&'a str>, i32, Option<&'a str>, Option<&'a str>);

/// One address under one port (`None`: a port-less subset), as [`same_subsets`] compares them.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FlatEntry<'a> {
    port: Option<PortView<'a>>,
    ip: &'a str,
    uid: Option<&'a str>,
    ready: bool,
    address: AddressView<'a>,
}

/// An address's fields but `targetRef.resourceVersion`.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct AddressView<'a> {
    hostname: Option<&'a str>,
    node_name: Option<&'a str>,
    target: Option<[Option<&'a str>; 6]>,
}

impl FlatEntry<'_> {
    fn same_address(&self, other: &FlatEntry<'_>) -> bool {
        (self.port, self.ip, self.uid) == (other.port, other.ip, other.uid)
    }
}

fn flat_entries(subsets: &[EndpointSubset]) -> Vec<FlatEntry<'_>> {
    let mut entries = Vec::new();
    for subset in subsets {
        let ports: Vec<_> = match subset.ports.as_deref() {
            None | Some([]) => vec![None],
            Some(ports) => ports
                .iter()
                .map(|p| {
                    let protocol = Some(p.protocol.as_deref().unwrap_or("TCP"));
                    Some((
                        p.name.as_deref().filter(|n| !n.is_empty()),
                        p.port,
                        protocol,
                        p.app_protocol.as_deref(),
                    ))
                })
                .collect(),
        };
        let lists = [(&subset.addresses, true), (&subset.not_ready_addresses, false)];
        for (list, ready) in lists {
            for address in list.iter().flatten() {
                for port in &ports {
                    entries.push(flat_entry(*port, address, ready));
                }
            }
        }
    }
    entries.sort_unstable();
    entries
}

fn flat_entry<'a>(port: Option<PortView<'a>>, address: &'a EndpointAddress, ready: bool) -> FlatEntry<'a> {
    let target = address.target_ref.as_ref().map(|t| {
        [
            t.api_version.as_deref(),
            t.field_path.as_deref(),
            t.kind.as_deref(),
            t.name.as_deref(),
            t.namespace.as_deref(),
            t.uid.as_deref(),
        ]
    });
    FlatEntry {
        port,
        ip: &address.ip,
        uid: address.target_ref.as_ref().and_then(|t| t.uid.as_deref()),
        ready,
        address: AddressView {
            hostname: address.hostname.as_deref(),
            node_name: address.node_name.as_deref(),
            target,
        },
    }
}

pub(super) fn canonical_subsets(endpoints: &Endpoints) -> Vec<EndpointSubset> {
    let mut subsets = endpoints.subsets.clone().unwrap_or_default();
    for subset in &mut subsets {
        let addresses = subset
            .addresses
            .iter_mut()
            .chain(subset.not_ready_addresses.iter_mut())
            .flatten();
        for target in addresses.filter_map(|a| a.target_ref.as_mut()) {
            target.resource_version = None;
        }
    }
    repack_subsets(&subsets)
}

fn apply_desired(mut endpoints: Endpoints, desired: &DesiredEndpoints) -> Endpoints {
    let meta = &mut endpoints.metadata;
    meta.labels = Some(desired.labels.clone());
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.remove(ANNOTATION_OVER_CAPACITY);
    annotations.remove(ANNOTATION_TRIGGER_TIME);
    annotations.extend(desired.annotations.clone());
    if let Some(owner) = &desired.owner {
        meta.owner_references = Some(vec![owner.clone()]);
    }
    endpoints.subsets = Some(desired.subsets.clone());
    endpoints
}

/// The Endpoints to write when roster hands a Service back to the built-in Endpoints controller: the
/// object without roster's ownership label, so that it is the built-in controller's from then on (which
/// adopts it in place); `None` when it is not roster's.
pub fn released_endpoints(current: &Endpoints) -> Option<Endpoints> {
    let labels = current.metadata.labels.as_ref()?;
    if labels.get(LABEL_ENDPOINTS_MANAGED_BY).map(String::as_str) != Some(ENDPOINTS_MANAGER) {
        return None;
    }
    let mut released = current.clone();
    if let Some(labels) = released.metadata.labels.as_mut() {
        labels.remove(LABEL_ENDPOINTS_MANAGED_BY);
        labels.remove(LABEL_SKIP_MIRROR);
    }
    Some(released)
}

/// What writing `next` over `current` changes, in a few words, for roster's logs.
pub fn endpoints_change(current: Option<&Endpoints>, next: &Endpoints) -> String {
    let counts = |ep: &Endpoints| {
        let subsets = ep.subsets.iter().flatten();
        subsets.fold((0, 0), |(r, n), s| {
            let len = |a: &Option<Vec<EndpointAddress>>| a.as_ref().map_or(0, Vec::len);
            (r + len(&s.addresses), n + len(&s.not_ready_addresses))
        })
    };
    let (ready, not_ready) = counts(next);
    let Some(current) = current else {
        return format!("create: {ready} ready, {not_ready} not ready");
    };
    let (was_ready, was_not_ready) = counts(current);
    if (was_ready, was_not_ready) != (ready, not_ready) {
        format!("ready {was_ready}→{ready}, not ready {was_not_ready}→{not_ready}")
    } else if !same_subsets(current, next.subsets.as_deref().unwrap_or_default()) {
        "addresses or ports".to_owned()
    } else {
        "labels, annotations or owner".to_owned()
    }
}
