//! `roster explain` (issue 25) on both tiers, one test per cause: each test breaks a Service in one way, runs
//! roster, waits until the explanation names the cause and roster's objects hold what explain computes, and
//! then checks every pod's verdict against the Endpoints and EndpointSlices roster wrote.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use roster::desired::Exclusion;
use roster::explain::{Outcome, Placement, Report, SlicePlacement, Source, Verdict, Who};
use roster_envtest::{Tier, fixtures};
use serde_json::json;
use support::*;

const WEB: &[(&str, &str)] = &[("app", "web"), ("tier", "front")];

/// Service `web`: port 80 to the container port named `http`, selecting [`WEB`].
fn web_service() -> Service {
    fixtures::service("web", WEB, &[("http", 80, "http")])
}

/// Pod `name` of [`WEB`] at `ip` on Node `n1`, ready, with container port `http` 8080.
fn web_pod(name: &str, ip: &str) -> PodPlan {
    PodPlan::new(name, WEB, ip).port("http", 8080)
}

/// A world with Node `n1`, these Services and pods, and roster running (`--services=all`).
async fn world(tier: Tier, prefix: &str, services: Vec<Service>, pods: Vec<PodPlan>) -> (World, Roster) {
    let world = World::builder(tier, prefix)
        .node("n1", Some("zone-a"))
        .services(services)
        .pods(pods)
        .build()
        .await;
    let roster = Roster::start(&world.env, &world.ns, &["--services", "all"]).await;
    (world, roster)
}

async fn explain(world: &World, service: &str) -> Report {
    roster::explain::explain_service(&world.env.client(), &world.ns, service)
        .await
        .expect("explain reads the Service")
}

/// The explanation once it satisfies `holds` and the live objects hold what roster computes, checked
/// against the Endpoints and EndpointSlices roster wrote.
async fn explained(world: &World, service: &str, what: &str, holds: impl Fn(&Report) -> bool) -> Report {
    let report = eventually_value(
        &format!("{service}: {what}, and no drift"),
        || explain(world, service),
        |r| r.drift.unexplained() == 0 && holds(r),
    )
    .await;
    let live = endpoints(&world.env, &world.ns, service).await;
    assert_agrees(
        &report,
        live.as_ref(),
        &slices(&world.env, &world.ns, service).await,
    );
    report
}

/// The verdict of pod `name`.
fn verdict(report: &Report, name: &str) -> Option<Verdict> {
    report.pods.iter().find(|p| p.name == name).map(|p| p.verdict)
}

/// Every selected pod is where explain says in the live Endpoints (true: ready) and EndpointSlices, and the
/// live objects list no pod explain does not place there.
fn assert_agrees(report: &Report, endpoints: Option<&Endpoints>, slices: &[EndpointSlice]) {
    let in_endpoints = endpoints_by_pod(endpoints);
    let in_slices = slices_by_pod(slices);
    for pod in &report.pods {
        let want = match pod.endpoints {
            Placement::Addresses => Some(true),
            Placement::NotReadyAddresses => Some(false),
            Placement::Truncated | Placement::Absent { .. } => None,
        };
        assert_eq!(
            in_endpoints.get(&pod.name).copied(),
            want,
            "{} in the Endpoints",
            pod.name
        );
        let want = match pod.slices {
            SlicePlacement::Endpoint {
                ready,
                serving,
                terminating,
            } => Some((ready, serving, terminating)),
            SlicePlacement::Absent { .. } => None,
        };
        assert_eq!(
            in_slices.get(&pod.name).copied(),
            want,
            "{} in the EndpointSlices",
            pod.name
        );
    }
    let explained = |name: &String| report.pods.iter().any(|p| p.name == *name);
    assert!(
        in_endpoints.keys().all(explained),
        "{in_endpoints:?} vs {:?}",
        report.pods
    );
    assert!(
        in_slices.keys().all(explained),
        "{in_slices:?} vs {:?}",
        report.pods
    );
}

