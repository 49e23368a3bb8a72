//! The live view of `roster dev`: every Service with its endpoints, ready or not and why, and the zones an
//! address is hinted for when its EndpointSlice carries topology hints. On a terminal it redraws a compact
//! table on change; otherwise it prints plain lines for each Service that changed.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

pub async fn run(client: Client, tty: bool) {
    let (services, s_task) = reflect::<Service>(&client);
    let (endpoints, e_task) = reflect::<Endpoints>(&client);
    let (pods, p_task) = reflect::<Pod>(&client);
    let (slices, _slices_task) = reflect::<EndpointSlice>(&client);
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rows = render(&services, &endpoints, &pods, &slices);
        if rows == shown {
            continue;
        }
        if tty {
            println!("\x1b[2J\x1b[H{:<28} {:<13} ENDPOINTS", "SERVICE", "TYPE");
            rows.values().for_each(|line| println!("{line}"));
        } else {
            rows.iter()
                .filter(|(k, v)| shown.get(*k) != Some(v))
                .for_each(|(_, line)| println!("{line}"));
        }
        shown = rows;
        if s_task.is_finished() || e_task.is_finished() || p_task.is_finished() {
            return;
        }
    }
}

fn reflect<K>(client: &Client) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    (reader, task)
}

fn render(
    services: &Store<Service>,
    endpoints: &Store<Endpoints>,
    pods: &Store<Pod>,
    slices: &Store<EndpointSlice>,
) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    for svc in services.state() {
        let ns = svc.namespace().unwrap_or_default();
        if ns != "default" && ns != "demo" {
            continue;
        }
        let key = format!("{ns}/{}", svc.name_any());
        let type_ = svc
            .spec
            .as_ref()
            .and_then(|s| s.type_.clone())
            .unwrap_or_else(|| "ClusterIP".into());
        let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
        let kind = if headless { "Headless".to_string() } else { type_ };
        let ep = endpoints
            .state()
            .into_iter()
            .find(|e| e.namespace() == svc.namespace() && e.name_any() == svc.name_any());
        let cell = match ep {
            None if kind == "ExternalName" => "none (DNS CNAME only)".to_string(),
            None => "<none>".to_string(),
            Some(ep) => describe(&ep, pods, &hinted_zones(&svc, slices)),
        };
        rows.insert(key.clone(), format!("{key:<28} {kind:<13} {cell}"));
    }
    rows
}

/// Address → the zones its endpoint is hinted for, from the Service's EndpointSlices.
fn hinted_zones(svc: &Service, slices: &Store<EndpointSlice>) -> BTreeMap<String, String> {
    let of_service = slices.state().into_iter().filter(|s| {
        s.namespace() == svc.namespace()
            && s.labels().get("kubernetes.io/service-name") == Some(&svc.name_any())
    });
    let mut zones = BTreeMap::new();
    for slice in of_service {
        for endpoint in &slice.endpoints {
            let hinted = endpoint.hints.iter().flat_map(|h| h.for_zones.iter().flatten());
            let names: Vec<&str> = hinted.map(|z| z.name.as_str()).collect();
            if !names.is_empty() {
                zones.extend(endpoint.addresses.iter().map(|a| (a.clone(), names.join(","))));
            }
        }
    }
    zones
}

fn describe(ep: &Endpoints, pods: &Store<Pod>, hinted: &BTreeMap<String, String>) -> String {
    let mut parts = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<String> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| p.port.to_string())
            .collect();
        let port = if ports.is_empty() {
            String::new()
        } else {
            format!(":{}", ports.join(","))
        };
        for a in subset.addresses.iter().flatten() {
            match hinted.get(&a.ip) {
                Some(zones) => parts.push(format!("{}{port} ready for {zones}", a.ip)),
                None => parts.push(format!("{}{port} ready", a.ip)),
            }
        }
        let probed = ep
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "BackendSet");
        for a in subset.not_ready_addresses.iter().flatten() {
            let why = if probed {
                "BackendSet probe failing".to_string()
            } else {
                why_not_ready(a, pods)
            };
            parts.push(format!("{}{port} NOT ready ({why})", a.ip));
        }
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(", ")
    }
}

fn why_not_ready(address: &EndpointAddress, pods: &Store<Pod>) -> String {
    let Some(target) = &address.target_ref else {
        return "listed not ready by hand".into();
    };
    let pod = pods
        .state()
        .into_iter()
        .find(|p| p.namespace() == target.namespace && Some(p.name_any()) == target.name);
    match pod {
        None => "pod gone".into(),
        Some(p) if p.metadata.deletion_timestamp.is_some() => "terminating".into(),
        Some(p) => {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone()));
            format!(
                "{}: Ready={}",
                p.name_any(),
                ready.unwrap_or_else(|| "unknown".into())
            )
        }
    }
}
