//! G. Per-type behaviour the controller observes: Service and Pod defaults, Endpoints and EndpointSlice
//! validation, events.k8s.io Events (and kube's Recorder), Leases.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Value, json};

use crate::support::{Case, Ctx, MERGE, Needs, cases, check_eq, rv};

const SLICES_V1: &str = "discovery.k8s.io/v1";

pub fn cases() -> Vec<Case> {
    cases![
        service_defaults_and_cluster_ip,
        service_headless_keeps_none,
        service_cluster_ip_is_immutable,
        service_requested_cluster_ip,
        kubernetes_service_in_default_namespace,
        pod_defaults,
        endpoints_reject_loopback_ip,
        endpointslice_v1_valid_slice_round_trips => Needs::EndpointSliceV1,
        endpointslice_v1_address_type_required_and_immutable => Needs::EndpointSliceV1,
        endpointslice_v1_size_limits => Needs::EndpointSliceV1,
        events_v1_require_reporting_fields,
        events_recorder_publishes_a_series,
        lease_replace_with_stale_rv_conflicts,
    ]
}

/// Whether `ip` lies in the service CIDR both tiers use, 10.96.0.0/12.
fn in_service_cidr(ip: &str) -> bool {
    match ip.parse::<std::net::Ipv4Addr>() {
        Ok(addr) => u32::from(addr) >> 20 == u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) >> 20,
        Err(_) => false,
    }
}

async fn service_defaults_and_cluster_ip(cx: Ctx) -> anyhow::Result<()> {
    let svc =
        json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 8080}]}});
    let svc = cx.post(&cx.core("services"), svc).await?.ok()?;
    let spec = &svc["spec"];
    check_eq!(spec["type"], json!("ClusterIP"));
    check_eq!(spec["sessionAffinity"], json!("None"));
    check_eq!(
        spec["ports"],
        json!([{"protocol": "TCP", "port": 8080, "targetPort": 8080}])
    );
    let ip = spec["clusterIP"].as_str().unwrap_or_default();
    anyhow::ensure!(
        in_service_cidr(ip) && ip != "10.96.0.1",
        "clusterIP {ip:?} not allocated from 10.96.0.0/12"
    );
    check_eq!(spec["clusterIPs"], json!([ip]));
    let other = json!({"metadata": {"name": "t"}, "spec": {"ports": [{"port": 80, "targetPort": "http", "name": "h"}]}});
    let other = cx.post(&cx.core("services"), other).await?.ok()?;
    anyhow::ensure!(
        other["spec"]["clusterIP"] != spec["clusterIP"],
        "two services share {ip}"
    );
    check_eq!(
        other["spec"]["ports"][0]["targetPort"],
        json!("http"),
        "a named targetPort stays a name"
    );
    Ok(())
}

async fn service_headless_keeps_none(cx: Ctx) -> anyhow::Result<()> {
    let svc = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "selector": {"app": "a"}, "ports": [{"port": 80}]}});
    let svc = cx.post(&cx.core("services"), svc).await?.ok()?;
    check_eq!(svc["spec"]["clusterIP"], json!("None"));
    check_eq!(svc["spec"]["clusterIPs"], json!(["None"]));
    check_eq!(svc["spec"]["type"], json!("ClusterIP"));
    Ok(())
}

async fn service_cluster_ip_is_immutable(cx: Ctx) -> anyhow::Result<()> {
    let svc = json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}});
    let svc = cx.post(&cx.core("services"), svc).await?.ok()?;
    let path = format!("{}/s", cx.core("services"));
    let reply = cx
        .patch(&path, MERGE, json!({"spec": {"clusterIP": "10.96.0.50"}}))
        .await?;
    reply.failure(422, Some("Invalid"))?;
    // 1.20.2 reports the field as spec.clusterIPs[0].
    anyhow::ensure!(
        reply
            .cause_fields()
            .iter()
            .any(|f| f.starts_with("spec.clusterIP")),
        "causes: {}",
        reply.body
    );
    anyhow::ensure!(
        reply.message().contains("may not change once set"),
        "message: {}",
        reply.message()
    );
    check_eq!(
        cx.get(&path).await?.ok()?["spec"]["clusterIP"],
        svc["spec"]["clusterIP"]
    );
    Ok(())
}

