//! G. CustomResourceDefinitions: the shared `widgets.conf.roster.dev` CRD (structural schema, a default,
//! the status subresource) and what a custom resource sees: pruning, defaulting, generation, the status split.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};

use crate::support::{Case, Ctx, MERGE, cases, check_eq, eventually, secs};

pub const CRD_NAME: &str = "widgets.conf.roster.dev";
pub const WIDGETS_GV: &str = "conf.roster.dev/v1";

pub fn cases() -> Vec<Case> {
    cases![
        crd_becomes_established,
        crd_discovery_lists_status_subresource,
        cr_prunes_unknown_fields_and_defaults,
        cr_generation_bumps_on_spec_changes_only,
        cr_status_subresource_split,
        cr_field_selectors_only_metadata,
        cr_put_requires_resource_version_422,
    ]
}

fn widget_crd() -> Value {
    let spec_schema = json!({"type": "object", "properties": {
        "replicas": {"type": "integer", "default": 1},
        "color": {"type": "string"}
    }});
    let status_schema = json!({"type": "object", "properties": {"ready": {"type": "boolean"}}});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": "conf.roster.dev", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": spec_schema, "status": status_schema
                }}}
            }]
        }
    })
}

/// Creates the widget CRD unless it exists (the real tier's server is shared), waits for Established and for
/// the namespaced collection to be served.
pub async fn ensure_widget_crd(cx: &Ctx) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(cx.client());
    let crd: CustomResourceDefinition = serde_json::from_value(widget_crd())?;
    match api.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let established = await_condition(api, CRD_NAME, conditions::is_crd_established());
    tokio::time::timeout(secs(10), established)
        .await
        .map_err(|_| anyhow::anyhow!("CRD not Established in 10 s"))??;
    let collection = cx.group(WIDGETS_GV, "widgets");
    eventually(secs(10), "the widgets collection to be served", || async {
        Ok((cx.get(&collection).await?.code == 200).then_some(()))
    })
    .await
}

/// Creates a Widget with `spec` in the case's namespace; returns its path.
pub async fn create_widget(cx: &Ctx, name: &str, spec: Value) -> anyhow::Result<String> {
    let body = json!({"apiVersion": WIDGETS_GV, "kind": "Widget", "metadata": {"name": name}, "spec": spec});
    cx.post(&cx.group(WIDGETS_GV, "widgets"), body).await?.ok()?;
    Ok(format!("{}/{name}", cx.group(WIDGETS_GV, "widgets")))
}

async fn crd_becomes_established(cx: Ctx) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    ensure_widget_crd(&cx).await?;
    anyhow::ensure!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let crd = cx
        .get(&format!(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
        ))
        .await?
        .ok()?;
    for kind in ["NamesAccepted", "Established"] {
        let cond = crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind);
        check_eq!(
            cond.map(|c| c["status"].clone()),
            Some(json!("True")),
            "condition {kind}"
        );
    }
    check_eq!(crd["status"]["acceptedNames"]["kind"], json!("Widget"));
    check_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    Ok(())
}

async fn crd_discovery_lists_status_subresource(cx: Ctx) -> anyhow::Result<()> {
    ensure_widget_crd(&cx).await?;
    let list = eventually(secs(10), "conf.roster.dev/v1 discovery", || async {
        let reply = cx.get(&format!("/apis/{WIDGETS_GV}")).await?;
        Ok((reply.code == 200).then_some(reply.body))
    })
    .await?;
    let find = |name: &str| {
        list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name)
            .cloned()
    };
    let widgets = find("widgets").ok_or_else(|| anyhow::anyhow!("no widgets in {list}"))?;
    check_eq!(widgets["kind"], json!("Widget"));
    check_eq!(widgets["namespaced"], json!(true));
    check_eq!(widgets["singularName"], json!("widget"));
    let status = find("widgets/status").ok_or_else(|| anyhow::anyhow!("no widgets/status in {list}"))?;
    check_eq!(status["kind"], json!("Widget"));
    Ok(())
}

