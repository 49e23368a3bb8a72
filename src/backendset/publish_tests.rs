//! BackendSet backends published through the one desired layer (the Endpoints builder and slice packer pods
//! use), with the inputs reconcile gives a BackendSet-fed Service: owned by the BackendSet, skip-mirror set.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointHints, EndpointSlice, ForZone};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;

use super::view::{AddressState, BackendSetRef, BackendView};
use crate::cache::{Interner, NodeLookup, SelectorSource, ServiceRecord};
use crate::desired::{
    DesiredEndpoints, EndpointsInput, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, SLICE_CONTROLLER_NAME,
    SliceInput, SlicePlan, TopologyInput, desired_endpoints, desired_slices, endpoints_need_write,
};

fn desired_backend_endpoints(svc: &ServiceRecord, view: &BackendView) -> DesiredEndpoints {
    let input = EndpointsInput {
        skip_mirror: true,
        owner: Some(view.owner_reference()),
        ..EndpointsInput::default()
    };
    let sources: Vec<&AddressState> = view.addresses.iter().collect();
    desired_endpoints(svc, &sources, input)
}

fn desired_backend_slices(
    svc: &ServiceRecord,
    view: &BackendView,
    existing: &[EndpointSlice],
    max_per_slice: usize,
) -> SlicePlan {
    let input = SliceInput {
        max_per_slice,
        trigger_time: None,
        owner: view.owner_reference(),
        topology: TopologyInput {
            hints_supported: true,
            ..TopologyInput::default()
        },
    };
    let sources: Vec<&AddressState> = view.addresses.iter().collect();
    desired_slices(svc, &sources, &|_| NodeLookup::Missing, existing, &input)
}

fn service(spec: serde_json::Value) -> ServiceRecord {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "shop", "uid": "svc-uid", "labels": {"team": "data"}},
        "spec": spec
    }))
    .unwrap();
    ServiceRecord::from_service(&svc, SelectorSource::Spec, &mut Interner::new())
}

fn pg_service() -> ServiceRecord {
    service(json!({
        "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
        "ports": [
            {"name": "pg", "port": 5432, "targetPort": "pg"},
            {"name": "metrics", "port": 9187, "targetPort": 9187}
        ]
    }))
}

fn address(ip: &str, ready: bool) -> AddressState {
    AddressState {
        ip: ip.parse().unwrap(),
        hostname: None,
        node_name: None,
        zone: None,
        ports: BTreeMap::from([("pg".to_owned(), 6432)]),
        ready,
        stale: false,
        last_probe_time: None,
        last_transition_time: None,
        message: None,
    }
}

fn view(addresses: Vec<AddressState>) -> BackendView {
    BackendView {
        backendset: BackendSetRef {
            name: "db-backends".into(),
            namespace: "shop".into(),
            uid: "bs-uid".into(),
            service: "db".into(),
        },
        addresses,
        ..BackendView::default()
    }
}

/// (ip, ready) of every address of the Endpoints, and each port as (name, port, its IPs).
type Summary = (Vec<(String, bool)>, Vec<(String, i32, Vec<String>)>);

fn endpoints_summary(desired: &DesiredEndpoints) -> Summary {
    let mut ips = Vec::new();
    let mut ports = Vec::new();
    for subset in &desired.subsets {
        let mut of_subset: Vec<(String, bool)> = Vec::new();
        of_subset.extend(subset.addresses.iter().flatten().map(|a| (a.ip.clone(), true)));
        of_subset.extend(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a.ip.clone(), false)),
        );
        of_subset.sort();
        for port in subset.ports.iter().flatten() {
            let subset_ips = of_subset.iter().map(|(ip, _)| ip.clone()).collect();
            ports.push((port.name.clone().unwrap_or_default(), port.port, subset_ips));
        }
        ips.extend(of_subset);
    }
    ips.sort();
    ips.dedup();
    ports.sort();
    (ips, ports)
}

