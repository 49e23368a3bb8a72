//! Adopting roster on a live cluster and handing back (issue 17), in the runbook's order: shadow beside the
//! built-in controllers, takeover while they still run, the built-in controllers disabled, and the way back.
//!
//! On the real tier the built-in side is kube-controller-manager 1.20.2's Endpoints, EndpointSlice and
//! mirroring controllers on a dedicated kube-apiserver (slices read through the test environment's v1 facade).
//! On the in-memory tier the test itself plays the built-in EndpointSlice controller, writing slices with its
//! managed-by label, to pin down the takeover and handback rules one at a time.

#[path = "chart/audit.rs"]
mod audit;
#[path = "support/kcm.rs"]
mod kcm;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, PostParams};
use roster_envtest::{TestEnv, Tier, fixtures};
use serde_json::json;

use kcm::Upstream;
use support::credentials::{service_account_token, token_kubeconfig};
use support::*;

const ROSTER_SLICES: &str = "endpointslice-controller.roster.dev";
const UPSTREAM_SLICES: &str = "endpointslice-controller.k8s.io";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const OWNERSHIP_LABEL: &str = "endpoints.roster.dev/managed-by";

/// Services `web`, `api` and `db`, each with an anchor pod (`-0`) that stays ready all along and pods the
/// workload flips and replaces; every pod has an IP of its own, never reused.
const SERVICES: [&str; 3] = ["web", "api", "db"];

fn pod_ip(service_index: usize, generation: usize) -> String {
    format!("10.7.{service_index}.{}", generation + 1)
}

fn three_services(tier: Tier, prefix: &str) -> WorldBuilder {
    let mut world = World::builder(tier, prefix)
        .dedicated()
        .node("n1", Some("zone-a"));
    for (index, service) in SERVICES.iter().enumerate() {
        let labels = [("app", *service)];
        let pods = (0..3)
            .map(|i| PodPlan::new(format!("{service}-{i}"), &labels, pod_ip(index, i)).port("http", 8080));
        world = world
            .service(fixtures::service(service, &labels, &[("http", 80, "http")]))
            .pods(pods);
    }
    world
}

/// kube-controller-manager's path, or `None` (the reason printed) where the real tier or it is missing.
fn builtin_assets() -> Option<PathBuf> {
    if !tier_available(Tier::Real) {
        return None;
    }
    kcm::assets("adoption test").map(|(_, kcm)| kcm)
}

async fn start_builtin(kcm: &Path, env: &TestEnv) -> Upstream {
    Upstream::start(kcm, env.kubeconfig(), &kcm::ENDPOINT_CONTROLLERS).await
}

/// Every slice of a Service, whoever manages it.
async fn all_slices(client: &kube::Client, ns: &str, service: &str) -> Vec<EndpointSlice> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let api = Api::<EndpointSlice>::namespaced(client.clone(), ns);
    api.list(&lp).await.map(|l| l.items).unwrap_or_default()
}

fn managers(slices: &[EndpointSlice]) -> BTreeSet<String> {
    let labels = slices.iter().filter_map(|s| s.metadata.labels.as_ref());
    labels.filter_map(|l| l.get(MANAGED_BY).cloned()).collect()
}

/// Ready IPs of a Service's Endpoints, and of its slices of any manager.
async fn published(client: &kube::Client, ns: &str, service: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let ep = Api::<Endpoints>::namespaced(client.clone(), ns)
        .get_opt(service)
        .await
        .ok()
        .flatten();
    let ready_endpoints = ep.map(|ep| endpoint_ips(&ep).0).unwrap_or_default();
    let ready_slices = slice_endpoints(&all_slices(client, ns, service).await)
        .into_iter()
        .filter(|(_, ready, _, _)| *ready)
        .map(|(ip, ..)| ip);
    (ready_endpoints.into_iter().collect(), ready_slices.collect())
}

/// What the sampler has seen go wrong.
#[derive(Default)]
struct Sample {
    violations: Vec<String>,
    /// IPs of pods whose deletion completed, and when.
    deleted: BTreeMap<String, Instant>,
    /// While set, an address of a pod deleted more than [`GONE_AFTER`] ago must not be published.
    settled: bool,
    reads: usize,
}

/// How long a deleted pod's address may take to leave the published objects.
const GONE_AFTER: Duration = Duration::from_secs(5);

