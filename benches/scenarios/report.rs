//! What one phase of one run measured, the summary over repetitions, the table and the JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::WriteCounts;
use crate::controller::ControllerKind;
use crate::observer::Latencies;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySummary {
    pub n: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub superseded: u64,
    pub unobserved: u64,
}

impl LatencySummary {
    pub fn of(durations: &[Duration], lat: &Latencies) -> LatencySummary {
        let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        LatencySummary {
            n: ms.len(),
            p50_ms: percentile(&ms, 0.50),
            p90_ms: percentile(&ms, 0.90),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
            superseded: lat.superseded,
            unobserved: lat.unobserved,
        }
    }
}

/// Nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, 0.5)
}

/// One phase of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseReport {
    pub phase: String,
    pub seconds: f64,
    pub latency: LatencySummary,
    /// Per kind of change (e.g. `ready`, `not-ready`, `create`).
    pub latency_by_kind: BTreeMap<String, LatencySummary>,
    pub writes: WriteCounts,
    /// Endpoints writes that changed nothing: the in-memory server's count, else successful Endpoints
    /// creates/updates minus the new revisions the harness's watch saw.
    pub noop_writes: u64,
    /// New Endpoints revisions the harness's watch saw, and their re-serialised JSON size.
    pub endpoints_revisions: u64,
    pub endpoints_bytes: u64,
    /// From the phase's first write to the world matching its targets.
    pub converge_s: Option<f64>,
    /// From the phase's last harness write to convergence (the drain time).
    pub drain_s: Option<f64>,
    /// Seconds from the controller's start to ready (phases that start it).
    pub ready_s: Option<f64>,
    pub cpu_s: f64,
    pub apiserver_cpu_s: Option<f64>,
    /// Pod writes by the harness in the phase (one pod event each for the controller).
    pub pod_events: u64,
    pub cpu_us_per_pod_event: Option<f64>,
    pub rss_end_mib: f64,
    pub rss_peak_mib: f64,
    /// Free-form figures of the phase (injection time, objects, ...).
    pub notes: BTreeMap<String, f64>,
}

/// One run: one controller, one repetition of one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub tier: String,
    pub controller: ControllerKind,
    pub rep: usize,
    pub phases: Vec<PhaseReport>,
}

/// A phase summarised over repetitions of one controller.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseSummary {
    pub scenario: String,
    pub phase: String,
    pub controller: ControllerKind,
    pub reps: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub worst_p99_ms: f64,
    pub samples: usize,
    pub endpoints_writes: f64,
    pub total_writes: f64,
    pub noop_writes: f64,
    pub conflicts: f64,
    pub converge_s: Option<f64>,
    pub drain_s: Option<f64>,
    pub ready_s: Option<f64>,
    pub cpu_s: f64,
    pub cpu_us_per_pod_event: Option<f64>,
    pub rss_end_mib: f64,
    pub rss_peak_mib: f64,
    pub endpoints_mb: f64,
}

/// Medians over runs (and the worst p99), per scenario, phase and controller.
pub fn summarize(runs: &[RunReport]) -> Vec<PhaseSummary> {
    let mut groups: BTreeMap<(String, String, ControllerKind), Vec<&PhaseReport>> = BTreeMap::new();
    let mut phase_order: Vec<(String, String)> = Vec::new();
    for run in runs {
        for p in &run.phases {
            let key = (run.scenario.clone(), p.phase.clone());
            if !phase_order.contains(&key) {
                phase_order.push(key);
            }
            groups
                .entry((run.scenario.clone(), p.phase.clone(), run.controller))
                .or_default()
                .push(p);
        }
    }
    let kinds = [
        ControllerKind::Roster,
        ControllerKind::Upstream,
        ControllerKind::UpstreamScale,
        ControllerKind::RosterScale,
    ];
    phase_order
        .into_iter()
        .flat_map(|(scenario, phase)| {
            let groups = &groups;
            kinds.into_iter().filter_map(move |kind| {
                let ps = groups.get(&(scenario.clone(), phase.clone(), kind))?;
                Some(summary(&scenario, &phase, kind, ps))
            })
        })
        .collect()
}

