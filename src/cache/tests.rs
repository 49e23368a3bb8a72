use std::fmt::Debug;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;
use crate::desired::ZoneCapacity;

fn pod_json(ns: &str, name: &str, labels: Value, ip: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "namespace": ns, "name": name, "uid": format!("uid-{name}"), "resourceVersion": "1",
                      "labels": labels },
        "spec": { "nodeName": node, "containers": [{ "name": "web", "ports": [{ "name": "http", "containerPort": 80 }] }] },
        "status": { "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }],
                    "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z" }] }
    })
}

fn pod(ns: &str, name: &str, labels: Value) -> PodProjection {
    serde_json::from_value(pod_json(ns, name, labels, "10.0.0.1", "node-a")).unwrap()
}

fn service_json(ns: &str, name: &str, selector: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "namespace": ns, "name": name, "uid": format!("uid-{name}"), "resourceVersion": "1",
                      "creationTimestamp": "2024-01-01T00:00:00Z" },
        "spec": { "selector": selector, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
                  "ports": [{ "name": "web-port", "port": 8080, "targetPort": 80 }] }
    })
}

fn service(ns: &str, name: &str, selector: Value) -> Service {
    serde_json::from_value(service_json(ns, name, selector)).unwrap()
}

fn annotated_service(ns: &str, name: &str, selector: &str) -> Service {
    let mut value = service_json(ns, name, Value::Null);
    value["spec"].as_object_mut().unwrap().remove("selector");
    value["metadata"]["annotations"] = json!({ "roster.dev/selector": selector });
    serde_json::from_value(value).unwrap()
}

fn node(name: &str, zone: Option<&str>) -> NodeProjection {
    let labels = match zone {
        Some(zone) => json!({ "topology.kubernetes.io/zone": zone, "kubernetes.io/os": "linux" }),
        None => json!({}),
    };
    serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } })).unwrap()
}

fn keys(affected: &Affected) -> Vec<String> {
    affected.services.iter().map(ToString::to_string).collect()
}

fn names(pods: &[Arc<PodRecord>]) -> Vec<&str> {
    pods.iter().map(|p| p.name.as_ref()).collect()
}

fn assert_watchable<K>()
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
}

#[test]
fn projections_are_kube_resources() {
    assert_watchable::<PodProjection>();
    assert_watchable::<NodeProjection>();
    fn namespaced<K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>>() {}
    namespaced::<PodProjection>();
    assert_eq!(
        <PodProjection as kube::Resource>::url_path(&(), Some("shop")),
        "/api/v1/namespaces/shop/pods"
    );
    assert_eq!(
        <NodeProjection as kube::Resource>::url_path(&(), None),
        "/api/v1/nodes"
    );
}

