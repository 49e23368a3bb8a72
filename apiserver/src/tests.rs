//! End-to-end tests through kube's own client and runtime.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{Fault, FaultAction, MemoryApiServer, MemoryOptions, Verb};

mod crds;
mod kubectl;
mod lists;
mod scale;
mod semantics;
mod watches;

pub(super) async fn start() -> (MemoryApiServer, kube::Client) {
    start_with(MemoryOptions::default()).await
}

pub(super) async fn start_with(opts: MemoryOptions) -> (MemoryApiServer, kube::Client) {
    let server = MemoryApiServer::start(opts).await.expect("server starts");
    let client = server.client().await.expect("client");
    (server, client)
}

pub(super) fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub(super) fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

pub(super) fn pod(name: &str, labels: Value, node: Option<&str>) -> Pod {
    let mut spec = json!({"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    from(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}))
}

fn lease(name: &str, holder: &str) -> Lease {
    from(
        json!({"metadata": {"name": name}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
        "renewTime": "2024-05-01T10:00:00.123456Z", "acquireTime": "2024-05-01T10:00:00.000001Z"}}),
    )
}

#[tokio::test]
async fn lease_create_replace_and_conflict() {
    let (_server, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let created = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    let raw = serde_json::to_value(&created).unwrap();
    assert_eq!(
        raw["spec"]["renewTime"], "2024-05-01T10:00:00.123456Z",
        "MicroTime round-trips"
    );
    let mut next = created.clone();
    next.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let replaced = leases.replace("l", &PostParams::default(), &next).await.unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    let stale = api_error(
        leases
            .replace("l", &PostParams::default(), &next)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        stale.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"l\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let dup = api_error(
        leases
            .create(&PostParams::default(), &lease("l", "a"))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    let missing = api_error(leases.get("nope").await.unwrap_err());
    assert_eq!(
        (missing.code, missing.message.as_str()),
        (404, "leases.coordination.k8s.io \"nope\" not found")
    );
}

#[tokio::test]
async fn create_errors_match_upstream() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm: ConfigMap = from(json!({"metadata": {"name": "c", "resourceVersion": "5"}}));
    let e = api_error(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(
        (e.code, e.message.as_str()),
        (500, "resourceVersion should not be set on objects to be created")
    );
    cm.metadata.resource_version = None;
    let e = api_error(
        Api::<ConfigMap>::namespaced(client.clone(), "nope")
            .create(&PostParams::default(), &cm)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
    cm.metadata.namespace = Some("kube-system".into());
    let e = api_error(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(e.code, 400);
    let generated: ConfigMap = from(json!({"metadata": {"generateName": "gen-"}}));
    let made = cms.create(&PostParams::default(), &generated).await.unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
}

#[tokio::test]
async fn noop_writes_keep_the_revision() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = cms
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "c"}, "data": {"k": "v"}})),
        )
        .await
        .unwrap();
    let before = server.current_revision();
    let same = cms.replace("c", &PostParams::default(), &cm).await.unwrap();
    assert_eq!(same.metadata.resource_version, cm.metadata.resource_version);
    let patched = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.resource_version, cm.metadata.resource_version);
    assert_eq!(server.current_revision(), before);
    let counts = server.request_counts();
    assert_eq!(counts.noop_writes("configmaps"), 2);
    assert_eq!(counts.writes("configmaps"), 3);
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    assert_eq!(server.current_revision(), before + 1);
}

