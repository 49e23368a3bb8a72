//! BackendSets against both API server tiers: the `Backends` runtime probing real TCP and HTTP servers on
//! test addresses, resolving names through a test DNS server, binding to Services, and writing status.
//! The end-to-end tests at the bottom run the whole controller (`roster run`) against BackendSets.

#[path = "support/backends.rs"]
mod backends;
mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use backends::*;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use roster::backendset::{BackendArgs, BackendSet, BackendView};
use roster::cache::ServiceKey;
use roster_envtest::{TestEnv, Tier};
use serde_json::json;
use support::*;

/// A fresh namespace with the CRD registered; `None` (skipped, reason printed) when the test needs the
/// test addresses and they cannot be set up here.
async fn setup(tier: Tier, prefix: &str, needs_addresses: bool) -> Option<(TestEnv, String)> {
    if needs_addresses && !test_addresses() {
        return None;
    }
    let World { env, ns } = World::builder(tier, prefix).build().await;
    register_crd(&env).await;
    Some((env, ns))
}

async fn create_service(env: &TestEnv, ns: &str, name: &str, spec: serde_json::Value) -> Service {
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    create(env, ns, &svc).await
}

/// A selectorless ClusterIP Service with one port `pg` (5432 → targetPort `pg`).
async fn pg_service(env: &TestEnv, ns: &str, name: &str) -> Service {
    create_service(
        env,
        ns,
        name,
        json!({"ports": [{"name": "pg", "port": 5432, "targetPort": "pg"}]}),
    )
    .await
}

fn backendset(name: &str, spec: serde_json::Value) -> BackendSet {
    serde_json::from_value(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "BackendSet",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

async fn create_backendset(env: &TestEnv, ns: &str, name: &str, spec: serde_json::Value) -> BackendSet {
    create(env, ns, &backendset(name, spec)).await
}

/// The API server's message refusing a BackendSet as invalid (422).
async fn refused_backendset(env: &TestEnv, ns: &str, name: &str, spec: serde_json::Value) -> String {
    match Api::<BackendSet>::namespaced(env.client(), ns)
        .create(&Default::default(), &backendset(name, spec))
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 422 => status.message,
        other => panic!("BackendSet {name} was not refused as invalid: {other:?}"),
    }
}

fn tcp_probe(port: serde_json::Value, success: u32, failure: u32) -> serde_json::Value {
    json!({"tcpSocket": {"port": port}, "periodSeconds": 1, "timeoutSeconds": 1,
           "successThreshold": success, "failureThreshold": failure})
}

/// (ip, ready) of each published address of the view of Service `name`.
fn published(h: &Harness, ns: &str, name: &str) -> Option<Vec<(String, bool)>> {
    let view = h.view(ns, name)?;
    Some(
        view.addresses
            .iter()
            .map(|a| (a.ip.to_string(), a.ready))
            .collect(),
    )
}

async fn wait_published(h: &Harness, ns: &str, name: &str, want: &[(&str, bool)]) -> Arc<BackendView> {
    let want: Vec<(String, bool)> = want.iter().map(|(ip, r)| (ip.to_string(), *r)).collect();
    eventually_some(&format!("Service {ns}/{name} publishes {want:?}"), || async {
        let view = h.view(ns, name)?;
        let got: Vec<(String, bool)> = view
            .addresses
            .iter()
            .map(|a| (a.ip.to_string(), a.ready))
            .collect();
        (got == want).then_some(view)
    })
    .await
}

/// Waits until the Endpoints of Service `name` hold exactly `want` as (ip, ready).
async fn wait_endpoints(env: &TestEnv, ns: &str, name: &str, want: &[(&str, bool)]) {
    let (ready, not_ready): (Vec<(&str, bool)>, Vec<_>) = want.iter().partition(|(_, r)| *r);
    let ips = |of: &[(&str, bool)]| of.iter().map(|(ip, _)| ip.to_string()).collect::<Vec<_>>();
    wait_endpoint_ips(env, ns, name, &ips(&ready), &ips(&not_ready)).await;
}

/// Waits until the Endpoints of Service `name` are published from (owned by) BackendSet `backendset`.
async fn wait_endpoints_owner(env: &TestEnv, ns: &str, name: &str, backendset: &str) {
    eventually(
        &format!("Endpoints {ns}/{name} published from BackendSet {backendset}"),
        || async {
            endpoints(env, ns, name).await.is_some_and(|ep| {
                let owners = ep.metadata.owner_references.unwrap_or_default();
                owners
                    .iter()
                    .any(|o| o.kind == "BackendSet" && o.name == backendset)
            })
        },
    )
    .await;
}

/// (status, reason, message) of a condition.
fn condition(bs: &BackendSet, type_: &str) -> Option<(String, String, String)> {
    let c = bs.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn has_condition(bs: &BackendSet, type_: &str, status: &str, reason: &str) -> bool {
    condition(bs, type_).is_some_and(|(s, r, _)| s == status && r == reason)
}

async fn wait_condition(
    env: &TestEnv,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> BackendSet {
    let what = format!("{type_}={status} ({reason})");
    wait_backendset(env, ns, name, &what, |bs| {
        has_condition(bs, type_, status, reason)
    })
    .await
}

/// The message of the status entry of `address`.
fn address_message(bs: &BackendSet, address: &str) -> Option<String> {
    let status = bs.status.as_ref()?;
    status
        .addresses
        .iter()
        .find(|a| a.address == address)?
        .message
        .clone()
}

async fn warning(env: &TestEnv, ns: &str, regarding: &str, reason: &str) -> Event {
    let events = Api::<Event>::namespaced(env.client(), ns);
    eventually_some(&format!("{reason} event about {regarding}"), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
        })
    })
    .await
}

