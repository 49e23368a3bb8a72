//! Server-side apply, a pragmatic subset:
//! * `fieldManager` is required (422 otherwise); the object is created when absent;
//! * ownership is tracked per manager in `metadata.managedFields` (operation `Apply`, `FieldsV1`) at the
//!   granularity of leaf fields, where every list is one leaf (no per-item ownership);
//! * a field another manager owns with a different value is a conflict (409 with `FieldManagerConflict`
//!   causes) unless `force=true`, which takes ownership;
//! * fields a manager applied before and omits now are removed unless another manager owns them;
//! * the applied object is merged into the live one like a strategic merge patch (built-in kinds: lists
//!   by merge key) or a merge patch (custom resources).
//!
//! Other writes keep `managedFields` honest: fields they remove lose their owners, and when they name a
//! `fieldManager` on an object that already has managers, that manager (operation `Update`) takes the
//! fields it changed, as upstream's updates silently take ownership.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::convert::to_view;
use super::error::StatusError;
use super::registry::ResourceType;
use super::state::{State, WriteOptions, Written, now_rfc3339};
use super::strategic::strategic_merge;

type FieldPath = Vec<String>;
type FieldSet = BTreeSet<FieldPath>;

const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

fn leaves(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let skip = (path.is_empty() && (k == "apiVersion" || k == "kind"))
                    || (path.len() == 1 && path[0] == "metadata" && SERVER_METADATA.contains(&k.as_str()));
                if !skip {
                    path.push(k.clone());
                    leaves(child, path, out);
                    path.pop();
                }
            }
        }
        _ if !path.is_empty() => {
            out.insert(path.clone());
        }
        _ => {}
    }
}

fn field_set(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    leaves(v, &mut Vec::new(), &mut out);
    out
}

/// `{"f:a":{"f:b":{}}}` for the paths `a.b`.
fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for part in path {
            node = node
                .entry(format!("f:{part}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let children: Vec<(&String, &Value)> = v
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    }
    for (k, child) in children {
        path.push(k[2..].to_string());
        from_fields_v1(child, path, out);
        path.pop();
    }
}

struct Manager {
    entry: Value,
    fields: FieldSet,
}

fn managers(current: &Value) -> Vec<Manager> {
    let entries = current["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries
        .into_iter()
        .map(|entry| {
            let mut fields = FieldSet::new();
            from_fields_v1(&entry["fieldsV1"], &mut Vec::new(), &mut fields);
            Manager { entry, fields }
        })
        .collect()
}

fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, p| v.get(p))
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Whether applying `p` touches `owned`: the same field, a field inside an owned atomic value, or a
/// scalar or list where the owner has fields below.
fn clashes(p: &[String], owned: &[String], applied: &Value) -> bool {
    p == owned
        || p.starts_with(owned)
        || (owned.starts_with(p) && !value_at(applied, p).is_some_and(Value::is_object))
}

fn dotted(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

fn conflict_error(rt: &ResourceType, name: &str, conflicts: &[(String, String, FieldPath)]) -> StatusError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, av, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?} using {av}"), "field": dotted(p)}))
        .collect();
    let message = match conflicts {
        [(m, av, p)] => format!(
            "Apply failed with 1 conflict: conflict with {m:?} using {av}: {}",
            dotted(p)
        ),
        _ => {
            let (m, av, _) = &conflicts[0];
            let list: Vec<String> = conflicts
                .iter()
                .map(|(_, _, p)| format!("- {}", dotted(p)))
                .collect();
            format!(
                "Apply failed with {} conflicts: conflicts with {m:?} using {av}:\n{}",
                conflicts.len(),
                list.join("\n")
            )
        }
    };
    StatusError::new(409, "Conflict", message)
        .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}))
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let parent = parents.iter().try_fold(v, |v, p| v.get_mut(p));
    if let Some(Value::Object(m)) = parent {
        m.remove(last);
    }
}

fn manager_entry(manager: &str, rt: &ResourceType, fields: &FieldSet, previous: Option<&Value>) -> Value {
    let fields_v1 = to_fields_v1(fields);
    let time = match previous {
        Some(p) if p["fieldsV1"] == fields_v1 => p["time"].clone(),
        _ => json!(now_rfc3339()),
    };
    json!({"manager": manager, "operation": "Apply", "apiVersion": rt.api_version(), "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields_v1})
}

fn manager_name(m: &Manager) -> &str {
    m.entry["manager"].as_str().unwrap_or("")
}

fn decode_applied(rt: &ResourceType, name: &str, body: &[u8]) -> Result<Value, StatusError> {
    let mut applied: Value = serde_saphyr::from_slice(body)
        .map_err(|e| StatusError::bad_request(format!("error decoding YAML: {e}")))?;
    let Some(obj) = applied.as_object_mut() else {
        return Err(StatusError::bad_request("an apply patch must be an object"));
    };
    obj.entry("apiVersion").or_insert_with(|| json!(rt.api_version()));
    obj.entry("kind").or_insert_with(|| json!(rt.kind));
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.entry("name").or_insert_with(|| json!(name));
        m.remove("managedFields");
    }
    Ok(applied)
}

fn missing_manager() -> StatusError {
    let cause = json!({"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"});
    StatusError::new(
        422,
        "Invalid",
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
    )
    .with_details(json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [cause]}))
}