#[test]
fn pod_projection_keeps_only_read_fields() {
    let value = json!({
        "metadata": {
            "namespace": "shop", "name": "web-1", "uid": "u1", "resourceVersion": "7",
            "labels": { "app": "web" }, "annotations": { "big": "x" },
            "managedFields": [{ "manager": "kubelet" }], "deletionTimestamp": "2024-01-02T00:00:00Z"
        },
        "spec": {
            "nodeName": "node-a", "hostname": "web-1", "subdomain": "web",
            "containers": [
                { "name": "app", "image": "x", "ports": [{ "name": "http", "containerPort": 8080 },
                                                          { "containerPort": 9090 },
                                                          { "name": "dns", "containerPort": 53, "protocol": "UDP" }] }
            ],
            "initContainers": [
                { "name": "sidecar", "restartPolicy": "Always", "ports": [{ "name": "proxy", "containerPort": 15001 }] },
                { "name": "setup", "ports": [{ "name": "setup", "containerPort": 1 }] }
            ]
        },
        "status": {
            "phase": "Running", "podIP": "fd00::0001",
            "podIPs": [{ "ip": "10.0.0.010" }, { "ip": "fd00::1" }, { "ip": "bogus" }],
            "conditions": [
                { "type": "PodScheduled", "status": "True", "lastTransitionTime": "2023-12-31T00:00:00Z" },
                { "type": "Ready", "status": "False", "lastTransitionTime": "2024-01-01T00:00:00.5Z" }
            ],
            "containerStatuses": [{ "name": "app", "ready": false }]
        }
    });
    let projection: PodProjection = serde_json::from_value(value).unwrap();
    assert!(projection.metadata.annotations.is_none());
    assert!(projection.metadata.managed_fields.is_none());

    let record = PodRecord::from_projection(&projection, &mut Interner::new());
    let ips: Vec<IpAddr> = vec!["fd00::1".parse().unwrap(), "10.0.0.10".parse().unwrap()];
    assert_eq!(record.ips.as_ref(), ips.as_slice());
    let ports: Vec<(&str, i32, Protocol)> = record
        .ports
        .iter()
        .map(|p| (p.name.as_ref(), p.port, p.protocol))
        .collect();
    assert_eq!(
        ports,
        [
            ("http", 8080, Protocol::Tcp),
            ("dns", 53, Protocol::Udp),
            ("proxy", 15001, Protocol::Tcp)
        ]
    );
    assert!(!record.ready);
    assert_eq!(
        record.ready_transition,
        Some("2024-01-01T00:00:00.5Z".parse().unwrap())
    );
    assert!(record.terminating);
    assert_eq!(record.phase, PodPhase::Running);
    assert_eq!(record.hostname.as_deref(), Some("web-1"));
    assert_eq!(record.node_name.as_deref(), Some("node-a"));
    assert_eq!(&*record.resource_version, "7");
}

#[test]
fn node_projection_keeps_only_zone_label() {
    let projection = node("node-a", Some("zone-1"));
    let labels = projection.metadata.labels.as_ref().unwrap();
    assert_eq!(labels.len(), 1);
    assert_eq!(projection.zone(), Some("zone-1"));
}

/// A Node as kubelet reports it: its zone, allocatable CPU and Ready condition, among much else.
fn worker(name: &str, zone: &str, cpu: &str, ready: &str) -> NodeProjection {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": {
            "topology.kubernetes.io/zone": zone, "kubernetes.io/hostname": name } },
        "status": {
            "capacity": { "cpu": "8", "memory": "32Gi" },
            "allocatable": { "cpu": cpu, "memory": "30Gi", "pods": "110" },
            "conditions": [
                { "type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory" },
                { "type": "Ready", "status": ready, "reason": "KubeletReady", "message": "kubelet is posting ready status" }
            ],
            "images": [{ "names": ["registry.k8s.io/pause:3.9"], "sizeBytes": 1 }]
        }
    }))
    .unwrap()
}

#[test]
fn node_record_keeps_zone_cpu_readiness_and_control_plane_labels() {
    let mut interner = Interner::new();
    let record = NodeRecord::from_projection(&worker("n1", "zone-a", "3500m", "True"), &mut interner);
    let want = NodeRecord {
        zone: Some("zone-a".into()),
        cpu_millis: 3500,
        ready: true,
        control_plane: false,
    };
    assert_eq!(record, want);
    let labels = json!({ "topology.kubernetes.io/zone": "", "node-role.kubernetes.io/control-plane": "",
                          "node-role.kubernetes.io/worker": "" });
    let mut value = serde_json::to_value(worker("cp", "zone-a", "4", "False")).unwrap();
    value["metadata"] = json!({ "name": "cp", "labels": labels });
    let control_plane: NodeProjection = serde_json::from_value(value).unwrap();
    assert_eq!(
        control_plane.metadata.labels.as_ref().unwrap().len(),
        2,
        "the zone and control-plane labels only"
    );
    let record = NodeRecord::from_projection(&control_plane, &mut interner);
    let want = NodeRecord {
        zone: None,
        cpu_millis: 4000,
        ready: false,
        control_plane: true,
    };
    assert_eq!(record, want, "an empty zone is no zone");
    let bare: NodeProjection = serde_json::from_value(json!({ "metadata": { "name": "bare" } })).unwrap();
    assert_eq!(
        NodeRecord::from_projection(&bare, &mut interner),
        NodeRecord::default()
    );
}

