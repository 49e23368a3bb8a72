//! The differential check's randomized scenario: a world of Services and pods, evolved by seeded random
//! operations, each applied identically to both API servers.
//!
//! The generator keeps a model of what it created, so the comparison knows which pods are terminal, which
//! Services are ExternalName and which lost their selector (the documented divergences). Selectorless
//! Services come with hand-made Endpoints, which the mirroring controllers turn into slices.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

pub const NODES: [&str; 3] = ["n0", "n1", "n2"];
/// Apps of IPv4 pods; Services select among these (and `tier`).
const APPS: [&str; 4] = ["web", "db", "api", "batch"];
const TIERS: [&str; 2] = ["backend", "frontend"];

/// One write, applied the same way to both servers.
#[derive(Clone, Debug)]
pub enum Op {
    CreateService(Value),
    /// Hand-made Endpoints of a selectorless Service.
    CreateEndpoints(Value),
    CreatePod(Value),
    PodStatus {
        pod: String,
        status: Value,
    },
    PodLabels {
        pod: String,
        labels: Value,
    },
    PatchService {
        svc: String,
        patch: Value,
    },
    DeletePod {
        pod: String,
        force: bool,
    },
    DeleteService(String),
}

impl Op {
    pub async fn apply(&self, client: &kube::Client, ns: &str) -> kube::Result<()> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
        let pp = PatchParams::default();
        match self {
            Op::CreateService(v) => svcs.create(&PostParams::default(), &typed(v)).await.map(drop),
            Op::CreateEndpoints(v) => Api::<Endpoints>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &typed(v))
                .await
                .map(drop),
            Op::CreatePod(v) => pods.create(&PostParams::default(), &typed(v)).await.map(drop),
            Op::PodStatus { pod, status } => pods
                .patch_status(pod, &pp, &Patch::Merge(json!({ "status": status })))
                .await
                .map(drop),
            Op::PodLabels { pod, labels } => pods
                .patch(pod, &pp, &Patch::Merge(json!({"metadata": {"labels": labels}})))
                .await
                .map(drop),
            Op::PatchService { svc, patch } => svcs.patch(svc, &pp, &Patch::Merge(patch)).await.map(drop),
            Op::DeletePod { pod, force } => {
                let dp = if *force {
                    DeleteParams::default().grace_period(0)
                } else {
                    DeleteParams::default()
                };
                pods.delete(pod, &dp).await.map(drop)
            }
            Op::DeleteService(name) => svcs.delete(name, &DeleteParams::default()).await.map(drop),
        }
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).expect("generated objects match the k8s-openapi types")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvcKind {
    ClusterIp,
    Headless,
    ExternalName,
}

#[derive(Clone, Debug)]
pub struct SvcModel {
    pub name: String,
    pub kind: SvcKind,
    pub selector: Option<BTreeMap<String, String>>,
    /// The Service had a selector at some point and lost it (README row F3).
    pub lost_selector: bool,
    pub exists: bool,
    /// The Service has ports (a headless one may have none: README row F20).
    pub has_ports: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    /// Unscheduled, no IP (a pod without a Node never has an IP; see F13 in the test).
    Pending,
    Running,
    Failed,
    Succeeded,
}

#[derive(Clone, Debug)]
pub struct PodModel {
    pub name: String,
    pub app: String,
    pub v6: bool,
    pub phase: PodPhase,
    pub ready: bool,
    pub terminating: bool,
    pub exists: bool,
}

impl PodModel {
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase, PodPhase::Failed | PodPhase::Succeeded)
    }
}

/// The generator: the model and the random source.
pub struct Scenario {
    rng: StdRng,
    pub pods: Vec<PodModel>,
    pub services: Vec<SvcModel>,
    next_ip: u32,
    size: usize,
}

impl Scenario {
    pub fn new(seed: u64, size: usize) -> Scenario {
        Scenario {
            rng: StdRng::seed_from_u64(seed),
            pods: Vec::new(),
            services: Vec::new(),
            next_ip: 10,
            size: size.max(1),
        }
    }

