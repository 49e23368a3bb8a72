//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>` and `/apis/<g>/<v>`.

use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::registry::{Registry, ResourceType};

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-roster", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_resource(rt: &ResourceType) -> Value {
    let mut r = json!({
        "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind, "verbs": VERBS,
    });
    if !rt.short_names.is_empty() {
        r["shortNames"] = json!(rt.short_names);
    }
    if rt.plural == "pods" || rt.plural == "services" {
        r["categories"] = json!(["all"]);
    }
    r
}

fn status_resource(rt: &ResourceType) -> Value {
    json!({"name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]})
}

fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<_> = registry
        .all()
        .filter(|rt| rt.group == group && rt.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for rt in types {
        resources.push(api_resource(rt));
        if rt.status {
            resources.push(status_resource(rt));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

fn api_group(name: &str, versions: &[String]) -> Value {
    let list: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = list.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": list, "preferredVersion": preferred})
}

fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .group_versions()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| api_group(g, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The discovery document at `segments`, if there is one.
pub(crate) fn serve(registry: &Registry, segments: &[&str]) -> Option<Value> {
    match segments {
        ["version"] => Some(version()),
        ["api"] => Some(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
        ),
        ["api", "v1"] => resource_list(registry, "", "v1"),
        ["apis"] => Some(group_list(registry)),
        ["apis", group] => {
            let versions = registry.group_versions().remove(*group)?;
            let mut g = api_group(group, &versions);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            Some(g)
        }
        ["apis", group, version] => resource_list(registry, group, version),
        _ => None,
    }
}

/// An empty OpenAPI v2 document, `{swagger: "2.0", info: {title, version}}`, in the protobuf form
/// kubectl asks for first (gnostic `openapi_v2.Document`: fields 1 and 2, `Info` fields 1 and 2).
const OPENAPI_V2_PROTOBUF: &[u8] = b"\x0a\x032.0\x12\x11\x0a\x06roster\x12\x07v1.33.0";
const OPENAPI_V2_PROTOBUF_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2` is an empty document, so kubectl's client-side validation finds no schema and skips
/// itself; `/openapi/v3` is 404, so kubectl falls back to v2.
pub(crate) fn openapi(path: &str, headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (code, content_type, body): (u16, &str, Vec<u8>) = match path {
        "/openapi/v2" if accept.contains("protobuf") => {
            (200, OPENAPI_V2_PROTOBUF_TYPE, OPENAPI_V2_PROTOBUF.to_vec())
        }
        "/openapi/v2" => {
            let doc = json!({"swagger": "2.0", "info": {"title": "roster", "version": "v1.33.0"}, "paths": {}, "definitions": {}});
            (200, "application/json", serde_json::to_vec(&doc).expect("JSON"))
        }
        _ => (
            404,
            "application/json",
            serde_json::to_vec(&super::error::StatusError::no_route().to_json()).expect("JSON"),
        ),
    };
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("valid response")
}
