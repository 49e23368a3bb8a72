//! Topology hints (README row F30): whatever the mode, the Nodes and the endpoints, hints never name a zone
//! without a ready endpoint; `PreferSameNode` hints name the endpoint's own node (and zone); the Auto
//! allocation hints every ready endpoint once and leaves no zone below its share less the 20 % overload
//! threshold; hints are deterministic and a second plan over what was written writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use proptest::prelude::*;
use proptest::sample::select;
use roster::cache::{NodeLookup, ServiceRecord};
use roster::desired::{self, HintsOutcome, SliceInput, TopologyInput, ZoneCapacity};

use crate::generators::*;
use crate::model::*;

/// Pods on n1, n2 and n3 run in zone-a, zone-b and zone-c; zone-d has Nodes but never a pod.
fn zoned_nodes(name: &str) -> NodeLookup {
    let zone = match name {
        "n1" => "zone-a",
        "n2" => "zone-b",
        "n3" => "zone-c",
        _ => return NodeLookup::Missing,
    };
    NodeLookup::Found {
        zone: Some(Arc::from(zone)),
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Auto,
    PreferClose,
    PreferSameZone,
    PreferSameNode,
}

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop_oneof![
        2 => Just(Mode::Auto),
        1 => Just(Mode::PreferClose),
        1 => Just(Mode::PreferSameZone),
        1 => Just(Mode::PreferSameNode),
    ]
}

/// Allocatable CPU of the zones with pods (each most of the time) and, now and then, of zone-d; or a Node
/// without zone or CPU.
fn capacity_strategy() -> impl Strategy<Value = ZoneCapacity> {
    let cpu = |weight| proptest::option::weighted(weight, 1..=8000u64);
    let zones = (cpu(0.9), cpu(0.9), cpu(0.8), cpu(0.1)).prop_map(|(a, b, c, d)| {
        let named = [("zone-a", a), ("zone-b", b), ("zone-c", c), ("zone-d", d)];
        let known: BTreeMap<Arc<str>, u64> = named
            .into_iter()
            .filter_map(|(zone, cpu)| Some((Arc::from(zone), cpu?)))
            .collect();
        match known.is_empty() {
            true => ZoneCapacity::Insufficient,
            false => ZoneCapacity::Known(known),
        }
    });
    prop_oneof![1 => Just(ZoneCapacity::Insufficient), 9 => zones]
}

/// Mostly ready pods with an IP, on n1, n2 or n3 (the rest of each pod as random as elsewhere).
fn zoned_pods(max: usize) -> impl Strategy<Value = (NamedPods, NamedPods)> {
    let pod = (
        pod_strategy(),
        select(vec!["n1", "n2", "n3"]),
        proptest::bool::weighted(0.85),
    );
    let pod = pod.prop_map(|(mut pod, node, ready)| {
        pod.node = Some(node);
        pod.phase = Some("Running");
        pod.ready = Some(if ready { "True" } else { "False" });
        if pod.v4.is_none() && pod.v6.is_none() {
            pod.v4 = Some((0, 1));
        }
        pod
    });
    proptest::collection::vec(pod, 0..max).prop_flat_map(|pods| {
        let pods = named(pods);
        (Just(pods.clone()), Just(pods).prop_shuffle())
    })
}

fn with_mode(mut record: ServiceRecord, mode: Mode) -> ServiceRecord {
    match mode {
        Mode::Auto => record.topology_mode = Some("Auto".into()),
        Mode::PreferClose => record.traffic_distribution = Some("PreferClose".into()),
        Mode::PreferSameZone => record.traffic_distribution = Some("PreferSameZone".into()),
        Mode::PreferSameNode => record.traffic_distribution = Some("PreferSameNode".into()),
    }
    record
}

fn input(record: &ServiceRecord, max: usize, zones: &ZoneCapacity) -> SliceInput {
    SliceInput {
        topology: TopologyInput {
            hints_supported: true,
            zones: Arc::new(zones.clone()),
        },
        ..slice_input(record, max)
    }
}

fn is_ready(e: &Endpoint) -> bool {
    e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
}

fn names<T>(list: &Option<Vec<T>>, name: impl Fn(&T) -> &String) -> Vec<String> {
    list.iter().flatten().map(|x| name(x).clone()).collect()
}

/// Checks the hints of one address type's endpoints.
fn check_family(endpoints: &[&Endpoint], mode: Mode) -> Result<(), TestCaseError> {
    let ready_zones: BTreeSet<&String> = endpoints
        .iter()
        .filter(|e| is_ready(e))
        .filter_map(|e| e.zone.as_ref())
        .collect();
    for e in endpoints {
        let Some(hints) = &e.hints else { continue };
        prop_assert!(is_ready(e), "a not-ready endpoint has hints: {e:?}");
        let zones = names(&hints.for_zones, |z| &z.name);
        let nodes = names(&hints.for_nodes, |n| &n.name);
        for zone in &zones {
            prop_assert!(
                ready_zones.contains(zone),
                "hint for {zone}, a zone without ready endpoints"
            );
        }
        match mode {
            Mode::PreferSameNode => {
                prop_assert_eq!(
                    nodes,
                    e.node_name.iter().cloned().collect::<Vec<_>>(),
                    "not its own node"
                );
                prop_assert_eq!(
                    zones,
                    e.zone.iter().cloned().collect::<Vec<_>>(),
                    "not its own zone"
                );
            }
            Mode::PreferClose | Mode::PreferSameZone => {
                prop_assert!(nodes.is_empty(), "a node hint without PreferSameNode");
                prop_assert_eq!(
                    zones,
                    e.zone.iter().cloned().collect::<Vec<_>>(),
                    "not its own zone"
                );
            }
            Mode::Auto => {
                prop_assert!(nodes.is_empty(), "a node hint from the Auto allocation");
                prop_assert_eq!(zones.len(), 1, "one zone per endpoint");
            }
        }
    }
    Ok(())
}

