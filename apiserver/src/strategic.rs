//! Strategic merge patch for the built-in kinds: lists merged by their `patchMergeKey`, primitive lists
//! merged as sets, and the directives `$patch`, `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>`.

use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    Replace,
    MergeKey(&'static str),
    MergePrimitive,
}

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// `path` with a workload's pod template (`…template.spec`) rewritten to a pod's `spec`.
fn pod_relative(path: &[String]) -> Vec<&str> {
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    match parts.windows(2).rposition(|w| w == ["template", "spec"]) {
        Some(i) => std::iter::once("spec")
            .chain(parts[i + 2..].iter().copied())
            .collect(),
        None => parts,
    }
}

/// The merge strategy of the list at `path` (field names from the root) in an object of `kind`.
pub(crate) fn list_strategy(kind: &str, path: &[String]) -> ListStrategy {
    use ListStrategy::*;
    let p = pod_relative(path);
    match p.as_slice() {
        ["metadata", "finalizers"] => MergePrimitive,
        ["metadata", "ownerReferences"] => MergeKey("uid"),
        ["spec", list] if CONTAINER_LISTS.contains(list) => MergeKey("name"),
        ["spec", list, "ports"] if CONTAINER_LISTS.contains(list) => MergeKey("containerPort"),
        ["spec", list, "env"] if CONTAINER_LISTS.contains(list) => MergeKey("name"),
        ["spec", list, "volumeMounts"] if CONTAINER_LISTS.contains(list) => MergeKey("mountPath"),
        ["spec", list, "volumeDevices"] if CONTAINER_LISTS.contains(list) => MergeKey("devicePath"),
        ["spec", "volumes" | "imagePullSecrets"] => MergeKey("name"),
        ["spec", "hostAliases"] => MergeKey("ip"),
        ["spec", "ports"] if kind == "Service" => MergeKey("port"),
        ["spec", "podCIDRs"] if kind == "Node" => MergePrimitive,
        ["status", "conditions"] => MergeKey("type"),
        ["status", "podIPs" | "hostIPs"] => MergeKey("ip"),
        ["status", "addresses"] if kind == "Node" => MergeKey("type"),
        _ => Replace,
    }
}

/// Removes `$` directives, recursively.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
        other => other.clone(),
    }
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

fn merge_keyed(orig: &mut Vec<Value>, patch: &[Value], key: &str, kind: &str, path: &mut Vec<String>) {
    if patch.iter().any(|p| directive(p) == Some("replace")) {
        *orig = patch
            .iter()
            .filter(|p| directive(p) != Some("replace"))
            .map(strip)
            .collect();
        return;
    }
    for p in patch {
        let id = &p[key];
        let pos = orig.iter().position(|o| &o[key] == id && !id.is_null());
        match (directive(p), pos) {
            (Some("delete"), Some(i)) => {
                orig.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => merge_value(&mut orig[i], p, kind, path),
            (_, None) => orig.push(strip(p)),
        }
    }
}

fn merge_list(orig: &mut Vec<Value>, patch: &[Value], kind: &str, path: &mut Vec<String>) {
    match list_strategy(kind, path) {
        ListStrategy::Replace => *orig = patch.iter().map(strip).collect(),
        ListStrategy::MergePrimitive => {
            for p in patch {
                if !orig.contains(p) {
                    orig.push(p.clone());
                }
            }
        }
        ListStrategy::MergeKey(key) => merge_keyed(orig, patch, key, kind, path),
    }
}

fn merge_value(orig: &mut Value, patch: &Value, kind: &str, path: &mut Vec<String>) {
    match (orig, patch) {
        (Value::Object(o), Value::Object(p)) => merge_map(o, p, kind, path),
        (orig, patch) => *orig = strip(patch),
    }
}

/// Orders `list` like `order` (items matched by merge key, or by value for primitives); items the
/// order does not mention keep their relative order after the others.
fn set_element_order(list: &mut [Value], order: &[Value], key: Option<&str>) {
    let rank = |item: &Value| {
        order.iter().position(|o| match key {
            Some(k) => o.get(k) == item.get(k),
            None => o == item,
        })
    };
    list.sort_by_key(|item| rank(item).unwrap_or(usize::MAX));
}

fn apply_list_directives(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    kind: &str,
    path: &mut Vec<String>,
) {
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(list)), Some(remove)) = (orig.get_mut(field), v.as_array())
        {
            list.retain(|item| !remove.contains(item));
        }
    }
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Some(order)) = (orig.get_mut(field), v.as_array())
        {
            path.push(field.to_string());
            let key = match list_strategy(kind, path) {
                ListStrategy::MergeKey(key) => Some(key),
                _ => None,
            };
            path.pop();
            set_element_order(list, order, key);
        }
    }
}

