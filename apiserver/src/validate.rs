//! Validation of the built-in kinds (create and update) and their immutable fields.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::Value;

use super::error::{Cause, CauseKind};
use super::registry::{Behaviour, ResourceType};

const DNS1123_DETAIL: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

pub(crate) fn valid_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_port_name(name: &str) -> bool {
    name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Why `ip` may not be an endpoint address, if it may not.
fn endpoint_ip_problem(ip: &str) -> Option<&'static str> {
    let Ok(addr) = ip.parse::<IpAddr>() else {
        return Some("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
    };
    let link_local = match addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    };
    let link_local_multicast = match addr {
        IpAddr::V4(a) => a.octets()[..3] == [224, 0, 0],
        IpAddr::V6(a) => a.segments()[0] == 0xff02,
    };
    if addr.is_unspecified() {
        Some("may not be unspecified (0.0.0.0)")
    } else if addr.is_loopback() {
        Some("may not be in the loopback range (127.0.0.0/8)")
    } else if link_local {
        Some("may not be in the link-local range (169.254.0.0/16)")
    } else if link_local_multicast {
        Some("may not be in the link-local multicast range (224.0.0.0/24)")
    } else {
        None
    }
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn check_port(p: &Value, path: &str, causes: &mut Vec<Cause>) {
    match p["port"].as_i64() {
        None => causes.push(Cause::required(format!("{path}.port"), "")),
        Some(n) if !(1..=65535).contains(&n) => causes.push(Cause::invalid(
            format!("{path}.port"),
            n,
            "must be between 1 and 65535, inclusive",
        )),
        _ => {}
    }
    let proto = p["protocol"].as_str().unwrap_or("TCP");
    if !["TCP", "UDP", "SCTP"].contains(&proto) {
        causes.push(
            Cause::new(
                CauseKind::NotSupported,
                format!("{path}.protocol"),
                "supported values: \"SCTP\", \"TCP\", \"UDP\"",
            )
            .with_value(proto),
        );
    }
}

/// Port names: each valid, unique, and present on every port when there are several.
fn check_port_names(ports: &[Value], path: &str, causes: &mut Vec<Cause>) {
    let mut seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let name = p["name"].as_str().unwrap_or("");
        let field = format!("{path}[{i}].name");
        if name.is_empty() {
            if ports.len() > 1 {
                causes.push(Cause::required(field, ""));
            }
        } else if !valid_port_name(name) {
            causes.push(Cause::invalid(
                field,
                name,
                "must be a valid port name (an IANA_SVC_NAME)",
            ));
        } else if !seen.insert(name.to_string()) {
            causes.push(Cause::new(CauseKind::Duplicate, field, "").with_value(name));
        }
    }
}

fn validate_pod(v: &Value, causes: &mut Vec<Cause>) {
    let containers = items(&v["spec"]["containers"]);
    if containers.is_empty() {
        causes.push(Cause::required("spec.containers", ""));
    }
    let mut names = HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let name = c["name"].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(format!("spec.containers[{i}].name"), ""));
        } else if !names.insert(name) {
            causes.push(
                Cause::new(CauseKind::Duplicate, format!("spec.containers[{i}].name"), "").with_value(name),
            );
        }
        if c["image"].as_str().unwrap_or("").is_empty() {
            causes.push(Cause::required(format!("spec.containers[{i}].image"), ""));
        }
    }
}

/// Pod spec fields an update may change; everything else is immutable.
fn pod_spec_mutable_view(spec: &Value) -> Value {
    let mut spec = spec.clone();
    for key in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(key) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                c.remove("image");
            }
        }
    }
    if let Some(m) = spec.as_object_mut() {
        for key in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "schedulingGates",
        ] {
            m.remove(key);
        }
    }
    spec
}