async fn a_backend_going_down_leaves_and_returns(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-tcp", true).await else {
        return;
    };
    let h = Harness::start(&env, &ns, test_args()).await;
    let mut live = TestBackend::start(LIVE_IP, 0).await;
    pg_service(&env, &ns, "db").await;
    create_backendset(
        &env,
        &ns,
        "db",
        json!({"backends": [{"ip": LIVE_IP, "ports": {"pg": live.port()}}], "readinessProbe": tcp_probe(json!("pg"), 2, 2)}),
    )
    .await;
    wait_published(&h, &ns, "db", &[(LIVE_IP, true)]).await;
    // The Service may reach the binding after a status showing the ready backend was written, and the
    // status is written apart from the Endpoints: wait for a status showing both.
    let bs = wait_backendset(&env, &ns, "db", "Ready=True (AllReady) and bound", |bs| {
        has_condition(bs, "Ready", "True", "AllReady") && has_condition(bs, "ServiceBound", "True", "Bound")
    })
    .await;
    let status = bs.status.clone().unwrap();
    assert_eq!(
        (status.summary.as_deref(), status.ready_count, status.total_count),
        (Some("1/1"), 1, 1)
    );
    assert_eq!(status.service_name.as_deref(), Some("db"));
    assert!(
        has_condition(&bs, "ServiceBound", "True", "Bound"),
        "{:?}",
        bs.status
    );
    assert!(
        has_condition(&bs, "Resolved", "True", "Resolved"),
        "{:?}",
        bs.status
    );
    assert_eq!(status.observed_generation, bs.metadata.generation);
    let entry = &status.addresses[0];
    assert_eq!((entry.address.as_str(), entry.ready), (LIVE_IP, true));
    assert!(entry.last_transition_time.is_some() && entry.last_probe_time.is_some());
    wait_endpoints(&env, &ns, "db", &[(LIVE_IP, true)]).await;

    // Down: still ready until failureThreshold (2) failures in a row, then not ready.
    let failures = h.probes("failure");
    live.stop();
    eventually("the backend leaves the ready addresses", || async {
        let ready = published(&h, &ns, "db") == Some(vec![(LIVE_IP.to_owned(), true)]);
        let now = h.probes("failure");
        assert!(
            ready || now >= failures + 2,
            "not ready after {} failure(s)",
            now - failures
        );
        !ready
    })
    .await;
    assert_eq!(
        published(&h, &ns, "db"),
        Some(vec![(LIVE_IP.to_owned(), false)]),
        "published as not ready"
    );
    let bs = wait_condition(&env, &ns, "db", "Ready", "False", "NoneReady").await;
    assert_eq!(
        address_message(&bs, LIVE_IP).as_deref(),
        Some("connect: connection refused")
    );
    wait_endpoints(&env, &ns, "db", &[(LIVE_IP, false)]).await;

    // Up: not ready until successThreshold (2) successes in a row.
    let successes = h.probes("success");
    live.restart().await;
    eventually("the backend returns", || async {
        let ready = published(&h, &ns, "db") == Some(vec![(LIVE_IP.to_owned(), true)]);
        let now = h.probes("success");
        assert!(
            !ready || now >= successes + 2,
            "ready after {} success(es)",
            now - successes
        );
        ready
    })
    .await;
    wait_condition(&env, &ns, "db", "Ready", "True", "AllReady").await;
    let text = h.metrics.render();
    assert!(text.contains("roster_backends{ready=\"true\"} 1"), "{text}");
    assert!(text.contains("roster_probe_duration_seconds_count"), "{text}");
    h.stop().await;
}

