//! Table tests of the desired Endpoints and the write decision.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointSubset, Endpoints};

use super::endpoints::*;
use super::fixtures::{PodFixture, ServiceFixture, port, ts};
use super::labels::*;
use crate::cache::{IpFamily, PodPhase, PodRecord, Protocol, TargetPort};

fn ip_of(i: usize) -> String {
    format!("10.1.{}.{}", i / 256, i % 256)
}

fn input() -> EndpointsInput {
    EndpointsInput::default()
}

/// `(ports "name:port", ready IPs, not-ready IPs)` per subset.
type Shape = Vec<(Vec<String>, Vec<String>, Vec<String>)>;

fn shape(subsets: &[EndpointSubset]) -> Shape {
    let ips = |a: &Option<Vec<_>>| {
        a.iter()
            .flatten()
            .map(|a: &k8s_openapi::api::core::v1::EndpointAddress| a.ip.clone())
            .collect()
    };
    subsets
        .iter()
        .map(|s| {
            let ports = s
                .ports
                .iter()
                .flatten()
                .map(|p| format!("{}:{}", p.name.as_deref().unwrap_or(""), p.port));
            (ports.collect(), ips(&s.addresses), ips(&s.not_ready_addresses))
        })
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn seed_hostname_service_endpoints() {
    // deploy-hostname (3 replicas, app=webserver, containerPort 80) behind hostname-svc-clusterip (8080 → 80).
    let svc = ServiceFixture::new("hostname-svc-clusterip").build();
    let pods: Vec<_> = ["10.240.194.16", "10.240.194.9", "10.240.194.100"]
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            PodFixture::new(&format!("hostname-deployment-7b57c676b9-{i}"))
                .ip(ip)
                .build()
        })
        .collect();
    let desired = desired_endpoints(&svc, &pods, input());
    let want = vec![(
        strings(&["web-port:80"]),
        strings(&["10.240.194.9", "10.240.194.16", "10.240.194.100"]),
        vec![],
    )];
    assert_eq!(shape(&desired.subsets), want);
    let address = &desired.subsets[0].addresses.as_ref().unwrap()[0];
    let target = address.target_ref.as_ref().unwrap();
    assert_eq!(target.kind.as_deref(), Some("Pod"));
    assert_eq!(target.namespace.as_deref(), Some("shop"));
    assert_eq!(target.name.as_deref(), Some("hostname-deployment-7b57c676b9-1"));
    assert_eq!(
        target.uid.as_deref(),
        Some("uid-hostname-deployment-7b57c676b9-1")
    );
    assert_eq!(target.resource_version, None);
    assert_eq!(address.node_name.as_deref(), Some("node-a"));
    assert_eq!(address.hostname, None);
    let port = &desired.subsets[0].ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        desired.labels,
        BTreeMap::from([(LABEL_ENDPOINTS_MANAGED_BY.to_owned(), "roster".to_owned())])
    );
    assert!(!desired.truncated);
    assert!(desired.annotations.is_empty());
}