    /// The first round: every Service variant, then pods in every state.
    pub fn populate(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        for variant in 0..VARIANTS {
            ops.extend(self.new_service(variant));
        }
        for _ in 0..self.size.saturating_sub(1) * 4 {
            let variant = self.rng.random_range(0..VARIANTS);
            ops.extend(self.new_service(variant));
        }
        for _ in 0..3 {
            ops.extend(self.new_pod(true));
        }
        for _ in 0..24 * self.size {
            ops.extend(self.new_pod(false));
        }
        ops
    }

    /// A round of `12 × size` random changes.
    pub fn mutate(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        for _ in 0..12 * self.size {
            ops.extend(self.random_change());
        }
        ops
    }

    fn random_change(&mut self) -> Vec<Op> {
        match self.rng.random_range(0..100) {
            0..=24 => self.flip_ready(),
            25..=32 => self.terminate(),
            33..=42 => self.delete_pod(),
            43..=54 => self.relabel(),
            55..=64 => self.new_pod(false),
            65..=72 => self.change_selector(),
            73..=77 => self.toggle_selector(),
            78..=82 => self.toggle_pnra(),
            83..=86 => self.relabel_service(),
            87..=90 => self.retarget(),
            91..=94 => self.delete_service(),
            _ => {
                let variant = self.rng.random_range(0..VARIANTS);
                self.new_service(variant)
            }
        }
    }

