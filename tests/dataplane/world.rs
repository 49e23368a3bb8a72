//! One test's world on a plane: its Kubernetes namespace, its pods (a sandbox serving the pod's ports plus
//! the Pod object, whose status the test sets as kubelet would), and requests through ClusterIPs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use roster_envtest::dataplane::{Answer, Client, NODE_NAME, Sandbox};
use roster_envtest::{Kubelet, TestEnv};
use serde::de::DeserializeOwned;

use crate::plane::Plane;
use crate::support::CONVERGE;

/// Requests per check: with two pods behind a Service, 40 random picks all missing one has odds of 2^-39.
pub const BATCH: usize = 40;

pub struct World {
    pub env: TestEnv,
    pub ns: String,
    pub plane: &'static Plane,
    pub kubelet: Kubelet,
    pub client: Client,
    pub sandboxes: HashMap<String, Sandbox>,
}

impl World {
    pub async fn new(plane: &'static Plane, prefix: &str) -> World {
        let env = plane.env().await;
        let ns = env.create_namespace(prefix).await.expect("namespace");
        World {
            kubelet: env.kubelet(),
            client: plane.dataplane.client(),
            env,
            ns,
            plane,
            sandboxes: HashMap::new(),
        }
    }

    /// Creates `obj` in this world's namespace.
    pub async fn create<K>(&self, obj: &K) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        crate::support::create(&self.env, &self.ns, obj).await
    }

    /// Creates the Service and returns `ClusterIP:port` for each of its ports, in order.
    pub async fn service(&self, svc: &Service) -> Vec<SocketAddr> {
        let svc = self.create(svc).await;
        let spec = svc.spec.expect("spec");
        let ip = spec.cluster_ip.expect("a ClusterIP");
        let ports = spec.ports.unwrap_or_default();
        ports
            .iter()
            .map(|p| format!("{ip}:{}", p.port).parse().expect("ClusterIP:port"))
            .collect()
    }

    /// A sandbox named `name` serving `ports`, without any Kubernetes object (a backend outside pods).
    pub fn backend(&mut self, name: &str, ports: &[u16]) -> String {
        let sandbox = self.plane.dataplane.sandbox(name).expect("sandbox");
        let ip = sandbox.ip().to_string();
        self.sandboxes.insert(name.to_string(), sandbox);
        for &port in ports {
            self.serve(name, port);
        }
        ip
    }

    /// Starts serving `port` in the sandbox `name`.
    pub fn serve(&mut self, name: &str, port: u16) {
        let sandbox = self.sandboxes.get_mut(name).expect("a sandbox of this world");
        sandbox.serve(port).expect("serve");
    }

    /// A pod whose containers have not started: its sandbox (serving nothing yet) and the Pod object bound to
    /// the plane's Node, Running with the sandbox's IP, not ready.
    pub async fn create_starting_pod(&mut self, mut pod: Pod) -> String {
        let name = pod.metadata.name.clone().expect("pod name");
        pod.spec.as_mut().expect("spec").node_name = Some(NODE_NAME.into());
        let ip = self.backend(&name, &[]);
        self.create(&pod).await;
        self.kubelet
            .start_pod(&self.ns, &name, &[&ip], false)
            .await
            .expect("pod status");
        ip
    }

    /// Runs `pod` as kubelet would: its sandbox serving every container port, Running, ready or not.
    pub async fn run_pod(&mut self, pod: Pod, ready: bool) -> String {
        let name = pod.metadata.name.clone().expect("pod name");
        let ports = container_ports(&pod);
        let ip = self.create_starting_pod(pod).await;
        for port in ports {
            self.serve(&name, port);
        }
        if ready {
            self.set_ready(&name, true).await;
        }
        ip
    }

    pub async fn set_ready(&self, pod: &str, ready: bool) {
        self.kubelet
            .set_ready(&self.ns, pod, ready)
            .await
            .expect("pod readiness");
    }

    /// `n` requests to `addr`: who answered how often, and the failures.
    pub async fn ask(&self, addr: SocketAddr, n: usize) -> Tally {
        let mut tally = Tally::default();
        for result in self.client.ask_many(addr, n).await {
            match result {
                Ok(answer) => *tally.answers.entry(answer).or_default() += 1,
                Err(e) => tally.failures.push(format!("{e:#}")),
            }
        }
        tally
    }

    /// Waits until a batch of requests to `addr` all succeed and are answered by exactly `want`
    /// (sandbox name, port) pairs; returns that batch.
    pub async fn wait_answered_by(&self, addr: SocketAddr, want: &[(&str, u16)]) -> Tally {
        let want: BTreeSet<(String, u16)> = want.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        let deadline = Instant::now() + CONVERGE;
        loop {
            let tally = self.ask(addr, BATCH).await;
            if tally.failures.is_empty() && tally.who() == want {
                return tally;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} is not answered by exactly {want:?} after {CONVERGE:?}; last batch: {tally:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn sandbox(&self, name: &str) -> &Sandbox {
        &self.sandboxes[name]
    }
}

/// Answers of a batch of requests.
#[derive(Debug, Default)]
pub struct Tally {
    pub answers: BTreeMap<Answer, usize>,
    pub failures: Vec<String>,
}

impl Tally {
    /// (name, port) of every answer.
    pub fn who(&self) -> BTreeSet<(String, u16)> {
        self.answers.keys().map(|a| (a.name.clone(), a.port)).collect()
    }
}

fn container_ports(pod: &Pod) -> Vec<u16> {
    let spec = pod.spec.as_ref().expect("spec");
    let ports = spec.containers.iter().flat_map(|c| c.ports.iter().flatten());
    ports.map(|p| p.container_port as u16).collect()
}

/// The objects of kind `K` in the YAML file `examples/<file>` (the seed notes' fixtures).
pub fn example<K: DeserializeOwned>(file: &str, kind: &str) -> Vec<K> {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("YAML documents");
    docs.into_iter()
        .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .map(|v| serde_json::from_value(v).expect("an object of the kind"))
        .collect()
}
