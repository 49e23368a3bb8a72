//! The facade: a translating HTTPS proxy in front of the real tier's kube-apiserver 1.20, which serves
//! EndpointSlices as `discovery.k8s.io/v1beta1` only. The facade serves them as `discovery.k8s.io/v1`
//! ([`convert`] has the field mapping) and forwards every other request untouched, watches streamed. roster,
//! kubectl and kube clients talk to it as to any API server; `TestEnv::apiserver_url` still reaches
//! kube-apiserver itself.
//!
//! It is hand-written on hyper's server (hyper is already here for http.rs) rather than axum: it has no
//! routes of its own, only "translate these paths, forward the rest", and it must stream forwarded bodies
//! and rewrite a watch one event at a time, which a router adds nothing to. Upstream requests go through
//! kube's client, which speaks TLS to kube-apiserver like every test client.
//!
//! The facade listens on loopback with kube-apiserver's own self-signed serving certificate, so clients
//! keep their TLS settings. It runs on a runtime of its own, on its own thread: test harnesses give each
//! test its own tokio runtime, while one real server (and its facade) serves a whole test binary.

pub mod convert;
pub mod discovery;
mod proxy;
pub mod status;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use proxy::Upstream;

/// A running facade; it stops when dropped.
pub struct Facade {
    url: String,
    upstream_url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Facade {
    /// Starts a facade in front of kube-apiserver at `upstream_url`, serving TLS with the certificate
    /// kube-apiserver generated in `cert_dir` (`apiserver.crt`, `apiserver.key`).
    pub fn start(upstream_url: &str, cert_dir: &Path) -> anyhow::Result<Facade> {
        let acceptor = tls_acceptor(cert_dir)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let upstream = upstream_url.to_string();
        std::thread::Builder::new()
            .name("envtest-facade".into())
            .spawn(move || run(listener, acceptor, upstream, stopped, ready_tx))
            .context("starting the facade's thread")?;
        ready_rx
            .recv()
            .context("the facade's thread ended during start-up")??;
        Ok(Facade {
            url,
            upstream_url: upstream_url.to_string(),
            stop: Some(stop),
        })
    }

    /// Whether the real tier puts a facade in front of kube-apiserver: yes unless `ROSTER_FACADE=off`.
    pub fn wanted() -> anyhow::Result<bool> {
        match std::env::var("ROSTER_FACADE").unwrap_or_default().as_str() {
            "" | "on" => Ok(true),
            "off" => Ok(false),
            other => anyhow::bail!("ROSTER_FACADE={other}: expected on or off"),
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The kube-apiserver this facade forwards to.
    pub fn upstream_url(&self) -> String {
        self.upstream_url.clone()
    }
}

impl Drop for Facade {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The facade's thread: its runtime, the upstream client, then the accept loop until `stopped`.
fn run(
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    upstream_url: String,
    stopped: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("envtest-facade")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    runtime.block_on(async move {
        let started = async {
            let config = crate::kubeconfig::config(&upstream_url, None).await?;
            let client = kube::Client::try_from(config)?;
            Ok::<_, anyhow::Error>((TcpListener::from_std(listener)?, Arc::new(Upstream::new(client))))
        };
        match started.await {
            Ok((listener, upstream)) => {
                let _ = ready.send(Ok(()));
                serve(listener, acceptor, upstream, stopped).await;
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    });
    runtime.shutdown_background();
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    upstream: Arc<Upstream>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "facade: accept failed");
                    continue;
                }
            },
        };
        let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |req| {
                let upstream = upstream.clone();
                async move { Ok::<_, std::convert::Infallible>(upstream.handle(req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(error = %e, "facade: connection ended");
            }
        });
    }
}

/// TLS with kube-apiserver's self-signed serving certificate; HTTP/1.1 only.
fn tls_acceptor(cert_dir: &Path) -> anyhow::Result<TlsAcceptor> {
    let cert_file = cert_dir.join("apiserver.crt");
    let certs = CertificateDer::pem_file_iter(&cert_file)
        .with_context(|| format!("reading {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key =
        PrivateKeyDer::from_pem_file(cert_dir.join("apiserver.key")).context("reading apiserver.key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
