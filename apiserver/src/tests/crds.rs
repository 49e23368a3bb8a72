//! CRDs and server-side apply.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

use super::{api_error, from, start};

fn backend_crd() -> CustomResourceDefinition {
    from(json!({
        "metadata": {"name": "backends.roster.dev"},
        "spec": {"group": "roster.dev", "scope": "Namespaced",
            "names": {"plural": "backends", "singular": "backend", "kind": "Backend", "shortNames": ["be"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["host"], "properties": {
                        "host": {"type": "string"},
                        "replicas": {"type": "integer", "default": 1, "minimum": 0}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}}]}
    }))
}

#[tokio::test]
async fn custom_resources_follow_their_schema() {
    let (_server, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &backend_crd()).await.unwrap();
    let established = await_condition(
        crds.clone(),
        "backends.roster.dev",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(5), established)
        .await
        .unwrap()
        .unwrap();
    let gvk = GroupVersionKind::gvk("roster.dev", "v1", "Backend");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "backends");
    let backends: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let obj: DynamicObject = from(
        json!({"apiVersion": "roster.dev/v1", "kind": "Backend", "metadata": {"name": "b"},
        "spec": {"host": "h", "junk": true}, "status": {"ready": true}, "extra": 1}),
    );
    let made = backends.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(
        made.data["spec"],
        json!({"host": "h", "replicas": 1}),
        "pruned and defaulted"
    );
    assert!(made.data.get("status").is_none() && made.data.get("extra").is_none());
    assert_eq!(made.metadata.generation, Some(1));
    let status = json!({"status": {"ready": true}});
    let after = backends
        .patch_status("b", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(
        (after.data["status"]["ready"].clone(), after.metadata.generation),
        (json!(true), Some(1))
    );
    let spec = json!({"spec": {"replicas": 3}});
    assert_eq!(
        backends
            .patch("b", &PatchParams::default(), &Patch::Merge(spec))
            .await
            .unwrap()
            .metadata
            .generation,
        Some(2)
    );
    let bad = json!({"spec": {"replicas": -1}});
    assert_eq!(
        api_error(
            backends
                .patch("b", &PatchParams::default(), &Patch::Merge(bad))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    let smp = json!({"spec": {"replicas": 4}});
    assert_eq!(
        api_error(
            backends
                .patch("b", &PatchParams::default(), &Patch::Strategic(smp))
                .await
                .unwrap_err()
        )
        .code,
        415
    );
    crds.delete("backends.roster.dev", &Default::default())
        .await
        .unwrap();
    assert_eq!(api_error(backends.get("b").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn server_side_apply_subset() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1", "j": "1"}});
    let made = cms
        .patch("c", &PatchParams::apply("writer"), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(
        made.metadata.managed_fields.as_ref().unwrap()[0]
            .manager
            .as_deref(),
        Some("writer")
    );
    let again = cms
        .patch("c", &PatchParams::apply("writer"), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version, made.metadata.resource_version,
        "re-applying is a no-op"
    );
    let other =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "2"}});
    let e = api_error(
        cms.patch("c", &PatchParams::apply("probe"), &Patch::Apply(&other))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            409,
            "Apply failed with 1 conflict: conflict with \"writer\" using v1: .data.k"
        )
    );
    let forced = cms
        .patch("c", &PatchParams::apply("probe").force(), &Patch::Apply(&other))
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["k"], "2");
    let shrink = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
    let after = cms
        .patch("c", &PatchParams::apply("writer"), &Patch::Apply(&shrink))
        .await
        .unwrap();
    let data = after.data.unwrap_or_default();
    assert!(
        !data.contains_key("j") && data["k"] == "2",
        "writer's j released, probe's k kept: {data:?}"
    );
    let req = http::Request::patch("/api/v1/namespaces/default/configmaps/c")
        .header("Content-Type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&other).unwrap())
        .unwrap();
    let e = api_error(client.request::<ConfigMap>(req).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
}

/// The protocol of kube-lease-manager: apply to take a free lease, strategic patches to renew and to
/// release; a second contender's apply conflicts until the fields are released.
#[tokio::test]
async fn lease_handover_through_apply_and_release() {
    use k8s_openapi::api::coordination::v1::Lease;
    let (_server, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client, "default");
    leases
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "leader"}, "spec": {}})),
        )
        .await
        .unwrap();
    let take = |who: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "spec": {"holderIdentity": who, "acquireTime": "2024-05-01T10:00:00.000000Z", "renewTime": "2024-05-01T10:00:00.000000Z", "leaseDurationSeconds": 15}})
    };
    let params = |who: &str| PatchParams {
        field_manager: Some(format!("lease-{who}")),
        ..PatchParams::default()
    };
    leases
        .patch("leader", &params("a"), &Patch::Apply(take("a")))
        .await
        .unwrap();
    let renew = json!({"spec": {"renewTime": "2024-05-01T10:00:05.000000Z"}});
    leases
        .patch("leader", &params("a"), &Patch::Strategic(renew))
        .await
        .unwrap();
    let e = api_error(
        leases
            .patch("leader", &params("b"), &Patch::Apply(take("b")))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    let release = json!({"spec": {"acquireTime": null, "renewTime": null, "holderIdentity": null, "leaseDurationSeconds": null}});
    leases
        .patch("leader", &params("b"), &Patch::Strategic(release))
        .await
        .unwrap();
    let taken = leases
        .patch("leader", &params("b"), &Patch::Apply(take("b")))
        .await
        .unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("b"));
}
