//! WATCH through kube: selector transitions, the in-stream 410, bookmarks, and kube-runtime watchers
//! converging through re-lists and streaming lists.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

use super::{from, pod, start, start_with};
use crate::{MemoryOptions, Verb};

#[tokio::test]
async fn watch_sends_selector_transitions() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let made = cms
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "c", "labels": {"app": "a"}}})),
        )
        .await
        .unwrap();
    let rv = made.metadata.resource_version.unwrap();
    let params = WatchParams::default().labels("app=a");
    let mut stream = cms.watch(&params, &rv).await.unwrap().boxed();
    for app in ["b", "a"] {
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": app}}})),
        )
        .await
        .unwrap();
    }
    cms.delete("c", &DeleteParams::default()).await.unwrap();
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        kinds.push(match event {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Deleted(cm) => {
                assert!(cm.metadata.resource_version.is_some());
                "DELETED"
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(kinds, ["DELETED", "ADDED", "DELETED"]);
}

#[tokio::test]
async fn watch_from_a_compacted_revision_gets_an_in_stream_410() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let made = cms
        .create(&PostParams::default(), &from(json!({"metadata": {"name": "c"}})))
        .await
        .unwrap();
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await
    .unwrap();
    server.compact_now();
    let rv = made.metadata.resource_version.unwrap();
    let mut stream = cms.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    assert!(
        stream.try_next().await.unwrap().is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn bookmarks_on_demand() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = server.current_revision().to_string();
    let mut stream = cms.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.send_bookmarks();
    match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Bookmark(b)) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    server.close_all_watches();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );
}

async fn wait_for_len(store: &reflector::Store<Pod>, n: usize) {
    for _ in 0..200 {
        if store.state().len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("reflector has {} pods, expected {n}", store.state().len());
}

#[tokio::test]
async fn reflector_converges_through_relists() {
    let (server, client) = start_with(MemoryOptions {
        watch_history: 5,
        ..MemoryOptions::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for i in 0..3 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}"), json!({}), None))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(pods.clone(), watcher::Config::default().page_size(2)),
    )
    .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    wait_for_len(&reader, 3).await;
    server.expire_all_watches();
    for i in 3..20 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}"), json!({}), None))
            .await
            .unwrap();
    }
    wait_for_len(&reader, 20).await;
    pods.delete("p0", &DeleteParams::default()).await.unwrap();
    wait_for_len(&reader, 19).await;
    assert!(
        server.request_counts().get(Verb::List, "pods") >= 2,
        "the 410 made the watcher re-list"
    );
    task.abort();
}

#[tokio::test]
async fn streaming_list_watcher_converges() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(&PostParams::default(), &pod("a", json!({}), None))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().streaming_lists();
    let task = tokio::spawn(
        reflector(writer, watcher(pods.clone(), config))
            .applied_objects()
            .for_each(|_| async {}),
    );
    wait_for_len(&reader, 1).await;
    pods.create(&PostParams::default(), &pod("b", json!({}), None))
        .await
        .unwrap();
    wait_for_len(&reader, 2).await;
    task.abort();
}
