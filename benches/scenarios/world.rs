//! The harness's world: namespaces, Nodes, Services and pods, the model of what each Service's Endpoints
//! must contain, and the kubelet's part (pod IPs, readiness, graceful deletion), played through the API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use roster_envtest::Kubelet;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::observer::{SvcKey, Target};

/// Pod IPs are handed out from 10.128.0.1 upward, never reused, so an IP names one pod for good.
const FIRST_POD_IP: u32 = u32::from_be_bytes([10, 128, 0, 1]);

#[derive(Clone, Debug)]
pub struct PodModel {
    pub ns: usize,
    pub name: String,
    pub app: String,
    pub ip: u32,
    pub ready: bool,
    pub terminating: bool,
    pub alive: bool,
}

#[derive(Clone, Debug)]
pub struct ServiceModel {
    pub ns: usize,
    pub name: String,
    pub app: String,
    pub alive: bool,
}

#[derive(Default)]
pub struct Model {
    pub namespaces: Vec<String>,
    pub nodes: Vec<String>,
    pub pods: Vec<PodModel>,
    pub services: Vec<ServiceModel>,
    /// Pods that exist (terminating ones included) by namespace and `app` label.
    by_app: HashMap<(usize, String), BTreeSet<usize>>,
    next_ip: u32,
}

impl Model {
    pub fn key(&self, svc: usize) -> SvcKey {
        let s = &self.services[svc];
        format!("{}/{}", self.namespaces[s.ns], s.name).into()
    }

    /// The Endpoints content Service `svc` must reach: ready and not-ready IPs of its non-terminating pods.
    pub fn target(&self, svc: usize) -> Target {
        let s = &self.services[svc];
        if !s.alive {
            return Target::Gone;
        }
        let (mut ready, mut not_ready) = (BTreeSet::new(), BTreeSet::new());
        for &p in self.by_app.get(&(s.ns, s.app.clone())).into_iter().flatten() {
            let pod = &self.pods[p];
            if pod.terminating {
                continue;
            }
            if pod.ready {
                ready.insert(pod.ip);
            } else {
                not_ready.insert(pod.ip);
            }
        }
        Target::Content { ready, not_ready }
    }

    /// Targets of every Service the model has ever created.
    pub fn targets(&self) -> HashMap<SvcKey, Target> {
        (0..self.services.len())
            .map(|s| (self.key(s), self.target(s)))
            .collect()
    }

    /// Living pods selected by `app` in namespace `ns`.
    pub fn pods_of(&self, ns: usize, app: &str) -> Vec<usize> {
        self.by_app
            .get(&(ns, app.to_string()))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Services selecting pod `p`.
    pub fn services_of(&self, p: usize) -> Vec<usize> {
        let pod = &self.pods[p];
        (0..self.services.len())
            .filter(|&s| {
                let svc = &self.services[s];
                svc.alive && svc.ns == pod.ns && svc.app == pod.app
            })
            .collect()
    }

    pub fn add_pod(&mut self, ns: usize, app: &str, ready: bool) -> usize {
        let idx = self.pods.len();
        let ip = FIRST_POD_IP + self.next_ip;
        self.next_ip += 1;
        self.pods.push(PodModel {
            ns,
            name: format!("p{idx}"),
            app: app.to_string(),
            ip,
            ready,
            terminating: false,
            alive: true,
        });
        self.by_app.entry((ns, app.to_string())).or_default().insert(idx);
        idx
    }

    pub fn add_service(&mut self, ns: usize, app: &str) -> usize {
        let idx = self.services.len();
        self.services.push(ServiceModel {
            ns,
            name: format!("s{idx}"),
            app: app.to_string(),
            alive: true,
        });
        idx
    }

    /// Moves pod `p` to the pods labelled `app` (same namespace).
    pub fn relabel(&mut self, p: usize, app: &str) {
        let pod = &mut self.pods[p];
        let old = (pod.ns, std::mem::replace(&mut pod.app, app.to_string()));
        let new = (pod.ns, app.to_string());
        if let Some(set) = self.by_app.get_mut(&old) {
            set.remove(&p);
        }
        self.by_app.entry(new).or_default().insert(p);
    }

    pub fn remove_pod(&mut self, p: usize) {
        let pod = &mut self.pods[p];
        pod.alive = false;
        let key = (pod.ns, pod.app.clone());
        if let Some(set) = self.by_app.get_mut(&key) {
            set.remove(&p);
        }
    }
}

pub fn ip_string(ip: u32) -> String {
    Ipv4Addr::from(ip).to_string()
}

/// The world model plus the client that makes it real.
pub struct World {
    pub client: kube::Client,
    pub model: Mutex<Model>,
    /// Pod writes the harness made (each is one pod watch event for the controller).
    pub pod_writes: AtomicU64,
}

impl World {
    pub fn new(client: kube::Client) -> World {
        World {
            client,
            model: Mutex::new(Model::default()),
            pod_writes: AtomicU64::new(0),
        }
    }

    pub fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap()
    }

