//! C. LIST: label and field selectors, key order, and limit/continue pagination over a consistent snapshot.

use serde_json::{Value, json};

use crate::support::{Case, Ctx, MERGE, cases, check_eq, item_names, q, rv};

pub fn cases() -> Vec<Case> {
    cases![
        label_selector_operators,
        label_selector_parse_error_is_400,
        field_selectors_on_pods,
        field_selector_unsupported_is_400,
        list_items_sorted_by_namespace_and_name,
        pagination_is_a_consistent_snapshot,
        continue_with_resource_version_is_400,
    ]
}

/// Three pods: p1 {app=a, tier=web}, p2 {app=b, tier=db}, p3 {app=c}.
async fn labelled_pods(cx: &Ctx) -> anyhow::Result<()> {
    cx.create_pod("p1", json!({"app": "a", "tier": "web"}), None)
        .await?;
    cx.create_pod("p2", json!({"app": "b", "tier": "db"}), None)
        .await?;
    cx.create_pod("p3", json!({"app": "c"}), None).await?;
    Ok(())
}

async fn pod_names(cx: &Ctx, query: &str) -> anyhow::Result<Vec<String>> {
    let list = cx.get(&format!("{}?{query}", cx.core("pods"))).await?.ok()?;
    Ok(item_names(&list))
}

async fn label_selector_operators(cx: Ctx) -> anyhow::Result<()> {
    labelled_pods(&cx).await?;
    let table = [
        ("app=a", vec!["p1"]),
        ("app==a", vec!["p1"]),
        ("app!=a", vec!["p2", "p3"]),
        ("app in (a,b)", vec!["p1", "p2"]),
        ("app notin (a,b)", vec!["p3"]),
        ("tier", vec!["p1", "p2"]),
        ("!tier", vec!["p3"]),
        ("app in (a,b),tier=db", vec!["p2"]),
        ("tier!=web", vec!["p2", "p3"]),
        ("app=zzz", vec![]),
    ];
    for (selector, want) in table {
        let got = pod_names(&cx, &format!("labelSelector={}", q(selector))).await?;
        check_eq!(got, want, "labelSelector {selector:?}");
    }
    Ok(())
}

async fn label_selector_parse_error_is_400(cx: Ctx) -> anyhow::Result<()> {
    for selector in ["app in (a", "app=a=b", "!"] {
        let reply = cx
            .get(&format!("{}?labelSelector={}", cx.core("pods"), q(selector)))
            .await?;
        reply
            .failure(400, Some("BadRequest"))
            .map_err(|e| e.context(format!("labelSelector {selector:?}")))?;
    }
    Ok(())
}

async fn field_selectors_on_pods(cx: Ctx) -> anyhow::Result<()> {
    cx.create_pod("bound", json!({}), Some("n1")).await?;
    cx.create_pod("running", json!({}), Some("n2")).await?;
    cx.create_pod("pending", json!({}), None).await?;
    let status = format!("{}/running/status", cx.core("pods"));
    cx.patch(&status, MERGE, json!({"status": {"phase": "Running"}}))
        .await?
        .ok()?;
    let table = [
        ("metadata.name=bound", vec!["bound"]),
        ("metadata.name!=bound", vec!["pending", "running"]),
        ("spec.nodeName=n1", vec!["bound"]),
        ("spec.nodeName==n2", vec!["running"]),
        ("spec.nodeName=", vec!["pending"]),
        ("status.phase=Running", vec!["running"]),
        ("status.phase=Pending,spec.nodeName!=", vec!["bound"]),
        (
            &format!("metadata.namespace={}", cx.ns),
            vec!["bound", "pending", "running"],
        ),
    ];
    for (selector, want) in table {
        let got = pod_names(&cx, &format!("fieldSelector={}", q(selector))).await?;
        check_eq!(got, want, "fieldSelector {selector:?}");
    }
    Ok(())
}

async fn field_selector_unsupported_is_400(cx: Ctx) -> anyhow::Result<()> {
    let reply = cx
        .get(&format!("{}?fieldSelector={}", cx.core("pods"), q("spec.foo=x")))
        .await?;
    reply.failure(400, Some("BadRequest"))?;
    check_eq!(reply.message(), "field label not supported: spec.foo");
    let reply = cx
        .get(&format!(
            "{}?fieldSelector={}",
            cx.core("configmaps"),
            q("data.k=x")
        ))
        .await?;
    reply.failure(400, Some("BadRequest"))?;
    Ok(())
}