#[test]
fn a_change_of_cpu_per_zone_affects_services_asking_for_auto_hints() {
    let mut cache = Cache::new();
    let mut auto = service_json("shop", "auto", json!({ "app": "web" }));
    auto["metadata"]["annotations"] = json!({ "service.kubernetes.io/topology-mode": "Auto" });
    cache.upsert_service(&serde_json::from_value(auto).unwrap(), SelectorSource::Spec);
    cache.upsert_service(
        &service("shop", "plain", json!({ "app": "db" })),
        SelectorSource::Spec,
    );
    assert_eq!(*cache.zone_capacity(), ZoneCapacity::Insufficient);

    assert_eq!(
        keys(&cache.upsert_node(worker("n1", "zone-a", "4", "True"))),
        ["shop/auto"]
    );
    assert_eq!(
        keys(&cache.upsert_node(worker("n2", "zone-b", "2", "True"))),
        ["shop/auto"]
    );
    let zones =
        |pairs: &[(&str, u64)]| ZoneCapacity::Known(pairs.iter().map(|(z, c)| (Arc::from(*z), *c)).collect());
    assert_eq!(
        *cache.zone_capacity(),
        zones(&[("zone-a", 4000), ("zone-b", 2000)])
    );
    let mut heartbeat = worker("n2", "zone-b", "2", "True");
    heartbeat.metadata.resource_version = Some("99".into());
    assert_eq!(
        cache.upsert_node(heartbeat),
        Affected::default(),
        "nothing read changed"
    );
    assert_eq!(
        keys(&cache.upsert_node(worker("n2", "zone-b", "3", "True"))),
        ["shop/auto"]
    );
    assert_eq!(
        keys(&cache.upsert_node(worker("n2", "zone-b", "3", "False"))),
        ["shop/auto"]
    );
    assert_eq!(*cache.zone_capacity(), zones(&[("zone-a", 4000)]));
    let affected = cache.replace_nodes(vec![worker("n1", "zone-a", "4", "True")]);
    assert_eq!(
        affected,
        Affected::changed(BTreeSet::new()),
        "n2 gone, CPU per zone the same"
    );
    assert_eq!(keys(&cache.delete_node("n1")), ["shop/auto"]);
    assert_eq!(*cache.zone_capacity(), ZoneCapacity::Insufficient);
}

#[test]
fn service_record_reads_traffic_distribution_topology_mode_and_hold_down() {
    let record = |annotations: Value, spec: Value| {
        let mut value = service_json("shop", "web", json!({ "app": "web" }));
        value["metadata"]["annotations"] = annotations;
        for (key, v) in spec.as_object().unwrap() {
            value["spec"][key] = v.clone();
        }
        ServiceRecord::from_service(
            &serde_json::from_value(value).unwrap(),
            SelectorSource::Spec,
            &mut Interner::new(),
        )
    };
    let plain = record(json!({}), json!({}));
    assert_eq!(
        (plain.traffic_distribution.clone(), plain.topology_mode.clone()),
        (None, None)
    );
    assert_eq!(plain.ready_hold_down, Ok(None));
    let close = record(json!({}), json!({ "trafficDistribution": "PreferClose" }));
    assert_eq!(close.traffic_distribution.as_deref(), Some("PreferClose"));
    assert!(!close.relevant_eq(&plain));

    let mode = "service.kubernetes.io/topology-mode";
    let deprecated = "service.kubernetes.io/topology-aware-hints";
    let auto = record(json!({ mode: "Auto" }), json!({}));
    assert!(auto.topology_auto() && !auto.relevant_eq(&plain));
    let overridden = record(json!({ mode: "Auto", deprecated: "disabled" }), json!({}));
    assert_eq!(
        overridden.topology_mode.as_deref(),
        Some("disabled"),
        "the deprecated key wins"
    );
    assert!(!overridden.topology_auto());
    assert!(record(json!({ deprecated: "auto" }), json!({})).topology_auto());

    let hold = "roster.dev/ready-hold-down";
    let held = record(json!({ hold: "1m30s" }), json!({}));
    assert_eq!(held.ready_hold_down, Ok(Some(std::time::Duration::from_secs(90))));
    assert_eq!(
        record(json!({ hold: "0s" }), json!({})).ready_hold_down,
        Ok(None),
        "0 turns it off"
    );
    let bad = record(json!({ hold: "soon" }), json!({})).ready_hold_down;
    assert!(
        bad.as_ref()
            .is_err_and(|e| e.starts_with("roster.dev/ready-hold-down: invalid duration")),
        "{bad:?}"
    );
}