async fn service_requested_cluster_ip(cx: Ctx) -> anyhow::Result<()> {
    // An address unlikely to be taken by another case on the shared real server.
    let seed = cx
        .ns
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let ip = format!("10.100.{}.{}", seed % 250, seed / 250 % 250 + 2);
    let svc = |name: &str, ip: &str| json!({"metadata": {"name": name}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
    let first = cx.post(&cx.core("services"), svc("a", &ip)).await?.ok()?;
    check_eq!(first["spec"]["clusterIP"], json!(ip));
    let taken = cx.post(&cx.core("services"), svc("b", &ip)).await?;
    taken.failure(422, Some("Invalid"))?;
    check_eq!(taken.cause_fields(), vec!["spec.clusterIPs".to_string()]);
    anyhow::ensure!(
        taken.message().contains("provided IP is already allocated"),
        "message: {}",
        taken.message()
    );
    let outside = cx.post(&cx.core("services"), svc("c", "192.168.0.1")).await?;
    outside.failure(422, Some("Invalid"))?;
    anyhow::ensure!(
        outside
            .message()
            .contains("provided IP is not in the valid range"),
        "message: {}",
        outside.message()
    );
    cx.delete(&format!("{}/a", cx.core("services")), None)
        .await?
        .ok()?;
    let reused = cx.post(&cx.core("services"), svc("d", &ip)).await?.ok()?;
    check_eq!(
        reused["spec"]["clusterIP"],
        json!(ip),
        "a deleted service's IP is free again"
    );
    Ok(())
}

async fn kubernetes_service_in_default_namespace(cx: Ctx) -> anyhow::Result<()> {
    // The apiserver's own selectorless Service holds the first address of the range (observed on 1.20.2).
    let svc = cx
        .get("/api/v1/namespaces/default/services/kubernetes")
        .await?
        .ok()?;
    check_eq!(svc["spec"]["clusterIP"], json!("10.96.0.1"));
    check_eq!(svc["spec"]["selector"], Value::Null);
    let port = &svc["spec"]["ports"][0];
    check_eq!(
        (
            port["name"].clone(),
            port["port"].clone(),
            port["protocol"].clone()
        ),
        (json!("https"), json!(443), json!("TCP"))
    );
    anyhow::ensure!(port["targetPort"].is_u64(), "targetPort {port}");
    check_eq!(
        svc["metadata"]["labels"],
        json!({"component": "apiserver", "provider": "kubernetes"})
    );
    Ok(())
}

async fn pod_defaults(cx: Ctx) -> anyhow::Result<()> {
    let pod = cx.create_pod("p", json!({}), None).await?;
    let spec = &pod["spec"];
    check_eq!(spec["restartPolicy"], json!("Always"));
    check_eq!(spec["dnsPolicy"], json!("ClusterFirst"));
    check_eq!(spec["terminationGracePeriodSeconds"], json!(30));
    check_eq!(spec["schedulerName"], json!("default-scheduler"));
    check_eq!(spec["enableServiceLinks"], json!(true));
    check_eq!(spec["securityContext"], json!({}));
    let c = &spec["containers"][0];
    check_eq!(c["terminationMessagePath"], json!("/dev/termination-log"));
    check_eq!(c["terminationMessagePolicy"], json!("File"));
    check_eq!(c["imagePullPolicy"], json!("IfNotPresent"), "a tagged image");
    check_eq!(pod["status"]["phase"], json!("Pending"));
    let latest =
        json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "pause"}]}});
    let latest = cx.post(&cx.core("pods"), latest).await?.ok()?;
    check_eq!(
        latest["spec"]["containers"][0]["imagePullPolicy"],
        json!("Always"),
        "an untagged image"
    );
    Ok(())
}

async fn endpoints_reject_loopback_ip(cx: Ctx) -> anyhow::Result<()> {
    let ep = |ip: &str| json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": 80}]}]});
    let reply = cx.post(&cx.core("endpoints"), ep("127.0.0.1")).await?;
    reply.failure(422, Some("Invalid"))?;
    check_eq!(
        reply.cause_fields(),
        vec!["subsets[0].addresses[0].ip".to_string()]
    );
    anyhow::ensure!(
        reply
            .message()
            .contains("may not be in the loopback range (127.0.0.0/8)"),
        "{}",
        reply.message()
    );
    let reply = cx.post(&cx.core("endpoints"), ep("not-an-ip")).await?;
    reply.failure(422, Some("Invalid"))?;
    let ok = cx.post(&cx.core("endpoints"), ep("10.1.2.3")).await?.ok()?;
    check_eq!(
        ok["subsets"][0]["ports"][0],
        json!({"port": 80, "protocol": "TCP"}),
        "port protocol defaulted"
    );
    Ok(())
}

