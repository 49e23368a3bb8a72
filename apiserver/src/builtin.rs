//! Per-kind server behaviour of the built-in types: API defaults and the status a create starts with.

use serde_json::{Map, Value, json};

use super::registry::{Behaviour, ResourceType};

/// The object at `v[key]`, created empty when absent (or not an object).
pub(crate) fn child<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let map = v.as_object_mut().expect("object");
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("object")
}

fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    let entry = map.entry(key.to_string()).or_insert(Value::Null);
    if entry.is_null() {
        *entry = value;
    }
}

fn each_item(map: &mut Map<String, Value>, key: &str, f: impl Fn(&mut Map<String, Value>)) {
    if let Some(Value::Array(items)) = map.get_mut(key) {
        items.iter_mut().filter_map(Value::as_object_mut).for_each(f);
    }
}

/// Kubernetes' rule: `Always` for `:latest` or untagged images, else `IfNotPresent`.
fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "imagePullPolicy", json!(image_pull_policy(&image)));
    default(c, "resources", json!({}));
    each_item(c, "ports", |p| default(p, "protocol", json!("TCP")));
}

const DEFAULT_TOLERATIONS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

fn default_tolerations(spec: &mut Map<String, Value>) {
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(items) = list.as_array_mut() else { return };
    for key in DEFAULT_TOLERATIONS {
        let has = items.iter().any(|t| {
            t.get("key").and_then(Value::as_str) == Some(key)
                && t.get("effect")
                    .and_then(Value::as_str)
                    .is_none_or(|e| e == "NoExecute")
        });
        if !has {
            items.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
            );
        }
    }
}

fn default_pod(v: &mut Value) {
    let spec = child(v, "spec");
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "enableServiceLinks", json!(true));
    default(spec, "priority", json!(0));
    default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    default_tolerations(spec);
    each_item(spec, "containers", default_container);
    each_item(spec, "initContainers", default_container);
}

/// BestEffort without any requests or limits; Guaranteed when every container limits cpu and memory
/// with equal (or absent) requests; Burstable otherwise.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .collect();
    let empty = |c: &Value, k: &str| c["resources"][k].as_object().is_none_or(|m| m.is_empty());
    if containers
        .iter()
        .all(|c| empty(c, "requests") && empty(c, "limits"))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = &c["resources"]["limits"][r];
            let request = &c["resources"]["requests"][r];
            !limit.is_null() && (request.is_null() || request == limit)
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

fn default_service(v: &mut Value) {
    let spec = child(v, "spec");
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    each_item(spec, "ports", |p| {
        default(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            default(p, "targetPort", port);
        }
    });
    if kind == "ExternalName" {
        return;
    }
    default(spec, "ipFamilies", json!(["IPv4"]));
    default(spec, "ipFamilyPolicy", json!("SingleStack"));
    default(spec, "internalTrafficPolicy", json!("Cluster"));
    if kind == "NodePort" || kind == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
}

fn default_endpoint_ports(ports: &mut Map<String, Value>) {
    default(ports, "protocol", json!("TCP"));
}

fn default_crd(v: &mut Value) {
    let spec = child(v, "spec");
    if let Some(n) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = n.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
        default(n, "singular", json!(kind.to_lowercase()));
        default(n, "listKind", json!(format!("{kind}List")));
    }
    default(spec, "conversion", json!({"strategy": "None"}));
}

/// API defaults, applied on every create and update (they are idempotent).
pub(crate) fn apply_defaults(rt: &ResourceType, v: &mut Value) {
    match rt.behaviour {
        Behaviour::Pod => default_pod(v),
        Behaviour::Service => default_service(v),
        Behaviour::Endpoints => {
            if let Some(Value::Array(subsets)) = v.get_mut("subsets") {
                for s in subsets.iter_mut().filter_map(Value::as_object_mut) {
                    each_item(s, "ports", default_endpoint_ports);
                }
            }
        }
        Behaviour::EndpointSlice => {
            if let Some(Value::Array(ports)) = v.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    default_endpoint_ports(p);
                    default(p, "name", json!(""));
                }
            }
        }
        Behaviour::Namespace => {
            let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
            let labels = child(child_value(v, "metadata"), "labels");
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
        Behaviour::Crd => default_crd(v),
        _ => {}
    }
}