#[test]
fn endpoints_split_by_readiness_with_ports_resolved_per_backend() {
    let mut no_pg = address("198.51.100.30", true);
    no_pg.ports.clear();
    let mut on_node = address("198.51.100.10", true);
    on_node.node_name = Some("node-1".into());
    let desired = desired_backend_endpoints(
        &pg_service(),
        &view(vec![on_node, address("198.51.100.20", false), no_pg]),
    );
    let (ips, ports) = endpoints_summary(&desired);
    assert_eq!(
        ips,
        [
            ("198.51.100.10".into(), true),
            ("198.51.100.20".into(), false),
            ("198.51.100.30".into(), true)
        ]
    );
    let ip = |s: &str| s.to_owned();
    assert_eq!(
        ports,
        [
            (
                "metrics".to_owned(),
                9187,
                vec![ip("198.51.100.10"), ip("198.51.100.20"), ip("198.51.100.30")]
            ),
            (
                "pg".to_owned(),
                6432,
                vec![ip("198.51.100.10"), ip("198.51.100.20")]
            ),
        ],
        "a backend without the named port gets only the numeric one"
    );
    let all: Vec<&EndpointAddress> = desired
        .subsets
        .iter()
        .flat_map(|s| {
            s.addresses
                .iter()
                .flatten()
                .chain(s.not_ready_addresses.iter().flatten())
        })
        .collect();
    assert!(all.iter().all(|a| a.hostname.is_none() && a.target_ref.is_none()));
    assert!(all.iter().any(|a| a.node_name.as_deref() == Some("node-1")));
    assert_eq!(
        desired.labels,
        BTreeMap::from([
            ("team".to_owned(), "data".to_owned()),
            ("endpoints.roster.dev/managed-by".to_owned(), "roster".to_owned()),
            (
                "endpointslice.kubernetes.io/skip-mirror".to_owned(),
                "true".to_owned()
            ),
        ])
    );
    assert_eq!(
        (
            desired.namespace.as_str(),
            desired.name.as_str(),
            desired.truncated
        ),
        ("shop", "db", false)
    );
}

#[test]
fn a_backend_without_any_port_is_left_out() {
    let svc = service(
        json!({"clusterIP": "10.96.0.10", "ports": [{"name": "pg", "port": 5432, "targetPort": "pg"}]}),
    );
    let mut portless = address("198.51.100.20", true);
    portless.ports.clear();
    let desired = desired_backend_endpoints(&svc, &view(vec![address("198.51.100.10", true), portless]));
    assert_eq!(endpoints_summary(&desired).0, [("198.51.100.10".into(), true)]);
}

