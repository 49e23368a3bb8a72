//! End-to-end: roster against a real client of each tier, playing the kubelet.

mod support;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use roster_envtest::{TestEnv, Tier, fixtures};
use serde_json::json;
use support::*;

const WEB: &[(&str, &str)] = &[("app", "web")];

async fn env_and_ns(tier: Tier, prefix: &str) -> (TestEnv, String) {
    let world = World::builder(tier, prefix).node("n1", Some("zone-a"));
    let World { env, ns } = world.build().await;
    (env, ns)
}

/// Starts pods `web-<i>`, all ready or all not; returns their IPs.
async fn start_web_pods(env: &TestEnv, ns: &str, count: usize, ready: bool) -> Vec<String> {
    let ips: Vec<String> = (0..count).map(|i| format!("10.1.0.{}", 10 + i)).collect();
    let pods = ips.iter().enumerate().map(|(i, ip)| {
        PodPlan::new(format!("web-{i}"), WEB, ip)
            .port("http", 80)
            .ready(ready)
    });
    start_pods(env, ns, pods).await;
    ips
}

async fn readiness_follows_pods(tier: Tier) {
    let (env, ns) = env_and_ns(tier, "ready").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    create(
        &env,
        &ns,
        &fixtures::service("web", WEB, &[("http", 8080, "http")]),
    )
    .await;
    let ips = start_web_pods(&env, &ns, 3, true).await;
    let ep = wait_endpoint_ips(&env, &ns, "web", &[&ips[0], &ips[1], &ips[2]], &[]).await;
    let ports = ep.subsets.unwrap()[0].ports.clone().unwrap();
    assert_eq!(
        (ports[0].port, ports[0].name.as_deref()),
        (80, Some("http")),
        "named targetPort resolved"
    );

    env.kubelet().set_ready(&ns, "web-1", false).await.unwrap();
    wait_endpoint_ips(&env, &ns, "web", &[&ips[0], &ips[2]], &[&ips[1]]).await;

    env.kubelet().delete_gracefully(&ns, "web-2").await.unwrap();
    wait_endpoint_ips(&env, &ns, "web", &[&ips[0]], &[&ips[1]]).await;
    if env.serves_endpointslices_v1() {
        let terminating = eventually_some("terminating endpoint in slices", || async {
            let eps = slice_endpoints(&slices(&env, &ns, "web").await);
            eps.iter().find(|e| e.0 == ips[2] && e.3).cloned()
        })
        .await;
        assert_eq!(
            terminating,
            (ips[2].clone(), false, true, true),
            "terminating: not ready, still serving"
        );
    }
    env.kubelet().finish_deletion(&ns, "web-2").await.unwrap();
    env.kubelet().set_phase(&ns, "web-0", "Failed").await.unwrap();
    wait_endpoint_ips(&env, &ns, "web", &[], &[&ips[1]]).await;
    roster.stop().await;
}

async fn selector_and_type_changes_clean_up(tier: Tier) {
    let (env, ns) = env_and_ns(tier, "change").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    create(&env, &ns, &fixtures::service("web", WEB, &[("http", 8080, "80")])).await;
    let ips = start_web_pods(&env, &ns, 2, true).await;
    wait_endpoint_ips(&env, &ns, "web", &[&ips[0], &ips[1]], &[]).await;

    let relabel = json!({"metadata": {"labels": {"app": "other"}}});
    merge_patch::<Pod>(&env, &ns, "web-1", relabel).await;
    wait_endpoint_ips(&env, &ns, "web", &[&ips[0]], &[]).await;

    let to_other = json!({"spec": {"selector": {"app": "other"}}});
    merge_patch::<Service>(&env, &ns, "web", to_other).await;
    wait_endpoint_ips(&env, &ns, "web", &[&ips[1]], &[]).await;

    // Removing the selector: roster removes the Endpoints it made (upstream leaves them stale, #91072).
    let selectorless = json!({"spec": {"selector": null}});
    merge_patch::<Service>(&env, &ns, "web", selectorless).await;
    wait_endpoints_gone(&env, &ns, "web", "the selector was removed").await;
    roster.stop().await;
}

async fn external_name_gets_no_endpoints(tier: Tier) {
    let (env, ns) = env_and_ns(tier, "extname").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    create(&env, &ns, &fixtures::service("db", WEB, &[("pg", 5432, "5432")])).await;
    let ips = start_web_pods(&env, &ns, 1, true).await;
    wait_endpoint_ips(&env, &ns, "db", &[&ips[0]], &[]).await;
    let to_external = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com", "clusterIP": "", "clusterIPs": null}});
    merge_patch::<Service>(&env, &ns, "db", to_external).await;
    wait_endpoints_gone(&env, &ns, "db", "an ExternalName Service has none").await;
    roster.stop().await;
}

async fn hand_made_endpoints_are_never_touched(tier: Tier) {
    let (env, ns) = env_and_ns(tier, "manual").await;
    let roster = Roster::start(&env, &ns, &["--services", "all"]).await;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "my-service"}, "spec": {"ports": [{"port": 80, "targetPort": 9376}]}
    }))
    .unwrap();
    create(&env, &ns, &svc).await;
    let manual: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "my-service", "labels": {"owner": "me"}},
        "subsets": [{"addresses": [{"ip": "192.0.2.42"}], "ports": [{"port": 9376}]}]
    }))
    .unwrap();
    let created = create(&env, &ns, &manual).await;
    if env.serves_endpointslices_v1() {
        let mirrored = wait_filled_slice(&env, &ns, "my-service").await;
        assert_eq!(mirrored.endpoints[0].addresses, vec!["192.0.2.42".to_string()]);
        assert_eq!(
            mirrored.metadata.labels.as_ref().unwrap()["owner"],
            "me",
            "Endpoints labels mirrored"
        );
    } else {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let after = endpoints(&env, &ns, "my-service").await.expect("still there");
    assert_eq!(
        after.metadata.resource_version, created.metadata.resource_version,
        "never written by roster"
    );
    roster.stop().await;
}

async fn annotated_mode_manages_only_annotated_services(tier: Tier) {
    let (env, ns) = env_and_ns(tier, "annot").await;
    let roster = Roster::start(&env, &ns, &["--services", "annotated"]).await;
    let annotated: Service = serde_json::from_value(json!({
        "metadata": {"name": "picked", "annotations": {"roster.dev/selector": "app=web"}},
        "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}
    }))
    .unwrap();
    create(&env, &ns, &annotated).await;
    create(
        &env,
        &ns,
        &fixtures::service("builtin", WEB, &[("http", 8080, "80")]),
    )
    .await;
    let ips = start_web_pods(&env, &ns, 2, true).await;
    let ep = wait_endpoint_ips(&env, &ns, "picked", &[&ips[0], &ips[1]], &[]).await;
    assert_eq!(
        ep.metadata
            .labels
            .unwrap()
            .get("endpointslice.kubernetes.io/skip-mirror")
            .map(String::as_str),
        env.serves_endpointslices_v1().then_some("true"),
        "skip-mirror only where roster writes the slices itself: else nobody would"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        endpoints(&env, &ns, "builtin").await.is_none(),
        "selector Services are left to the built-in controller"
    );
    roster.stop().await;
}

on_both_tiers!(
    readiness_follows_pods,
    selector_and_type_changes_clean_up,
    external_name_gets_no_endpoints,
    hand_made_endpoints_are_never_touched,
    annotated_mode_manages_only_annotated_services,
);
