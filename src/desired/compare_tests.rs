use k8s_openapi::api::core::v1::{EndpointPort, EndpointSubset, ObjectReference};
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort as SlicePort, ForNode, ForZone};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn address(ip: &str, node: Option<&str>) -> EndpointAddress {
    EndpointAddress {
        ip: ip.into(),
        node_name: node.map(Into::into),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("ns".into()),
            name: Some(format!("pod-{ip}")),
            uid: Some(format!("uid-{ip}")),
            ..ObjectReference::default()
        }),
        ..EndpointAddress::default()
    }
}

fn endpoints(labels: &[(&str, &str)], subsets: Vec<EndpointSubset>) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            name: Some("web".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        subsets: Some(subsets),
    }
}

fn subset(ready: Vec<EndpointAddress>, not_ready: Vec<EndpointAddress>, port: i32) -> EndpointSubset {
    EndpointSubset {
        addresses: Some(ready),
        not_ready_addresses: Some(not_ready),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port,
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    }
}

fn kinds(differences: &[Difference]) -> Vec<(DifferenceKind, String, Option<&'static str>)> {
    differences
        .iter()
        .map(|d| (d.kind, d.at.clone(), d.explained_by))
        .collect()
}

#[test]
fn equal_endpoints_differ_in_nothing_whoever_wrote_them() {
    let roster = endpoints(
        &[("app", "web"), (LABEL_ENDPOINTS_MANAGED_BY, "roster")],
        vec![subset(vec![address("10.0.0.1", Some("n1"))], vec![], 80)],
    );
    let upstream = endpoints(
        &[("app", "web")],
        vec![subset(vec![address("10.0.0.1", Some("n1"))], vec![], 80)],
    );
    assert_eq!(compare_endpoints(Some(&roster), Some(&upstream)), vec![]);
    assert_eq!(compare_endpoints(None, None), vec![]);
}

#[test]
fn endpoints_differences_are_named_by_kind_and_address() {
    let desired = endpoints(
        &[],
        vec![subset(
            vec![address("10.0.0.1", None), address("10.0.0.2", Some("n1"))],
            vec![],
            80,
        )],
    );
    let live = endpoints(
        &[("team", "a")],
        vec![
            subset(
                vec![address("10.0.0.1", Some(""))],
                vec![address("10.0.0.2", Some("n1"))],
                80,
            ),
            subset(vec![address("10.0.0.3", None)], vec![], 80),
        ],
    );
    assert_eq!(
        kinds(&compare_endpoints(Some(&desired), Some(&live))),
        vec![
            (DifferenceKind::Labels, "<Endpoints>".into(), None),
            (DifferenceKind::NodeName, "10.0.0.1".into(), Some("F13")),
            (DifferenceKind::Readiness, "10.0.0.2".into(), None),
            (DifferenceKind::AddressExtra, "10.0.0.3".into(), None),
        ]
    );
    assert_eq!(
        kinds(&compare_endpoints(Some(&desired), None)),
        vec![(DifferenceKind::Object, "<Endpoints>".into(), None)]
    );
}

#[test]
fn ip_text_is_compared_as_ips() {
    let desired = endpoints(&[], vec![subset(vec![address("10.0.0.1", None)], vec![], 80)]);
    let mut live = desired.clone();
    live.subsets.as_mut().unwrap()[0].addresses.as_mut().unwrap()[0].ip = "::ffff:10.0.0.1".into();
    assert_eq!(compare_endpoints(Some(&desired), Some(&live)), vec![]);
}

fn slice(manager: &str, ports: &[i32], endpoints: &[(&str, bool)]) -> EndpointSlice {
    EndpointSlice {
        address_type: "IPv4".into(),
        metadata: ObjectMeta {
            labels: Some([(LABEL_MANAGED_BY.to_string(), manager.to_string())].into()),
            ..ObjectMeta::default()
        },
        ports: Some(
            ports
                .iter()
                .map(|p| SlicePort {
                    name: Some("http".into()),
                    port: Some(*p),
                    protocol: Some("TCP".into()),
                    app_protocol: None,
                })
                .collect(),
        ),
        endpoints: endpoints
            .iter()
            .map(|(ip, ready)| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    serving: Some(*ready),
                    terminating: Some(false),
                }),
                ..Endpoint::default()
            })
            .collect(),
    }
}

