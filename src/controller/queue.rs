//! The work queue: Service keys (their Endpoints and EndpointSlices) and BackendSet keys (their status). Each
//! key is queued at most once, handled by one worker at a time (a key re-added while it is being handled runs
//! once more afterwards), delayed adds coalesce into the earliest deadline (the batch window), and failures
//! back off per key, exponentially, until `forget`.
//!
//! Ready keys are handed out by urgency: a change that takes traffic away from an endpoint (a pod that is no
//! longer ready, terminating or gone) goes before additions and everything else, and a key that has waited
//! [`STARVATION_BOUND`] goes before urgent ones, so no key waits behind a stream of urgent ones for longer.
//! Queued keys coalesce, so a Service that waits absorbs every later change into one reconcile.

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

/// How soon a queued change must be published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// Additions, and changes that send no traffic anywhere new or away.
    #[default]
    Normal,
    /// The change takes traffic away from an endpoint that can no longer serve it.
    Urgent,
}

impl Urgency {
    fn lane(self) -> usize {
        match self {
            Urgency::Urgent => 0,
            Urgency::Normal => 1,
        }
    }
}

/// First retry delay after a failure; doubles per consecutive failure up to `MAX_BACKOFF`.
pub const BASE_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A ready key that has waited this long goes before urgent keys.
pub const STARVATION_BOUND: Duration = Duration::from_secs(1);

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

