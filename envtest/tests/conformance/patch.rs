//! F. Patches: JSON merge, JSON patch, strategic merge on built-in types, and server-side apply.

use serde_json::{Value, json};

use crate::support::{APPLY, Case, Ctx, JSON_PATCH, MERGE, STRATEGIC, cases, check_eq};

pub fn cases() -> Vec<Case> {
    cases![
        merge_patch_null_deletes_and_lists_replace,
        json_patch_operations,
        strategic_merge_pod_conditions_by_type,
        strategic_merge_service_ports_by_port,
        strategic_merge_delete_directive,
        patch_missing_object_is_404,
        apply_requires_field_manager,
        apply_creates_if_absent,
        apply_conflict_between_managers,
        apply_on_lease,
    ]
}

fn service(name: &str, ports: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": {"selector": {"app": "a"}, "ports": ports}})
}

fn ports_of(svc: &Value) -> Vec<(i64, Value)> {
    let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    ports
        .iter()
        .map(|p| (p["port"].as_i64().unwrap_or(-1), p["targetPort"].clone()))
        .collect()
}

async fn merge_patch_null_deletes_and_lists_replace(cx: Ctx) -> anyhow::Result<()> {
    cx.create_configmap(
        "m",
        json!({"keep": "1", "drop": "2"}),
        json!({"a": "1", "b": "2"}),
    )
    .await?;
    let path = format!("{}/m", cx.core("configmaps"));
    let patch = json!({"metadata": {"labels": {"drop": null}}, "data": {"b": null, "c": "3"}});
    let cm = cx.patch(&path, MERGE, patch).await?.ok()?;
    check_eq!(cm["data"], json!({"a": "1", "c": "3"}));
    check_eq!(cm["metadata"]["labels"], json!({"keep": "1"}));
    cx.post(
        &cx.core("services"),
        service("s", json!([{"name": "a", "port": 80}, {"name": "b", "port": 81}])),
    )
    .await?
    .ok()?;
    let svc_path = format!("{}/s", cx.core("services"));
    let svc = cx
        .patch(
            &svc_path,
            MERGE,
            json!({"spec": {"ports": [{"name": "c", "port": 82}]}}),
        )
        .await?
        .ok()?;
    check_eq!(
        ports_of(&svc),
        vec![(82, json!(82))],
        "a merge patch replaces lists"
    );
    Ok(())
}

async fn json_patch_operations(cx: Ctx) -> anyhow::Result<()> {
    cx.create_configmap("j", json!({"app": "x"}), json!({"a": "1", "b": "2"}))
        .await?;
    let path = format!("{}/j", cx.core("configmaps"));
    let ops = json!([
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "add", "path": "/data/c", "value": "3"},
        {"op": "replace", "path": "/data/a", "value": "one"},
        {"op": "remove", "path": "/data/b"},
        {"op": "copy", "from": "/data/c", "path": "/data/d"},
        {"op": "move", "from": "/metadata/labels/app", "path": "/metadata/labels/moved"}
    ]);
    let cm = cx.patch(&path, JSON_PATCH, ops).await?.ok()?;
    check_eq!(cm["data"], json!({"a": "one", "c": "3", "d": "3"}));
    check_eq!(cm["metadata"]["labels"], json!({"moved": "x"}));
    let missing = json!([{"op": "remove", "path": "/data/nope"}]);
    // Observed on 1.20.2: 422 Invalid, "the server rejected our request due to an error in our request".
    cx.patch(&path, JSON_PATCH, missing)
        .await?
        .failure(422, Some("Invalid"))?;
    Ok(())
}

async fn strategic_merge_pod_conditions_by_type(cx: Ctx) -> anyhow::Result<()> {
    cx.create_pod("p", json!({}), None).await?;
    let status = format!("{}/p/status", cx.core("pods"));
    let two = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
    cx.patch(&status, STRATEGIC, two).await?.ok()?;
    let one = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let pod = cx.patch(&status, STRATEGIC, one.clone()).await?.ok()?;
    check_eq!(
        conditions(&pod),
        vec![("Ready", "True"), ("PodScheduled", "True")],
        "merged by type"
    );
    let pod = cx.patch(&status, MERGE, one).await?.ok()?;
    check_eq!(
        conditions(&pod),
        vec![("Ready", "True")],
        "a merge patch replaces the list"
    );
    Ok(())
}

fn conditions(pod: &Value) -> Vec<(&str, &str)> {
    let conds = pod["status"]["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    conds
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
            )
        })
        .collect()
}

async fn strategic_merge_service_ports_by_port(cx: Ctx) -> anyhow::Result<()> {
    let ports = json!([{"name": "a", "port": 8080}, {"name": "b", "port": 9090}]);
    cx.post(&cx.core("services"), service("s", ports)).await?.ok()?;
    let path = format!("{}/s", cx.core("services"));
    let patch = json!({"spec": {"ports": [{"port": 9090, "targetPort": 9999}]}});
    let svc = cx.patch(&path, STRATEGIC, patch).await?.ok()?;
    check_eq!(ports_of(&svc), vec![(8080, json!(8080)), (9090, json!(9999))]);
    check_eq!(
        svc["spec"]["ports"][1]["name"],
        json!("b"),
        "merged ports keep their other fields"
    );
    Ok(())
}