#[test]
fn terminating_pod_excluded_from_endpoints_unless_pnra() {
    let pods = vec![
        PodFixture::new("ready").ip("10.0.0.1").build(),
        PodFixture::new("leaving").ip("10.0.0.2").terminating().build(),
        PodFixture::new("starting").ip("10.0.0.3").not_ready().build(),
    ];
    let cases = [
        (
            "default",
            ServiceFixture::new("web").build(),
            (vec!["10.0.0.1"], vec!["10.0.0.3"]),
        ),
        (
            "pnra",
            ServiceFixture::new("web").publish_not_ready().build(),
            (vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"], vec![]),
        ),
    ];
    for (name, svc, (ready, not_ready)) in cases {
        let desired = desired_endpoints(&svc, &pods, input());
        assert_eq!(
            shape(&desired.subsets),
            vec![(strings(&["web-port:80"]), strings(&ready), strings(&not_ready))],
            "{name}"
        );
    }
}

#[test]
fn terminal_and_ipless_pods_excluded_from_endpoints() {
    let svc = ServiceFixture::new("web").build();
    let pods = vec![
        PodFixture::new("done")
            .ip("10.0.0.1")
            .phase(PodPhase::Succeeded)
            .build(),
        PodFixture::new("crashed")
            .ip("10.0.0.2")
            .phase(PodPhase::Failed)
            .build(),
        PodFixture::new("pending").ips(&[]).build(),
        PodFixture::new("running").ip("10.0.0.4").build(),
    ];
    let desired = desired_endpoints(&svc, &pods, input());
    assert_eq!(
        shape(&desired.subsets),
        vec![(strings(&["web-port:80"]), strings(&["10.0.0.4"]), vec![])]
    );
}

#[test]
fn named_port_resolved_per_pod_in_endpoints() {
    let svc = ServiceFixture::new("web")
        .ports(vec![
            port("http", 80, Protocol::Tcp, TargetPort::Name("http".into())),
            port("metrics", 9100, Protocol::Tcp, TargetPort::Number(9100)),
        ])
        .build();
    let pods = vec![
        PodFixture::new("old")
            .ip("10.0.0.1")
            .port("http", 8080, Protocol::Tcp)
            .build(),
        PodFixture::new("new")
            .ip("10.0.0.2")
            .port("http", 8081, Protocol::Tcp)
            .build(),
        PodFixture::new("udp-only")
            .ip("10.0.0.3")
            .port("http", 8080, Protocol::Udp)
            .build(),
    ];
    let desired = desired_endpoints(&svc, &pods, input());
    let want = vec![
        (strings(&["http:8080"]), strings(&["10.0.0.1"]), vec![]),
        (strings(&["http:8081"]), strings(&["10.0.0.2"]), vec![]),
        (
            strings(&["metrics:9100"]),
            strings(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
            vec![],
        ),
    ];
    assert_eq!(shape(&desired.subsets), want);
}

#[test]
fn pod_without_any_resolvable_port_is_absent() {
    let svc = ServiceFixture::new("web")
        .ports(vec![port(
            "http",
            80,
            Protocol::Tcp,
            TargetPort::Name("http".into()),
        )])
        .build();
    let pods = vec![PodFixture::new("bare").build()];
    assert!(desired_endpoints(&svc, &pods, input()).subsets.is_empty());
}

#[test]
fn endpoints_single_family() {
    let dual = PodFixture::new("dual")
        .ips(&["10.0.0.1", "fd00::1", "fd00::2"])
        .build();
    let v6_first = PodFixture::new("v6first").ips(&["fd00::9", "10.0.0.9"]).build();
    let v4_only = PodFixture::new("v4only").ip("10.0.0.5").build();
    let pods = vec![dual, v6_first, v4_only];
    let cases = [
        (
            "ipFamilies[0] is IPv6",
            ServiceFixture::new("web")
                .families(&[IpFamily::V6, IpFamily::V4])
                .build(),
            vec!["fd00::1", "fd00::9"],
        ),
        (
            "ipFamilies[0] is IPv4",
            ServiceFixture::new("web")
                .families(&[IpFamily::V4, IpFamily::V6])
                .build(),
            vec!["10.0.0.1", "10.0.0.5", "10.0.0.9"],
        ),
        (
            "no families, v6 cluster IP",
            ServiceFixture::new("web")
                .families(&[])
                .cluster_ip("fd00:96::a")
                .build(),
            vec!["fd00::1", "fd00::9"],
        ),
        (
            "headless, no families: pod primary",
            ServiceFixture::new("web").families(&[]).headless().build(),
            vec!["10.0.0.1", "10.0.0.5", "fd00::9"],
        ),
    ];
    for (name, svc, want) in cases {
        let desired = desired_endpoints(&svc, &pods, input());
        assert_eq!(
            shape(&desired.subsets),
            vec![(strings(&["web-port:80"]), strings(&want), vec![])],
            "{name}"
        );
    }
}

#[test]
fn headless_without_ports_gets_portless_subset() {
    let pods = vec![
        PodFixture::new("a").ip("10.0.0.1").build(),
        PodFixture::new("b").ip("10.0.0.2").not_ready().build(),
    ];
    let headless = ServiceFixture::new("web").headless().ports(vec![]).build();
    let desired = desired_endpoints(&headless, &pods, input());
    assert_eq!(
        shape(&desired.subsets),
        vec![(vec![], strings(&["10.0.0.1"]), strings(&["10.0.0.2"]))]
    );
    assert!(desired.subsets[0].ports.is_none());
    assert_eq!(desired.labels.get(LABEL_HEADLESS).map(String::as_str), Some(""));

    let clusterip = ServiceFixture::new("web").ports(vec![]).build();
    assert!(desired_endpoints(&clusterip, &pods, input()).subsets.is_empty());
}

#[test]
fn endpoints_labels_follow_service_and_skip_mirror() {
    let svc = ServiceFixture::new("web")
        .labels(&[("team", "a"), (LABEL_HEADLESS, "x")])
        .build();
    let cases = [
        (
            svc.clone(),
            false,
            vec![(LABEL_ENDPOINTS_MANAGED_BY, "roster"), ("team", "a")],
        ),
        (
            svc,
            true,
            vec![
                (LABEL_SKIP_MIRROR, "true"),
                (LABEL_ENDPOINTS_MANAGED_BY, "roster"),
                ("team", "a"),
            ],
        ),
        (
            ServiceFixture::new("web").headless().build(),
            false,
            vec![(LABEL_ENDPOINTS_MANAGED_BY, "roster"), (LABEL_HEADLESS, "")],
        ),
    ];
    for (svc, skip_mirror, want) in cases {
        let want: BTreeMap<String, String> = want
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(
            endpoints_labels(&svc, skip_mirror),
            want,
            "skip-mirror {skip_mirror}"
        );
    }
}

#[test]
fn hostname_set_on_endpoints_address_for_matching_subdomain() {
    let svc = ServiceFixture::new("web").build();
    let pods = vec![
        PodFixture::new("a").ip("10.0.0.1").hostname("a", "web").build(),
        PodFixture::new("b").ip("10.0.0.2").hostname("b", "other").build(),
    ];
    let desired = desired_endpoints(&svc, &pods, input());
    let hostnames: Vec<Option<String>> = desired.subsets[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.hostname.clone())
        .collect();
    assert_eq!(hostnames, [Some("a".to_owned()), None]);
}

fn many_pods(ready: usize, not_ready: usize) -> Vec<Arc<PodRecord>> {
    (0..ready + not_ready)
        .map(|i| {
            let pod = PodFixture::new(&format!("p{i:05}")).ip(&ip_of(i));
            if i < ready {
                pod.build()
            } else {
                pod.not_ready().build()
            }
        })
        .collect()
}

fn counts(subsets: &[EndpointSubset]) -> Vec<(usize, usize)> {
    subsets
        .iter()
        .map(|s| {
            (
                s.addresses.as_ref().map_or(0, Vec::len),
                s.not_ready_addresses.as_ref().map_or(0, Vec::len),
            )
        })
        .collect()
}

#[test]
fn truncates_to_1000_ready_first_with_annotation() {
    let svc = ServiceFixture::new("web").build();
    let cases = [
        ("under capacity", many_pods(600, 400), vec![(600, 400)], false),
        (
            "ready over capacity drops not ready",
            many_pods(1200, 100),
            vec![(1000, 0)],
            true,
        ),
        ("not ready share", many_pods(900, 300), vec![(900, 100)], true),
    ];
    for (name, pods, want, truncated) in cases {
        let desired = desired_endpoints(&svc, &pods, input());
        assert_eq!(counts(&desired.subsets), want, "{name}");
        assert_eq!(desired.truncated, truncated, "{name}");
        let annotation = desired
            .annotations
            .get(ANNOTATION_OVER_CAPACITY)
            .map(String::as_str);
        assert_eq!(annotation, truncated.then_some(OVER_CAPACITY_TRUNCATED), "{name}");
    }
    // Truncation keeps the first addresses in canonical (IP byte) order.
    let desired = desired_endpoints(&svc, &many_pods(1200, 0), input());
    let last = desired.subsets[0].addresses.as_ref().unwrap().last().unwrap();
    assert_eq!(last.ip, ip_of(999));
}

#[test]
fn truncation_is_proportional_per_subset() {
    let svc = ServiceFixture::new("web")
        .ports(vec![port(
            "http",
            80,
            Protocol::Tcp,
            TargetPort::Name("http".into()),
        )])
        .build();
    let pods: Vec<_> = (0..1500)
        .map(|i| {
            let target = if i < 900 { 8080 } else { 8081 };
            PodFixture::new(&format!("p{i:05}"))
                .ip(&ip_of(i))
                .port("http", target, Protocol::Tcp)
                .build()
        })
        .collect();
    let desired = desired_endpoints(&svc, &pods, input());
    assert_eq!(counts(&desired.subsets), [(600, 0), (400, 0)]);
}

#[test]
fn truncated_endpoints_not_rewritten_every_sync() {
    let svc = ServiceFixture::new("web").build();
    let pods = many_pods(1100, 50);
    let desired = desired_endpoints(&svc, &pods, input());
    let mut written = endpoints_need_write(None, &desired).expect("create");
    written.metadata.resource_version = Some("42".to_owned());
    assert_eq!(endpoints_need_write(Some(&written), &desired), None);
    // The next sync computes the same truncated state again.
    let again = desired_endpoints(
        &svc,
        &pods,
        EndpointsInput {
            trigger_time: Some(ts("2024-06-01T00:00:00Z")),
            ..input()
        },
    );
    assert_eq!(endpoints_need_write(Some(&written), &again), None);
}

fn written(desired: &DesiredEndpoints) -> Endpoints {
    let mut endpoints = endpoints_need_write(None, desired).unwrap();
    endpoints.metadata.resource_version = Some("7".to_owned());
    endpoints
}

#[test]
fn endpoints_need_write_ignores_ordering_and_target_ref_resource_version() {
    let svc = ServiceFixture::new("web").build();
    let pods = vec![
        PodFixture::new("a").ip("10.0.0.1").build(),
        PodFixture::new("b").ip("10.0.0.2").build(),
    ];
    let desired = desired_endpoints(&svc, &pods, input());
    let mut current = written(&desired);
    let subset = &mut current.subsets.as_mut().unwrap()[0];
    let addresses = subset.addresses.as_mut().unwrap();
    addresses.reverse();
    addresses[0].target_ref.as_mut().unwrap().resource_version = Some("999".to_owned());
    assert_eq!(endpoints_need_write(Some(&current), &desired), None);
}

#[test]
fn trigger_time_alone_never_causes_write() {
    let svc = ServiceFixture::new("web").build();
    let pods = vec![PodFixture::new("a").ip("10.0.0.1").build()];
    let at = |t: &str| EndpointsInput {
        trigger_time: Some(ts(t)),
        ..input()
    };
    let current = written(&desired_endpoints(&svc, &pods, at("2024-01-01T00:00:00Z")));
    assert_eq!(
        endpoints_need_write(
            Some(&current),
            &desired_endpoints(&svc, &pods, at("2024-02-01T00:00:00Z"))
        ),
        None
    );
    assert_eq!(
        endpoints_need_write(Some(&current), &desired_endpoints(&svc, &pods, input())),
        None
    );

    let more = vec![pods[0].clone(), PodFixture::new("b").ip("10.0.0.2").build()];
    let update = endpoints_need_write(
        Some(&current),
        &desired_endpoints(&svc, &more, at("2024-02-01T00:00:00Z")),
    )
    .unwrap();
    let annotations = update.metadata.annotations.unwrap();
    assert_eq!(
        annotations.get(ANNOTATION_TRIGGER_TIME).map(String::as_str),
        Some("2024-02-01T00:00:00Z")
    );
    let update = endpoints_need_write(Some(&current), &desired_endpoints(&svc, &more, input())).unwrap();
    assert_eq!(
        update.metadata.annotations.unwrap().get(ANNOTATION_TRIGGER_TIME),
        None
    );
}

#[test]
fn endpoints_write_keeps_foreign_annotations_and_resource_version() {
    let svc = ServiceFixture::new("web").labels(&[("team", "b")]).build();
    let pods = vec![PodFixture::new("a").ip("10.0.0.1").build()];
    let no_pods: &[Arc<PodRecord>] = &[];
    let mut current = written(&desired_endpoints(
        &ServiceFixture::new("web").build(),
        no_pods,
        input(),
    ));
    current.metadata.annotations = Some(BTreeMap::from([
        ("note".to_owned(), "keep".to_owned()),
        (
            ANNOTATION_OVER_CAPACITY.to_owned(),
            OVER_CAPACITY_TRUNCATED.to_owned(),
        ),
    ]));
    current
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("foreign".to_owned(), "x".to_owned());
    let update = endpoints_need_write(Some(&current), &desired_endpoints(&svc, &pods, input())).unwrap();
    assert_eq!(update.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(
        update.metadata.annotations.unwrap(),
        BTreeMap::from([("note".to_owned(), "keep".to_owned())])
    );
    let labels: Vec<&str> = update
        .metadata
        .labels
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(labels, [LABEL_ENDPOINTS_MANAGED_BY, "team"]);
    assert_eq!(update.subsets.unwrap().len(), 1);
}

#[test]
fn endpoints_rewritten_when_labels_or_capacity_annotation_drift() {
    let svc = ServiceFixture::new("web").build();
    let pods = vec![PodFixture::new("a").ip("10.0.0.1").build()];
    let desired = desired_endpoints(&svc, &pods, input());
    let current = written(&desired);

    let mut relabelled = current.clone();
    relabelled
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("extra".to_owned(), "1".to_owned());
    let mut stale_capacity = current.clone();
    stale_capacity.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_OVER_CAPACITY.to_owned(),
        OVER_CAPACITY_TRUNCATED.to_owned(),
    )]));
    let mut emptied = current;
    emptied.subsets = None;
    for (name, current) in [
        ("labels", relabelled),
        ("capacity", stale_capacity),
        ("subsets", emptied),
    ] {
        let update = endpoints_need_write(Some(&current), &desired).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(
            endpoints_need_write(Some(&update), &desired),
            None,
            "{name} converges"
        );
    }
}

