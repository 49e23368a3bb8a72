//! D (memory only). Streaming lists: `sendInitialEvents=true` starts a watch with the current state as ADDED
//! events and a BOOKMARK annotated `k8s.io/initial-events-end`; kube's watcher uses it when asked to.
//! Expectations follow upstream (1.27+), since 1.20 cannot be the oracle.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::json;

use crate::support::{Case, Ctx, Needs, cases, check_eq, rv, secs, summary};

pub fn cases() -> Vec<Case> {
    cases![
        streaming_list_initial_events_then_bookmark => Needs::StreamingList,
        streaming_list_requires_not_older_than => Needs::StreamingList,
        watcher_streaming_list_strategy => Needs::StreamingList,
    ]
}

async fn streaming_list_initial_events_then_bookmark(cx: Ctx) -> anyhow::Result<()> {
    let a = cx.create_configmap("a", json!({}), json!({})).await?;
    let b = cx.create_configmap("b", json!({}), json!({})).await?;
    let query = "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    let mut watch = cx.watch(&format!("{}?{query}", cx.core("configmaps"))).await?;
    check_eq!(watch.code, 200u16);
    let mut initial = vec![
        summary(&watch.expect_event(secs(10)).await?),
        summary(&watch.expect_event(secs(10)).await?),
    ];
    initial.sort();
    check_eq!(
        initial,
        vec![format!("ADDED a@{}", rv(&a)), format!("ADDED b@{}", rv(&b))]
    );
    let end = watch.expect_event(secs(10)).await?;
    check_eq!(end["type"], json!("BOOKMARK"), "{end}");
    check_eq!(end["object"]["kind"], json!("ConfigMap"));
    check_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        json!("true")
    );
    anyhow::ensure!(
        crate::support::rv_num(&end["object"])? >= crate::support::rv_num(&b)?,
        "bookmark RV {end}"
    );
    let c = cx.create_configmap("c", json!({}), json!({})).await?;
    check_eq!(
        summary(&watch.expect_change(secs(10)).await?),
        format!("ADDED c@{}", rv(&c))
    );
    Ok(())
}

async fn streaming_list_requires_not_older_than(cx: Ctx) -> anyhow::Result<()> {
    let path = format!(
        "{}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true",
        cx.core("configmaps")
    );
    let reply = cx.get(&path).await?;
    // Upstream (apiserver validateWatchOptions) rejects the ListOptions before watching.
    let status = reply.failure(422, Some("Invalid"))?;
    let want = "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: \
                sendInitialEvents requires setting resourceVersionMatch to NotOlderThan";
    check_eq!(status["message"], json!(want));
    check_eq!(
        (
            status["details"]["group"].clone(),
            status["details"]["kind"].clone()
        ),
        (json!("meta.k8s.io"), json!("ListOptions"))
    );
    check_eq!(reply.cause_fields(), vec!["resourceVersionMatch".to_string()]);
    check_eq!(
        status["details"]["causes"][0]["reason"],
        json!("FieldValueForbidden")
    );
    Ok(())
}

async fn watcher_streaming_list_strategy(cx: Ctx) -> anyhow::Result<()> {
    cx.create_configmap("a", json!({}), json!({})).await?;
    cx.create_configmap("b", json!({}), json!({})).await?;
    let api = Api::<ConfigMap>::namespaced(cx.client(), &cx.ns);
    let mut events = watcher(api, watcher::Config::default().streaming_lists()).boxed();
    let mut names = Vec::new();
    let collect = async {
        loop {
            match events
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("the watcher stream ended"))??
            {
                watcher::Event::Init => names.clear(),
                watcher::Event::InitApply(cm) => names.push(cm.metadata.name.unwrap_or_default()),
                watcher::Event::InitDone => return anyhow::Ok(()),
                other => anyhow::bail!("unexpected event before InitDone: {other:?}"),
            }
        }
    };
    tokio::time::timeout(secs(15), collect)
        .await
        .map_err(|_| anyhow::anyhow!("no InitDone in 15 s"))??;
    names.sort();
    check_eq!(names, vec!["a", "b"]);
    Ok(())
}
