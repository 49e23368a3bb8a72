//! EndpointSlice conversion between `discovery.k8s.io/v1` and kube-apiserver 1.20's `v1beta1`, with the
//! field mapping later releases define for the two versions:
//!
//! | v1 | v1beta1 (1.20) |
//! |---|---|
//! | `zone` | `topology["topology.kubernetes.io/zone"]` |
//! | `nodeName` | `nodeName`, and `topology["kubernetes.io/hostname"]` unless that key is already set |
//! | `deprecatedTopology` | the other `topology` keys (and a hostname that differs from `nodeName`) |
//! | `conditions` | `conditions` (serving and terminating behind the 1.20 feature gate the real tier enables) |
//! | `hints` | nothing: 1.20 has no hints, so a v1 object with hints is refused, never dropped |
//!
//! Everything else (metadata, `addressType`, `ports`, `addresses`, `hostname`, `targetRef`) is the same in both.

use serde_json::{Map, Value};

pub const GROUP: &str = "discovery.k8s.io";
pub const V1: &str = "discovery.k8s.io/v1";
pub const V1BETA1: &str = "discovery.k8s.io/v1beta1";
const ZONE: &str = "topology.kubernetes.io/zone";
const HOSTNAME: &str = "kubernetes.io/hostname";

/// A field v1beta1 on 1.20 cannot hold, as a `details.causes` entry of a 422 Invalid Status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub field: String,
    pub message: String,
}

/// Rewrites in place, v1beta1 → v1, whatever the server answered to a v1 request: an EndpointSlice, an
/// EndpointSliceList, a Table whose rows carry slices, or a watch event holding one of these. Anything else
/// (a Status, PartialObjectMetadata) is left as it is.
pub fn to_v1(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    if object.contains_key("type") && object.contains_key("object") {
        if let Some(inner) = object.get_mut("object") {
            to_v1(inner);
        }
        return;
    }
    match object.get("kind").and_then(Value::as_str) {
        Some("EndpointSlice") => slice_to_v1(object),
        Some("EndpointSliceList") => {
            set_v1(object);
            for item in array_mut(object, "items") {
                if let Some(item) = item.as_object_mut() {
                    slice_to_v1(item);
                }
            }
        }
        Some("Table") => {
            for row in array_mut(object, "rows") {
                if let Some(inner) = row.get_mut("object") {
                    to_v1(inner);
                }
            }
        }
        _ => {}
    }
}

/// Rewrites a v1 EndpointSlice (a request body) to v1beta1; the causes name every field 1.20 cannot hold.
/// A body that already says v1beta1 is left alone, as a v1 server would decode it as v1beta1.
pub fn to_v1beta1(value: &mut Value) -> Result<(), Vec<Cause>> {
    let Some(object) = value.as_object_mut() else {
        return Ok(());
    };
    if object.get("apiVersion").and_then(Value::as_str) == Some(V1BETA1) {
        return Ok(());
    }
    if object.get("apiVersion").and_then(Value::as_str) == Some(V1) {
        object.insert("apiVersion".into(), Value::from(V1BETA1));
    }
    match object.get_mut("endpoints") {
        Some(endpoints) => endpoints_to_v1beta1(endpoints),
        None => Ok(()),
    }
}

/// Rewrites the `endpoints` list of a v1 slice (or of a patch, where the list is replaced whole: it is
/// atomic in both versions) to v1beta1.
pub fn endpoints_to_v1beta1(endpoints: &mut Value) -> Result<(), Vec<Cause>> {
    let mut causes = Vec::new();
    for (i, ep) in endpoints.as_array_mut().into_iter().flatten().enumerate() {
        if let Some(ep) = ep.as_object_mut()
            && let Err(cause) = endpoint_to_v1beta1(ep, i)
        {
            causes.push(cause);
        }
    }
    if causes.is_empty() { Ok(()) } else { Err(causes) }
}

