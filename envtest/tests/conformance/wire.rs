//! A. Wire format and errors: the `Status` body of each error reason, and discovery.

use serde_json::{Value, json};

use crate::crd;
use crate::support::{Case, Ctx, STRATEGIC, cases, check_eq};

pub fn cases() -> Vec<Case> {
    cases![
        error_not_found,
        error_already_exists,
        error_conflict,
        error_invalid_has_causes,
        error_bad_request_label_selector,
        error_method_not_allowed,
        error_strategic_patch_on_custom_resource_415,
        discovery_version_and_groups,
        discovery_resource_lists,
    ]
}

async fn error_not_found(cx: Ctx) -> anyhow::Result<()> {
    let reply = cx.get(&format!("{}/nope", cx.core("configmaps"))).await?;
    let status = reply.failure(404, Some("NotFound"))?;
    check_eq!(reply.content_type, "application/json");
    check_eq!(status["message"], json!(r#"configmaps "nope" not found"#));
    // Observed on 1.20.2: details name the resource (plural), not the kind, and no group for core.
    check_eq!(status["details"], json!({"name": "nope", "kind": "configmaps"}));
    Ok(())
}

async fn error_already_exists(cx: Ctx) -> anyhow::Result<()> {
    cx.create_configmap("dup", json!({}), json!({"k": "v"})).await?;
    let reply = cx
        .post(&cx.core("configmaps"), json!({"metadata": {"name": "dup"}}))
        .await?;
    let status = reply.failure(409, Some("AlreadyExists"))?;
    check_eq!(status["message"], json!(r#"configmaps "dup" already exists"#));
    check_eq!(status["details"], json!({"name": "dup", "kind": "configmaps"}));
    Ok(())
}

async fn error_conflict(cx: Ctx) -> anyhow::Result<()> {
    let cm = cx.create_configmap("c5", json!({}), json!({"k": "v"})).await?;
    let path = format!("{}/c5", cx.core("configmaps"));
    let mut update = cm.clone();
    update["data"]["k"] = json!("v2");
    cx.put(&path, update.clone()).await?.ok()?;
    update["data"]["k"] = json!("v3"); // still carries the first resourceVersion
    let reply = cx.put(&path, update).await?;
    let status = reply.failure(409, Some("Conflict"))?;
    let want = "Operation cannot be fulfilled on configmaps \"c5\": the object has been modified; \
                please apply your changes to the latest version and try again";
    check_eq!(status["message"], json!(want));
    check_eq!(status["details"], json!({"name": "c5", "kind": "configmaps"}));
    Ok(())
}

async fn error_invalid_has_causes(cx: Ctx) -> anyhow::Result<()> {
    let reply = cx
        .post(&cx.core("configmaps"), json!({"metadata": {"name": "Bad_Name"}}))
        .await?;
    let status = reply.failure(422, Some("Invalid"))?;
    // Invalid names the Kind (not the resource) in details, unlike NotFound.
    check_eq!(status["details"]["name"], json!("Bad_Name"));
    check_eq!(status["details"]["kind"], json!("ConfigMap"));
    check_eq!(reply.cause_fields(), vec!["metadata.name".to_string()]);
    check_eq!(
        status["details"]["causes"][0]["reason"],
        json!("FieldValueInvalid")
    );
    anyhow::ensure!(
        reply
            .message()
            .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name"),
        "{status}"
    );
    Ok(())
}

async fn error_bad_request_label_selector(cx: Ctx) -> anyhow::Result<()> {
    let reply = cx
        .get(&format!("{}?labelSelector=app%20in%20(", cx.core("pods")))
        .await?;
    reply.failure(400, Some("BadRequest"))?;
    anyhow::ensure!(
        reply.message().contains("unable to parse requirement"),
        "message: {}",
        reply.message()
    );
    Ok(())
}

async fn error_method_not_allowed(cx: Ctx) -> anyhow::Result<()> {
    // PUT on a collection and POST on a single object are not routes of any resource.
    let put = cx.put(&cx.core("configmaps"), json!({})).await?;
    put.failure(405, Some("MethodNotAllowed"))?;
    let post = cx
        .post(&format!("{}/x", cx.core("configmaps")), json!({}))
        .await?;
    let status = post.failure(405, Some("MethodNotAllowed"))?;
    check_eq!(
        status["message"],
        json!("the server does not allow this method on the requested resource")
    );
    Ok(())
}

async fn error_strategic_patch_on_custom_resource_415(cx: Ctx) -> anyhow::Result<()> {
    crd::ensure_widget_crd(&cx).await?;
    let path = crd::create_widget(&cx, "w415", json!({"color": "red"})).await?;
    let reply = cx
        .patch(&path, STRATEGIC, json!({"spec": {"color": "blue"}}))
        .await?;
    reply.failure(415, Some("UnsupportedMediaType"))?;
    anyhow::ensure!(
        reply.message().contains("application/merge-patch+json"),
        "message: {}",
        reply.message()
    );
    Ok(())
}

async fn discovery_version_and_groups(cx: Ctx) -> anyhow::Result<()> {
    let version = cx.client().apiserver_version().await?;
    check_eq!(version.major, "1");
    anyhow::ensure!(!version.git_version.is_empty(), "empty gitVersion");
    let api = cx.get("/api").await?.ok()?;
    check_eq!(api["kind"], json!("APIVersions"));
    check_eq!(api["versions"], json!(["v1"]));
    let groups = cx.get("/apis").await?.ok()?;
    check_eq!(groups["kind"], json!("APIGroupList"));
    for want in [
        "coordination.k8s.io",
        "events.k8s.io",
        "apiextensions.k8s.io",
        "discovery.k8s.io",
    ] {
        let group = groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["name"] == want);
        let group = group.ok_or_else(|| anyhow::anyhow!("/apis lacks {want}"))?;
        anyhow::ensure!(
            group["preferredVersion"]["groupVersion"].is_string(),
            "{want}: {group}"
        );
    }
    Ok(())
}

async fn discovery_resource_lists(cx: Ctx) -> anyhow::Result<()> {
    let core = cx.get("/api/v1").await?.ok()?;
    check_eq!(core["kind"], json!("APIResourceList"));
    check_eq!(core["groupVersion"], json!("v1"));
    let pods = resource(&core, "pods")?;
    check_eq!(pods["namespaced"], json!(true));
    check_eq!(pods["kind"], json!("Pod"));
    for verb in ["create", "delete", "get", "list", "patch", "update", "watch"] {
        anyhow::ensure!(has_verb(pods, verb), "pods lacks verb {verb}: {pods}");
    }
    let status = resource(&core, "pods/status")?;
    check_eq!(status["kind"], json!("Pod"));
    check_eq!(verbs(status), vec!["get", "patch", "update"]);
    check_eq!(
        verbs(resource(&core, "services/status")?),
        vec!["get", "patch", "update"]
    );
    let nodes = resource(&core, "nodes")?;
    check_eq!(nodes["namespaced"], json!(false));

    let leases = cx.get("/apis/coordination.k8s.io/v1").await?.ok()?;
    check_eq!(leases["groupVersion"], json!("coordination.k8s.io/v1"));
    let lease = resource(&leases, "leases")?;
    check_eq!(lease["kind"], json!("Lease"));
    check_eq!(lease["namespaced"], json!(true));
    check_eq!(
        verbs(lease),
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]
    );
    Ok(())
}

fn resource<'a>(list: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    let found = list["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name);
    found.ok_or_else(|| anyhow::anyhow!("{} lacks {name}", list["groupVersion"]))
}

fn verbs(resource: &Value) -> Vec<&str> {
    let mut verbs: Vec<&str> = resource["verbs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    verbs.sort();
    verbs
}

fn has_verb(resource: &Value, verb: &str) -> bool {
    verbs(resource).contains(&verb)
}
