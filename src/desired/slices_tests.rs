//! Table tests of EndpointSlice planning.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::EndpointPort as CorePort;
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};

use super::fixtures::{PodFixture, ServiceFixture, port, ts};
use super::labels::*;
use super::*;
use crate::cache::{IpFamily, NodeLookup, PodRecord, Protocol, ServiceRecord, TargetPort};

fn nodes(name: &str) -> NodeLookup {
    match name {
        "node-a" => NodeLookup::Found {
            zone: Some("zone-a".into()),
        },
        "node-b" => NodeLookup::Found { zone: None },
        _ => NodeLookup::Missing,
    }
}

pub(super) fn ip_of(i: usize) -> String {
    format!("10.1.{}.{}", i / 256, i % 256)
}

fn pods(range: std::ops::Range<usize>) -> Vec<Arc<PodRecord>> {
    range
        .map(|i| PodFixture::new(&format!("p{i:04}")).ip(&ip_of(i)).build())
        .collect()
}

fn plan(svc: &ServiceRecord, pods: &[Arc<PodRecord>], existing: &[EndpointSlice], max: usize) -> SlicePlan {
    desired_slices(svc, pods, &nodes, existing, &input(svc, max, None))
}

fn input(svc: &ServiceRecord, max: usize, trigger_time: Option<jiff::Timestamp>) -> SliceInput {
    SliceInput::owned_by_service(svc, max, trigger_time)
}

/// Gives planned slices the name and resourceVersion the API server would.
pub(super) fn persisted(plan: &SlicePlan) -> Vec<EndpointSlice> {
    let created = plan.create.iter().enumerate().map(|(i, s)| {
        let mut s = s.clone();
        s.metadata.name = Some(format!("{}{i}", s.metadata.generate_name.clone().unwrap()));
        s.metadata.generate_name = None;
        s
    });
    let mut all: Vec<EndpointSlice> = created.chain(plan.update.iter().cloned()).collect();
    for s in &mut all {
        s.metadata.resource_version = Some("5".to_owned());
    }
    all
}

pub(super) fn ips(slice: &EndpointSlice) -> Vec<String> {
    slice.endpoints.iter().flat_map(|e| e.addresses.clone()).collect()
}

pub(super) fn sizes(slices: &[EndpointSlice]) -> Vec<(Option<String>, usize)> {
    slices
        .iter()
        .map(|s| (s.metadata.name.clone(), s.endpoints.len()))
        .collect()
}

/// An existing roster slice of `svc` named `name` holding pods `range`.
fn existing_slice(svc: &ServiceRecord, name: &str, range: std::ops::Range<usize>) -> EndpointSlice {
    let mut slice = plan(svc, &pods(range), &[], 1000).create.remove(0);
    slice.metadata.name = Some(name.to_owned());
    slice.metadata.generate_name = None;
    slice
}

#[test]
fn slices_for_seed_service() {
    let svc = ServiceFixture::new("hostname-svc-clusterip").build();
    let result = plan(&svc, &pods(0..3), &[], 100);
    assert!(result.update.is_empty() && result.delete.is_empty());
    let [slice] = result.create.as_slice() else {
        panic!("one slice: {result:?}")
    };
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(
        slice.metadata.generate_name.as_deref(),
        Some("hostname-svc-clusterip-")
    );
    assert_eq!(slice.metadata.namespace.as_deref(), Some("shop"));
    let labels = slice.metadata.labels.as_ref().unwrap();
    assert_eq!(
        labels.get(LABEL_SERVICE_NAME).map(String::as_str),
        Some("hostname-svc-clusterip")
    );
    assert_eq!(
        labels.get(LABEL_MANAGED_BY).map(String::as_str),
        Some(SLICE_CONTROLLER_NAME)
    );
    assert_eq!(labels.len(), 2);
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.api_version.as_str(),
            owner.kind.as_str(),
            owner.uid.as_str()
        ),
        ("v1", "Service", "svc-uid")
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("web-port"), Some(80), Some("TCP"))
    );
    assert_eq!(ips(slice), ["10.1.0.0", "10.1.0.1", "10.1.0.2"]);
    let endpoint = &slice.endpoints[0];
    assert_eq!(endpoint.zone.as_deref(), Some("zone-a"));
    assert_eq!(endpoint.node_name.as_deref(), Some("node-a"));
    assert_eq!(
        endpoint.conditions,
        Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false)
        })
    );
    assert_eq!(
        endpoint.target_ref.as_ref().unwrap().name.as_deref(),
        Some("p0000")
    );
    assert!(slice.metadata.annotations.is_none());
    assert_eq!(
        result.stats,
        SliceStats {
            endpoints_desired: 3,
            endpoints_added: 3,
            slices_desired: 1,
            ..SliceStats::default()
        }
    );
}

