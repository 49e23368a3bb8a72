//! Small builders for the objects tests create; the shapes follow the seed notes' examples
//! (deploy-hostname pods behind hostname-svc-clusterip, port 8080 → targetPort 80).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use serde_json::{Value, json};

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture JSON matches the k8s-openapi type")
}

fn label_map(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn node(name: &str, zone: Option<&str>) -> Node {
    let labels: BTreeMap<&str, &str> = zone
        .map(|z| (crate::kubelet::ZONE_LABEL, z))
        .into_iter()
        .collect();
    from_json(json!({"metadata": {"name": name, "labels": labels}}))
}

/// A pod bound to `node` with one container exposing the named ports `(name, containerPort)`.
pub fn pod(name: &str, labels: &[(&str, &str)], node: &str, ports: &[(&str, i32)]) -> Pod {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p, "protocol": "TCP"}))
        .collect();
    from_json(json!({
        "metadata": {"name": name, "labels": label_map(labels)},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9", "ports": ports}]}
    }))
}

/// A ClusterIP Service selecting `selector`, with ports `(name, port, targetPort)`; a numeric-looking
/// target port is sent as a number, anything else as a port name.
pub fn service(name: &str, selector: &[(&str, &str)], ports: &[(&str, i32, &str)]) -> Service {
    let ports: Vec<Value> = ports.iter().map(|(n, p, t)| service_port(n, *p, t)).collect();
    from_json(json!({
        "metadata": {"name": name},
        "spec": {"selector": label_map(selector), "ports": ports}
    }))
}

/// A headless Service (`clusterIP: None`).
pub fn headless_service(name: &str, selector: &[(&str, &str)], ports: &[(&str, i32, &str)]) -> Service {
    let mut svc = service(name, selector, ports);
    svc.spec.as_mut().expect("spec").cluster_ip = Some("None".into());
    svc
}

fn service_port(name: &str, port: i32, target: &str) -> Value {
    let target: Value = target
        .parse::<i32>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(target));
    let mut p = json!({"port": port, "targetPort": target, "protocol": "TCP"});
    if !name.is_empty() {
        p["name"] = Value::from(name);
    }
    p
}