async fn http_probes_read_the_status_code(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-http", true).await else {
        return;
    };
    let h = Harness::start(&env, &ns, test_args()).await;
    let live = TestBackend::start(LIVE_IP, 0).await;
    create_service(
        &env,
        &ns,
        "api",
        json!({"ports": [{"port": 80, "targetPort": live.port()}]}),
    )
    .await;
    let probe = json!({"httpGet": {"port": live.port(), "path": "/healthz"}, "periodSeconds": 1, "failureThreshold": 1});
    create_backendset(
        &env,
        &ns,
        "api",
        json!({"backends": [{"ip": LIVE_IP}], "readinessProbe": probe}),
    )
    .await;
    wait_published(&h, &ns, "api", &[(LIVE_IP, true)]).await;

    live.set_status(503);
    wait_published(&h, &ns, "api", &[(LIVE_IP, false)]).await;
    let bs = wait_backendset(&env, &ns, "api", "the 503 in status", |bs| {
        address_message(bs, LIVE_IP).as_deref() == Some("HTTP probe failed with statuscode: 503")
    })
    .await;
    assert!(
        has_condition(&bs, "Ready", "False", "NoneReady"),
        "{:?}",
        bs.status
    );

    live.set_status(301);
    wait_published(&h, &ns, "api", &[(LIVE_IP, true)]).await;
    h.stop().await;
}