#[test]
fn unchanged_slices_produce_zero_writes() {
    let svc = ServiceFixture::new("web")
        .families(&[IpFamily::V4, IpFamily::V6])
        .build();
    let mut all = pods(0..250);
    all.push(PodFixture::new("dual").ips(&["10.9.0.1", "fd00::1"]).build());
    let first = plan(&svc, &all, &[], 100);
    assert_eq!(first.create.len(), 4, "3 IPv4 slices and 1 IPv6 slice");
    let existing = persisted(&first);
    let again = desired_slices(
        &svc,
        &all,
        &nodes,
        &existing,
        &input(&svc, 100, Some(ts("2024-09-09T00:00:00Z"))),
    );
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        again.stats.endpoints_added + again.stats.endpoints_removed + again.stats.endpoints_updated,
        0
    );
}

#[test]
fn slices_pack_fullest_first() {
    let svc = ServiceFixture::new("web").build();
    let a = existing_slice(&svc, "web-a", 0..5);
    let b = existing_slice(&svc, "web-b", 10..18);
    let c = existing_slice(&svc, "web-c", 20..29);
    // Pod 0 is gone (a shrinks), pod 10 became not ready (b changes), c is unchanged; three pods are new.
    let mut current: Vec<_> = pods(1..5)
        .into_iter()
        .chain(pods(11..18))
        .chain(pods(20..29))
        .chain(pods(30..33))
        .collect();
    current.push(PodFixture::new("p0010").ip(&ip_of(10)).not_ready().build());
    let result = plan(&svc, &current, &[a, b, c], 10);
    assert!(result.create.is_empty() && result.delete.is_empty());
    assert_eq!(
        sizes(&result.update),
        [(Some("web-b".into()), 10), (Some("web-a".into()), 5)]
    );
    assert_eq!(&ips(&result.update[0])[8..], ["10.1.0.30", "10.1.0.31"]);
    assert_eq!(ips(&result.update[1]).last().unwrap(), "10.1.0.32");
    assert_eq!(
        (
            result.stats.endpoints_added,
            result.stats.endpoints_removed,
            result.stats.endpoints_updated
        ),
        (3, 1, 1)
    );
}

#[test]
fn remainder_goes_to_best_fitting_unchanged_slice() {
    let svc = ServiceFixture::new("web").build();
    let existing = [
        existing_slice(&svc, "web-x", 0..6),
        existing_slice(&svc, "web-y", 10..18),
    ];
    let base: Vec<_> = pods(0..6).into_iter().chain(pods(10..18)).collect();
    let cases = [
        ("2 fit y exactly", 30..32, vec![(Some("web-y".to_owned()), 10)], 0),
        ("3 only fit x", 30..33, vec![(Some("web-x".to_owned()), 9)], 0),
        ("5 fit nowhere", 30..35, vec![], 1),
        ("10 is a full slice", 30..40, vec![], 1),
    ];
    for (name, new, updates, creates) in cases {
        let current: Vec<_> = base.iter().cloned().chain(pods(new)).collect();
        let result = plan(&svc, &current, &existing, 10);
        assert_eq!(sizes(&result.update), updates, "{name}");
        assert_eq!(result.create.len(), creates, "{name}");
    }
}