async fn strategic_merge_delete_directive(cx: Ctx) -> anyhow::Result<()> {
    let ports = json!([{"name": "a", "port": 8080}, {"name": "b", "port": 9090}]);
    cx.post(&cx.core("services"), service("s", ports)).await?.ok()?;
    let path = format!("{}/s", cx.core("services"));
    let patch = json!({"spec": {"ports": [{"port": 8080, "$patch": "delete"}]}});
    let svc = cx.patch(&path, STRATEGIC, patch).await?.ok()?;
    check_eq!(ports_of(&svc), vec![(9090, json!(9090))]);
    // `$patch: replace` on a map replaces it whole.
    cx.patch(
        &path,
        MERGE,
        json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
    )
    .await?
    .ok()?;
    let replace = json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}});
    let svc = cx.patch(&path, STRATEGIC, replace).await?.ok()?;
    check_eq!(svc["metadata"]["labels"], json!({"c": "3"}));
    Ok(())
}

async fn patch_missing_object_is_404(cx: Ctx) -> anyhow::Result<()> {
    let path = format!("{}/nothere", cx.core("configmaps"));
    for (content_type, body) in [
        (MERGE, json!({"data": {"k": "v"}})),
        (STRATEGIC, json!({"data": {"k": "v"}})),
        (JSON_PATCH, json!([])),
    ] {
        let reply = cx.patch(&path, content_type, body).await?;
        let status = reply.failure(404, Some("NotFound"))?;
        check_eq!(
            status["message"],
            json!(r#"configmaps "nothere" not found"#),
            "{content_type}"
        );
    }
    Ok(())
}

fn applied_configmap(name: &str, value: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": value}})
        .to_string()
}

async fn apply(cx: &Ctx, path: &str, query: &str, body: String) -> anyhow::Result<crate::support::Reply> {
    cx.request(
        http::Method::PATCH,
        &format!("{path}{query}"),
        Some((APPLY, body)),
    )
    .await
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    let fields = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<(String, String)> = fields
        .iter()
        .map(|f| {
            (
                f["manager"].as_str().unwrap_or("").into(),
                f["operation"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn apply_requires_field_manager(cx: Ctx) -> anyhow::Result<()> {
    let path = format!("{}/ssa", cx.core("configmaps"));
    let reply = apply(&cx, &path, "", applied_configmap("ssa", "1")).await?;
    let status = reply.failure(422, Some("Invalid"))?;
    check_eq!(reply.cause_fields(), vec!["fieldManager".to_string()]);
    check_eq!(
        status["details"]["causes"][0]["reason"],
        json!("FieldValueRequired")
    );
    check_eq!(cx.get(&path).await?.code, 404u16, "nothing created");
    Ok(())
}

async fn apply_creates_if_absent(cx: Ctx) -> anyhow::Result<()> {
    let path = format!("{}/ssa", cx.core("configmaps"));
    let created = apply(&cx, &path, "?fieldManager=writer", applied_configmap("ssa", "1")).await?;
    check_eq!(created.code, 201u16, "apply of a new object creates it");
    check_eq!(created.body["data"], json!({"k": "1"}));
    check_eq!(
        managers(&created.body),
        vec![("writer".to_string(), "Apply".to_string())]
    );
    let again = apply(&cx, &path, "?fieldManager=writer", applied_configmap("ssa", "2")).await?;
    check_eq!(again.code, 200u16);
    check_eq!(again.body["data"], json!({"k": "2"}));
    Ok(())
}

async fn apply_conflict_between_managers(cx: Ctx) -> anyhow::Result<()> {
    let path = format!("{}/ssa", cx.core("configmaps"));
    apply(&cx, &path, "?fieldManager=writer", applied_configmap("ssa", "1"))
        .await?
        .ok()?;
    let reply = apply(&cx, &path, "?fieldManager=other", applied_configmap("ssa", "2")).await?;
    let status = reply.failure(409, Some("Conflict"))?;
    anyhow::ensure!(
        reply.message().contains(r#"conflict with "writer""#),
        "message: {}",
        reply.message()
    );
    check_eq!(
        status["details"]["causes"][0]["reason"],
        json!("FieldManagerConflict")
    );
    check_eq!(reply.cause_fields(), vec![".data.k".to_string()]);
    // The same value is no conflict: both managers then own the field.
    apply(&cx, &path, "?fieldManager=other", applied_configmap("ssa", "1"))
        .await?
        .ok()?;
    apply(&cx, &path, "?fieldManager=third", applied_configmap("ssa", "3"))
        .await?
        .failure(409, Some("Conflict"))?;
    let forced = apply(
        &cx,
        &path,
        "?fieldManager=third&force=true",
        applied_configmap("ssa", "3"),
    )
    .await?
    .ok()?;
    check_eq!(forced["data"]["k"], json!("3"));
    check_eq!(
        managers(&forced),
        vec![("third".to_string(), "Apply".to_string())],
        "force takes the field over"
    );
    Ok(())
}

async fn apply_on_lease(cx: Ctx) -> anyhow::Result<()> {
    let path = format!("{}/leader", cx.group("coordination.k8s.io/v1", "leases"));
    let lease = |holder: &str| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": "2024-01-02T03:04:05.123456Z"}
        })
        .to_string()
    };
    let created = apply(&cx, &path, "?fieldManager=roster-a", lease("a")).await?;
    check_eq!(created.code, 201u16);
    check_eq!(created.body["spec"]["holderIdentity"], json!("a"));
    check_eq!(
        created.body["spec"]["renewTime"],
        json!("2024-01-02T03:04:05.123456Z"),
        "MicroTime keeps 6 digits"
    );
    apply(&cx, &path, "?fieldManager=roster-b", lease("b"))
        .await?
        .failure(409, Some("Conflict"))?;
    let taken = apply(&cx, &path, "?fieldManager=roster-b&force=true", lease("b"))
        .await?
        .ok()?;
    check_eq!(taken["spec"]["holderIdentity"], json!("b"));
    check_eq!(taken["spec"]["leaseDurationSeconds"], json!(15));
    Ok(())
}
