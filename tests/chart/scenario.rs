//! What roster is put through under the chart's permissions: Services of both modes and their pods, readiness
//! changes, clean-ups, warning Events (created, then patched as a series), BackendSets, and the Lease.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use roster::backendset::BackendSet;
use roster_envtest::{TestEnv, fixtures};
use serde_json::{Value, json};

use crate::process::RosterProcess;
use crate::support::{CONVERGE, create, endpoint_ips, endpoints};

pub struct World<'a> {
    env: &'a TestEnv,
    /// The audit log and the user whose 403s explain a wait that timed out.
    audit: std::sync::Mutex<Option<(std::path::PathBuf, String)>>,
}

impl<'a> World<'a> {
    pub fn new(env: &'a TestEnv) -> Self {
        World {
            env,
            audit: Default::default(),
        }
    }

    /// From now on, a wait that times out lists what the API server refused `user` (from `audit_log`).
    pub fn explain_with(&self, audit_log: &std::path::Path, user: &str) {
        *self.audit.lock().unwrap() = Some((audit_log.to_owned(), user.to_owned()));
    }

    /// Polls `cond` until it holds; fails after CONVERGE, with the 403s roster got, if any.
    pub async fn until<F, Fut>(&self, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while !cond().await {
            if tokio::time::Instant::now() > deadline {
                let refused = match &*self.audit.lock().unwrap() {
                    Some((log, user)) => crate::audit::activity(log, user).forbidden.join("\n"),
                    None => String::new(),
                };
                panic!("timed out waiting for: {what}\nrefused by the API server (403):\n{refused}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits until `roster_leader 1`: the replica holds its Lease (created, then patched).
    pub async fn wait_leader(&self, roster: &RosterProcess) {
        self.until("roster holds the Lease", || async {
            roster.metrics().await.lines().any(|l| l == "roster_leader 1")
        })
        .await;
    }

    async fn service(&self, ns: &str, name: &str, metadata: Value, spec: Value) -> Service {
        let mut meta = metadata;
        meta["name"] = json!(name);
        let svc: Service = serde_json::from_value(json!({"metadata": meta, "spec": spec})).unwrap();
        create(self.env, ns, &svc).await
    }

    /// A running pod `name` labelled `app=<app>` with `ip`, Ready.
    async fn pod(&self, ns: &str, name: &str, app: &str, ip: &str, ready: bool) {
        let pod = fixtures::pod(name, &[("app", app)], "node-1", &[("http", 80)]);
        create(self.env, ns, &pod).await;
        self.env
            .kubelet()
            .start_pod(ns, name, &[ip], ready)
            .await
            .expect("start pod");
    }

    async fn wait_ips(&self, ns: &str, name: &str, ready: &[&str], not_ready: &[&str]) {
        let want = (
            ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            not_ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        self.until(&format!("Endpoints {ns}/{name} = {want:?}"), || async {
            endpoints(self.env, ns, name)
                .await
                .is_some_and(|ep| endpoint_ips(&ep) == want)
        })
        .await;
    }

    async fn wait_gone(&self, ns: &str, name: &str) {
        self.until(&format!("Endpoints {ns}/{name} deleted"), || async {
            endpoints(self.env, ns, name).await.is_none()
        })
        .await;
    }

    async fn patch_service(&self, ns: &str, name: &str, patch: Value) {
        Api::<Service>::namespaced(self.env.client(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("patch Service");
    }

    /// services=annotated: Endpoints created, updated and deleted; a warning Event created and patched;
    /// a BackendSet's status patched (once roster runs the BackendSet controller).
    pub async fn annotated_services(&self, backendsets_wired: bool) {
        let ns = self.env.create_namespace("shop").await.unwrap();
        let annotated = json!({"annotations": {"roster.dev/selector": "app=web"}});
        let ports = json!({"ports": [{"name": "http", "port": 8080, "targetPort": 80}]});
        self.service(&ns, "web", annotated, ports.clone()).await;
        self.pod(&ns, "web-0", "web", "10.1.1.10", true).await;
        self.pod(&ns, "web-1", "web", "10.1.1.11", true).await;
        self.wait_ips(&ns, "web", &["10.1.1.10", "10.1.1.11"], &[]).await;
        self.env.kubelet().set_ready(&ns, "web-1", false).await.unwrap();
        self.wait_ips(&ns, "web", &["10.1.1.10"], &["10.1.1.11"]).await;

        let broken = json!({"annotations": {"roster.dev/selector": "app in (web"}});
        self.service(&ns, "broken", broken, ports.clone()).await;
        self.wait_event_series(&ns, "broken", 1).await;
        // Another port, the same broken selector: the same Warning again, counted in the Event's series.
        let again = json!({"spec": {"ports": [{"name": "http", "port": 8081, "targetPort": 80}]}});
        self.patch_service(&ns, "broken", again).await;
        self.wait_event_series(&ns, "broken", 2).await;

        if backendsets_wired {
            self.service(
                &ns,
                "db",
                json!({}),
                json!({"ports": [{"name": "pg", "port": 5432, "targetPort": "pg"}]}),
            )
            .await;
            self.backendset(
                &ns,
                "db",
                json!({"backends": [{"ip": "192.0.2.10", "ports": {"pg": 5432}}]}),
            )
            .await;
            self.wait_backendset_status(&ns, "db").await;
        }

        let drop_annotation = json!({"metadata": {"annotations": {"roster.dev/selector": null}}});
        self.patch_service(&ns, "web", drop_annotation).await;
        self.wait_gone(&ns, "web").await;
    }

    /// services=all: a selected Service's Endpoints created, then deleted with the Service.
    pub async fn all_services(&self) {
        let ns = self.env.create_namespace("shop").await.unwrap();
        self.selected_service(&ns, "api", "10.1.1.20").await;
        Api::<Service>::namespaced(self.env.client(), &ns)
            .delete("api", &DeleteParams::default())
            .await
            .expect("delete Service");
        self.wait_gone(&ns, "api").await;
    }

    /// A Service selecting `app=<name>` with one ready pod at `ip`; waits for its Endpoints.
    pub async fn selected_service(&self, ns: &str, name: &str, ip: &str) {
        let spec =
            json!({"selector": {"app": name}, "ports": [{"name": "http", "port": 8080, "targetPort": 80}]});
        self.service(ns, name, json!({}), spec).await;
        self.pod(ns, &format!("{name}-0"), name, ip, true).await;
        self.wait_ips(ns, name, &[ip], &[]).await;
    }

    /// The pod of `selected_service` turns not ready; waits for the Endpoints to say so.
    pub async fn flip_readiness(&self, ns: &str, name: &str, ip: &str) {
        let pod = format!("{name}-0");
        self.env.kubelet().set_ready(ns, &pod, false).await.unwrap();
        self.wait_ips(ns, name, &[], &[ip]).await;
    }

    /// An annotated Service with a ready pod, in a new namespace; does not wait for anything.
    pub async fn annotated_service_without_waiting(&self, name: &str) {
        let ns = self.env.create_namespace(name).await.unwrap();
        let annotated = json!({"annotations": {"roster.dev/selector": format!("app={name}")}});
        let ports = json!({"ports": [{"name": "http", "port": 8080, "targetPort": 80}]});
        self.service(&ns, name, annotated, ports).await;
        self.pod(&ns, &format!("{name}-0"), name, "10.1.1.30", true).await;
    }

    /// A BackendSet whose backend is probed (TEST-NET-1: the TCP probe fails, and is counted).
    pub async fn probed_backendset(&self, ns: &str, roster: &RosterProcess) {
        self.service(
            ns,
            "db",
            json!({}),
            json!({"ports": [{"name": "pg", "port": 5432, "targetPort": "pg"}]}),
        )
        .await;
        let probe = json!({"tcpSocket": {"port": "pg"}, "periodSeconds": 1, "timeoutSeconds": 1});
        let spec =
            json!({"backends": [{"ip": "192.0.2.10", "ports": {"pg": 5432}}], "readinessProbe": probe});
        self.backendset(ns, "db", spec).await;
        self.until("roster_probes_total and roster_backends in /metrics", || async {
            let m = roster.metrics().await;
            m.contains("roster_probes_total{") && m.contains("roster_backends{")
        })
        .await;
    }

    async fn backendset(&self, ns: &str, name: &str, spec: Value) {
        let bs: BackendSet = serde_json::from_value(json!({
            "apiVersion": "roster.dev/v1alpha1", "kind": "BackendSet",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        create(self.env, ns, &bs).await;
    }

    async fn wait_backendset_status(&self, ns: &str, name: &str) {
        let api = Api::<BackendSet>::namespaced(self.env.client(), ns);
        self.until(&format!("BackendSet {ns}/{name} has a status"), || async {
            api.get(name).await.is_ok_and(|bs| bs.status.is_some())
        })
        .await;
    }

    /// Waits for roster's InvalidSelector Warning about Service `name`, seen `count` times (1: created;
    /// 2: roster patched the Event's series).
    async fn wait_event_series(&self, ns: &str, name: &str, count: i32) {
        let api = Api::<Event>::namespaced(self.env.client(), ns);
        let what = format!("InvalidSelector Event about {ns}/{name} seen {count} time(s)");
        self.until(&what, || async {
            let Ok(list) = api.list(&ListParams::default()).await else {
                return false;
            };
            list.items.iter().any(|e| {
                e.reason.as_deref() == Some("InvalidSelector")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.series.as_ref().map_or(1, |s| s.count) >= count
            })
        })
        .await;
    }
}
