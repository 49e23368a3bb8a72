//! Service ClusterIP and NodePort allocation, kept across updates and released on deletion.

use serde_json::{Value, json};

use super::error::Cause;
use super::state::State;

fn cluster_ip(v: &Value) -> &str {
    v["spec"]["clusterIP"].as_str().unwrap_or("")
}

fn needs_node_ports(v: &Value) -> bool {
    matches!(v["spec"]["type"].as_str(), Some("NodePort" | "LoadBalancer"))
}

/// Update bodies may omit the allocated clusterIP(s) and nodePorts: keep the old ones.
pub(crate) fn carry_allocations(old: &Value, new: &mut Value) {
    if new["spec"]["type"] == "ExternalName" {
        return;
    }
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        for key in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old["spec"].get(key) {
                spec.insert(key.into(), v.clone());
            }
        }
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter(|p| p.get("nodePort").is_none()) {
            let old_port = old["spec"]["ports"]
                .as_array()
                .and_then(|ps| ps.iter().find(|o| o["port"] == p["port"]));
            if let Some(np) = old_port.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = np.clone();
            }
        }
    }
}

fn allocate_cluster_ip(state: &mut State, v: &mut Value, old: Option<&Value>, dry_run: bool) -> Vec<Cause> {
    let spec = v["spec"].as_object_mut().expect("defaults made spec");
    if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
        return Vec::new();
    }
    let wanted = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let old_ip = old.map(cluster_ip).unwrap_or("");
    let ip = if wanted == "None" || (!wanted.is_empty() && wanted == old_ip) {
        wanted
    } else if wanted.is_empty() {
        let next = if dry_run {
            Some("10.96.0.0".to_string())
        } else {
            state.cluster_ips.allocate()
        };
        match next {
            Some(ip) => ip,
            None => return vec![Cause::invalid("spec.clusterIPs", json!([]), "range is full")],
        }
    } else if dry_run || state.cluster_ips.claim(&wanted) {
        wanted
    } else {
        let detail = if state.cluster_ips.contains(&wanted) {
            format!("failed to allocate IP {wanted}: provided IP is already allocated")
        } else {
            let range = state.cluster_ips.range();
            format!(
                "failed to allocate IP {wanted}: provided IP is not in the valid range. The range of valid IPs is {range}"
            )
        };
        return vec![Cause::invalid("spec.clusterIPs", json!([wanted]), detail)];
    };
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
    Vec::new()
}

fn allocate_node_ports(state: &mut State, v: &mut Value, dry_run: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(Value::Array(ports)) = v["spec"].get_mut("ports") else {
        return causes;
    };
    for (i, p) in ports.iter_mut().enumerate() {
        match p.get("nodePort").and_then(Value::as_u64) {
            Some(n) if dry_run || (30000..=32767).contains(&n) => {
                state.node_ports.claim(n as u16);
            }
            Some(n) => causes.push(Cause::invalid(
                format!("spec.ports[{i}].nodePort"),
                n,
                "provided port is not in the valid range. The range of valid ports is 30000-32767",
            )),
            None => {
                let port = if dry_run {
                    Some(30000)
                } else {
                    state.node_ports.allocate()
                };
                p["nodePort"] = json!(port);
            }
        }
    }
    causes
}

/// Allocates what a new or changed Service needs; field errors when the request cannot be met.
pub(crate) fn allocate(state: &mut State, v: &mut Value, old: Option<&Value>, dry_run: bool) -> Vec<Cause> {
    let mut causes = allocate_cluster_ip(state, v, old, dry_run);
    if causes.is_empty() && needs_node_ports(v) {
        causes = allocate_node_ports(state, v, dry_run);
    }
    causes
}

pub(crate) fn release(state: &mut State, v: &Value) {
    state.cluster_ips.release(cluster_ip(v));
    for p in v["spec"]["ports"].as_array().into_iter().flatten() {
        if let Some(n) = p["nodePort"].as_u64() {
            state.node_ports.release(n as u16);
        }
    }
}