#[test]
fn slices_compare_as_endpoint_sets_not_by_packing() {
    let roster = [slice("roster", &[80], &[("10.0.0.1", true), ("10.0.0.2", true)])];
    let upstream = [
        slice("upstream", &[80], &[("10.0.0.2", true)]),
        slice("upstream", &[80], &[("10.0.0.1", true)]),
    ];
    assert_eq!(compare_slices(&roster, &upstream, true), vec![]);
    let flipped = [slice(
        "upstream",
        &[80],
        &[("10.0.0.1", false), ("10.0.0.2", true)],
    )];
    assert_eq!(
        kinds(&compare_slices(&roster, &flipped, true)),
        vec![(DifferenceKind::Readiness, "IPv4 10.0.0.1".into(), None)]
    );
}

#[test]
fn upstreams_portless_group_is_explained() {
    let roster = [slice("roster", &[80], &[("10.0.0.1", true)])];
    let upstream = [
        slice("upstream", &[80], &[("10.0.0.1", true)]),
        slice("upstream", &[], &[("10.0.0.9", true)]),
    ];
    assert_eq!(
        kinds(&compare_slices(&roster, &upstream, true)),
        vec![(DifferenceKind::AddressExtra, "IPv4 10.0.0.9".into(), Some("F18"))]
    );
    assert_eq!(
        kinds(&compare_slices(&roster, &upstream, false)),
        vec![(DifferenceKind::AddressExtra, "IPv4 10.0.0.9".into(), None)],
        "a Service without ports publishes port-less slices itself"
    );
    assert_eq!(
        kinds(&compare_slices(&roster, &[], true)),
        vec![
            (DifferenceKind::AddressMissing, "IPv4 10.0.0.1".into(), None),
            (DifferenceKind::Object, "<EndpointSlices>".into(), None)
        ]
    );
}

fn hinted(mut slice: EndpointSlice, hints: &[(&str, &[&str], &[&str])]) -> EndpointSlice {
    for (endpoint, (zone, zones, nodes)) in slice.endpoints.iter_mut().zip(hints) {
        endpoint.zone = Some(zone.to_string());
        let names = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        endpoint.hints = Some(k8s_openapi::api::discovery::v1::EndpointHints {
            for_zones: Some(names(zones).into_iter().map(|name| ForZone { name }).collect()),
            for_nodes: (!nodes.is_empty())
                .then(|| names(nodes).into_iter().map(|name| ForNode { name }).collect()),
        });
    }
    slice
}

#[test]
fn hints_are_compared_and_only_auto_donor_choices_are_explained() {
    let two = |manager| slice(manager, &[80], &[("10.0.0.1", true), ("10.0.0.2", true)]);
    let own = [
        ("zone-a", &["zone-a"][..], &[][..]),
        ("zone-b", &["zone-b"][..], &[][..]),
    ];
    let roster = [hinted(two("roster"), &own)];
    assert_eq!(
        compare_slices(&roster, &[hinted(two("upstream"), &own)], true),
        vec![]
    );
    assert_eq!(
        kinds(&compare_slices(&roster, &[two("upstream")], true)),
        vec![
            (DifferenceKind::Zone, "IPv4 10.0.0.1".into(), None),
            (DifferenceKind::Hints, "IPv4 10.0.0.1".into(), None),
            (DifferenceKind::Zone, "IPv4 10.0.0.2".into(), None),
            (DifferenceKind::Hints, "IPv4 10.0.0.2".into(), None),
        ],
        "hints roster writes and upstream does not are a finding"
    );
    let nodes = [
        ("zone-a", &["zone-a"][..], &["n1"][..]),
        ("zone-b", &["zone-b"][..], &["n2"][..]),
    ];
    assert_eq!(
        kinds(&compare_slices(&roster, &[hinted(two("upstream"), &nodes)], true)),
        vec![
            (DifferenceKind::Hints, "IPv4 10.0.0.1".into(), None),
            (DifferenceKind::Hints, "IPv4 10.0.0.2".into(), None),
        ]
    );
    let donated = [
        ("zone-a", &["zone-a"][..], &[][..]),
        ("zone-b", &["zone-a"][..], &[][..]),
    ];
    let other_donor = [
        ("zone-a", &["zone-b"][..], &[][..]),
        ("zone-b", &["zone-b"][..], &[][..]),
    ];
    assert_eq!(
        kinds(&compare_slices(
            &[hinted(two("roster"), &donated)],
            &[hinted(two("upstream"), &other_donor)],
            true
        )),
        vec![
            (DifferenceKind::Hints, "IPv4 10.0.0.1".into(), Some("F30")),
            (DifferenceKind::Hints, "IPv4 10.0.0.2".into(), Some("F30")),
        ],
        "which endpoint a zone gives away is the Auto allocation's choice"
    );
}