async fn service_binding_and_conflicts(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-bind", false).await else {
        return;
    };
    let h = Harness::start(&env, &ns, test_args()).await;
    let static_backend = json!([{"ip": "198.51.100.20"}]);

    create_backendset(
        &env,
        &ns,
        "orphan",
        json!({"serviceName": "later", "backends": static_backend}),
    )
    .await;
    let bs = wait_condition(&env, &ns, "orphan", "ServiceBound", "False", "ServiceNotFound").await;
    assert_eq!(
        condition(&bs, "ServiceBound").unwrap().2,
        "Service later does not exist in this namespace"
    );
    assert!(h.view(&ns, "later").is_none());
    assert!(
        has_condition(&bs, "Ready", "True", "AllReady"),
        "no probe: ready at once: {:?}",
        bs.status
    );

    pg_service(&env, &ns, "later").await;
    wait_condition(&env, &ns, "orphan", "ServiceBound", "True", "Bound").await;
    wait_published(&h, &ns, "later", &[("198.51.100.20", true)]).await;
    wait_endpoints_owner(&env, &ns, "later", "orphan").await;

    create_service(
        &env,
        &ns,
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}),
    )
    .await;
    create_backendset(&env, &ns, "web", json!({"backends": static_backend})).await;
    wait_condition(&env, &ns, "web", "ServiceBound", "False", "ServiceHasSelector").await;

    create_service(
        &env,
        &ns,
        "ext",
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
    )
    .await;
    create_backendset(&env, &ns, "ext", json!({"backends": static_backend})).await;
    wait_condition(&env, &ns, "ext", "ServiceBound", "False", "ServiceIsExternalName").await;
    assert_eq!(h.bound_services(&ns), vec![ServiceKey::new(&ns, "later")]);

    // Two BackendSets for one Service: the older wins (creation time, then name).
    pg_service(&env, &ns, "shared").await;
    create_backendset(
        &env,
        &ns,
        "first",
        json!({"serviceName": "shared", "backends": [{"ip": "198.51.100.21"}]}),
    )
    .await;
    wait_condition(&env, &ns, "first", "ServiceBound", "True", "Bound").await;
    create_backendset(
        &env,
        &ns,
        "second",
        json!({"serviceName": "shared", "backends": [{"ip": "198.51.100.22"}]}),
    )
    .await;
    let loser = wait_condition(&env, &ns, "second", "ServiceBound", "False", "Conflict").await;
    assert_eq!(
        condition(&loser, "ServiceBound").unwrap().2,
        "BackendSet first is older and already publishes to Service shared"
    );
    assert_eq!(
        warning(&env, &ns, "second", "ServiceConflict")
            .await
            .type_
            .as_deref(),
        Some("Warning")
    );
    wait_published(&h, &ns, "shared", &[("198.51.100.21", true)]).await;

    Api::<BackendSet>::namespaced(env.client(), &ns)
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    wait_condition(&env, &ns, "second", "ServiceBound", "True", "Bound").await;
    let view = wait_published(&h, &ns, "shared", &[("198.51.100.22", true)]).await;
    assert_eq!(view.backendset.name, "second");
    wait_endpoints_owner(&env, &ns, "shared", "second").await;
    h.stop().await;
}

async fn invalid_input_is_reported(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-invalid", false).await else {
        return;
    };
    let h = Harness::start(&env, &ns, test_args()).await;
    pg_service(&env, &ns, "exec").await;
    let exec = json!({"exec": {"command": ["pg_isready"]}, "periodSeconds": 1});
    let exec_spec = json!({"backends": [{"ip": "198.51.100.20"}], "readinessProbe": exec});
    if tier == Tier::Real {
        // kube-apiserver refuses exec probes at admission (the CRD's `not`); the in-memory server does not
        // check `not`, so there the runtime check below reports them, as it does objects stored before.
        let refused = refused_backendset(&env, &ns, "exec", exec_spec).await;
        assert!(refused.contains("spec.readinessProbe"), "{refused}");
    } else {
        create_backendset(&env, &ns, "exec", exec_spec).await;
        let bs = wait_condition(&env, &ns, "exec", "Ready", "False", "InvalidProbe").await;
        assert_eq!(
            condition(&bs, "Ready").unwrap().2,
            "nothing is published: exec probes are not supported: roster cannot run commands on external backends"
        );
        // The Service may reach the binding after the status was written.
        let view = eventually_some("Service exec bound", || async { h.view(&ns, "exec") }).await;
        assert!(view.addresses.is_empty(), "publishing nothing");
        warning(&env, &ns, "exec", "InvalidProbe").await;
    }

    pg_service(&env, &ns, "mixed").await;
    let backends = json!([
        {"ip": "not-an-ip"},
        {"ip": "198.51.100.20", "ports": {"Bad_Name": 1}},
        {"hostname": "bad_host.example.com"},
        {"ip": "198.51.100.21", "ports": {"pg": 6432}},
    ]);
    create_backendset(&env, &ns, "mixed", json!({"backends": backends})).await;
    wait_published(&h, &ns, "mixed", &[("198.51.100.21", true)]).await;
    let bs = wait_condition(&env, &ns, "mixed", "Ready", "True", "AllReady").await;
    assert_eq!(address_message(&bs, "not-an-ip").as_deref(), Some("invalid IP"));
    assert_eq!(
        address_message(&bs, "198.51.100.20").as_deref(),
        Some("invalid port name: \"Bad_Name\"")
    );
    assert_eq!(
        address_message(&bs, "bad_host.example.com").as_deref(),
        Some("invalid hostname")
    );
    let event = warning(&env, &ns, "mixed", "InvalidBackend").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    pg_service(&env, &ns, "empty").await;
    create_backendset(&env, &ns, "empty", json!({"backends": []})).await;
    let bs = wait_condition(&env, &ns, "empty", "Ready", "False", "NoBackends").await;
    assert_eq!(bs.status.unwrap().summary.as_deref(), Some("0/0"));
    h.stop().await;
}