fn validate_pod_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    if pod_spec_mutable_view(&new["spec"]) != pod_spec_mutable_view(&old["spec"]) {
        causes.push(Cause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    let old_tols = items(&old["spec"]["tolerations"]);
    let new_tols = items(&new["spec"]["tolerations"]);
    if old_tols.iter().any(|t| !new_tols.contains(t)) {
        causes.push(Cause::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
}

fn validate_service(v: &Value, causes: &mut Vec<Cause>) {
    let spec = &v["spec"];
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&kind) {
        causes.push(
            Cause::new(
                CauseKind::NotSupported,
                "spec.type",
                "supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            )
            .with_value(kind),
        );
    }
    let ports = items(&spec["ports"]);
    if ports.is_empty() && kind != "ExternalName" && spec["clusterIP"].as_str() != Some("None") {
        causes.push(Cause::required("spec.ports", ""));
    }
    for (i, p) in ports.iter().enumerate() {
        check_port(p, &format!("spec.ports[{i}]"), causes);
    }
    check_port_names(ports, "spec.ports", causes);
    if kind == "ExternalName" && spec["externalName"].as_str().unwrap_or("").is_empty() {
        causes.push(Cause::required("spec.externalName", ""));
    }
}

fn validate_service_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let old_ip = old["spec"]["clusterIP"].as_str().unwrap_or("");
    let new_ip = new["spec"]["clusterIP"].as_str().unwrap_or("");
    let to_external = new["spec"]["type"] == "ExternalName";
    if !old_ip.is_empty() && new_ip != old_ip && !to_external {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            new_ip,
            "may not change once set",
        ));
    }
}

fn validate_endpoints(v: &Value, causes: &mut Vec<Cause>) {
    for (i, subset) in items(&v["subsets"]).iter().enumerate() {
        for key in ["addresses", "notReadyAddresses"] {
            for (j, a) in items(&subset[key]).iter().enumerate() {
                let ip = a["ip"].as_str().unwrap_or("");
                if let Some(problem) = endpoint_ip_problem(ip) {
                    causes.push(Cause::invalid(format!("subsets[{i}].{key}[{j}].ip"), ip, problem));
                }
            }
        }
        let ports = items(&subset["ports"]);
        for (j, p) in ports.iter().enumerate() {
            check_port(p, &format!("subsets[{i}].ports[{j}]"), causes);
        }
        check_port_names(ports, &format!("subsets[{i}].ports"), causes);
    }
}

fn slice_address_problem(address_type: &str, addr: &str) -> Option<&'static str> {
    match address_type {
        "IPv4" if addr.parse::<std::net::Ipv4Addr>().is_err() => Some("must be a valid IPv4 address"),
        "IPv6" if addr.parse::<std::net::Ipv6Addr>().is_err() => Some("must be a valid IPv6 address"),
        "FQDN" if !valid_subdomain(addr) => Some(DNS1123_DETAIL),
        _ => None,
    }
}

