//! The write budget: a token bucket shared by every write roster makes, whose rate adapts to the API server.
//!
//! In the adaptive mode (the default) the rate starts at the ceiling (`--write-qps`) and follows the server's
//! answers, as TCP follows a network (AIMD): it halves on 429 Too Many Requests, drops by 30 % on a 5xx or a
//! failed connection and by 20 % on a write slower than the API server's latency objective, at most once per
//! second; and while writes succeed it climbs back by a twentieth of the ceiling per second. A Retry-After the
//! server sends pauses every write until it has passed, in both modes. The fixed mode keeps `--write-qps` and
//! `--write-burst` as they are.
//!
//! Hand-written: the token bucket is a few lines, and no rate-limiting crate (governor, tower's RateLimit)
//! changes its rate while running or pauses on an answer.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::Metrics;

/// How the budget sets its rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Between [`FLOOR_QPS`] and `ceiling` writes per second, following the server's answers.
    Adaptive { ceiling: f64, burst: u32 },
    /// `qps` writes per second, `burst` at once.
    Fixed { qps: f64, burst: u32 },
}

/// The adaptive rate never drops below this (a Retry-After still pauses writes entirely).
pub const FLOOR_QPS: f64 = 1.0;
/// A write slower than this is a sign of an overloaded server: Kubernetes' API call latency objective for
/// mutating calls on single objects.
pub const SLOW_WRITE: Duration = Duration::from_secs(1);
/// The rate is cut at most once per this long: the answers to writes sent at the old rate arrive together.
const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);
/// The longest pause a Retry-After can ask for.
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// Seconds of succeeding writes that bring the rate from the floor back to the ceiling.
const RECOVERY_SECONDS: f64 = 20.0;

/// What an API answer tells the budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// A write answered 2xx after this long.
    Written(Duration),
    /// 429 Too Many Requests, with the server's Retry-After.
    Throttled(Option<Duration>),
    /// A 5xx answer or no answer at all (a write's or a read's).
    ServerError,
}

impl Signal {
    /// The metric label of a signal that cuts the rate.
    fn reason(self) -> &'static str {
        match self {
            Signal::Written(_) => "slow",
            Signal::Throttled(_) => "throttled",
            Signal::ServerError => "server_error",
        }
    }
}

/// The bucket's arithmetic, pure: every method is told the time.
#[derive(Debug)]
struct Bucket {
    mode: Mode,
    rate: f64,
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
    last_decrease: Option<Instant>,
    last_increase: Instant,
}

impl Bucket {
    fn new(mode: Mode, now: Instant) -> Bucket {
        let rate = match mode {
            Mode::Adaptive { ceiling, .. } => ceiling,
            Mode::Fixed { qps, .. } => qps,
        };
        let mut bucket = Bucket {
            mode,
            rate,
            tokens: 0.0,
            refilled: now,
            paused_until: None,
            last_decrease: None,
            last_increase: now,
        };
        bucket.tokens = bucket.capacity();
        bucket
    }

    /// Tokens the bucket holds at most: the burst at the full rate, in proportion below it, at least one.
    fn capacity(&self) -> f64 {
        match self.mode {
            Mode::Fixed { burst, .. } => f64::from(burst),
            Mode::Adaptive { ceiling, burst } => (f64::from(burst) * self.rate / ceiling).max(1.0),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity());
        self.refilled = now;
    }