/// Reads every Service's Endpoints and slices every 50 ms: a Service must never have zero ready addresses
/// (its anchor pod is always ready), and while the switch is settled no address of a deleted pod may stay.
fn start_sampler(
    client: kube::Client,
    ns: String,
    sample: Arc<Mutex<Sample>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for service in SERVICES {
                let (endpoints, slices) = published(&client, &ns, service).await;
                check(&mut sample.lock().unwrap(), service, &endpoints, &slices);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn check(sample: &mut Sample, service: &str, endpoints: &BTreeSet<String>, slices: &BTreeSet<String>) {
    sample.reads += 1;
    if endpoints.is_empty() {
        sample
            .violations
            .push(format!("{service}: Endpoints without a ready address"));
    }
    if slices.is_empty() {
        sample
            .violations
            .push(format!("{service}: slices without a ready endpoint"));
    }
    if !sample.settled {
        return;
    }
    let gone = sample.deleted.iter().filter(|(_, at)| at.elapsed() > GONE_AFTER);
    let stale: Vec<String> = gone
        .filter(|(ip, _)| endpoints.contains(*ip) || slices.contains(*ip))
        .map(|(ip, _)| format!("{service}: {ip}, of a deleted pod, still published"))
        .collect();
    sample.violations.extend(stale);
}

/// Flips the non-anchor pods' readiness and replaces one of them (gracefully deleted, a new pod with a new IP)
/// every few rounds, until stopped.
fn start_workload(env: &TestEnv, ns: &str, sample: Arc<Mutex<Sample>>) -> tokio::task::JoinHandle<()> {
    let (client, ns) = (env.client(), ns.to_owned());
    let kubelet = env.kubelet();
    tokio::spawn(async move {
        let mut generation = [3usize; 3];
        let mut live: Vec<Vec<usize>> = vec![vec![1, 2]; 3];
        for round in 0usize.. {
            for (index, service) in SERVICES.iter().enumerate() {
                let pick = live[index][round % live[index].len()];
                let _ = kubelet
                    .set_ready(&ns, &format!("{service}-{pick}"), round % 2 == 0)
                    .await;
                if round % 4 == 3 {
                    let old = live[index].remove(0);
                    replace_pod(
                        &client,
                        &kubelet,
                        &ns,
                        (index, service),
                        old,
                        generation[index],
                        &sample,
                    )
                    .await;
                    live[index].push(generation[index]);
                    generation[index] += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn replace_pod(
    client: &kube::Client,
    kubelet: &roster_envtest::Kubelet,
    ns: &str,
    (index, service): (usize, &str),
    old: usize,
    new: usize,
    sample: &Mutex<Sample>,
) {
    let labels = [("app", service)];
    let pod = PodPlan::new(format!("{service}-{new}"), &labels, pod_ip(index, new)).port("http", 8080);
    start_pod(client, ns, &pod).await;
    let old_name = format!("{service}-{old}");
    kubelet
        .delete_gracefully(ns, &old_name)
        .await
        .expect("graceful delete");
    tokio::time::sleep(Duration::from_millis(300)).await;
    kubelet
        .finish_deletion(ns, &old_name)
        .await
        .expect("final delete");
    sample
        .lock()
        .unwrap()
        .deleted
        .insert(pod_ip(index, old), Instant::now());
}

/// A roster process with the given flags, scoped to `ns`.
async fn roster(env: &TestEnv, ns: &str, args: &[&str]) -> RosterProcess {
    RosterProcess::start(env, ns, args).await
}

/// Waits until every Service's slices are exactly those of `manager`.
async fn wait_slices_only(env: &TestEnv, ns: &str, manager: &str, why: &str) {
    let client = env.client();
    eventually(why, || async {
        let mut all = true;
        for service in SERVICES {
            all &= managers(&all_slices(&client, ns, service).await) == BTreeSet::from([manager.to_owned()]);
        }
        all
    })
    .await;
}

async fn wait_slices_of(env: &TestEnv, ns: &str, manager: &str, why: &str) {
    let client = env.client();
    eventually(why, || async {
        let mut all = true;
        for service in SERVICES {
            all &= managers(&all_slices(&client, ns, service).await).contains(manager);
        }
        all
    })
    .await;
}

/// Waits until every Service's Endpoints publish its ready pods (the built-in controllers are up to date).
async fn wait_published(env: &TestEnv, ns: &str) {
    for (index, service) in SERVICES.iter().enumerate() {
        let ips: Vec<String> = (0..3).map(|i| pod_ip(index, i)).collect();
        wait_ready_ips(env, ns, service, &ips).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_and_handback_never_leave_a_service_without_endpoints() {
    let Some(kcm) = builtin_assets() else { return };
    let World { env, ns } = three_services(Tier::Real, "adopt").build().await;
    let mut builtin = start_builtin(&kcm, &env).await;
    wait_published(&env, &ns).await;
    wait_slices_only(&env, &ns, UPSTREAM_SLICES, "the built-in controller's slices").await;

    // Takeover while the built-in controllers still run: Endpoints adopted in place, without a write.
    let all = roster(&env, &ns, &["--services", "all", "--upstream-quiet", "3s"]).await;
    wait_slices_of(
        &env,
        &ns,
        ROSTER_SLICES,
        "roster's slices beside the built-in ones",
    )
    .await;
    settled_process(&all, SERVICES.len() as u64).await;
    let metrics = all.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "roster_api_writes_total{outcome=\"success\",resource=\"endpoints\",verb=\"update\"}"
        ),
        0.0,
        "Endpoints that are right are adopted as they are"
    );

    let sample = Arc::new(Mutex::new(Sample::default()));
    let sampler = start_sampler(env.client(), ns.clone(), sample.clone());
    let workload = start_workload(&env, &ns, sample.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The built-in controllers disabled: their slices go once they have been quiet for --upstream-quiet.
    drop(builtin);
    wait_slices_only(
        &env,
        &ns,
        ROSTER_SLICES,
        "only roster's slices once the built-ins are gone",
    )
    .await;
    sample.lock().unwrap().settled = true;
    tokio::time::sleep(Duration::from_secs(8)).await;

    // The way back: built-in controllers first, then roster in annotated mode hands the Services back.
    sample.lock().unwrap().settled = false;
    builtin = start_builtin(&kcm, &env).await;
    all.terminate();
    let annotated = roster(
        &env,
        &ns,
        &["--services", "annotated", "--handback-warn-after", "30s"],
    )
    .await;
    wait_slices_only(
        &env,
        &ns,
        UPSTREAM_SLICES,
        "only the built-in slices after the handback",
    )
    .await;
    for service in SERVICES {
        eventually(&format!("{service}'s Endpoints released"), || async {
            let ep = endpoints(&env, &ns, service).await;
            ep.is_some_and(|ep| {
                !ep.metadata
                    .labels
                    .unwrap_or_default()
                    .contains_key(OWNERSHIP_LABEL)
            })
        })
        .await;
    }
    sample.lock().unwrap().settled = true;
    tokio::time::sleep(Duration::from_secs(8)).await;
    workload.abort();
    sampler.abort();
    let sample = sample.lock().unwrap();
    assert!(sample.reads > 100, "the sampler read {} times", sample.reads);
    assert!(
        sample.deleted.len() >= 3,
        "pods were replaced: {:?}",
        sample.deleted
    );
    assert!(
        sample.violations.is_empty(),
        "{:#?}\nbuilt-in controllers:\n{}",
        sample.violations,
        builtin.log_tail(20)
    );
    drop(annotated);
}

/// Waits until a roster process has reconciled `services` keys and its queue is empty.
async fn settled_process(roster: &RosterProcess, services: u64) {
    eventually("roster reconciled everything and its queue is empty", || async {
        let m = roster.metrics().await;
        metric(&m, "roster_reconciles_total{result=\"success\"}") >= services as f64
            && metric(&m, "roster_queue_depth") == 0.0
    })
    .await;
}

/// A read-only ClusterRole for roster's ServiceAccount in shadow mode: any write it tried would be refused
/// and show in the audit log.
async fn read_only_roster(env: &TestEnv, ns: &str, dir: &Path) -> PathBuf {
    let read = json!({"verbs": ["get", "list", "watch"]});
    let rules = json!([
        {"apiGroups": [""], "resources": ["pods", "services", "nodes", "endpoints"], "verbs": read["verbs"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read["verbs"]},
        {"apiGroups": ["roster.dev"], "resources": ["backendsets"], "verbs": read["verbs"]}
    ]);
    let objects = [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "roster-shadow", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": format!("{ns}-shadow")}, "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": format!("{ns}-shadow")},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{ns}-shadow")},
               "subjects": [{"kind": "ServiceAccount", "name": "roster-shadow", "namespace": ns}]}),
    ];
    let client = env.client();
    let [account, role, binding] = objects;
    let account: ServiceAccount = serde_json::from_value(account).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &account)
        .await
        .expect("ServiceAccount");
    let role: ClusterRole = serde_json::from_value(role).unwrap();
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("ClusterRole");
    let binding: ClusterRoleBinding = serde_json::from_value(binding).unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("ClusterRoleBinding");
    let token = service_account_token(&env.client(), ns, "roster-shadow").await;
    token_kubeconfig(dir, "roster-shadow", &env.url(), &token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_beside_the_builtin_controllers_writes_nothing_and_reports_only_real_differences() {
    let Some(kcm) = builtin_assets() else { return };
    let World { env, ns } = three_services(Tier::Real, "shadow").build().await;
    let _builtin = start_builtin(&kcm, &env).await;
    wait_published(&env, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = read_only_roster(&env, &ns, dir.path()).await;
    let shadow = roster(
        &env,
        &ns,
        &[
            "--shadow",
            "true",
            "--shadow-settle",
            "3s",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    )
    .await;

    let sample = Arc::new(Mutex::new(Sample::default()));
    let workload = start_workload(&env, &ns, sample.clone());
    tokio::time::sleep(Duration::from_secs(6)).await;
    workload.abort();
    eventually("every Service compared and the same as what is live", || async {
        let m = shadow.metrics().await;
        metric(&m, "roster_shadow_services{state=\"same\"}") == SERVICES.len() as f64
    })
    .await;
    let m = shadow.metrics().await;
    assert_eq!(
        metric_sum(&m, "roster_shadow_differences_total"),
        0.0,
        "no unexplained difference:\n{m}"
    );

    // An upstream object edited by hand is a difference within seconds.
    let web: Endpoints = Api::<Endpoints>::namespaced(env.client(), &ns)
        .get("web")
        .await
        .unwrap();
    let mut edited = web.clone();
    edited.subsets.as_mut().unwrap()[0]
        .addresses
        .as_mut()
        .unwrap()
        .pop();
    Api::<Endpoints>::namespaced(env.client(), &ns)
        .replace("web", &PostParams::default(), &edited)
        .await
        .unwrap();
    eventually("the hand edit reported", || async {
        let m = shadow.metrics().await;
        metric(&m, "roster_shadow_services{state=\"different\"}") == 1.0
            && metric(&m, "roster_shadow_differences_total{kind=\"address_missing\"}") >= 1.0
    })
    .await;

    let server = env.dedicated_real_server().expect("a dedicated real server");
    let audit = server.lock().await.dir().join("audit.log");
    let user = format!("system:serviceaccount:{ns}:roster-shadow");
    let activity = audit::activity(&audit, &user);
    let writes: Vec<_> = activity
        .requests
        .iter()
        .filter(|((_, _, verb), _)| !["get", "list", "watch"].contains(&verb.as_str()))
        .collect();
    assert!(activity.total() > 0, "roster's requests are in the audit log");
    assert!(
        writes.is_empty(),
        "shadow mode wrote: {writes:?}\n{}",
        activity.summary()
    );
    assert!(activity.forbidden.is_empty(), "{:?}", activity.forbidden);
}

// ---- the in-memory tier: the test plays the built-in EndpointSlice controller ----

/// A slice as the built-in EndpointSlice controller writes it for Service `web` (owned by the Service).
async fn builtin_slice(env: &TestEnv, ns: &str, ips: &[&str]) -> EndpointSlice {
    let svc: Service = Api::namespaced(env.client(), ns).get("web").await.unwrap();
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"generateName": "web-", "labels": {"kubernetes.io/service-name": "web", MANAGED_BY: UPSTREAM_SLICES},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                          "uid": svc.metadata.uid, "controller": true}]},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap();
    create(env, ns, &slice).await
}

async fn web_slice_managers(env: &TestEnv, ns: &str) -> BTreeSet<String> {
    managers(&all_slices(&env.client(), ns, "web").await)
}

async fn warning_event(env: &TestEnv, ns: &str, reason: &str) -> Event {
    let api = Api::<Event>::namespaced(env.client(), ns);
    eventually_some(&format!("a {reason} Event"), || async {
        let events = api.list(&ListParams::default()).await.ok()?.items;
        events.into_iter().find(|e| e.reason.as_deref() == Some(reason))
    })
    .await
}

fn web_world(prefix: &str) -> WorldBuilder {
    let labels = [("app", "web")];
    World::builder(Tier::Memory, prefix)
        .node("n1", Some("zone-a"))
        .service(fixtures::service("web", &labels, &[("http", 80, "http")]))
        .pods((0..2).map(|i| {
            PodPlan::new(format!("web-{i}"), &labels, format!("10.8.0.{}", i + 1)).port("http", 8080)
        }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_keeps_the_builtin_slices_while_the_builtin_controller_writes() {
    let World { env, ns } = web_world("still-running").build().await;
    let left_behind = builtin_slice(&env, &ns, &["10.8.0.1", "10.8.0.2"]).await;
    // Long enough a quiet period that the checks below run while roster still defers to the built-in writer.
    let all = Roster::start(&env, &ns, &["--services", "all", "--upstream-quiet", "10s"]).await;
    // A slice the built-in controller left before roster started goes once roster's own are there.
    eventually("the left-behind built-in slice replaced by roster's", || async {
        web_slice_managers(&env, &ns).await == BTreeSet::from([ROSTER_SLICES.to_owned()])
    })
    .await;
    let slices = all_slices(&env.client(), &ns, "web").await;
    assert!(
        slices
            .iter()
            .all(|s| s.metadata.name != left_behind.metadata.name)
    );

    // The built-in controller writes again: roster leaves its slices, warns and says so in a metric.
    builtin_slice(&env, &ns, &["10.8.0.1", "10.8.0.2"]).await;
    let event = warning_event(&env, &ns, "UpstreamControllerActive").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    eventually("roster_upstream_controllers_active", || async {
        metric(&all.metrics().await, "roster_upstream_controllers_active") == 1.0
    })
    .await;
    assert!(
        web_slice_managers(&env, &ns).await.contains(UPSTREAM_SLICES),
        "kept while the built-in writes"
    );
    // Quiet for --upstream-quiet: roster takes over the rest.
    eventually("the built-in slice retired once quiet", || async {
        web_slice_managers(&env, &ns).await == BTreeSet::from([ROSTER_SLICES.to_owned()])
    })
    .await;
    all.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handback_keeps_rosters_slices_until_the_builtin_controller_has_its_own() {
    let World { env, ns } = web_world("handback").build().await;
    let all = Roster::start(&env, &ns, &["--services", "all"]).await;
    wait_ready_ips(&env, &ns, "web", &["10.8.0.1", "10.8.0.2"]).await;
    eventually("roster's slice", || async {
        web_slice_managers(&env, &ns).await == BTreeSet::from([ROSTER_SLICES.to_owned()])
    })
    .await;
    all.stop().await;

    let annotated = Roster::start(
        &env,
        &ns,
        &["--services", "annotated", "--handback-warn-after", "2s"],
    )
    .await;
    eventually("the Endpoints released, not deleted", || async {
        endpoints(&env, &ns, "web").await.is_some_and(|ep| {
            !ep.metadata
                .labels
                .clone()
                .unwrap_or_default()
                .contains_key(OWNERSHIP_LABEL)
                && endpoint_ips(&ep).0 == ["10.8.0.1", "10.8.0.2"]
        })
    })
    .await;
    let event = warning_event(&env, &ns, "HandBackWaiting").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        web_slice_managers(&env, &ns).await,
        BTreeSet::from([ROSTER_SLICES.to_owned()]),
        "roster's slice stays while no built-in slice exists"
    );
    eventually("roster_handback_waiting_services", || async {
        metric(&annotated.metrics().await, "roster_handback_waiting_services") == 1.0
    })
    .await;
    builtin_slice(&env, &ns, &["10.8.0.1", "10.8.0.2"]).await;
    eventually("roster's slice gone once the built-in one exists", || async {
        web_slice_managers(&env, &ns).await == BTreeSet::from([UPSTREAM_SLICES.to_owned()])
    })
    .await;
    annotated.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_writes_nothing_at_all_on_the_in_memory_tier() {
    let World { env, ns } = web_world("shadow-mem").build().await;
    builtin_slice(&env, &ns, &["10.8.0.1", "10.8.0.2"]).await;
    let server = env.memory_server().unwrap();
    let before = server.request_counts();
    let shadow = Roster::start(
        &env,
        &ns,
        &[
            "--shadow",
            "true",
            "--shadow-settle",
            "1s",
            "--leader-elect",
            "true",
        ],
    )
    .await;
    eventually("web compared: no Endpoints live, so it differs", || async {
        let m = shadow.metrics().await;
        metric(&m, "roster_shadow_services{state=\"different\"}") == 1.0
            && metric(&m, "roster_shadow_differences_total{kind=\"object\"}") >= 1.0
    })
    .await;
    let after = server.request_counts();
    assert_eq!(
        after.total_writes(),
        before.total_writes(),
        "no object, Event or Lease written"
    );
    assert!(endpoints(&env, &ns, "web").await.is_none());
    shadow.stop().await;
}