    pub fn pod_writes(&self) -> u64 {
        self.pod_writes.load(Ordering::Relaxed)
    }

    fn count_pod_writes(&self, n: u64) {
        self.pod_writes.fetch_add(n, Ordering::Relaxed);
    }

    /// Creates `count` namespaces named `<prefix>-<i>` and `nodes` Nodes (once per world).
    pub async fn create_namespaces_and_nodes(
        &self,
        cluster: &Cluster,
        prefix: &str,
        count: usize,
        nodes: usize,
    ) -> anyhow::Result<()> {
        let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
        let node_names: Vec<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
        if let Some(m) = cluster.memory() {
            for n in &names {
                m.create_object("/api/v1/namespaces", json!({"metadata": {"name": n}}))?;
            }
            for n in &node_names {
                m.create_object("/api/v1/nodes", node_json(n))?;
            }
        } else {
            let ns_api = Api::<Namespace>::all(self.client.clone());
            for_each_concurrent(names.clone(), 16, |n| {
                let api = ns_api.clone();
                async move {
                    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": n}}))?;
                    let pp = PostParams::default();
                    retry(|| api.create(&pp, &ns)).await?;
                    Ok(())
                }
            })
            .await?;
            let kubelet = Kubelet::new(self.client.clone());
            for_each_concurrent(node_names.clone(), 16, |n| {
                let k = kubelet.clone();
                async move {
                    retry(|| k.create_node(&n, Some("zone-a"))).await?;
                    Ok(())
                }
            })
            .await?;
        }
        let mut m = self.model();
        m.namespaces.extend(names);
        m.nodes.extend(node_names);
        Ok(())
    }

    /// Creates Services already in the model (by index), `concurrency` at a time.
    pub async fn create_services(
        &self,
        cluster: &Cluster,
        svcs: &[usize],
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let objs: Vec<(String, Value)> = {
            let m = self.model();
            svcs.iter()
                .map(|&s| {
                    let svc = &m.services[s];
                    (m.namespaces[svc.ns].clone(), service_json(&svc.name, &svc.app))
                })
                .collect()
        };
        if let Some(mem) = cluster.memory() {
            for (ns, obj) in objs {
                mem.create_object(&format!("/api/v1/namespaces/{ns}/services"), obj)?;
            }
            return Ok(());
        }
        for_each_concurrent(objs, concurrency, |(ns, obj)| {
            let api = Api::<Service>::namespaced(self.client.clone(), &ns);
            async move {
                let svc: Service = serde_json::from_value(obj)?;
                let pp = PostParams::default();
                retry(|| api.create(&pp, &svc)).await?;
                Ok(())
            }
        })
        .await
    }

    /// Creates pods already in the model and starts them (IP, phase Running, Ready as modelled).
    pub async fn create_pods(
        &self,
        cluster: &Cluster,
        pods: &[usize],
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let objs: Vec<(String, String, String, String, bool)> = {
            let m = self.model();
            pods.iter()
                .map(|&p| {
                    let pod = &m.pods[p];
                    let node = m.nodes[p % m.nodes.len()].clone();
                    (
                        m.namespaces[pod.ns].clone(),
                        pod.name.clone(),
                        pod.app.clone(),
                        node,
                        pod.ready,
                    )
                })
                .collect()
        };
        let ips: HashMap<String, u32> = {
            let m = self.model();
            pods.iter()
                .map(|&p| (m.pods[p].name.clone(), m.pods[p].ip))
                .collect()
        };
        if let Some(mem) = cluster.memory() {
            for (ns, name, app, node, _) in &objs {
                mem.create_object(
                    &format!("/api/v1/namespaces/{ns}/pods"),
                    pod_json(name, app, node),
                )?;
            }
        }
        let memory = cluster.memory().is_some();
        let kubelet = Kubelet::new(self.client.clone());
        for_each_concurrent(objs, concurrency, |(ns, name, app, node, ready)| {
            let k = kubelet.clone();
            let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
            let ip = ip_string(ips[&name]);
            async move {
                if !memory {
                    let pod: Pod = serde_json::from_value(pod_json(&name, &app, &node))?;
                    let pp = PostParams::default();
                    retry(|| api.create(&pp, &pod)).await?;
                }
                let ips = [ip.as_str()];
                retry(|| k.start_pod(&ns, &name, &ips, ready)).await?;
                Ok(())
            }
        })
        .await?;
        self.count_pod_writes(2 * pods.len() as u64);
        Ok(())
    }

    /// Flips pod `p`'s readiness in the API (the model is updated by the caller beforehand).
    pub async fn set_ready(&self, p: usize, ready: bool) -> anyhow::Result<()> {
        let (ns, name) = self.pod_ref(p);
        let kubelet = Kubelet::new(self.client.clone());
        retry(|| kubelet.set_ready(&ns, &name, ready)).await?;
        self.count_pod_writes(1);
        Ok(())
    }