/// The Auto allocation, when it set hints: every ready endpoint hinted, and no zone with fewer than its CPU
/// share divided by 1.2, rounded up.
fn check_allocation(endpoints: &[&Endpoint], zones: &ZoneCapacity) -> Result<(), TestCaseError> {
    let ready: Vec<&&Endpoint> = endpoints.iter().filter(|e| is_ready(e)).collect();
    prop_assert!(
        ready.iter().all(|e| e.hints.is_some()),
        "a ready endpoint without a hint"
    );
    let ZoneCapacity::Known(cpu) = zones else {
        return Err(TestCaseError::fail("hints without Node information"));
    };
    let mut hinted: BTreeMap<String, usize> = BTreeMap::new();
    for e in &ready {
        *hinted
            .entry(names(&e.hints.as_ref().unwrap().for_zones, |z| &z.name)[0].clone())
            .or_default() += 1;
    }
    let total: u64 = cpu.values().sum();
    for (zone, millis) in cpu {
        let share = *millis as f64 / total as f64 * ready.len() as f64;
        let minimum = (share / 1.2 - 1e-9).ceil() as usize;
        let got = hinted.get(zone.as_ref()).copied().unwrap_or(0);
        prop_assert!(
            got >= minimum,
            "{zone}: {got} endpoints, at least {minimum} needed (share {share:.2})"
        );
    }
    Ok(())
}

fn check_plan(
    slices: &[EndpointSlice],
    plan: &desired::SlicePlan,
    mode: Mode,
    zones: &ZoneCapacity,
) -> Result<(), TestCaseError> {
    for (family, outcome) in &plan.hints {
        let endpoints: Vec<&Endpoint> = slices
            .iter()
            .filter(|s| s.address_type == family.address_type())
            .flat_map(|s| &s.endpoints)
            .collect();
        check_family(&endpoints, mode)?;
        match outcome {
            HintsOutcome::Allocated => check_allocation(&endpoints, zones)?,
            HintsOutcome::Disabled(_) => prop_assert!(endpoints.iter().all(|e| e.hints.is_none())),
            HintsOutcome::TrafficDistribution => {}
            HintsOutcome::NotRequested => return Err(TestCaseError::fail("a mode asked for nothing")),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn hints_name_only_zones_with_endpoints_and_own_nodes(
        svc in service_strategy(),
        (pods, shuffled) in zoned_pods(24),
        mode in mode_strategy(),
        zones in capacity_strategy(),
        max in prop_oneof![1..=4usize, Just(100usize)],
    ) {
        let record = with_mode(service_record(&svc), mode);
        let input = input(&record, max, &zones);
        let plan = desired::desired_slices(&record, &pod_records(&pods), &zoned_nodes, &[], &input);
        check_plan(&plan.create, &plan, mode, &zones)?;

        let permuted = desired::desired_slices(&record, &pod_records(&shuffled), &zoned_nodes, &[], &input);
        prop_assert_eq!(&permuted, &plan, "pod order changed the hints");
        let mut serial = 0;
        let existing = apply_plan(&[], &plan, &mut serial)?;
        let replan = desired::desired_slices(&record, &pod_records(&pods), &zoned_nodes, &existing, &input);
        prop_assert!(replan.is_empty(), "rewrites the hints it just wrote: {replan:?}");
    }

    /// From the slices of one pod set, Nodes and mode, one plan reaches the hints of another, and a plan
    /// over the result writes nothing.
    #[test]
    fn hints_converge_from_any_previous_state(
        svc in service_strategy(),
        (before, _) in zoned_pods(16),
        (after, _) in zoned_pods(16),
        modes in (mode_strategy(), mode_strategy()),
        zones in (capacity_strategy(), capacity_strategy()),
    ) {
        let first = with_mode(service_record(&svc), modes.0);
        let mut serial = 0;
        let plan = desired::desired_slices(&first, &pod_records(&before), &zoned_nodes, &[], &input(&first, 3, &zones.0));
        let existing = apply_plan(&[], &plan, &mut serial)?;
        let second = with_mode(service_record(&svc), modes.1);
        let input = input(&second, 3, &zones.1);
        let plan = desired::desired_slices(&second, &pod_records(&after), &zoned_nodes, &existing, &input);
        let now = apply_plan(&existing, &plan, &mut serial)?;
        check_plan(&now, &plan, modes.1, &zones.1)?;
        let replan = desired::desired_slices(&second, &pod_records(&after), &zoned_nodes, &now, &input);
        prop_assert!(replan.is_empty(), "not converged after one plan: {replan:?}");
    }
}