#[test]
fn endpoints_carry_the_primary_family_unless_headless() {
    let addresses = vec![address("198.51.100.10", true), address("2001:db8::10", true)];
    let cases = [
        (
            json!({"clusterIP": "10.96.0.10", "ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 80}]}),
            vec!["198.51.100.10"],
        ),
        (
            json!({"clusterIP": "fd00::10", "ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
            vec!["2001:db8::10"],
        ),
        (
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            vec!["198.51.100.10", "2001:db8::10"],
        ),
    ];
    for (spec, want) in cases {
        let desired = desired_backend_endpoints(&service(spec.clone()), &view(addresses.clone()));
        let ips: Vec<String> = endpoints_summary(&desired)
            .0
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        assert_eq!(ips, want, "{spec}");
    }
}

#[test]
fn publish_not_ready_addresses_publishes_everything_ready() {
    let svc = service(
        json!({"clusterIP": "10.96.0.10", "publishNotReadyAddresses": true, "ports": [{"port": 5432}]}),
    );
    let desired = desired_backend_endpoints(&svc, &view(vec![address("198.51.100.10", false)]));
    assert_eq!(endpoints_summary(&desired).0, [("198.51.100.10".into(), true)]);
    let plan = desired_backend_slices(&svc, &view(vec![address("198.51.100.10", false)]), &[], 100);
    let conditions = plan.create[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!((conditions.ready, conditions.serving), (Some(true), Some(false)));
}

#[test]
fn endpoints_need_write_only_on_change() {
    let svc = pg_service();
    let up = view(vec![address("198.51.100.10", true)]);
    let desired = desired_backend_endpoints(&svc, &up);
    let mut written: Endpoints = endpoints_need_write(None, &desired).expect("create");
    written.metadata.resource_version = Some("7".into());
    assert_eq!(
        endpoints_need_write(Some(&written), &desired),
        None,
        "same backends: no write"
    );
    let down = desired_backend_endpoints(&svc, &view(vec![address("198.51.100.10", false)]));
    let update = endpoints_need_write(Some(&written), &down).expect("readiness changed");
    assert_eq!(update.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(
        update.metadata.owner_references,
        Some(vec![up.owner_reference()]),
        "owned by the BackendSet"
    );
}

#[test]
fn owner_reference_names_the_backendset() {
    let owner = view(vec![]).owner_reference();
    assert_eq!(
        owner,
        OwnerReference {
            api_version: "roster.dev/v1alpha1".into(),
            kind: "BackendSet".into(),
            name: "db-backends".into(),
            uid: "bs-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    );
}

/// Gives created slices a name and resourceVersion, as the API server would.
fn persist(plan: &SlicePlan, existing: &[EndpointSlice]) -> Vec<EndpointSlice> {
    let deleted: Vec<_> = plan.delete.iter().map(|s| s.metadata.name.clone()).collect();
    let updated: BTreeMap<_, _> = plan
        .update
        .iter()
        .map(|s| (s.metadata.name.clone(), s.clone()))
        .collect();
    let mut out: Vec<EndpointSlice> = existing
        .iter()
        .filter(|s| !deleted.contains(&s.metadata.name))
        .map(|s| {
            updated
                .get(&s.metadata.name)
                .cloned()
                .unwrap_or_else(|| s.clone())
        })
        .collect();
    for (i, slice) in plan.create.iter().enumerate() {
        let mut slice = slice.clone();
        slice.metadata.name = Some(format!("db-{}{i}", existing.len()));
        slice.metadata.generate_name = None;
        slice.metadata.resource_version = Some("1".into());
        out.push(slice);
    }
    out
}

fn slice_ips(slices: &[EndpointSlice]) -> Vec<(String, bool)> {
    let mut ips: Vec<(String, bool)> = slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .map(|e| {
            (
                e.addresses[0].clone(),
                e.conditions.as_ref().unwrap().ready == Some(true),
            )
        })
        .collect();
    ips.sort();
    ips
}

#[test]
fn slices_are_owned_by_the_backendset_and_carry_the_probe_conditions() {
    let mut zoned = address("198.51.100.10", true);
    zoned.zone = Some("zone-a".into());
    zoned.node_name = Some("node-1".into());
    let plan = desired_backend_slices(
        &pg_service(),
        &view(vec![zoned, address("198.51.100.20", false)]),
        &[],
        100,
    );
    assert_eq!(
        (plan.create.len(), plan.update.len(), plan.delete.len()),
        (1, 0, 0)
    );
    let slice = &plan.create[0];
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.metadata.generate_name.as_deref(), Some("db-"));
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_SERVICE_NAME], "db");
    assert_eq!(labels[LABEL_MANAGED_BY], SLICE_CONTROLLER_NAME);
    assert_eq!(labels["team"], "data");
    let owners = slice.metadata.owner_references.clone().unwrap();
    assert_eq!(
        (
            owners[0].kind.as_str(),
            owners[0].uid.as_str(),
            owners[0].controller
        ),
        ("BackendSet", "bs-uid", Some(true))
    );
    let first = &slice.endpoints[0];
    assert_eq!(first.addresses, ["198.51.100.10"]);
    assert_eq!(
        (
            first.zone.as_deref(),
            first.node_name.as_deref(),
            first.hostname.as_deref()
        ),
        (Some("zone-a"), Some("node-1"), None)
    );
    assert_eq!(
        first.conditions,
        Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false)
        })
    );
    assert_eq!(
        slice.endpoints[1].conditions,
        Some(EndpointConditions {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(false)
        })
    );
    let ports: Vec<(Option<String>, Option<i32>)> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.port))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("metrics".into()), Some(9187)),
            (Some("pg".into()), Some(6432))
        ]
    );
}

