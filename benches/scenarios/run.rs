//! What every scenario shares: the cluster, the world, the observer, and phases measured the same way
//! (cold start, restart, convergence, writes, CPU and RSS).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::cluster::{Cluster, WriteWindow};
use crate::controller::{Controller, ControllerKind, proc_cpu_seconds};
use crate::observer::{EventStats, Observer};
use crate::report::{LatencySummary, PhaseReport};
use crate::world::World;

/// Scenario parameters: named numbers with per-size defaults, overridable with `--set name=value`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Params(pub BTreeMap<String, f64>);

impl Params {
    pub fn new(defaults: &[(&str, f64)], overrides: &[(String, f64)]) -> Params {
        let mut map: BTreeMap<String, f64> = defaults.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        for (k, v) in overrides {
            map.insert(k.clone(), *v);
        }
        Params(map)
    }

    pub fn n(&self, key: &str) -> usize {
        self.f(key) as usize
    }

    pub fn f(&self, key: &str) -> f64 {
        *self
            .0
            .get(key)
            .unwrap_or_else(|| panic!("scenario parameter {key} has no default"))
    }

    pub fn secs(&self, key: &str) -> Duration {
        Duration::from_secs_f64(self.f(key))
    }
}

/// Everything a scenario run needs.
pub struct Bench {
    pub cluster: Cluster,
    pub world: World,
    pub obs: Observer,
    /// The longest a phase may take to converge.
    pub timeout: Duration,
    pub rng: std::sync::Mutex<StdRng>,
}

impl Bench {
    pub async fn new(cluster: Cluster, timeout: Duration, seed: u64) -> anyhow::Result<Arc<Bench>> {
        let obs = Observer::start(cluster.client()).await?;
        let world = World::new(cluster.client());
        Ok(Arc::new(Bench {
            cluster,
            world,
            obs,
            timeout,
            rng: std::sync::Mutex::new(StdRng::seed_from_u64(seed)),
        }))
    }

    /// Starts measuring a phase. The controller's CPU and peak RSS count from here.
    pub fn begin(&self, phase: &str, ctl: Option<&Controller>) -> Meter {
        if let Some(c) = ctl {
            c.reset_peak();
        }
        let _ = self.obs.take();
        Meter {
            phase: phase.to_string(),
            start: Instant::now(),
            writes: self.cluster.begin_writes(),
            cpu0: ctl.map_or(0.0, Controller::cpu_seconds),
            api_cpu0: self.cluster.apiserver_pid().and_then(proc_cpu_seconds),
            pods0: self.world.pod_writes(),
            stats0: self.obs.stats(),
            notes: BTreeMap::new(),
            ready_s: None,
            converged: None,
            last_write: None,
        }
    }

    /// Ends a phase: latencies, writes, no-op writes, CPU and RSS of `ctl`.
    pub async fn finish(&self, m: Meter, ctl: &Controller) -> anyhow::Result<PhaseReport> {
        let lat = self.obs.take();
        let writes = self.cluster.writes_since(&m.writes).await?;
        let stats = self.obs.stats();
        let revisions = stats.revisions - m.stats0.revisions;
        let noop_writes = writes
            .noop_server
            .unwrap_or_else(|| writes.endpoints_ok.saturating_sub(revisions));
        let mut by_kind: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
        for s in &lat.samples {
            by_kind.entry(s.label).or_default().push(s.latency);
        }
        let all: Vec<Duration> = lat.samples.iter().map(|s| s.latency).collect();
        let empty = Default::default();
        let cpu_s = ctl.cpu_seconds() - m.cpu0;
        let pod_events = self.world.pod_writes() - m.pods0;
        Ok(PhaseReport {
            phase: m.phase,
            seconds: m.start.elapsed().as_secs_f64(),
            latency: LatencySummary::of(&all, &lat),
            latency_by_kind: by_kind
                .into_iter()
                .map(|(k, v)| (k.to_string(), LatencySummary::of(&v, &empty)))
                .collect(),
            writes,
            noop_writes,
            endpoints_revisions: revisions,
            endpoints_bytes: stats.bytes - m.stats0.bytes,
            converge_s: m
                .converged
                .map(|t| t.saturating_duration_since(m.start).as_secs_f64()),
            drain_s: match (m.converged, m.last_write) {
                (Some(c), Some(w)) => Some(c.saturating_duration_since(w).as_secs_f64()),
                _ => None,
            },
            ready_s: m.ready_s,
            cpu_s,
            apiserver_cpu_s: match (
                m.api_cpu0,
                self.cluster.apiserver_pid().and_then(proc_cpu_seconds),
            ) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            pod_events,
            cpu_us_per_pod_event: (pod_events > 0).then(|| cpu_s * 1e6 / pod_events as f64),
            rss_end_mib: ctl.rss_mib(),
            rss_peak_mib: ctl.peak_rss_mib(),
            notes: m.notes,
        })
    }