async fn denied_addresses_are_reported_and_never_probed(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-deny", true).await else {
        return;
    };
    let dns = TestDns::start(1).await;
    dns.set(
        "metadata.test",
        Answer::Records(vec!["169.254.169.254".parse().unwrap()]),
    );
    dns.set("loop.test", Answer::Records(vec!["127.0.0.2".parse().unwrap()]));
    let args = BackendArgs {
        probe_deny_cidrs: vec![format!("{OTHER_IP}/32").parse().unwrap()],
        dns_server: Some(dns.addr),
        ..test_args()
    };
    let h = Harness::start(&env, &ns, args).await;
    let live = TestBackend::start(LIVE_IP, 0).await;
    let denied = TestBackend::start(OTHER_IP, live.port()).await;
    pg_service(&env, &ns, "db").await;
    let backends = json!([
        {"ip": "127.0.0.1"}, {"ip": "169.254.169.254"}, {"ip": OTHER_IP},
        {"hostname": "metadata.test"}, {"hostname": "loop.test"}, {"ip": LIVE_IP},
    ]);
    let spec = json!({"backends": backends, "readinessProbe": tcp_probe(json!(live.port()), 1, 3)});
    create_backendset(&env, &ns, "db", spec).await;
    wait_published(&h, &ns, "db", &[(LIVE_IP, true)]).await;
    // The status is written apart from the Endpoints, so it may still show the live backend as not ready.
    let bs = wait_backendset(
        &env,
        &ns,
        "db",
        "the loop.test address and the ready backend in status",
        |bs| {
            address_message(bs, "127.0.0.2").is_some()
                && bs.status.as_ref().is_some_and(|s| s.ready_count == 1)
        },
    )
    .await;
    let cases = [
        (
            "127.0.0.1",
            "denied: 127.0.0.1 is in --probe-deny-cidrs 127.0.0.0/8",
        ),
        (
            "169.254.169.254",
            "denied: 169.254.169.254 is in --probe-deny-cidrs 169.254.0.0/16",
        ),
        (
            OTHER_IP,
            "denied: 198.51.100.11 is in --probe-deny-cidrs 198.51.100.11/32",
        ),
        (
            "127.0.0.2",
            "denied: 127.0.0.2 is in --probe-deny-cidrs 127.0.0.0/8",
        ),
    ];
    for (address, message) in cases {
        assert_eq!(
            address_message(&bs, address).as_deref(),
            Some(message),
            "{address}"
        );
    }
    let status = bs.status.unwrap();
    assert_eq!(status.total_count, 1, "denied addresses are not published");
    let successes = h.probes("success");
    eventually("a few more probes", || async {
        h.probes("success") >= successes + 2
    })
    .await;
    assert_eq!(denied.accepted(), 0, "no probe reached the denied address");
    eventually("the denied addresses are counted", || async {
        h.probes("denied") >= 4
    })
    .await;
    h.stop().await;
}