fn slice_to_v1(slice: &mut Map<String, Value>) {
    set_v1(slice);
    for ep in array_mut(slice, "endpoints") {
        if let Some(ep) = ep.as_object_mut() {
            endpoint_to_v1(ep);
        }
    }
}

fn set_v1(object: &mut Map<String, Value>) {
    if object.get("apiVersion").and_then(Value::as_str) == Some(V1BETA1) {
        object.insert("apiVersion".into(), Value::from(V1));
    }
}

fn array_mut<'a>(object: &'a mut Map<String, Value>, key: &str) -> impl Iterator<Item = &'a mut Value> {
    object
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn endpoint_to_v1(ep: &mut Map<String, Value>) {
    let Some(Value::Object(mut topology)) = ep.remove("topology") else {
        return;
    };
    if let Some(zone) = topology.remove(ZONE) {
        ep.insert("zone".into(), zone);
    }
    // The hostname key only repeats nodeName when both are set alike; a different one is kept.
    if ep.get("nodeName").is_some_and(|n| n.is_string()) && topology.get(HOSTNAME) == ep.get("nodeName") {
        topology.remove(HOSTNAME);
    }
    if !topology.is_empty() {
        ep.insert("deprecatedTopology".into(), Value::Object(topology));
    }
}

fn endpoint_to_v1beta1(ep: &mut Map<String, Value>, index: usize) -> Result<(), Cause> {
    if ep.get("hints").is_some_and(|h| !h.is_null()) {
        return Err(Cause {
            field: format!("endpoints[{index}].hints"),
            message: "Forbidden: discovery.k8s.io/v1beta1 of kube-apiserver 1.20 has no topology hints, \
                      so this test environment cannot store them"
                .into(),
        });
    }
    ep.remove("hints");
    let deprecated = ep.remove("deprecatedTopology");
    let zone = ep.remove("zone").filter(|z| !z.is_null());
    let node_name = ep.get("nodeName").filter(|n| n.is_string()).cloned();
    if deprecated.as_ref().is_none_or(Value::is_null) && zone.is_none() && node_name.is_none() {
        return Ok(());
    }
    let mut topology = match deprecated {
        Some(Value::Object(map)) => map,
        // Not a map: handed on as it is, so the server answers the decoding error v1 would give.
        Some(other) if !other.is_null() => {
            ep.insert("topology".into(), other);
            return Ok(());
        }
        _ => Map::new(),
    };
    if let Some(zone) = zone {
        topology.insert(ZONE.into(), zone);
    }
    if let Some(node_name) = node_name
        && topology
            .get(HOSTNAME)
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    {
        topology.insert(HOSTNAME.into(), node_name);
    }
    if !topology.is_empty() {
        ep.insert("topology".into(), Value::Object(topology));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v1_slice(endpoints: Value) -> Value {
        json!({"apiVersion": V1, "kind": "EndpointSlice", "metadata": {"name": "s"}, "addressType": "IPv4",
               "endpoints": endpoints, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
    }

    fn round_trip(endpoints: Value) -> (Value, Value) {
        let original = v1_slice(endpoints);
        let mut stored = original.clone();
        to_v1beta1(&mut stored).expect("representable");
        let mut back = stored.clone();
        to_v1(&mut back);
        assert_eq!(back, original, "v1 → v1beta1 → v1 is the identity");
        (stored, back)
    }

    #[test]
    fn zone_and_node_name_become_topology_and_come_back() {
        let (stored, _) = round_trip(json!([{"addresses": ["10.0.0.1"], "nodeName": "n1", "zone": "z1",
            "conditions": {"ready": true, "serving": true, "terminating": false}}]));
        assert_eq!(stored["apiVersion"], V1BETA1);
        assert_eq!(
            stored["endpoints"][0]["topology"],
            json!({"kubernetes.io/hostname": "n1", "topology.kubernetes.io/zone": "z1"})
        );
        assert_eq!(stored["endpoints"][0]["nodeName"], "n1");
        assert_eq!(
            stored["endpoints"][0]["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
    }

    #[test]
    fn deprecated_topology_keeps_other_keys_and_a_differing_hostname() {
        let (stored, _) = round_trip(json!([{"addresses": ["10.0.0.1"], "nodeName": "n1",
            "deprecatedTopology": {"kubernetes.io/hostname": "other", "topology.kubernetes.io/region": "r"}}]));
        assert_eq!(
            stored["endpoints"][0]["topology"],
            json!({"kubernetes.io/hostname": "other", "topology.kubernetes.io/region": "r"})
        );
    }

    #[test]
    fn an_endpoint_without_topology_fields_is_unchanged() {
        let (stored, _) = round_trip(json!([{"addresses": ["10.0.0.1"], "hostname": "h",
            "targetRef": {"kind": "Pod", "name": "p", "namespace": "ns"}}]));
        assert_eq!(stored["endpoints"][0].get("topology"), None);
    }

    #[test]
    fn a_topology_written_by_the_1_20_controller_reads_as_zone_node_name_and_region() {
        let mut list = json!({"apiVersion": V1BETA1, "kind": "EndpointSliceList", "items": [{"addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "n1", "topology": {"kubernetes.io/hostname": "n1",
            "topology.kubernetes.io/zone": "z", "topology.kubernetes.io/region": "r"}}]}]});
        to_v1(&mut list);
        assert_eq!(list["apiVersion"], V1);
        assert_eq!(
            list["items"][0]["endpoints"][0],
            json!({"addresses": ["10.0.0.1"], "nodeName": "n1", "zone": "z",
                   "deprecatedTopology": {"topology.kubernetes.io/region": "r"}})
        );
    }

    #[test]
    fn a_hostname_without_node_name_stays_deprecated_topology() {
        let mut slice = json!({"apiVersion": V1BETA1, "kind": "EndpointSlice",
            "endpoints": [{"addresses": ["10.0.0.1"], "topology": {"kubernetes.io/hostname": "n1"}}]});
        to_v1(&mut slice);
        assert_eq!(
            slice["endpoints"][0]["deprecatedTopology"],
            json!({"kubernetes.io/hostname": "n1"})
        );
    }

    #[test]
    fn hints_are_refused_with_their_field_path() {
        let mut slice = v1_slice(json!([{"addresses": ["10.0.0.1"]},
            {"addresses": ["10.0.0.2"], "hints": {"forZones": [{"name": "z"}]}}]));
        let causes = to_v1beta1(&mut slice).unwrap_err();
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "endpoints[1].hints");
        let mut null_hints = v1_slice(json!([{"addresses": ["10.0.0.1"], "hints": null}]));
        to_v1beta1(&mut null_hints).expect("a null hints field holds nothing");
        assert_eq!(null_hints["endpoints"][0], json!({"addresses": ["10.0.0.1"]}));
    }

    #[test]
    fn watch_events_and_table_rows_are_converted() {
        let slice = json!({"apiVersion": V1BETA1, "kind": "EndpointSlice", "metadata": {"name": "s"},
            "endpoints": [{"addresses": ["10.0.0.1"], "topology": {"topology.kubernetes.io/zone": "z"}}]});
        let mut event = json!({"type": "ADDED", "object": slice.clone()});
        to_v1(&mut event);
        assert_eq!(event["object"]["apiVersion"], V1);
        assert_eq!(event["object"]["endpoints"][0]["zone"], "z");
        let mut table = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "rows": [{"cells": ["s"], "object": slice}]});
        to_v1(&mut table);
        assert_eq!(table["rows"][0]["object"]["apiVersion"], V1);
        let mut bookmark = json!({"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "apiVersion": V1BETA1,
            "metadata": {"resourceVersion": "12"}}});
        to_v1(&mut bookmark);
        assert_eq!(
            bookmark["object"],
            json!({"kind": "EndpointSlice", "apiVersion": V1, "metadata": {"resourceVersion": "12"}})
        );
        let mut status = json!({"kind": "Status", "apiVersion": "v1", "code": 410});
        let before = status.clone();
        to_v1(&mut status);
        assert_eq!(status, before);
    }
}