#[test]
fn endpoints_created_when_missing() {
    let svc = ServiceFixture::new("web").build();
    let no_pods: &[Arc<PodRecord>] = &[];
    let created = endpoints_need_write(None, &desired_endpoints(&svc, no_pods, input())).unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("web"));
    assert_eq!(created.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(created.metadata.resource_version, None);
    assert_eq!(created.subsets, Some(vec![]));
    assert!(is_roster_endpoints(&created));
}

#[test]
fn adopted_endpoints_are_not_rewritten_for_the_ownership_label_alone() {
    let svc = ServiceFixture::new("web").labels(&[("team", "a")]).build();
    let pods = vec![PodFixture::new("a").ip("10.0.0.1").build()];
    let adopt = EndpointsInput {
        adopt: true,
        ..input()
    };
    let desired = desired_endpoints(&svc, &pods, adopt.clone());
    let mut upstream = written(&desired);
    upstream
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove(LABEL_ENDPOINTS_MANAGED_BY);
    assert_eq!(
        endpoints_need_write(Some(&upstream), &desired),
        None,
        "adopted in place"
    );
    let strict = desired_endpoints(&svc, &pods, input());
    assert!(
        endpoints_need_write(Some(&upstream), &strict).is_some(),
        "without adoption the label is written"
    );
    let more = vec![pods[0].clone(), PodFixture::new("b").ip("10.0.0.2").build()];
    let update = endpoints_need_write(Some(&upstream), &desired_endpoints(&svc, &more, adopt)).unwrap();
    assert!(is_roster_endpoints(&update), "a real write carries the label");
}