/// Pod name → ready, by `targetRef` (hand-made addresses name no pod).
fn endpoints_by_pod(endpoints: Option<&Endpoints>) -> BTreeMap<String, bool> {
    let mut pods = BTreeMap::new();
    for subset in endpoints.and_then(|ep| ep.subsets.as_ref()).into_iter().flatten() {
        let listed = [(true, &subset.addresses), (false, &subset.not_ready_addresses)];
        for (ready, addresses) in listed {
            let targets = addresses
                .iter()
                .flatten()
                .filter_map(|a| a.target_ref.as_ref()?.name.clone());
            pods.extend(targets.map(|name| (name, ready)));
        }
    }
    pods
}

/// Pod name → (ready, serving, terminating), by `targetRef`.
fn slices_by_pod(slices: &[EndpointSlice]) -> BTreeMap<String, (bool, bool, bool)> {
    let endpoints = slices.iter().flat_map(|s| &s.endpoints);
    let by_pod = endpoints.filter_map(|e| {
        let name = e.target_ref.as_ref()?.name.clone()?;
        let c = e.conditions.clone().unwrap_or_default();
        let flag = |f: Option<bool>| f.unwrap_or(false);
        Some((name, (flag(c.ready), flag(c.serving), flag(c.terminating))))
    });
    by_pod.collect()
}

async fn label_mismatch_is_a_near_miss(tier: Tier) {
    let pods = vec![
        web_pod("web-0", "10.25.0.1"),
        PodPlan::new("web-1", &[("app", "web"), ("tier", "back")], "10.25.0.2").port("http", 8080),
    ];
    let (world, roster) = world(tier, "explain-labels", vec![web_service()], pods).await;
    let report = explained(&world, "web", "web-0 ready", |r| {
        verdict(r, "web-0") == Some(Verdict::Ready)
    })
    .await;
    assert_eq!(report.pods.len(), 1, "only web-0 is selected: {:?}", report.pods);
    let miss = &report.near_misses[0];
    assert_eq!(
        (
            miss.name.as_str(),
            miss.requirement.as_str(),
            miss.label.as_deref()
        ),
        ("web-1", "tier=front", Some("tier=back"))
    );
    assert_eq!((report.outcome, report.exit_code), (Outcome::Healthy, 0));
    roster.stop().await;
}

async fn not_ready_pods_are_named_with_their_condition(tier: Tier) {
    let pods = vec![
        web_pod("web-0", "10.25.0.1"),
        web_pod("web-1", "10.25.0.2").ready(false),
    ];
    let (world, roster) = world(tier, "explain-notready", vec![web_service()], pods).await;
    let report = explained(&world, "web", "web-1 not ready", |r| {
        verdict(r, "web-1") == Some(Verdict::NotReady)
    })
    .await;
    let web1 = &report.pods[1];
    assert_eq!(web1.endpoints, Placement::NotReadyAddresses);
    assert!(web1.why[0].starts_with("not Ready for "), "{:?}", web1.why);
    assert!(
        web1.ready_since.is_some(),
        "the Ready condition's transition time"
    );
    assert_eq!(report.ready_endpoints, 1);

    world
        .env
        .kubelet()
        .set_ready(&world.ns, "web-0", false)
        .await
        .unwrap();
    let report = explained(&world, "web", "no pod ready", |r| r.ready_endpoints == 0).await;
    assert_eq!((report.outcome, report.exit_code), (Outcome::NoReadyEndpoints, 3));
    roster.stop().await;
}

/// Deletes `web-1` gracefully: it stays, terminating (no kubelet finishes the deletion).
async fn terminating(tier: Tier, pnra: bool) -> (World, Roster, Report) {
    let mut service = web_service();
    service.spec.as_mut().unwrap().publish_not_ready_addresses = Some(pnra);
    let pods = vec![web_pod("web-0", "10.25.0.1"), web_pod("web-1", "10.25.0.2")];
    let (world, roster) = world(tier, "explain-terminating", vec![service], pods).await;
    explained(&world, "web", "both ready", |r| r.ready_endpoints == 2).await;
    world
        .env
        .kubelet()
        .delete_gracefully(&world.ns, "web-1")
        .await
        .unwrap();
    let report = explained(&world, "web", "web-1 terminating", |r| {
        verdict(r, "web-1") == Some(Verdict::Terminating)
    })
    .await;
    (world, roster, report)
}