fn slice(name: &str, address_type: Option<&str>, endpoints: Value) -> Value {
    let mut s = json!({
        "apiVersion": SLICES_V1, "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "s",
            "endpointslice.kubernetes.io/managed-by": "roster.dev"}},
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
    });
    if let Some(t) = address_type {
        s["addressType"] = json!(t);
    }
    s
}

fn addresses(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1))
        .collect()
}

// Expectations below match what 1.20.2 answers for discovery.k8s.io/v1beta1, whose validation v1 keeps.
async fn endpointslice_v1_valid_slice_round_trips(cx: Ctx) -> anyhow::Result<()> {
    let eps = json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false},
                      "nodeName": "n1", "zone": "z1", "targetRef": {"kind": "Pod", "name": "p", "namespace": cx.ns}}]);
    let created = cx
        .post(
            &cx.group(SLICES_V1, "endpointslices"),
            slice("ok", Some("IPv4"), eps.clone()),
        )
        .await?
        .ok()?;
    check_eq!(created["endpoints"], eps);
    check_eq!(created["addressType"], json!("IPv4"));
    let query = format!(
        "labelSelector={}",
        crate::support::q("kubernetes.io/service-name=s")
    );
    let list = cx
        .get(&format!("{}?{query}", cx.group(SLICES_V1, "endpointslices")))
        .await?
        .ok()?;
    check_eq!(crate::support::item_names(&list), vec!["ok"]);
    check_eq!(list["kind"], json!("EndpointSliceList"));
    Ok(())
}

async fn endpointslice_v1_address_type_required_and_immutable(cx: Ctx) -> anyhow::Result<()> {
    let slices = cx.group(SLICES_V1, "endpointslices");
    let eps = json!([{"addresses": ["10.0.0.1"]}]);
    let reply = cx.post(&slices, slice("none", None, eps.clone())).await?;
    reply.failure(422, Some("Invalid"))?;
    check_eq!(reply.cause_fields(), vec!["addressType".to_string()]);
    check_eq!(
        reply.body["details"]["causes"][0]["reason"],
        json!("FieldValueRequired")
    );
    let created = cx.post(&slices, slice("ok", Some("IPv4"), eps)).await?.ok()?;
    let reply = cx
        .patch(&format!("{slices}/ok"), MERGE, json!({"addressType": "IPv6"}))
        .await?;
    reply.failure(422, Some("Invalid"))?;
    anyhow::ensure!(
        reply.message().contains("field is immutable"),
        "message: {}",
        reply.message()
    );
    anyhow::ensure!(
        reply.cause_fields().contains(&"addressType".to_string()),
        "causes: {}",
        reply.body
    );
    check_eq!(rv(&cx.get(&format!("{slices}/ok")).await?.ok()?), rv(&created));
    Ok(())
}

async fn endpointslice_v1_size_limits(cx: Ctx) -> anyhow::Result<()> {
    let slices = cx.group(SLICES_V1, "endpointslices");
    let many: Vec<Value> = addresses(1001)
        .into_iter()
        .map(|a| json!({"addresses": [a]}))
        .collect();
    let reply = cx.post(&slices, slice("big", Some("IPv4"), json!(many))).await?;
    reply.failure(422, Some("Invalid"))?;
    check_eq!(reply.cause_fields(), vec!["endpoints".to_string()]);
    check_eq!(
        reply.body["details"]["causes"][0]["reason"],
        json!("FieldValueTooMany")
    );
    let wide = json!([{"addresses": addresses(101)}]);
    let reply = cx.post(&slices, slice("wide", Some("IPv4"), wide)).await?;
    reply.failure(422, Some("Invalid"))?;
    check_eq!(reply.cause_fields(), vec!["endpoints[0].addresses".to_string()]);
    let at_limit: Vec<Value> = addresses(1000)
        .into_iter()
        .map(|a| json!({"addresses": [a]}))
        .collect();
    cx.post(&slices, slice("full", Some("IPv4"), json!(at_limit)))
        .await?
        .ok()?;
    Ok(())
}

