//! `roster run`: wire the client, admin server, leader election, writer and controller together.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;
use tokio::sync::{oneshot, watch};

use crate::admin::{self, Readiness};
use crate::write::{LeaderFlag, WriteBudget, Writer};
use crate::args::RunArgs;
use crate::backendset::{Backends, Enqueue};
use crate::controller::{self, Config};
use crate::lease;
use crate::metrics::Metrics;

/// Builds a client from `--kubeconfig`, else KUBECONFIG / ~/.kube/config, else the in-cluster config.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    Ok(Client::try_from(config)?)
}

/// Runs roster until `shutdown` resolves. `admin_bound` receives the admin server's address once bound.
pub async fn run(
    client: Client,
    args: RunArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
    admin_bound: Option<oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (addr, admin_task) = admin::serve(
        args.admin.admin_addr,
        readiness.clone(),
        metrics.clone(),
        stopped(stop_rx.clone()),
    )
    .await
    .with_context(|| format!("binding the admin server to {}", args.admin.admin_addr))?;
    tracing::info!(%addr, "admin server listening (/livez, /readyz, /metrics)");
    if let Some(tx) = admin_bound {
        let _ = tx.send(addr);
    }
    let leader = LeaderFlag::new(false);
    let (became_tx, became_rx) = watch::channel(0u64);
    let election = lease::start(
        client.clone(),
        &args.lease,
        leader.clone(),
        metrics.clone(),
        became_tx,
    )
    .await?;
    let config = Config::from_args(&args.controller);
    let slices_enabled = config.endpointslices && controller::server_serves_slices_v1(&client).await;
    if config.endpointslices && !slices_enabled {
        tracing::warn!("the API server does not serve discovery.k8s.io/v1: EndpointSlices are skipped");
    }
    tracing::info!(services = ?config.services, namespace = ?config.namespace, workers = config.workers,
        slices = slices_enabled, endpoints = config.endpoints, "roster starting");
    let budget = WriteBudget::new(args.controller.write_qps, args.controller.write_burst);
    let writer = Arc::new(Writer::new(
        client.clone(),
        budget,
        metrics.clone(),
        leader.clone(),
        lease::identity(&args.lease),
    ));
    let backendsets = args.controller.backendsets
        && controller::server_serves(&client, "roster.dev/v1alpha1", "backendsets").await;
    if args.controller.backendsets && !backendsets {
        tracing::warn!("the BackendSet CRD is not installed (crds/): BackendSets are skipped");
    }
    let (enqueue_tx, mut enqueue_rx) = tokio::sync::mpsc::unbounded_channel();
    let backends = backendsets.then(|| {
        let enqueue: Enqueue = Arc::new(move |key| {
            let _ = enqueue_tx.send(key);
        });
        Backends::new(
            client.clone(),
            args.backends.clone(),
            config.namespace.clone(),
            metrics.clone(),
            writer.clone(),
            enqueue,
        )
    });
    let mut ctx = controller::Context::new(config, slices_enabled, writer, metrics);
    ctx.backends = backends.as_ref().map(Backends::registry);
    let ctx = Arc::new(ctx);
    let forward = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            while let Some(key) = enqueue_rx.recv().await {
                ctx.enqueue_all([key], false);
            }
        }
    });
    let backends_task = backends.map(|b| tokio::spawn(b.run(stopped(stop_rx.clone()))));
    controller::run(ctx, client, readiness, became_rx, shutdown).await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(task) = backends_task {
        let _ = task.await;
    }
    forward.abort();
    election.release(&leader).await;
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
