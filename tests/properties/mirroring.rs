//! Slices mirrored from hand-made Endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use proptest::sample::select;
use roster::cache::{Interner, SelectorSource, ServiceRecord};
use roster::desired::{self, LABEL_MANAGED_BY, MIRRORING_CONTROLLER_NAME};
use serde_json::{Value, json};

use crate::generators::*;
use crate::model::*;

/// Address texts of hand-made Endpoints: valid IPv4 and IPv6, and invalid ones that must be skipped.
const MIRROR_IPS: [&str; 8] = [
    "192.0.2.1",
    "192.0.2.2",
    "198.51.100.7",
    "2001:db8::1",
    "2001:db8::2",
    "not-an-ip",
    "10.0.0",
    "2001:db8::zz",
];

type MirrorSubset = (Vec<(usize, bool)>, Vec<(&'static str, i32, Option<&'static str>)>);

fn mirror_subsets() -> impl Strategy<Value = Vec<MirrorSubset>> {
    let address = (0..MIRROR_IPS.len(), any::<bool>());
    let port = (select(&SVC_PORT_NAMES[..]), 1..=5i32, select(&PROTOCOLS[..3]));
    proptest::collection::vec(
        (
            proptest::collection::vec(address, 1..6),
            proptest::collection::vec(port, 1..3).prop_map(|mut ports| {
                // Port names are unique within a subset.
                ports.sort_by_key(|p| p.0);
                ports.dedup_by_key(|p| p.0);
                ports
            }),
        ),
        0..4,
    )
}

fn hand_made_endpoints(subsets: &[MirrorSubset]) -> Endpoints {
    let subsets: Vec<Value> = subsets
        .iter()
        .map(|(addresses, ports)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) = addresses.iter().partition(|(_, r)| *r);
            let list = |v: Vec<&(usize, bool)>| -> Vec<Value> {
                v.iter().map(|(i, _)| json!({ "ip": MIRROR_IPS[*i] })).collect()
            };
            let ports: Vec<Value> = ports
                .iter()
                .map(|(name, port, protocol)| {
                    let mut p = json!({"name": name, "port": port});
                    if let Some(protocol) = protocol {
                        p["protocol"] = json!(protocol);
                    }
                    p
                })
                .collect();
            json!({"addresses": list(ready), "notReadyAddresses": list(not_ready), "ports": ports})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": NS, "name": SVC, "uid": "ep-uid", "labels": {"team": "a"}},
        "subsets": subsets
    }))
    .unwrap()
}

/// (ip, port, ready) of every valid address; an address not ready anywhere for a port is not ready.
fn model_mirrored(subsets: &[MirrorSubset]) -> BTreeSet<(String, PortTuple, bool)> {
    let mut by_key: BTreeMap<(String, PortTuple), bool> = BTreeMap::new();
    for (addresses, ports) in subsets {
        for (i, ready) in addresses {
            let Ok(ip) = MIRROR_IPS[*i].parse::<IpAddr>() else {
                continue;
            };
            for (name, port, protocol) in ports {
                let port = (
                    (*name).to_owned(),
                    *port,
                    protocol.unwrap_or("TCP").to_owned(),
                    None,
                );
                *by_key.entry((ip.to_string(), port)).or_insert(true) &= *ready;
            }
        }
    }
    by_key
        .into_iter()
        .map(|((ip, port), ready)| (ip, port, ready))
        .collect()
}

fn mirrored_tuples(slices: &[EndpointSlice]) -> Vec<(String, PortTuple, bool)> {
    let mut out = Vec::new();
    for slice in slices {
        for port in slice_port_tuples(slice) {
            for e in &slice.endpoints {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
                for a in &e.addresses {
                    out.push((a.clone(), port.clone(), ready));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(config(256))]

    /// Mirrored slices of hand-made Endpoints: valid, exactly the valid addresses (each invalid one reported),
    /// one slice per (address type, ports), deterministic, and no write on the next pass.
    #[test]
    fn mirrored_slices_are_valid_exact_and_idempotent(subsets in mirror_subsets()) {
        let spec = one_port_service();
        let mut svc = service_object(&spec);
        svc.spec.as_mut().unwrap().selector = None;
        let record = ServiceRecord::from_service(&svc, SelectorSource::Spec, &mut Interner::new());
        let ep = hand_made_endpoints(&subsets);
        let plan = desired::desired_mirrored_slices(&record, &ep, &[]);
        let got = mirrored_tuples(&plan.create);
        prop_assert_eq!(as_set(&got).len(), got.len(), "an address mirrored twice");
        prop_assert_eq!(as_set(&got), model_mirrored(&subsets));
        let invalid: BTreeSet<&str> = subsets
            .iter()
            .flat_map(|(a, _)| a.iter().map(|(i, _)| MIRROR_IPS[*i]))
            .filter(|ip| ip.parse::<IpAddr>().is_err())
            .collect();
        let reported: BTreeSet<&str> = plan.skipped.iter().map(|(ip, _)| ip.as_str()).collect();
        prop_assert_eq!(reported, invalid);
        let keys: Vec<_> = plan.create.iter().map(|s| (s.address_type.clone(), slice_port_tuples(s))).collect();
        prop_assert_eq!(as_set(&keys).len(), keys.len(), "two slices for one (address type, ports)");
        for slice in &plan.create {
            let labels = slice.metadata.labels.clone().unwrap_or_default();
            prop_assert_eq!(labels.get(LABEL_MANAGED_BY).map(String::as_str), Some(MIRRORING_CONTROLLER_NAME));
            prop_assert_eq!(labels.get("team").map(String::as_str), Some("a"));
            for e in &slice.endpoints {
                for a in &e.addresses {
                    prop_assert!(usable_ip(a));
                    prop_assert_eq!(Family::of(&a.parse().unwrap()).address_type(), slice.address_type.as_str());
                }
            }
        }
        prop_assert_eq!(&desired::desired_mirrored_slices(&record, &ep, &[]), &plan);
        let mut serial = 0;
        let existing = apply_plan(&[], &plan, &mut serial)?;
        let replan = desired::desired_mirrored_slices(&record, &ep, &existing);
        prop_assert!(replan.is_empty(), "rewrites its own mirror: {replan:?}");
    }
}