#[test]
fn never_more_than_max_endpoints_per_slice() {
    let svc = ServiceFixture::new("web").build();
    let result = plan(&svc, &pods(0..7), &[], 3);
    assert_eq!(
        result
            .create
            .iter()
            .map(|s| s.endpoints.len())
            .collect::<Vec<_>>(),
        [3, 3, 1]
    );
    assert_eq!(result.stats.slices_desired, 3);
    // Lowering the limit splits an existing slice.
    let existing = [existing_slice(&svc, "web-big", 0..5)];
    let result = plan(&svc, &pods(0..5), &existing, 3);
    assert_eq!(sizes(&result.update), [(Some("web-big".into()), 3)]);
    assert_eq!(
        result
            .create
            .iter()
            .map(|s| s.endpoints.len())
            .collect::<Vec<_>>(),
        [2]
    );
}

#[test]
fn dual_stack_one_slice_set_per_family() {
    let svc = ServiceFixture::new("web")
        .families(&[IpFamily::V6, IpFamily::V4])
        .build();
    let current = vec![
        PodFixture::new("dual").ips(&["10.0.0.1", "FD00::0001"]).build(),
        PodFixture::new("v4").ip("10.0.0.2").build(),
    ];
    let result = plan(&svc, &current, &[], 100);
    let got: Vec<(String, Vec<String>)> = result
        .create
        .iter()
        .map(|s| (s.address_type.clone(), ips(s)))
        .collect();
    assert_eq!(
        got,
        [
            ("IPv6".to_owned(), vec!["fd00::1".to_owned()]),
            (
                "IPv4".to_owned(),
                vec!["10.0.0.1".to_owned(), "10.0.0.2".to_owned()]
            )
        ]
    );

    let headless = ServiceFixture::new("web").families(&[]).headless().build();
    let families: Vec<String> = plan(&headless, &current, &[], 100)
        .create
        .iter()
        .map(|s| s.address_type.clone())
        .collect();
    assert_eq!(families, ["IPv4", "IPv6"]);
}

#[test]
fn slices_of_unsupported_families_and_other_owners_deleted() {
    let svc = ServiceFixture::new("web").build();
    let v6 = ServiceFixture::new("web").families(&[IpFamily::V6]).build();
    let mut stale_v6 = existing_slice(&v6, "web-v6", 0..0);
    stale_v6.address_type = "IPv6".to_owned();
    let mut fqdn = existing_slice(&svc, "web-fqdn", 0..1);
    fqdn.address_type = "FQDN".to_owned();
    let foreign = existing_slice(
        &ServiceFixture::new("web").uid("old-uid").build(),
        "web-old",
        0..2,
    );
    let result = plan(&svc, &pods(0..2), &[stale_v6, fqdn, foreign], 100);
    let deleted: Vec<_> = result
        .delete
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(deleted, ["web-old", "web-fqdn", "web-v6"]);
    assert_eq!(
        result.create.len(),
        1,
        "a slice of another owner is never recycled"
    );
    assert!(result.update.is_empty());
}

#[test]
fn stale_port_group_slice_recycled_into_update() {
    let svc = ServiceFixture::new("web").build();
    let existing = [existing_slice(&svc, "web-old", 0..2)];
    let moved = ServiceFixture::new("web")
        .ports(vec![port(
            "web-port",
            8080,
            Protocol::Tcp,
            TargetPort::Number(81),
        )])
        .build();
    let result = plan(&moved, &pods(0..2), &existing, 100);
    assert!(result.create.is_empty() && result.delete.is_empty());
    let [update] = result.update.as_slice() else {
        panic!("{result:?}")
    };
    assert_eq!(update.metadata.name.as_deref(), Some("web-old"));
    assert_eq!(update.metadata.generate_name, None);
    assert_eq!(update.ports.as_ref().unwrap()[0].port, Some(81));
}

