//! LIST semantics: snapshots across pages, resourceVersion rules, selectors and deletecollection.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, VersionMatch};
use serde_json::json;

use super::{api_error, from, pod, start, start_with};
use crate::MemoryOptions;

async fn config_maps(cms: &Api<ConfigMap>, first: usize, n: usize) {
    for i in first..first + n {
        cms.create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": format!("c{i:02}"), "labels": {"i": i.to_string()}}})),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn pages_come_from_one_snapshot() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    config_maps(&cms, 0, 10).await;
    let first = cms.list(&ListParams::default().limit(4)).await.unwrap();
    let rv = first.metadata.resource_version.clone();
    assert_eq!(first.metadata.remaining_item_count, Some(6));
    cms.delete("c05", &DeleteParams::default()).await.unwrap();
    cms.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "c99"}})),
    )
    .await
    .unwrap();
    let mut names: Vec<String> = first
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let mut token = first.metadata.continue_;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = cms
            .list(&ListParams::default().limit(4).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version, rv,
            "every page shows the first page's revision"
        );
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        token = page.metadata.continue_;
    }
    let expected: Vec<String> = (0..10).map(|i| format!("c{i:02}")).collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn continue_tokens_expire() {
    let opts = MemoryOptions {
        continue_ttl: Duration::from_millis(50),
        ..MemoryOptions::default()
    };
    let (_server, client) = start_with(opts).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    config_maps(&cms, 0, 3).await;
    let first = cms.list(&ListParams::default().limit(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let token = first.metadata.continue_.unwrap();
    let e = api_error(
        cms.list(&ListParams::default().limit(1).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn resource_version_rules() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    config_maps(&cms, 0, 2).await;
    let at = server.current_revision();
    config_maps(&cms, 10, 3).await;
    let exact = ListParams::default()
        .at(&at.to_string())
        .matching(VersionMatch::Exact);
    let past = cms.list(&exact).await.unwrap();
    assert_eq!(past.items.len(), 2);
    assert_eq!(past.metadata.resource_version, Some(at.to_string()));
    let latest = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        latest.metadata.resource_version,
        Some(server.current_revision().to_string()),
        "list RV is the global revision"
    );
    let any = cms.list(&ListParams::default().match_any()).await.unwrap();
    assert_eq!(any.items.len(), 5);
    server.compact_now();
    let e = api_error(cms.list(&exact).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    let first = cms.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.unwrap();
    let path = format!("/api/v1/namespaces/default/configmaps?limit=1&continue={token}&resourceVersion=1");
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    assert_eq!(
        api_error(
            client
                .request::<kube::core::ObjectList<ConfigMap>>(req)
                .await
                .unwrap_err()
        )
        .code,
        400
    );
}

#[tokio::test]
async fn selectors_filter_lists() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("a", json!({"app": "web", "tier": "1"}), Some("n1")),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("b", json!({"app": "db"}), None))
        .await
        .unwrap();
    let names = |l: kube::core::ObjectList<Pod>| {
        l.items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app in (web,x),tier"))
                .await
                .unwrap()
        ),
        ["a"]
    );
    assert_eq!(
        names(pods.list(&ListParams::default().labels("!tier")).await.unwrap()),
        ["b"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName=n1"))
                .await
                .unwrap()
        ),
        ["a"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName!=n1,status.phase=Pending"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    let all: Api<Pod> = Api::all(client);
    assert_eq!(
        names(
            all.list(&ListParams::default().fields("metadata.namespace=default"))
                .await
                .unwrap()
        )
        .len(),
        2
    );
    let e = api_error(
        pods.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: spec.bogus")
    );
    assert_eq!(
        api_error(
            pods.list(&ListParams::default().labels("a in b"))
                .await
                .unwrap_err()
        )
        .code,
        400
    );
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=db"))
        .await
        .unwrap();
    assert_eq!(names(pods.list(&ListParams::default()).await.unwrap()), ["a"]);
}
