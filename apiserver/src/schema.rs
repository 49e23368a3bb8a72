//! Structural OpenAPI v3 schemas of CRDs: pruning unknown fields, defaulting, and validation of `type`,
//! `required`, `enum`, bounds, lengths and item counts (`pattern` is not checked).

use serde_json::Value;

use super::error::{Cause, CauseKind};

fn preserves_unknown(s: &Value) -> bool {
    s["x-kubernetes-preserve-unknown-fields"] == true
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Drops fields the schema does not know, unless it preserves unknown fields there.
pub(crate) fn prune(v: &mut Value, s: &Value) {
    match v {
        Value::Object(map) => {
            let props = s["properties"].as_object();
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            map.retain(|k, child| {
                let cs = props.and_then(|p| p.get(k)).or(additional);
                !child.is_null() || cs.is_some_and(|cs| cs["nullable"] == true)
            });
            for (k, child) in map.iter_mut() {
                if let Some(cs) = props.and_then(|p| p.get(k)).or(additional) {
                    prune(child, cs);
                }
            }
            if preserves_unknown(s)
                || s.get("additionalProperties") == Some(&Value::Bool(true))
                || additional.is_some()
            {
                return;
            }
            let embedded = s["x-kubernetes-embedded-resource"] == true;
            map.retain(|k, _| {
                props.is_some_and(|p| p.contains_key(k))
                    || (embedded && ["apiVersion", "kind", "metadata"].contains(&k.as_str()))
            });
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                items.iter_mut().for_each(|i| prune(i, is));
            }
        }
        _ => {}
    }
}

/// Fills absent fields that have a `default`, outside in.
pub(crate) fn apply_defaults(v: &mut Value, s: &Value) {
    match v {
        Value::Object(map) => {
            if let Some(props) = s["properties"].as_object() {
                for (k, ps) in props {
                    if let (false, Some(d)) = (map.contains_key(k), ps.get("default")) {
                        map.insert(k.clone(), d.clone());
                    }
                }
                for (k, child) in map.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        apply_defaults(child, ps);
                    }
                }
            } else if let Some(additional) = s.get("additionalProperties").filter(|a| a.is_object()) {
                map.values_mut().for_each(|c| apply_defaults(c, additional));
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                items.iter_mut().for_each(|i| apply_defaults(i, is));
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(v: &Value, s: &Value) -> bool {
    if s["x-kubernetes-int-or-string"] == true {
        return v.is_string() || type_name(v) == "integer";
    }
    match (s["type"].as_str(), type_name(v)) {
        (None, _) => true,
        (_, "null") => s["nullable"] == true,
        (Some("number"), "integer") => true,
        (Some(want), have) => want == have,
    }
}

fn invalid(path: &str, v: &Value, detail: String) -> Cause {
    Cause::invalid(path, v.clone(), detail)
}

fn check_bounds(v: &Value, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let (Some(n), Some(min)) = (v.as_f64(), s["minimum"].as_f64()) {
        let exclusive = s["exclusiveMinimum"] == true;
        if n < min || (exclusive && n == min) {
            let op = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(invalid(path, v, format!("{path} in body should be {op} {min}")));
        }
    }
    if let (Some(n), Some(max)) = (v.as_f64(), s["maximum"].as_f64()) {
        let exclusive = s["exclusiveMaximum"] == true;
        if n > max || (exclusive && n == max) {
            let op = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(invalid(path, v, format!("{path} in body should be {op} {max}")));
        }
    }
    if let Some(text) = v.as_str() {
        let len = text.chars().count() as u64;
        if s["minLength"].as_u64().is_some_and(|m| len < m) {
            causes.push(invalid(
                path,
                v,
                format!("{path} in body should be at least {} chars long", s["minLength"]),
            ));
        }
        if s["maxLength"].as_u64().is_some_and(|m| len > m) {
            causes.push(Cause::new(
                CauseKind::TooMany,
                path,
                format!("may not be more than {} bytes", s["maxLength"]),
            ));
        }
    }
    if let Some(items) = v.as_array() {
        let len = items.len() as u64;
        if s["minItems"].as_u64().is_some_and(|m| len < m) {
            causes.push(invalid(
                path,
                v,
                format!("{path} in body should have at least {} items", s["minItems"]),
            ));
        }
        if s["maxItems"].as_u64().is_some_and(|m| len > m) {
            causes.push(Cause::new(
                CauseKind::TooMany,
                path,
                format!("must have at most {} items", s["maxItems"]),
            ));
        }
    }
}

/// Validates `v` against `s`, collecting field errors under `path`.
pub(crate) fn validate(v: &Value, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    if !type_ok(v, s) {
        let want = s["type"].as_str().unwrap_or("int-or-string");
        let detail = format!("{path} in body must be of type {want}: \"{}\"", type_name(v));
        causes.push(invalid(path, v, detail));
        return;
    }
    if let Some(allowed) = s["enum"].as_array().filter(|a| !a.contains(v)) {
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        causes.push(
            Cause::new(
                CauseKind::NotSupported,
                path,
                format!("supported values: {}", list.join(", ")),
            )
            .with_value(v.clone()),
        );
    }
    check_bounds(v, s, path, causes);
    match v {
        Value::Object(map) => {
            for req in s["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let root_meta = path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&req);
                if !map.contains_key(req) && !root_meta {
                    causes.push(Cause::required(child_path(path, req), ""));
                }
            }
            let props = s["properties"].as_object();
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in map {
                if let Some(cs) = props.and_then(|p| p.get(k)).or(additional) {
                    validate(child, cs, &child_path(path, k), causes);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item, is, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["host"], "properties": {
                "host": {"type": "string", "minLength": 1},
                "replicas": {"type": "integer", "default": 1, "minimum": 0, "maximum": 10},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "ports": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {"port": {"type": "integer"}}}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}})
    }

    #[test]
    fn prunes_unknown_fields_but_keeps_preserved_ones() {
        let mut v = json!({"spec": {"host": "h", "junk": 1, "ports": [{"port": 1, "x": 2}],
            "extra": {"anything": {"deep": true}}, "labels": {"a": "b"}}, "other": 1});
        prune(&mut v, &schema());
        assert_eq!(
            v,
            json!({"spec": {"host": "h", "ports": [{"port": 1}], "extra": {"anything": {"deep": true}}, "labels": {"a": "b"}}})
        );
    }

    #[test]
    fn defaults_then_validates() {
        let mut v = json!({"spec": {"host": "h"}});
        apply_defaults(&mut v, &schema());
        assert_eq!(v["spec"]["replicas"], 1);
        let mut causes = Vec::new();
        validate(&v, &schema(), "", &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let bad = json!({"spec": {"replicas": "x", "mode": "c", "ports": [{}, {}, {}]}});
        validate(&bad, &schema(), "", &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.host", "spec.mode", "spec.ports", "spec.replicas"]);
    }
}
