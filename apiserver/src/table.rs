//! Server-side printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), which kubectl asks
//! for: the columns `kubectl get` shows for the common kinds, and NAME/AGE for the others.

use serde_json::{Value, json};

use super::convert::to_view;
use super::registry::{Behaviour, PrinterColumn, ResourceType};

/// Whether the client asked for a `meta.k8s.io` Table (kubectl does; kube never does).
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// What each row carries: `includeObject=None|Metadata|Object` (default Metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(v: Option<&str>) -> Include {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// Upstream's `HumanDuration`: `45s`, `3m20s`, `5h10m`, `3d4h`, `2y30d`.
pub(crate) fn human_duration(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    let pair = |a: i64, ua: &str, b: i64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    match secs {
        s if s < -1 => "<invalid>".into(),
        s if s < 0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        _ if m < 10 => pair(m, "m", secs % 60, "s"),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => pair(h, "h", m % 60, "m"),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => pair(d, "d", h % 24, "h"),
        _ if d < 365 * 2 => format!("{d}d"),
        _ if d < 365 * 8 => pair(d / 365, "y", d % 365, "d"),
        _ => format!("{}y", d / 365),
    }
}

fn age(v: &Value, key: &str) -> String {
    let Some(t) = v["metadata"][key]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    human_duration(jiff::Timestamp::now().duration_since(t).as_secs())
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null | Value::String(_) => "<none>".into(),
        other => other.to_string(),
    }
}

/// `a,b,c + 2 more...` like kubectl's list columns.
fn capped(list: Vec<String>, max: usize) -> String {
    match list.len() {
        0 => "<none>".into(),
        n if n > max => format!("{} + {} more...", list[..max].join(","), n - max),
        _ => list.join(","),
    }
}

fn endpoints_cell(v: &Value) -> String {
    let mut list = Vec::new();
    for subset in items(&v["subsets"]) {
        let addresses: Vec<&str> = items(&subset["addresses"])
            .iter()
            .filter_map(|a| a["ip"].as_str())
            .collect();
        let ports = items(&subset["ports"]);
        if ports.is_empty() {
            list.extend(addresses.iter().map(|a| a.to_string()));
        }
        for p in ports {
            let joined = |a: &&str| {
                if a.contains(':') {
                    format!("[{a}]:{}", p["port"])
                } else {
                    format!("{a}:{}", p["port"])
                }
            };
            list.extend(addresses.iter().map(joined));
        }
    }
    capped(list, 3)
}

fn service_ports(v: &Value) -> String {
    let ports: Vec<String> = items(&v["spec"]["ports"])
        .iter()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

fn pod_cells(v: &Value) -> Vec<Value> {
    let statuses = items(&v["status"]["containerStatuses"]);
    let total = items(&v["spec"]["containers"]).len();
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses.iter().filter_map(|s| s["restartCount"].as_i64()).sum();
    let status = if v["metadata"]["deletionTimestamp"].is_string() {
        "Terminating".to_string()
    } else {
        v["status"]["reason"]
            .as_str()
            .or(v["status"]["phase"].as_str())
            .unwrap_or("Unknown")
            .to_string()
    };
    let gates = items(&v["spec"]["readinessGates"]).len();
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(age(v, "creationTimestamp")),
        json!(text(&v["status"]["podIP"])),
        json!(text(&v["spec"]["nodeName"])),
        json!(text(&v["status"]["nominatedNodeName"])),
        json!(if gates == 0 {
            "<none>".to_string()
        } else {
            format!("0/{gates}")
        }),
    ]
}