#[test]
fn pods_share_interned_strings_and_port_lists() {
    let mut cache = Cache::new();
    cache.upsert_pod(pod("shop", "web-1", json!({ "app": "web" })));
    cache.upsert_pod(pod("shop", "web-2", json!({ "app": "web" })));
    let a = cache.pod("shop", "web-1").unwrap();
    let b = cache.pod("shop", "web-2").unwrap();
    assert!(Arc::ptr_eq(&a.ports, &b.ports));
    assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
    assert!(Arc::ptr_eq(
        a.labels.get("app").unwrap(),
        b.labels.get("app").unwrap()
    ));
}

#[test]
fn new_pod_returns_matching_services() {
    let mut cache = Cache::new();
    cache.upsert_service(
        &service("shop", "web", json!({ "app": "web" })),
        SelectorSource::Spec,
    );
    cache.upsert_service(
        &service("shop", "db", json!({ "app": "db" })),
        SelectorSource::Spec,
    );
    cache.upsert_service(
        &service("other", "web", json!({ "app": "web" })),
        SelectorSource::Spec,
    );
    let affected = cache.upsert_pod(pod(
        "shop",
        "web-1",
        json!({ "app": "web", "pod-template-hash": "abc" }),
    ));
    assert_eq!(keys(&affected), ["shop/web"]);
    assert!(affected.changed);

    let unselected = cache.upsert_pod(pod("shop", "batch-1", json!({ "app": "batch" })));
    assert!(unselected.changed);
    assert!(unselected.is_empty());
}

#[test]
fn pod_relabel_returns_old_and_new_services() {
    let mut cache = Cache::new();
    cache.upsert_service(
        &service("shop", "blue", json!({ "app": "web", "color": "blue" })),
        SelectorSource::Spec,
    );
    cache.upsert_service(
        &service("shop", "green", json!({ "app": "web", "color": "green" })),
        SelectorSource::Spec,
    );
    cache.upsert_service(
        &service("shop", "all", json!({ "app": "web" })),
        SelectorSource::Spec,
    );
    cache.upsert_pod(pod("shop", "web-1", json!({ "app": "web", "color": "blue" })));

    let affected = cache.upsert_pod(pod("shop", "web-1", json!({ "app": "web", "color": "green" })));
    assert_eq!(keys(&affected), ["shop/all", "shop/blue", "shop/green"]);
    let blue = cache.pods_for_service(&ServiceKey::new("shop", "blue"));
    let green = cache.pods_for_service(&ServiceKey::new("shop", "green"));
    assert!(blue.is_empty());
    assert_eq!(names(&green), ["web-1"]);
}

#[test]
fn irrelevant_pod_change_returns_nothing() {
    let mut cache = Cache::new();
    cache.upsert_service(
        &service("shop", "web", json!({ "app": "web" })),
        SelectorSource::Spec,
    );
    let mut value = pod_json("shop", "web-1", json!({ "app": "web" }), "10.0.0.1", "node-a");
    cache.upsert_pod(serde_json::from_value(value.clone()).unwrap());

    value["metadata"]["resourceVersion"] = json!("2");
    value["metadata"]["annotations"] = json!({ "kubectl.kubernetes.io/restartedAt": "now" });
    value["status"]["containerStatuses"] = json!([{ "name": "web", "restartCount": 3 }]);
    let affected = cache.upsert_pod(serde_json::from_value(value.clone()).unwrap());
    assert_eq!(affected, Affected::default());
    assert_eq!(&*cache.pod("shop", "web-1").unwrap().resource_version, "2");

    value["status"]["conditions"][0]["status"] = json!("False");
    let affected = cache.upsert_pod(serde_json::from_value(value).unwrap());
    assert_eq!(keys(&affected), ["shop/web"]);
}