async fn dns_names_are_resolved_again_and_kept_when_lookups_fail(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-dns", true).await else {
        return;
    };
    let dns = TestDns::start(1).await;
    dns.set("db.test", Answer::Records(vec![LIVE_IP.parse().unwrap()]));
    let args = BackendArgs {
        dns_server: Some(dns.addr),
        dns_failure_grace: Duration::from_secs(3600),
        ..test_args()
    };
    let h = Harness::start(&env, &ns, args).await;
    let live = TestBackend::start(LIVE_IP, 0).await;
    pg_service(&env, &ns, "db").await;
    let spec = json!({
        "backends": [{"hostname": "DB.test", "ports": {"pg": live.port()}}],
        "readinessProbe": tcp_probe(json!("pg"), 1, 1)
    });
    create_backendset(&env, &ns, "db", spec).await;
    let view = wait_published(&h, &ns, "db", &[(LIVE_IP, true)]).await;
    assert_eq!(view.addresses[0].hostname.as_deref(), Some("db.test"));
    let bs = wait_condition(&env, &ns, "db", "Resolved", "True", "Resolved").await;
    let entry = &bs.status.unwrap().addresses[0];
    assert_eq!(
        (entry.address.as_str(), entry.hostname.as_deref()),
        (LIVE_IP, Some("db.test"))
    );

    // A new answer is picked up after the TTL; the new address has no server on the probe port.
    dns.set(
        "db.test",
        Answer::Records(vec![LIVE_IP.parse().unwrap(), OTHER_IP.parse().unwrap()]),
    );
    wait_published(&h, &ns, "db", &[(LIVE_IP, true), (OTHER_IP, false)]).await;

    // Lookups fail: the last known addresses stay, marked stale.
    dns.set("db.test", Answer::ServFail);
    let bs = wait_condition(&env, &ns, "db", "Resolved", "False", "StaleAddresses").await;
    let (_, _, message) = condition(&bs, "Resolved").unwrap();
    assert!(
        message.starts_with("db.test: lookups failing since "),
        "{message}"
    );
    assert!(message.contains("the DNS server answered"), "{message}");
    let view = h.view(&ns, "db").unwrap();
    assert_eq!(view.addresses.len(), 2, "kept for the grace period");
    assert!(view.addresses.iter().all(|a| a.stale));
    assert!(
        address_message(&bs, LIVE_IP)
            .unwrap()
            .contains("last known address of db.test")
    );

    dns.set("db.test", Answer::Records(vec![LIVE_IP.parse().unwrap()]));
    wait_condition(&env, &ns, "db", "Resolved", "True", "Resolved").await;
    wait_published(&h, &ns, "db", &[(LIVE_IP, true)]).await;

    pg_service(&env, &ns, "gone").await;
    create_backendset(&env, &ns, "gone", json!({"backends": [{"hostname": "nx.test"}]})).await;
    let bs = wait_condition(&env, &ns, "gone", "Resolved", "False", "ResolveFailed").await;
    assert_eq!(
        condition(&bs, "Resolved").unwrap().2,
        "nx.test: NXDOMAIN: the name does not exist"
    );
    assert!(
        has_condition(&bs, "Ready", "False", "NoBackends"),
        "{:?}",
        bs.status
    );
    assert!(dns.queries() > 3, "names are looked up again");
    h.stop().await;
}

async fn stale_addresses_go_when_the_grace_period_ends(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-grace", false).await else {
        return;
    };
    let dns = TestDns::start(1).await;
    dns.set("db.test", Answer::Records(vec!["198.51.100.20".parse().unwrap()]));
    let args = BackendArgs {
        dns_server: Some(dns.addr),
        dns_failure_grace: Duration::from_secs(5),
        ..test_args()
    };
    let h = Harness::start(&env, &ns, args).await;
    pg_service(&env, &ns, "db").await;
    create_backendset(&env, &ns, "db", json!({"backends": [{"hostname": "db.test"}]})).await;
    wait_published(&h, &ns, "db", &[("198.51.100.20", true)]).await;
    dns.set("db.test", Answer::NxDomain);
    eventually("the address is marked stale", || async {
        let view = h.view(&ns, "db");
        view.is_some_and(|v| v.addresses.first().is_some_and(|a| a.stale))
    })
    .await;
    wait_published(&h, &ns, "db", &[]).await;
    let bs = wait_condition(&env, &ns, "db", "Resolved", "False", "ResolveFailed").await;
    assert!(
        has_condition(&bs, "Ready", "False", "NoBackends"),
        "{:?}",
        bs.status
    );
    h.stop().await;
}

