//! Leader election on a coordination.k8s.io/v1 Lease (kube-lease-manager). Followers keep their caches warm
//! and write nothing; the [`Leadership`] signal flips the moment leadership changes, and `release` gives the
//! Lease up on shutdown so another replica takes over without waiting for it to expire.

use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::LeaseArgs;
use crate::metrics::Metrics;
use crate::write::Leadership;

pub struct Election {
    /// Dropping the receiver ends kube-lease-manager's loop, which then releases the Lease.
    rx: Option<watch::Receiver<bool>>,
    task: Option<JoinHandle<kube_lease_manager::Result<LeaseManager>>>,
    relay: Option<JoinHandle<()>>,
}

/// The identity of this replica: the flag, then POD_NAME, then the host name.
pub fn identity(args: &LeaseArgs) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("roster-{}", std::process::id()))
}

/// Starts the election (or declares this replica leader when election is off), driving `leadership`.
pub async fn start(
    client: Client,
    args: &LeaseArgs,
    leadership: Leadership,
    metrics: Metrics,
) -> anyhow::Result<Election> {
    if !args.leader_elect {
        set(&leadership, &metrics, true);
        return Ok(Election {
            rx: None,
            task: None,
            relay: None,
        });
    }
    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let duration = args.lease_duration.max(Duration::from_secs(3)).as_secs();
    let id = identity(args);
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&namespace)
        .with_identity(&id)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .with_field_manager(format!("roster-lease-{id}"))
        .build()
        .await?;
    tracing::info!(lease = %args.lease_name, %namespace, identity = %id, "leader election started");
    let (rx, task) = manager.watch().await;
    let lease = LeaseGuard {
        api: Api::namespaced(client, &namespace),
        name: args.lease_name.clone(),
        identity: id,
    };
    let relay = tokio::spawn(relay_changes(rx.clone(), lease, leadership, metrics));
    Ok(Election {
        rx: Some(rx),
        task: Some(task),
        relay: Some(relay),
    })
}

/// This replica's view of the Lease object itself, from a watch on it.
struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    identity: String,
}

/// Leader = kube-lease-manager says so AND the Lease, as last seen, names this replica and has not expired
/// by the local clock. kube-lease-manager keeps its last answer while renewals fail; the second condition
/// makes a replica that cannot renew stop writing when its Lease expires, before another one takes over.
async fn relay_changes(
    mut rx: watch::Receiver<bool>,
    guard: LeaseGuard,
    leadership: Leadership,
    metrics: Metrics,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={}", guard.name));
    let leases = watcher::watcher(guard.api.clone(), config)
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(leases);
    let mut valid_until: Option<Timestamp> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let manager_says = *rx.borrow_and_update();
        let fresh = valid_until.is_some_and(|t| Timestamp::now() < t);
        let is_leader = manager_says && fresh;
        if set(&leadership, &metrics, is_leader) {
            tracing::info!(leader = is_leader, "leadership changed");
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            Some(Ok(lease)) = leases.next() => valid_until = held_until(&lease, &guard.identity),
            _ = tick.tick() => {}
        }
    }
}

/// When the Lease, as seen, stops being this replica's: renewTime + leaseDurationSeconds, if held by `identity`.
fn held_until(lease: &Lease, identity: &str) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds?);
    renewed
        .checked_add(jiff::SignedDuration::from_secs(duration))
        .ok()
}

fn set(leadership: &Leadership, metrics: &Metrics, is_leader: bool) -> bool {
    metrics.leader.set(i64::from(is_leader));
    leadership.set(is_leader)
}

impl Election {
    /// Stops writing at once, then releases the Lease.
    pub async fn release(mut self, leadership: &Leadership) {
        leadership.set(false);
        if let Some(relay) = self.relay.take() {
            relay.abort();
        }
        drop(self.rx.take());
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
                Ok(Ok(Err(err))) => tracing::warn!(%err, "could not release the leader Lease"),
                _ => tracing::warn!("timed out releasing the leader Lease"),
            }
        }
    }
}
