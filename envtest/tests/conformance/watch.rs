//! D. WATCH: start semantics, ordering, selector transitions, DELETED state, timeouts, bookmarks, 410 in
//! the stream, and kube-runtime's watcher recovering from it.

use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};

use crate::crd::{WIDGETS_GV, create_widget, ensure_widget_crd};
use crate::support::{Case, Ctx, MERGE, Needs, cases, check_eq, q, rv, rv_num, secs, summary};

const NO_REAL_COMPACTION: &str = "etcd compaction and closing watches cannot be forced on a real server";

pub fn cases() -> Vec<Case> {
    cases![
        watch_without_rv_replays_state_then_live,
        watch_from_list_rv_sends_later_events_in_order,
        watch_selector_transition_deleted_then_added,
        watch_deleted_carries_last_state,
        watch_field_selector_metadata_name,
        watch_timeout_closes_cleanly,
        watch_bookmark_shape,
        watch_410_is_in_stream,
        list_exact_below_compaction_is_410 => Needs::MemoryHooks(NO_REAL_COMPACTION),
        watcher_relists_after_compaction => Needs::MemoryHooks(NO_REAL_COMPACTION),
    ]
}

async fn watch_without_rv_replays_state_then_live(cx: Ctx) -> anyhow::Result<()> {
    let a = cx.create_configmap("a", json!({}), json!({})).await?;
    let b = cx.create_configmap("b", json!({}), json!({})).await?;
    let mut watch = cx.watch(&cx.core("configmaps")).await?;
    let mut synthetic = vec![
        summary(&watch.expect_event(secs(10)).await?),
        summary(&watch.expect_event(secs(10)).await?),
    ];
    synthetic.sort();
    check_eq!(
        synthetic,
        vec![format!("ADDED a@{}", rv(&a)), format!("ADDED b@{}", rv(&b))]
    );
    let c = cx.create_configmap("c", json!({}), json!({})).await?;
    check_eq!(
        summary(&watch.expect_event(secs(10)).await?),
        format!("ADDED c@{}", rv(&c))
    );
    watch.expect_quiet(secs(1)).await
}

async fn watch_from_list_rv_sends_later_events_in_order(cx: Ctx) -> anyhow::Result<()> {
    cx.create_configmap("a", json!({}), json!({"k": "1"})).await?;
    let list = cx.get(&cx.core("configmaps")).await?.ok()?;
    let mut watch = cx
        .watch(&format!(
            "{}?resourceVersion={}",
            cx.core("configmaps"),
            rv(&list)
        ))
        .await?;
    check_eq!(watch.code, 200u16);
    anyhow::ensure!(
        watch.content_type.starts_with("application/json"),
        "content-type {:?}",
        watch.content_type
    );
    let path_a = format!("{}/a", cx.core("configmaps"));
    let a2 = cx
        .patch(&path_a, MERGE, json!({"data": {"k": "2"}}))
        .await?
        .ok()?;
    let b = cx.create_configmap("b", json!({}), json!({})).await?;
    cx.delete(&path_a, None).await?.ok()?;
    let got: Vec<Value> = vec![
        watch.expect_event(secs(10)).await?,
        watch.expect_event(secs(10)).await?,
        watch.expect_event(secs(10)).await?,
    ];
    check_eq!(summary(&got[0]), format!("MODIFIED a@{}", rv(&a2)));
    check_eq!(
        (
            got[0]["object"]["kind"].clone(),
            got[0]["object"]["apiVersion"].clone()
        ),
        (json!("ConfigMap"), json!("v1"))
    );
    check_eq!(got[0]["object"]["data"]["k"], json!("2"));
    check_eq!(summary(&got[1]), format!("ADDED b@{}", rv(&b)));
    check_eq!(
        (got[2]["type"].clone(), crate::support::name(&got[2]["object"])),
        (json!("DELETED"), "a".to_string())
    );
    anyhow::ensure!(
        rv_num(&got[2]["object"])? > rv_num(&b)?,
        "DELETED must carry the deletion revision"
    );
    watch.expect_quiet(secs(1)).await
}

async fn watch_selector_transition_deleted_then_added(cx: Ctx) -> anyhow::Result<()> {
    let x = cx.create_configmap("x", json!({"app": "a"}), json!({})).await?;
    let query = format!("labelSelector={}&resourceVersion={}", q("app=a"), rv(&x));
    let mut watch = cx.watch(&format!("{}?{query}", cx.core("configmaps"))).await?;
    let path = format!("{}/x", cx.core("configmaps"));
    let to_b = cx
        .patch(&path, MERGE, json!({"metadata": {"labels": {"app": "b"}}}))
        .await?
        .ok()?;
    let ev = watch.expect_event(secs(10)).await?;
    check_eq!(summary(&ev), format!("DELETED x@{}", rv(&to_b)));
    // Observed on 1.20.2: the DELETED object is the last state that matched, stamped with the new revision.
    check_eq!(ev["object"]["metadata"]["labels"], json!({"app": "a"}));
    let back = cx
        .patch(&path, MERGE, json!({"metadata": {"labels": {"app": "a"}}}))
        .await?
        .ok()?;
    let ev = watch.expect_event(secs(10)).await?;
    check_eq!(summary(&ev), format!("ADDED x@{}", rv(&back)));
    check_eq!(ev["object"]["metadata"]["labels"], json!({"app": "a"}));
    watch.expect_quiet(secs(1)).await
}

