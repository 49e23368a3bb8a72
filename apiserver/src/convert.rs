//! Views of stored objects: events.k8s.io/v1 Events are stored as core/v1 Events (one storage, as
//! upstream), and custom resources read through another served version get that `apiVersion`.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::registry::{Behaviour, ResourceType};
use super::store::Obj;

/// (core/v1 field, events.k8s.io/v1 field) pairs.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(v: Value, api_version: &str, to_v1: bool) -> Value {
    let Value::Object(mut from) = v else { return v };
    let mut out = Map::new();
    out.insert("kind".into(), Value::from("Event"));
    out.insert("apiVersion".into(), Value::from(api_version));
    if let Some(meta) = from.remove("metadata") {
        out.insert("metadata".into(), meta);
    }
    for (core, v1) in EVENT_FIELDS {
        let (src, dst) = if to_v1 { (core, v1) } else { (v1, core) };
        if let Some(value) = from.remove(*src).filter(|v| !v.is_null()) {
            out.insert(dst.to_string(), value);
        }
    }
    Value::Object(out)
}

/// The stored form of `v`, written through `rt`.
pub(crate) fn to_storage(rt: &ResourceType, v: Value) -> Value {
    match rt.behaviour {
        Behaviour::EventV1 => rename(v, "v1", false),
        _ => v,
    }
}

fn needs_rewrite(rt: &ResourceType) -> bool {
    rt.behaviour == Behaviour::EventV1 || rt.custom.as_ref().is_some_and(|c| c.multi_version)
}

/// `v` (stored form) as `rt` serves it.
pub(crate) fn to_view(rt: &ResourceType, v: Value) -> Value {
    match rt.behaviour {
        Behaviour::EventV1 => rename(v, "events.k8s.io/v1", true),
        Behaviour::Custom if needs_rewrite(rt) => {
            let mut v = v;
            if let Some(m) = v.as_object_mut() {
                m.insert("apiVersion".into(), Value::from(rt.api_version()));
            }
            v
        }
        _ => v,
    }
}

/// The JSON bytes `rt` serves for `obj`: the stored bytes themselves unless a view differs.
pub(crate) fn render(rt: &ResourceType, obj: &Obj) -> Bytes {
    if !needs_rewrite(rt) {
        return obj.json.clone();
    }
    Bytes::from(serde_json::to_vec(&to_view(rt, obj.value())).expect("JSON values serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_versions() {
        let rt = Registry::new().builtin("events.k8s.io", "events");
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "reason": "R", "action": "A",
            "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "c", "reportingInstance": "i",
            "series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:01.000000Z"}});
        let core = to_storage(&rt, v1.clone());
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hi");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(to_view(&rt, core), v1);
    }
}