fn summary(scenario: &str, phase: &str, kind: ControllerKind, ps: &[&PhaseReport]) -> PhaseSummary {
    let med = |f: &dyn Fn(&PhaseReport) -> f64| median(&mut ps.iter().map(|p| f(p)).collect::<Vec<_>>());
    let med_opt = |f: &dyn Fn(&PhaseReport) -> Option<f64>| {
        let mut v: Vec<f64> = ps.iter().filter_map(|p| f(p)).collect();
        (!v.is_empty()).then(|| median(&mut v))
    };
    PhaseSummary {
        scenario: scenario.to_string(),
        phase: phase.to_string(),
        controller: kind,
        reps: ps.len(),
        p50_ms: med(&|p| p.latency.p50_ms),
        p99_ms: med(&|p| p.latency.p99_ms),
        worst_p99_ms: ps.iter().map(|p| p.latency.p99_ms).fold(0.0, f64::max),
        samples: ps.iter().map(|p| p.latency.n).sum(),
        endpoints_writes: med(&|p| p.writes.endpoints as f64),
        total_writes: med(&|p| p.writes.total() as f64),
        noop_writes: med(&|p| p.noop_writes as f64),
        conflicts: med(&|p| p.writes.conflicts as f64),
        converge_s: med_opt(&|p| p.converge_s),
        drain_s: med_opt(&|p| p.drain_s),
        ready_s: med_opt(&|p| p.ready_s),
        cpu_s: med(&|p| p.cpu_s),
        cpu_us_per_pod_event: med_opt(&|p| p.cpu_us_per_pod_event),
        rss_end_mib: med(&|p| p.rss_end_mib),
        rss_peak_mib: ps.iter().map(|p| p.rss_peak_mib).fold(0.0, f64::max),
        endpoints_mb: med(&|p| p.endpoints_bytes as f64 / 1e6),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// A Markdown table of the summaries, with roster/upstream ratios under each phase.
pub fn table(summaries: &[PhaseSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | phase | controller | reps | samples | p50 ms | p99 ms | worst p99 | EP writes | all writes | no-op | 409 | converge s | drain s | ready s | CPU s | µs/pod ev | RSS MiB | peak MiB |"
    );
    let _ = writeln!(out, "|{}", "---|".repeat(19));
    let mut i = 0;
    while i < summaries.len() {
        let (scenario, phase) = (&summaries[i].scenario, &summaries[i].phase);
        let group: Vec<&PhaseSummary> = summaries[i..]
            .iter()
            .take_while(|s| &s.scenario == scenario && &s.phase == phase)
            .collect();
        for s in &group {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {:.2} | {} | {:.1} | {:.1} |",
                s.scenario,
                s.phase,
                s.controller.name(),
                s.reps,
                s.samples,
                s.p50_ms,
                s.p99_ms,
                s.worst_p99_ms,
                s.endpoints_writes,
                s.total_writes,
                s.noop_writes,
                s.conflicts,
                opt(s.converge_s, 2),
                opt(s.drain_s, 2),
                opt(s.ready_s, 2),
                s.cpu_s,
                opt(s.cpu_us_per_pod_event, 1),
                s.rss_end_mib,
                s.rss_peak_mib,
            );
        }
        for r in group.iter().filter(|s| !s.controller.is_upstream()) {
            for up in group
                .iter()
                .filter(|u| r.controller.peers().contains(&u.controller))
            {
                let _ = writeln!(out, "{}", ratio_row(r, up));
            }
        }
        i += group.len();
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else if a == 0.0 {
        "=".into()
    } else {
        "∞".into()
    }
}

fn ratio_opt(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => "-".into(),
    }
}

fn ratio_row(r: &PhaseSummary, up: &PhaseSummary) -> String {
    format!(
        "| | | *{} / {}* | | | *{}* | *{}* | *{}* | *{}* | *{}* | | | *{}* | *{}* | *{}* | *{}* | *{}* | *{}* | *{}* |",
        r.controller.name(),
        up.controller.name(),
        ratio(r.p50_ms, up.p50_ms),
        ratio(r.p99_ms, up.p99_ms),
        ratio(r.worst_p99_ms, up.worst_p99_ms),
        ratio(r.endpoints_writes, up.endpoints_writes),
        ratio(r.total_writes, up.total_writes),
        ratio_opt(r.converge_s, up.converge_s),
        ratio_opt(r.drain_s, up.drain_s),
        ratio_opt(r.ready_s, up.ready_s),
        ratio(r.cpu_s, up.cpu_s),
        ratio_opt(r.cpu_us_per_pod_event, up.cpu_us_per_pod_event),
        ratio(r.rss_end_mib, up.rss_end_mib),
        ratio(r.rss_peak_mib, up.rss_peak_mib),
    )
}