    /// Waits for the world to match the model; fails with the mismatches after the timeout.
    pub async fn converge(&self, m: &mut Meter) -> anyhow::Result<()> {
        self.obs.set_targets(self.world.model().targets());
        match self.obs.wait_converged(self.timeout).await {
            Some(t) => {
                m.converged = Some(t);
                Ok(())
            }
            None => bail!(
                "phase {} did not converge in {:?}: {}",
                m.phase,
                self.timeout,
                self.obs.mismatch_report(5)
            ),
        }
    }

    /// Starts `kind` on a world without Endpoints and waits until every Service's Endpoints are right.
    pub async fn cold_start(
        &self,
        kind: ControllerKind,
        extra: &[String],
    ) -> anyhow::Result<(Controller, PhaseReport)> {
        let mut m = self.begin("cold-empty", None);
        let mut ctl = Controller::start(kind, &self.cluster, extra)?;
        m.cpu0 = 0.0;
        let ready = ctl.wait_ready(self.timeout).await?;
        m.ready_s = Some(ready.duration_since(ctl.started).as_secs_f64());
        self.converge(&mut m).await?;
        ctl.wait_idle(Duration::from_millis(500), Duration::from_secs(30))
            .await;
        let report = self.finish(m, &ctl).await?;
        Ok((ctl, report))
    }

    /// Builds every Service's Endpoints with `kind`'s write budget lifted (not measured), then restarts it as
    /// configured over them: the measured phase is that restart.
    pub async fn primed_start(&self, kind: ControllerKind) -> anyhow::Result<(Controller, PhaseReport)> {
        let mut ctl = Controller::start(kind, &self.cluster, &kind.boost_flags())?;
        ctl.wait_ready(self.timeout).await?;
        let mut m = self.begin("prime", None);
        self.converge(&mut m).await?;
        ctl.wait_idle(Duration::from_millis(500), Duration::from_secs(30))
            .await;
        self.restart(ctl, &[]).await
    }

    /// Stops `ctl` and starts it again over correct Endpoints: time to ready, writes (should be 0).
    pub async fn restart(
        &self,
        ctl: Controller,
        extra: &[String],
    ) -> anyhow::Result<(Controller, PhaseReport)> {
        let kind = ctl.kind;
        ctl.stop().await;
        let mut m = self.begin("restart", None);
        let mut ctl = Controller::start(kind, &self.cluster, extra)?;
        m.cpu0 = 0.0;
        let ready = ctl.wait_ready(self.timeout).await?;
        m.ready_s = Some(ready.duration_since(ctl.started).as_secs_f64());
        let busy = ctl.wait_idle(Duration::from_secs(1), self.timeout).await;
        m.note(
            "settle_s",
            busy.saturating_duration_since(ctl.started).as_secs_f64(),
        );
        // The Endpoints were right before the restart: check they still are; no convergence time to report.
        self.converge(&mut m).await?;
        m.converged = None;
        let report = self.finish(m, &ctl).await?;
        Ok((ctl, report))
    }

    /// Between runs (no controller running): removes every Endpoints object of the world.
    pub async fn reset(&self, prefix: &str) -> anyhow::Result<()> {
        self.world.delete_all_endpoints().await?;
        let deadline = Instant::now() + self.timeout;
        while self.obs.count_in(prefix) > 0 {
            if Instant::now() > deadline {
                bail!("Endpoints in {prefix}* not deleted");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    pub fn rng(&self) -> std::sync::MutexGuard<'_, StdRng> {
        self.rng.lock().unwrap()
    }
}

/// An open phase.
pub struct Meter {
    pub phase: String,
    pub start: Instant,
    writes: WriteWindow,
    pub cpu0: f64,
    api_cpu0: Option<f64>,
    pods0: u64,
    stats0: EventStats,
    pub notes: BTreeMap<String, f64>,
    pub ready_s: Option<f64>,
    pub converged: Option<Instant>,
    /// When the harness's last write of the phase returned.
    pub last_write: Option<Instant>,
}

impl Meter {
    pub fn note(&mut self, key: &str, value: f64) {
        self.notes.insert(key.to_string(), value);
    }
}
