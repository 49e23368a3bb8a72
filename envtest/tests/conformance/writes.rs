//! E. Writes: generateName, namespace checks, the status subresource split, finalizers and pod graceful
//! deletion.

use serde_json::{Value, json};

use crate::support::{Case, Ctx, MERGE, WatchStream, cases, check_eq, rv, rv_num, secs, summary};

pub fn cases() -> Vec<Case> {
    cases![
        generate_name_appends_a_suffix,
        body_namespace_mismatch_is_400,
        create_in_missing_namespace_is_404,
        pod_status_subresource_split,
        service_status_subresource_split,
        finalizer_delays_deletion_until_removed,
        finalizer_cannot_be_added_while_deleting,
        bound_pod_deletion_is_graceful,
        unbound_pod_is_deleted_at_once,
        grace_period_zero_removes_terminating_pod,
    ]
}

async fn generate_name_appends_a_suffix(cx: Ctx) -> anyhow::Result<()> {
    let body = json!({"metadata": {"generateName": "gen-"}, "data": {"k": "v"}});
    let a = cx.post(&cx.core("configmaps"), body.clone()).await?.ok()?;
    let b = cx.post(&cx.core("configmaps"), body).await?.ok()?;
    for obj in [&a, &b] {
        let name = crate::support::name(obj);
        anyhow::ensure!(
            name.starts_with("gen-") && name.len() == 9,
            "generated name {name:?}"
        );
        check_eq!(obj["metadata"]["generateName"], json!("gen-"));
    }
    anyhow::ensure!(
        crate::support::name(&a) != crate::support::name(&b),
        "generated names collide"
    );
    cx.get(&format!("{}/{}", cx.core("configmaps"), crate::support::name(&a)))
        .await?
        .ok()?;
    Ok(())
}

async fn body_namespace_mismatch_is_400(cx: Ctx) -> anyhow::Result<()> {
    let body = json!({"metadata": {"name": "b", "namespace": "elsewhere"}});
    let reply = cx.post(&cx.core("configmaps"), body).await?;
    reply.failure(400, Some("BadRequest"))?;
    check_eq!(
        reply.message(),
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    // The body's namespace may equal the URL's.
    let body = json!({"metadata": {"name": "b", "namespace": cx.ns}});
    cx.post(&cx.core("configmaps"), body).await?.ok()?;
    Ok(())
}

async fn create_in_missing_namespace_is_404(cx: Ctx) -> anyhow::Result<()> {
    let missing = format!("{}-missing", cx.ns);
    let reply = cx
        .post(
            &format!("/api/v1/namespaces/{missing}/configmaps"),
            json!({"metadata": {"name": "b"}}),
        )
        .await?;
    let status = reply.failure(404, Some("NotFound"))?;
    check_eq!(
        status["message"],
        json!(format!("namespaces \"{missing}\" not found"))
    );
    check_eq!(status["details"], json!({"name": missing, "kind": "namespaces"}));
    // The namespaces every cluster starts with (observed on 1.20.2).
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let got = cx.get(&format!("/api/v1/namespaces/{ns}")).await?.ok()?;
        check_eq!(got["status"]["phase"], json!("Active"), "namespace {ns}");
    }
    Ok(())
}

async fn pod_status_subresource_split(cx: Ctx) -> anyhow::Result<()> {
    cx.create_pod("p", json!({}), None).await?;
    let path = format!("{}/p", cx.core("pods"));
    let main = cx
        .patch(
            &path,
            MERGE,
            json!({"status": {"phase": "Running"}, "metadata": {"labels": {"x": "y"}}}),
        )
        .await?;
    let main = main.ok()?;
    check_eq!(
        main["status"]["phase"],
        json!("Pending"),
        "PATCH pods must ignore status"
    );
    check_eq!(main["metadata"]["labels"]["x"], json!("y"));
    let status_patch =
        json!({"status": {"phase": "Running", "podIP": "10.1.2.3"}, "spec": {"activeDeadlineSeconds": 5}});
    let st = cx
        .patch(&format!("{path}/status"), MERGE, status_patch)
        .await?
        .ok()?;
    check_eq!(st["status"]["phase"], json!("Running"));
    check_eq!(st["status"]["podIP"], json!("10.1.2.3"));
    check_eq!(
        st["spec"].get("activeDeadlineSeconds"),
        None,
        "pods/status must ignore spec"
    );
    let mut put = st.clone();
    put["status"]["phase"] = json!("Failed");
    let after_put = cx.put(&path, put).await?.ok()?;
    check_eq!(
        after_put["status"]["phase"],
        json!("Running"),
        "PUT pods must ignore status"
    );
    Ok(())
}

