//! Per-kind rules and write preconditions: Endpoints, EndpointSlices, Events, patches, deletion options.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent, WatchParams};
use serde_json::json;

use super::{api_error, from, start};

#[tokio::test]
async fn endpoints_validation() {
    let (_server, client) = start().await;
    let eps: Api<Endpoints> = Api::namespaced(client, "default");
    let bad: Endpoints = from(
        json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 80}]}]}),
    );
    let e = api_error(eps.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("may not be in the loopback range (127.0.0.0/8)"),
        "{}",
        e.message
    );
    let good: Endpoints = from(
        json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.1.0.1"}], "ports": [{"port": 80}]}]}),
    );
    let made = eps
        .replace("e", &PostParams::default(), &good)
        .await
        .expect("PUT creates Endpoints");
    assert_eq!(
        serde_json::to_value(&made.subsets.unwrap()[0].ports).unwrap(),
        json!([{"port": 80, "protocol": "TCP"}])
    );
}

#[tokio::test]
async fn endpoint_slices_v1() {
    let (_server, client) = start().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let slice: EndpointSlice = from(
        json!({"metadata": {"generateName": "web-", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "http", "port": 8080}]}),
    );
    let made = slices.create(&PostParams::default(), &slice).await.unwrap();
    assert_eq!(made.metadata.generation, Some(1));
    let name = made.metadata.name.clone().unwrap();
    let change = json!({"addressType": "IPv6"});
    assert_eq!(
        api_error(
            slices
                .patch(&name, &PatchParams::default(), &Patch::Merge(change))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    let endpoints = json!({"endpoints": [{"addresses": ["10.1.0.2"]}]});
    let after = slices
        .patch(&name, &PatchParams::default(), &Patch::Merge(endpoints))
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, Some(2));
    let too_many: Vec<_> = (0..1001)
        .map(|i| json!({"addresses": [format!("10.2.{}.{}", i / 250, i % 250 + 1)]}))
        .collect();
    let big: EndpointSlice =
        from(json!({"metadata": {"name": "big"}, "addressType": "IPv4", "endpoints": too_many}));
    assert_eq!(
        api_error(slices.create(&PostParams::default(), &big).await.unwrap_err()).code,
        422
    );
}

#[tokio::test]
async fn events_v1_require_their_fields() {
    let (_server, client) = start().await;
    let events: Api<Event> = Api::namespaced(client, "default");
    let partial: Event = from(json!({"metadata": {"name": "e"}, "reason": "R"}));
    let e = api_error(events.create(&PostParams::default(), &partial).await.unwrap_err());
    assert_eq!(e.code, 422);
    for field in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "regarding",
    ] {
        assert!(e.message.contains(field), "{field} missing from {}", e.message);
    }
}

#[tokio::test]
async fn patch_and_delete_preconditions() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let made = cms
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})),
        )
        .await
        .unwrap();
    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"a": "2"}});
    assert_eq!(
        api_error(
            cms.patch("c", &PatchParams::default(), &Patch::Merge(stale))
                .await
                .unwrap_err()
        )
        .code,
        409
    );
    let failing: json_patch::Patch =
        from(json!([{"op": "test", "path": "/data/a", "value": "9"}, {"op": "remove", "path": "/data/a"}]));
    assert_eq!(
        api_error(
            cms.patch("c", &PatchParams::default(), &Patch::Json::<()>(failing))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    let passing: json_patch::Patch = from(
        json!([{"op": "test", "path": "/data/a", "value": "1"}, {"op": "add", "path": "/data/b", "value": "2"}]),
    );
    cms.patch("c", &PatchParams::default(), &Patch::Json::<()>(passing))
        .await
        .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    cms.create(&dry, &from(json!({"metadata": {"name": "dry"}})))
        .await
        .unwrap();
    assert_eq!(api_error(cms.get("dry").await.unwrap_err()).code, 404);
    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("x".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let e = api_error(cms.delete("c", &wrong_uid).await.unwrap_err());
    assert_eq!(e.code, 409);
    assert!(
        e.message
            .contains("the UID in the precondition (x) does not match"),
        "{}",
        e.message
    );
    let right_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: made.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::foreground()
    };
    cms.delete("c", &right_uid).await.unwrap();
    let pending = cms.get("c").await.unwrap();
    assert_eq!(
        pending.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_string()])
    );
}

#[tokio::test]
async fn watch_timeout_ends_with_a_bookmark() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = server.current_revision().to_string();
    let params = WatchParams::default().timeout(1);
    let mut stream = cms.watch(&params, &rv).await.unwrap().boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, Some(WatchEvent::Bookmark(_))), "{first:?}");
    assert!(stream.try_next().await.unwrap().is_none());
}
