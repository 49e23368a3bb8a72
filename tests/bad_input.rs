//! Bad input never stops other Services: each case sits beside a healthy Service that must keep converging.

mod support;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use roster_envtest::{TestEnv, Tier, fixtures};
use serde_json::json;
use support::*;

const GOOD: &[(&str, &str)] = &[("app", "good")];

async fn world(prefix: &str, mode: &str) -> (TestEnv, String, Roster) {
    let world = World::builder(Tier::Memory, prefix).node("n1", None);
    let World { env, ns } = world.build().await;
    let roster = Roster::start(&env, &ns, &["--services", mode]).await;
    (env, ns, roster)
}

/// The healthy Service beside the bad input.
fn good_service() -> Service {
    fixtures::service("good", GOOD, &[("http", 80, "http")])
}

async fn good_pod(env: &TestEnv, ns: &str, name: &str, ip: &str) {
    start_pods(env, ns, [PodPlan::new(name, GOOD, ip).port("http", 80)]).await;
}

fn json_obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_named_port_and_empty_selector_match() {
    let (env, ns, roster) = world("ports", "all").await;
    create(&env, &ns, &good_service()).await;
    create(
        &env,
        &ns,
        &fixtures::service("noport", GOOD, &[("grpc", 9000, "grpc")]),
    )
    .await;
    create(
        &env,
        &ns,
        &fixtures::service("nobody", &[("app", "nobody")], &[("http", 80, "80")]),
    )
    .await;
    good_pod(&env, &ns, "g1", "10.5.0.1").await;
    wait_ready_ips(&env, &ns, "good", &["10.5.0.1"]).await;
    let noport = eventually_some("noport Endpoints", || async {
        endpoints(&env, &ns, "noport").await
    })
    .await;
    assert_eq!(
        endpoint_ips(&noport),
        (vec![], vec![]),
        "a port no pod defines publishes nobody"
    );
    let nobody = eventually_some("nobody Endpoints", || async {
        endpoints(&env, &ns, "nobody").await
    })
    .await;
    assert!(nobody.subsets.unwrap_or_default().is_empty());
    if env.serves_endpointslices_v1() {
        let s = eventually_some("noport's slices", || async {
            let s = slices(&env, &ns, "noport").await;
            (!s.is_empty()).then_some(s)
        })
        .await;
        assert!(
            s.iter().all(|s| s.endpoints.is_empty()),
            "no ports: [] slice with the pod (upstream #109627)"
        );
    }
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_ports_and_duplicate_pod_ips() {
    let (env, ns, roster) = world("many", "all").await;
    let ports: Vec<serde_json::Value> = (0..100)
        .map(|i| json!({"name": format!("p{i}"), "port": 1000 + i}))
        .collect();
    let svc: Service = json_obj(
        json!({"metadata": {"name": "wide"}, "spec": {"selector": {"app": "good"}, "ports": ports}}),
    );
    create(&env, &ns, &svc).await;
    create(&env, &ns, &good_service()).await;
    good_pod(&env, &ns, "g1", "10.5.0.7").await;
    good_pod(&env, &ns, "g2", "10.5.0.7").await; // two pods claim one IP
    wait_ready_ips(&env, &ns, "good", &["10.5.0.7"]).await;
    // Both pods are listed (distinct targetRefs: deduplication is by IP and pod, not IP alone), on all
    // 100 ports; a controller deduplicating by IP would never get here.
    let addresses = |e: &k8s_openapi::api::core::v1::Endpoints| -> (usize, usize) {
        let subsets = e.subsets.iter().flatten();
        let ports = subsets.clone().flat_map(|s| s.ports.iter().flatten()).count();
        let addresses = subsets.map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum();
        (ports, addresses)
    };
    eventually("wide Endpoints: 100 ports, both pods", || async {
        endpoints(&env, &ns, "wide")
            .await
            .is_some_and(|e| addresses(&e) == (100, 2))
    })
    .await;
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_annotated_selector_gets_a_warning_event() {
    let (env, ns, roster) = world("badsel", "annotated").await;
    let bad: Service = json_obj(
        json!({"metadata": {"name": "bad", "annotations": {"roster.dev/selector": "app in (a"}},
        "spec": {"ports": [{"port": 80}]}}),
    );
    create(&env, &ns, &bad).await;
    let good: Service = json_obj(
        json!({"metadata": {"name": "good", "annotations": {"roster.dev/selector": "app=good"}},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    );
    create(&env, &ns, &good).await;
    good_pod(&env, &ns, "g1", "10.5.0.2").await;
    wait_ready_ips(&env, &ns, "good", &["10.5.0.2"]).await;
    let events = Api::<Event>::namespaced(env.client(), &ns);
    let warning = eventually_some("InvalidSelector event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("InvalidSelector"))
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(
        warning.regarding.clone().and_then(|r| r.name).as_deref(),
        Some("bad")
    );
    assert!(
        endpoints(&env, &ns, "bad").await.is_none(),
        "an unparseable selector publishes nothing"
    );

    // Another cause is another Event, not one more of the first.
    let services = Api::<Service>::namespaced(env.client(), &ns);
    let annotate = |selector: &str| json!({"metadata": {"annotations": {"roster.dev/selector": selector}}});
    let merge = |v| kube::api::Patch::Merge(v);
    let params = kube::api::PatchParams::default();
    services
        .patch("bad", &params, &merge(annotate("app notin (b")))
        .await
        .unwrap();
    let notes = || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        let invalid = list
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("InvalidSelector"));
        invalid
            .map(|e| (e.metadata.name.unwrap(), e.note.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    eventually("a second InvalidSelector Event with its own note", || async {
        notes().await.len() == 2
    })
    .await;
    let first_note = warning.note.clone().unwrap();
    assert!(
        notes().await.iter().any(|(_, note)| *note == first_note),
        "{:?}",
        notes().await
    );

    // An Event gone from the server (Events expire) is made again, not patched.
    let first = warning.metadata.name.clone().unwrap();
    events.delete(&first, &Default::default()).await.unwrap();
    services
        .patch("bad", &params, &merge(annotate("app in (a")))
        .await
        .unwrap();
    eventually("the first cause's Event made again", || async {
        notes()
            .await
            .iter()
            .any(|(name, note)| *name != first && *note == first_note)
    })
    .await;

    // The same cause once more is counted in that Event's series: a patch, and counted as one.
    let port = json!({"spec": {"ports": [{"port": 81}]}});
    services.patch("bad", &params, &merge(port)).await.unwrap();
    let patched = "roster_api_writes_total{outcome=\"success\",resource=\"events\",verb=\"patch\"}";
    eventually("the repeated Warning counted as a patch", || async {
        metric(&roster.metrics().await, patched) >= 1.0
    })
    .await;
    roster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_owned_by_others_are_never_modified() {
    let (env, ns, roster) = world("others", "all").await;
    create(&env, &ns, &good_service()).await;
    let foreign: EndpointSlice = json_obj(json!({
        "metadata": {"name": "good-foreign", "labels": {"kubernetes.io/service-name": "good",
            "endpointslice.kubernetes.io/managed-by": "someone-else"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.1"]}], "ports": []
    }));
    let foreign = Api::<EndpointSlice>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let orphan: Endpoints = json_obj(json!({"metadata": {"name": "no-such-service"},
        "subsets": [{"addresses": [{"ip": "192.0.2.2"}], "ports": [{"port": 80}]}]}));
    let orphan = create(&env, &ns, &orphan).await;
    good_pod(&env, &ns, "g1", "10.5.0.3").await;
    wait_ready_ips(&env, &ns, "good", &["10.5.0.3"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let slice_now = Api::<EndpointSlice>::namespaced(env.client(), &ns)
        .get("good-foreign")
        .await
        .unwrap();
    assert_eq!(
        slice_now.metadata.resource_version, foreign.metadata.resource_version,
        "foreign slice modified"
    );
    let orphan_now = endpoints(&env, &ns, "no-such-service")
        .await
        .expect("a Service-less hand-made Endpoints stays");
    assert_eq!(
        orphan_now.metadata.resource_version,
        orphan.metadata.resource_version
    );
    roster.stop().await;
}
