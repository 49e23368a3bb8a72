//! One way to build a test world: a test environment on a tier, a fresh namespace, Nodes, Services, and pods
//! that the stand-in kubelet starts with given IPs and readiness.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use roster_envtest::{Kubelet, TestEnv, Tier, fixtures};

use super::create;

/// How many requests a test sends at once when it sends many (as [`start_pods_in_bulk`] does).
pub const CONCURRENCY: usize = 16;

/// A test environment and the namespace a test works in.
pub struct World {
    pub env: TestEnv,
    pub ns: String,
}

impl World {
    /// A world on `tier` whose namespace name starts with `prefix`.
    pub fn builder(tier: Tier, prefix: &str) -> WorldBuilder {
        WorldBuilder {
            tier,
            dedicated: false,
            prefix: prefix.to_owned(),
            nodes: Vec::new(),
            services: Vec::new(),
            pods: Vec::new(),
        }
    }
}

/// What a world holds before a test starts: created in the order Nodes, Services, pods.
pub struct WorldBuilder {
    tier: Tier,
    dedicated: bool,
    prefix: String,
    nodes: Vec<(String, Option<String>)>,
    services: Vec<Service>,
    pods: Vec<PodPlan>,
}

impl WorldBuilder {
    /// An API server of the world's own, which the test may kill and restart, instead of the test binary's
    /// shared one (the in-memory tier's server is always the world's own).
    pub fn dedicated(mut self) -> Self {
        self.dedicated = true;
        self
    }

    pub fn node(mut self, name: &str, zone: Option<&str>) -> Self {
        self.nodes.push((name.to_owned(), zone.map(str::to_owned)));
        self
    }

    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    pub fn services(mut self, services: impl IntoIterator<Item = Service>) -> Self {
        self.services.extend(services);
        self
    }

    pub fn pods(mut self, pods: impl IntoIterator<Item = PodPlan>) -> Self {
        self.pods.extend(pods);
        self
    }

    pub async fn build(self) -> World {
        let env = match (self.tier, self.dedicated) {
            (Tier::Real, true) => TestEnv::dedicated_real().await,
            (tier, _) => TestEnv::start_tier(tier).await,
        };
        let env = env.expect("test environment");
        let ns = env.create_namespace(&self.prefix).await.expect("namespace");
        for (name, zone) in &self.nodes {
            add_node(&env, name, zone.as_deref()).await;
        }
        for service in &self.services {
            create(&env, &ns, service).await;
        }
        start_pods(&env, &ns, self.pods).await;
        World { env, ns }
    }
}

/// Creates a Ready Node. On the real tier's shared server another test may have created it already.
pub async fn add_node(env: &TestEnv, name: &str, zone: Option<&str>) {
    match env.kubelet().create_node(name, zone).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("creating Node {name}: {err}"),
    }
}

/// A pod to create and start: its labels, the Node it is bound to, its container ports, its IPs (the first
/// is `podIP`) and whether it is ready.
#[derive(Clone, Debug)]
pub struct PodPlan {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub node: String,
    pub ports: Vec<(String, i32)>,
    pub ips: Vec<String>,
    pub ready: bool,
}

impl PodPlan {
    /// A ready pod on Node `n1` with one IP and no container ports.
    pub fn new(name: impl Into<String>, labels: &[(&str, &str)], ip: impl Into<String>) -> PodPlan {
        PodPlan {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            node: "n1".to_owned(),
            ports: Vec::new(),
            ips: vec![ip.into()],
            ready: true,
        }
    }

    pub fn port(mut self, name: &str, container_port: i32) -> Self {
        self.ports.push((name.to_owned(), container_port));
        self
    }

    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }

    pub fn ips(mut self, ips: &[&str]) -> Self {
        self.ips = ips.iter().map(|ip| ip.to_string()).collect();
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    fn object(&self) -> Pod {
        let labels: Vec<(&str, &str)> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let ports: Vec<(&str, i32)> = self.ports.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        fixtures::pod(&self.name, &labels, &self.node, &ports)
    }

    async fn start(&self, kubelet: &Kubelet, ns: &str) {
        let ips: Vec<&str> = self.ips.iter().map(String::as_str).collect();
        kubelet
            .start_pod(ns, &self.name, &ips, self.ready)
            .await
            .unwrap_or_else(|err| panic!("starting pod {}: {err}", self.name));
    }
}

/// Creates `pod` through `client`'s API server and starts it there.
pub async fn start_pod(client: &kube::Client, ns: &str, pod: &PodPlan) {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod.object())
        .await
        .unwrap_or_else(|err| panic!("creating pod {}: {err}", pod.name));
    pod.start(&Kubelet::new(client.clone()), ns).await;
}

/// Creates and starts the pods one after the other, each started before the next is created.
pub async fn start_pods(env: &TestEnv, ns: &str, pods: impl IntoIterator<Item = PodPlan>) {
    for pod in pods {
        start_pod(&env.client(), ns, &pod).await;
    }
}

/// Creates the pods in-process (through the in-memory server's create logic: half the requests of a big
/// world), then starts them through the API, [`CONCURRENCY`] at a time.
pub async fn start_pods_in_bulk(env: &TestEnv, ns: &str, pods: Vec<PodPlan>) {
    let server = env
        .memory_server()
        .expect("pods are created in bulk on the in-memory tier");
    let collection = format!("/api/v1/namespaces/{ns}/pods");
    for pod in &pods {
        server
            .create_object(&collection, serde_json::to_value(pod.object()).unwrap())
            .unwrap_or_else(|err| panic!("creating pod {}: {err:?}", pod.name));
    }
    let kubelet = env.kubelet();
    futures::stream::iter(&pods)
        .map(|pod| pod.start(&kubelet, ns))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

// ---- the world of the fault tests ----

/// Labels of the pods of Service `api`.
pub const API: &[(&str, &str)] = &[("app", "api")];

/// Node `n1` in zone-a, Service `api` (port 80 to container port `http`) and `pods` ready pods `api-<i>`.
pub fn api_world(tier: Tier, prefix: &str, pods: usize) -> WorldBuilder {
    World::builder(tier, prefix)
        .node("n1", Some("zone-a"))
        .service(fixtures::service("api", API, &[("http", 80, "http")]))
        .pods((0..pods).map(|i| api_pod(i, true)))
}

/// Pod `api-<i>` at [`api_ip`]`(i)`, container port `http` 8080.
pub fn api_pod(i: usize, ready: bool) -> PodPlan {
    PodPlan::new(format!("api-{i}"), API, api_ip(i))
        .port("http", 8080)
        .ready(ready)
}

pub fn api_ip(i: usize) -> String {
    format!("10.4.0.{}", i + 1)
}

/// The IPs of pods `api-<i>` for these `i`.
pub fn api_ips(indices: &[usize]) -> Vec<String> {
    indices.iter().map(|i| api_ip(*i)).collect()
}