#[test]
fn delete_pod_returns_services_it_matched() {
    let mut cache = Cache::new();
    cache.upsert_service(
        &service("shop", "web", json!({ "app": "web" })),
        SelectorSource::Spec,
    );
    cache.upsert_pod(pod("shop", "web-1", json!({ "app": "web" })));
    assert_eq!(keys(&cache.delete_pod("shop", "web-1")), ["shop/web"]);
    assert_eq!(cache.delete_pod("shop", "web-1"), Affected::default());
    assert_eq!(cache.len_pods(), 0);
    assert!(cache.pods_for_service(&ServiceKey::new("shop", "web")).is_empty());
}

#[test]
fn pods_for_service_uses_index() {
    let mut cache = Cache::new();
    for i in 0..500 {
        cache.upsert_pod(pod(
            "shop",
            &format!("batch-{i:03}"),
            json!({ "app": "batch", "tier": "backend" }),
        ));
    }
    for name in ["web-2", "web-1", "web-3"] {
        cache.upsert_pod(pod("shop", name, json!({ "app": "web", "tier": "backend" })));
    }
    cache.upsert_pod(pod("other", "web-9", json!({ "app": "web", "tier": "backend" })));
    cache.upsert_service(
        &service("shop", "web", json!({ "tier": "backend", "app": "web" })),
        SelectorSource::Spec,
    );
    let key = ServiceKey::new("shop", "web");

    assert_eq!(names(&cache.pods_for_service(&key)), ["web-1", "web-2", "web-3"]);
    assert_eq!(cache.candidate_pods_for_service(&key), 3);
    // The service is anchored at its rarest pair, so a batch pod change does not even look at it.
    let affected = cache.upsert_pod(pod(
        "shop",
        "batch-000",
        json!({ "app": "batch", "tier": "frontend" }),
    ));
    assert!(affected.is_empty());
}

#[test]
fn set_based_selector_services_are_matched_through_fallback_list() {
    let mut cache = Cache::new();
    cache.upsert_service(
        &annotated_service("shop", "canary", "track in (canary,beta),!legacy"),
        SelectorSource::Annotation,
    );
    cache.upsert_pod(pod("shop", "web-1", json!({ "track": "canary" })));
    cache.upsert_pod(pod("shop", "web-2", json!({ "track": "beta", "legacy": "yes" })));
    let affected = cache.upsert_pod(pod("shop", "web-3", json!({ "track": "beta" })));
    assert_eq!(keys(&affected), ["shop/canary"]);
    let key = ServiceKey::new("shop", "canary");
    assert_eq!(names(&cache.pods_for_service(&key)), ["web-1", "web-3"]);
}

#[test]
fn selector_change_reindexes_service() {
    let mut cache = Cache::new();
    cache.upsert_service(
        &service("shop", "web", json!({ "app": "a" })),
        SelectorSource::Spec,
    );
    let affected = cache.upsert_service(
        &service("shop", "web", json!({ "app": "b" })),
        SelectorSource::Spec,
    );
    assert_eq!(keys(&affected), ["shop/web"]);
    assert!(
        cache
            .upsert_pod(pod("shop", "a-1", json!({ "app": "a" })))
            .is_empty()
    );
    assert_eq!(
        keys(&cache.upsert_pod(pod("shop", "b-1", json!({ "app": "b" })))),
        ["shop/web"]
    );
    assert_eq!(
        names(&cache.pods_for_service(&ServiceKey::new("shop", "web"))),
        ["b-1"]
    );
}