fn node_cells(v: &Value) -> Vec<Value> {
    let ready = items(&v["status"]["conditions"])
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"].clone());
    let mut status = match ready.as_ref().and_then(Value::as_str) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if v["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    let version = v["status"]["nodeInfo"]["kubeletVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    vec![
        json!(status),
        json!("<none>"),
        json!(age(v, "creationTimestamp")),
        json!(version),
    ]
}

fn slice_cells(v: &Value) -> Vec<Value> {
    let ports: Vec<String> = items(&v["ports"]).iter().map(|p| text(&p["port"])).collect();
    let ports = if ports.is_empty() {
        "<unset>".to_string()
    } else {
        ports.join(",")
    };
    let addresses: Vec<String> = items(&v["endpoints"])
        .iter()
        .flat_map(|e| items(&e["addresses"]).iter().map(text))
        .collect();
    vec![
        json!(text(&v["addressType"])),
        json!(ports),
        json!(capped(addresses, 3)),
        json!(age(v, "creationTimestamp")),
    ]
}

fn service_cells(v: &Value) -> Vec<Value> {
    let selector: Vec<String> = v["spec"]["selector"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, s)| format!("{k}={}", s.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let external: Vec<String> = items(&v["spec"]["externalIPs"]).iter().map(text).collect();
    vec![
        json!(text(&v["spec"]["type"])),
        json!(text(&v["spec"]["clusterIP"])),
        json!(capped(external, 3)),
        json!(service_ports(v)),
        json!(age(v, "creationTimestamp")),
        json!(capped(selector, usize::MAX)),
    ]
}

fn config_map_cells(v: &Value) -> Vec<Value> {
    let data = v["data"].as_object().map_or(0, |m| m.len());
    let binary = v["binaryData"].as_object().map_or(0, |m| m.len());
    vec![json!(data + binary), json!(age(v, "creationTimestamp"))]
}

fn endpoints_cells(v: &Value) -> Vec<Value> {
    vec![json!(endpoints_cell(v)), json!(age(v, "creationTimestamp"))]
}

fn namespace_cells(v: &Value) -> Vec<Value> {
    vec![
        json!(text(&v["status"]["phase"])),
        json!(age(v, "creationTimestamp")),
    ]
}

fn lease_cells(v: &Value) -> Vec<Value> {
    vec![
        json!(v["spec"]["holderIdentity"].as_str().unwrap_or("")),
        json!(age(v, "creationTimestamp")),
    ]
}

fn crd_cells(v: &Value) -> Vec<Value> {
    vec![json!(v["metadata"]["creationTimestamp"])]
}

fn age_cells(v: &Value) -> Vec<Value> {
    vec![json!(age(v, "creationTimestamp"))]
}

/// A column after Name: (name, type, priority); priority 1 shows only with `-o wide`.
type Column = (&'static str, &'static str, u8);
type Cells = fn(&Value) -> Vec<Value>;

const POD_COLUMNS: &[Column] = &[
    ("Ready", "string", 0),
    ("Status", "string", 0),
    ("Restarts", "integer", 0),
    ("Age", "string", 0),
    ("IP", "string", 1),
    ("Node", "string", 1),
    ("Nominated Node", "string", 1),
    ("Readiness Gates", "string", 1),
];
const SERVICE_COLUMNS: &[Column] = &[
    ("Type", "string", 0),
    ("Cluster-IP", "string", 0),
    ("External-IP", "string", 0),
    ("Port(s)", "string", 0),
    ("Age", "string", 0),
    ("Selector", "string", 1),
];
const SLICE_COLUMNS: &[Column] = &[
    ("AddressType", "string", 0),
    ("Ports", "string", 0),
    ("Endpoints", "string", 0),
    ("Age", "string", 0),
];
const NODE_COLUMNS: &[Column] = &[
    ("Status", "string", 0),
    ("Roles", "string", 0),
    ("Age", "string", 0),
    ("Version", "string", 0),
];

/// The columns after Name, and the cells of an object, as kubectl shows `rt`.
fn printer(rt: &ResourceType) -> (&'static [Column], Cells) {
    match rt.behaviour {
        Behaviour::Pod => (POD_COLUMNS, pod_cells),
        Behaviour::Service => (SERVICE_COLUMNS, service_cells),
        Behaviour::Endpoints => (
            &[("Endpoints", "string", 0), ("Age", "string", 0)],
            endpoints_cells,
        ),
        Behaviour::EndpointSlice => (SLICE_COLUMNS, slice_cells),
        Behaviour::Node => (NODE_COLUMNS, node_cells),
        Behaviour::Namespace => (&[("Status", "string", 0), ("Age", "string", 0)], namespace_cells),
        Behaviour::Lease => (&[("Holder", "string", 0), ("Age", "string", 0)], lease_cells),
        Behaviour::Plain if rt.kind == "ConfigMap" => {
            (&[("Data", "integer", 0), ("Age", "string", 0)], config_map_cells)
        }
        Behaviour::Crd => (&[("Created At", "date", 0)], crd_cells),
        _ => (&[("Age", "string", 0)], age_cells),
    }
}

fn column(name: &str, kind: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
}

fn with_object(mut row: Value, v: &Value, include: Include) -> Value {
    match include {
        Include::None => {}
        Include::Metadata => {
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v["metadata"]});
        }
        Include::Object => row["object"] = v.clone(),
    }
    row
}