async fn service_status_subresource_split(cx: Ctx) -> anyhow::Result<()> {
    let svc = json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}});
    cx.post(&cx.core("services"), svc).await?.ok()?;
    let path = format!("{}/s", cx.core("services"));
    let lb = |ip: &str| json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    let st = cx
        .patch(
            &format!("{path}/status"),
            MERGE,
            json!({"spec": {"sessionAffinity": "ClientIP"}, "status": lb("1.2.3.4")}),
        )
        .await?;
    let st = st.ok()?;
    check_eq!(st["status"], lb("1.2.3.4"));
    check_eq!(
        st["spec"]["sessionAffinity"],
        json!("None"),
        "services/status must ignore spec"
    );
    let main = cx
        .patch(
            &path,
            MERGE,
            json!({"spec": {"sessionAffinity": "ClientIP"}, "status": lb("5.6.7.8")}),
        )
        .await?
        .ok()?;
    check_eq!(main["spec"]["sessionAffinity"], json!("ClientIP"));
    check_eq!(main["status"], lb("1.2.3.4"), "PATCH services must ignore status");
    Ok(())
}

async fn finalizer_delays_deletion_until_removed(cx: Ctx) -> anyhow::Result<()> {
    let body = json!({"metadata": {"name": "f", "finalizers": ["conf.roster.dev/hold"]}});
    let created = cx.post(&cx.core("configmaps"), body).await?.ok()?;
    let mut watch = cx
        .watch(&format!(
            "{}?resourceVersion={}",
            cx.core("configmaps"),
            rv(&created)
        ))
        .await?;
    let path = format!("{}/f", cx.core("configmaps"));
    let deleting = cx.delete(&path, None).await?.ok()?;
    check_eq!(
        deleting["kind"],
        json!("ConfigMap"),
        "DELETE with a finalizer answers with the object"
    );
    anyhow::ensure!(
        deleting["metadata"]["deletionTimestamp"].is_string(),
        "no deletionTimestamp: {deleting}"
    );
    check_eq!(deleting["metadata"]["deletionGracePeriodSeconds"], json!(0));
    let ev = watch.expect_event(secs(10)).await?;
    check_eq!(summary(&ev), format!("MODIFIED f@{}", rv(&deleting)));
    check_eq!(
        ev["object"]["metadata"]["deletionTimestamp"],
        deleting["metadata"]["deletionTimestamp"]
    );
    // Deleting again changes nothing.
    let again = cx.delete(&path, None).await?.ok()?;
    check_eq!(rv(&again), rv(&deleting));
    check_eq!(
        cx.get(&path).await?.ok()?["metadata"]["finalizers"],
        json!(["conf.roster.dev/hold"])
    );
    cx.patch(&path, MERGE, json!({"metadata": {"finalizers": null}}))
        .await?
        .ok()?;
    let ev = watch.expect_event(secs(10)).await?;
    check_eq!(
        (ev["type"].clone(), crate::support::name(&ev["object"])),
        (json!("DELETED"), "f".to_string())
    );
    check_eq!(cx.get(&path).await?.code, 404u16);
    Ok(())
}

async fn finalizer_cannot_be_added_while_deleting(cx: Ctx) -> anyhow::Result<()> {
    let body = json!({"metadata": {"name": "f", "finalizers": ["conf.roster.dev/hold"]}});
    cx.post(&cx.core("configmaps"), body).await?.ok()?;
    let path = format!("{}/f", cx.core("configmaps"));
    cx.delete(&path, None).await?.ok()?;
    let more = json!({"metadata": {"finalizers": ["conf.roster.dev/hold", "conf.roster.dev/more"]}});
    let reply = cx.patch(&path, MERGE, more).await?;
    let status = reply.failure(422, Some("Invalid"))?;
    anyhow::ensure!(
        reply
            .message()
            .contains("no new finalizers can be added if the object is being deleted"),
        "message: {}",
        reply.message()
    );
    anyhow::ensure!(
        reply.cause_fields().iter().all(|f| f == "metadata.finalizers"),
        "causes: {status}"
    );
    check_eq!(
        status["details"]["causes"][0]["reason"],
        json!("FieldValueForbidden")
    );
    Ok(())
}