async fn spec_changes_take_effect_without_restart(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-change", true).await else {
        return;
    };
    let h = Harness::start(&env, &ns, test_args()).await;
    let live = TestBackend::start(LIVE_IP, 0).await;
    pg_service(&env, &ns, "db").await;
    let closed = free_port(LIVE_IP);
    let spec = json!({"backends": [{"ip": LIVE_IP, "ports": {"pg": 5432}}], "readinessProbe": tcp_probe(json!(closed), 1, 1)});
    create_backendset(&env, &ns, "db", spec).await;
    wait_published(&h, &ns, "db", &[(LIVE_IP, false)]).await;

    merge_patch::<BackendSet>(
        &env,
        &ns,
        "db",
        json!({"spec": {"readinessProbe": {"tcpSocket": {"port": live.port()}}}}),
    )
    .await;
    wait_published(&h, &ns, "db", &[(LIVE_IP, true)]).await;

    merge_patch::<BackendSet>(
        &env,
        &ns,
        "db",
        json!({"spec": {"backends": [{"ip": LIVE_IP}, {"ip": OTHER_IP, "zone": "zone-b"}]}}),
    )
    .await;
    let view = wait_published(&h, &ns, "db", &[(LIVE_IP, true), (OTHER_IP, false)]).await;
    assert_eq!(view.addresses[1].zone.as_deref(), Some("zone-b"));

    merge_patch::<BackendSet>(&env, &ns, "db", json!({"spec": {"readinessProbe": null}})).await;
    wait_published(&h, &ns, "db", &[(LIVE_IP, true), (OTHER_IP, true)]).await;
    let bs = wait_backendset(&env, &ns, "db", "AllReady for the last generation", |bs| {
        let observed = bs.status.as_ref().and_then(|s| s.observed_generation);
        has_condition(bs, "Ready", "True", "AllReady") && observed == bs.metadata.generation
    })
    .await;
    assert_eq!(bs.metadata.generation, Some(4), "four spec versions");
    let conditions = bs.status.unwrap().conditions;
    assert!(
        conditions.iter().all(|c| c.observed_generation == Some(4)),
        "{conditions:?}"
    );
    h.stop().await;
}

async fn deleting_a_backendset_unpublishes_it(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-delete", false).await else {
        return;
    };
    let h = Harness::start(&env, &ns, test_args()).await;
    pg_service(&env, &ns, "db").await;
    create_backendset(&env, &ns, "db", json!({"backends": [{"ip": "198.51.100.20"}]})).await;
    wait_published(&h, &ns, "db", &[("198.51.100.20", true)]).await;
    Api::<BackendSet>::namespaced(env.client(), &ns)
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the view is gone", || async { h.view(&ns, "db").is_none() }).await;
    assert!(h.bound_services(&ns).is_empty());
    wait_endpoints_gone(&env, &ns, "db", "roster cleans up an unbound Service").await;
    h.stop().await;
}

/// A restarted runtime publishes what the previous one did at once (readiness from status), so the
/// Service does not flap while the first probes run.
async fn a_restart_resumes_readiness_from_status(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-restart", true).await else {
        return;
    };
    let live = TestBackend::start(LIVE_IP, 0).await;
    pg_service(&env, &ns, "db").await;
    let spec = json!({"backends": [{"ip": LIVE_IP}], "readinessProbe": {
        "tcpSocket": {"port": live.port()}, "periodSeconds": 30, "initialDelaySeconds": 30}});
    create_backendset(&env, &ns, "db", spec).await;
    let h = Harness::start(&env, &ns, test_args()).await;
    wait_published(&h, &ns, "db", &[(LIVE_IP, false)]).await;
    h.stop().await;

    let ready: serde_json::Value = json!({"status": {"addresses": [{"address": LIVE_IP, "ready": true}]}});
    Api::<BackendSet>::namespaced(env.client(), &ns)
        .patch_status("db", &PatchParams::default(), &Patch::Merge(ready))
        .await
        .unwrap();
    let h = Harness::start(&env, &ns, test_args()).await;
    let view = h.view(&ns, "db").expect("a view as soon as synced");
    let got: Vec<(IpAddr, bool)> = view.addresses.iter().map(|a| (a.ip, a.ready)).collect();
    assert_eq!(
        got,
        vec![(LIVE_IP.parse().unwrap(), true)],
        "readiness resumed from status"
    );
    h.stop().await;
}