async fn terminating_pods_leave_the_endpoints(tier: Tier) {
    let (_world, roster, report) = terminating(tier, false).await;
    let web1 = &report.pods[1];
    assert_eq!(
        (web1.endpoints, web1.slices),
        (
            Placement::Absent {
                why: Exclusion::Terminating
            },
            SlicePlacement::Endpoint {
                ready: false,
                serving: true,
                terminating: true
            }
        )
    );
    assert!(
        web1.why[0].starts_with("terminating (being deleted)"),
        "{:?}",
        web1.why
    );
    roster.stop().await;
}

async fn terminating_pods_stay_with_publish_not_ready_addresses(tier: Tier) {
    let (_world, roster, report) = terminating(tier, true).await;
    let web1 = &report.pods[1];
    assert_eq!(
        (web1.endpoints, web1.slices),
        (
            Placement::Addresses,
            SlicePlacement::Endpoint {
                ready: true,
                serving: true,
                terminating: true
            }
        )
    );
    assert!(web1.why[0].contains("publishNotReadyAddresses"), "{:?}", web1.why);
    roster.stop().await;
}

async fn finished_pods_never_serve(tier: Tier) {
    let pods = vec![
        web_pod("web-0", "10.25.0.1"),
        web_pod("web-1", "10.25.0.2"),
        web_pod("web-2", "10.25.0.3"),
    ];
    let (world, roster) = world(tier, "explain-phase", vec![web_service()], pods).await;
    let kubelet = world.env.kubelet();
    kubelet.set_phase(&world.ns, "web-1", "Succeeded").await.unwrap();
    kubelet.set_phase(&world.ns, "web-2", "Failed").await.unwrap();
    let report = explained(&world, "web", "web-1 and web-2 finished", |r| {
        verdict(r, "web-1") == Some(Verdict::Terminal) && verdict(r, "web-2") == Some(Verdict::Terminal)
    })
    .await;
    assert_eq!(
        report.pods[1].why[0],
        "phase Succeeded: a finished pod never serves again"
    );
    assert_eq!(
        report.pods[2].why[0],
        "phase Failed: a finished pod never serves again"
    );
    assert_eq!(report.ready_endpoints, 1);
    roster.stop().await;
}

async fn pods_without_an_ip_are_not_started(tier: Tier) {
    let pods = vec![web_pod("web-0", "10.25.0.1"), web_pod("web-1", "unused").ips(&[])];
    let (world, roster) = world(tier, "explain-noip", vec![web_service()], pods).await;
    let report = explained(&world, "web", "web-1 without an IP", |r| {
        verdict(r, "web-1") == Some(Verdict::NoIp)
    })
    .await;
    let web1 = &report.pods[1];
    assert_eq!(web1.endpoints, Placement::Absent { why: Exclusion::NoIp });
    assert_eq!(web1.why[0], "no IP yet: the pod has not started on Node n1");
    roster.stop().await;
}

async fn an_unresolvable_named_port_lists_the_pods_ports(tier: Tier) {
    let pods = vec![
        web_pod("web-0", "10.25.0.1"),
        PodPlan::new("web-1", WEB, "10.25.0.2").port("web", 9090),
    ];
    let (world, roster) = world(tier, "explain-port", vec![web_service()], pods).await;
    let report = explained(&world, "web", "web-1 without port http", |r| {
        verdict(r, "web-1") == Some(Verdict::NoPort)
    })
    .await;
    let web1 = &report.pods[1];
    assert_eq!(web1.ports[0].resolved, None);
    assert_eq!(
        web1.why[1],
        "targetPort http (TCP) of Service port http (80) is not a container port of this pod; its named \
         container ports: web:9090/TCP"
    );
    roster.stop().await;
}

async fn a_missing_node_keeps_the_pod_out_of_the_slices(tier: Tier) {
    let mut ghost = web_pod("web-1", "10.25.0.2");
    ghost.node = "explain-ghost-node".to_owned();
    let pods = vec![web_pod("web-0", "10.25.0.1"), ghost];
    let (world, roster) = world(tier, "explain-node", vec![web_service()], pods).await;
    let report = explained(&world, "web", "web-1's Node missing", |r| {
        verdict(r, "web-1") == Some(Verdict::NodeMissing)
    })
    .await;
    let web1 = &report.pods[1];
    assert_eq!(
        (web1.endpoints, web1.slices),
        (
            Placement::Addresses,
            SlicePlacement::Absent {
                why: Exclusion::NodeMissing
            }
        )
    );
    assert!(
        web1.why[0].starts_with("Node explain-ghost-node does not exist"),
        "{:?}",
        web1.why
    );
    roster.stop().await;
}

