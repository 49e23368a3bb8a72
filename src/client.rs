//! The Kubernetes API client: kube's HTTP stack with one layer of roster's own, which counts every request by
//! verb, resource and response code (with its latency) and tells [`Liveness`] that the watches are alive.
//!
//! kube's own retry of 429, 503 and 504 is turned off: roster retries itself, per Service, honouring
//! Retry-After, and its write budget has to see every throttled answer to slow down.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response, Uri};
use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tower::{Layer, Service};

use crate::admin::Liveness;
use crate::metrics::Metrics;

/// Builds roster's client from `config`.
pub fn build(mut config: Config, metrics: Metrics, liveness: Liveness) -> anyhow::Result<Client> {
    config.default_retry = false;
    let layer = ApiLayer { metrics, liveness };
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

/// The config from `--kubeconfig`, else KUBECONFIG / ~/.kube/config, else the in-cluster config.
pub async fn config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Config> {
    use anyhow::Context as _;
    match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Ok(Config::from_custom_kubeconfig(kc, &Default::default()).await?)
        }
        None => Config::infer()
            .await
            .context("no kubeconfig and not in a cluster"),
    }
}

#[derive(Clone)]
struct ApiLayer {
    metrics: Metrics,
    liveness: Liveness,
}

impl<S> Layer<S> for ApiLayer {
    type Service = ApiService<S>;

    fn layer(&self, inner: S) -> ApiService<S> {
        ApiService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
struct ApiService<S> {
    inner: S,
    layer: ApiLayer,
}

impl<S, B> Service<Request<Body>> for ApiService<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (verb, resource) = classify(request.method(), request.uri());
        let started = Instant::now();
        let answer = self.inner.call(request);
        let layer = self.layer.clone();
        Box::pin(async move {
            let result = answer.await;
            let code = match &result {
                Ok(response) => response.status().as_str().to_owned(),
                Err(_) => "error".to_owned(),
            };
            layer.observe(verb, &resource, &code, started);
            result
        })
    }
}

impl ApiLayer {
    fn observe(&self, verb: &'static str, resource: &str, code: &str, started: Instant) {
        let labels = [verb, resource, code];
        self.metrics.api_requests.with_label_values(&labels).inc();
        match verb {
            // A watch's answer is its headers; the stream that follows is no latency.
            "watch" | "list" => self.liveness.watch_progress(resource),
            _ => {}
        }
        if verb != "watch" {
            let seconds = started.elapsed().as_secs_f64();
            self.metrics
                .api_request_duration
                .with_label_values(&[verb, resource])
                .observe(seconds);
        }
    }
}

/// The verb and resource of a request, as kube-apiserver's audit log names them (`pods`, `pods/status`).
fn classify(method: &Method, uri: &Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    };
    let Some(rest) = rest.filter(|r| !r.is_empty()) else {
        return (http_verb(method, false, false), "discovery".to_owned());
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let resource = match rest {
        [kind, _, sub, ..] => format!("{kind}/{sub}"),
        [kind, ..] => (*kind).to_owned(),
        [] => "discovery".to_owned(),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    (http_verb(method, rest.len() == 1, watch), resource)
}

fn http_verb(method: &Method, collection: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if collection => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_as_the_audit_log_names_them() {
        let cases = [
            (
                Method::GET,
                "/api/v1/pods?watch=true&resourceVersion=5",
                "watch",
                "pods",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/endpoints?limit=500",
                "list",
                "endpoints",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/endpoints/web",
                "get",
                "endpoints",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/a/endpoints/web",
                "update",
                "endpoints",
            ),
            (
                Method::POST,
                "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices",
                "create",
                "endpointslices",
            ),
            (
                Method::PATCH,
                "/apis/roster.dev/v1alpha1/namespaces/a/backendsets/db/status",
                "patch",
                "backendsets/status",
            ),
            (
                Method::DELETE,
                "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices/web-x",
                "delete",
                "endpointslices",
            ),
            (Method::GET, "/api/v1/nodes/n1", "get", "nodes"),
            (Method::GET, "/apis/discovery.k8s.io/v1", "get", "discovery"),
            (Method::GET, "/version", "get", "discovery"),
        ];
        for (method, uri, verb, resource) in cases {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(classify(&method, &uri), (verb, resource.to_owned()), "{uri}");
        }
    }
}
