//! Command-line flags: a clap struct of flattened groups; every flag can also come from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "roster",
    version,
    about = "Keeps every Service's Endpoints and EndpointSlices right"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// Run the controller against a cluster (kubeconfig from --kubeconfig, KUBECONFIG, or in-cluster).
    Run(RunArgs),
    /// Start an in-memory API server with roster running against it, for trying roster without a cluster.
    #[cfg(feature = "dev")]
    Dev(DevArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Path to a kubeconfig file; default: KUBECONFIG, then ~/.kube/config, then the in-cluster config.
    #[arg(long, env = "ROSTER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub controller: ControllerArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub backends: crate::backendset::BackendArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Seed a small demo world and play the kubelet for it.
    #[arg(long, env = "ROSTER_DEV_DEMO")]
    pub demo: bool,
    /// Where to write the kubeconfig of the embedded API server.
    #[arg(long, env = "ROSTER_DEV_KUBECONFIG", default_value = "roster-dev.kubeconfig")]
    pub kubeconfig_out: PathBuf,
    /// Address of the embedded API server.
    #[arg(long, env = "ROSTER_DEV_API_ADDR", default_value = "127.0.0.1:0")]
    pub api_addr: SocketAddr,
    /// Address of the admin server (/livez, /readyz, /metrics); port 0 takes a free one, which is printed.
    #[arg(long, env = "ROSTER_DEV_ADMIN_ADDR", default_value = "127.0.0.1:0")]
    pub admin_addr: SocketAddr,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Which Services roster manages.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServicesMode {
    /// Every Service (the built-in endpoint controllers must be disabled).
    All,
    /// Only selectorless Services annotated `roster.dev/selector` (safe beside the built-in controllers).
    Annotated,
}

#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Which Services to manage.
    #[arg(long, env = "ROSTER_SERVICES", value_enum, default_value = "annotated")]
    pub services: ServicesMode,
    /// Watch and manage only this namespace (default: all namespaces).
    #[arg(long, env = "ROSTER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Services reconciled concurrently.
    #[arg(long, env = "ROSTER_WORKERS", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Coalesce pod changes of a Service for at most this long before writing (0: write at once).
    #[arg(long, env = "ROSTER_BATCH_WINDOW", default_value = "0s", value_parser = parse_duration)]
    pub batch_window: Duration,
    /// Sustained API writes per second.
    #[arg(long, env = "ROSTER_WRITE_QPS", default_value_t = 20.0)]
    pub write_qps: f64,
    /// Burst of API writes above the sustained rate.
    #[arg(long, env = "ROSTER_WRITE_BURST", default_value_t = 30)]
    pub write_burst: u32,
    /// Largest number of endpoints in one EndpointSlice (1..=1000).
    #[arg(long, env = "ROSTER_MAX_ENDPOINTS_PER_SLICE", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_endpoints_per_slice: u16,
    /// Maintain v1 Endpoints objects.
    #[arg(long, env = "ROSTER_ENDPOINTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub endpoints: bool,
    /// Maintain discovery.k8s.io/v1 EndpointSlices (skipped with one log line when the server lacks v1).
    #[arg(long, env = "ROSTER_ENDPOINTSLICES", default_value_t = true, action = clap::ArgAction::Set)]
    pub endpointslices: bool,
    /// Run the BackendSet controller (skipped with one log line when the BackendSet CRD is not installed).
    #[arg(long, env = "ROSTER_BACKENDSETS", default_value_t = true, action = clap::ArgAction::Set)]
    pub backendsets: bool,
    /// Shadow mode: compute every Service's Endpoints and EndpointSlices as `--services=all` would and compare
    /// them with what is live (the built-in controllers' objects), writing nothing at all (no objects, no
    /// Events, no Lease): differences are reported as metrics and log lines.
    #[arg(long, env = "ROSTER_SHADOW", default_value_t = false, action = clap::ArgAction::Set)]
    pub shadow: bool,
    /// Shadow mode: how long a difference must last before it counts (one side may not have caught up yet).
    #[arg(long, env = "ROSTER_SHADOW_SETTLE", default_value = "5s", value_parser = parse_duration)]
    pub shadow_settle: Duration,
    /// Taking over from the built-in controllers, roster deletes their EndpointSlices only once none of them
    /// has been created or changed for this long (they are still running before that).
    #[arg(long, env = "ROSTER_UPSTREAM_QUIET", default_value = "2m", value_parser = parse_duration)]
    pub upstream_quiet: Duration,
    /// Handing a Service back to the built-in controllers, roster keeps its EndpointSlices until an upstream
    /// slice exists; after this long without one it raises a Warning Event (and keeps waiting).
    #[arg(long, env = "ROSTER_HANDBACK_WARN_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub handback_warn_after: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Address of the admin server (/livez, /readyz, /metrics).
    #[arg(long, env = "ROSTER_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
}

#[derive(Args, Debug, Clone)]
pub struct LeaseArgs {
    /// Elect a leader through a Lease; only the leader writes.
    #[arg(long, env = "ROSTER_LEADER_ELECT", default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "ROSTER_LEASE_NAME", default_value = "roster")]
    pub lease_name: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, then "default").
    #[arg(long, env = "ROSTER_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a Lease stays valid after its last renewal.
    #[arg(long, env = "ROSTER_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Identity of this replica (default: POD_NAME, then the host name).
    #[arg(long, env = "ROSTER_IDENTITY")]
    pub identity: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "ROSTER_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    /// Log filter in tracing's EnvFilter syntax.
    #[arg(long, env = "ROSTER_LOG", default_value = "info")]
    pub log_level: String,
}

/// Durations such as `500ms`, `2s`, `1m`, `1h` (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}': expected e.g. 500ms, 2s, 1m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit '{unit}' in '{s}': use ms, s, m or h"
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn run_defaults_are_safe_beside_builtin_controllers() {
        let cli = Cli::try_parse_from(["roster", "run"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(run.controller.services, ServicesMode::Annotated);
        assert_eq!(run.controller.max_endpoints_per_slice, 100);
        assert!(run.controller.endpoints && run.controller.endpointslices);
        assert_eq!(run.controller.batch_window, Duration::ZERO);
    }

    #[test]
    fn slice_size_is_bounded() {
        assert!(Cli::try_parse_from(["roster", "run", "--max-endpoints-per-slice", "1001"]).is_err());
        assert!(Cli::try_parse_from(["roster", "run", "--max-endpoints-per-slice", "0"]).is_err());
    }
}
