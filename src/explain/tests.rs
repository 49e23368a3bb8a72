//! The pure explanation over objects decoded as the API server sends them.

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;
use crate::cache::{NodeProjection, PodProjection};
use crate::desired::Exclusion;

const NOW: &str = "2024-01-01T00:10:00Z";

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

fn service(spec: Value) -> Service {
    decode(json!({"metadata": {"namespace": "shop", "name": "web", "uid": "svc-uid"}, "spec": spec}))
}

fn web_service() -> Service {
    service(json!({
        "selector": {"app": "web", "tier": "front"},
        "clusterIP": "10.96.0.10",
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    }))
}

/// A running, ready pod of the web Service on Node n1 with container port `http` 8080; `patch` is merged in.
fn pod(name: &str, ip: &str, patch: Value) -> PodProjection {
    let mut pod = json!({
        "metadata": {"namespace": "shop", "name": name, "uid": format!("uid-{name}"),
                     "labels": {"app": "web", "tier": "front"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:07:00Z"}]}
    });
    merge(&mut pod, &patch);
    decode(pod)
}

/// A JSON merge patch: objects merge, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    if let (Value::Object(target), Value::Object(patch)) = (&mut *target, patch) {
        for (key, value) in patch {
            match value {
                Value::Null => drop(target.remove(key)),
                value => merge(target.entry(key.clone()).or_insert(Value::Null), value),
            }
        }
        return;
    }
    *target = patch.clone();
}

fn objects(service: Service, pods: Vec<PodProjection>) -> Objects {
    Objects {
        service,
        pods,
        nodes: Ok(vec![decode::<NodeProjection>(
            json!({"metadata": {"name": "n1"}}),
        )]),
        ..Objects::default()
    }
}

fn report(objects: &Objects) -> Report {
    explain(objects, NOW.parse().unwrap())
}

fn only_pod(report: &Report) -> &PodExplanation {
    assert_eq!(report.pods.len(), 1, "{:#?}", report.pods);
    &report.pods[0]
}

/// (case, patch of the pod, verdict, Endpoints placement, slice placement, start of the reason)
type Cause = (
    &'static str,
    Value,
    Verdict,
    Placement,
    SlicePlacement,
    &'static str,
);

#[rustfmt::skip]
fn causes() -> Vec<Cause> {
    use Exclusion::*;
    let absent = |why| Placement::Absent { why };
    let no_slice = |why| SlicePlacement::Absent { why };
    let slice = |ready, serving, terminating| SlicePlacement::Endpoint { ready, serving, terminating };
    let not_ready = json!({"status": {"conditions": [
        {"type": "Ready", "status": "False", "lastTransitionTime": "2024-01-01T00:07:00Z"}]}});
    let deleted = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:09:00Z"}});
    let unstarted = json!({"spec": {"nodeName": null}, "status": {"podIP": null, "podIPs": []}});
    let port_web = json!({"spec": {"containers": [{"name": "app", "ports": [{"name": "web", "containerPort": 8080}]}]}});
    vec![
        ("ready", json!({}), Verdict::Ready, Placement::Addresses, slice(true, true, false), "Ready=True for 3m"),
        ("not ready", not_ready, Verdict::NotReady, Placement::NotReadyAddresses, slice(false, false, false),
         "not Ready for 3m: a readiness probe fails"),
        ("terminating", deleted, Verdict::Terminating, absent(Terminating), slice(false, true, true),
         "terminating (being deleted)"),
        ("succeeded", json!({"status": {"phase": "Succeeded"}}), Verdict::Terminal, absent(Terminal),
         no_slice(Terminal), "phase Succeeded"),
        ("failed", json!({"status": {"phase": "Failed"}}), Verdict::Terminal, absent(Terminal), no_slice(Terminal),
         "phase Failed"),
        ("no ip", unstarted, Verdict::NoIp, absent(NoIp), no_slice(NoIp), "no IP yet: the pod is not scheduled"),
        ("no port", port_web, Verdict::NoPort, absent(NoPort), no_slice(NoPort),
         "no port of the Service resolves on it"),
        ("node missing", json!({"spec": {"nodeName": "ghost"}}), Verdict::NodeMissing, Placement::Addresses,
         no_slice(NodeMissing), "Node ghost does not exist"),
    ]
}

#[test]
fn each_cause_is_named_with_the_placement_roster_computes() {
    let cases = causes();
    for (name, patch, verdict, endpoints, slices, why) in cases {
        let report = report(&objects(web_service(), vec![pod("p", "10.0.0.1", patch)]));
        let pod = only_pod(&report);
        assert_eq!(
            (pod.verdict, pod.endpoints, pod.slices),
            (verdict, endpoints, slices),
            "{name}"
        );
        assert!(pod.why[0].starts_with(why), "{name}: {:?}", pod.why);
    }
}