fn seconds_from_now(ts: &Value) -> anyhow::Result<i64> {
    let ts: jiff::Timestamp = ts.as_str().unwrap_or_default().parse()?;
    Ok(ts.duration_since(jiff::Timestamp::now()).as_secs())
}

async fn bound_pod_deletion_is_graceful(cx: Ctx) -> anyhow::Result<()> {
    let pod = cx.create_pod("bound", json!({}), Some("n1")).await?;
    let mut watch = cx
        .watch(&format!("{}?resourceVersion={}", cx.core("pods"), rv(&pod)))
        .await?;
    let path = format!("{}/bound", cx.core("pods"));
    let deleting = cx.delete(&path, None).await?.ok()?;
    check_eq!(deleting["kind"], json!("Pod"));
    check_eq!(deleting["metadata"]["deletionGracePeriodSeconds"], json!(30));
    // deletionTimestamp is when the grace period ends: now + 30 s (observed on 1.20.2).
    let ends_in = seconds_from_now(&deleting["metadata"]["deletionTimestamp"])?;
    anyhow::ensure!(
        (20..=31).contains(&ends_in),
        "deletionTimestamp is {ends_in}s from now"
    );
    let ev = watch.expect_event(secs(10)).await?;
    check_eq!(summary(&ev), format!("MODIFIED bound@{}", rv(&deleting)));
    let still = cx.get(&path).await?.ok()?;
    check_eq!(still["metadata"]["deletionGracePeriodSeconds"], json!(30));
    watch.expect_quiet(secs(1)).await
}

async fn unbound_pod_is_deleted_at_once(cx: Ctx) -> anyhow::Result<()> {
    let pod = cx.create_pod("loose", json!({}), None).await?;
    let mut watch = cx
        .watch(&format!("{}?resourceVersion={}", cx.core("pods"), rv(&pod)))
        .await?;
    let path = format!("{}/loose", cx.core("pods"));
    let gone = cx.delete(&path, None).await?.ok()?;
    // Observed on 1.20.2: the reply is the Pod with a zero grace period, not a Status.
    check_eq!(gone["kind"], json!("Pod"));
    check_eq!(gone["metadata"]["deletionGracePeriodSeconds"], json!(0));
    check_eq!(cx.get(&path).await?.code, 404u16);
    expect_zero_grace_deletion(&mut watch, "loose", &gone).await
}

/// Observed on 1.20.2: a pod deleted with a zero grace period is first updated (MODIFIED, with
/// deletionTimestamp and deletionGracePeriodSeconds=0, at the RV the DELETE answered), then DELETED.
async fn expect_zero_grace_deletion(
    watch: &mut WatchStream,
    name: &str,
    reply: &Value,
) -> anyhow::Result<()> {
    let ev = watch.expect_event(secs(10)).await?;
    check_eq!(summary(&ev), format!("MODIFIED {name}@{}", rv(reply)));
    check_eq!(ev["object"]["metadata"]["deletionGracePeriodSeconds"], json!(0));
    anyhow::ensure!(
        ev["object"]["metadata"]["deletionTimestamp"].is_string(),
        "no deletionTimestamp: {ev}"
    );
    let ev = watch.expect_event(secs(10)).await?;
    check_eq!(
        (ev["type"].clone(), crate::support::name(&ev["object"])),
        (json!("DELETED"), name.to_string())
    );
    anyhow::ensure!(
        rv_num(&ev["object"])? > rv_num(reply)?,
        "DELETED must carry a later RV: {}",
        summary(&ev)
    );
    Ok(())
}

async fn grace_period_zero_removes_terminating_pod(cx: Ctx) -> anyhow::Result<()> {
    cx.create_pod("bound", json!({}), Some("n1")).await?;
    let path = format!("{}/bound", cx.core("pods"));
    let custom = cx
        .delete(&path, Some(json!({"gracePeriodSeconds": 5})))
        .await?
        .ok()?;
    check_eq!(custom["metadata"]["deletionGracePeriodSeconds"], json!(5));
    check_eq!(
        cx.get(&path).await?.ok()?["metadata"]["deletionGracePeriodSeconds"],
        json!(5)
    );
    let mut watch = cx
        .watch(&format!("{}?resourceVersion={}", cx.core("pods"), rv(&custom)))
        .await?;
    let gone = cx
        .delete(&path, Some(json!({"gracePeriodSeconds": 0})))
        .await?
        .ok()?;
    check_eq!(cx.get(&path).await?.code, 404u16);
    expect_zero_grace_deletion(&mut watch, "bound", &gone).await
}