async fn events_v1_require_reporting_fields(cx: Ctx) -> anyhow::Result<()> {
    let events = cx.group("events.k8s.io/v1", "events");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let regarding = json!({"kind": "Pod", "namespace": cx.ns, "name": "p"});
    let bare =
        json!({"metadata": {"name": "e1"}, "eventTime": now, "type": "Normal", "regarding": regarding});
    let reply = cx.post(&events, bare).await?;
    reply.failure(422, Some("Invalid"))?;
    let mut fields = reply.cause_fields();
    fields.sort();
    fields.dedup();
    check_eq!(
        fields,
        vec!["action", "reason", "reportingController", "reportingInstance"]
    );
    let full = json!({"metadata": {"name": "e1"}, "eventTime": now, "type": "Normal", "regarding": regarding,
        "reason": "Synced", "action": "Reconcile", "reportingController": "roster.dev/controller", "reportingInstance": "i1"});
    let created = cx.post(&events, full).await?.ok()?;
    check_eq!(
        created["eventTime"],
        json!(now),
        "MicroTime round-trips with 6 digits"
    );
    let no_time = json!({"metadata": {"name": "e2"}, "type": "Normal", "regarding": regarding, "reason": "Synced",
        "action": "Reconcile", "reportingController": "roster.dev/controller", "reportingInstance": "i1"});
    let reply = cx.post(&events, no_time).await?;
    reply.failure(422, Some("Invalid"))?;
    check_eq!(reply.cause_fields(), vec!["eventTime".to_string()]);
    Ok(())
}

async fn events_recorder_publishes_a_series(cx: Ctx) -> anyhow::Result<()> {
    let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
    let svc = cx.post(&cx.core("services"), svc).await?.ok()?;
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some("s".into()),
        namespace: Some(cx.ns.clone()),
        uid: svc["metadata"]["uid"].as_str().map(String::from),
        ..Default::default()
    };
    let reporter = Reporter {
        controller: "roster".into(),
        instance: Some("conformance".into()),
    };
    let recorder = Recorder::new(cx.client(), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "EndpointsUpdated".into(),
        note: Some("ready".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await?;
    recorder.publish(&event, &reference).await?;
    let events = Api::<K8sEvent>::namespaced(cx.client(), &cx.ns)
        .list(&ListParams::default())
        .await?;
    check_eq!(
        events.items.len(),
        1usize,
        "the second publish patches the first event"
    );
    let ev = &events.items[0];
    check_eq!(ev.series.as_ref().map(|s| s.count), Some(2));
    check_eq!(ev.reason.as_deref(), Some("EndpointsUpdated"));
    check_eq!(ev.reporting_controller.as_deref(), Some("roster"));
    check_eq!(ev.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("s"));
    Ok(())
}

async fn lease_replace_with_stale_rv_conflicts(cx: Ctx) -> anyhow::Result<()> {
    let leases = cx.group("coordination.k8s.io/v1", "leases");
    let spec = json!({"holderIdentity": "a", "leaseDurationSeconds": 15,
        "acquireTime": "2024-01-02T03:04:05.000001Z", "renewTime": "2024-01-02T03:04:05.000001Z", "leaseTransitions": 0});
    let created = cx
        .post(&leases, json!({"metadata": {"name": "l"}, "spec": spec}))
        .await?
        .ok()?;
    check_eq!(created["spec"]["renewTime"], json!("2024-01-02T03:04:05.000001Z"));
    let mut renewed = created.clone();
    renewed["spec"]["renewTime"] = json!("2024-01-02T03:04:15.000001Z");
    let renewed = cx.put(&format!("{leases}/l"), renewed).await?.ok()?;
    let mut stale = created.clone();
    stale["spec"]["holderIdentity"] = json!("b");
    stale["spec"]["leaseTransitions"] = json!(1);
    let reply = cx.put(&format!("{leases}/l"), stale).await?;
    let status = reply.failure(409, Some("Conflict"))?;
    check_eq!(
        status["details"],
        json!({"name": "l", "group": "coordination.k8s.io", "kind": "leases"})
    );
    let now = cx.get(&format!("{leases}/l")).await?.ok()?;
    check_eq!(now["spec"]["holderIdentity"], json!("a"));
    check_eq!(rv(&now), rv(&renewed));
    Ok(())
}
