//! Load generators shared by the scenarios: paced writes with a registered expectation each, and
//! readiness churn over random pods.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng;
use tokio::task::JoinSet;

use crate::observer::{Expect, SvcKey};
use crate::run::Bench;

/// One write the harness will make, with the change it waits to see.
pub struct Change {
    pub key: SvcKey,
    pub label: &'static str,
    pub expect: Expect,
}

/// Collects the spawned writes of a phase and the instant the last one returned.
#[derive(Default)]
pub struct Writes {
    tasks: JoinSet<anyhow::Result<Instant>>,
    pub last: Option<Instant>,
    pub count: u64,
}

impl Writes {
    /// Registers `changes`, then runs `write` in the background; when it returns, latency starts counting.
    pub fn spawn<F>(&mut self, b: &Arc<Bench>, changes: Vec<Change>, write: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let ids: Vec<(SvcKey, u64)> = changes
            .into_iter()
            .map(|c| {
                let id = b.obs.expect(&c.key, c.label, c.expect);
                (c.key, id)
            })
            .collect();
        let b = b.clone();
        self.count += 1;
        self.tasks.spawn(async move {
            write.await?;
            for (key, id) in &ids {
                b.obs.returned(key, *id);
            }
            Ok(Instant::now())
        });
    }

    /// Waits for every write; fails on the first error.
    pub async fn join(&mut self) -> anyhow::Result<()> {
        while let Some(r) = self.tasks.join_next().await {
            let t = r.context("harness write task")??;
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
        Ok(())
    }

    /// Keeps at most `limit` writes in flight.
    pub async fn throttle(&mut self, limit: usize) -> anyhow::Result<()> {
        while self.tasks.len() >= limit {
            if let Some(r) = self.tasks.join_next().await {
                let t = r.context("harness write task")??;
                self.last = Some(self.last.map_or(t, |l| l.max(t)));
            }
        }
        Ok(())
    }
}

/// A ticker at `rate` per second that does not burst after a stall.
pub fn ticker(rate: f64) -> tokio::time::Interval {
    let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Flips the readiness of random pods among `candidates`, `rate` per second for `duration`; a pod whose
/// previous flip is not yet visible is not flipped again. `not_ready` is what a flip to NotReady must show.
pub async fn readiness_churn(
    b: &Arc<Bench>,
    candidates: &[usize],
    rate: f64,
    duration: Duration,
    not_ready: fn(u32) -> Expect,
) -> anyhow::Result<Writes> {
    readiness_churn_observed(b, candidates, rate, duration, not_ready, |_, _| {}).await
}

/// [`readiness_churn`], calling `on_flip(ip, ready)` just before each flip's status PATCH is sent (for
/// measurements that start at the write, beyond the Endpoints).
pub async fn readiness_churn_observed<F>(
    b: &Arc<Bench>,
    candidates: &[usize],
    rate: f64,
    duration: Duration,
    not_ready: fn(u32) -> Expect,
    on_flip: F,
) -> anyhow::Result<Writes>
where
    F: Fn(u32, bool) + Clone + Send + 'static,
{
    let mut writes = Writes::default();
    let mut tick = ticker(rate);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tick.tick().await;
        let Some((p, key, ip, ready)) = pick_flip(b, candidates) else {
            continue;
        };
        let (label, expect) = if ready {
            ("ready", Expect::Ready(ip))
        } else {
            ("not-ready", not_ready(ip))
        };
        let (bench, on_flip) = (b.clone(), on_flip.clone());
        writes.spawn(b, vec![Change { key, label, expect }], async move {
            on_flip(ip, ready);
            bench.world.set_ready(p, ready).await
        });
        writes.throttle(256).await?;
    }
    writes.join().await?;
    Ok(writes)
}

/// A random candidate pod without a pending change, flipped in the model: (pod, its Service, IP, new state).
fn pick_flip(b: &Arc<Bench>, candidates: &[usize]) -> Option<(usize, SvcKey, u32, bool)> {
    for _ in 0..32 {
        let p = candidates[b.rng().random_range(0..candidates.len())];
        let mut m = b.world.model();
        let pod = &m.pods[p];
        if !pod.alive || pod.terminating {
            continue;
        }
        let svc = *m.services_of(p).first()?;
        let key = m.key(svc);
        if b.obs.is_pending(&key, pod.ip) {
            continue;
        }
        let pod = &mut m.pods[p];
        pod.ready = !pod.ready;
        return Some((p, key, pod.ip, pod.ready));
    }
    None
}
