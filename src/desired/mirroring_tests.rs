//! Table tests of EndpointSlice mirroring.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::fixtures::{ServiceFixture, ts};
use super::labels::*;
use super::slices_tests::{ip_of, ips, persisted, sizes};
use super::*;
use crate::cache::ServiceRecord;

fn address(ip: &str, pod: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.to_owned(),
        node_name: Some("node-a".to_owned()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            uid: Some(pod.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn manual_endpoints(ready: Vec<EndpointAddress>, not_ready: Vec<EndpointAddress>) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            namespace: Some("shop".into()),
            name: Some("my-service".into()),
            uid: Some("ep-uid".into()),
            labels: Some(BTreeMap::from([("team".into(), "a".into())])),
            annotations: Some(BTreeMap::from([
                ("note".into(), "x".into()),
                (ANNOTATION_TRIGGER_TIME.into(), "2024-01-01T00:00:00Z".into()),
                (ANNOTATION_LAST_APPLIED.into(), "{}".into()),
            ])),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(ready).filter(|v| !v.is_empty()),
            not_ready_addresses: Some(not_ready).filter(|v| !v.is_empty()),
            ports: Some(vec![CorePort {
                name: Some("http".into()),
                port: 9376,
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
        }]),
    }
}

fn selectorless() -> ServiceRecord {
    ServiceFixture::new("my-service").selectorless().build()
}

fn mirror_persisted(plan: &SlicePlan) -> Vec<EndpointSlice> {
    persisted(plan)
}

#[test]
fn mirrors_selectorless_endpoints_per_family_and_ports() {
    let endpoints = manual_endpoints(
        vec![address("192.168.0.1", "a"), address("fd00::1", "b")],
        vec![address("192.168.0.2", "c")],
    );
    let result = desired_mirrored_slices(&selectorless(), &endpoints, &[]);
    let got: Vec<(String, Vec<String>, Vec<Option<bool>>)> = result
        .create
        .iter()
        .map(|s| {
            (
                s.address_type.clone(),
                ips(s),
                s.endpoints
                    .iter()
                    .map(|e| e.conditions.as_ref().unwrap().ready)
                    .collect(),
            )
        })
        .collect();
    let want = [
        (
            "IPv4".to_owned(),
            vec!["192.168.0.1".to_owned(), "192.168.0.2".to_owned()],
            vec![Some(true), Some(false)],
        ),
        ("IPv6".to_owned(), vec!["fd00::1".to_owned()], vec![Some(true)]),
    ];
    assert_eq!(got, want);
    let slice = &result.create[0];
    let labels = slice.metadata.labels.as_ref().unwrap();
    assert_eq!(
        labels.get(LABEL_MANAGED_BY).map(String::as_str),
        Some(MIRRORING_CONTROLLER_NAME)
    );
    assert_eq!(
        labels.get(LABEL_SERVICE_NAME).map(String::as_str),
        Some("my-service")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    let annotations = slice.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations.keys().collect::<Vec<_>>(), ["note"]);
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Endpoints", "ep-uid", Some(true))
    );
    let endpoint = &slice.endpoints[0];
    assert_eq!(
        (
            endpoint.conditions.as_ref().unwrap().serving,
            endpoint.zone.as_ref()
        ),
        (None, None)
    );
    assert_eq!(endpoint.node_name.as_deref(), Some("node-a"));
    assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(9376));

    let again = desired_mirrored_slices(&selectorless(), &endpoints, &mirror_persisted(&result));
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn not_mirrored_when_skipped_or_selected() {
    let endpoints = manual_endpoints(vec![address("192.168.0.1", "a")], vec![]);
    let existing = persisted(&desired_mirrored_slices(&selectorless(), &endpoints, &[]));
    let mut skip = endpoints.clone();
    skip.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(LABEL_SKIP_MIRROR.into(), "true".into());
    let mut leader = endpoints.clone();
    leader
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANNOTATION_LEADER.into(), "{}".into());
    let cases = [
        ("skip-mirror", selectorless(), skip),
        ("leader", selectorless(), leader),
        (
            "service has selector",
            ServiceFixture::new("my-service").build(),
            endpoints,
        ),
    ];
    for (name, svc, endpoints) in cases {
        let result = desired_mirrored_slices(&svc, &endpoints, &existing);
        assert_eq!(result.delete.len(), 1, "{name}");
        assert!(result.create.is_empty() && result.update.is_empty(), "{name}");
    }
}

#[test]
fn invalid_and_excess_addresses_skipped_and_reported() {
    let ready: Vec<_> = (0..1100).map(|i| address(&ip_of(i), &format!("p{i}"))).collect();
    let mut endpoints = manual_endpoints(ready, vec![address("not-an-ip", "bad")]);
    endpoints.subsets.as_mut().unwrap()[0]
        .addresses
        .as_mut()
        .unwrap()
        .insert(0, address("10.0.0.999", "bad2"));
    let result = desired_mirrored_slices(&selectorless(), &endpoints, &[]);
    assert_eq!(
        result
            .create
            .iter()
            .map(|s| s.endpoints.len())
            .collect::<Vec<_>>(),
        [MAX_MIRRORED_PER_SUBSET]
    );
    let reasons: Vec<(&str, &str)> = result
        .skipped
        .iter()
        .map(|(what, why)| (what.as_str(), why.event_reason()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("10.0.0.999", "InvalidIPAddress"),
            ("not-an-ip", "InvalidIPAddress"),
            ("subset with ports [http:9376/TCP]", "TooManyAddressesToMirror")
        ]
    );
    assert_eq!(result.skipped[2].1, SkipReason::TooManyAddresses { skipped: 100 });
}

#[test]
fn mirrored_slice_updated_in_place_and_extras_deleted() {
    let endpoints = manual_endpoints(vec![address("192.168.0.1", "a")], vec![]);
    let mut existing = persisted(&desired_mirrored_slices(&selectorless(), &endpoints, &[]));
    let mut duplicate = existing[0].clone();
    duplicate.metadata.name = Some("my-service-zz".into());
    existing.push(duplicate);
    let changed = manual_endpoints(
        vec![address("192.168.0.1", "a"), address("192.168.0.2", "b")],
        vec![],
    );
    let result = desired_mirrored_slices(&selectorless(), &changed, &existing);
    assert_eq!(sizes(&result.update), [(Some("my-service-0".into()), 2)]);
    assert_eq!(result.update[0].metadata.resource_version.as_deref(), Some("5"));
    assert_eq!(sizes(&result.delete), [(Some("my-service-zz".into()), 1)]);
    assert!(result.create.is_empty());

    let mut deleting = changed;
    deleting.metadata.deletion_timestamp = Some(Time(ts("2024-01-01T00:00:00Z")));
    assert!(
        desired_mirrored_slices(&selectorless(), &deleting, &[])
            .create
            .is_empty()
    );
}
