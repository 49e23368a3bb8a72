//! Shared by roster's integration tests: run roster in-process against a TestEnv, wait for conditions,
//! and run each test on every available tier.
#![allow(dead_code)]

pub mod credentials;
mod endpoints;
mod world;

// Re-exported for every test target, each of which uses only some of them.
#[allow(unused_imports)]
pub use endpoints::*;
#[allow(unused_imports)]
pub use world::*;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use roster::args::{Cli, Command};
use roster_envtest::memory::RequestCounts;
use roster_envtest::{TestEnv, Tier};
use tokio::sync::oneshot;

/// How long a condition may take to hold before a test fails.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// roster's flags for leader election over a Lease in `default` that expires 3 s after the last renewal
/// (add `--identity` to tell replicas apart).
pub const LEADER_ELECTION: [&str; 8] = [
    "--services",
    "all",
    "--leader-elect",
    "true",
    "--lease-namespace",
    "default",
    "--lease-duration",
    "3s",
];

/// A roster running in this process; stopped (gracefully) on `stop` or drop.
pub struct Roster {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub admin: SocketAddr,
}

impl Roster {
    /// Starts `roster run` with `args` (after `run`), scoped to `namespace`, admin server on a free port.
    pub async fn start(env: &TestEnv, namespace: &str, args: &[&str]) -> Roster {
        // One process per test, no Lease (a test's own --leader-elect comes later and wins).
        let mut argv = vec![
            "roster",
            "run",
            "--leader-elect=false",
            "--namespace",
            namespace,
            "--admin-addr",
            "127.0.0.1:0",
        ];
        argv.extend_from_slice(args);
        let Command::Run(run_args) = Cli::try_parse_from(&argv).expect("valid roster flags").command else {
            unreachable!("run subcommand")
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = oneshot::channel();
        let config = env
            .client_config()
            .await
            .expect("the environment's client config");
        let task = tokio::spawn(async move {
            roster::run::run(
                config,
                run_args,
                async {
                    let _ = stop_rx.await;
                },
                Some(addr_tx),
            )
            .await
        });
        let admin = addr_rx.await.expect("roster bound its admin server");
        let roster = Roster {
            stop: Some(stop_tx),
            task: Some(task),
            admin,
        };
        roster.wait_ready().await;
        roster
    }

    pub async fn wait_ready(&self) {
        eventually("roster /readyz", || async {
            self.get("/readyz").await.is_some_and(|(code, _)| code == 200)
        })
        .await;
    }

    /// GET on the admin server: (status code, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        admin_get(self.admin, path).await
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.expect("metrics answer").1
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("roster task").expect("roster exits cleanly");
        }
    }
}

impl Drop for Roster {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A plain-HTTP GET of an admin endpoint (roster's or kube-controller-manager's), chunked bodies decoded.
pub use roster_envtest::http::get as admin_get;

/// The value of the sample `name` (with labels, exactly as exposed) in Prometheus text, 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The sum of every sample whose name (with labels) starts with `prefix`, in Prometheus text.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every write roster made to the API server, of any resource and verb.
pub fn api_writes(metrics: &str) -> f64 {
    metric_sum(metrics, "roster_api_writes_total")
}

/// The in-memory server counted no write that left an Endpoints or EndpointSlice unchanged.
pub fn assert_no_noop_writes(counts: &RequestCounts) {
    assert_eq!(counts.noop_writes("endpoints"), 0, "no-op Endpoints writes");
    assert_eq!(counts.noop_writes("endpointslices"), 0, "no-op slice writes");
}

/// Waits until `roster` has reconciled at least `services` keys successfully, and then neither queued nor
/// finished a reconcile for half a second (a key being worked on is not in the queue's depth, but it ends
/// with a reconcile counted): its work is done and its writes' watch events have landed.
pub async fn settled(roster: &Roster, services: u64) {
    let sample = || async {
        let m = roster.metrics().await;
        let success = metric(&m, "roster_reconciles_total{result=\"success\"}");
        let idle = metric(&m, "roster_queue_depth") == 0.0;
        (success, idle.then(|| metric_sum(&m, "roster_reconciles_total")))
    };
    let last = std::cell::Cell::new(None);
    eventually("every Service reconciled and nothing left to do", || async {
        let (success, reconciles) = sample().await;
        let quiet = reconciles.is_some() && last.get() == reconciles;
        if !quiet {
            last.set(reconciles);
            tokio::time::sleep(Duration::from_millis(450)).await;
        }
        quiet && success >= services as f64
    })
    .await;
}

/// Polls `cond` until it holds, failing the test after [`CONVERGE`].
pub async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll(what, cond, |held| if held { Ok(()) } else { Err(String::new()) }).await
}

/// Polls until `get` returns `Some`, and returns it.
pub async fn eventually_some<T, F, Fut>(what: &str, get: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, get, |value| value.ok_or_else(String::new)).await
}

/// Polls `get` until its value satisfies `holds`, and returns that value; on timeout the failure shows the
/// last value seen.
pub async fn eventually_value<T, F, Fut>(what: &str, get: F, holds: impl Fn(&T) -> bool) -> T
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let take = |value: T| {
        if holds(&value) {
            Ok(value)
        } else {
            Err(format!("; last seen: {value:?}"))
        }
    };
    poll(what, get, take).await
}