fn child_value<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    child(v, key);
    v.get_mut(key).expect("just inserted")
}

/// Map fields that Go types mark `omitempty`: an empty one is not stored.
const OMITTED_EMPTY_MAPS: &[&str] = &[
    "labels",
    "annotations",
    "data",
    "binaryData",
    "stringData",
    "nodeSelector",
    "limits",
    "requests",
    "capacity",
    "allocatable",
    "matchLabels",
];

fn drop_empty(v: &mut Value, selector_is_map: bool) {
    match v {
        Value::Object(m) => {
            m.retain(|k, child| match child {
                Value::Null => false,
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) if o.is_empty() => {
                    !(OMITTED_EMPTY_MAPS.contains(&k.as_str()) || (selector_is_map && k == "selector"))
                }
                _ => true,
            });
            m.values_mut().for_each(|c| drop_empty(c, selector_is_map));
        }
        Value::Array(items) => items.iter_mut().for_each(|c| drop_empty(c, selector_is_map)),
        _ => {}
    }
}

/// What a round trip through upstream's Go types and etcd does to a built-in object: `null`s, empty
/// lists and empty `omitempty` maps disappear (so `subsets: []` reads back as no subsets).
pub(crate) fn normalize(rt: &ResourceType, v: &mut Value) {
    match rt.behaviour {
        Behaviour::Custom => {}
        // A CRD's schema may hold empty schemas named like maps (`labels: {}`): only its metadata.
        Behaviour::Crd => drop_empty(&mut v["metadata"], false),
        _ => drop_empty(v, rt.behaviour == Behaviour::Service),
    }
}

/// The status a new object starts with (server-owned for types with a status subresource).
pub(crate) fn initial_status(rt: &ResourceType, v: &mut Value) {
    let Some(map) = v.as_object_mut() else { return };
    match rt.behaviour {
        Behaviour::Pod => {
            let qos = qos_class(&Value::Object(map.clone()));
            map.insert("status".into(), json!({"phase": "Pending", "qosClass": qos}));
        }
        Behaviour::Service => {
            map.insert("status".into(), json!({"loadBalancer": {}}));
        }
        Behaviour::Namespace => {
            map.insert("status".into(), json!({"phase": "Active"}));
            default(child(v, "spec"), "finalizers", json!(["kubernetes"]));
        }
        Behaviour::Crd => {
            map.insert("status".into(), json!({}));
        }
        Behaviour::Custom if rt.status => {
            map.remove("status");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn pod_defaults() {
        let rt = Registry::new().builtin("", "pods");
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "reg:5000/x:1.2"}]}});
        apply_defaults(&rt, &mut pod);
        initial_status(&rt, &mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        let once = pod.clone();
        apply_defaults(&rt, &mut pod);
        assert_eq!(pod, once, "defaults are idempotent");
    }

    #[test]
    fn normalizing_drops_what_go_omits() {
        let rt = Registry::new().builtin("", "endpoints");
        let mut ep = json!({"metadata": {"name": "e", "labels": {}, "annotations": null, "finalizers": []},
            "subsets": [{"addresses": [], "ports": [{"port": 80, "name": "a"}]}]});
        normalize(&rt, &mut ep);
        assert_eq!(
            ep,
            json!({"metadata": {"name": "e"}, "subsets": [{"ports": [{"port": 80, "name": "a"}]}]})
        );
        let rt = Registry::new().builtin("", "pods");
        let mut pod = json!({"spec": {"securityContext": {}, "containers": [{"resources": {"limits": {}}}]}});
        normalize(&rt, &mut pod);
        assert_eq!(
            pod,
            json!({"spec": {"securityContext": {}, "containers": [{"resources": {}}]}})
        );
    }

    #[test]
    fn service_defaults() {
        let rt = Registry::new().builtin("", "services");
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults(&rt, &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
    }
}
