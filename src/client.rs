//! The Kubernetes API client: kube's layers (base URI, authentication, headers) over roster's own connector,
//! which speaks HTTP/2 to an API server that offers it (kube-apiserver does, over TLS), so that concurrent
//! requests share one connection instead of paying a TLS handshake each; HTTP/1.1 otherwise. Connections
//! are checked with HTTP/2 pings as client-go checks them. On top, one layer of roster's own counts every
//! request by verb, resource and response code (with its latency), tells [`Liveness`] that the watches are
//! alive, and tells the [`WriteBudget`] how the server answers.
//!
//! kube's own retry of 429, 503 and 504 is not used: roster retries itself, per Service, honouring
//! Retry-After, and its write budget has to see every throttled answer to slow down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{Body, ClientBuilder, ConfigExt};
use kube::{Client, Config};
use tower::{BoxError, Layer, Service, ServiceBuilder};

use crate::admin::Liveness;
use crate::metrics::Metrics;
use crate::write::{Signal, WriteBudget};

/// How often an idle HTTP/2 connection is pinged, and how long a ping may go unanswered before the
/// connection is dropped (client-go's ReadIdleTimeout and PingTimeout).
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// Builds roster's client from `config`.
pub fn build(
    config: Config,
    metrics: Metrics,
    liveness: Liveness,
    budget: Arc<WriteBudget>,
) -> anyhow::Result<Client> {
    let layer = ApiLayer {
        metrics,
        liveness,
        budget,
        version_logged: Arc::default(),
    };
    if config.proxy_url.is_some() {
        // kube's stack knows proxies (and says which feature a proxy needs); it speaks HTTP/1.1.
        let mut config = config;
        config.default_retry = false;
        return Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build());
    }
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_EVERY)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(connector(&config)?);
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(ClientBuilder::new(service, config.default_namespace.clone()).build())
}

/// TLS as kube configures it (certificates, CA, server name), with `h2` and `http/1.1` offered in ALPN
/// (`enable_all_versions`), plain HTTP for `http://` servers; kube's connect, read and write timeouts.
fn connector(
    config: &Config,
) -> anyhow::Result<hyper_timeout::TimeoutConnector<hyper_rustls::HttpsConnector<HttpConnector>>> {
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls::pki_types::ServerName::try_from(name.clone())?;
        builder = builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // HTTP/2 writes a request as several frames: Nagle's algorithm would hold the later ones back until the
    // server acknowledges the first (tens of milliseconds with delayed ACKs).
    http.set_nodelay(true);
    let https = builder.enable_all_versions().wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    Ok(connector)
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
    budget: Arc<WriteBudget>,
    /// The protocol of the first answer is logged once.
    version_logged: Arc<AtomicBool>,
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
            let answer = match &result {
                Ok(response) => {
                    layer.log_version_once(response.version());
                    Answer::Status(response.status(), retry_after(response.headers()))
                }
                Err(_) => Answer::None,
            };
            layer.observe(verb, &resource, answer, started);
            result
        })
    }
}

/// What came back for a request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(StatusCode, Option<Duration>),
    /// No answer: the connection failed or timed out.
    None,
}

impl ApiLayer {
    fn observe(&self, verb: &'static str, resource: &str, answer: Answer, started: Instant) {
        let took = started.elapsed();
        let code = match answer {
            Answer::Status(status, _) => status.as_str().to_owned(),
            Answer::None => "error".to_owned(),
        };
        let labels = [verb, resource, code.as_str()];
        self.metrics.api.requests.with_label_values(&labels).inc();
        match verb {
            // A watch's answer is its headers; the stream that follows is no latency.
            "watch" | "list" => self.liveness.watch_progress(resource),
            _ => {}
        }
        if verb != "watch" {
            self.metrics
                .api
                .request_duration
                .with_label_values(&[verb, resource])
                .observe(took.as_secs_f64());
        }
        if let Some(signal) = budget_signal(verb, answer, took) {
            self.budget.observe(signal);
        }
    }

    fn log_version_once(&self, version: Version) {
        if !self.version_logged.swap(true, Ordering::Relaxed) {
            tracing::info!(?version, "connected to the API server");
        }
    }
}

/// What an answer tells the write budget: every answer to a write; throttling and server errors of reads,
/// which share the server's capacity (API Priority and Fairness puts roster's reads and writes in one
/// priority level).
fn budget_signal(verb: &str, answer: Answer, took: Duration) -> Option<Signal> {
    let write = matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    match answer {
        Answer::Status(StatusCode::TOO_MANY_REQUESTS, after) => Some(Signal::Throttled(after)),
        Answer::Status(status, _) if status.is_server_error() => Some(Signal::ServerError),
        Answer::Status(status, _) if write && status.is_success() => Some(Signal::Written(took)),
        Answer::None if write => Some(Signal::ServerError),
        _ => None,
    }
}

/// The `Retry-After` header in seconds (the form kube-apiserver sends; an HTTP date is ignored).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
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

    #[test]
    fn every_write_answer_and_every_overload_answer_is_a_signal() {
        let ms = Duration::from_millis(5);
        let status = |code: u16, after: Option<u64>| {
            Answer::Status(
                StatusCode::from_u16(code).unwrap(),
                after.map(Duration::from_secs),
            )
        };
        let cases = [
            ("update", status(200, None), Some(Signal::Written(ms))),
            ("create", status(201, None), Some(Signal::Written(ms))),
            (
                "patch",
                status(429, Some(3)),
                Some(Signal::Throttled(Some(Duration::from_secs(3)))),
            ),
            ("list", status(429, None), Some(Signal::Throttled(None))),
            ("delete", status(503, None), Some(Signal::ServerError)),
            ("watch", status(500, None), Some(Signal::ServerError)),
            ("create", Answer::None, Some(Signal::ServerError)),
            ("update", status(409, None), None),
            ("get", status(200, None), None),
            ("watch", Answer::None, None),
        ];
        for (verb, answer, signal) in cases {
            assert_eq!(budget_signal(verb, answer, ms), signal, "{verb} {answer:?}");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(http::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            http::header::RETRY_AFTER,
            "Fri, 31 Dec 1999 23:59:59 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