    /// Changes an annotation no controller reads: a pod event that must not change any Endpoints.
    pub async fn touch(&self, p: usize, value: u64) -> anyhow::Result<()> {
        let (ns, name) = self.pod_ref(p);
        let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
        let patch = Patch::Merge(
            json!({"metadata": {"annotations": {"bench.roster.dev/touched": value.to_string()}}}),
        );
        let pp = PatchParams::default();
        retry(|| api.patch(&name, &pp, &patch)).await?;
        self.count_pod_writes(1);
        Ok(())
    }

    /// Sets pod `p`'s `app` label (the model is updated by the caller beforehand).
    pub async fn set_app(&self, p: usize, app: &str) -> anyhow::Result<()> {
        let (ns, name) = self.pod_ref(p);
        let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
        let patch = Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
        let pp = PatchParams::default();
        retry(|| api.patch(&name, &pp, &patch)).await?;
        self.count_pod_writes(1);
        Ok(())
    }

    /// Deletes pod `p` as a user would (it becomes terminating).
    pub async fn delete_gracefully(&self, p: usize) -> anyhow::Result<()> {
        let (ns, name) = self.pod_ref(p);
        let kubelet = Kubelet::new(self.client.clone());
        retry(|| kubelet.delete_gracefully(&ns, &name)).await?;
        self.count_pod_writes(1);
        Ok(())
    }

    /// The kubelet's final delete of a terminating pod.
    pub async fn finish_deletion(&self, p: usize) -> anyhow::Result<()> {
        let (ns, name) = self.pod_ref(p);
        let kubelet = Kubelet::new(self.client.clone());
        retry(|| kubelet.finish_deletion(&ns, &name)).await?;
        self.count_pod_writes(1);
        Ok(())
    }

    pub async fn delete_service(&self, s: usize) -> anyhow::Result<()> {
        let (ns, name) = self.svc_ref(s);
        let api = Api::<Service>::namespaced(self.client.clone(), &ns);
        let dp = DeleteParams::default();
        retry(|| api.delete(&name, &dp)).await?;
        Ok(())
    }

    /// Points Service `s` at pods labelled `app`.
    pub async fn set_selector(&self, s: usize, app: &str) -> anyhow::Result<()> {
        let (ns, name) = self.svc_ref(s);
        let api = Api::<Service>::namespaced(self.client.clone(), &ns);
        let patch = Patch::Merge(json!({"spec": {"selector": {"app": app}}}));
        let pp = PatchParams::default();
        retry(|| api.patch(&name, &pp, &patch)).await?;
        Ok(())
    }

    /// Deletes every Endpoints object in the world's namespaces (between runs, no controller running).
    pub async fn delete_all_endpoints(&self) -> anyhow::Result<()> {
        let namespaces = self.model().namespaces.clone();
        for_each_concurrent(namespaces, 8, |ns| {
            let api = Api::<Endpoints>::namespaced(self.client.clone(), &ns);
            async move {
                let (dp, lp) = (DeleteParams::default(), ListParams::default());
                retry(|| api.delete_collection(&dp, &lp)).await?;
                Ok(())
            }
        })
        .await
    }

    fn pod_ref(&self, p: usize) -> (String, String) {
        let m = self.model();
        (m.namespaces[m.pods[p].ns].clone(), m.pods[p].name.clone())
    }

    fn svc_ref(&self, s: usize) -> (String, String) {
        let m = self.model();
        (m.namespaces[m.services[s].ns].clone(), m.services[s].name.clone())
    }
}

/// Runs `f` over `items`, at most `limit` at a time, stopping at the first error.
pub async fn for_each_concurrent<T, F, Fut>(items: Vec<T>, limit: usize, f: F) -> anyhow::Result<()>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    futures::stream::iter(items)
        .map(f)
        .buffer_unordered(limit.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Retries a harness request on throttling, server errors and transport errors (not on other 4xx).
pub async fn retry<T, F, Fut>(mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let mut delay = Duration::from_millis(50);
    for attempt in 0.. {
        match f().await {
            Ok(v) => return Ok(v),
            Err(kube::Error::Api(e)) if e.code < 500 && e.code != 429 => {
                return Err(kube::Error::Api(e)).context("harness request");
            }
            Err(e) if attempt >= 8 => return Err(e).context("harness request (retried)"),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    unreachable!("the retry loop returns")
}

fn node_json(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "zone-a"}}})
}

/// A ClusterIP Service: port 80 → the pods' named port `http` (8080).
fn service_json(name: &str, app: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"bench": "roster"}},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
    })
}

/// A bound pod of about 1.5 KB of JSON, the shape of a typical Deployment's pod.
fn pod_json(name: &str, app: &str, node: &str) -> Value {
    let labels: BTreeMap<&str, &str> = [("app", app), ("pod-template-hash", "5d8f7c9b6")].into();
    json!({
        "metadata": {"name": name, "labels": labels,
            "annotations": {"example.com/owner": "team-a", "example.com/commit": "4f3c2a1b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
                "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-5d8f7c9b6"),
                "uid": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"nodeName": node,
            "containers": [{"name": "app", "image": "registry.example.com/team/app:1.2.3",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10}}]}
    })
}