#[test]
fn an_unresolved_named_port_lists_the_ports_the_pod_has() {
    let patch = json!({"spec": {"containers": [{"name": "app", "ports": [
        {"name": "web", "containerPort": 8080}, {"name": "http", "containerPort": 53, "protocol": "UDP"}]}]}});
    let report = report(&objects(web_service(), vec![pod("p", "10.0.0.1", patch)]));
    let pod = only_pod(&report);
    assert_eq!(pod.ports[0].resolved, None);
    assert_eq!(
        pod.why[1],
        "targetPort http (TCP) of Service port http (80) is not a container port of this pod; its named \
         container ports: web:8080/TCP, http:53/UDP"
    );
}

#[test]
fn publish_not_ready_addresses_publishes_not_ready_and_terminating_pods() {
    let mut svc = web_service();
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let pods = vec![
        pod(
            "down",
            "10.0.0.1",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        ),
        pod(
            "going",
            "10.0.0.2",
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:09:00Z"}}),
        ),
        pod("ghost", "10.0.0.3", json!({"spec": {"nodeName": "ghost"}})),
    ];
    let report = report(&objects(svc, pods));
    let got: Vec<(&str, Verdict, Placement)> = report
        .pods
        .iter()
        .map(|p| (p.name.as_str(), p.verdict, p.endpoints))
        .collect();
    assert_eq!(
        got,
        [
            ("down", Verdict::NotReady, Placement::Addresses),
            ("ghost", Verdict::Ready, Placement::Addresses),
            ("going", Verdict::Terminating, Placement::Addresses),
        ]
    );
    assert!(
        report.pods[0].why[0].contains("published as ready anyway"),
        "{:?}",
        report.pods[0].why
    );
    assert!(
        report.pods[2].why[0].contains("still published"),
        "{:?}",
        report.pods[2].why
    );
}

#[test]
fn headless_hostnames_follow_the_subdomain() {
    let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None", "ports": [{"port": 5432}]}));
    let pods = vec![
        pod(
            "a",
            "10.0.0.1",
            json!({"spec": {"hostname": "a", "subdomain": "web"}}),
        ),
        pod(
            "b",
            "10.0.0.2",
            json!({"spec": {"hostname": "b", "subdomain": "db"}}),
        ),
        pod("c", "10.0.0.3", json!({"spec": {"subdomain": "web"}})),
    ];
    let report = report(&objects(svc, pods));
    let notes: Vec<(Option<&str>, &str)> = report
        .pods
        .iter()
        .map(|p| (p.hostname.as_deref(), p.why[1].as_str()))
        .collect();
    assert_eq!(
        notes,
        [
            (Some("a"), "hostname a: DNS name a.web.shop.svc"),
            (None, "hostname b is not published: spec.subdomain is db, not web"),
            (
                None,
                "spec.subdomain names this Service but spec.hostname is unset: no DNS name of its own"
            ),
        ]
    );
}

#[test]
fn services_without_pods_say_where_their_endpoints_come_from() {
    let external = service(json!({"type": "ExternalName", "externalName": "db.example.com"}));
    let selectorless = service(json!({"clusterIP": "10.96.0.11", "ports": [{"port": 5432}]}));
    let invalid: Service = decode(json!({
        "metadata": {"namespace": "shop", "name": "web", "annotations": {"roster.dev/selector": "app in (web"}},
        "spec": {"clusterIP": "10.96.0.12", "ports": [{"port": 80}]}
    }));
    let hand_made: Endpoints = decode(json!({
        "metadata": {"namespace": "shop", "name": "web"},
        "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 5432}]}]
    }));
    let with_endpoints = Objects {
        endpoints: Some(hand_made),
        ..objects(selectorless.clone(), Vec::new())
    };
    let cases = [
        (
            objects(external, Vec::new()),
            "externalName",
            Outcome::NoReadyEndpoints,
        ),
        (
            objects(selectorless, Vec::new()),
            "nothing",
            Outcome::NoReadyEndpoints,
        ),
        (
            objects(invalid, Vec::new()),
            "invalidSelector",
            Outcome::NoReadyEndpoints,
        ),
        (with_endpoints, "handMade", Outcome::Drift),
    ];
    for (objects, kind, outcome) in cases {
        let report = report(&objects);
        let source = serde_json::to_value(&report.source).unwrap();
        assert_eq!(
            (source["kind"].as_str(), report.outcome),
            (Some(kind), outcome),
            "{kind}"
        );
    }
}

