use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::backendset::view::{AddressState, BackendSetRef, ExcludedAddress, HostnameState};

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + second).unwrap()
}

fn backend_set(status: Option<BackendSetStatus>) -> BackendSet {
    let mut bs: BackendSet = serde_json::from_value(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "BackendSet",
        "metadata": {"name": "db", "namespace": "shop", "uid": "u1", "generation": 4},
        "spec": {"serviceName": "postgres"}
    }))
    .unwrap();
    bs.status = status;
    bs
}

fn address(ip: &str, ready: bool) -> AddressState {
    AddressState {
        ip: ip.parse().unwrap(),
        hostname: None,
        node_name: None,
        zone: None,
        ports: BTreeMap::new(),
        ready,
        stale: false,
        last_probe_time: Some(at(50)),
        last_transition_time: Some(at(40)),
        message: (!ready).then(|| "connect: connection refused".to_owned()),
    }
}

fn view(addresses: Vec<AddressState>) -> BackendView {
    BackendView {
        backendset: BackendSetRef {
            name: "db".into(),
            namespace: "shop".into(),
            uid: "u1".into(),
            service: "db".into(),
        },
        generation: Some(4),
        addresses,
        ..BackendView::default()
    }
}

fn condition<'a>(status: &'a BackendSetStatus, type_: &str) -> (&'a str, &'a str, &'a str) {
    let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

#[test]
fn ready_condition_by_readiness() {
    let invalid = BackendView {
        invalid_probe: Some(crate::backendset::spec::EXEC_NOT_SUPPORTED.into()),
        ..view(vec![])
    };
    let cases = [
        (
            "all",
            Some(view(vec![
                address("198.51.100.10", true),
                address("198.51.100.11", true),
            ])),
            ("True", "AllReady", "2/2 addresses ready"),
            "2/2",
        ),
        (
            "some",
            Some(view(vec![
                address("198.51.100.10", true),
                address("198.51.100.11", false),
            ])),
            ("False", "SomeNotReady", "1/2 addresses ready"),
            "1/2",
        ),
        (
            "none",
            Some(view(vec![address("198.51.100.10", false)])),
            ("False", "NoneReady", "0/1 addresses ready"),
            "0/1",
        ),
        (
            "empty",
            Some(view(vec![])),
            ("False", "NoBackends", "no address to publish"),
            "0/0",
        ),
        (
            "exec",
            Some(invalid),
            (
                "False",
                "InvalidProbe",
                "nothing is published: exec probes are not supported: roster cannot run commands on external backends",
            ),
            "0/0",
        ),
        (
            "not looked at",
            None,
            ("Unknown", "Pending", "roster has not looked at the backends yet"),
            "0/0",
        ),
    ];
    for (name, view, want, summary) in cases {
        let status = desired_status(&backend_set(None), &Binding::Bound, view.as_ref(), at(100));
        assert_eq!(condition(&status, CONDITION_READY), want, "{name}");
        assert_eq!(status.summary.as_deref(), Some(summary), "{name}");
    }
}

#[test]
fn service_bound_condition_by_binding() {
    let cases = [
        (
            Binding::Bound,
            (
                "True",
                "Bound",
                "publishing the backends as the endpoints of Service postgres",
            ),
        ),
        (
            Binding::ServiceNotFound,
            (
                "False",
                "ServiceNotFound",
                "Service postgres does not exist in this namespace",
            ),
        ),
        (
            Binding::ServiceHasSelector,
            (
                "False",
                "ServiceHasSelector",
                "Service postgres selects pods (spec.selector or the roster.dev/selector annotation); only selectorless Services take backends from a BackendSet",
            ),
        ),
        (
            Binding::ServiceIsExternalName,
            (
                "False",
                "ServiceIsExternalName",
                "Service postgres is of type ExternalName, which has no endpoints",
            ),
        ),
        (
            Binding::Conflict {
                winner: "older".into(),
            },
            (
                "False",
                "Conflict",
                "BackendSet older is older and already publishes to Service postgres",
            ),
        ),
    ];
    for (binding, want) in cases {
        let status = desired_status(&backend_set(None), &binding, Some(&view(vec![])), at(100));
        assert_eq!(condition(&status, CONDITION_SERVICE_BOUND), want, "{binding:?}");
        assert_eq!(status.service_name.as_deref(), Some("postgres"));
    }
}

#[test]
fn resolved_condition_by_dns_state() {
    let name = |hostname: &str, resolution: Resolution| HostnameState {
        hostname: hostname.into(),
        resolution,
    };
    let stale = Resolution::Stale {
        error: "request timed out".into(),
        since: at(10),
        until: at(310),
    };
    let failed = Resolution::Failed {
        error: "NXDOMAIN: the name does not exist".into(),
    };
    let cases = [
        (vec![], ("True", "Resolved", "no DNS names to resolve")),
        (
            vec![name("a.example.com", Resolution::Resolved)],
            ("True", "Resolved", "1 DNS name(s) resolved"),
        ),
        (
            vec![name("a.example.com", Resolution::Pending)],
            ("Unknown", "Resolving", "waiting for the first DNS answers"),
        ),
        (
            vec![
                name("a.example.com", Resolution::Resolved),
                name("b.example.com", stale.clone()),
            ],
            (
                "False",
                "StaleAddresses",
                "b.example.com: lookups failing since 2023-11-14T22:13:30Z (request timed out); keeping the last known addresses until 2023-11-14T22:18:30Z",
            ),
        ),
        (
            vec![name("b.example.com", stale), name("c.example.com", failed)],
            (
                "False",
                "ResolveFailed",
                "c.example.com: NXDOMAIN: the name does not exist",
            ),
        ),
    ];
    for (hostnames, want) in cases {
        let view = BackendView {
            hostnames: hostnames.clone(),
            ..view(vec![])
        };
        let status = desired_status(&backend_set(None), &Binding::Bound, Some(&view), at(100));
        assert_eq!(condition(&status, CONDITION_RESOLVED), want, "{hostnames:?}");
    }
}

#[test]
fn transition_times_move_only_when_the_status_changes() {
    let up = view(vec![address("198.51.100.10", true)]);
    let first = desired_status(&backend_set(None), &Binding::Bound, Some(&up), at(100));
    assert!(
        first
            .conditions
            .iter()
            .all(|c| c.last_transition_time.0 == at(100))
    );
    assert!(first.conditions.iter().all(|c| c.observed_generation == Some(4)));
    assert_eq!(first.observed_generation, Some(4));

    let later = desired_status(
        &backend_set(Some(first.clone())),
        &Binding::Bound,
        Some(&up),
        at(200),
    );
    assert_eq!(later, first, "nothing changed: same status, same times");
    assert!(!status_needs_write(Some(&first), &later));

    let down = view(vec![address("198.51.100.10", false)]);
    let changed = desired_status(
        &backend_set(Some(first.clone())),
        &Binding::Bound,
        Some(&down),
        at(300),
    );
    let times: Vec<(&str, Timestamp)> = changed
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.last_transition_time.0))
        .collect();
    assert_eq!(
        times,
        [
            ("Ready", at(300)),
            ("Resolved", at(100)),
            ("ServiceBound", at(100))
        ]
    );
    assert!(status_needs_write(Some(&first), &changed));
    assert_eq!((changed.ready_count, changed.total_count), (0, 1));
}

