//! `roster run`: wires the client, admin server, leader election, writer and controller together, with one
//! stop signal and one leadership signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Health, Liveness, Readiness};
use crate::args::RunArgs;
use crate::client;
use crate::controller::{self, Config};
use crate::lease;
use crate::metrics::Metrics;
use crate::write::{Leadership, WriteBudget, Writer};

/// Runs roster against the API server `config` names until `shutdown` resolves. `admin_bound` receives the
/// admin server's address once bound; a port that cannot be bound is an error.
pub async fn run(
    config: kube::Config,
    args: RunArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
    admin_bound: Option<oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let liveness = Liveness::new(args.admin.livez_stall_after);
    let admin_addr = args.admin.admin_addr;
    let serving = admin::serve(
        admin_addr,
        readiness.clone(),
        liveness.clone(),
        metrics.clone(),
        stop.clone().cancelled_owned(),
    );
    let (addr, admin_task) = serving
        .await
        .with_context(|| format!("binding the admin server to {admin_addr}"))?;
    tracing::info!(%addr, "admin server listening (/livez, /readyz, /metrics)");
    if let Some(tx) = admin_bound {
        let _ = tx.send(addr);
    }
    let budget = Arc::new(WriteBudget::new(args.controller.budget_mode(), metrics.clone()));
    let client = client::build(config, metrics.clone(), liveness.clone(), budget.clone())?;
    let leadership = Leadership::new(false);
    // Shadow mode writes nothing, a Lease included: it never leads, so the writer refuses every write.
    let election = match args.controller.shadow {
        true => None,
        false => Some(lease::start(client.clone(), &args.lease, leadership.clone(), metrics.clone()).await?),
    };
    let mut ctx = context(&client, &args, leadership.clone(), metrics, budget).await;
    ctx.config.watch_timeout = liveness.watch_timeout();
    let health = Health { readiness, liveness };
    controller::run(Arc::new(ctx), client, health, stop.clone()).await;
    tracing::info!("shutting down");
    stop.cancel();
    if let Some(election) = election {
        election.release(&leadership).await;
    }
    let _ = admin_task.await;
    Ok(())
}

/// The controller's context: what the server serves decides whether slices and BackendSets are handled.
async fn context(
    client: &Client,
    args: &RunArgs,
    leadership: Leadership,
    metrics: Metrics,
    budget: Arc<WriteBudget>,
) -> controller::Context {
    let config = Config::from_args(&args.controller);
    let slices_enabled = config.endpointslices
        && controller::server_serves(client, "discovery.k8s.io/v1", "endpointslices").await;
    if config.endpointslices && !slices_enabled {
        tracing::warn!("the API server does not serve discovery.k8s.io/v1: EndpointSlices are skipped");
    }
    let backendsets = args.controller.backendsets
        && controller::server_serves(client, "roster.dev/v1alpha1", "backendsets").await;
    if args.controller.backendsets && !backendsets {
        tracing::warn!("the BackendSet CRD is not installed (crds/): BackendSets are skipped");
    }
    tracing::info!(services = ?config.services, namespace = ?config.namespace, workers = config.workers,
        slices = slices_enabled, endpoints = config.endpoints, backendsets, shadow = config.shadow, "roster starting");
    if config.shadow {
        tracing::info!(
            "shadow mode: comparing what --services=all would write with what is live; writing nothing"
        );
    }
    tracing::info!(budget = ?args.controller.budget_mode(), "write budget");
    let identity = lease::identity(&args.lease);
    let writer = Writer::new(client.clone(), budget, metrics.clone(), leadership, identity);
    let backendsets = backendsets.then(|| args.backends.clone());
    let mut ctx = controller::Context::new(config, slices_enabled, writer, metrics, backendsets);
    ctx.hints_supported = slices_enabled && controller::topology::server_stores_hints(client).await;
    if slices_enabled && !ctx.hints_supported {
        tracing::warn!(
            "the API server cannot store EndpointSlice hints (before 1.21): no topology hints are written"
        );
    }
    ctx
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
