//! A real Prometheus (Debian's 2.42, package `prometheus`; scripts/test installs it) scrapes running rosters the
//! way the chart's ServiceMonitor has them scraped (a job named after the metrics Service, a `namespace` label)
//! and evaluates the chart's alert rules with their `for:` removed: an alert fires at the first evaluation
//! whose expression holds (the durations are the promtool unit tests' business, tests/promtool.rs). Through
//! Prometheus's HTTP API:
//! * every series selector the alert rules and the Grafana dashboard use has data;
//! * the targets are up; the API server answering 500 to roster's writes fires `RosterWritesFailing`; the
//!   leader killed while no replica can write the Lease fires `RosterNoLeader`, which ends once one can.

mod support;

#[path = "support/backends.rs"]
mod backends;
#[path = "prometheus/promql.rs"]
mod promql;
#[path = "prometheus/server.rs"]
mod server;

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::core::v1::Service;
use roster::backendset::BackendSet;
use roster_envtest::memory::{Fault, Verb};
use roster_envtest::{TestEnv, Tier};
use serde_json::{Value, json};
use server::{Job, Prometheus, without_for};
use support::*;

/// The `namespace` label of the targets, as the ServiceMonitor's release namespace.
const NAMESPACE_LABEL: &str = "roster-system";

fn rules() -> String {
    without_for(&Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/roster/prometheus/roster.rules.yaml"))
}

/// A wait on Prometheus, longer than [`CONVERGE`]: the first scrapes and evaluations come a few seconds after
/// Prometheus starts.
struct Wait {
    what: &'static str,
    deadline: tokio::time::Instant,
}

impl Wait {
    fn new(what: &'static str) -> Wait {
        let deadline = tokio::time::Instant::now() + CONVERGE * 2;
        Wait { what, deadline }
    }

    /// Fails the test, with `last` and Prometheus's log, once the deadline has passed; otherwise pauses.
    async fn retry(&self, prometheus: &Prometheus, last: String) {
        assert!(
            tokio::time::Instant::now() < self.deadline,
            "timed out waiting for: {}; last seen: {last}\nprometheus log:\n{}",
            self.what,
            prometheus.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Waits until `name` fires for the job `roster-metrics`; returns the alert.
async fn wait_firing(prometheus: &mut Prometheus, name: &'static str) -> Value {
    let wait = Wait::new(name);
    loop {
        let firing = prometheus.firing(name).await;
        if let Some(alert) = firing
            .into_iter()
            .find(|a| a["labels"]["job"] == "roster-metrics")
        {
            return alert;
        }
        let alerts = prometheus.alerts().await;
        wait.retry(prometheus, format!("{alerts:?}")).await;
    }
}

/// Waits until none of `names` fires.
async fn wait_quiet(prometheus: &mut Prometheus, what: &'static str, names: &[&str]) {
    let wait = Wait::new(what);
    loop {
        let mut firing = Vec::new();
        for name in names {
            firing.extend(prometheus.firing(name).await);
        }
        if firing.is_empty() {
            return;
        }
        wait.retry(prometheus, format!("{firing:?}")).await;
    }
}

/// Every selector the rules and the dashboard use.
fn used_selectors() -> BTreeSet<String> {
    let exprs = promql::rule_exprs().into_iter().chain(promql::dashboard_exprs());
    exprs.flat_map(|e| promql::selectors(&e)).collect()
}

async fn selectors_without_data(prometheus: &mut Prometheus, selectors: &BTreeSet<String>) -> Vec<String> {
    let mut missing = Vec::new();
    for selector in selectors {
        let result = prometheus.query(&format!("count({selector})")).await;
        if result.is_none_or(|r| r.is_empty()) {
            missing.push(selector.clone());
        }
    }
    missing
}

/// A selectorless Service with one port, for a BackendSet of the same name.
async fn create_service(env: &TestEnv, ns: &str, name: &str, port: &str) {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": port, "port": 5432, "targetPort": port}]}
    }))
    .unwrap();
    create(env, ns, &service).await;
}

async fn create_backendset(env: &TestEnv, ns: &str, name: &str, spec: Value) {
    let bs: BackendSet = serde_json::from_value(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "BackendSet",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    create(env, ns, &bs).await;
}

/// A leader with BackendSets (a backend that fails its probe, a hostname that does not resolve), one of each
/// write failure and a failed watch, and a shadow-mode roster beside it: every metric the rules and the
/// dashboard use has a series, with the label values they select.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_selector_of_the_rules_and_the_dashboard_has_data() {
    let World { env, ns } = api_world(Tier::Memory, "prom-metrics", 2).build().await;
    backends::register_crd(&env).await;
    let dns = backends::TestDns::start(5).await;
    dns.set("missing.test", backends::Answer::NxDomain);
    let dns_server = dns.addr.to_string();
    let args = ["--identity", "l", "--dns-server", &dns_server];
    let leader = RosterProcess::start(&env, &ns, &[&LEADER_ELECTION[..], &args].concat()).await;
    let shadow = RosterProcess::start(&env, &ns, &["--services", "all", "--shadow", "true"]).await;
    eventually("the leader leads", || async {
        metric(&leader.metrics().await, "roster_leader") == 1.0
    })
    .await;
    wait_ready_ips(&env, &ns, "api", &api_ips(&[0, 1])).await;

    let server = env.memory_server().unwrap();
    for code in [409, 429, 500] {
        server.inject_fault(Fault::status(Verb::Update, "endpoints", code, None).times(1));
    }
    server.inject_fault(Fault::status(Verb::Watch, "services", 500, None).times(1));
    server.close_all_watches();
    env.kubelet().set_ready(&ns, "api-1", false).await.unwrap();
    wait_ready_ips(&env, &ns, "api", &api_ips(&[0])).await;
    create_service(&env, &ns, "db", "pg").await;
    let probe = json!({"tcpSocket": {"port": "pg"}, "periodSeconds": 1, "timeoutSeconds": 1});
    let spec = json!({"backends": [{"ip": "192.0.2.10", "ports": {"pg": 5432}}], "readinessProbe": probe});
    create_backendset(&env, &ns, "db", spec).await;
    create_service(&env, &ns, "cache", "redis").await;
    let spec = json!({"backends": [{"hostname": "missing.test", "ports": {"redis": 6379}}]});
    create_backendset(&env, &ns, "cache", spec).await;

    let jobs = [
        Job {
            name: "roster-metrics",
            namespace: NAMESPACE_LABEL,
            targets: vec![leader.admin],
        },
        Job {
            name: "roster-shadow-metrics",
            namespace: NAMESPACE_LABEL,
            targets: vec![shadow.admin],
        },
    ];
    let mut prometheus = Prometheus::start(&jobs, &rules());
    let selectors = used_selectors();
    assert!(selectors.len() >= 30, "{selectors:?}");
    let wait = Wait::new("every selector has data");
    loop {
        let missing = selectors_without_data(&mut prometheus, &selectors).await;
        if missing.is_empty() {
            break;
        }
        wait.retry(&prometheus, format!("{missing:?}")).await;
    }

    // The check can fail: a label value roster never exports selects nothing.
    let typo: BTreeSet<String> = [r#"roster_api_writes_total{outcome="conflicts"}"#.to_owned()].into();
    assert_eq!(selectors_without_data(&mut prometheus, &typo).await.len(), 1);
    drop(prometheus);
    shadow.kill();
    leader.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_and_a_killed_leader_fire_their_alerts() {
    let World { env, ns } = api_world(Tier::Memory, "prom-alerts", 2).build().await;
    let a = RosterProcess::start(&env, &ns, &[&LEADER_ELECTION[..], &["--identity", "a"]].concat()).await;
    let b = RosterProcess::start(&env, &ns, &[&LEADER_ELECTION[..], &["--identity", "b"]].concat()).await;
    wait_ready_ips(&env, &ns, "api", &api_ips(&[0, 1])).await;
    let jobs = [Job {
        name: "roster-metrics",
        namespace: NAMESPACE_LABEL,
        targets: vec![a.admin, b.admin],
    }];
    let mut prometheus = Prometheus::start(&jobs, &rules());
    let wait = Wait::new("both rosters up in /api/v1/targets");
    loop {
        let targets = prometheus.targets().await;
        let up = targets.iter().filter(|t| t.0 == "roster-metrics" && t.2 == "up");
        if up.count() == 2 {
            break;
        }
        wait.retry(&prometheus, format!("{targets:?}")).await;
    }
    // The alerts' state once the rules have been evaluated on what was scraped.
    let scraped = jiff::Timestamp::now();
    let wait = Wait::new("the rules evaluated after the first scrapes");
    loop {
        let last = prometheus.last_evaluation().await;
        if last.is_some_and(|t| t > scraped) {
            break;
        }
        wait.retry(&prometheus, format!("{last:?}")).await;
    }
    let startup = [
        "RosterNoLeader",
        "RosterMultipleLeaders",
        "RosterWritesFailing",
        "RosterAbsent",
    ];
    wait_quiet(
        &mut prometheus,
        "no alert on leaders, writes or absence",
        &startup,
    )
    .await;

    // The API server refuses every Endpoints and EndpointSlice write; a pod's readiness changes.
    let server = env.memory_server().unwrap();
    let mut refusals = Vec::new();
    for resource in ["endpoints", "endpointslices"] {
        for verb in [Verb::Create, Verb::Update, Verb::Delete] {
            refusals.push(server.inject_fault(Fault::status(verb, resource, 500, None)));
        }
    }
    env.kubelet().set_ready(&ns, "api-1", false).await.unwrap();
    let alert = wait_firing(&mut prometheus, "RosterWritesFailing").await;
    assert_eq!(alert["labels"]["namespace"], NAMESPACE_LABEL, "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    for id in refusals {
        server.remove_fault(id);
    }
    wait_ready_ips(&env, &ns, "api", &api_ips(&[0])).await;

    // The leader is killed while the API server refuses Lease writes: the follower cannot take over.
    let a_leads = eventually_some("exactly one leader", || async {
        let (la, lb) = (
            metric(&a.metrics().await, "roster_leader"),
            metric(&b.metrics().await, "roster_leader"),
        );
        (la + lb == 1.0).then_some(la == 1.0)
    })
    .await;
    let (leader, follower) = if a_leads { (a, b) } else { (b, a) };
    let mut lease_refusals = Vec::new();
    for verb in [Verb::Create, Verb::Update, Verb::Patch] {
        lease_refusals.push(server.inject_fault(Fault::status(verb, "leases", 500, None)));
    }
    let killed = leader.admin;
    leader.kill();
    let alert = wait_firing(&mut prometheus, "RosterNoLeader").await;
    assert_eq!(alert["labels"]["namespace"], NAMESPACE_LABEL, "{alert}");
    let targets = prometheus.targets().await;
    let health = |addr: std::net::SocketAddr| {
        let url = format!("http://{addr}/metrics");
        targets.iter().find(|t| t.1 == url).map(|t| t.2.clone())
    };
    assert_eq!(health(killed).as_deref(), Some("down"), "{targets:?}");
    assert_eq!(health(follower.admin).as_deref(), Some("up"), "{targets:?}");
    assert!(
        prometheus.firing("RosterAbsent").await.is_empty(),
        "the follower is scraped"
    );

    // Once the Lease can be written, the follower leads and the alert ends.
    for id in lease_refusals {
        server.remove_fault(id);
    }
    wait_quiet(&mut prometheus, "RosterNoLeader ends", &["RosterNoLeader"]).await;
    assert_eq!(metric(&follower.metrics().await, "roster_leader"), 1.0);
    drop(prometheus);
    follower.kill();
}
