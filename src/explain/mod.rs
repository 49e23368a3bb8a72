//! `roster explain service/NAME`: why a Service has, or lacks, its endpoints; the seed notes'
//! troubleshooting checklist for Services, automated.
//!
//! Three parts, one way: [`read()`] gets the Service and everything its endpoints come from (get and list
//! only: no watch, no write); [`explain()`] explains them without I/O, each pod's verdict coming from the
//! decision the Endpoints and EndpointSlices are built with ([`crate::desired::endpoints_entry`],
//! [`crate::desired::slice_entry`]) and the drift from [`crate::desired::compare`]; [`render`] prints the
//! report as a table or JSON. The exit code ([`Outcome::exit_code`]) makes it a check.
//!
//! As a kubectl plugin, `kubectl roster explain ...` runs `kubectl-roster explain ...`: a `kubectl-roster`
//! link to the roster binary on PATH is all it takes (invoked under that name, roster's usage says
//! `kubectl roster`).

mod args;
mod drift;
mod hints;
mod pods;
mod read;
pub mod render;
mod report;

#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::process::ExitCode;

pub use args::{ExplainArgs, OutputFormat, parse_service};
pub use drift::{Drift, DriftItem, Live, LiveEndpoints, LiveSlice, ManagedBy, Who};
pub use pods::{NearMiss, Placement, PodExplanation, PortResolution, SlicePlacement, Verdict};
pub use read::{Objects, read};
pub use report::{Outcome, PortSummary, Report, ServiceSummary, Source, explain};

/// The name kubectl runs roster by as a plugin (`kubectl roster ...`).
pub const PLUGIN_BINARY: &str = "kubectl-roster";

/// Reads and explains the Service `namespace/name` as of now.
pub async fn explain_service(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<Report> {
    let objects = read(client, namespace, name).await?;
    Ok(explain(&objects, jiff::Timestamp::now()))
}

/// `roster explain`: prints the report; the exit code tells the outcome.
pub async fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let config = crate::client::config(args.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config)?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let reading = explain_service(&client, &namespace, &args.service);
    let report = tokio::time::timeout(args.timeout, reading)
        .await
        .map_err(|_| anyhow::anyhow!("the API server did not answer within {:?}", args.timeout))??;
    let text = match args.output {
        OutputFormat::Table => render::table(&report),
        OutputFormat::Json => render::json(&report),
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => return Err(err.into()),
        _ => {}
    }
    Ok(ExitCode::from(report.exit_code))
}