#[test]
fn released_endpoints_lose_only_rosters_labels() {
    let svc = ServiceFixture::new("web").labels(&[("team", "a")]).build();
    let skip = EndpointsInput {
        skip_mirror: true,
        ..input()
    };
    let current = written(&desired_endpoints(
        &svc,
        &[PodFixture::new("a").ip("10.0.0.1").build()],
        skip,
    ));
    let released = released_endpoints(&current).expect("roster's: released");
    assert_eq!(
        released.metadata.labels,
        Some(BTreeMap::from([("team".to_owned(), "a".to_owned())]))
    );
    assert_eq!(released.subsets, current.subsets, "the endpoints stay");
    assert_eq!(
        released.metadata.resource_version,
        current.metadata.resource_version
    );
    assert_eq!(released_endpoints(&released), None, "not roster's any more");
}

#[test]
fn endpoints_changes_are_described_for_the_logs() {
    let svc = ServiceFixture::new("web").build();
    let one = vec![PodFixture::new("a").ip("10.0.0.1").build()];
    let two = vec![
        one[0].clone(),
        PodFixture::new("b").ip("10.0.0.2").not_ready().build(),
    ];
    let first = written(&desired_endpoints(&svc, &one, input()));
    assert_eq!(endpoints_change(None, &first), "create: 1 ready, 0 not ready");
    let second = endpoints_need_write(Some(&first), &desired_endpoints(&svc, &two, input())).unwrap();
    assert_eq!(
        endpoints_change(Some(&first), &second),
        "ready 1→1, not ready 0→1"
    );
    let mut relabelled = first.clone();
    relabelled.metadata.labels = None;
    assert_eq!(
        endpoints_change(Some(&relabelled), &first),
        "labels, annotations or owner"
    );
}