#[test]
fn backends_are_hinted_for_the_zone_they_name() {
    let mut zoned = address("198.51.100.10", true);
    zoned.zone = Some("zone-a".into());
    let mut svc = pg_service();
    svc.traffic_distribution = Some("PreferSameNode".into());
    let plan = desired_backend_slices(&svc, &view(vec![zoned, address("198.51.100.20", true)]), &[], 100);
    let hints: Vec<Option<EndpointHints>> =
        plan.create[0].endpoints.iter().map(|e| e.hints.clone()).collect();
    let zone_a = EndpointHints {
        for_zones: Some(vec![ForZone {
            name: "zone-a".into(),
        }]),
        for_nodes: None,
    };
    assert_eq!(hints, [Some(zone_a), None], "its own zone; no hint without one");
}

#[test]
fn matching_slices_are_not_written_and_changes_update_in_place() {
    let svc = pg_service();
    let up = view(vec![
        address("198.51.100.10", true),
        address("198.51.100.20", true),
    ]);
    let first = desired_backend_slices(&svc, &up, &[], 100);
    let existing = persist(&first, &[]);
    let again = desired_backend_slices(&svc, &up, &existing, 100);
    assert!(again.is_empty(), "{again:?}");

    let mut shuffled = existing.clone();
    shuffled[0].endpoints.reverse();
    assert!(
        desired_backend_slices(&svc, &up, &shuffled, 100).is_empty(),
        "order does not matter"
    );

    let one_down = view(vec![
        address("198.51.100.10", true),
        address("198.51.100.20", false),
    ]);
    let plan = desired_backend_slices(&svc, &one_down, &existing, 100);
    assert_eq!(
        (plan.create.len(), plan.update.len(), plan.delete.len()),
        (0, 1, 0)
    );
    assert_eq!(plan.update[0].metadata.name, existing[0].metadata.name);
    assert_eq!(plan.update[0].metadata.resource_version.as_deref(), Some("1"));
    assert_eq!(
        slice_ips(&plan.update),
        [("198.51.100.10".into(), true), ("198.51.100.20".into(), false)]
    );
}

#[test]
fn slices_hold_at_most_max_endpoints_and_endpoints_stay_put() {
    let svc = pg_service();
    let ips: Vec<String> = (10..15).map(|i| format!("198.51.100.{i}")).collect();
    let five = view(ips.iter().map(|ip| address(ip, true)).collect());
    let plan = desired_backend_slices(&svc, &five, &[], 2);
    assert_eq!(
        plan.create.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(),
        [2, 2, 1]
    );
    assert_eq!(plan.stats.slices_desired, 3);
    let existing = persist(&plan, &[]);

    // Removing the first address rewrites only the slice that held it; the new one fills its room.
    let mut shifted: Vec<AddressState> = ips[1..].iter().map(|ip| address(ip, true)).collect();
    shifted.push(address("198.51.100.99", true));
    let plan = desired_backend_slices(&svc, &view(shifted), &existing, 2);
    assert_eq!(
        (plan.create.len(), plan.update.len(), plan.delete.len()),
        (0, 1, 0),
        "{plan:?}"
    );
    assert_eq!(plan.update[0].metadata.name, existing[0].metadata.name);
    assert_eq!(
        slice_ips(&plan.update),
        [("198.51.100.11".into(), true), ("198.51.100.99".into(), true)]
    );

    // A lower limit splits the existing slices.
    let plan = desired_backend_slices(&svc, &five, &existing, 1);
    assert!(
        plan.create
            .iter()
            .chain(&plan.update)
            .all(|s| s.endpoints.len() == 1)
    );
    assert_eq!(
        plan.create.len() + plan.update.len() + existing.len() - plan.update.len(),
        5
    );
}