fn row(v: &Value, include: Include, cells: Cells) -> Value {
    let mut all = vec![json!(v["metadata"]["name"])];
    all.extend(cells(v));
    with_object(json!({"cells": all}), v, include)
}

/// A Table of `objects` (stored form), with the list metadata `meta`.
pub(crate) fn table(rt: &ResourceType, objects: &[Value], meta: Value, include: Include) -> Value {
    let views: Vec<Value> = objects.iter().map(|v| to_view(rt, v.clone())).collect();
    let custom = rt
        .custom
        .as_ref()
        .map(|c| c.columns.as_slice())
        .filter(|c| !c.is_empty());
    let (defs, rows) = match custom {
        Some(columns) => custom_table(columns, &views, include),
        None => builtin_table(rt, &views, include),
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

fn builtin_table(rt: &ResourceType, views: &[Value], include: Include) -> (Vec<Value>, Vec<Value>) {
    let (columns, cells) = printer(rt);
    let mut defs = vec![column("Name", "string", 0)];
    defs.extend(columns.iter().map(|(n, t, p)| column(n, t, *p)));
    (defs, views.iter().map(|v| row(v, include, cells)).collect())
}

/// The value at a simple JSONPath (`.status.summary`, `.spec.items[0].name`).
fn json_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(v, |v, part| match part.split_once('[') {
            Some((field, index)) => v
                .get(field)?
                .get(index.trim_end_matches(']').parse::<usize>().ok()?),
            None => v.get(part),
        })
}

fn custom_cell(v: &Value, c: &PrinterColumn) -> Value {
    match (json_path(v, &c.json_path), c.kind.as_str()) {
        (Some(Value::String(t)), "date") => match t.parse::<jiff::Timestamp>() {
            Ok(t) => json!(human_duration(jiff::Timestamp::now().duration_since(t).as_secs())),
            Err(_) => json!("<unknown>"),
        },
        (Some(value), _) => value.clone(),
        (None, _) => Value::Null,
    }
}

/// Columns from a CRD's `additionalPrinterColumns`.
fn custom_table(columns: &[PrinterColumn], views: &[Value], include: Include) -> (Vec<Value>, Vec<Value>) {
    let mut defs = vec![column("Name", "string", 0)];
    defs.extend(columns.iter().map(|c| column(&c.name, &c.kind, c.priority)));
    let rows = views
        .iter()
        .map(|v| {
            let mut cells = vec![v["metadata"]["name"].clone()];
            cells.extend(columns.iter().map(|c| custom_cell(v, c)));
            with_object(json!({"cells": cells}), v, include)
        })
        .collect();
    (defs, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn durations_read_like_kubectl() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 120, "3h2m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 3600, "3d1h"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want);
        }
    }

    #[test]
    fn json_paths() {
        let v = json!({"status": {"summary": "2/2", "items": [{"name": "a"}]}});
        assert_eq!(json_path(&v, ".status.summary"), Some(&json!("2/2")));
        assert_eq!(json_path(&v, ".status.items[0].name"), Some(&json!("a")));
        assert_eq!(json_path(&v, ".spec.x"), None);
    }

    #[test]
    fn endpoints_columns() {
        let rt = Registry::new().builtin("", "endpoints");
        let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]});
        let t = table(&rt, &[ep], json!({}), Include::Metadata);
        assert_eq!(t["rows"][0]["cells"][1], "10.0.0.1:80,10.0.0.2:80");
        assert_eq!(t["columnDefinitions"][1]["name"], "Endpoints");
        let many: Vec<Value> = (1..=5).map(|i| json!({"ip": format!("10.0.0.{i}")})).collect();
        let ep =
            json!({"metadata": {"name": "e"}, "subsets": [{"addresses": many, "ports": [{"port": 80}]}]});
        assert_eq!(
            endpoints_cell(&ep),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more..."
        );
    }
}