async fn watch_deleted_carries_last_state(cx: Ctx) -> anyhow::Result<()> {
    let d = cx.create_configmap("d", json!({}), json!({"k": "1"})).await?;
    let mut watch = cx
        .watch(&format!("{}?resourceVersion={}", cx.core("configmaps"), rv(&d)))
        .await?;
    let path = format!("{}/d", cx.core("configmaps"));
    let last = cx
        .patch(&path, MERGE, json!({"data": {"k": "last"}}))
        .await?
        .ok()?;
    cx.delete(&path, None).await?.ok()?;
    check_eq!(
        summary(&watch.expect_event(secs(10)).await?),
        format!("MODIFIED d@{}", rv(&last))
    );
    let ev = watch.expect_event(secs(10)).await?;
    check_eq!(ev["type"], json!("DELETED"));
    check_eq!(ev["object"]["data"], json!({"k": "last"}));
    check_eq!(ev["object"]["metadata"]["uid"], d["metadata"]["uid"]);
    anyhow::ensure!(
        rv_num(&ev["object"])? > rv_num(&last)?,
        "DELETED RV {} not after {}",
        rv(&ev["object"]),
        rv(&last)
    );
    Ok(())
}

async fn watch_field_selector_metadata_name(cx: Ctx) -> anyhow::Result<()> {
    let list = cx.get(&cx.core("configmaps")).await?.ok()?;
    let query = format!(
        "fieldSelector={}&resourceVersion={}",
        q("metadata.name=target"),
        rv(&list)
    );
    let mut watch = cx.watch(&format!("{}?{query}", cx.core("configmaps"))).await?;
    cx.create_configmap("other", json!({}), json!({})).await?;
    let target = cx.create_configmap("target", json!({}), json!({})).await?;
    check_eq!(
        summary(&watch.expect_event(secs(10)).await?),
        format!("ADDED target@{}", rv(&target))
    );
    watch.expect_quiet(secs(1)).await
}

async fn watch_timeout_closes_cleanly(cx: Ctx) -> anyhow::Result<()> {
    let list = cx.get(&cx.core("configmaps")).await?.ok()?;
    let started = Instant::now();
    let path = format!(
        "{}?resourceVersion={}&timeoutSeconds=2",
        cx.core("configmaps"),
        rv(&list)
    );
    let mut watch = cx.watch(&path).await?;
    let end = watch.next(secs(10)).await?;
    check_eq!(end, None, "the stream must end without any event");
    let took = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        (1.5..8.0).contains(&took),
        "closed after {took:.1}s, timeoutSeconds=2"
    );
    Ok(())
}

async fn watch_bookmark_shape(cx: Ctx) -> anyhow::Result<()> {
    let cm = cx.create_configmap("a", json!({}), json!({})).await?;
    let query = format!(
        "resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=4",
        rv(&cm)
    );
    let mut watch = cx.watch(&format!("{}?{query}", cx.core("configmaps"))).await?;
    if let Some(memory) = cx.env.memory_server() {
        memory.send_bookmarks();
    }
    let mut bookmarks = Vec::new();
    while let Some(ev) = watch.next(secs(10)).await? {
        check_eq!(ev["type"], json!("BOOKMARK"), "only bookmarks expected: {ev}");
        bookmarks.push(ev);
    }
    // The real server may send none (observed: one, shortly before timeoutSeconds); memory must on demand.
    anyhow::ensure!(
        cx.env.memory_server().is_none() || !bookmarks.is_empty(),
        "no BOOKMARK after send_bookmarks()"
    );
    for ev in bookmarks {
        let obj = &ev["object"];
        check_eq!(
            (obj["kind"].clone(), obj["apiVersion"].clone()),
            (json!("ConfigMap"), json!("v1")),
            "{ev}"
        );
        anyhow::ensure!(
            rv_num(obj)? >= rv_num(&cm)?,
            "bookmark RV older than the watch start: {ev}"
        );
        let fields: Vec<&String> = obj.as_object().into_iter().flat_map(|o| o.keys()).collect();
        check_eq!(
            fields,
            vec!["apiVersion", "kind", "metadata"],
            "bookmark object fields"
        );
        // Only resourceVersion is set; 1.20.2 also prints `"creationTimestamp": null`.
        for (key, value) in obj["metadata"].as_object().into_iter().flatten() {
            anyhow::ensure!(
                key == "resourceVersion" || value.is_null(),
                "bookmark sets metadata.{key}: {ev}"
            );
        }
    }
    Ok(())
}