struct State<K> {
    /// Ready keys by lane (urgent, normal), each with the sequence number of its entry; an entry whose
    /// number is not the key's in `ready` any more was moved to the urgent lane and is skipped.
    lanes: [VecDeque<(K, u64)>; 2],
    /// Keys in a lane: their urgency, when they became ready, their entry's number.
    ready: HashMap<K, (Urgency, Instant, u64)>,
    /// Keys ready or delayed, with the time they were first added (for the queue-wait metric).
    queued: HashMap<K, Instant>,
    delayed: BTreeSet<(Instant, u64, K)>,
    deadline: HashMap<K, (Instant, u64, Urgency)>,
    processing: HashSet<K>,
    /// Keys added while being processed, with the deadline and urgency they asked for.
    dirty: HashMap<K, (Instant, Urgency)>,
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
                lanes: [VecDeque::new(), VecDeque::new()],
                ready: HashMap::new(),
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
        self.add_at(key, Instant::now(), Urgency::Normal);
    }

    pub fn add_after(&self, key: K, delay: Duration, urgency: Urgency) {
        self.add_at(key, Instant::now() + delay, urgency);
    }

    /// Queues `key` to be ready at `at`; an earlier pending deadline and a higher urgency win.
    pub fn add_at(&self, key: K, at: Instant, urgency: Urgency) {
        let mut s = self.state.lock().expect("queue lock");
        if s.closed {
            return;
        }
        if s.processing.contains(&key) {
            let due = s
                .dirty
                .get(&key)
                .map_or((at, urgency), |(d, u)| ((*d).min(at), (*u).max(urgency)));
            s.dirty.insert(key, due);
            return;
        }
        s.enqueue(key, at, urgency);
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
                let now = Instant::now();
                s.promote_due(now);
                if let Some(key) = s.pop_ready(now) {
                    let since = s.queued.remove(&key).unwrap_or(now);
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
        if let Some((at, urgency)) = s.dirty.remove(key) {
            s.enqueue(key.clone(), at, urgency);
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
        self.add_after(key, delay, Urgency::Normal);
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
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn enqueue(&mut self, key: K, at: Instant, urgency: Urgency) {
        if let Some(&(current, since, _)) = self.ready.get(&key) {
            if urgency > current {
                self.make_ready(key, urgency, since);
            }
            return;
        }
        if let Some(&(due, seq, current)) = self.deadline.get(&key) {
            let urgency = urgency.max(current);
            if due <= at {
                self.deadline.insert(key, (due, seq, urgency));
                return;
            }
            self.delayed.remove(&(due, seq, key.clone()));
            self.delay(key, at, urgency);
            return;
        }
        self.queued.entry(key.clone()).or_insert_with(Instant::now);
        self.delay(key, at, urgency);
    }

    fn delay(&mut self, key: K, at: Instant, urgency: Urgency) {
        let seq = self.next_seq();
        self.deadline.insert(key.clone(), (at, seq, urgency));
        self.delayed.insert((at, seq, key));
    }

    fn make_ready(&mut self, key: K, urgency: Urgency, since: Instant) {
        let seq = self.next_seq();
        self.ready.insert(key.clone(), (urgency, since, seq));
        self.lanes[urgency.lane()].push_back((key, seq));
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.delayed.first() {
            if *at > now {
                break;
            }
            let (_, _, key) = self.delayed.pop_first().expect("non-empty");
            let (_, _, urgency) = self.deadline.remove(&key).expect("a delayed key has a deadline");
            self.make_ready(key, urgency, now);
        }
    }

    /// The live front entry of a lane, dropping entries of keys that moved lanes.
    fn front(&mut self, lane: usize) -> Option<(K, Instant)> {
        while let Some((key, seq)) = self.lanes[lane].front() {
            match self.ready.get(key) {
                Some(&(_, since, live)) if live == *seq => return Some((key.clone(), since)),
                _ => {
                    self.lanes[lane].pop_front();
                }
            }
        }
        None
    }

    /// The next ready key: a normal one that has waited the starvation bound, else an urgent one, else the
    /// oldest normal one.
    fn pop_ready(&mut self, now: Instant) -> Option<K> {
        let normal = self.front(Urgency::Normal.lane());
        let starved = normal
            .as_ref()
            .is_some_and(|(_, since)| now.saturating_duration_since(*since) >= STARVATION_BOUND);
        let lane = match self.front(Urgency::Urgent.lane()) {
            Some(_) if !starved => Urgency::Urgent.lane(),
            _ => Urgency::Normal.lane(),
        };
        let (key, _) = self.lanes[lane].pop_front()?;
        self.ready.remove(&key);
        Some(key)
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
        q.add_after("a", Duration::from_secs(10), Urgency::Normal);
        q.add_after("a", Duration::from_secs(2), Urgency::Normal);
        q.add_after("a", Duration::from_secs(5), Urgency::Normal);
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

    #[tokio::test(start_paused = true)]
    async fn urgent_keys_go_first_and_normal_ones_wait_at_most_the_bound() {
        let q = WorkQueue::default();
        q.add("added");
        q.add_at("lost", Instant::now(), Urgency::Urgent);
        q.add("other");
        assert_eq!(q.get().await.unwrap().key, "lost");
        assert_eq!(q.get().await.unwrap().key, "added", "then the oldest normal key");
        // A normal key that waited the bound goes before urgent ones.
        tokio::time::advance(STARVATION_BOUND).await;
        q.add_at("lost-2", Instant::now(), Urgency::Urgent);
        assert_eq!(q.get().await.unwrap().key, "other");
        assert_eq!(q.get().await.unwrap().key, "lost-2");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_key_becomes_urgent_without_being_queued_twice() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add_at("b", Instant::now(), Urgency::Urgent);
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(
            q.get().await.unwrap().key,
            "b",
            "raised to urgent, and a later normal add keeps it there"
        );
        assert_eq!(q.get().await.unwrap().key, "a");
        assert!(q.is_empty());
        // A delayed key keeps the highest urgency asked for, and one added while processing too.
        q.add_after("c", Duration::from_secs(1), Urgency::Urgent);
        q.add_after("c", Duration::from_secs(5), Urgency::Normal);
        q.add_after("d", Duration::ZERO, Urgency::Normal);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(q.get().await.unwrap().key, "c");
        let item = q.get().await.unwrap();
        assert_eq!(item.key, "d");
        q.add("e");
        q.add_at("d", Instant::now(), Urgency::Urgent);
        q.done(&"d");
        assert_eq!(q.get().await.unwrap().key, "d");
        assert_eq!(q.get().await.unwrap().key, "e");
    }
}