async fn list_items_sorted_by_namespace_and_name(cx: Ctx) -> anyhow::Result<()> {
    let label = format!("sort={}", cx.ns);
    let other = cx.env.create_namespace("c").await?;
    for name in ["z", "m", "a"] {
        cx.create_configmap(name, json!({"sort": cx.ns}), json!({}))
            .await?;
        let body = json!({"metadata": {"name": name, "labels": {"sort": cx.ns}}});
        cx.post(&format!("/api/v1/namespaces/{other}/configmaps"), body)
            .await?
            .ok()?;
    }
    let mine = cx.get(&cx.core("configmaps")).await?.ok()?;
    check_eq!(item_names(&mine), vec!["a", "m", "z"]);
    let all = cx
        .get(&format!("/api/v1/configmaps?labelSelector={}", q(&label)))
        .await?
        .ok()?;
    let got: Vec<(String, String)> = all["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["metadata"]["namespace"].as_str().unwrap_or("").into(),
                crate::support::name(i),
            )
        })
        .collect();
    let mut want = got.clone();
    want.sort();
    check_eq!(got.len(), 6usize, "items across both namespaces");
    check_eq!(got, want, "all-namespaces order");
    Ok(())
}

fn page_summary(page: &Value) -> (String, Vec<String>, Option<i64>, bool) {
    let meta = &page["metadata"];
    let has_continue = meta["continue"].as_str().is_some_and(|c| !c.is_empty());
    (
        rv(page),
        item_names(page),
        meta["remainingItemCount"].as_i64(),
        has_continue,
    )
}

async fn pagination_is_a_consistent_snapshot(cx: Ctx) -> anyhow::Result<()> {
    for name in ["c1", "c2", "c3", "c4", "c5"] {
        cx.create_configmap(name, json!({}), json!({})).await?;
    }
    let base = format!("{}?limit=2", cx.core("configmaps"));
    let first = cx.get(&base).await?.ok()?;
    let (snapshot, names, remaining, more) = page_summary(&first);
    check_eq!(
        (names, remaining, more),
        (vec!["c1".to_string(), "c2".into()], Some(3), true),
        "page 1"
    );
    // Writes between pages must not show: the pages are served from page 1's snapshot.
    cx.create_configmap("c0", json!({}), json!({})).await?;
    cx.create_configmap("c9", json!({}), json!({})).await?;
    cx.delete(&format!("{}/c4", cx.core("configmaps")), None)
        .await?
        .ok()?;
    let token = first["metadata"]["continue"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let second = cx.get(&format!("{base}&continue={}", q(&token))).await?.ok()?;
    let (rv2, names, remaining, more) = page_summary(&second);
    check_eq!(rv2, snapshot, "page 2 resourceVersion");
    check_eq!(
        (names, remaining, more),
        (vec!["c3".to_string(), "c4".into()], Some(1), true),
        "page 2"
    );
    let token = second["metadata"]["continue"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let third = cx.get(&format!("{base}&continue={}", q(&token))).await?.ok()?;
    let (rv3, names, remaining, more) = page_summary(&third);
    check_eq!(rv3, snapshot, "page 3 resourceVersion");
    check_eq!(
        (names, remaining, more),
        (vec!["c5".to_string()], None, false),
        "page 3"
    );
    let fresh = cx.get(&cx.core("configmaps")).await?.ok()?;
    check_eq!(item_names(&fresh), vec!["c0", "c1", "c2", "c3", "c5", "c9"]);
    Ok(())
}

async fn continue_with_resource_version_is_400(cx: Ctx) -> anyhow::Result<()> {
    for name in ["a", "b", "c"] {
        cx.create_configmap(name, json!({}), json!({})).await?;
    }
    let first = cx
        .get(&format!("{}?limit=1", cx.core("configmaps")))
        .await?
        .ok()?;
    let token = first["metadata"]["continue"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(!token.is_empty(), "no continue token with limit=1 over 3 items");
    let path = format!(
        "{}?limit=1&continue={}&resourceVersion={}",
        cx.core("configmaps"),
        q(&token),
        rv(&first)
    );
    let reply = cx.get(&path).await?;
    reply.failure(400, Some("BadRequest"))?;
    check_eq!(
        reply.message(),
        "specifying resource version is not allowed when using continue"
    );
    let garbage = cx
        .get(&format!("{}?limit=1&continue=garbage", cx.core("configmaps")))
        .await?;
    garbage.failure(400, Some("BadRequest"))?;
    Ok(())
}
