//! roster's benchmark harness: the scenarios S1–S6 of benchmarks.md against either API server tier, for
//! roster (its release binary) or upstream's kube-controller-manager, side by side; plus the latency floor.
//!
//! ```sh
//! cargo bench -j2 --bench scenarios -- --scenario s2 --tier real --controller roster,upstream,upstream-scale \
//!     --size medium --reps 5 --json s2.json
//! ```
//!
//! Each scenario gets a fresh API server; its world is built once, then every repetition runs each
//! controller in turn (the order rotates per repetition), removing all Endpoints between runs so each
//! controller starts from the same state. BENCHMARKS.md records the results and how to read them.

mod big_service;
mod cluster;
mod controller;
mod dataplane;
mod floor;
mod observer;
mod report;
mod rolling;
mod run;
mod scale;
mod service_churn;
mod small_services;
mod soak;
mod workload;
mod world;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use roster_envtest::Tier;
use serde::Serialize;

use cluster::Cluster;
use controller::ControllerKind;
use report::{PhaseReport, RunReport};
use run::{Bench, Params};

#[derive(Parser, Debug)]
#[command(
    name = "scenarios",
    about = "roster's benchmark scenarios (benchmarks.md S1–S6) and the latency floor"
)]
struct Cli {
    /// Scenarios to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "s1")]
    scenario: Vec<ScenarioId>,
    /// API server tier.
    #[arg(long, value_enum, default_value = "memory")]
    tier: TierArg,
    /// Controllers to compare, comma-separated (S6 runs roster only).
    #[arg(long, value_delimiter = ',', default_value = "roster")]
    controller: Vec<ControllerKind>,
    /// Size preset: small (seconds, for CI), medium (side by side on a small machine), default (benchmarks.md).
    #[arg(long, default_value = "small", value_parser = ["small", "medium", "default"])]
    size: String,
    /// Repetitions per controller.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Override a scenario parameter, e.g. `--set churn_s=60` (repeatable).
    #[arg(long = "set", value_parser = parse_param)]
    set: Vec<(String, f64)>,
    /// Longest a phase may take to converge, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Seed of the harness's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write every run and the summaries as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the Markdown table here (it is also printed).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// The soak's record, one row per check (CSV).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum ScenarioId {
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    Floor,
    /// Hours of random churn with invariant checks and RSS samples (issue 8), roster on the memory tier.
    Soak,
    /// Readiness flips through kube-proxy's rules: end-to-end propagation (real tier, root).
    E2e,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TierArg {
    Memory,
    Real,
}

fn parse_param(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s.split_once('=').ok_or("expected name=value")?;
    let v = v.parse::<f64>().map_err(|e| format!("{k}: {e}"))?;
    Ok((k.to_string(), v))
}

#[derive(Serialize)]
struct Output<'a> {
    date: String,
    machine: Machine,
    tier: String,
    size: &'a str,
    reps: usize,
    params: Vec<(ScenarioId, Params)>,
    floor: Vec<PhaseReport>,
    runs: &'a [RunReport],
    summary: Vec<report::PhaseSummary>,
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    mem_total_gib: f64,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map_or(String::new(), |(_, v)| v.trim().to_string()),
            mem_total_gib: kib / 1024.0 / 1024.0,
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let tier = match cli.tier {
        TierArg::Memory => Tier::Memory,
        TierArg::Real => Tier::Real,
    };
    let mut runs: Vec<RunReport> = Vec::new();
    let mut floors = Vec::new();
    let mut params = Vec::new();
    for &scenario in &cli.scenario {
        let p = Params::new(&defaults(scenario, &cli.size), &cli.set);
        eprintln!("== {scenario:?} on the {tier} tier, size {}: {:?}", cli.size, p.0);
        let cluster = Cluster::start(tier).await?;
        let bench = Bench::new(cluster, Duration::from_secs(cli.timeout_s), cli.seed).await?;
        if scenario == ScenarioId::Floor {
            let floor = floor::run(&bench, &p).await?;
            eprintln!("   floor: {}", one_line(&floor));
            floors.push(floor);
        } else {
            runs.extend(run_scenario(&cli, scenario, &bench, &p, tier).await?);
        }
        params.push((scenario, p));
    }
    let summary = report::summarize(&runs);
    let mut table = report::table(&summary);
    for f in &floors {
        table.push_str(&format!(
            "\nfloor ({} samples): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; from before the write: p50 {:.1} ms, p99 {:.1} ms\n",
            f.latency.n,
            f.latency.p50_ms,
            f.latency.p90_ms,
            f.latency.p99_ms,
            f.latency.max_ms,
            f.notes.get("from_issue_p50_ms").copied().unwrap_or(0.0),
            f.notes.get("from_issue_p99_ms").copied().unwrap_or(0.0),
        ));
    }
    println!("{table}");
    if let Some(path) = &cli.markdown {
        std::fs::write(path, &table)?;
    }
    if let Some(path) = &cli.json {
        let out = Output {
            date: jiff::Timestamp::now().to_string(),
            machine: Machine::read(),
            tier: tier.to_string(),
            size: &cli.size,
            reps: cli.reps,
            params,
            floor: floors,
            runs: &runs,
            summary,
        };
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}

fn defaults(scenario: ScenarioId, size: &str) -> Vec<(&'static str, f64)> {
    match scenario {
        ScenarioId::S1 => small_services::defaults(size, false),
        ScenarioId::S3 => small_services::defaults(size, true),
        ScenarioId::S2 => big_service::defaults(size),
        ScenarioId::S4 => rolling::defaults(size),
        ScenarioId::S5 => service_churn::defaults(size),
        ScenarioId::S6 => scale::defaults(size),
        ScenarioId::Floor => floor::defaults(size),
        ScenarioId::Soak => soak::defaults(size),
        ScenarioId::E2e => dataplane::defaults(size),
    }
}

/// Builds the world once, then runs every controller `reps` times, rotating the order.
async fn run_scenario(
    cli: &Cli,
    scenario: ScenarioId,
    b: &Arc<Bench>,
    p: &Params,
    tier: Tier,
) -> anyhow::Result<Vec<RunReport>> {
    let t = Instant::now();
    let mut empty_rss = 0.0;
    match scenario {
        ScenarioId::S1 | ScenarioId::S3 => small_services::setup(b, p).await?,
        ScenarioId::S2 => big_service::setup(b, p).await?,
        ScenarioId::S4 => rolling::setup(b, p).await?,
        ScenarioId::S5 => service_churn::setup(b, p).await?,
        ScenarioId::S6 => empty_rss = scale::setup(b, p).await?,
        ScenarioId::Soak => soak::setup(b, p).await?,
        ScenarioId::E2e => dataplane::setup(b, p).await?,
        ScenarioId::Floor => unreachable!("the floor has no world"),
    }
    eprintln!("   world built in {:.1} s", t.elapsed().as_secs_f64());
    let roster_only = matches!(scenario, ScenarioId::S6 | ScenarioId::Soak);
    let controllers: Vec<ControllerKind> = if roster_only {
        vec![ControllerKind::Roster]
    } else {
        cli.controller.clone()
    };
    let reps = if scenario == ScenarioId::Soak { 1 } else { cli.reps };
    let mut runs = Vec::new();
    for rep in 0..reps {
        for i in 0..controllers.len() {
            let kind = controllers[(i + rep) % controllers.len()];
            let phases = match scenario {
                ScenarioId::S1 => small_services::s1(b, p, kind).await?,
                ScenarioId::S2 => big_service::run(b, p, kind).await?,
                ScenarioId::S3 => small_services::s3(b, p, kind).await?,
                ScenarioId::S4 => rolling::run(b, p, kind).await?,
                ScenarioId::S5 => service_churn::run(b, p, kind).await?,
                ScenarioId::S6 => scale::run(b, p, empty_rss).await?,
                ScenarioId::Soak => soak::run(b, p, cli.csv.as_deref()).await?,
                ScenarioId::E2e => dataplane::run(b, p, kind).await?,
                ScenarioId::Floor => unreachable!(),
            };
            for ph in &phases {
                eprintln!(
                    "   rep {rep} {:<14} {:<12} {}",
                    kind.name(),
                    ph.phase,
                    one_line(ph)
                );
            }
            runs.push(RunReport {
                scenario: format!("{scenario:?}").to_lowercase(),
                tier: tier.to_string(),
                controller: kind,
                rep,
                phases,
            });
        }
    }
    Ok(runs)
}

fn one_line(p: &PhaseReport) -> String {
    format!(
        "n={} p50={:.1}ms p99={:.1}ms max={:.1}ms writes={} (ep {}) noop={} 409={} converge={} ready={} cpu={:.2}s rss={:.1}/{:.1}MiB {:?}",
        p.latency.n,
        p.latency.p50_ms,
        p.latency.p99_ms,
        p.latency.max_ms,
        p.writes.total(),
        p.writes.endpoints,
        p.noop_writes,
        p.writes.conflicts,
        p.converge_s.map_or("-".into(), |v| format!("{v:.2}s")),
        p.ready_s.map_or("-".into(), |v| format!("{v:.2}s")),
        p.cpu_s,
        p.rss_end_mib,
        p.rss_peak_mib,
        p.notes,
    )
}