fn validate_endpoint_slice(v: &Value, causes: &mut Vec<Cause>) {
    let address_type = v["addressType"].as_str().unwrap_or("");
    if address_type.is_empty() {
        causes.push(Cause::required("addressType", ""));
    } else if !["IPv4", "IPv6", "FQDN"].contains(&address_type) {
        causes.push(
            Cause::new(
                CauseKind::NotSupported,
                "addressType",
                "supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
            )
            .with_value(address_type),
        );
    }
    let endpoints = items(&v["endpoints"]);
    if endpoints.len() > 1000 {
        causes.push(Cause::new(
            CauseKind::TooMany,
            "endpoints",
            "must have at most 1000 items",
        ));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let addrs = items(&e["addresses"]);
        if addrs.is_empty() || addrs.len() > 100 {
            let cause = if addrs.is_empty() {
                Cause::required(
                    format!("endpoints[{i}].addresses"),
                    "must contain at least 1 address",
                )
            } else {
                Cause::new(
                    CauseKind::TooMany,
                    format!("endpoints[{i}].addresses"),
                    "must have at most 100 items",
                )
            };
            causes.push(cause);
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            if let Some(problem) = slice_address_problem(address_type, a) {
                causes.push(Cause::invalid(
                    format!("endpoints[{i}].addresses[{j}]"),
                    a,
                    problem,
                ));
            }
        }
    }
    let ports = items(&v["ports"]);
    if ports.len() > 100 {
        causes.push(Cause::new(
            CauseKind::TooMany,
            "ports",
            "must have at most 100 items",
        ));
    }
    let mut seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let name = p["name"].as_str().unwrap_or("");
        if !name.is_empty() && !valid_port_name(name) {
            causes.push(Cause::invalid(
                format!("ports[{i}].name"),
                name,
                "must be a valid port name",
            ));
        }
        if !seen.insert(name.to_string()) {
            causes.push(Cause::new(CauseKind::Duplicate, format!("ports[{i}].name"), "").with_value(name));
        }
        if let Some(n) = p["port"].as_i64().filter(|n| !(1..=65535).contains(n)) {
            causes.push(Cause::invalid(
                format!("ports[{i}].port"),
                n,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
}

fn validate_event_v1(v: &Value, causes: &mut Vec<Cause>) {
    if v["eventTime"].as_str().unwrap_or("").is_empty() {
        causes.push(Cause::required("eventTime", ""));
    }
    for field in ["reportingController", "reportingInstance", "action", "reason"] {
        if v[field].as_str().unwrap_or("").is_empty() {
            causes.push(Cause::required(field, ""));
        }
    }
    if !v["regarding"].is_object() && !v["involvedObject"].is_object() {
        causes.push(Cause::required("regarding", ""));
    }
}

fn validate_metadata(v: &Value, causes: &mut Vec<Cause>) {
    let meta = &v["metadata"];
    if let Some(labels) = meta["labels"].as_object() {
        for (k, val) in labels {
            let ok_key = k
                .rsplit('/')
                .next()
                .is_some_and(|n| !n.is_empty() && n.len() <= 63);
            let value = val.as_str().unwrap_or("");
            if !ok_key {
                causes.push(Cause::invalid(
                    "metadata.labels",
                    k.as_str(),
                    "name part must be non-empty and no more than 63 characters",
                ));
            }
            if value.len() > 63
                || !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                causes.push(Cause::invalid("metadata.labels", value, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"));
            }
        }
    }
}

/// The field errors of `new` (an update when `old` is given).
pub(crate) fn validate(rt: &ResourceType, new: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate_metadata(new, &mut causes);
    let name = new["metadata"]["name"].as_str().unwrap_or("");
    if old.is_none() && rt.behaviour != Behaviour::CoreEvent && !valid_subdomain(name) {
        causes.push(Cause::invalid("metadata.name", name, DNS1123_DETAIL));
    }
    match rt.behaviour {
        Behaviour::Pod => validate_pod(new, &mut causes),
        Behaviour::Service => validate_service(new, &mut causes),
        Behaviour::Endpoints => validate_endpoints(new, &mut causes),
        Behaviour::EndpointSlice => validate_endpoint_slice(new, &mut causes),
        Behaviour::EventV1 => validate_event_v1(new, &mut causes),
        _ => {}
    }
    if let Some(old) = old {
        validate_update(rt, new, old, &mut causes);
    }
    causes
}

fn validate_update(rt: &ResourceType, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    match rt.behaviour {
        Behaviour::Pod => validate_pod_update(new, old, causes),
        Behaviour::Service => validate_service_update(new, old, causes),
        Behaviour::EndpointSlice if new["addressType"] != old["addressType"] => {
            causes.push(Cause::invalid(
                "addressType",
                new["addressType"].clone(),
                "field is immutable",
            ));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    #[test]
    fn endpoints_reject_loopback_and_bad_ports() {
        let rt = Registry::new().builtin("", "endpoints");
        let ep = json!({"metadata": {"name": "e"}, "subsets": [{
            "addresses": [{"ip": "127.0.0.1"}, {"ip": "10.1.2.3"}, {"ip": "169.254.1.1"}, {"ip": "nope"}],
            "ports": [{"port": 0, "protocol": "TCP"}, {"port": 80}]}]});
        let causes = validate(&rt, &ep, None);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "subsets[0].addresses[0].ip",
                "subsets[0].addresses[2].ip",
                "subsets[0].addresses[3].ip",
                "subsets[0].ports[0].port",
                "subsets[0].ports[0].name",
                "subsets[0].ports[1].name"
            ]
        );
        assert!(
            causes[0]
                .to_string()
                .contains("may not be in the loopback range (127.0.0.0/8)")
        );
    }

    #[test]
    fn endpoint_slices_check_address_type() {
        let rt = Registry::new().builtin("discovery.k8s.io", "endpointslices");
        let ok = json!({"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]});
        assert!(validate(&rt, &ok, None).is_empty());
        let bad = json!({"metadata": {"name": "s"}, "addressType": "IPv6", "endpoints": [{"addresses": ["10.0.0.1"]}]});
        assert_eq!(validate(&rt, &bad, None).len(), 1);
        assert_eq!(
            validate(&rt, &bad, Some(&ok)).len(),
            2,
            "addressType is immutable"
        );
        let missing = json!({"metadata": {"name": "s"}});
        assert_eq!(validate(&rt, &missing, None)[0].field, "addressType");
    }

    #[test]
    fn pod_spec_is_mostly_immutable() {
        let rt = Registry::new().builtin("", "pods");
        let old = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        let mut image = old.clone();
        image["spec"]["containers"][0]["image"] = json!("x:2");
        assert!(validate(&rt, &image, Some(&old)).is_empty());
        let mut node = old.clone();
        node["spec"]["nodeName"] = json!("n1");
        assert_eq!(validate(&rt, &node, Some(&old))[0].field, "spec");
    }
}