async fn cr_prunes_unknown_fields_and_defaults(cx: Ctx) -> anyhow::Result<()> {
    ensure_widget_crd(&cx).await?;
    let body = json!({
        "apiVersion": WIDGETS_GV, "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"color": "red", "junk": 1},
        "status": {"ready": true},
        "topLevelJunk": "x"
    });
    let w = cx.post(&cx.group(WIDGETS_GV, "widgets"), body).await?.ok()?;
    check_eq!(w["spec"], json!({"color": "red", "replicas": 1}));
    check_eq!(w.get("topLevelJunk"), None);
    // With the status subresource, a create ignores status (observed on 1.20.2).
    check_eq!(w.get("status"), None);
    check_eq!(w["metadata"]["generation"], json!(1));
    check_eq!(w["kind"], json!("Widget"));
    check_eq!(w["apiVersion"], json!(WIDGETS_GV));
    Ok(())
}

async fn cr_generation_bumps_on_spec_changes_only(cx: Ctx) -> anyhow::Result<()> {
    ensure_widget_crd(&cx).await?;
    let path = create_widget(&cx, "w1", json!({"color": "red"})).await?;
    let w = cx
        .patch(&path, MERGE, json!({"spec": {"color": "blue"}}))
        .await?
        .ok()?;
    check_eq!(w["metadata"]["generation"], json!(2), "after a spec patch");
    let w = cx
        .patch(&path, MERGE, json!({"metadata": {"labels": {"a": "b"}}}))
        .await?
        .ok()?;
    check_eq!(w["metadata"]["generation"], json!(2), "after a metadata patch");
    let w = cx
        .patch(
            &format!("{path}/status"),
            MERGE,
            json!({"status": {"ready": true}}),
        )
        .await?
        .ok()?;
    check_eq!(w["metadata"]["generation"], json!(2), "after a status patch");
    check_eq!(w["status"], json!({"ready": true}));
    Ok(())
}

async fn cr_status_subresource_split(cx: Ctx) -> anyhow::Result<()> {
    ensure_widget_crd(&cx).await?;
    let path = create_widget(&cx, "w1", json!({"color": "red"})).await?;
    let patch = json!({"spec": {"color": "green"}, "status": {"ready": true}});
    let w = cx
        .patch(&format!("{path}/status"), MERGE, patch.clone())
        .await?
        .ok()?;
    check_eq!(w["spec"]["color"], json!("red"), "/status must ignore spec");
    check_eq!(w["status"]["ready"], json!(true));
    let patch = json!({"spec": {"color": "blue"}, "status": {"ready": false}});
    let w = cx.patch(&path, MERGE, patch).await?.ok()?;
    check_eq!(w["spec"]["color"], json!("blue"));
    check_eq!(
        w["status"]["ready"],
        json!(true),
        "the main resource must ignore status"
    );
    Ok(())
}

async fn cr_field_selectors_only_metadata(cx: Ctx) -> anyhow::Result<()> {
    ensure_widget_crd(&cx).await?;
    create_widget(&cx, "w1", json!({"color": "red"})).await?;
    create_widget(&cx, "w2", json!({"color": "blue"})).await?;
    let widgets = cx.group(WIDGETS_GV, "widgets");
    let list = cx
        .get(&format!("{widgets}?fieldSelector=metadata.name%3Dw2"))
        .await?
        .ok()?;
    check_eq!(crate::support::item_names(&list), vec!["w2".to_string()]);
    let reply = cx
        .get(&format!("{widgets}?fieldSelector=spec.color%3Dred"))
        .await?;
    reply.failure(400, Some("BadRequest"))?;
    check_eq!(reply.message(), "field label not supported: spec.color");
    Ok(())
}

async fn cr_put_requires_resource_version_422(cx: Ctx) -> anyhow::Result<()> {
    ensure_widget_crd(&cx).await?;
    let path = create_widget(&cx, "w1", json!({"color": "red"})).await?;
    let body = json!({"apiVersion": WIDGETS_GV, "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"color": "x"}});
    let reply = cx.put(&path, body).await?;
    // Custom resources do not allow unconditional updates (observed on 1.20.2).
    reply.failure(422, Some("Invalid"))?;
    check_eq!(reply.cause_fields(), vec!["metadata.resourceVersion".to_string()]);
    Ok(())
}