/// A resourceVersion the server no longer has history for: on memory, compact; on real, a fresh CRD's watch
/// cache starts at its creation, so "1" is too old (observed: `too old resource version: 1 (224)`).
async fn expired_widgets_rv(cx: &Ctx) -> anyhow::Result<String> {
    ensure_widget_crd(cx).await?;
    create_widget(cx, "w1", json!({"color": "red"})).await?;
    if let Some(memory) = cx.env.memory_server() {
        memory.compact_now();
    }
    Ok("1".into())
}

async fn watch_410_is_in_stream(cx: Ctx) -> anyhow::Result<()> {
    let old = expired_widgets_rv(&cx).await?;
    let path = format!("{}?resourceVersion={old}", cx.group(WIDGETS_GV, "widgets"));
    let mut watch = cx.watch(&path).await?;
    check_eq!(
        watch.code,
        200u16,
        "a watch from an expired RV starts with HTTP 200"
    );
    let ev = watch.expect_event(secs(10)).await?;
    check_eq!(ev["type"], json!("ERROR"));
    let status = &ev["object"];
    check_eq!(status["kind"], json!("Status"));
    check_eq!(status["apiVersion"], json!("v1"));
    check_eq!(status["status"], json!("Failure"));
    check_eq!(status["code"], json!(410));
    check_eq!(status["reason"], json!("Expired"));
    anyhow::ensure!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("too old resource version")),
        "{status}"
    );
    check_eq!(
        watch.next(secs(10)).await?,
        None,
        "the stream must close after the ERROR"
    );
    Ok(())
}

async fn list_exact_below_compaction_is_410(cx: Ctx) -> anyhow::Result<()> {
    let a = cx.create_configmap("a", json!({}), json!({})).await?;
    cx.create_configmap("b", json!({}), json!({})).await?;
    cx.create_configmap("c", json!({}), json!({})).await?;
    cx.memory()?.compact_now();
    let path = format!(
        "{}?resourceVersion={}&resourceVersionMatch=Exact",
        cx.core("configmaps"),
        rv(&a)
    );
    let reply = cx.get(&path).await?;
    reply.failure(410, Some("Expired"))?;
    Ok(())
}

async fn watcher_relists_after_compaction(cx: Ctx) -> anyhow::Result<()> {
    cx.create_configmap("a", json!({"app": "r"}), json!({})).await?;
    let api = Api::<ConfigMap>::namespaced(cx.client(), &cx.ns);
    let (store, writer) = reflector::store();
    let events = reflector::reflector(writer, watcher(api, watcher::Config::default().labels("app=r")));
    let mut events = events.boxed();
    wait_for_init_done(&mut events).await?;
    // The watcher's RV falls behind: writes it does not see, compaction past them, then a forced re-watch.
    cx.create_configmap("noise1", json!({}), json!({})).await?;
    cx.create_configmap("noise2", json!({}), json!({})).await?;
    let memory = cx.memory()?;
    memory.compact_now();
    memory.close_all_watches();
    wait_for_init_done(&mut events).await?;
    check_eq!(store_names(&store), vec!["a"], "the store after the relist");
    // The watch that follows the relist delivers live events again.
    cx.create_configmap("b", json!({"app": "r"}), json!({})).await?;
    let drive = async {
        while store_names(&store).len() < 2 {
            events
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("the watcher stream ended"))?
                .ok();
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(secs(10), drive)
        .await
        .map_err(|_| anyhow::anyhow!("b never reached the store"))??;
    check_eq!(store_names(&store), vec!["a", "b"]);
    Ok(())
}

fn store_names(store: &reflector::Store<ConfigMap>) -> Vec<String> {
    let mut names: Vec<String> = store
        .state()
        .iter()
        .map(|cm| cm.metadata.name.clone().unwrap_or_default())
        .collect();
    names.sort();
    names
}

type WatcherEvents = futures::stream::BoxStream<'static, watcher::Result<watcher::Event<ConfigMap>>>;

/// Reads the watcher's events until an `Init`…`InitDone` relist completes (errors such as the 410 are skipped).
async fn wait_for_init_done(events: &mut WatcherEvents) -> anyhow::Result<()> {
    let mut seen_init = false;
    let deadline = Instant::now() + secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, events.next()).await;
        match next.map_err(|_| anyhow::anyhow!("no relist within 15 s"))? {
            None => anyhow::bail!("the watcher stream ended"),
            Some(Ok(watcher::Event::Init)) => seen_init = true,
            Some(Ok(watcher::Event::InitDone)) if seen_init => return Ok(()),
            Some(_) => {}
        }
    }
}