#[test]
fn unchanged_service_update_returns_nothing() {
    let mut cache = Cache::new();
    let mut value = service_json("shop", "web", json!({ "app": "web" }));
    let first = cache.upsert_service(
        &serde_json::from_value(value.clone()).unwrap(),
        SelectorSource::Spec,
    );
    assert_eq!(keys(&first), ["shop/web"]);

    value["metadata"]["resourceVersion"] = json!("2");
    value["metadata"]["annotations"] = json!({ "unrelated": "x" });
    value["status"] = json!({ "loadBalancer": {} });
    let resync = cache.upsert_service(
        &serde_json::from_value(value.clone()).unwrap(),
        SelectorSource::Spec,
    );
    assert_eq!(resync, Affected::default());

    value["metadata"]["labels"] = json!({ "team": "a" });
    let relabel = cache.upsert_service(&serde_json::from_value(value).unwrap(), SelectorSource::Spec);
    assert_eq!(keys(&relabel), ["shop/web"]);
    assert_eq!(cache.len_services(), 1);
    assert_eq!(keys(&cache.delete_service("shop", "web")), ["shop/web"]);
    assert_eq!(cache.len_services(), 0);
    assert_eq!(cache.services().count(), 0);
}

#[test]
fn service_record_reads_spec() {
    let value = json!({
        "metadata": { "namespace": "shop", "name": "web", "uid": "u", "labels": { "team": "a" },
                      "annotations": { "roster.dev/probe": "http", "other": "x" } },
        "spec": {
            "type": "NodePort", "clusterIP": "None", "ipFamilies": ["IPv6", "IPv4"], "publishNotReadyAddresses": true,
            "selector": { "app": "web" },
            "ports": [
                { "name": "a", "port": 80, "targetPort": 0 },
                { "name": "b", "port": 81, "targetPort": "http", "protocol": "UDP", "appProtocol": "h2c" },
                { "name": "c", "port": 82 }
            ]
        }
    });
    let svc: Service = serde_json::from_value(value).unwrap();
    let record = ServiceRecord::from_service(&svc, SelectorSource::Spec, &mut Interner::new());
    assert_eq!(record.type_, ServiceType::NodePort);
    assert!(record.is_headless());
    assert_eq!(record.ip_families, [IpFamily::V6, IpFamily::V4]);
    assert!(record.publish_not_ready_addresses);
    let targets: Vec<TargetPort> = record.ports.iter().map(|p| p.target_port.clone()).collect();
    assert_eq!(
        targets,
        [
            TargetPort::Number(80),
            TargetPort::Name("http".into()),
            TargetPort::Number(82)
        ]
    );
    assert_eq!(record.ports[1].protocol, Protocol::Udp);
    assert_eq!(record.ports[1].app_protocol.as_deref(), Some("h2c"));
    assert_eq!(
        record.annotations.keys().map(|k| k.as_ref()).collect::<Vec<_>>(),
        ["roster.dev/probe"]
    );
    assert_eq!(record.active_selector().unwrap().to_string(), "app=web");
    assert!(record.selects_pods());
}

#[test]
fn empty_spec_selector_is_selectorless() {
    let mut cache = Cache::new();
    cache.upsert_service(&service("shop", "manual", json!({})), SelectorSource::Spec);
    cache.upsert_pod(pod("shop", "web-1", json!({ "app": "web" })));
    let record = cache.service(&ServiceKey::new("shop", "manual")).unwrap();
    assert_eq!(record.selector, Ok(None));
    assert!(!record.has_spec_selector);
    assert!(cache.pods_for_service(&record.key()).is_empty());
}

#[test]
fn annotation_mode_selects_only_annotated_selectorless_services() {
    let mut interner = Interner::new();
    let cases = [
        (
            annotated_service("shop", "a", "app=web"),
            Ok(Some("app=web".to_owned())),
        ),
        (service("shop", "b", json!({ "app": "web" })), Ok(None)),
        (service("shop", "c", Value::Null), Ok(None)),
        (
            annotated_service("shop", "d", "app in web"),
            Err("expected '(' after 'in' or 'notin'".to_owned()),
        ),
    ];
    for (svc, want) in cases {
        let record = ServiceRecord::from_service(&svc, SelectorSource::Annotation, &mut interner);
        let got = record
            .selector
            .as_ref()
            .map(|s| s.as_ref().map(ToString::to_string))
            .map_err(|e| e.reason.clone());
        assert_eq!(got, want, "{}", record.name);
    }
    // In spec mode the annotation is ignored.
    let record = ServiceRecord::from_service(
        &annotated_service("shop", "a", "app=web"),
        SelectorSource::Spec,
        &mut interner,
    );
    assert_eq!(record.selector, Ok(None));
}

