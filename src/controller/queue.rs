//! The work queue: Service keys (their Endpoints and EndpointSlices) and BackendSet keys (their status). Each
//! key is queued at most once, handled by one worker at a time (a key re-added while it is being handled runs
//! once more afterwards), delayed adds coalesce into the earliest deadline (the batch window), and failures
//! back off per key, exponentially, until `forget`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cache::{BackendSetKey, ServiceKey};

/// What a worker reconciles.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkKey {
    /// A Service: its Endpoints and EndpointSlices.
    Service(ServiceKey),
    /// A BackendSet: its status.
    BackendSet(BackendSetKey),
}

impl WorkKey {
    /// The metric label of the key's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkKey::Service(_) => "service",
            WorkKey::BackendSet(_) => "backendset",
        }
    }
}

impl std::fmt::Display for WorkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkKey::Service(key) => write!(f, "Service {key}"),
            WorkKey::BackendSet(key) => write!(f, "BackendSet {key}"),
        }
    }
}

/// First retry delay after a failure; doubles per consecutive failure up to `MAX_BACKOFF`.
pub const BASE_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

struct State<K> {
    ready: VecDeque<K>,
    /// Keys in `ready` or `delayed`, with the time they were first added (for the queue-wait metric).
    queued: HashMap<K, Instant>,
    delayed: BTreeSet<(Instant, u64, K)>,
    deadline: HashMap<K, (Instant, u64)>,
    processing: HashSet<K>,
    /// Keys added while being processed, with the deadline they asked for.
    dirty: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
    seq: u64,
    closed: bool,
}

/// A key handed to a worker, and how long it waited in the queue.
pub struct Item<K> {
    pub key: K,
    pub waited: Duration,
}

impl<K: Clone + Eq + Hash + Ord> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                queued: HashMap::new(),
                delayed: BTreeSet::new(),
                deadline: HashMap::new(),
                processing: HashSet::new(),
                dirty: HashMap::new(),
                failures: HashMap::new(),
                seq: 0,
                closed: false,
            }),
            notify: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    pub fn add(&self, key: K) {
        self.add_at(key, Instant::now());
    }

    pub fn add_after(&self, key: K, delay: Duration) {
        self.add_at(key, Instant::now() + delay);
    }

    /// Queues `key` to be ready at `at`; an earlier pending deadline wins.
    pub fn add_at(&self, key: K, at: Instant) {
        let mut s = self.state.lock().expect("queue lock");
        if s.closed {
            return;
        }
        if s.processing.contains(&key) {
            let due = s.dirty.get(&key).map_or(at, |d| (*d).min(at));
            s.dirty.insert(key, due);
            return;
        }
        s.enqueue(key, at);
        drop(s);
        self.notify.notify_one();
    }

    /// Waits for the next ready key; `None` once the queue is shut down.
    pub async fn get(&self) -> Option<Item<K>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_deadline = {
                let mut s = self.state.lock().expect("queue lock");
                if s.closed {
                    return None;
                }
                s.promote_due(Instant::now());
                if let Some(key) = s.ready.pop_front() {
                    let since = s.queued.remove(&key).unwrap_or_else(Instant::now);
                    s.processing.insert(key.clone());
                    let more = !s.ready.is_empty();
                    drop(s);
                    if more {
                        self.notify.notify_one();
                    }
                    return Some(Item {
                        key,
                        waited: since.elapsed(),
                    });
                }
                s.delayed.first().map(|(at, _, _)| *at)
            };
            match next_deadline {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `key` handled; a key re-added meanwhile is queued again.
    pub fn done(&self, key: &K) {
        let mut s = self.state.lock().expect("queue lock");
        s.processing.remove(key);
        if let Some(at) = s.dirty.remove(key) {
            s.enqueue(key.clone(), at);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Requeues `key` after its next backoff delay and returns that delay.
    pub fn retry(&self, key: K, not_before: Option<Duration>) -> Duration {
        let delay = {
            let mut s = self.state.lock().expect("queue lock");
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            backoff(*n).max(not_before.unwrap_or_default())
        };
        self.add_after(key, delay);
        delay
    }

    /// Resets the backoff of `key` after a success.
    pub fn forget(&self, key: &K) {
        self.state.lock().expect("queue lock").failures.remove(key);
    }

    pub fn failures(&self, key: &K) -> u32 {
        self.state
            .lock()
            .expect("queue lock")
            .failures
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Keys waiting (ready or delayed), not counting those being processed.
    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys; workers waiting in `get` return `None`.
    pub fn shutdown(&self) {
        self.state.lock().expect("queue lock").closed = true;
        self.notify.notify_waiters();
    }
}

impl<K: Clone + Eq + Hash + Ord> State<K> {
    fn enqueue(&mut self, key: K, at: Instant) {
        if let Some(&(due, seq)) = self.deadline.get(&key) {
            if due <= at {
                return;
            }
            self.delayed.remove(&(due, seq, key.clone()));
        } else if self.queued.contains_key(&key) {
            return; // already ready
        }
        self.queued.entry(key.clone()).or_insert_with(Instant::now);
        self.seq += 1;
        self.deadline.insert(key.clone(), (at, self.seq));
        self.delayed.insert((at, self.seq, key));
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.delayed.first() {
            if *at > now {
                break;
            }
            let (_, _, key) = self.delayed.pop_first().expect("non-empty");
            self.deadline.remove(&key);
            self.ready.push_back(key);
        }
    }
}

fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    BASE_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await.unwrap().key, "a");
        assert_eq!(q.get().await.unwrap().key, "b");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processing_runs_again_after_done() {
        let q = WorkQueue::default();
        q.add("a");
        let item = q.get().await.unwrap();
        q.add("a");
        assert!(q.is_empty(), "not handed to a second worker while processing");
        q.done(&item.key);
        assert_eq!(q.get().await.unwrap().key, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_coalesce_to_the_earliest_deadline() {
        let q = WorkQueue::default();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(2));
        q.add_after("a", Duration::from_secs(5));
        let start = Instant::now();
        let item = q.get().await.unwrap();
        assert_eq!(item.key, "a");
        assert_eq!(start.elapsed().as_secs(), 2);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_exponentially_and_forget_resets() {
        let q = WorkQueue::default();
        assert_eq!(q.retry("a", None), BASE_BACKOFF);
        q.get().await.unwrap();
        q.done(&"a");
        assert_eq!(q.retry("a", None), BASE_BACKOFF * 2);
        q.get().await.unwrap();
        q.done(&"a");
        assert_eq!(q.retry("a", Some(Duration::from_secs(7))), Duration::from_secs(7));
        q.forget(&"a");
        assert_eq!(q.failures(&"a"), 0);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn shutdown_releases_waiting_workers() {
        let q = std::sync::Arc::new(WorkQueue::<&str>::default());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.get().await.is_none() }
        });
        tokio::task::yield_now().await;
        q.shutdown();
        assert!(waiter.await.unwrap());
    }
}
