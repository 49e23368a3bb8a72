//! CustomResourceDefinitions: shape validation, serving their versions, the Established condition, and
//! the structural schema's pruning, defaulting and validation of custom resources.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::error::Cause;
use super::registry::{Behaviour, CustomSchema, PrinterColumn, ResourceType};
use super::schema;
use super::state::{State, now_rfc3339};
use super::store::ObjRef;

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, p| v.get(*p))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Field errors of a CRD's shape.
pub(crate) fn validate_crd(v: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let group = text(v, &["spec", "group"]);
    let plural = text(v, &["spec", "names", "plural"]);
    if group.is_empty() || !group.contains('.') {
        causes.push(Cause::invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural", ""));
    }
    if text(v, &["spec", "names", "kind"]).is_empty() {
        causes.push(Cause::required("spec.names.kind", ""));
    }
    let scope = text(v, &["spec", "scope"]);
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(
            Cause::invalid("spec.scope", scope, "must be either Namespaced or Cluster").with_value(scope),
        );
    }
    let name = text(v, &["metadata", "name"]);
    if name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    validate_versions(v, &mut causes);
    if let Some(old) = old {
        if old["spec"]["group"] != v["spec"]["group"] {
            causes.push(Cause::invalid("spec.group", group, "field is immutable"));
        }
        if old["spec"]["scope"] != v["spec"]["scope"] {
            causes.push(Cause::invalid("spec.scope", scope, "field is immutable"));
        }
    }
    causes
}

fn validate_versions(v: &Value, causes: &mut Vec<Cause>) {
    let versions = v["spec"]["versions"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if versions.is_empty() {
        causes.push(Cause::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
        return;
    }
    let storage = versions.iter().filter(|ver| ver["storage"] == true).count();
    if storage != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            json!(null),
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, ver) in versions.iter().enumerate() {
        if text(ver, &["name"]).is_empty() {
            causes.push(Cause::required(format!("spec.versions[{i}].name"), ""));
        }
        if !ver["schema"]["openAPIV3Schema"].is_object() {
            causes.push(Cause::required(
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "schemas are required",
            ));
        }
    }
}

/// The resource types a CRD serves: one per served version.
fn types_of(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let group = text(spec, &["group"]).to_string();
    let plural = text(spec, &["names", "plural"]).to_string();
    let kind = text(spec, &["names", "kind"]).to_string();
    let singular = match text(spec, &["names", "singular"]) {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let short_names: Vec<String> = spec["names"]["shortNames"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let served: Vec<&Value> = versions.iter().filter(|v| v["served"] != false).collect();
    let multi_version = served.len() > 1;
    served
        .into_iter()
        .map(|ver| ResourceType {
            group: group.clone(),
            version: text(ver, &["name"]).to_string(),
            plural: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            namespaced: spec["scope"] != "Cluster",
            short_names: short_names.clone(),
            status: ver["subresources"]["status"].is_object(),
            behaviour: Behaviour::Custom,
            generation: true,
            storage: format!("/{group}/{plural}/"),
            fields: &[],
            custom: Some(CustomSchema {
                schema: ver["schema"]["openAPIV3Schema"]
                    .as_object()
                    .map(|m| Value::Object(m.clone())),
                multi_version,
                columns: printer_columns(ver),
            }),
        })
        .collect()
}

fn printer_columns(version: &Value) -> Vec<PrinterColumn> {
    let columns = version["additionalPrinterColumns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    columns
        .iter()
        .map(|c| PrinterColumn {
            name: text(c, &["name"]).to_string(),
            kind: text(c, &["type"]).to_string(),
            json_path: text(c, &["jsonPath"]).to_string(),
            priority: c["priority"].as_u64().unwrap_or(0).min(255) as u8,
        })
        .collect()
}

/// Serves (again) the versions of `crd`.
pub(crate) fn register(state: &mut State, crd: &Value) {
    let name = text(crd, &["metadata", "name"]);
    if !crd["metadata"]["deletionTimestamp"].is_null() {
        return;
    }
    state.registry.set_crd(name, types_of(crd));
}

/// Stops serving `crd` and removes its objects.
pub(crate) fn unregister(state: &mut State, crd: &Value) {
    let types = state.registry.remove_crd(text(crd, &["metadata", "name"]));
    let Some(rt) = types.first() else { return };
    let keys: Vec<Box<str>> = state.store.range(&rt.storage).map(|(k, _)| k.clone()).collect();
    for key in keys {
        if let Some(obj) = state.store.get(&key).cloned() {
            state.commit_delete(rt, &key, obj.value());
        }
    }
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": "True", "lastTransitionTime": now_rfc3339(), "reason": reason, "message": message})
}

/// What the apiextensions controllers do at once: accept the names, mark the CRD Established (a status
/// write watchers see), and start serving it.
pub(crate) fn establish(state: &mut State, rt: &Arc<ResourceType>, key: &str, mut crd: Value) -> ObjRef {
    let storage_version = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        .map(|v| v["name"].clone())
        .unwrap_or(Value::Null);
    let mut accepted = crd["spec"]["names"].clone();
    if let Some(names) = accepted.as_object_mut() {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        names
            .entry("singular")
            .or_insert_with(|| json!(kind.to_lowercase()));
        names
            .entry("listKind")
            .or_insert_with(|| json!(format!("{kind}List")));
    }
    crd["status"] = json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": accepted,
        "storedVersions": [storage_version],
    });
    let obj = state.commit(rt, key, &mut crd);
    register(state, &crd);
    obj
}

/// Prunes, defaults and validates a custom resource against its version's schema.
pub(crate) fn prepare_custom(rt: &ResourceType, v: &mut Value) -> Vec<Cause> {
    let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) else {
        return Vec::new();
    };
    let Some(obj) = v.as_object_mut() else {
        return Vec::new();
    };
    let kept: Map<String, Value> = ["apiVersion", "kind", "metadata"]
        .iter()
        .filter_map(|k| obj.remove(*k).map(|v| (k.to_string(), v)))
        .collect();
    let mut body = Value::Object(std::mem::take(obj));
    schema::prune(&mut body, schema);
    schema::apply_defaults(&mut body, schema);
    let mut causes = Vec::new();
    schema::validate(&body, schema, "", &mut causes);
    let Value::Object(mut body) = body else {
        unreachable!("objects stay objects")
    };
    body.extend(kept);
    *obj = body;
    causes
}
