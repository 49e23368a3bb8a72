//! roster's in-memory Kubernetes API server, used by `roster dev` and by the test environment: plain HTTP on 127.0.0.1 for unmodified clients (kube's
//! `Client`, `watcher`, `reflector`, `Controller`, `Recorder`, lease-based leader election, kubectl).
//!
//! Served (JSON only):
//! * core/v1 namespaces, nodes, pods, services (each with `/status`), endpoints, events, configmaps,
//!   secrets, serviceaccounts; events.k8s.io/v1 events (the same storage as core/v1 events, converted);
//!   discovery.k8s.io/v1 endpointslices; coordination.k8s.io/v1 leases; rbac.authorization.k8s.io/v1
//!   roles, rolebindings, clusterroles, clusterrolebindings; apiextensions.k8s.io/v1 CRDs and, once a CRD
//!   is created, its custom resources (pruned, defaulted and validated by the structural schema).
//! * Discovery (`/version`, `/api`, `/apis`, group versions), `/healthz`, `/livez`, `/readyz`, and
//!   `meta.k8s.io` Tables for kubectl (its columns for pods, services, endpoints, endpointslices, nodes,
//!   namespaces, leases, configmaps; NAME/AGE for the rest).
//! * One MVCC store with a global revision; GET, LIST (label and field selectors, `limit`/`continue` on
//!   snapshots, resourceVersion/resourceVersionMatch), WATCH (replay, bookmarks, selector transitions,
//!   in-stream 410, streaming lists), create/update/delete/deletecollection, status subresources, JSON,
//!   merge, strategic-merge and server-side-apply patches, graceful pod deletion, finalizers, namespace
//!   termination, Service IP allocation (and the `kubernetes` Service holding the first address),
//!   `dryRun=All`. Built-in objects are stored as upstream's Go types would round-trip them (no `null`s,
//!   empty lists or empty `omitempty` maps); unknown fields of built-in kinds are kept.
//! * Test hooks: compaction, bookmarks, closing or expiring watches, fault injection, request counters
//!   (including no-op writes) and a request log.
//!
//! Behaviour follows what the conformance suite observed on kube-apiserver 1.20.2 where versions differ
//! (message wording, Status replies to deletions, PUT without resourceVersion refused for Leases and
//! custom resources).
//!
//! Out of scope: authentication and RBAC (any token is accepted), admission webhooks, aggregation,
//! protobuf (kubectl's generators such as `kubectl create configmap` send protobuf and get 415;
//! `kubectl create -f` works), OpenAPI schemas (`/openapi/v2` is an empty document, so kubectl's
//! client-side validation finds no schema and skips itself; `/openapi/v3` is 404), `fieldValidation`,
//! CRD conversion between versions (objects are served as stored, with `apiVersion` rewritten), scale
//! subresources and additionalPrinterColumns, pods/binding, eviction, logs and exec, garbage collection
//! (`propagationPolicy` only adds the `orphan`/`foregroundDeletion` finalizers), a namespace controller
//! beyond removing a deleted namespace's objects (finalizers ignored) after a short delay, and
//! server-side apply beyond a documented subset (see `apply.rs`).

mod apply;
mod builtin;
mod convert;
mod crd;
mod delete;
mod discovery;
mod error;
mod faults;
mod handlers;
mod http;
mod ipalloc;
mod list;
mod patch;
mod registry;
mod request;
mod schema;
mod selectors;
mod services;
mod state;
mod store;
mod strategic;
mod table;
mod validate;
mod watch;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch as signal};
use tokio::task::JoinHandle;

pub use error::StatusError;
pub use faults::{Fault, FaultAction, FaultId, RequestCounts, RequestRecord, Verb};

use faults::{Faults, Telemetry};
use state::State;

#[derive(Clone, Debug)]
pub struct MemoryOptions {
    pub addr: SocketAddr,
    /// Length of the event log watches resume from.
    pub watch_history: usize,
    /// ClusterIP range of Services.
    pub service_cidr: String,
    /// How long a `continue` token stays valid.
    pub continue_ttl: Duration,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            watch_history: 10_000,
            service_cidr: "10.96.0.0/12".into(),
            continue_ttl: Duration::from_secs(300),
        }
    }
}