async fn kubectl_shows_the_service_and_readiness(tier: Tier) {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("skipped: kubectl is not installed");
        return;
    }
    let Some((env, ns)) = setup(tier, "bs-kubectl", false).await else {
        return;
    };
    let h = Harness::start(&env, &ns, test_args()).await;
    pg_service(&env, &ns, "postgres").await;
    let backends = json!([{"ip": "198.51.100.20"}, {"ip": "198.51.100.21"}, {"ip": "127.0.0.1"}]);
    create_backendset(
        &env,
        &ns,
        "external-db",
        json!({"serviceName": "postgres", "backends": backends}),
    )
    .await;
    wait_condition(&env, &ns, "external-db", "Ready", "True", "AllReady").await;
    let out = env
        .kubectl_run(&["get", "bks", "-n", &ns])
        .expect("kubectl get bks");
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "SERVICE", "READY", "AGE"], "{out}");
    assert_eq!(rows[1][..3], ["external-db", "postgres", "2/2"], "{out}");
    h.stop().await;
}

on_both_tiers!(
    kubectl_shows_the_service_and_readiness,
    a_backend_going_down_leaves_and_returns,
    http_probes_read_the_status_code,
    service_binding_and_conflicts,
    invalid_input_is_reported,
    denied_addresses_are_reported_and_never_probed,
    dns_names_are_resolved_again_and_kept_when_lookups_fail,
    stale_addresses_go_when_the_grace_period_ends,
    spec_changes_take_effect_without_restart,
    deleting_a_backendset_unpublishes_it,
    a_restart_resumes_readiness_from_status,
);

// ---- end to end, through `roster run` ----

async fn e2e_endpoints_follow_backendset(tier: Tier) {
    let Some((env, ns)) = setup(tier, "bs-e2e", true).await else {
        return;
    };
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let mut live = TestBackend::start(LIVE_IP, 0).await;
    pg_service(&env, &ns, "db").await;
    let spec = json!({
        "backends": [{"ip": LIVE_IP, "ports": {"pg": live.port()}, "zone": "zone-a"},
                     {"ip": OTHER_IP, "ports": {"pg": live.port()}}],
        "readinessProbe": tcp_probe(json!("pg"), 1, 2)
    });
    let bs = create_backendset(&env, &ns, "db", spec).await;
    // From the BackendSet: the live backend ready, the other one (nothing listens there) not.
    let ep = wait_endpoint_ips(&env, &ns, "db", &[LIVE_IP], &[OTHER_IP]).await;
    let subset = &ep.subsets.as_ref().unwrap()[0];
    assert_eq!(
        subset.ports.as_ref().unwrap()[0].port,
        i32::from(live.port()),
        "named targetPort resolved"
    );
    let labels = ep.metadata.labels.clone().unwrap();
    assert_eq!(
        labels
            .get("endpointslice.kubernetes.io/skip-mirror")
            .map(String::as_str),
        env.serves_endpointslices_v1().then_some("true"),
        "skip-mirror only where roster writes the slices itself"
    );
    let owner = &ep.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("BackendSet", bs.metadata.uid.as_deref().unwrap())
    );
    if env.serves_endpointslices_v1() {
        let want = vec![
            (LIVE_IP.to_owned(), true, true, false),
            (OTHER_IP.to_owned(), false, false, false),
        ];
        let slice = eventually_some("slices from the BackendSet", || async {
            let all = slices(&env, &ns, "db").await;
            (slice_endpoints(&all) == want).then(|| all[0].clone())
        })
        .await;
        let owner = &slice.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("BackendSet", Some(true))
        );
    }

    live.stop();
    wait_endpoints_where(&env, &ns, "db", "the dead backend leaves addresses", |ips| {
        ips.0.is_empty() && ips.1.len() == 2
    })
    .await;

    Api::<BackendSet>::namespaced(env.client(), &ns)
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    wait_unpublished(&env, &ns, "db", "the BackendSet was deleted").await;
    roster.stop().await;
}

on_both_tiers!(e2e_endpoints_follow_backendset);