#[test]
fn extra_and_foreign_slices_are_reused_or_deleted() {
    let svc = pg_service();
    let two = view(vec![
        address("198.51.100.10", true),
        address("198.51.100.20", true),
    ]);
    let existing = persist(&desired_backend_slices(&svc, &two, &[], 1), &[]);
    assert_eq!(existing.len(), 2);

    let one = view(vec![address("198.51.100.10", true)]);
    let plan = desired_backend_slices(&svc, &one, &existing, 1);
    assert_eq!(
        (plan.create.len(), plan.update.len(), plan.delete.len()),
        (0, 0, 1)
    );
    assert_eq!(slice_ips(&plan.delete), [("198.51.100.20".into(), true)]);

    // Different ports: the old slice is rewritten in place rather than deleted and created.
    let mut other_port = address("198.51.100.10", true);
    other_port.ports = BTreeMap::from([("pg".to_owned(), 7432)]);
    let plan = desired_backend_slices(&svc, &view(vec![other_port]), &existing[..1], 1);
    assert_eq!(
        (plan.create.len(), plan.update.len(), plan.delete.len()),
        (0, 1, 0)
    );
    assert_eq!(plan.update[0].metadata.name, existing[0].metadata.name);

    // Another owner (a BackendSet that was re-created): its slice is replaced by one of the new owner,
    // created before the old one is deleted.
    let mut foreign = existing[..1].to_vec();
    foreign[0].metadata.owner_references.as_mut().unwrap()[0].uid = "old-uid".into();
    let plan = desired_backend_slices(&svc, &one, &foreign, 1);
    assert_eq!(
        (plan.create.len(), plan.update.len(), plan.delete.len()),
        (1, 0, 1)
    );
    assert_eq!(
        plan.create[0].metadata.owner_references.as_ref().unwrap()[0].uid,
        "bs-uid"
    );
    assert_eq!(plan.delete[0].metadata.name, foreign[0].metadata.name);

    // No addresses: one empty placeholder slice stays, as for a Service whose pods are all gone.
    let plan = desired_backend_slices(&svc, &view(vec![]), &existing, 1);
    assert_eq!(
        (plan.create.len(), plan.update.len(), plan.delete.len()),
        (0, 1, 1),
        "no addresses: the placeholder"
    );
    assert!(plan.update[0].endpoints.is_empty());
}

#[test]
fn one_slice_set_per_family_present() {
    let headless = service(json!({"clusterIP": "None", "ports": [{"port": 5432}]}));
    let both = view(vec![
        address("198.51.100.10", true),
        address("2001:db8::10", false),
    ]);
    let plan = desired_backend_slices(&headless, &both, &[], 100);
    let types: Vec<&str> = plan.create.iter().map(|s| s.address_type.as_str()).collect();
    assert_eq!(types, ["IPv4", "IPv6"]);
    let v4_only = desired_backend_slices(&pg_service(), &both, &[], 100);
    assert_eq!(v4_only.create.len(), 1);
    assert_eq!(slice_ips(&v4_only.create), [("198.51.100.10".into(), true)]);
}

#[test]
fn backend_endpoints_carry_the_owner_reference() {
    let svc = pg_service();
    let up = view(vec![address("198.51.100.10", true)]);
    let desired = desired_backend_endpoints(&svc, &up);
    let created = endpoints_need_write(None, &desired).expect("create");
    assert_eq!(
        created.metadata.owner_references,
        Some(vec![up.owner_reference()])
    );
    assert_eq!(
        endpoints_need_write(Some(&created), &desired),
        None,
        "nothing to do"
    );

    let mut orphan = created.clone();
    orphan.metadata.owner_references = None;
    let fixed = endpoints_need_write(Some(&orphan), &desired).expect("owner added");
    assert_eq!(fixed.metadata.owner_references, created.metadata.owner_references);
    assert_eq!(fixed.subsets, created.subsets);

    let recreated = BackendView {
        backendset: BackendSetRef {
            uid: "new-uid".into(),
            ..up.backendset.clone()
        },
        ..up.clone()
    };
    let moved = endpoints_need_write(Some(&created), &desired_backend_endpoints(&svc, &recreated))
        .expect("new owner");
    assert_eq!(moved.metadata.owner_references.unwrap()[0].uid, "new-uid");
}