/// Sources that all resolve the same ports: not ready and ready ones, two pods sharing an IP (host
/// network), a hostname, terminating pods published by `publishNotReadyAddresses`, out of IP order.
fn same_port_sources() -> Vec<Arc<PodRecord>> {
    vec![
        PodFixture::new("c").ip("10.0.0.30").build(),
        PodFixture::new("a").ip("10.0.0.4").not_ready().build(),
        PodFixture::new("host-1").ip("10.0.0.9").build(),
        PodFixture::new("host-2").ip("10.0.0.9").not_ready().build(),
        PodFixture::new("h").ip("10.0.0.12").hostname("h", "web").build(),
        PodFixture::new("t").ip("10.0.0.2").terminating().build(),
        PodFixture::new("b").ip("10.0.0.100").build(),
    ]
}

#[test]
fn one_subset_is_what_the_repack_makes() {
    for svc in [
        ServiceFixture::new("web").build(),
        ServiceFixture::new("web").publish_not_ready().build(),
        ServiceFixture::new("web").headless().ports(Vec::new()).build(),
    ] {
        let sources = same_port_sources();
        let entries: Vec<_> = sources
            .iter()
            .filter_map(|s| Some((crate::desired::verdict::endpoints_entry(&svc, &**s).ok()?, &**s)))
            .collect();
        assert!(entries.len() >= 6, "{}", entries.len());
        assert_eq!(
            vec![one_subset(&svc, &entries)],
            repacked(&svc, &entries),
            "{svc:?}"
        );
    }
}