#[tokio::test]
async fn graceful_pod_deletion() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(&PostParams::default(), &pod("bound", json!({}), Some("n1")))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("free", json!({}), None))
        .await
        .unwrap();
    pods.delete("bound", &DeleteParams::default()).await.unwrap();
    let terminating = pods.get("bound").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    pods.delete("free", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(pods.get("free").await.unwrap_err()).code, 404);
    pods.delete("bound", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(api_error(pods.get("bound").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn finalizers_hold_deletion() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "f", "finalizers": ["x/y"]}})),
    )
    .await
    .unwrap();
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let deleting = cms.get("f").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let add = json!({"metadata": {"finalizers": ["x/y", "x/z"]}});
    let e = api_error(
        cms.patch("f", &PatchParams::default(), &Patch::Merge(add))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("Forbidden: no new finalizers can be added if the object is being deleted"),
        "{}",
        e.message
    );
    let clear = json!({"metadata": {"finalizers": null}});
    cms.patch("f", &PatchParams::default(), &Patch::Merge(clear))
        .await
        .unwrap();
    assert_eq!(api_error(cms.get("f").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn status_subresource_split_and_strategic_patch() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let created = pods
        .create(&PostParams::default(), &pod("p", json!({"app": "a"}), Some("n1")))
        .await
        .unwrap();
    let status = created.status.as_ref().unwrap();
    assert_eq!(
        (status.phase.as_deref(), status.qos_class.as_deref()),
        (Some("Pending"), Some("BestEffort"))
    );
    let patch = json!({"status": {"phase": "Running", "podIP": "10.1.0.5", "conditions": [{"type": "Ready", "status": "True"}]}, "metadata": {"labels": {"x": "y"}}});
    let after = pods
        .patch_status("p", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    assert_eq!(after.status.as_ref().unwrap().pod_ip.as_deref(), Some("10.1.0.5"));
    assert!(
        !after.metadata.labels.unwrap().contains_key("x"),
        "status writes keep metadata"
    );
    let smp = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}});
    let merged = pods
        .patch_status("p", &PatchParams::default(), &Patch::Strategic(smp))
        .await
        .unwrap();
    assert_eq!(
        merged.status.unwrap().conditions.unwrap().len(),
        2,
        "conditions merge by type"
    );
    let main = json!({"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}});
    let after = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(main))
        .await
        .unwrap();
    assert_eq!(
        after.status.unwrap().phase.as_deref(),
        Some("Running"),
        "main writes ignore status"
    );
    let spec = json!({"spec": {"nodeName": "other"}});
    assert_eq!(
        api_error(
            pods.patch("p", &PatchParams::default(), &Patch::Merge(spec))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
}

#[tokio::test]
async fn services_get_cluster_ips_and_defaults() {
    let (_server, client) = start().await;
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let svc: Service =
        from(json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}}));
    let made = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let spec = made.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.2"));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        serde_json::to_value(&spec.ports.unwrap()[0]).unwrap(),
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    let change = json!({"spec": {"clusterIP": "10.96.0.9"}});
    assert_eq!(
        api_error(
            svcs.patch("s", &PatchParams::default(), &Patch::Merge(change))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    let headless: Service =
        from(json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
    assert_eq!(
        svcs.create(&PostParams::default(), &headless)
            .await
            .unwrap()
            .spec
            .unwrap()
            .cluster_ip
            .as_deref(),
        Some("None")
    );
    let unnamed: Service =
        from(json!({"metadata": {"name": "u"}, "spec": {"ports": [{"port": 80}, {"port": 81}]}}));
    let e = api_error(svcs.create(&PostParams::default(), &unnamed).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "Service \"u\" is invalid: [spec.ports[0].name: Required value, spec.ports[1].name: Required value]"
    );
}

#[tokio::test]
async fn faults_and_counters() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    server.inject_fault(Fault::status(Verb::Create, "configmaps", 500, None).times(1));
    let cm: ConfigMap = from(json!({"metadata": {"name": "c"}}));
    assert_eq!(
        api_error(cms.create(&PostParams::default(), &cm).await.unwrap_err()).code,
        500
    );
    cms.create(&PostParams::default(), &cm).await.unwrap();
    server.inject_fault(Fault {
        resource: Some("configmaps".into()),
        times: Some(1),
        ..Fault::new(FaultAction::Status {
            code: 429,
            retry_after_secs: Some(1),
        })
    });
    cms.get("c").await.expect("kube retries a 429 by itself");
    let counts = server.request_counts();
    assert_eq!(counts.get(Verb::Create, "configmaps"), 2);
    assert_eq!(counts.get(Verb::Get, "configmaps"), 2);
    let log = server.request_log();
    assert!(
        log.iter()
            .any(|r| r.status == 429 && r.path == "/api/v1/namespaces/default/configmaps/c")
    );
    server.inject_fault(Fault {
        verb: Some(Verb::Get),
        ..Fault::new(FaultAction::DropStream)
    });
    assert!(cms.get("c").await.is_err());
    server.clear_faults();
    cms.get("c").await.unwrap();
}

#[tokio::test]
async fn events_from_the_recorder() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = pods
        .create(&PostParams::default(), &pod("p", json!({}), None))
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "roster".into(),
        instance: Some("roster-0".into()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("hi".into()),
        action: "Sync".into(),
        secondary: None,
    };
    let reference = p.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(client, "default");
    let list = core
        .list(&ListParams::default().fields("involvedObject.name=p,reason=Synced"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.message.as_deref(), Some("hi"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(Some(2)));
}

#[tokio::test]
async fn namespace_termination() {
    let (_server, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "gone"}})),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "gone");
    cms.create(&PostParams::default(), &from(json!({"metadata": {"name": "a"}})))
        .await
        .unwrap();
    namespaces.delete("gone", &DeleteParams::default()).await.unwrap();
    let ns = namespaces.get("gone").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let e = api_error(
        cms.create(&PostParams::default(), &from(json!({"metadata": {"name": "b"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(api_error(namespaces.get("gone").await.unwrap_err()).code, 404);
    assert_eq!(api_error(cms.get("a").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn lists_wait_for_a_future_revision() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let future = (server.current_revision() + 1).to_string();
    let waiting = {
        let cms = cms.clone();
        tokio::spawn(async move { cms.list(&ListParams::default().at(&future)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    cms.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "late"}})),
    )
    .await
    .unwrap();
    let list = waiting.await.unwrap().unwrap();
    assert_eq!(list.items.len(), 1, "the list waited for the write");
}

#[tokio::test]
async fn shutdown_ends_open_watches() {
    use futures::StreamExt;
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut stream = cms.watch(&Default::default(), "0").await.unwrap().boxed();
    let closed = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
    assert!(closed.is_ok(), "shutdown finished");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none_or(|e| e.is_err()), "the watch ended");
}