fn selectorless(name: &str) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 5432}]}})).unwrap()
}

async fn selectorless_services_with_and_without_hand_made_endpoints(tier: Tier) {
    let services = vec![selectorless("db"), selectorless("empty")];
    let (world, roster) = world(tier, "explain-selectorless", services, Vec::new()).await;
    let hand_made: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "subsets": [{"addresses": [{"ip": "192.0.2.42"}], "ports": [{"port": 5432}]}]
    }))
    .unwrap();
    create(&world.env, &world.ns, &hand_made).await;
    let report = explained(&world, "db", "hand-made Endpoints mirrored", |r| {
        r.live.slices.iter().any(|s| s.managed_by.who == Who::Roster)
    })
    .await;
    assert_eq!(report.source, Source::HandMade);
    let managed_by = report.live.endpoints.as_ref().map(|ep| ep.managed_by.who);
    assert_eq!(managed_by, Some(Who::ByHand));
    assert_eq!((report.outcome, report.ready_endpoints), (Outcome::Healthy, 1));

    let report = explain(&world, "empty").await;
    assert_eq!(
        (report.source, report.outcome),
        (Source::Nothing, Outcome::NoReadyEndpoints)
    );
    assert!(
        report.hints[0].starts_with("a Service without a selector"),
        "{:?}",
        report.hints
    );
    roster.stop().await;
}

/// Service `search`: a DNS CNAME to search.example.com.
fn search() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "search"},
        "spec": {"type": "ExternalName", "externalName": "search.example.com"}
    }))
    .unwrap()
}

async fn external_name_services_have_no_endpoints_by_design(tier: Tier) {
    let (world, roster) = world(tier, "explain-external", vec![search()], Vec::new()).await;
    let report = explain(&world, "search").await;
    let want = Source::ExternalName {
        external_name: "search.example.com".to_owned(),
    };
    assert_eq!((&report.source, report.exit_code), (&want, 3));
    assert!(report.live.endpoints.is_none() && report.live.slices.is_empty());
    assert!(report.pods.is_empty());
    roster.stop().await;
}

async fn a_foreign_edit_is_drift_until_roster_repairs_it(tier: Tier) {
    let pods = vec![web_pod("web-0", "10.25.0.1"), web_pod("web-1", "10.25.0.2")];
    let (world, roster) = world(tier, "explain-drift", vec![web_service()], pods).await;
    explained(&world, "web", "both ready", |r| r.ready_endpoints == 2).await;
    roster.stop().await;

    let api: Api<Endpoints> = Api::namespaced(world.env.client(), &world.ns);
    let mut edited = api.get("web").await.unwrap();
    for subset in edited.subsets.iter_mut().flatten() {
        subset.addresses.iter_mut().flatten().for_each(|a| {
            a.ip = a.ip.replace("10.25.0.2", "10.25.0.99");
        });
    }
    api.replace("web", &PostParams::default(), &edited).await.unwrap();
    let report = explain(&world, "web").await;
    assert_eq!((report.outcome, report.exit_code), (Outcome::Drift, 4));
    let drift: Vec<(&str, &str, Option<&str>)> = report
        .drift
        .endpoints
        .iter()
        .map(|d| (d.kind.as_str(), d.at.as_str(), d.pod.as_deref()))
        .collect();
    assert_eq!(
        drift,
        [
            ("address_missing", "10.25.0.2", Some("web-1")),
            ("address_extra", "10.25.0.99", None)
        ]
    );
    assert!(report.drift.slices.is_empty(), "{:?}", report.drift.slices);
    let writer = report.drift.endpoints[0].managed_by.as_ref().map(|m| m.who);
    assert_eq!(writer, Some(Who::Roster));

    let roster = Roster::start(&world.env, &world.ns, &["--services", "all"]).await;
    let report = explained(&world, "web", "repaired", |r| r.ready_endpoints == 2).await;
    assert_eq!((report.outcome, report.exit_code), (Outcome::Healthy, 0));
    roster.stop().await;
}

