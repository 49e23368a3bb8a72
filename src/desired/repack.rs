//! Canonical form of Endpoints subsets.
//!
//! Any list of subsets is rewritten into one canonical list: each address `(IP, targetRef UID)` appears once
//! per port (not ready wins over ready), ports sharing the same address set are grouped into one subset, and
//! addresses (by IP bytes, then UID), ports and subsets are sorted. Equal endpoint sets therefore give equal
//! subsets, whatever order and grouping they came in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset};

use crate::cache::{ip_sort_key, parse_ip};

/// Orders and identifies ports: `(name, port, protocol, appProtocol)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PortKey(String, i32, String, Option<String>);

impl PortKey {
    pub(crate) fn of(port: &EndpointPort) -> Self {
        PortKey(
            port.name.clone().unwrap_or_default(),
            port.port,
            port.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
            port.app_protocol.clone(),
        )
    }

    fn to_port(&self) -> EndpointPort {
        EndpointPort {
            name: Some(self.0.clone()).filter(|n| !n.is_empty()),
            port: self.1,
            protocol: Some(self.2.clone()),
            app_protocol: self.3.clone(),
        }
    }
}

/// Identifies and orders addresses: IP bytes (unparseable IPs last), IP text, targetRef UID.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AddressKey([u8; 16], String, String);

impl AddressKey {
    pub(crate) fn of(address: &EndpointAddress) -> Self {
        let bytes = parse_ip(&address.ip).map_or([0xff; 16], |ip| ip_sort_key(&ip));
        let uid = address
            .target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default();
        AddressKey(bytes, address.ip.clone(), uid)
    }
}

/// Addresses of one port: identity → (address, ready).
type AddressSet = BTreeMap<AddressKey, (EndpointAddress, bool)>;

/// What ports share to be grouped into one subset: the same addresses with the same readiness.
type Signature = Vec<(AddressKey, bool)>;

/// Rewrites subsets into canonical form (see the module doc). A subset without ports keeps its addresses in
/// a port-less subset, unless some port has exactly the same addresses.
pub fn repack_subsets(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    // `None` stands for "no port" so port-less addresses survive.
    let mut by_port: BTreeMap<Option<PortKey>, AddressSet> = BTreeMap::new();
    for subset in subsets {
        let ports: Vec<Option<PortKey>> = match subset.ports.as_deref() {
            None | Some([]) => vec![None],
            Some(ports) => ports.iter().map(|p| Some(PortKey::of(p))).collect(),
        };
        for port in ports {
            let set = by_port.entry(port).or_default();
            add_addresses(set, subset.addresses.iter().flatten(), true);
            add_addresses(set, subset.not_ready_addresses.iter().flatten(), false);
        }
    }
    group_ports(by_port)
}

fn add_addresses<'a>(
    set: &mut AddressSet,
    addresses: impl Iterator<Item = &'a EndpointAddress>,
    ready: bool,
) {
    for address in addresses {
        set.entry(AddressKey::of(address))
            .and_modify(|(_, was_ready)| *was_ready &= ready)
            .or_insert_with(|| (address.clone(), ready));
    }
}

fn group_ports(by_port: BTreeMap<Option<PortKey>, AddressSet>) -> Vec<EndpointSubset> {
    let mut groups: BTreeMap<Signature, (Vec<PortKey>, AddressSet)> = BTreeMap::new();
    for (port, set) in by_port {
        if set.is_empty() {
            continue;
        }
        let signature = set
            .iter()
            .map(|(key, (_, ready))| (key.clone(), *ready))
            .collect();
        let group = groups.entry(signature).or_insert_with(|| (Vec::new(), set));
        group.0.extend(port);
    }
    let mut subsets: Vec<(Vec<PortKey>, EndpointSubset)> = groups
        .into_values()
        .map(|(ports, set)| (ports.clone(), build_subset(ports, set)))
        .collect();
    subsets.sort_by(|a, b| a.0.cmp(&b.0));
    subsets.into_iter().map(|(_, subset)| subset).collect()
}

fn build_subset(mut ports: Vec<PortKey>, set: AddressSet) -> EndpointSubset {
    ports.sort();
    let (ready, not_ready): (Vec<_>, Vec<_>) = set.into_values().partition(|(_, ready)| *ready);
    let non_empty = |v: Vec<EndpointAddress>| Some(v).filter(|v| !v.is_empty());
    EndpointSubset {
        addresses: non_empty(ready.into_iter().map(|(a, _)| a).collect()),
        not_ready_addresses: non_empty(not_ready.into_iter().map(|(a, _)| a).collect()),
        ports: Some(ports.iter().map(PortKey::to_port).collect()).filter(|p: &Vec<_>| !p.is_empty()),
    }
}