    /// A Service of `variant`, and hand-made Endpoints when it has no selector.
    fn new_service(&mut self, variant: usize) -> Vec<Op> {
        let name = format!("{}-{}", VARIANT_NAMES[variant], self.services.len());
        let app = *APPS.choose(&mut self.rng).expect("apps");
        let (kind, selector, spec) = service_variant(variant, app);
        let labels: BTreeMap<String, String> = if self.rng.random_bool(0.5) {
            [("team".to_string(), format!("t{}", self.rng.random_range(0..3)))].into()
        } else {
            BTreeMap::new()
        };
        let hand_made =
            (selector.is_none() && kind != SvcKind::ExternalName).then(|| self.hand_made_endpoints(&name));
        self.services.push(SvcModel {
            name: name.clone(),
            kind,
            selector,
            lost_selector: false,
            exists: true,
            has_ports: spec["ports"].as_array().is_some_and(|p| !p.is_empty()),
        });
        let service = Op::CreateService(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}));
        [service].into_iter().chain(hand_made).collect()
    }

    /// Endpoints as an operator writes them for a selectorless Service: ready and not-ready addresses, a
    /// hostname, a nodeName, a second family (the mirroring controllers make one slice set per family). The
    /// IPv6 address is in canonical text: nobody rewrites hand-made Endpoints, so F16 has nothing to do here.
    fn hand_made_endpoints(&mut self, name: &str) -> Op {
        let (a, b) = (self.next_ip(false), self.next_ip(false));
        let mut ready = vec![json!({"ip": a, "hostname": "hand-made", "nodeName": NODES[0]})];
        if self.rng.random_bool(0.5) {
            let v6: std::net::Ipv6Addr = self.next_ip(true).parse().expect("an IPv6 address");
            ready.push(json!({"ip": v6.to_string()}));
        }
        let subset = json!({"addresses": ready, "notReadyAddresses": [{"ip": b}], "ports": [{"port": 80, "protocol": "TCP"}]});
        Op::CreateEndpoints(json!({"metadata": {"name": name}, "subsets": [subset]}))
    }

    /// A pod in a random state (creation, then the kubelet's status, then maybe a graceful delete).
    /// `v6` pods carry an IPv6 address written non-canonically and are selected only by headless Services.
    fn new_pod(&mut self, v6: bool) -> Vec<Op> {
        let idx = self.pods.len();
        let name = format!("p{idx}");
        let app = if v6 {
            "v6"
        } else {
            *APPS.choose(&mut self.rng).expect("apps")
        }
        .to_string();
        let tier = *TIERS.choose(&mut self.rng).expect("tiers");
        let roll = self.rng.random_range(0..100);
        let phase = match roll {
            0..=9 => PodPhase::Pending,
            10..=79 => PodPhase::Running,
            80..=91 => PodPhase::Failed,
            _ => PodPhase::Succeeded,
        };
        let ready = phase == PodPhase::Running && self.rng.random_bool(0.7);
        let node = (phase != PodPhase::Pending).then(|| *NODES.choose(&mut self.rng).expect("nodes"));
        let spec = self.pod_spec(&name, node);
        // IPv6 pods carry no tier label, so only the IPv6 headless Service selects them.
        let labels = if v6 {
            json!({"app": app})
        } else {
            json!({"app": app, "tier": tier})
        };
        let mut ops = vec![Op::CreatePod(
            json!({"metadata": {"name": name, "labels": labels}, "spec": spec}),
        )];
        if phase != PodPhase::Pending {
            let ip = self.next_ip(v6);
            ops.push(Op::PodStatus {
                pod: name.clone(),
                status: pod_status(phase, ready, Some(&ip)),
            });
        }
        self.pods.push(PodModel {
            name: name.clone(),
            app,
            v6,
            phase,
            ready,
            terminating: false,
            exists: true,
        });
        if phase == PodPhase::Running && self.rng.random_bool(0.1) {
            ops.push(Op::DeletePod {
                pod: name,
                force: false,
            });
            self.pods[idx].terminating = true;
        }
        ops
    }

    fn pod_spec(&mut self, name: &str, node: Option<&str>) -> Value {
        let ports: Vec<Value> = POD_PORTS
            .choose(&mut self.rng)
            .expect("port sets")
            .iter()
            .map(|(n, p, proto)| json!({"name": n, "containerPort": p, "protocol": proto}))
            .collect();
        let restart = *["Always", "Never", "OnFailure"]
            .choose(&mut self.rng)
            .expect("policies");
        let mut spec = json!({
            "restartPolicy": restart,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9", "ports": ports}],
        });
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        if self.rng.random_bool(0.3) {
            let subdomain = self.existing_service_name().unwrap_or_else(|| "none".into());
            spec["hostname"] = json!(format!("h-{name}"));
            spec["subdomain"] = json!(subdomain);
        }
        spec
    }

    fn next_ip(&mut self, v6: bool) -> String {
        self.next_ip += 1;
        let n = self.next_ip;
        if v6 {
            // Upper case and no zero compression: valid, but not the canonical text (README row F16).
            format!("FD00:0:0:0:0:0:0:{n:X}")
        } else {
            format!("10.1.{}.{}", n / 250, n % 250 + 1)
        }
    }

    fn existing_service_name(&mut self) -> Option<String> {
        let names: Vec<&SvcModel> = self.services.iter().filter(|s| s.exists).collect();
        names.choose(&mut self.rng).map(|s| s.name.clone())
    }

    fn pick_pod(&mut self, ok: impl Fn(&PodModel) -> bool) -> Option<usize> {
        let idx: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].exists && ok(&self.pods[i]))
            .collect();
        idx.choose(&mut self.rng).copied()
    }

    fn pick_service(&mut self, ok: impl Fn(&SvcModel) -> bool) -> Option<usize> {
        let idx: Vec<usize> = (0..self.services.len())
            .filter(|&i| self.services[i].exists && ok(&self.services[i]))
            .collect();
        idx.choose(&mut self.rng).copied()
    }

    fn flip_ready(&mut self) -> Vec<Op> {
        let Some(p) = self.pick_pod(|p| p.phase == PodPhase::Running) else {
            return vec![];
        };
        let pod = &mut self.pods[p];
        pod.ready = !pod.ready;
        vec![Op::PodStatus {
            pod: pod.name.clone(),
            status: json!({"conditions": conditions(pod.ready)}),
        }]
    }

    /// The pod's containers exit: Failed or Succeeded, no longer ready (as kubelet reports it).
    fn terminate(&mut self) -> Vec<Op> {
        let Some(p) = self.pick_pod(|p| p.phase == PodPhase::Running && !p.terminating) else {
            return vec![];
        };
        let phase = if self.rng.random_bool(0.7) {
            PodPhase::Failed
        } else {
            PodPhase::Succeeded
        };
        let pod = &mut self.pods[p];
        pod.phase = phase;
        pod.ready = false;
        vec![Op::PodStatus {
            pod: pod.name.clone(),
            status: pod_status(phase, false, None),
        }]
    }

    /// Graceful (a bound pod becomes terminating and stays: no kubelet finishes it) or forced.
    fn delete_pod(&mut self) -> Vec<Op> {
        let Some(p) = self.pick_pod(|_| true) else {
            return vec![];
        };
        let force =
            self.pods[p].terminating || self.pods[p].phase == PodPhase::Pending || self.rng.random_bool(0.4);
        let pod = &mut self.pods[p];
        if force {
            pod.exists = false;
        } else {
            pod.terminating = true;
        }
        vec![Op::DeletePod {
            pod: pod.name.clone(),
            force,
        }]
    }

    fn relabel(&mut self) -> Vec<Op> {
        let Some(p) = self.pick_pod(|p| !p.v6) else {
            return vec![];
        };
        let app = APPS.choose(&mut self.rng).expect("apps").to_string();
        let tier = *TIERS.choose(&mut self.rng).expect("tiers");
        self.pods[p].app = app.clone();
        vec![Op::PodLabels {
            pod: self.pods[p].name.clone(),
            labels: json!({"app": app, "tier": tier}),
        }]
    }

    fn change_selector(&mut self) -> Vec<Op> {
        let Some(s) = self.pick_service(|s| s.selector.is_some() && !s.name.starts_with("hl6")) else {
            return vec![];
        };
        let selector: BTreeMap<String, String> = if self.rng.random_bool(0.8) {
            [(
                "app".into(),
                APPS.choose(&mut self.rng).expect("apps").to_string(),
            )]
            .into()
        } else {
            [(
                "tier".into(),
                TIERS.choose(&mut self.rng).expect("tiers").to_string(),
            )]
            .into()
        };
        // A merge patch merges maps: null out the keys that go away.
        let mut patch = serde_json::Map::new();
        for key in self.services[s].selector.iter().flatten().map(|(k, _)| k) {
            patch.insert(key.clone(), Value::Null);
        }
        for (k, v) in &selector {
            patch.insert(k.clone(), json!(v));
        }
        self.services[s].selector = Some(selector);
        vec![Op::PatchService {
            svc: self.services[s].name.clone(),
            patch: json!({"spec": {"selector": patch}}),
        }]
    }

    /// Removes a Service's selector, or gives a selectorless one a selector.
    fn toggle_selector(&mut self) -> Vec<Op> {
        let Some(s) = self.pick_service(|s| s.kind != SvcKind::ExternalName && !s.name.starts_with("hl6"))
        else {
            return vec![];
        };
        let svc = &mut self.services[s];
        let patch = if svc.selector.is_some() {
            svc.selector = None;
            svc.lost_selector = true;
            json!({"spec": {"selector": null}})
        } else {
            let app = APPS.choose(&mut self.rng).expect("apps").to_string();
            svc.selector = Some([("app".to_string(), app.clone())].into());
            json!({"spec": {"selector": {"app": app}}})
        };
        vec![Op::PatchService {
            svc: svc.name.clone(),
            patch,
        }]
    }

    fn toggle_pnra(&mut self) -> Vec<Op> {
        let Some(s) = self.pick_service(|_| true) else {
            return vec![];
        };
        let on = self.rng.random_bool(0.5);
        vec![Op::PatchService {
            svc: self.services[s].name.clone(),
            patch: json!({"spec": {"publishNotReadyAddresses": on}}),
        }]
    }

    fn relabel_service(&mut self) -> Vec<Op> {
        let Some(s) = self.pick_service(|_| true) else {
            return vec![];
        };
        let team = format!("t{}", self.rng.random_range(0..3));
        let extra = if self.rng.random_bool(0.5) {
            json!("x")
        } else {
            Value::Null
        };
        vec![Op::PatchService {
            svc: self.services[s].name.clone(),
            patch: json!({"metadata": {"labels": {"team": team, "extra": extra}}}),
        }]
    }

    /// Switches a named target port to a number or back.
    fn retarget(&mut self) -> Vec<Op> {
        let Some(s) = self.pick_service(|s| s.kind == SvcKind::ClusterIp && s.name.starts_with("web")) else {
            return vec![];
        };
        let target = if self.rng.random_bool(0.5) {
            json!("http")
        } else {
            json!(9376)
        };
        vec![Op::PatchService {
            svc: self.services[s].name.clone(),
            patch: json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": target, "protocol": "TCP"}]}}),
        }]
    }

    fn delete_service(&mut self) -> Vec<Op> {
        let Some(s) = self.pick_service(|_| true) else {
            return vec![];
        };
        self.services[s].exists = false;
        vec![Op::DeleteService(self.services[s].name.clone())]
    }

    /// Names of pods in a terminal phase (F6).
    pub fn terminal_pods(&self) -> BTreeSet<String> {
        self.pods
            .iter()
            .filter(|p| p.exists && p.is_terminal())
            .map(|p| p.name.clone())
            .collect()
    }
}

