//! `roster dev`: roster's in-memory API server embedded in the process, a stand-in kubelet that assigns pod
//! IPs and Ready conditions, and the controller (services mode `all`) running against it. `--demo` seeds a
//! small world and changes it, printing every Service's endpoints as they follow.

mod demo;
mod kubelet;
mod table;

use std::io::IsTerminal;

use anyhow::Context as _;
use clap::Parser;
use roster_apiserver::{MemoryApiServer, MemoryOptions};

use crate::args::{Cli, Command, DevArgs};

pub use kubelet::READY_ANNOTATION;

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let options = MemoryOptions {
        addr: args.api_addr,
        ..MemoryOptions::default()
    };
    let server = MemoryApiServer::start(options)
        .await
        .context("starting the embedded API server")?;
    server
        .write_kubeconfig(&args.kubeconfig_out)
        .with_context(|| format!("writing {}", args.kubeconfig_out.display()))?;
    let kubeconfig = std::fs::canonicalize(&args.kubeconfig_out)?;
    let client = server.client().await?;
    println!("roster dev: API server at {}", server.url());
    println!("roster dev: export KUBECONFIG={}", kubeconfig.display());
    println!("roster dev: then try `kubectl get endpoints`; Ctrl-C stops everything");

    install_crds(&client)
        .await
        .context("installing the BackendSet CRD")?;
    let kubelet = tokio::spawn(kubelet::run(client.clone()));
    let mut run_args = controller_args(&args)?;
    run_args.log = args.log.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let stopped = async {
        let _ = stop_rx.await;
    };
    let config = server.client_config();
    let mut controller = tokio::spawn(crate::run::run(config, run_args, stopped, Some(bound_tx)));
    // The controller either binds its admin server or fails (a port in use, say): then dev fails with it.
    tokio::select! {
        Ok(addr) = bound_rx => println!("roster dev: admin server (/metrics, /livez, /readyz): export ROSTER_ADMIN=http://{addr}"),
        result = &mut controller => return Err(stopped_early(result)),
    }
    let table = tokio::spawn(table::run(client.clone(), std::io::stdout().is_terminal()));
    if args.demo {
        demo::run(client.clone()).await.context("seeding the demo")?;
    }
    let result = tokio::select! {
        _ = crate::run::shutdown_signal() => {
            let _ = stop_tx.send(());
            controller.await.map_err(anyhow::Error::from).and_then(|r| r)
        }
        result = &mut controller => Err(stopped_early(result)),
    };
    kubelet.abort();
    table.abort();
    server.shutdown().await;
    result
}

/// The error of a controller that stopped before it was asked to.
fn stopped_early(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match result {
        Ok(Err(err)) => err,
        Ok(Ok(())) => anyhow::anyhow!("the controller stopped"),
        Err(err) => anyhow::Error::from(err).context("the controller failed"),
    }
}

/// Registers roster's CRDs in the embedded server and waits until they are served.
async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    use kube::runtime::{conditions, wait::await_condition};
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let crd = crate::backendset::BackendSet::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.create(&Default::default(), &crd).await?;
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(std::time::Duration::from_secs(10), established).await??;
    Ok(())
}

/// `roster run --services=all` with the dev command's admin address, and no leader election (one replica).
fn controller_args(args: &DevArgs) -> anyhow::Result<crate::args::RunArgs> {
    let admin = args.admin_addr.to_string();
    let argv = [
        "roster",
        "run",
        "--services",
        "all",
        "--leader-elect=false",
        "--admin-addr",
        &admin,
    ];
    let cli = Cli::try_parse_from(argv)?;
    match cli.command {
        Command::Run(run) => Ok(run),
        _ => unreachable!("parsed a run command"),
    }
}