/// Signals from the test hooks to open watches (counters: a change is the signal).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Control {
    pub bookmarks: u64,
    pub closes: u64,
    pub expires: u64,
}

/// What every request handler shares.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub control: signal::Sender<Control>,
    pub faults: Mutex<Faults>,
    pub telemetry: Telemetry,
}

pub struct MemoryApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MemoryApiServer {
    pub async fn start(opts: MemoryOptions) -> anyhow::Result<Self> {
        let (control, _) = signal::channel(Control::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(&opts)),
            control,
            faults: Mutex::new(Faults::default()),
            telemetry: Telemetry::default(),
        });
        let listener = tokio::net::TcpListener::bind(opts.addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = http::router(shared.clone());
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "in-memory API server stopped with an error");
            }
        });
        Ok(MemoryApiServer {
            shared,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Config` for this server, without credentials.
    pub fn client_config(&self) -> kube::Config {
        kube::Config::new(self.url().parse().expect("the server URL is a valid URI"))
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.client_config())?)
    }

    /// Writes a kubeconfig (cluster, user without credentials, context `memory`) for kubectl.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: memory\n  cluster:\n    server: {}\nusers:\n- name: memory\n  user: {{}}\ncontexts:\n- name: memory\n  context:\n    cluster: memory\n    user: memory\n    namespace: default\ncurrent-context: memory\n",
            self.url()
        );
        std::fs::write(path, text)
    }

    /// Drops all history: watches or exact lists from an older resourceVersion get 410.
    pub fn compact_now(&self) {
        self.shared.state.lock().unwrap().store.compact();
    }

    /// Every open watch that allows bookmarks gets one now.
    pub fn send_bookmarks(&self) {
        self.shared.control.send_modify(|c| c.bookmarks += 1);
    }

    /// Ends every open watch stream cleanly (as an API server restart or timeout would).
    pub fn close_all_watches(&self) {
        self.shared.control.send_modify(|c| c.closes += 1);
    }

    /// Compacts, then ends every open watch with the in-stream 410 `Expired` error, so that every
    /// watching client re-lists.
    pub fn expire_all_watches(&self) {
        self.compact_now();
        self.shared.control.send_modify(|c| c.expires += 1);
    }

    pub fn inject_fault(&self, fault: Fault) -> FaultId {
        self.shared.faults.lock().unwrap().add(fault)
    }

    pub fn remove_fault(&self, id: FaultId) {
        self.shared.faults.lock().unwrap().remove(id);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    pub fn request_counts(&self) -> RequestCounts {
        self.shared.telemetry.counts()
    }

    pub fn reset_request_counts(&self) {
        self.shared.telemetry.reset();
    }

    /// The last 10,000 requests.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.telemetry.log()
    }

    pub fn current_revision(&self) -> u64 {
        self.shared.state.lock().unwrap().store.revision()
    }

    /// Number of stored objects of all types.
    pub fn object_count(&self) -> usize {
        self.shared.state.lock().unwrap().store.len()
    }

    /// Creates an object in-process, through the same logic as a POST to `collection_path`
    /// (e.g. `/api/v1/namespaces/default/pods`).
    pub fn create_object(
        &self,
        collection_path: &str,
        obj: serde_json::Value,
    ) -> Result<serde_json::Value, StatusError> {
        http::create_in_process(&self.shared, collection_path, obj)
    }

    pub async fn shutdown(mut self) {
        self.stop_serving();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    fn stop_serving(&mut self) {
        self.close_all_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for MemoryApiServer {
    fn drop(&mut self) {
        self.stop_serving();
    }
}

/// The discovery cache kubectl should use with `kubeconfig`: beside it, never the shared `~/.kube/cache`,
/// which kubectl keys by host and port only. Test servers come and go on reused ports, so a shared cache
/// can hand kubectl another server's API groups (a 1.20 server's EndpointSlice v1beta1 for one serving v1).
pub fn kubectl_cache_dir(kubeconfig: &Path) -> PathBuf {
    kubeconfig.with_file_name("kube-cache")
}