fn merge_map(orig: &mut Map<String, Value>, patch: &Map<String, Value>, kind: &str, path: &mut Vec<String>) {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *orig = strip(&Value::Object(patch.clone()))
                .as_object()
                .cloned()
                .unwrap_or_default();
            return;
        }
        Some("delete") => {
            orig.clear();
            return;
        }
        _ => {}
    }
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        orig.retain(|k, _| keep.iter().any(|r| r == k));
    }
    for (k, v) in patch.iter().filter(|(k, _)| !k.starts_with('$')) {
        path.push(k.clone());
        match (orig.get_mut(k), v) {
            (_, Value::Null) => {
                orig.remove(k);
            }
            (_, Value::Object(p)) if directive(v) == Some("delete") && p.len() == 1 => {
                orig.remove(k);
            }
            (Some(Value::Object(o)), Value::Object(p)) => merge_map(o, p, kind, path),
            (Some(Value::Array(o)), Value::Array(p)) => merge_list(o, p, kind, path),
            (None, Value::Array(p)) => {
                let mut list = Vec::new();
                merge_list(&mut list, p, kind, path);
                orig.insert(k.clone(), Value::Array(list));
            }
            (_, v) => {
                orig.insert(k.clone(), strip(v));
            }
        }
        path.pop();
    }
    apply_list_directives(orig, patch, kind, path);
}

/// Applies a strategic merge patch to `doc`, an object of `kind`.
pub(crate) fn strategic_merge(doc: &mut Value, patch: &Value, kind: &str) -> Result<(), String> {
    let (Some(orig), Some(patch)) = (doc.as_object_mut(), patch.as_object()) else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    merge_map(orig, patch, kind, &mut Vec::new());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(doc: Value, patch: Value, kind: &str) -> Value {
        let mut doc = doc;
        strategic_merge(&mut doc, &patch, kind).unwrap();
        doc
    }

    #[test]
    fn merges_containers_by_name_and_conditions_by_type() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x:1", "env": [{"name": "E", "value": "1"}]}, {"name": "b", "image": "y"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "image": "x:2", "env": [{"name": "F", "value": "2"}]}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let out = smp(pod, patch, "Pod");
        assert_eq!(out["spec"]["containers"][0]["image"], "x:2");
        assert_eq!(out["spec"]["containers"][0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["containers"][1]["name"], "b");
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
        );
    }

    #[test]
    fn directives() {
        let doc = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "ports": [{"port": 80}]}});
        let out = smp(
            doc.clone(),
            json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}),
            "Pod",
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "a"}, {"name": "c"}]));
        let out = smp(
            doc.clone(),
            json!({"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}}),
            "Pod",
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "z"}]));
        let out = smp(
            doc.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]}}),
            "Pod",
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        let out = smp(
            doc.clone(),
            json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
            "Pod",
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c"}, {"name": "a"}, {"name": "b"}])
        );
        let out = smp(
            doc.clone(),
            json!({"spec": {"$retainKeys": ["ports"], "ports": [{"port": 81}]}}),
            "Service",
        );
        assert_eq!(out["spec"], json!({"ports": [{"port": 80}, {"port": 81}]}));
        let out = smp(doc, json!({"spec": {"$patch": "replace", "x": 1}}), "Pod");
        assert_eq!(out["spec"], json!({"x": 1}));
    }

    #[test]
    fn atomic_lists_are_replaced_and_null_deletes() {
        let ep = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}], "metadata": {"labels": {"a": "1", "b": "2"}}});
        let out = smp(
            ep,
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}], "metadata": {"labels": {"a": null}}}),
            "Endpoints",
        );
        assert_eq!(out["subsets"], json!([{"addresses": [{"ip": "10.0.0.2"}]}]));
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        let deploy = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}}}});
        let out = smp(
            deploy,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "2"}]}}}}),
            "Deployment",
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