#[test]
fn missing_node_skips_pod_unless_pnra() {
    let current = vec![
        PodFixture::new("a").ip("10.0.0.1").build(),
        PodFixture::new("b")
            .ip("10.0.0.2")
            .node(Some("node-gone"))
            .build(),
        PodFixture::new("c").ip("10.0.0.3").node(Some("node-b")).build(),
    ];
    let cases = [
        (
            "default",
            ServiceFixture::new("web").build(),
            vec!["10.0.0.1", "10.0.0.3"],
            vec!["node-gone"],
        ),
        (
            "pnra",
            ServiceFixture::new("web").publish_not_ready().build(),
            vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            vec![],
        ),
    ];
    for (name, svc, want_ips, want_missing) in cases {
        let result = plan(&svc, &current, &[], 100);
        assert_eq!(ips(&result.create[0]), want_ips, "{name}");
        assert_eq!(result.missing_nodes, want_missing, "{name}");
        let zones: Vec<_> = result.create[0]
            .endpoints
            .iter()
            .map(|e| e.zone.clone())
            .collect();
        assert_eq!(zones.last().unwrap(), &None, "{name}: node-b has no zone");
    }
}

#[test]
fn placeholder_slice_when_no_endpoints() {
    let svc = ServiceFixture::new("web").build();
    let empty = plan(&svc, &[], &[], 100);
    let [placeholder] = empty.create.as_slice() else {
        panic!("{empty:?}")
    };
    assert!(placeholder.endpoints.is_empty());
    assert_eq!(placeholder.ports, Some(vec![]));
    assert_eq!(empty.stats.slices_desired, 1);
    assert!(
        plan(&svc, &[], &persisted(&empty), 100).is_empty(),
        "an equal placeholder is kept"
    );

    // The last pods go away: the slice is reused as the placeholder, not deleted and recreated.
    let existing = [existing_slice(&svc, "web-a", 0..2)];
    let result = plan(&svc, &[], &existing, 100);
    assert!(result.create.is_empty() && result.delete.is_empty());
    assert_eq!(sizes(&result.update), [(Some("web-a".into()), 0)]);
    assert_eq!(result.update[0].ports, Some(vec![]));
}

#[test]
fn terminating_pods_published_in_slices_with_conditions() {
    let svc = ServiceFixture::new("web").build();
    let current = vec![
        PodFixture::new("a").ip("10.0.0.1").terminating().build(),
        PodFixture::new("b")
            .ip("10.0.0.2")
            .not_ready()
            .terminating()
            .build(),
    ];
    let result = plan(&svc, &current, &[], 100);
    let conditions: Vec<_> = result.create[0]
        .endpoints
        .iter()
        .map(|e| e.conditions.clone().unwrap())
        .collect();
    let c = |ready, serving| EndpointConditions {
        ready: Some(ready),
        serving: Some(serving),
        terminating: Some(true),
    };
    assert_eq!(conditions, [c(false, true), c(false, false)]);
}

#[test]
fn unresolvable_named_port_pod_omitted_from_slices() {
    let svc = ServiceFixture::new("web")
        .ports(vec![
            port("http", 80, Protocol::Tcp, TargetPort::Name("http".into())),
            port("admin", 81, Protocol::Tcp, TargetPort::Name("admin".into())),
        ])
        .build();
    let current = vec![
        PodFixture::new("full")
            .ip("10.0.0.1")
            .port("http", 8080, Protocol::Tcp)
            .port("admin", 9000, Protocol::Tcp)
            .build(),
        PodFixture::new("http-only")
            .ip("10.0.0.2")
            .port("http", 8080, Protocol::Tcp)
            .build(),
        PodFixture::new("none").ip("10.0.0.3").build(),
    ];
    let result = plan(&svc, &current, &[], 100);
    let groups: Vec<(Vec<i32>, Vec<String>)> = result
        .create
        .iter()
        .map(|s| (s.ports.iter().flatten().filter_map(|p| p.port).collect(), ips(s)))
        .collect();
    assert_eq!(
        groups,
        [
            (vec![9000, 8080], vec!["10.0.0.1".to_owned()]),
            (vec![8080], vec!["10.0.0.2".to_owned()])
        ]
    );
}