/// Total addresses (ready and not ready) in the subsets.
pub fn count_addresses(subsets: &[EndpointSubset]) -> usize {
    subsets
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len) + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;

    fn addr(ip: &str, uid: &str) -> EndpointAddress {
        EndpointAddress {
            ip: ip.to_owned(),
            target_ref: Some(ObjectReference {
                uid: Some(uid.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn tcp(name: &str, port: i32) -> EndpointPort {
        EndpointPort {
            name: Some(name.to_owned()),
            port,
            protocol: Some("TCP".to_owned()),
            app_protocol: None,
        }
    }

    fn subset(ready: &[(&str, &str)], not_ready: &[(&str, &str)], ports: &[EndpointPort]) -> EndpointSubset {
        let list = |a: &[(&str, &str)]| {
            Some(a.iter().map(|(ip, uid)| addr(ip, uid)).collect::<Vec<_>>()).filter(|v| !v.is_empty())
        };
        EndpointSubset {
            addresses: list(ready),
            not_ready_addresses: list(not_ready),
            ports: Some(ports.to_vec()).filter(|p| !p.is_empty()),
        }
    }

    /// `(ports, ready IPs, not-ready IPs)` of each subset.
    fn shape(subsets: &[EndpointSubset]) -> Vec<(Vec<i32>, Vec<String>, Vec<String>)> {
        let ips = |a: &Option<Vec<EndpointAddress>>| a.iter().flatten().map(|a| a.ip.clone()).collect();
        subsets
            .iter()
            .map(|s| {
                (
                    s.ports.iter().flatten().map(|p| p.port).collect(),
                    ips(&s.addresses),
                    ips(&s.not_ready_addresses),
                )
            })
            .collect()
    }

    #[test]
    fn repack_groups_ports_with_identical_addresses() {
        let input = [
            subset(&[("10.0.0.2", "b")], &[], &[tcp("http", 80)]),
            subset(&[("10.0.0.10", "c")], &[], &[tcp("http", 80), tcp("https", 443)]),
            subset(&[("10.0.0.2", "b")], &[], &[tcp("https", 443)]),
            subset(&[("10.0.0.9", "d")], &[], &[tcp("admin", 9000)]),
        ];
        let want = vec![
            (vec![9000], vec!["10.0.0.9".to_owned()], vec![]),
            (
                vec![80, 443],
                vec!["10.0.0.2".to_owned(), "10.0.0.10".to_owned()],
                vec![],
            ),
        ];
        assert_eq!(shape(&repack_subsets(&input)), want);
    }

    #[test]
    fn repack_dedupes_and_not_ready_trumps_ready() {
        let input = [
            subset(&[("10.0.0.1", "a"), ("10.0.0.1", "a")], &[], &[tcp("http", 80)]),
            subset(&[], &[("10.0.0.1", "a")], &[tcp("http", 80)]),
            // Same IP, different pod: a different address.
            subset(&[("10.0.0.1", "z")], &[], &[tcp("http", 80)]),
        ];
        let want = vec![(vec![80], vec!["10.0.0.1".to_owned()], vec!["10.0.0.1".to_owned()])];
        let got = repack_subsets(&input);
        assert_eq!(shape(&got), want);
        assert_eq!(
            got[0].addresses.as_ref().unwrap()[0]
                .target_ref
                .as_ref()
                .unwrap()
                .uid
                .as_deref(),
            Some("z")
        );
    }

    #[test]
    fn repack_is_order_independent_and_idempotent() {
        let a = [
            subset(
                &[("10.0.0.3", "c"), ("10.0.0.1", "a")],
                &[("fd00::1", "x")],
                &[tcp("b", 2), tcp("a", 1)],
            ),
            subset(&[("10.0.0.2", "b")], &[], &[tcp("c", 3)]),
        ];
        let b = [
            subset(&[("10.0.0.2", "b")], &[], &[tcp("c", 3)]),
            subset(&[("10.0.0.1", "a")], &[("fd00::1", "x")], &[tcp("a", 1)]),
            subset(
                &[("10.0.0.3", "c"), ("10.0.0.1", "a")],
                &[("fd00::1", "x")],
                &[tcp("b", 2)],
            ),
            subset(&[("10.0.0.3", "c")], &[], &[tcp("a", 1)]),
        ];
        let repacked = repack_subsets(&a);
        assert_eq!(repacked, repack_subsets(&b));
        assert_eq!(repack_subsets(&repacked), repacked);
        // IPs sort by bytes, not text: 10.0.0.3 < fd00::1 and 10.0.0.10 > 10.0.0.9.
        assert_eq!(shape(&repacked)[0].1, ["10.0.0.1", "10.0.0.3"]);
    }

    #[test]
    fn repack_keeps_portless_subset() {
        let input = [subset(&[("10.0.0.1", "a")], &[("10.0.0.2", "b")], &[])];
        let want = vec![(vec![], vec!["10.0.0.1".to_owned()], vec!["10.0.0.2".to_owned()])];
        assert_eq!(shape(&repack_subsets(&input)), want);
        assert!(repack_subsets(&input)[0].ports.is_none());
        assert!(repack_subsets(&[subset(&[], &[], &[tcp("http", 80)])]).is_empty());
    }
}