#[test]
fn invalid_annotation_selector_selects_nothing() {
    let mut cache = Cache::new();
    cache.upsert_pod(pod("shop", "web-1", json!({ "app": "web" })));
    let affected = cache.upsert_service(
        &annotated_service("shop", "web", "app=="),
        SelectorSource::Annotation,
    );
    assert_eq!(keys(&affected), ["shop/web"]);
    let record = cache.service(&ServiceKey::new("shop", "web")).unwrap();
    assert!(record.selector.is_ok(), "`app==` is app equals empty");
    let affected = cache.upsert_service(
        &annotated_service("shop", "web", "app=(x"),
        SelectorSource::Annotation,
    );
    assert_eq!(keys(&affected), ["shop/web"]);
    let record = cache.service(&ServiceKey::new("shop", "web")).unwrap();
    assert!(record.selector.is_err());
    assert!(!record.selects_pods());
    assert!(cache.pods_for_service(&record.key()).is_empty());
    assert!(
        cache
            .upsert_pod(pod("shop", "web-2", json!({ "app": "web" })))
            .is_empty()
    );
}

#[test]
fn node_zone_change_returns_services_with_pods_on_node() {
    let mut cache = Cache::new();
    cache.upsert_service(
        &service("shop", "web", json!({ "app": "web" })),
        SelectorSource::Spec,
    );
    cache.upsert_service(
        &service("shop", "db", json!({ "app": "db" })),
        SelectorSource::Spec,
    );
    cache.upsert_pod(pod("shop", "web-1", json!({ "app": "web" })));
    cache.upsert_pod(
        serde_json::from_value(pod_json(
            "shop",
            "db-1",
            json!({ "app": "db" }),
            "10.0.0.2",
            "node-b",
        ))
        .unwrap(),
    );

    assert_eq!(keys(&cache.upsert_node(node("node-a", Some("z1")))), ["shop/web"]);
    assert_eq!(cache.upsert_node(node("node-a", Some("z1"))), Affected::default());
    assert_eq!(keys(&cache.upsert_node(node("node-a", Some("z2")))), ["shop/web"]);
    assert_eq!(cache.node_zone("node-a").as_deref(), Some("z2"));
    assert_eq!(
        keys(&cache.upsert_node(node("node-c", None))),
        Vec::<String>::new()
    );
    assert!(cache.node_exists("node-c"));
    assert_eq!(cache.node_lookup("node-c"), NodeLookup::Found { zone: None });
    assert_eq!(cache.node_lookup("node-x"), NodeLookup::Missing);
    assert_eq!(cache.len_nodes(), 2);

    assert_eq!(keys(&cache.delete_node("node-a")), ["shop/web"]);
    assert!(!cache.node_exists("node-a"));
    cache.delete_pod("shop", "web-1");
    assert_eq!(
        keys(&cache.upsert_node(node("node-a", Some("z1")))),
        Vec::<String>::new()
    );
}

#[test]
fn counts_and_key_listings() {
    let mut cache = Cache::new();
    cache.upsert_pod(pod("a", "p1", json!({})));
    cache.upsert_pod(pod("b", "p1", json!({})));
    cache.upsert_pod(pod("b", "p1", json!({ "x": "y" })));
    cache.upsert_service(&service("a", "s", json!({ "x": "y" })), SelectorSource::Spec);
    assert_eq!((cache.len_pods(), cache.len_services()), (2, 1));
    let mut pods: Vec<String> = cache
        .pod_keys()
        .map(|(ns, name)| format!("{ns}/{name}"))
        .collect();
    pods.sort();
    assert_eq!(pods, ["a/p1", "b/p1"]);
    assert_eq!(
        cache.services().map(|k| k.to_string()).collect::<Vec<_>>(),
        ["a/s"]
    );
}

