//! Command-line flags: a clap struct of flattened groups; every flag can also come from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A flag given twice takes its last value, as Go's flag package and kubectl do: the chart's `extraArgs`
/// come after the flags it renders and so override them.
#[derive(Parser, Debug)]
#[command(
    name = "roster",
    version,
    about = "Keeps every Service's Endpoints and EndpointSlices right",
    args_override_self = true
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
    /// Explain why a Service has, or lacks, its endpoints, pod by pod (read only; exit 0: ready endpoints
    /// and no drift, 3: no ready endpoint, 4: drift). Also `kubectl roster explain` with a kubectl-roster
    /// link on PATH.
    Explain(crate::explain::ExplainArgs),
}

impl Cli {
    /// The command line of this process. Run by kubectl as the `kubectl-roster` plugin, usage and errors
    /// name the command `kubectl roster`.
    pub fn parse_invoked() -> Cli {
        let argv0 = std::env::args_os().next().unwrap_or_default();
        let stem = std::path::Path::new(&argv0).file_stem();
        let mut command = <Cli as clap::CommandFactory>::command();
        if stem.is_some_and(|s| s == crate::explain::PLUGIN_BINARY) {
            command = command.bin_name("kubectl roster");
        }
        let matches = command.get_matches();
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
    }
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

/// How the write budget sets its rate.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetKind {
    /// Follow the API server's answers, up to `--write-qps`.
    Adaptive,
    /// Exactly `--write-qps`, with `--write-burst`.
    Fixed,
}

impl ControllerArgs {
    /// The write budget these flags ask for.
    pub fn budget_mode(&self) -> crate::write::BudgetMode {
        use crate::write::BudgetMode;
        match self.write_budget {
            BudgetKind::Adaptive => BudgetMode::Adaptive {
                ceiling: self.write_qps,
                burst: self.write_burst,
            },
            BudgetKind::Fixed => BudgetMode::Fixed {
                qps: self.write_qps,
                burst: self.write_burst,
            },
        }
    }
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
    /// How the write budget sets its rate: `adaptive` follows the API server's answers (slower on 429,
    /// Retry-After, 5xx and slow writes, back up while writes succeed) up to `--write-qps`; `fixed` keeps
    /// `--write-qps` and `--write-burst` as they are.
    #[arg(long, env = "ROSTER_WRITE_BUDGET", value_enum, default_value = "adaptive")]
    pub write_budget: BudgetKind,
    /// API writes per second: the ceiling of the adaptive budget, the rate of the fixed one (a positive
    /// number, fractions allowed).
    #[arg(long, env = "ROSTER_WRITE_QPS", default_value = "200", value_parser = parse_write_qps)]
    pub write_qps: f64,
    /// API writes at once above the rate (at least 1); the adaptive budget scales it with its rate.
    #[arg(long, env = "ROSTER_WRITE_BURST", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
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
    /// /livez fails when a watch has made no progress (no event, no answered list or watch request, an
    /// error included) for this long, or a worker has spent this long on one key. Longer than the watch
    /// retry backoff (30 s), so that an API server that is briefly away does not fail it.
    #[arg(long, env = "ROSTER_LIVEZ_STALL_AFTER", default_value = "10m", value_parser = parse_positive_duration)]
    pub livez_stall_after: Duration,
}

/// Leader election is on by default: a second replica, or a rolling update's new pod beside the old one,
/// must never write beside the first. A single process that wants no Lease (a laptop, a test) says
/// `--leader-elect=false`.
#[derive(Args, Debug, Clone)]
pub struct LeaseArgs {
    /// Elect a leader through a Lease; only the leader writes. Turn off only where one process runs.
    #[arg(long, env = "ROSTER_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "ROSTER_LEASE_NAME", default_value = "roster")]
    pub lease_name: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, then "default").
    #[arg(long, env = "ROSTER_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a Lease stays valid after its last renewal.
    #[arg(long, env = "ROSTER_LEASE_DURATION", default_value = "15s", value_parser = parse_positive_duration)]
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
    /// Log filter in tracing's EnvFilter syntax, e.g. `info,roster=debug` (default: RUST_LOG, then info).
    #[arg(long, env = "ROSTER_LOG")]
    pub log_level: Option<String>,
}

impl LogArgs {
    /// The log filter and where it came from: the flag (or ROSTER_LOG), then RUST_LOG, then `info`.
    pub fn filter(&self) -> (&'static str, String) {
        if let Some(level) = &self.log_level {
            return ("--log-level or ROSTER_LOG", level.clone());
        }
        match std::env::var("RUST_LOG") {
            Ok(level) if !level.trim().is_empty() => ("RUST_LOG", level),
            _ => ("the default", "info".to_owned()),
        }
    }
}