#[test]
fn same_subsets_ignores_order_grouping_and_resource_versions_only() {
    let svc = ServiceFixture::new("web").build();
    let desired = desired_endpoints(&svc, &same_port_sources(), input());
    let canonical = desired.subsets.clone();
    let mut current = Endpoints {
        subsets: Some(canonical.clone()),
        ..Endpoints::default()
    };
    assert!(same_subsets(&current, &canonical));
    // Reordered, split into one subset per address, with resourceVersions: the same endpoints.
    let subset = &canonical[0];
    let mut split: Vec<EndpointSubset> = subset
        .addresses
        .iter()
        .flatten()
        .rev()
        .map(|a| {
            let mut a = a.clone();
            a.target_ref.as_mut().unwrap().resource_version = Some("7".into());
            EndpointSubset {
                addresses: Some(vec![a]),
                ports: subset.ports.clone(),
                ..EndpointSubset::default()
            }
        })
        .collect();
    split.push(EndpointSubset {
        addresses: None,
        ..subset.clone()
    });
    current.subsets = Some(split.clone());
    assert!(same_subsets(&current, &canonical));
    // An address listed twice (ready and not ready) is compared as the repack reads it.
    let first = subset.addresses.as_ref().unwrap()[0].clone();
    let mut doubled = split.clone();
    doubled.push(EndpointSubset {
        not_ready_addresses: Some(vec![first]),
        addresses: None,
        ports: subset.ports.clone(),
    });
    current.subsets = Some(doubled.clone());
    assert!(!same_subsets(&current, &canonical));
    assert_eq!(
        same_subsets(&current, &canonical),
        canonical_subsets(&current) == canonical
    );
    // A different hostname, node or port is a difference.
    for change in 0..3 {
        let mut changed = canonical.clone();
        let address = &mut changed[0].addresses.as_mut().unwrap()[0];
        match change {
            0 => address.hostname = Some("other".into()),
            1 => address.node_name = Some("node-z".into()),
            _ => changed[0].ports.as_mut().unwrap()[0].port += 1,
        }
        current.subsets = Some(changed);
        assert!(!same_subsets(&current, &canonical), "change {change}");
    }
}
