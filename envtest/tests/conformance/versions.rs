//! B. resourceVersion: server-populated metadata, the list RV, optimistic concurrency, no-op writes and
//! preconditions.

use serde_json::json;

use crate::support::{Case, Ctx, JSON_PATCH, MERGE, STRATEGIC, cases, check_eq, rv, rv_num, secs, summary};

pub fn cases() -> Vec<Case> {
    cases![
        create_sets_uid_timestamp_and_rv,
        create_with_resource_version_is_500,
        list_rv_is_the_current_revision,
        put_with_stale_rv_conflicts_and_keeps_object,
        put_without_rv_is_unconditional,
        put_without_rv_on_lease_is_invalid,
        noop_writes_keep_rv_and_emit_no_event,
        merge_patch_with_stale_rv_conflicts,
        json_patch_failed_test_is_422,
        delete_preconditions_conflict,
    ]
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

async fn create_sets_uid_timestamp_and_rv(cx: Ctx) -> anyhow::Result<()> {
    let cm = cx.create_configmap("fresh", json!({}), json!({"k": "v"})).await?;
    let meta = &cm["metadata"];
    anyhow::ensure!(meta["uid"].as_str().is_some_and(is_uuid), "uid {}", meta["uid"]);
    let ts = meta["creationTimestamp"].as_str().unwrap_or_default();
    // RFC 3339 with whole seconds, UTC.
    anyhow::ensure!(
        ts.len() == 20 && ts.ends_with('Z') && ts.parse::<jiff::Timestamp>().is_ok(),
        "creationTimestamp {ts:?}"
    );
    let age = jiff::Timestamp::now().duration_since(ts.parse()?).as_secs();
    anyhow::ensure!((-5..=60).contains(&age), "creationTimestamp {ts} is {age}s off");
    anyhow::ensure!(rv_num(&cm)? > 0, "resourceVersion {}", rv(&cm));
    check_eq!(meta["namespace"], json!(cx.ns));
    // ConfigMaps do not track generation (observed: absent on 1.20.2).
    check_eq!(meta.get("generation"), None);
    let got = cx.get(&format!("{}/fresh", cx.core("configmaps"))).await?.ok()?;
    check_eq!(got["metadata"]["uid"], meta["uid"]);
    check_eq!(rv(&got), rv(&cm));
    check_eq!(got["kind"], json!("ConfigMap"));
    check_eq!(got["apiVersion"], json!("v1"));
    Ok(())
}

async fn create_with_resource_version_is_500(cx: Ctx) -> anyhow::Result<()> {
    let body = json!({"metadata": {"name": "b", "resourceVersion": "5"}});
    let reply = cx.post(&cx.core("configmaps"), body).await?;
    // Observed on 1.20.2: HTTP 500 without a reason.
    let status = reply.failure(500, None)?;
    check_eq!(
        status["message"],
        json!("resourceVersion should not be set on objects to be created")
    );
    check_eq!(
        cx.get(&format!("{}/b", cx.core("configmaps"))).await?.code,
        404u16
    );
    Ok(())
}

async fn list_rv_is_the_current_revision(cx: Ctx) -> anyhow::Result<()> {
    let mine = cx.create_configmap("a", json!({}), json!({})).await?;
    let other_ns = cx.env.create_namespace("c").await?;
    let other_path = format!("/api/v1/namespaces/{other_ns}/configmaps");
    let later = cx
        .post(&other_path, json!({"metadata": {"name": "later"}}))
        .await?
        .ok()?;
    anyhow::ensure!(
        rv_num(&later)? > rv_num(&mine)?,
        "revisions must grow across namespaces"
    );
    let list = cx.get(&cx.core("configmaps")).await?.ok()?;
    check_eq!(list["kind"], json!("ConfigMapList"));
    // The list RV is the store's revision, not the newest item's: it covers the write in the other namespace.
    let list_rv = rv_num(&list)?;
    anyhow::ensure!(
        list_rv >= rv_num(&later)?,
        "list RV {list_rv} is older than the latest write {}",
        rv(&later)
    );
    check_eq!(list["items"][0]["metadata"]["resourceVersion"], json!(rv(&mine)));
    Ok(())
}

async fn put_with_stale_rv_conflicts_and_keeps_object(cx: Ctx) -> anyhow::Result<()> {
    let cm = cx.create_configmap("c", json!({}), json!({"k": "1"})).await?;
    let path = format!("{}/c", cx.core("configmaps"));
    let mut next = cm.clone();
    next["data"]["k"] = json!("2");
    let updated = cx.put(&path, next.clone()).await?.ok()?;
    anyhow::ensure!(rv_num(&updated)? > rv_num(&cm)?, "an update must bump the RV");
    next["data"]["k"] = json!("3");
    cx.put(&path, next).await?.failure(409, Some("Conflict"))?;
    let now = cx.get(&path).await?.ok()?;
    check_eq!(now["data"]["k"], json!("2"));
    check_eq!(rv(&now), rv(&updated));
    Ok(())
}

async fn put_without_rv_is_unconditional(cx: Ctx) -> anyhow::Result<()> {
    let cm = cx.create_configmap("c", json!({}), json!({"k": "1"})).await?;
    let path = format!("{}/c", cx.core("configmaps"));
    let body = json!({"metadata": {"name": "c"}, "data": {"k": "2"}});
    let updated = cx.put(&path, body).await?.ok()?;
    check_eq!(updated["data"]["k"], json!("2"));
    check_eq!(updated["metadata"]["uid"], cm["metadata"]["uid"]);
    anyhow::ensure!(rv_num(&updated)? > rv_num(&cm)?, "RV not bumped");
    Ok(())
}

async fn put_without_rv_on_lease_is_invalid(cx: Ctx) -> anyhow::Result<()> {
    let leases = cx.group("coordination.k8s.io/v1", "leases");
    cx.post(
        &leases,
        json!({"metadata": {"name": "l1"}, "spec": {"holderIdentity": "a"}}),
    )
    .await?
    .ok()?;
    let reply = cx
        .put(
            &format!("{leases}/l1"),
            json!({"metadata": {"name": "l1"}, "spec": {"holderIdentity": "b"}}),
        )
        .await?;
    // Leases do not allow unconditional updates (observed on 1.20.2).
    let status = reply.failure(422, Some("Invalid"))?;
    check_eq!(reply.cause_fields(), vec!["metadata.resourceVersion".to_string()]);
    check_eq!(status["details"]["group"], json!("coordination.k8s.io"));
    check_eq!(status["details"]["kind"], json!("leases"));
    Ok(())
}

async fn noop_writes_keep_rv_and_emit_no_event(cx: Ctx) -> anyhow::Result<()> {
    let cm = cx
        .create_configmap("n", json!({"app": "x"}), json!({"k": "v"}))
        .await?;
    let path = format!("{}/n", cx.core("configmaps"));
    let mut watch = cx
        .watch(&format!("{}?resourceVersion={}", cx.core("configmaps"), rv(&cm)))
        .await?;
    let same = [
        cx.patch(&path, MERGE, json!({"data": {"k": "v"}})).await?.ok()?,
        cx.patch(&path, STRATEGIC, json!({"metadata": {"labels": {"app": "x"}}}))
            .await?
            .ok()?,
        cx.patch(
            &path,
            JSON_PATCH,
            json!([{"op": "replace", "path": "/data/k", "value": "v"}]),
        )
        .await?
        .ok()?,
        cx.put(
            &path,
            json!({"metadata": {"name": "n", "labels": {"app": "x"}}, "data": {"k": "v"}}),
        )
        .await?
        .ok()?,
    ];
    for (i, obj) in same.iter().enumerate() {
        check_eq!(rv(obj), rv(&cm), "RV after no-op write #{i}");
    }
    let changed = cx.patch(&path, MERGE, json!({"data": {"k": "w"}})).await?.ok()?;
    let ev = watch.expect_change(secs(10)).await?;
    check_eq!(
        summary(&ev),
        format!("MODIFIED n@{}", rv(&changed)),
        "the first event must be the real change"
    );
    Ok(())
}

async fn merge_patch_with_stale_rv_conflicts(cx: Ctx) -> anyhow::Result<()> {
    let cm = cx.create_configmap("m", json!({}), json!({"k": "1"})).await?;
    let path = format!("{}/m", cx.core("configmaps"));
    let fresh = json!({"metadata": {"resourceVersion": rv(&cm)}, "data": {"k": "2"}});
    let patched = cx.patch(&path, MERGE, fresh).await?.ok()?;
    check_eq!(patched["data"]["k"], json!("2"));
    let stale = json!({"metadata": {"resourceVersion": rv(&cm)}, "data": {"k": "3"}});
    cx.patch(&path, MERGE, stale.clone())
        .await?
        .failure(409, Some("Conflict"))?;
    cx.patch(&path, STRATEGIC, stale)
        .await?
        .failure(409, Some("Conflict"))?;
    check_eq!(cx.get(&path).await?.ok()?["data"]["k"], json!("2"));
    Ok(())
}

async fn json_patch_failed_test_is_422(cx: Ctx) -> anyhow::Result<()> {
    cx.create_configmap("j", json!({}), json!({"k": "v"})).await?;
    let path = format!("{}/j", cx.core("configmaps"));
    let failing = json!([{"op": "test", "path": "/data/k", "value": "other"}, {"op": "replace", "path": "/data/k", "value": "x"}]);
    // Observed on 1.20.2: 422 Invalid, "the server rejected our request due to an error in our request".
    cx.patch(&path, JSON_PATCH, failing)
        .await?
        .failure(422, Some("Invalid"))?;
    check_eq!(cx.get(&path).await?.ok()?["data"]["k"], json!("v"));
    let passing = json!([{"op": "test", "path": "/data/k", "value": "v"}, {"op": "replace", "path": "/data/k", "value": "x"}]);
    check_eq!(
        cx.patch(&path, JSON_PATCH, passing).await?.ok()?["data"]["k"],
        json!("x")
    );
    Ok(())
}

async fn delete_preconditions_conflict(cx: Ctx) -> anyhow::Result<()> {
    let cm = cx.create_configmap("p", json!({}), json!({})).await?;
    let path = format!("{}/p", cx.core("configmaps"));
    let wrong_uid = json!({"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}});
    let reply = cx.delete(&path, Some(wrong_uid)).await?;
    reply.failure(409, Some("Conflict"))?;
    anyhow::ensure!(
        reply.message().contains("UID in the precondition"),
        "message: {}",
        reply.message()
    );
    let reply = cx
        .delete(&path, Some(json!({"preconditions": {"resourceVersion": "1"}})))
        .await?;
    reply.failure(409, Some("Conflict"))?;
    anyhow::ensure!(
        reply.message().contains("ResourceVersion in the precondition"),
        "message: {}",
        reply.message()
    );
    cx.get(&path).await?.ok()?;
    let matching = json!({"preconditions": {"uid": cm["metadata"]["uid"], "resourceVersion": rv(&cm)}});
    let done = cx.delete(&path, Some(matching)).await?.ok()?;
    // A delete without finalizers answers with a Success Status (observed on 1.20.2).
    check_eq!(done["kind"], json!("Status"));
    check_eq!(done["status"], json!("Success"));
    check_eq!(done["details"]["uid"], cm["metadata"]["uid"]);
    check_eq!(cx.get(&path).await?.code, 404u16);
    Ok(())
}