#[test]
fn relist_replaces_cached_objects() {
    let mut cache = Cache::new();
    cache.upsert_service(
        &service("shop", "web", json!({ "app": "web" })),
        SelectorSource::Spec,
    );
    cache.upsert_service(
        &service("shop", "gone", json!({ "app": "x" })),
        SelectorSource::Spec,
    );
    cache.upsert_pod(pod("shop", "web-1", json!({ "app": "web" })));
    cache.upsert_pod(pod("shop", "web-2", json!({ "app": "web" })));
    cache.upsert_node(node("node-a", Some("z1")));
    cache.upsert_node(node("node-old", Some("z1")));

    let listed = cache.compact_pod(&pod("shop", "web-1", json!({ "app": "web" })));
    let affected = cache.replace_pods(vec![listed]);
    assert_eq!(
        keys(&affected),
        ["shop/web"],
        "web-2 vanished while the watch was down"
    );
    assert_eq!(cache.len_pods(), 1);
    let listed = cache.compact_pod(&pod("shop", "web-1", json!({ "app": "web" })));
    let unchanged = cache.replace_pods(vec![listed]);
    assert_eq!(unchanged, Affected::default());

    let affected = cache.replace_services(
        &[service("shop", "web", json!({ "app": "web" }))],
        SelectorSource::Spec,
    );
    assert_eq!(
        affected.into_iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        ["shop/gone"]
    );
    assert_eq!(cache.service_keys(), [ServiceKey::new("shop", "web")]);

    let affected = cache.replace_nodes(vec![node("node-a", Some("z2"))]);
    assert_eq!(keys(&affected), ["shop/web"]);
    assert_eq!(
        cache.node_names().collect::<Vec<_>>(),
        [Arc::<str>::from("node-a")]
    );
}

#[test]
fn relist_holds_unchanged_pods_and_services_as_the_cached_records() {
    let mut cache = Cache::new();
    let web = service("shop", "web", json!({ "app": "web" }));
    cache.upsert_service(&web, SelectorSource::Spec);
    cache.upsert_pod(pod("shop", "web-1", json!({ "app": "web" })));
    let cached = cache.pod("shop", "web-1").unwrap();
    let cached_service = cache.service(&ServiceKey::new("shop", "web")).unwrap();

    let listed = cache.hold_pod(&pod("shop", "web-1", json!({ "app": "web" })));
    assert!(
        Arc::ptr_eq(&listed, &cached),
        "same uid and resourceVersion: the cached record"
    );
    assert_eq!(cache.replace_pods(vec![listed]), Affected::default());
    assert_eq!(
        cache.replace_services(&[web], SelectorSource::Spec),
        Affected::default()
    );
    let relisted_service = cache.service(&ServiceKey::new("shop", "web")).unwrap();
    assert!(
        Arc::ptr_eq(&relisted_service, &cached_service),
        "unchanged Service: the cached record"
    );

    let mut changed = pod_json("shop", "web-1", json!({ "app": "web" }), "10.0.0.2", "node-a");
    changed["metadata"]["resourceVersion"] = json!("2");
    let listed = cache.hold_pod(&serde_json::from_value(changed).unwrap());
    assert!(!Arc::ptr_eq(&listed, &cached), "a newer version: a new record");
    assert_eq!(keys(&cache.replace_pods(vec![listed])), ["shop/web"]);
    assert_eq!(cache.pod("shop", "web-1").unwrap().ips[0].to_string(), "10.0.0.2");

    let mut recreated = pod_json("shop", "web-1", json!({ "app": "web" }), "10.0.0.2", "node-a");
    recreated["metadata"]["resourceVersion"] = json!("2");
    recreated["metadata"]["uid"] = json!("uid-other");
    let listed = cache.hold_pod(&serde_json::from_value(recreated).unwrap());
    assert_eq!(
        listed.uid.as_ref(),
        "uid-other",
        "another pod of the same name: a new record"
    );
}

#[test]
fn pod_record_is_compact() {
    // Strings live behind interned `Arc`s; the record itself stays small.
    assert!(
        std::mem::size_of::<PodRecord>() <= 256,
        "{}",
        std::mem::size_of::<PodRecord>()
    );
}
