//! Every Prometheus metric roster exports, registered in one registry. Names follow Prometheus conventions
//! (`_total` counters, `_seconds` durations, base units); the README lists them.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    exponential_buckets,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub api_writes: IntCounterVec,
    pub conflicts: IntCounterVec,
    pub queue_depth: IntGauge,
    pub queue_wait: Histogram,
    pub queue_retries: IntCounterVec,
    pub watch_events: IntCounterVec,
    pub watch_errors: IntCounterVec,
    pub invalid_objects: IntCounterVec,
    pub cached_objects: IntGaugeVec,
    pub unconfirmed_writes: IntGaugeVec,
    pub leader: IntGauge,
    pub propagation_latency: Histogram,
    pub probes: IntCounterVec,
    pub probe_duration: Histogram,
    pub backends: IntGaugeVec,
}

fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 18).expect("static buckets")
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new_custom(Some("roster".into()), None).expect("static registry");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            r.register(Box::new(c.clone())).expect("unique counter");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            r.register(Box::new(g.clone())).expect("unique gauge");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            r.register(Box::new(g.clone())).expect("unique gauge");
            g
        };
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(latency_buckets()))
                .expect("valid histogram");
            r.register(Box::new(h.clone())).expect("unique histogram");
            h
        };
        Metrics {
            reconciles: counter("reconciles_total", "Service reconciles by result", &["result"]),
            reconcile_duration: histogram("reconcile_duration_seconds", "Time to reconcile one Service"),
            api_writes: counter(
                "api_writes_total",
                "API writes by resource and verb",
                &["resource", "verb"],
            ),
            conflicts: counter(
                "conflicts_total",
                "409 conflicts on writes, by resource",
                &["resource"],
            ),
            queue_depth: gauge("queue_depth", "Services waiting in the work queue"),
            queue_wait: histogram(
                "queue_wait_seconds",
                "Time a Service waited in the queue before a worker took it",
            ),
            queue_retries: counter(
                "queue_retries_total",
                "Services requeued with backoff, by error kind",
                &["kind"],
            ),
            watch_events: counter("watch_events_total", "Watch events received, by kind", &["kind"]),
            watch_errors: counter(
                "watch_errors_total",
                "Failed lists and watches (undecodable objects included), by kind",
                &["kind"],
            ),
            invalid_objects: counter(
                "invalid_objects_total",
                "Objects roster could not use, by kind",
                &["kind"],
            ),
            cached_objects: gauge_vec("cached_objects", "Objects in roster's caches, by kind", &["kind"]),
            unconfirmed_writes: gauge_vec(
                "unconfirmed_writes",
                "roster's own writes and deletes the watch has not delivered yet, by kind",
                &["kind"],
            ),
            leader: gauge(
                "leader",
                "1 while this replica holds the leader Lease (or runs without election)",
            ),
            propagation_latency: histogram(
                "propagation_latency_seconds",
                "From the change roster observed (or a pod's Ready transition) to the write that published it",
            ),
            probes: counter(
                "probes_total",
                "BackendSet readiness probes by result",
                &["result"],
            ),
            probe_duration: histogram(
                "probe_duration_seconds",
                "Duration of BackendSet readiness probes",
            ),
            backends: gauge_vec(
                "backends",
                "BackendSet backend addresses by readiness",
                &["ready"],
            ),
            registry: r,
        }
    }

    /// The text exposition format for /metrics.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_metrics_with_the_roster_prefix() {
        let m = Metrics::new();
        m.reconciles.with_label_values(&["success"]).inc();
        m.api_writes.with_label_values(&["endpoints", "update"]).inc_by(2);
        let text = m.render();
        assert!(
            text.contains("roster_reconciles_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("roster_api_writes_total{resource=\"endpoints\",verb=\"update\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE roster_propagation_latency_seconds histogram"),
            "{text}"
        );
    }
}