#[test]
fn a_bound_backendset_is_the_source_of_a_selectorless_service() {
    let svc = service(json!({"clusterIP": "10.96.0.11", "ports": [{"port": 5432}]}));
    let set = |name: &str, created: &str| {
        decode::<crate::backendset::BackendSet>(json!({
            "apiVersion": "roster.dev/v1alpha1", "kind": "BackendSet",
            "metadata": {"namespace": "shop", "name": name, "creationTimestamp": created},
            "spec": {"serviceName": "web", "backends": [{"ip": "192.0.2.1"}]},
            "status": {"summary": "1/1"}
        }))
    };
    let objects = Objects {
        backendsets: Ok(vec![
            set("young", "2024-01-01T00:05:00Z"),
            set("old", "2024-01-01T00:01:00Z"),
        ]),
        ..objects(svc, Vec::new())
    };
    let report = report(&objects);
    assert!(
        matches!(&report.source, Source::BackendSet { name, .. } if name == "old"),
        "{:?}",
        report.source
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.starts_with("BackendSet young names this Service")),
        "{:?}",
        report.notes
    );
}

/// The Endpoints and slices roster writes for `objects`, as live objects.
fn written(objects: &Objects) -> (Endpoints, Vec<EndpointSlice>) {
    let mut interner = crate::cache::Interner::new();
    let svc = crate::cache::ServiceRecord::from_service(
        &objects.service,
        crate::cache::SelectorSource::Spec,
        &mut interner,
    );
    let pods: Vec<crate::cache::PodRecord> = objects
        .pods
        .iter()
        .map(|p| crate::cache::PodRecord::from_projection(p, &mut interner))
        .collect();
    let pods: Vec<&crate::cache::PodRecord> = pods.iter().collect();
    let desired = crate::desired::desired_endpoints(&svc, &pods, Default::default());
    let endpoints = crate::desired::endpoints_need_write(None, &desired).unwrap();
    let nodes = |_: &str| crate::cache::NodeLookup::Found { zone: None };
    let input = crate::desired::SliceInput::owned_by_service(&svc, 100, None);
    let mut slices = crate::desired::desired_slices(&svc, &pods, &nodes, &[], &input).create;
    slices
        .iter_mut()
        .for_each(|s| s.metadata.name = Some("web-abcde".to_owned()));
    (endpoints, slices)
}

#[test]
fn drift_names_the_address_the_pod_and_the_writer() {
    let mut objects = objects(
        web_service(),
        vec![pod("a", "10.0.0.1", json!({})), pod("b", "10.0.0.2", json!({}))],
    );
    let (endpoints, slices) = written(&objects);
    objects.endpoints = Some(endpoints.clone());
    objects.slices = slices;
    let healthy = report(&objects);
    assert_eq!(
        (healthy.outcome, healthy.exit_code, healthy.ready_endpoints),
        (Outcome::Healthy, 0, 2)
    );

    let mut edited = endpoints;
    let subset = &mut edited.subsets.as_mut().unwrap()[0];
    subset.addresses.as_mut().unwrap().retain(|a| a.ip != "10.0.0.2");
    objects.endpoints = Some(edited);
    let drifted = report(&objects);
    assert_eq!((drifted.outcome, drifted.exit_code), (Outcome::Drift, 4));
    let item = &drifted.drift.endpoints[0];
    assert_eq!(
        (item.kind.as_str(), item.at.as_str(), item.pod.as_deref()),
        ("address_missing", "10.0.0.2", Some("b"))
    );
    assert_eq!(item.managed_by.as_ref().map(|m| m.who), Some(Who::Roster));
    assert!(
        render::table(&drifted).contains("10.0.0.2 (b) is missing"),
        "{}",
        render::table(&drifted)
    );
}

#[test]
fn the_table_shows_every_part_and_json_the_same_report() {
    let pods = vec![
        pod("a", "10.0.0.1", json!({})),
        pod("b", "10.0.0.2", json!({"metadata": {"labels": {"tier": "back"}}})),
    ];
    let report = report(&objects(web_service(), pods));
    let table = render::table(&report);
    for part in [
        "Service:     shop/web",
        "Type:        ClusterIP 10.96.0.10",
        "Ports:       http 80 -> http/TCP",
        "Source:      the pods matching app=web,tier=front",
        "Endpoints:   none",
        "a     10.0.0.1   n1     ready     ready       ready",
        "b           tier=front   tier=back",
        "Endpoints: none live, where roster computes some",
        "Result: no ready endpoint, 3 differences from what roster computes (exit 3)",
    ] {
        assert!(table.contains(part), "{part:?} not in\n{table}");
    }
    let json: Value = serde_json::from_str(&render::json(&report)).unwrap();
    assert_eq!(json["pods"][0]["verdict"], "ready");
    assert_eq!(json["nearMisses"][0]["label"], "tier=back");
    assert_eq!(json["exitCode"], 3);
}