#[test]
fn headless_without_ports_slice_has_empty_ports() {
    let svc = ServiceFixture::new("web")
        .families(&[])
        .headless()
        .ports(vec![])
        .build();
    let current = vec![PodFixture::new("a").ip("10.0.0.1").hostname("a", "web").build()];
    let result = plan(&svc, &current, &[], 100);
    let v4 = &result.create[0];
    assert_eq!(v4.ports, Some(vec![]));
    assert_eq!(v4.endpoints[0].hostname.as_deref(), Some("a"));
    assert_eq!(
        v4.metadata
            .labels
            .as_ref()
            .unwrap()
            .get(LABEL_HEADLESS)
            .map(String::as_str),
        Some("")
    );
    assert_eq!(result.create[1].address_type, "IPv6");
    assert!(
        result.create[1].endpoints.is_empty(),
        "placeholder for the family without addresses"
    );
}

#[test]
fn slice_labels_drop_reserved_keys_and_label_change_updates_in_place() {
    let svc = ServiceFixture::new("web")
        .labels(&[
            ("team", "a"),
            (LABEL_MANAGED_BY, "someone"),
            (LABEL_SERVICE_NAME, "x"),
        ])
        .build();
    let labels = slice_labels(&svc);
    let want = [
        (LABEL_SERVICE_NAME, "web"),
        (LABEL_MANAGED_BY, SLICE_CONTROLLER_NAME),
        ("team", "a"),
    ];
    let want: BTreeMap<String, String> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(labels, want);

    let existing = [existing_slice(&ServiceFixture::new("web").build(), "web-a", 0..2)];
    let result = plan(&svc, &pods(0..2), &existing, 100);
    assert_eq!(sizes(&result.update), [(Some("web-a".into()), 2)]);
    assert_eq!(result.update[0].metadata.labels.as_ref(), Some(&want));
    assert_eq!(result.update[0].endpoints, existing[0].endpoints);
}

#[test]
fn service_being_deleted_gets_no_new_slices() {
    let svc = ServiceFixture::new("web").deleting().build();
    let result = plan(&svc, &pods(0..3), &[], 100);
    assert!(result.create.is_empty());
}

#[test]
fn trigger_time_annotation_on_written_slices() {
    let svc = ServiceFixture::new("web").build();
    let existing = [existing_slice(&svc, "web-a", 0..2)];
    let result = desired_slices(
        &svc,
        &pods(0..3),
        &nodes,
        &existing,
        &input(&svc, 100, Some(ts("2024-03-04T05:06:07.5Z"))),
    );
    let annotations = result.update[0].metadata.annotations.as_ref().unwrap();
    assert_eq!(
        annotations.get(ANNOTATION_TRIGGER_TIME).map(String::as_str),
        Some("2024-03-04T05:06:07.5Z")
    );
    let without = desired_slices(
        &svc,
        &pods(0..1),
        &nodes,
        &persisted(&result),
        &input(&svc, 100, None),
    );
    assert_eq!(without.update[0].metadata.annotations, None);
}

#[test]
fn protocol_and_app_protocol_copied_from_service_port() {
    let mut dns = port("dns", 53, Protocol::Udp, TargetPort::Number(5353));
    dns.app_protocol = Some("kubernetes.io/dns".into());
    let svc = ServiceFixture::new("web").ports(vec![dns]).build();
    let current = pods(0..1);

    let endpoints = desired_endpoints(&svc, &current, EndpointsInput::default());
    let want = CorePort {
        name: Some("dns".into()),
        port: 5353,
        protocol: Some("UDP".into()),
        app_protocol: Some("kubernetes.io/dns".into()),
    };
    assert_eq!(endpoints.subsets[0].ports, Some(vec![want]));

    let slice = &plan(&svc, &current, &[], 100).create[0];
    let port = &slice.ports.as_ref().unwrap()[0];
    let got = (
        port.name.as_deref(),
        port.port,
        port.protocol.as_deref(),
        port.app_protocol.as_deref(),
    );
    assert_eq!(
        got,
        (Some("dns"), Some(5353), Some("UDP"), Some("kubernetes.io/dns"))
    );
}