const VARIANTS: usize = 11;
const VARIANT_NAMES: [&str; VARIANTS] = [
    "web",
    "webnum",
    "multi",
    "hl",
    "hlnoports",
    "pnra",
    "dns",
    "ext",
    "nosel",
    "api",
    "hl6",
];

/// Container port sets: `http` under two numbers, a UDP and a TCP `dns`, or none.
const POD_PORTS: [&[(&str, i32, &str)]; 5] = [
    &[("http", 8080, "TCP")],
    &[("http", 9376, "TCP")],
    &[("http", 8080, "TCP"), ("dns", 53, "UDP")],
    &[("dns", 53, "TCP")],
    &[],
];

/// (kind, selector, spec) of Service variant `v`.
fn service_variant(v: usize, app: &str) -> (SvcKind, Option<BTreeMap<String, String>>, Value) {
    let sel = |k: &str, v: &str| Some(BTreeMap::from([(k.to_string(), v.to_string())]));
    let http_named = json!({"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"});
    match VARIANT_NAMES[v] {
        "web" => (
            SvcKind::ClusterIp,
            sel("app", app),
            json!({"selector": {"app": app}, "ports": [http_named]}),
        ),
        "webnum" => (
            SvcKind::ClusterIp,
            sel("app", app),
            json!({"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}),
        ),
        "multi" => (
            SvcKind::ClusterIp,
            sel("tier", "backend"),
            json!({"selector": {"tier": "backend"}, "ports": [http_named,
                {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP", "appProtocol": "http"}]}),
        ),
        "hl" => (
            SvcKind::Headless,
            sel("app", app),
            json!({"clusterIP": "None", "selector": {"app": app}, "ports": [http_named]}),
        ),
        "hlnoports" => (
            SvcKind::Headless,
            sel("app", app),
            json!({"clusterIP": "None", "selector": {"app": app}}),
        ),
        "pnra" => (
            SvcKind::ClusterIp,
            sel("app", app),
            json!({"selector": {"app": app}, "publishNotReadyAddresses": true, "ports": [http_named]}),
        ),
        "dns" => (
            SvcKind::ClusterIp,
            sel("app", app),
            json!({"selector": {"app": app}, "ports": [
                {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "targetPort": "dns", "protocol": "TCP"}]}),
        ),
        "ext" => (
            SvcKind::ExternalName,
            sel("app", app),
            json!({"type": "ExternalName", "externalName": "db.example.com", "selector": {"app": app},
                "ports": [{"port": 80}]}),
        ),
        "nosel" => (SvcKind::ClusterIp, None, json!({"ports": [{"port": 80}]})),
        "api" => (
            SvcKind::ClusterIp,
            Some(BTreeMap::from([
                ("app".to_string(), app.to_string()),
                ("tier".to_string(), "backend".to_string()),
            ])),
            json!({"selector": {"app": app, "tier": "backend"}, "ports": [http_named]}),
        ),
        _ => (
            SvcKind::Headless,
            sel("app", "v6"),
            json!({"clusterIP": "None", "selector": {"app": "v6"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
        ),
    }
}

fn conditions(ready: bool) -> Value {
    let status = if ready { "True" } else { "False" };
    json!([
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": status},
        {"type": "Ready", "status": status},
        {"type": "PodScheduled", "status": "True"}
    ])
}

fn pod_status(phase: PodPhase, ready: bool, ip: Option<&str>) -> Value {
    let phase = match phase {
        PodPhase::Pending => "Pending",
        PodPhase::Running => "Running",
        PodPhase::Failed => "Failed",
        PodPhase::Succeeded => "Succeeded",
    };
    let mut status = json!({"phase": phase, "conditions": conditions(ready)});
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    status
}
