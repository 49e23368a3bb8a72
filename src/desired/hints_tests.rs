//! Table tests of topology hints: which mode a Service asks for, each mode's hints, and every safeguard of
//! the Auto allocation.

use std::sync::Arc;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};

use super::*;
use crate::cache::{IpFamily, NodeLookup, NodeRecord, PodRecord, Protocol, ServiceRecord, TargetPort};
use crate::desired::fixtures::{PodFixture, ServiceFixture, port};
use crate::desired::{SliceInput, SlicePlan, desired_slices};

fn endpoint(ip: &str, zone: Option<&str>, node: Option<&str>, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip.to_owned()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
        }),
        zone: zone.map(str::to_owned),
        node_name: node.map(str::to_owned),
        ..Endpoint::default()
    }
}

/// `count` ready endpoints in `zone`, named `<zone>-<i>` by IP order.
fn in_zone(zone: &str, count: usize, first_ip: u8) -> Vec<Endpoint> {
    (0..count)
        .map(|i| endpoint(&format!("10.0.{first_ip}.{i}"), Some(zone), None, true))
        .collect()
}

fn capacity(zones: &[(&str, u64)]) -> ZoneCapacity {
    ZoneCapacity::Known(zones.iter().map(|(z, cpu)| (Arc::from(*z), *cpu)).collect())
}

fn topology(zones: ZoneCapacity) -> TopologyInput {
    TopologyInput {
        hints_supported: true,
        zones: Arc::new(zones),
    }
}

fn no_previous(_: &Endpoint) -> Option<Arc<str>> {
    None
}

fn hint(
    mode: HintsMode,
    topology: &TopologyInput,
    endpoints: &mut [Endpoint],
    previous: &dyn Fn(&Endpoint) -> Option<Arc<str>>,
) -> HintsOutcome {
    let mut refs: Vec<&mut Endpoint> = endpoints.iter_mut().collect();
    set_hints(mode, topology, &mut refs, previous)
}

/// (address, zones hinted, nodes hinted) of each endpoint.
fn hints_of(endpoints: &[Endpoint]) -> Vec<(String, Vec<String>, Vec<String>)> {
    endpoints
        .iter()
        .map(|e| {
            let h = e.hints.clone().unwrap_or_default();
            let zones = h.for_zones.unwrap_or_default().into_iter().map(|z| z.name);
            let nodes = h.for_nodes.unwrap_or_default().into_iter().map(|n| n.name);
            (e.addresses[0].clone(), zones.collect(), nodes.collect())
        })
        .collect()
}

fn zones_hinted(endpoints: &[Endpoint]) -> Vec<String> {
    hints_of(endpoints)
        .into_iter()
        .map(|(_, zones, _)| zones.join(","))
        .collect()
}