/// Polls `get` until `take` accepts its value, failing the test after [`CONVERGE`] with what `take` said
/// of the last value it refused.
async fn poll<T, R, F, Fut>(what: &str, mut get: F, take: impl Fn(T) -> Result<R, String>) -> R
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let refused = match take(get().await) {
            Ok(accepted) => return accepted,
            Err(refused) => refused,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}{refused}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a test may run on `tier` here; prints why not.
pub fn tier_available(tier: Tier) -> bool {
    let ok = Tier::available().contains(&tier);
    if !ok {
        eprintln!("skipped on the {tier} tier: set KUBEBUILDER_ASSETS (scripts/envtest-assets) to run it");
    }
    ok
}

/// Declares `#[tokio::test]`s `<name>::memory` and `<name>::real` running `body(tier)`.
#[macro_export]
macro_rules! on_both_tiers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(roster_envtest::Tier::Memory).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real() {
                if $crate::support::tier_available(roster_envtest::Tier::Real) {
                    super::$name(roster_envtest::Tier::Real).await
                }
            }
        }
    )*};
}

// ---- object helpers ----

pub async fn create<K>(env: &TestEnv, ns: &str, obj: &K) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(env.client(), ns)
        .create(&PostParams::default(), obj)
        .await
        .expect("create")
}

/// Applies a JSON merge patch to the object `name`.
pub async fn merge_patch<K>(env: &TestEnv, ns: &str, name: &str, patch: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(env.client(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap_or_else(|err| panic!("patching {name}: {err}"))
}

pub async fn endpoints(env: &TestEnv, ns: &str, name: &str) -> Option<Endpoints> {
    Api::<Endpoints>::namespaced(env.client(), ns)
        .get_opt(name)
        .await
        .expect("get endpoints")
}

pub async fn service(env: &TestEnv, ns: &str, name: &str) -> Service {
    Api::<Service>::namespaced(env.client(), ns)
        .get(name)
        .await
        .expect("get service")
}

pub async fn pod(env: &TestEnv, ns: &str, name: &str) -> Pod {
    Api::<Pod>::namespaced(env.client(), ns)
        .get(name)
        .await
        .expect("get pod")
}

pub async fn slices(env: &TestEnv, ns: &str, service: &str) -> Vec<EndpointSlice> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    Api::<EndpointSlice>::namespaced(env.client(), ns)
        .list(&lp)
        .await
        .expect("list slices")
        .items
}

/// The Events of namespace `ns` with `reason`.
pub async fn events_with_reason(env: &TestEnv, ns: &str, reason: &str) -> Vec<Event> {
    let list = Api::<Event>::namespaced(env.client(), ns)
        .list(&ListParams::default())
        .await
        .expect("list events");
    let found = list.items.into_iter();
    found.filter(|e| e.reason.as_deref() == Some(reason)).collect()
}

/// Waits for an Event with `reason` whose note contains `saying`, and returns it.
pub async fn wait_event(env: &TestEnv, ns: &str, reason: &str, saying: &str) -> Event {
    eventually_some(&format!("a {reason} Event saying {saying:?}"), || async {
        let events = events_with_reason(env, ns, reason).await.into_iter();
        events
            .into_iter()
            .find(|e| e.note.as_deref().is_some_and(|n| n.contains(saying)))
    })
    .await
}

/// Ready and not-ready IPs of an Endpoints object, each sorted.
pub fn endpoint_ips(ep: &Endpoints) -> (Vec<String>, Vec<String>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        ready.extend(subset.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(subset.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()));
    }
    ready.sort();
    ready.dedup();
    not_ready.sort();
    not_ready.dedup();
    (ready, not_ready)
}

/// (ip, ready, serving, terminating) of every endpoint in `slices`, sorted.
pub fn slice_endpoints(slices: &[EndpointSlice]) -> Vec<(String, bool, bool, bool)> {
    let mut out: Vec<_> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .flat_map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            let flags = (
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
            );
            e.addresses
                .iter()
                .map(move |a| (a.clone(), flags.0, flags.1, flags.2))
        })
        .collect();
    out.sort();
    out
}

/// roster as a separate process (the built binary), for tests that kill it.
pub struct RosterProcess {
    child: std::process::Child,
    pub admin: SocketAddr,
}

impl RosterProcess {
    pub async fn start(env: &TestEnv, namespace: &str, args: &[&str]) -> RosterProcess {
        let port = roster_envtest::real::free_port().expect("free port");
        let admin: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["run", "--kubeconfig"])
            .arg(env.kubeconfig())
            .args([
                "--leader-elect=false",
                "--namespace",
                namespace,
                "--admin-addr",
                &admin.to_string(),
                "--log-level",
                "warn",
            ])
            .args(args)
            .spawn()
            .expect("starting the roster binary");
        let process = RosterProcess { child, admin };
        eventually("roster process ready", || async {
            admin_get(admin, "/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
        })
        .await;
        process
    }

    pub async fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no Lease release.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("roster exits")
    }
}

impl Drop for RosterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