    /// Takes a token if one is there; otherwise says how long until one may be.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(left) = self.pause_left(now) {
            return Err(left);
        }
        self.paused_until = None;
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    /// Gives back a token taken for a write that was not made.
    fn give_back(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + 1.0).min(self.capacity());
    }

    /// Applies what an answer says; returns the label of a cut, when it cut the rate.
    fn observe(&mut self, signal: Signal, now: Instant) -> Option<&'static str> {
        if let Signal::Throttled(Some(after)) = signal {
            let until = now + after.min(MAX_PAUSE);
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        }
        let Mode::Adaptive { ceiling, .. } = self.mode else {
            return None;
        };
        let factor = match signal {
            Signal::Written(took) if took <= SLOW_WRITE => {
                self.increase(ceiling, now);
                return None;
            }
            Signal::Written(_) => 0.8,
            Signal::Throttled(_) => 0.5,
            Signal::ServerError => 0.7,
        };
        self.decrease(factor, now).then(|| signal.reason())
    }

    fn increase(&mut self, ceiling: f64, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_increase)
            .min(Duration::from_secs(1));
        self.last_increase = now;
        if self.cooling_down(now) {
            return;
        }
        self.refill(now);
        let step = (ceiling - FLOOR_QPS).max(0.0) / RECOVERY_SECONDS;
        self.rate = (self.rate + step * elapsed.as_secs_f64()).min(ceiling);
    }

    fn decrease(&mut self, factor: f64, now: Instant) -> bool {
        if self.cooling_down(now) {
            return false;
        }
        self.refill(now);
        self.rate = (self.rate * factor).max(FLOOR_QPS.min(self.rate));
        self.tokens = self.tokens.min(self.capacity());
        self.last_decrease = Some(now);
        true
    }

    fn cooling_down(&self, now: Instant) -> bool {
        self.last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < DECREASE_COOLDOWN)
    }

    fn pause_left(&self, now: Instant) -> Option<Duration> {
        self.paused_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

pub struct WriteBudget {
    bucket: Mutex<Bucket>,
    /// Writers wait their turn here, in arrival order.
    turn: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

impl WriteBudget {
    pub fn new(mode: Mode, metrics: Metrics) -> WriteBudget {
        let bucket = Bucket::new(mode, Instant::now());
        metrics.api.budget_qps.set(bucket.rate);
        WriteBudget {
            bucket: Mutex::new(bucket),
            turn: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().expect("budget lock")
    }

    /// Waits until one write may be made.
    pub async fn acquire(&self) {
        let started = Instant::now();
        let _turn = self.turn.lock().await;
        loop {
            let wait = match self.bucket().take(Instant::now()) {
                Ok(()) => break,
                Err(wait) => wait,
            };
            // Short naps: the rate may change (and a pause begin) while this writer waits.
            tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
        }
        let waited = started.elapsed().as_secs_f64();
        self.metrics.api.budget_wait.observe(waited);
    }

    /// Takes a token if one is there now and nobody waits for one.
    pub fn try_acquire(&self) -> bool {
        let Ok(_turn) = self.turn.try_lock() else {
            return false;
        };
        let taken = self.bucket().take(Instant::now()).is_ok();
        if taken {
            self.metrics.api.budget_wait.observe(0.0);
        }
        taken
    }

    /// Returns a token [`WriteBudget::acquire`] gave for a write that was not made.
    pub fn give_back(&self) {
        self.bucket().give_back(Instant::now());
    }

    /// What an API answer says about the server's load.
    pub fn observe(&self, signal: Signal) {
        let (cut, rate) = {
            let mut bucket = self.bucket();
            (bucket.observe(signal, Instant::now()), bucket.rate)
        };
        self.metrics.api.budget_qps.set(rate);
        if let Some(reason) = cut {
            self.metrics.api.budget_cuts.with_label_values(&[reason]).inc();
            tracing::info!(reason, rate = format!("{rate:.1}"), "write budget lowered");
        }
    }

    /// How long writes stay paused by the server's Retry-After, if they are.
    pub fn pause_left(&self) -> Option<Duration> {
        self.bucket().pause_left(Instant::now())
    }

    /// Writes per second now.
    pub fn rate(&self) -> f64 {
        self.bucket().rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADAPTIVE: Mode = Mode::Adaptive {
        ceiling: 100.0,
        burst: 50,
    };

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_fixed_bucket_gives_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Mode::Fixed { qps: 10.0, burst: 3 }, t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0), Ok(()));
        }
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.take(t0 + secs(0.1)), Ok(()));
        // Throttling pauses a fixed budget but never changes its rate.
        assert_eq!(b.observe(Signal::Throttled(None), t0), None);
        assert_eq!(b.observe(Signal::ServerError, t0), None);
        assert_eq!(b.rate, 10.0);
    }

    #[test]
    fn the_adaptive_rate_starts_at_the_ceiling_and_halves_on_throttling() {
        let t0 = Instant::now();
        let mut b = Bucket::new(ADAPTIVE, t0);
        assert_eq!(b.rate, 100.0);
        assert_eq!(b.capacity(), 50.0);
        assert_eq!(b.observe(Signal::Throttled(None), t0), Some("throttled"));
        assert_eq!(b.rate, 50.0);
        assert_eq!(b.capacity(), 25.0, "the burst shrinks with the rate");
        assert!(b.tokens <= 25.0);
    }

    #[test]
    fn answers_to_writes_sent_together_cut_once() {
        let t0 = Instant::now();
        let mut b = Bucket::new(ADAPTIVE, t0);
        b.observe(Signal::Throttled(None), t0);
        assert_eq!(b.observe(Signal::ServerError, t0 + secs(0.5)), None);
        assert_eq!(b.rate, 50.0);
        assert_eq!(
            b.observe(Signal::ServerError, t0 + secs(1.0)),
            Some("server_error")
        );
        assert_eq!(b.rate, 35.0);
        assert_eq!(
            b.observe(Signal::Written(secs(2.0)), t0 + secs(2.0)),
            Some("slow")
        );
        assert_eq!(b.rate, 28.0);
    }

    #[test]
    fn the_rate_never_drops_below_the_floor() {
        let t0 = Instant::now();
        let mut b = Bucket::new(ADAPTIVE, t0);
        for i in 0..30 {
            b.observe(Signal::Throttled(None), t0 + secs(f64::from(i)));
        }
        assert_eq!(b.rate, FLOOR_QPS);
        assert_eq!(b.capacity(), 1.0);
    }

    #[test]
    fn succeeding_writes_climb_back_to_the_ceiling_and_no_further() {
        let t0 = Instant::now();
        let mut b = Bucket::new(ADAPTIVE, t0);
        b.observe(Signal::Throttled(None), t0);
        // Within the cooldown a success does not raise the rate.
        b.observe(Signal::Written(secs(0.01)), t0 + secs(0.5));
        assert_eq!(b.rate, 50.0);
        let fast = Signal::Written(secs(0.01));
        b.observe(fast, t0 + secs(1.5));
        let climbed = b.rate;
        assert!(climbed > 50.0 && climbed < 55.0, "{climbed}");
        for i in 2..40 {
            b.observe(fast, t0 + secs(f64::from(i)));
        }
        assert_eq!(b.rate, 100.0);
    }

    #[test]
    fn retry_after_pauses_every_write_in_both_modes() {
        for mode in [ADAPTIVE, Mode::Fixed { qps: 10.0, burst: 3 }] {
            let t0 = Instant::now();
            let mut b = Bucket::new(mode, t0);
            b.observe(Signal::Throttled(Some(secs(2.0))), t0);
            assert_eq!(b.take(t0 + secs(0.5)), Err(secs(1.5)), "{mode:?}");
            assert_eq!(b.pause_left(t0 + secs(1.0)), Some(secs(1.0)));
            assert_eq!(b.take(t0 + secs(2.0)), Ok(()));
            assert_eq!(b.pause_left(t0 + secs(2.0)), None);
            // A later, shorter Retry-After does not end a longer pause early.
            b.observe(Signal::Throttled(Some(secs(120.0))), t0 + secs(2.0));
            b.observe(Signal::Throttled(Some(secs(1.0))), t0 + secs(3.0));
            assert_eq!(
                b.pause_left(t0 + secs(3.0)),
                Some(secs(59.0)),
                "capped at a minute"
            );
        }
    }

    #[test]
    fn a_token_given_back_is_there_for_the_next_write() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Mode::Fixed { qps: 1.0, burst: 1 }, t0);
        assert_eq!(b.take(t0), Ok(()));
        assert!(b.take(t0).is_err());
        b.give_back(t0);
        assert_eq!(b.take(t0), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn writers_wait_for_tokens_in_arrival_order() {
        let metrics = Metrics::new();
        let budget = std::sync::Arc::new(WriteBudget::new(
            Mode::Fixed { qps: 10.0, burst: 3 },
            metrics.clone(),
        ));
        let start = Instant::now();
        for _ in 0..3 {
            budget.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        assert!(!budget.try_acquire());
        for _ in 0..10 {
            budget.acquire().await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (0.99..=1.01).contains(&elapsed),
            "10 more writes at 10 qps take a second, took {elapsed}"
        );
        assert!(metrics.render().contains("roster_write_budget_qps 10"));
    }
}