#[test]
fn probe_times_alone_need_no_write() {
    let mut up = view(vec![address("198.51.100.10", true)]);
    let first = desired_status(&backend_set(None), &Binding::Bound, Some(&up), at(100));
    up.addresses[0].last_probe_time = Some(at(150));
    let probed = desired_status(
        &backend_set(Some(first.clone())),
        &Binding::Bound,
        Some(&up),
        at(150),
    );
    assert_ne!(probed, first);
    assert!(!status_needs_write(Some(&first), &probed));
    assert!(status_needs_write(None, &probed));
}

#[test]
fn addresses_list_published_and_excluded_with_messages() {
    let mut resolved = address("198.51.100.20", true);
    resolved.hostname = Some("db.example.com".into());
    let view = BackendView {
        excluded: vec![
            ExcludedAddress {
                address: "127.0.0.1".into(),
                hostname: None,
                message: "denied: 127.0.0.1 is in --probe-deny-cidrs 127.0.0.0/8".into(),
                denied: true,
            },
            ExcludedAddress {
                address: "not-an-ip".into(),
                hostname: None,
                message: "invalid IP".into(),
                denied: false,
            },
        ],
        hostnames: vec![HostnameState {
            hostname: "db.example.com".into(),
            resolution: Resolution::Stale {
                error: "timed out".into(),
                since: at(10),
                until: at(310),
            },
        }],
        ..view(vec![address("198.51.100.10", false), resolved])
    };
    let status = desired_status(&backend_set(None), &Binding::Bound, Some(&view), at(100));
    let got: Vec<(&str, Option<&str>, bool, Option<&str>)> = status
        .addresses
        .iter()
        .map(|a| {
            (
                a.address.as_str(),
                a.hostname.as_deref(),
                a.ready,
                a.message.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "127.0.0.1",
                None,
                false,
                Some("denied: 127.0.0.1 is in --probe-deny-cidrs 127.0.0.0/8")
            ),
            ("198.51.100.10", None, false, Some("connect: connection refused")),
            (
                "198.51.100.20",
                Some("db.example.com"),
                true,
                Some(
                    "last known address of db.example.com (lookups failing), kept until 2023-11-14T22:18:30Z"
                )
            ),
            ("not-an-ip", None, false, Some("invalid IP")),
        ]
    );
    let first = &status.addresses[1];
    assert_eq!(
        (
            first.last_probe_time.as_deref(),
            first.last_transition_time.as_deref()
        ),
        (Some("2023-11-14T22:14:10Z"), Some("2023-11-14T22:14:00Z"))
    );
    assert_eq!(
        (status.ready_count, status.total_count),
        (1, 2),
        "excluded addresses are not counted"
    );
}

#[test]
fn status_serializes_lists_even_when_empty() {
    let status = desired_status(
        &backend_set(None),
        &Binding::ServiceNotFound,
        Some(&view(vec![])),
        at(0),
    );
    let value = serde_json::to_value(&status).unwrap();
    assert_eq!(
        value["addresses"],
        json!([]),
        "a merge patch must clear the old list"
    );
    assert_eq!(value["conditions"].as_array().unwrap().len(), 3);
    assert_eq!(value["summary"], "0/0");
}

#[test]
fn observed_generation_is_the_views() {
    let behind = BackendView {
        generation: Some(3),
        ..view(vec![])
    };
    let status = desired_status(&backend_set(None), &Binding::Bound, Some(&behind), at(0));
    assert_eq!(
        status.observed_generation,
        Some(3),
        "the worker has not seen generation 4 yet"
    );
    assert!(status.conditions.iter().all(|c| c.observed_generation == Some(3)));
    let status = desired_status(&backend_set(None), &Binding::Bound, None, at(0));
    assert_eq!(status.observed_generation, Some(4));
}
