//! The write budget: a token bucket (sustained QPS plus a burst) shared by every write roster makes.
//! Hand-written because it is twenty lines and roster needs only `acquire().await`.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

pub struct WriteBudget {
    qps: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl WriteBudget {
    pub fn new(qps: f64, burst: u32) -> WriteBudget {
        let burst = f64::from(burst.max(1));
        WriteBudget {
            qps: qps.max(0.001),
            burst,
            bucket: Mutex::new((burst, Instant::now())),
        }
    }

    /// The sustained writes per second.
    pub fn qps(&self) -> f64 {
        self.qps
    }

    /// Waits until one write may be made; returns how long the bucket was empty for it (writers queued
    /// behind the lock are not counted twice: the waits add up to the time the budget was exhausted).
    pub async fn acquire(&self) -> Duration {
        let mut bucket = self.bucket.lock().await;
        let (tokens, last) = *bucket;
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.qps).min(self.burst);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            return Duration::ZERO;
        }
        let wait = Duration::from_secs_f64((1.0 - tokens) / self.qps);
        *bucket = (0.0, now + wait);
        tokio::time::sleep(wait).await; // holding the lock keeps writers in arrival order
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_sustained_rate() {
        let budget = WriteBudget::new(10.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(budget.acquire().await, Duration::ZERO, "the burst is free");
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        let mut waited = Duration::ZERO;
        for _ in 0..10 {
            waited += budget.acquire().await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (0.99..=1.01).contains(&elapsed),
            "10 more writes at 10 qps take a second, took {elapsed}"
        );
        let waited = waited.as_secs_f64();
        assert!(
            (0.99..=1.01).contains(&waited),
            "the waits are that second: {waited}"
        );
    }
}
