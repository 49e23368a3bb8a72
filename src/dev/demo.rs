//! The demo world of `roster dev --demo`, after the seed notes' examples: a web app behind a ClusterIP
//! Service with a named port, a headless Service with hostnames, a Service with session affinity and two
//! named ports, a zone-aware Service (`trafficDistribution: PreferClose`) over pods in two zones, a
//! selectorless Service with hand-made Endpoints, an ExternalName Service, and a BackendSet whose TCP probe
//! checks a listener this process opens on the machine's address. Then it flips a pod's
//! readiness, deletes a pod gracefully, and closes the BackendSet's listener.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::READY_ANNOTATION;
use crate::backendset::BackendSet;

const NS: &str = "demo";

pub async fn run(client: Client) -> anyhow::Result<()> {
    seed(&client).await?;
    let backend = backendset(&client).await?;
    println!("roster dev: demo seeded in namespace '{NS}'; changes follow in a few seconds");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    println!("roster dev: demo: readiness probe of web-1 starts failing (roster.dev/ready=false)");
    let not_ready = json!({"metadata": {"annotations": {READY_ANNOTATION: "false"}}});
    pods.patch("web-1", &PatchParams::default(), &Patch::Merge(not_ready))
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    println!("roster dev: demo: deleting web-2 gracefully (terminating, then gone)");
    pods.delete("web-2", &DeleteParams::default()).await?;
    if let Some(backend) = backend {
        tokio::time::sleep(Duration::from_secs(4)).await;
        println!("roster dev: demo: the payments-db backend stops answering its TCP probe");
        backend.abort();
    }
    Ok(())
}

async fn seed(client: &Client) -> anyhow::Result<()> {
    create_all::<Namespace>(Api::all(client.clone()), vec![json!({"metadata": {"name": NS}})]).await?;
    let nodes = (1..=2).map(|i| json!({"metadata": {"name": format!("node-{i}"), "labels": {"topology.kubernetes.io/zone": format!("zone-{i}")}}}));
    create_all::<Node>(Api::all(client.clone()), nodes.collect()).await?;
    let mut pods: Vec<Value> = (0..3).map(|i| pod(&format!("web-{i}"), "web", i, None)).collect();
    pods.extend((0..2).map(|i| pod(&format!("db-{i}"), "db", i, Some("db"))));
    pods.extend((0..2).map(|i| pod(&format!("api-{i}"), "api", i, None)));
    pods.extend((0..2).map(|i| pod(&format!("checkout-{i}"), "checkout", i, None)));
    create_all::<Pod>(Api::namespaced(client.clone(), NS), pods).await?;
    create_all::<Service>(Api::namespaced(client.clone(), NS), services()).await?;
    let manual = json!({"metadata": {"name": "external-db"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]});
    create_all::<Endpoints>(Api::namespaced(client.clone(), NS), vec![manual]).await
}

/// A selectorless Service whose backend, a listener on this machine's address, a BackendSet probes.
async fn backendset(client: &Client) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(host) = host_address() else {
        println!("roster dev: demo: no non-loopback address on this machine; skipping the BackendSet");
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind((host, 0)).await?;
    let port = listener.local_addr()?.port();
    let backend = tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let svc = json!({"metadata": {"name": "payments-db"}, "spec": {"ports": [{"name": "pg", "port": 5432, "targetPort": "pg"}]}});
    create_all::<Service>(Api::namespaced(client.clone(), NS), vec![svc]).await?;
    let set = json!({"metadata": {"name": "payments-db"}, "spec": {
        "backends": [{"ip": host.to_string(), "ports": {"pg": port}}],
        "readinessProbe": {"tcpSocket": {"port": "pg"}, "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 1}
    }});
    create_all::<BackendSet>(Api::namespaced(client.clone(), NS), vec![set]).await?;
    Ok(Some(backend))
}

/// This machine's address on its default route (no packet is sent to find it).
fn host_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn pod(name: &str, app: &str, i: usize, subdomain: Option<&str>) -> Value {
    let mut spec = json!({
        "nodeName": format!("node-{}", i % 2 + 1),
        "containers": [{"name": app, "image": "registry.k8s.io/pause:3.9", "ports": [
            {"name": "http", "containerPort": 80}, {"name": "metrics", "containerPort": 9090}]}]
    });
    if let Some(sub) = subdomain {
        spec["hostname"] = json!(name);
        spec["subdomain"] = json!(sub);
    }
    json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": spec})
}

fn services() -> Vec<Value> {
    vec![
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}}),
        json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"},
            "ports": [{"name": "http", "port": 80}]}}),
        json!({"metadata": {"name": "api"}, "spec": {"selector": {"app": "api"}, "sessionAffinity": "ClientIP",
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "metrics", "port": 9090, "targetPort": "metrics"}]}}),
        json!({"metadata": {"name": "checkout"}, "spec": {"selector": {"app": "checkout"}, "trafficDistribution": "PreferClose",
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        json!({"metadata": {"name": "external-db"}, "spec": {"ports": [{"port": 5432}]}}),
        json!({"metadata": {"name": "search"}, "spec": {"type": "ExternalName", "externalName": "search.example.com"}}),
    ]
}

async fn create_all<K>(api: Api<K>, objects: Vec<Value>) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    for obj in objects {
        let obj: K = serde_json::from_value(obj)?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
