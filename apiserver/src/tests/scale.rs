//! The scale load (150,000 pods, 8,100 Services, 500 Nodes) through `create_object`, then served by
//! paginated lists. Ignored by default; run in release mode:
//! `cargo test --release -p roster-envtest --lib memory::tests::scale -- --ignored --nocapture`.

use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};

use super::start;

const NAMESPACES: usize = 50;
const PODS: usize = 150_000;
const SERVICES: usize = 8_100;
const NODES: usize = 500;

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok());
    kib.unwrap_or(0) / 1024
}

/// A bound pod of about 1.5 KB of JSON.
fn pod(i: usize) -> Value {
    json!({
        "metadata": {"name": format!("pod-{i:06}"), "labels": {"app": format!("svc-{}", i % SERVICES), "tier": "backend", "pod-template-hash": "5d8f7c9b6"},
            "annotations": {"kubernetes.io/config.seen": "2024-05-01T10:00:00.000000000Z", "example.com/owner": "team-a",
                "example.com/commit": "4f3c2a1b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("svc-{}-5d8f7c9b6", i % SERVICES),
                "uid": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"nodeName": format!("node-{}", i % NODES), "serviceAccountName": "default",
            "containers": [{"name": "app", "image": "registry.example.com/team/app:1.2.3",
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                "env": [{"name": "MODE", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "DATABASE_URL", "value": "postgres://db.example.svc.cluster.local:5432/app?sslmode=disable"}],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}, {"name": "token", "mountPath": "/var/run/secrets/tokens", "readOnly": true}],
                "livenessProbe": {"httpGet": {"path": "/livez", "port": 8080}, "periodSeconds": 20, "failureThreshold": 3},
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10}}],
            "volumes": [{"name": "config", "configMap": {"name": "app-config"}}, {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}}]},
    })
}

#[derive(Deserialize)]
struct Page {
    metadata: PageMeta,
}

#[derive(Deserialize)]
struct PageMeta {
    #[serde(rename = "continue")]
    continue_: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale benchmark: run in release mode with --ignored --nocapture"]
async fn load_150k_pods() {
    let (server, client) = start().await;
    let base = rss_mib();
    let t = Instant::now();
    for n in 0..NAMESPACES {
        server
            .create_object(
                "/api/v1/namespaces",
                json!({"metadata": {"name": format!("ns-{n}")}}),
            )
            .unwrap();
    }
    for i in 0..NODES {
        server
            .create_object(
                "/api/v1/nodes",
                json!({"metadata": {"name": format!("node-{i}")}}),
            )
            .unwrap();
    }
    for i in 0..SERVICES {
        let svc = json!({"metadata": {"name": format!("svc-{i}")}, "spec": {"selector": {"app": format!("svc-{i}")}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
        server
            .create_object(&format!("/api/v1/namespaces/ns-{}/services", i % NAMESPACES), svc)
            .unwrap();
    }
    let size = serde_json::to_vec(&pod(0)).unwrap().len();
    for i in 0..PODS {
        server
            .create_object(
                &format!("/api/v1/namespaces/ns-{}/pods", (i % SERVICES) % NAMESPACES),
                pod(i),
            )
            .unwrap();
    }
    let loaded = t.elapsed();
    let rss = rss_mib();
    println!(
        "loaded {PODS} pods (~{size} B each before defaults), {SERVICES} services, {NODES} nodes in {loaded:?}; RSS {rss} MiB (+{} MiB)",
        rss - base
    );
    let t = Instant::now();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let path = format!("/api/v1/pods?limit=500&continue={token}");
        let text = client
            .request_text(http::Request::get(path).body(Vec::new()).unwrap())
            .await
            .unwrap();
        pages += 1;
        match serde_json::from_str::<Page>(&text)
            .unwrap()
            .metadata
            .continue_
            .filter(|c| !c.is_empty())
        {
            Some(next) => token = next,
            None => break,
        }
    }
    println!(
        "listed all pods in {pages} pages of 500 in {:?}; RSS {} MiB",
        t.elapsed(),
        rss_mib()
    );
}
