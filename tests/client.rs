//! roster's API client on a real kube-apiserver: HTTP/2 where the server offers it over TLS (concurrent
//! requests share one connection), HTTP/1.1 where it does not (the test environment's facade), and the
//! write budget fed by every answer either way.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use http::{Request, Version};
use roster::admin::Liveness;
use roster::metrics::Metrics;
use roster::write::{BudgetMode, WriteBudget};
use roster_envtest::{TestEnv, Tier, kubeconfig};
use support::*;

/// roster's client for `url` with the test environment's admin credentials, and its metrics.
async fn roster_client(url: &str) -> (kube::Client, Metrics) {
    let config = kubeconfig::admin_config(url).await.expect("client config");
    let metrics = Metrics::new();
    let mode = BudgetMode::Adaptive {
        ceiling: 100.0,
        burst: 100,
    };
    let budget = Arc::new(WriteBudget::new(mode, metrics.clone()));
    let liveness = Liveness::new(Duration::from_secs(600));
    let client = roster::client::build(config, metrics.clone(), liveness, budget).expect("roster's client");
    (client, metrics)
}

/// The HTTP versions of `n` concurrent lists of namespaces (a list answers from the first moment; the default
/// namespace itself is created by kube-apiserver shortly after it starts serving).
async fn versions(client: &kube::Client, n: usize) -> Vec<Version> {
    let get = || {
        let request = Request::get("/api/v1/namespaces?limit=1")
            .body(Vec::new())
            .unwrap();
        client.send(request.map(Into::into))
    };
    let answers = join_all((0..n).map(|_| get())).await;
    answers
        .into_iter()
        .map(|answer| {
            let answer = answer.expect("an answer");
            assert!(answer.status().is_success(), "{}", answer.status());
            answer.version()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_speaks_http2_to_kube_apiserver_and_http1_where_it_must() {
    if !tier_available(Tier::Real) {
        return;
    }
    let env = TestEnv::start_tier(Tier::Real).await.expect("test environment");
    let (direct, metrics) = roster_client(&env.apiserver_url()).await;
    let seen = versions(&direct, 32).await;
    assert!(
        seen.iter().all(|v| *v == Version::HTTP_2),
        "kube-apiserver over TLS: {seen:?}"
    );
    let m = metrics.render();
    let gets = metric_sum(
        &m,
        "roster_api_requests_total{code=\"200\",resource=\"namespaces\",verb=\"list\"}",
    );
    assert_eq!(
        gets, 32.0,
        "each request is counted by the client's own layer:\n{m}"
    );
    if env.url() != env.apiserver_url() {
        // The facade serves HTTP/1.1 only: the client falls back.
        let (facade, _) = roster_client(&env.url()).await;
        let seen = versions(&facade, 4).await;
        assert!(
            seen.iter().all(|v| *v == Version::HTTP_11),
            "the facade: {seen:?}"
        );
    }
}