#[test]
fn the_topology_annotation_takes_precedence_over_traffic_distribution() {
    let svc = |f: ServiceFixture| HintsMode::of(&f.build());
    let base = || ServiceFixture::new("web");
    let cases = [
        ("nothing", svc(base()), HintsMode::Off),
        (
            "PreferClose",
            svc(base().traffic_distribution("PreferClose")),
            HintsMode::SameZone,
        ),
        (
            "PreferSameZone",
            svc(base().traffic_distribution("PreferSameZone")),
            HintsMode::SameZone,
        ),
        (
            "PreferSameNode",
            svc(base().traffic_distribution("PreferSameNode")),
            HintsMode::SameNode,
        ),
        (
            "unknown value",
            svc(base().traffic_distribution("PreferFar")),
            HintsMode::Off,
        ),
        ("Auto", svc(base().topology_mode("Auto")), HintsMode::Auto),
        ("auto", svc(base().topology_mode("auto")), HintsMode::Auto),
        (
            "Auto beats trafficDistribution",
            svc(base()
                .topology_mode("Auto")
                .traffic_distribution("PreferSameNode")),
            HintsMode::Auto,
        ),
        (
            "Disabled leaves trafficDistribution in charge",
            svc(base()
                .topology_mode("Disabled")
                .traffic_distribution("PreferClose")),
            HintsMode::SameZone,
        ),
        (
            "other annotation values",
            svc(base().topology_mode("PreferZone")),
            HintsMode::Off,
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn prefer_same_zone_hints_ready_endpoints_for_their_own_zone() {
    let mut endpoints = vec![
        endpoint("10.0.0.1", Some("zone-a"), Some("n1"), true),
        endpoint("10.0.0.2", Some("zone-b"), Some("n2"), true),
        endpoint("10.0.0.3", Some("zone-a"), Some("n1"), false),
        endpoint("10.0.0.4", None, Some("n3"), true),
    ];
    let outcome = hint(
        HintsMode::SameZone,
        &topology(ZoneCapacity::Insufficient),
        &mut endpoints,
        &no_previous,
    );
    assert_eq!(outcome, HintsOutcome::TrafficDistribution);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        hints_of(&endpoints),
        [
            ("10.0.0.1".into(), s(&["zone-a"]), s(&[])),
            ("10.0.0.2".into(), s(&["zone-b"]), s(&[])),
            ("10.0.0.3".into(), s(&[]), s(&[])),
            ("10.0.0.4".into(), s(&[]), s(&[])),
        ],
        "not ready or without a zone: no hint (and the Nodes' CPU plays no part)"
    );
    assert!(endpoints[2].hints.is_none() && endpoints[3].hints.is_none());
}

#[test]
fn prefer_same_node_hints_the_own_node_and_the_own_zone() {
    let mut endpoints = vec![
        endpoint("10.0.0.1", Some("zone-a"), Some("n1"), true),
        endpoint("10.0.0.2", None, Some("n3"), true),
        endpoint("10.0.0.3", Some("zone-b"), None, true),
        endpoint("10.0.0.4", None, None, true),
        endpoint("10.0.0.5", Some("zone-a"), Some("n1"), false),
    ];
    hint(
        HintsMode::SameNode,
        &topology(ZoneCapacity::Insufficient),
        &mut endpoints,
        &no_previous,
    );
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        hints_of(&endpoints),
        [
            ("10.0.0.1".into(), s(&["zone-a"]), s(&["n1"])),
            ("10.0.0.2".into(), s(&[]), s(&["n3"])),
            ("10.0.0.3".into(), s(&["zone-b"]), s(&[])),
            ("10.0.0.4".into(), s(&[]), s(&[])),
            ("10.0.0.5".into(), s(&[]), s(&[])),
        ]
    );
    assert!(
        endpoints[3].hints.is_none(),
        "neither zone nor node: no hints object at all"
    );
}

#[test]
fn no_mode_removes_every_hint() {
    let mut endpoints = in_zone("zone-a", 2, 0);
    hint(
        HintsMode::SameZone,
        &topology(ZoneCapacity::Insufficient),
        &mut endpoints,
        &no_previous,
    );
    let outcome = hint(
        HintsMode::Off,
        &topology(ZoneCapacity::Insufficient),
        &mut endpoints,
        &no_previous,
    );
    assert_eq!(outcome, HintsOutcome::NotRequested);
    assert!(endpoints.iter().all(|e| e.hints.is_none()));
}

#[test]
fn a_server_that_cannot_store_hints_gets_none_whatever_the_mode() {
    let unsupported = TopologyInput {
        hints_supported: false,
        zones: Arc::new(capacity(&[("zone-a", 1000), ("zone-b", 1000)])),
    };
    for mode in [HintsMode::Auto, HintsMode::SameZone, HintsMode::SameNode] {
        let mut endpoints = [in_zone("zone-a", 2, 0), in_zone("zone-b", 2, 1)].concat();
        let outcome = hint(mode, &unsupported, &mut endpoints, &no_previous);
        assert_eq!(
            outcome,
            HintsOutcome::Disabled(HintsDisabled::ServerCannotStoreHints),
            "{mode:?}"
        );
        assert!(endpoints.iter().all(|e| e.hints.is_none()), "{mode:?}");
    }
    let mut endpoints = in_zone("zone-a", 1, 0);
    let outcome = hint(HintsMode::Off, &unsupported, &mut endpoints, &no_previous);
    assert_eq!(
        outcome,
        HintsOutcome::NotRequested,
        "nothing asked, nothing to report"
    );
}

#[test]
fn auto_hints_each_endpoint_for_its_zone_when_the_shares_match() {
    let mut endpoints = [in_zone("zone-a", 2, 0), in_zone("zone-b", 2, 1)].concat();
    let zones = topology(capacity(&[("zone-a", 4000), ("zone-b", 4000)]));
    assert_eq!(
        hint(HintsMode::Auto, &zones, &mut endpoints, &no_previous),
        HintsOutcome::Allocated
    );
    assert_eq!(zones_hinted(&endpoints), ["zone-a", "zone-a", "zone-b", "zone-b"]);
}

#[test]
fn auto_moves_endpoints_from_zones_above_their_cpu_share_to_zones_below() {
    // zone-a has two thirds of the CPU: 4 of 6 endpoints, at least ceil(4 / 1.2) = 4.
    let mut endpoints = [in_zone("zone-a", 3, 0), in_zone("zone-b", 3, 1)].concat();
    let zones = topology(capacity(&[("zone-a", 2000), ("zone-b", 1000)]));
    assert_eq!(
        hint(HintsMode::Auto, &zones, &mut endpoints, &no_previous),
        HintsOutcome::Allocated
    );
    assert_eq!(
        zones_hinted(&endpoints),
        ["zone-a", "zone-a", "zone-a", "zone-a", "zone-b", "zone-b"],
        "zone-b's first endpoint serves zone-a"
    );
}

#[test]
fn auto_tops_up_a_zone_that_rounding_leaves_below_its_minimum() {
    // Shares of 12: zone-a 3.54, zone-b 3.84 (minimum 4), zone-c 4.62. Moving towards the targets stops
    // with zone-b at 3 (the surpluses left, 0.46 and 0.38, are under half an endpoint each).
    let mut endpoints = [
        in_zone("zone-a", 6, 0),
        in_zone("zone-b", 1, 1),
        in_zone("zone-c", 5, 2),
    ]
    .concat();
    let zones = topology(capacity(&[("zone-a", 4370), ("zone-b", 4733), ("zone-c", 5698)]));
    assert_eq!(
        hint(HintsMode::Auto, &zones, &mut endpoints, &no_previous),
        HintsOutcome::Allocated
    );
    let hinted = zones_hinted(&endpoints);
    let count = |zone: &str| hinted.iter().filter(|z| *z == zone).count();
    assert_eq!((count("zone-a"), count("zone-b"), count("zone-c")), (3, 4, 5));
}

#[test]
fn auto_sets_no_hints_when_no_zone_can_spare_an_endpoint_for_a_minimum() {
    // zone-x has no Nodes that count: its endpoints are never given away, and the two even zones need 3
    // each of the 6 ready endpoints.
    let mut endpoints = [
        in_zone("zone-a", 3, 0),
        in_zone("zone-b", 1, 1),
        in_zone("zone-x", 2, 2),
    ]
    .concat();
    let zones = topology(capacity(&[("zone-a", 1000), ("zone-b", 1000)]));
    let outcome = hint(HintsMode::Auto, &zones, &mut endpoints, &no_previous);
    assert_eq!(
        outcome,
        HintsOutcome::Disabled(HintsDisabled::Overloaded {
            endpoints: 6,
            zones: 2
        })
    );
}

#[test]
fn auto_keeps_an_endpoint_already_hinted_for_a_receiving_zone() {
    let mut endpoints = [in_zone("zone-a", 3, 0), in_zone("zone-b", 3, 1)].concat();
    let zones = topology(capacity(&[("zone-a", 2000), ("zone-b", 1000)]));
    let previous = |e: &Endpoint| (e.addresses[0] == "10.0.1.2").then(|| Arc::from("zone-a"));
    hint(HintsMode::Auto, &zones, &mut endpoints, &previous);
    assert_eq!(
        zones_hinted(&endpoints),
        ["zone-a", "zone-a", "zone-a", "zone-b", "zone-b", "zone-a"],
        "the donor stays the one that already was"
    );
}

#[test]
fn auto_leaves_not_ready_endpoints_unhinted_and_uncounted() {
    let mut endpoints = [in_zone("zone-a", 2, 0), in_zone("zone-b", 2, 1)].concat();
    endpoints.push(endpoint("10.0.2.1", Some("zone-a"), None, false));
    endpoints.push(endpoint("10.0.2.2", None, None, false));
    let zones = topology(capacity(&[("zone-a", 1000), ("zone-b", 1000)]));
    assert_eq!(
        hint(HintsMode::Auto, &zones, &mut endpoints, &no_previous),
        HintsOutcome::Allocated
    );
    assert_eq!(
        zones_hinted(&endpoints),
        ["zone-a", "zone-a", "zone-b", "zone-b", "", ""]
    );
}

/// Stale hints on `endpoints`, then the Auto allocation: none left, for `why`.
fn assert_disabled(name: &str, zones: ZoneCapacity, mut endpoints: Vec<Endpoint>, why: HintsDisabled) {
    for e in &mut endpoints {
        e.hints = zone_hint("stale");
    }
    let outcome = hint(HintsMode::Auto, &topology(zones), &mut endpoints, &no_previous);
    assert_eq!(outcome, HintsOutcome::Disabled(why), "{name}");
    assert!(
        endpoints.iter().all(|e| e.hints.is_none()),
        "{name}: hints removed"
    );
}

#[test]
fn auto_safeguards_on_nodes_remove_every_hint_and_say_why() {
    let balanced = || [in_zone("zone-a", 2, 0), in_zone("zone-b", 2, 1)].concat();
    let no_info = ZoneCapacity::Insufficient;
    assert_disabled(
        "no Node information",
        no_info,
        balanced(),
        HintsDisabled::InsufficientNodeInfo,
    );
    let one_zone = capacity(&[("zone-a", 1000)]);
    assert_disabled("one zone", one_zone, balanced(), HintsDisabled::NodesInOneZone);
}

#[test]
fn auto_safeguards_on_endpoints_remove_every_hint_and_say_why() {
    let two_zones = || capacity(&[("zone-a", 1000), ("zone-b", 1000)]);
    let three_zones = || capacity(&[("zone-a", 1000), ("zone-b", 1000), ("zone-c", 1000)]);
    let too_few = HintsDisabled::TooFewEndpoints {
        endpoints: 2,
        zones: 3,
    };
    assert_disabled(
        "fewer endpoints than zones",
        three_zones(),
        in_zone("zone-a", 2, 0),
        too_few,
    );
    let uneven = [
        in_zone("zone-a", 2, 0),
        in_zone("zone-b", 1, 1),
        in_zone("zone-c", 1, 2),
    ]
    .concat();
    let overloaded = HintsDisabled::Overloaded {
        endpoints: 4,
        zones: 3,
    };
    assert_disabled(
        "minimums past the overload threshold",
        three_zones(),
        uneven,
        overloaded,
    );
    // Six ready endpoints over two even zones: at least three each, so only the missing zone disables.
    let mut zoneless = [in_zone("zone-a", 3, 0), in_zone("zone-b", 2, 1)].concat();
    zoneless.push(endpoint("10.0.9.9", None, Some("n9"), true));
    assert_disabled(
        "an endpoint without a zone",
        two_zones(),
        zoneless,
        HintsDisabled::EndpointWithoutZone,
    );
    let without_b = HintsDisabled::ZoneWithoutEndpoints("zone-b".into());
    assert_disabled(
        "a zone without endpoints",
        two_zones(),
        in_zone("zone-a", 4, 0),
        without_b,
    );
}

#[test]
fn zone_capacity_counts_ready_worker_nodes_only() {
    let node = |zone: Option<&str>, cpu: u64, ready: bool, control_plane: bool| NodeRecord {
        zone: zone.map(Arc::from),
        cpu_millis: cpu,
        ready,
        control_plane,
    };
    let cases = [
        ("no Nodes", vec![], ZoneCapacity::Insufficient),
        (
            "summed per zone",
            vec![
                node(Some("a"), 1000, true, false),
                node(Some("a"), 500, true, false),
                node(Some("b"), 2000, true, false),
            ],
            capacity(&[("a", 1500), ("b", 2000)]),
        ),
        (
            "not ready and control plane left out, even without zone or CPU",
            vec![
                node(Some("a"), 1000, true, false),
                node(None, 0, false, false),
                node(None, 0, true, true),
            ],
            capacity(&[("a", 1000)]),
        ),
        (
            "a counted Node without a zone",
            vec![node(Some("a"), 1000, true, false), node(None, 1000, true, false)],
            ZoneCapacity::Insufficient,
        ),
        (
            "a counted Node without CPU",
            vec![
                node(Some("a"), 1000, true, false),
                node(Some("b"), 0, true, false),
            ],
            ZoneCapacity::Insufficient,
        ),
    ];
    for (name, nodes, want) in cases {
        assert_eq!(ZoneCapacity::of_nodes(&nodes), want, "{name}");
    }
}

// ---- hints in planned slices ----

fn zoned(name: &str) -> NodeLookup {
    match name {
        "node-b" => NodeLookup::Found {
            zone: Some("zone-b".into()),
        },
        _ => NodeLookup::Found {
            zone: Some("zone-a".into()),
        },
    }
}

fn pods(n: usize) -> Vec<Arc<PodRecord>> {
    (0..n)
        .map(|i| {
            let node = if i % 2 == 0 { "node-a" } else { "node-b" };
            PodFixture::new(&format!("p{i}"))
                .ip(&format!("10.1.0.{}", i + 1))
                .node(Some(node))
                .build()
        })
        .collect()
}

fn plan_with(svc: &ServiceRecord, n: usize, existing: &[EndpointSlice]) -> SlicePlan {
    let mut input = SliceInput::owned_by_service(svc, 100, None);
    input.topology = topology(capacity(&[("zone-a", 1000), ("zone-b", 1000)]));
    desired_slices(svc, &pods(n), &zoned, existing, &input)
}

fn persisted(plan: &SlicePlan) -> Vec<EndpointSlice> {
    crate::desired::slices_tests::persisted(plan)
}

#[test]
fn hints_are_part_of_the_desired_slice() {
    let close = ServiceFixture::new("web")
        .traffic_distribution("PreferClose")
        .build();
    let first = plan_with(&close, 4, &[]);
    assert_eq!(first.hints, [(IpFamily::V4, HintsOutcome::TrafficDistribution)]);
    assert_eq!(
        zones_hinted(&first.create[0].endpoints),
        ["zone-a", "zone-b", "zone-a", "zone-b"]
    );
    let written = persisted(&first);
    assert!(
        plan_with(&close, 4, &written).is_empty(),
        "unchanged hints: no write"
    );

    let auto = ServiceFixture::new("web").topology_mode("Auto").build();
    let switched = plan_with(&auto, 4, &written);
    assert!(switched.is_empty(), "the same hints by another mode: no write");
    assert_eq!(switched.hints, [(IpFamily::V4, HintsOutcome::Allocated)]);

    let off = ServiceFixture::new("web").build();
    let removed = plan_with(&off, 4, &written);
    assert_eq!(removed.update.len(), 1, "a change of hints alone is written");
    assert!(removed.update[0].endpoints.iter().all(|e| e.hints.is_none()));
    assert_eq!(removed.stats.endpoints_updated, 4);
}

#[test]
fn auto_counts_every_port_group_of_an_address_type_together() {
    let named = port("web-port", 8080, Protocol::Tcp, TargetPort::Name("http".into()));
    let svc = ServiceFixture::new("web")
        .topology_mode("Auto")
        .ports(vec![named])
        .build();
    let mut input = SliceInput::owned_by_service(&svc, 100, None);
    input.topology = topology(capacity(&[("zone-a", 1000), ("zone-b", 1000)]));
    // Port 80 on the two pods of zone-a, 81 on the two of zone-b: no group alone has both zones.
    let pods: Vec<_> = (0..4)
        .map(|i| {
            let node = if i < 2 { "node-a" } else { "node-b" };
            PodFixture::new(&format!("p{i}"))
                .ip(&format!("10.1.0.{}", i + 1))
                .node(Some(node))
                .port("http", 80 + i / 2, Protocol::Tcp)
                .build()
        })
        .collect();
    let plan = desired_slices(&svc, &pods, &zoned, &[], &input);
    assert_eq!(plan.create.len(), 2, "two port groups");
    assert_eq!(plan.hints, [(IpFamily::V4, HintsOutcome::Allocated)]);
    for slice in &plan.create {
        let own: Vec<Option<String>> = slice.endpoints.iter().map(|e| e.zone.clone()).collect();
        let hinted: Vec<Option<String>> = zones_hinted(&slice.endpoints).into_iter().map(Some).collect();
        assert_eq!(hinted, own);
    }
}
