//! The admin server: `/livez` (watches and workers make progress: [`Liveness`]), `/readyz` (every cache has
//! synced), `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

/// Readiness shared between the controller (which sets it once caches have synced) and the admin server.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the admin server reports about the process: ready (caches synced) and live (progress).
#[derive(Clone)]
pub struct Health {
    pub readiness: Readiness,
    pub liveness: Liveness,
}

/// What `/livez` checks: every watch roster runs has made progress within `stall_after` (an event, or a list
/// or watch request answered, even with an error: an API server that is away is not a reason to restart
/// roster, a watch that no longer even retries is), and no worker has spent longer than that on one key.
/// Watches are renewed well within the bound (see [`Liveness::watch_timeout`]), so an idle cluster is alive.
#[derive(Clone)]
pub struct Liveness(Arc<LivenessState>);

struct LivenessState {
    stall_after: Duration,
    /// Watched resources (plural names), and when each last made progress.
    watches: Mutex<HashMap<String, Instant>>,
    /// Busy workers, since when.
    workers: Mutex<HashMap<usize, Instant>>,
}

impl Liveness {
    pub fn new(stall_after: Duration) -> Liveness {
        Liveness(Arc::new(LivenessState {
            stall_after,
            watches: Mutex::default(),
            workers: Mutex::default(),
        }))
    }

    /// How long a watch request may stay open: a third of the stall bound (at most kube's 290 s), so that an
    /// idle watch is renewed, and shows progress, well within it.
    pub fn watch_timeout(&self) -> u32 {
        let third = self.0.stall_after.as_secs() / 3;
        u32::try_from(third.clamp(1, 290)).unwrap_or(290)
    }

    /// How often a busy watch needs to report progress: a tenth of the stall bound, at most once a second,
    /// so that a watch does not take the liveness lock for every event.
    pub fn progress_every(&self) -> Duration {
        (self.0.stall_after / 10).min(Duration::from_secs(1))
    }

    /// `resource` is watched from now on.
    pub fn expect_watch(&self, resource: &str) {
        let mut watches = self.0.watches.lock().expect("liveness lock");
        watches.insert(resource.to_owned(), Instant::now());
    }

    /// A watch of `resource` made progress (only watches that are expected count).
    pub fn watch_progress(&self, resource: &str) {
        let mut watches = self.0.watches.lock().expect("liveness lock");
        if let Some(last) = watches.get_mut(resource) {
            *last = Instant::now();
        }
    }

    pub fn worker_busy(&self, worker: usize) {
        self.0
            .workers
            .lock()
            .expect("liveness lock")
            .insert(worker, Instant::now());
    }

    pub fn worker_idle(&self, worker: usize) {
        self.0.workers.lock().expect("liveness lock").remove(&worker);
    }

    /// `Err` with what is stuck.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let bound = self.0.stall_after;
        let stalled = |since: &Instant| now.duration_since(*since) > bound;
        let watches = self.0.watches.lock().expect("liveness lock");
        let mut stuck: Vec<String> = watches
            .iter()
            .filter(|(_, last)| stalled(last))
            .map(|(resource, last)| {
                format!(
                    "watch of {resource}: no progress for {:?}",
                    now.duration_since(*last)
                )
            })
            .collect();
        let workers = self.0.workers.lock().expect("liveness lock");
        stuck.extend(
            workers
                .iter()
                .filter(|(_, since)| stalled(since))
                .map(|(id, since)| format!("worker {id}: busy for {:?}", now.duration_since(*since))),
        );
        stuck.sort();
        match stuck.is_empty() {
            true => Ok(()),
            false => Err(stuck.join("; ")),
        }
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    liveness: Liveness,
    metrics: Metrics,
}

pub fn router(readiness: Readiness, liveness: Liveness, metrics: Metrics) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState {
            readiness,
            liveness,
            metrics,
        })
}

/// Binds the admin server; the returned address is the one actually bound (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    liveness: Liveness,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(readiness, liveness, metrics);
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(%err, "admin server stopped");
        }
    });
    Ok((bound, task))
}

async fn livez(State(s): State<AdminState>) -> (StatusCode, String) {
    match s.liveness.check(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(stuck) => {
            tracing::warn!(%stuck, "not live");
            (StatusCode::SERVICE_UNAVAILABLE, stuck)
        }
    }
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches syncing")
    }
}

async fn metrics_text(State(s): State<AdminState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_watches_and_stuck_workers_are_not_live() {
        let liveness = Liveness::new(Duration::from_secs(30));
        let now = Instant::now();
        liveness.expect_watch("pods");
        liveness.watch_progress("leases"); // not watched by the controller: not checked
        liveness.worker_busy(1);
        assert_eq!(liveness.check(now), Ok(()));
        let later = now + Duration::from_secs(31);
        let stuck = liveness.check(later).unwrap_err();
        assert!(
            stuck.contains("watch of pods") && stuck.contains("worker 1"),
            "{stuck}"
        );
        liveness.watch_progress("pods");
        liveness.worker_idle(1);
        assert_eq!(liveness.check(Instant::now() + Duration::from_secs(29)), Ok(()));
    }

    #[test]
    fn watches_are_renewed_well_within_the_bound() {
        assert_eq!(Liveness::new(Duration::from_secs(600)).watch_timeout(), 200);
        assert_eq!(Liveness::new(Duration::from_secs(3600)).watch_timeout(), 290);
        assert_eq!(Liveness::new(Duration::from_secs(2)).watch_timeout(), 1);
    }

    #[test]
    fn busy_watches_report_progress_well_within_the_bound() {
        let every = |stall: u64| Liveness::new(Duration::from_secs(stall)).progress_every();
        assert_eq!(every(600), Duration::from_secs(1));
        assert_eq!(every(5), Duration::from_millis(500));
    }
}