pub(crate) fn apply(
    state: &mut State,
    rt: &Arc<ResourceType>,
    ns: &str,
    name: &str,
    status_write: bool,
    body: &[u8],
    opts: &WriteOptions,
) -> Result<Written, StatusError> {
    let manager = opts
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(missing_manager)?;
    let mut applied = decode_applied(rt, name, body)?;
    let fields = field_set(&applied);
    let Ok(current) = state.get(rt, ns, name) else {
        applied["metadata"]["managedFields"] = json!([manager_entry(&manager, rt, &fields, None)]);
        let obj = state.create(rt, ns, applied, opts)?;
        return Ok(Written {
            obj,
            changed: true,
            created: true,
        });
    };
    let mut live = to_view(rt, current.value());
    let mut owners = managers(&live);
    let mut conflicts = Vec::new();
    for other in owners.iter_mut().filter(|m| manager_name(m) != manager) {
        let clashing: Vec<FieldPath> = other
            .fields
            .iter()
            .filter(|owned| {
                fields
                    .iter()
                    .any(|p| clashes(p, owned, &applied) && value_at(&live, p) != value_at(&applied, p))
            })
            .cloned()
            .collect();
        if opts.force {
            other.fields.retain(|f| !clashing.contains(f));
        } else {
            let av = other.entry["apiVersion"].as_str().unwrap_or("").to_string();
            conflicts.extend(
                clashing
                    .into_iter()
                    .map(|p| (manager_name(other).to_string(), av.clone(), p)),
            );
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(rt, name, &conflicts));
    }
    let previous = owners
        .iter()
        .find(|m| manager_name(m) == manager)
        .map(|m| m.entry.clone());
    let before = owners
        .iter()
        .find(|m| manager_name(m) == manager)
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = owners
        .iter()
        .filter(|m| manager_name(m) != manager)
        .flat_map(|m| m.fields.iter().cloned())
        .collect();
    for released in before
        .difference(&fields)
        .filter(|p| !others.iter().any(|o| overlaps(o, p)))
    {
        remove_path(&mut live, released);
    }
    merge_applied(rt, &mut live, &applied)?;
    let mut entries: Vec<Value> = owners
        .into_iter()
        .filter(|m| manager_name(m) != manager && !m.fields.is_empty())
        .map(|m| {
            let mut e = m.entry;
            e["fieldsV1"] = to_fields_v1(&m.fields);
            e
        })
        .collect();
    entries.push(manager_entry(&manager, rt, &fields, previous.as_ref()));
    live["metadata"]["managedFields"] = Value::Array(entries);
    let opts = WriteOptions {
        field_manager: None,
        ..opts.clone()
    };
    state.update(rt, ns, name, status_write, live, &opts)
}

fn changed_leaves(old: &Value, new: &Value) -> FieldSet {
    field_set(new)
        .into_iter()
        .filter(|p| value_at(old, p) != value_at(new, p))
        .collect()
}

fn update_entry(manager: &str, api_version: &str, fields: &FieldSet) -> Value {
    json!({"manager": manager, "operation": "Update", "apiVersion": api_version, "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(fields)})
}

/// Keeps `new`'s managedFields true after a write that is not an apply (see the module doc).
pub(crate) fn track_update(rt: &ResourceType, old: &Value, new: &mut Value, manager: Option<&str>) {
    if !new["metadata"]["managedFields"].is_array() {
        return;
    }
    let changed = manager.map(|_| changed_leaves(old, new)).unwrap_or_default();
    let mut owners = managers(new);
    for m in owners.iter_mut() {
        m.fields
            .retain(|p| value_at(new, p).is_some() && !changed.iter().any(|c| overlaps(c, p)));
    }
    let mut entries: Vec<Value> = Vec::new();
    for m in owners {
        let unchanged = m.entry["fieldsV1"] == to_fields_v1(&m.fields);
        let mut e = m.entry;
        if !unchanged {
            e["fieldsV1"] = to_fields_v1(&m.fields);
        }
        if !m.fields.is_empty() && (manager != e["manager"].as_str() || e["operation"] == "Apply") {
            entries.push(e);
        }
    }
    if let (Some(manager), false) = (manager, changed.is_empty()) {
        let previous = managers(old)
            .into_iter()
            .find(|m| manager_name(m) == manager && m.entry["operation"] == "Update");
        let mut fields = changed;
        fields.extend(
            previous
                .into_iter()
                .flat_map(|m| m.fields)
                .filter(|p| value_at(new, p).is_some()),
        );
        entries.push(update_entry(manager, &rt.api_version(), &fields));
    }
    new["metadata"]["managedFields"] = Value::Array(entries);
}

fn merge_applied(rt: &ResourceType, live: &mut Value, applied: &Value) -> Result<(), StatusError> {
    let mut patch = applied.clone();
    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| !SERVER_METADATA.contains(&k.as_str()));
    }
    if rt.is_builtin() {
        strategic_merge(live, &patch, &rt.kind).map_err(StatusError::bad_request)
    } else {
        json_patch::merge(live, &patch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trips() {
        let v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"k": "v", "j": "w"}});
        let set = field_set(&v);
        assert_eq!(set.len(), 3);
        let encoded = to_fields_v1(&set);
        assert_eq!(
            encoded,
            json!({"f:data": {"f:j": {}, "f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}})
        );
        let mut decoded = FieldSet::new();
        from_fields_v1(&encoded, &mut Vec::new(), &mut decoded);
        assert_eq!(decoded, set);
    }
}