/// `roster explain` as a binary and as `kubectl roster`: output, exit codes and the kubeconfig.
async fn the_binary_and_the_kubectl_plugin(tier: Tier) {
    let services = vec![web_service(), search()];
    let (world, roster) = world(tier, "explain-cli", services, vec![web_pod("web-0", "10.25.0.1")]).await;
    let kubeconfig = world.env.kubeconfig();
    let roster_explain = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
        cmd.arg("explain").args(args).args(["-n", &world.ns]);
        cmd.arg("--kubeconfig").arg(kubeconfig);
        output(cmd)
    };
    let (code, out) = eventually_value(
        "roster explain service/web exits 0",
        || async { roster_explain(&["service/web"]) },
        |(code, _)| *code == Some(0),
    )
    .await;
    assert!(
        out.contains("Result: 1 ready endpoint, no drift (exit 0)"),
        "{code:?} {out}"
    );
    let (code, out) = roster_explain(&["svc/web", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!((code, &json["pods"][0]["verdict"]), (Some(0), &json!("ready")));
    assert_eq!(roster_explain(&["svc/search"]).0, Some(3));
    let (code, out) = roster_explain(&["svc/missing"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("Service missing not found in namespace"), "{out}");
    let (code, out) = roster_explain(&["pod/web-0"]);
    assert_eq!(code, Some(2));
    assert!(out.contains("roster explain explains Services, not pod"), "{out}");

    let (code, out) = roster_at_kubeconfig_namespace(kubeconfig, &world.ns, &["explain", "service/web"]);
    assert_eq!(code, Some(0), "KUBECONFIG, and its context's namespace: {out}");

    let plugins = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_roster"),
        plugins.path().join("kubectl-roster"),
    )
    .unwrap();
    let kubectl = |args: &[&str]| {
        let mut cmd = Command::new("kubectl");
        cmd.args(["roster", "explain"]).args(args);
        cmd.env("PATH", path_with(plugins.path()))
            .env("KUBECONFIG", kubeconfig);
        output(cmd)
    };
    let (code, out) = kubectl(&["svc/web", "-n", &world.ns]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("Service:     {}/web", world.ns)), "{out}");
    let (_, help) = kubectl(&["--help"]);
    assert!(help.contains("Usage: kubectl roster explain"), "{help}");
    roster.stop().await;
}

/// `roster ARGS` with KUBECONFIG naming a copy of `kubeconfig` whose context's namespace is `ns`.
fn roster_at_kubeconfig_namespace(kubeconfig: &Path, ns: &str, args: &[&str]) -> (Option<i32>, String) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    assert!(text.contains("namespace: default"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kubeconfig");
    std::fs::write(
        &copy,
        text.replace("namespace: default", &format!("namespace: {ns}")),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.args(args)
        .env("KUBECONFIG", &copy)
        .env_remove("ROSTER_KUBECONFIG");
    output(cmd)
}

/// An API server that accepts connections but never answers: `--timeout` ends the wait, exit 1.
#[test]
fn an_api_server_that_never_answers_times_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let server = format!("http://{}", silent.local_addr().unwrap());
    roster_envtest::kubeconfig::write(&kubeconfig, &server, None).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.args(["explain", "svc/web", "--timeout", "1s", "--kubeconfig"])
        .arg(&kubeconfig);
    let (code, out) = output(cmd);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("the API server did not answer within 1s"), "{out}");
}

/// Exit code and stdout followed by stderr.
fn output(mut cmd: Command) -> (Option<i32>, String) {
    let out = cmd.output().expect("the command runs");
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text.into_owned())
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap()
}

on_both_tiers!(
    label_mismatch_is_a_near_miss,
    not_ready_pods_are_named_with_their_condition,
    terminating_pods_leave_the_endpoints,
    terminating_pods_stay_with_publish_not_ready_addresses,
    finished_pods_never_serve,
    pods_without_an_ip_are_not_started,
    an_unresolvable_named_port_lists_the_pods_ports,
    a_missing_node_keeps_the_pod_out_of_the_slices,
    selectorless_services_with_and_without_hand_made_endpoints,
    external_name_services_have_no_endpoints_by_design,
    a_foreign_edit_is_drift_until_roster_repairs_it,
    the_binary_and_the_kubectl_plugin,
);