/// A duration as Go writes them, which is how Kubernetes tools take them: `250ms`, `1m30s`, `1h2m3.5s`,
/// `1.5h` (also `ns`, `us`; ISO 8601 `PT1M30S`). A bare number means seconds. Negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = || format!("invalid duration {text:?}: expected e.g. 250ms, 30s, 1m30s, 1.5h");
    let signed = match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() => {
            jiff::SignedDuration::try_from_secs_f64(secs).map_err(|_| invalid())?
        }
        Ok(_) => return Err(invalid()),
        Err(_) => text.parse::<jiff::SignedDuration>().map_err(|_| invalid())?,
    };
    Duration::try_from(signed).map_err(|_| format!("invalid duration {text:?}: must not be negative"))
}

/// [`parse_duration`], and more than zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("invalid duration {text:?}: must be more than 0")),
        duration => Ok(duration),
    }
}

/// `--write-qps`: a finite number above zero (0, a negative number or NaN would stall or break the budget).
pub fn parse_write_qps(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(qps) if qps.is_finite() && qps > 0.0 => Ok(qps),
        Ok(_) => Err(format!(
            "invalid rate {text:?}: must be a number above 0, e.g. 20 or 0.5"
        )),
        Err(_) => Err(format!(
            "invalid rate {text:?}: expected a number, e.g. 20 or 0.5"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_writes_them() {
        let ms = Duration::from_millis;
        let cases = [
            ("500ms", ms(500)),
            ("250ms", ms(250)),
            ("2", ms(2_000)),
            ("0.5", ms(500)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("2s", ms(2_000)),
            ("1m", ms(60_000)),
            ("1m30s", ms(90_000)),
            ("1h2m3.5s", ms(3_723_500)),
            ("1.5h", ms(5_400_000)),
            ("1h", ms(3_600_000)),
            ("1500us", ms(1) + Duration::from_micros(500)),
            ("2000000ns", ms(2)),
            (" 15s ", ms(15_000)),
            ("PT1M30S", ms(90_000)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_why() {
        for text in ["fast", "3x", "1m30", "s", "", "NaN", "inf", "1e400"] {
            let err = parse_duration(text).unwrap_err();
            assert!(
                err.contains("expected e.g. 250ms, 30s, 1m30s, 1.5h"),
                "{text}: {err}"
            );
        }
        for text in ["-5s", "-1", "-1m30s"] {
            assert_eq!(
                parse_duration(text),
                Err(format!("invalid duration {text:?}: must not be negative"))
            );
        }
        assert_eq!(parse_positive_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(
            parse_positive_duration("0s")
                .unwrap_err()
                .contains("must be more than 0")
        );
    }

    #[test]
    fn write_qps_is_a_positive_number() {
        assert_eq!(parse_write_qps("20"), Ok(20.0));
        assert_eq!(parse_write_qps("0.5"), Ok(0.5));
        for text in ["0", "-1", "NaN", "inf", "-inf", "0.0"] {
            assert!(
                parse_write_qps(text)
                    .unwrap_err()
                    .contains("must be a number above 0"),
                "{text}"
            );
        }
        assert!(parse_write_qps("fast").unwrap_err().contains("expected a number"));
    }

    #[test]
    fn every_numeric_flag_refuses_nonsense() {
        let refused: [&[&str]; 9] = [
            &["--write-qps", "0"],
            &["--write-qps=-3"],
            &["--write-qps", "NaN"],
            &["--write-burst", "0"],
            &["--workers", "0"],
            &["--batch-window", "-1s"],
            &["--lease-duration", "0s"],
            &["--probe-concurrency", "0"],
            &["--dns-min-ttl", "soon"],
        ];
        for args in refused {
            let argv = ["roster", "run"].into_iter().chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
        }
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = ["roster", "run"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(run) => run,
            #[allow(unreachable_patterns)]
            _ => panic!("expected run"),
        }
    }

    #[test]
    fn the_last_of_a_repeated_flag_wins() {
        let run = run_args(&[
            "--workers=3",
            "--leader-elect=false",
            "--workers=7",
            "--leader-elect=true",
        ]);
        assert_eq!(run.controller.workers, 7);
        assert!(run.lease.leader_elect);
    }

    #[test]
    fn leader_election_is_on_unless_turned_off() {
        assert!(run_args(&[]).lease.leader_elect);
        assert!(!run_args(&["--leader-elect=false"]).lease.leader_elect);
    }

    #[test]
    fn run_defaults_are_safe_beside_builtin_controllers() {
        let run = run_args(&[]);
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
