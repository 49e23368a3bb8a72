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
    pub shadow_services: IntGaugeVec,
    pub shadow_differences: IntCounterVec,
    pub shadow_divergences: IntCounterVec,
    pub upstream_active: IntGauge,
    pub handback_waiting: IntGauge,
    pub ready_held_pods: IntGauge,
}

fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 18).expect("static buckets")
}

/// Makes and registers metrics in one registry.
struct Maker(Registry);

impl Maker {
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
        self.0.register(Box::new(c.clone())).expect("unique counter");
        c
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
        self.0.register(Box::new(g.clone())).expect("unique gauge");
        g
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let g = IntGauge::new(name, help).expect("valid gauge");
        self.0.register(Box::new(g.clone())).expect("unique gauge");
        g
    }

    fn histogram(&self, name: &str, help: &str) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(latency_buckets());
        let h = Histogram::with_opts(opts).expect("valid histogram");
        self.0.register(Box::new(h.clone())).expect("unique histogram");
        h
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Maker(Registry::new_custom(Some("roster".into()), None).expect("static registry"));
        Metrics {
            reconciles: m.counter("reconciles_total", "Service reconciles by result", &["result"]),
            reconcile_duration: m.histogram("reconcile_duration_seconds", "Time to reconcile one Service"),
            api_writes: m.counter("api_writes_total", "API writes by resource and verb", &["resource", "verb"]),
            conflicts: m.counter("conflicts_total", "409 conflicts on writes, by resource", &["resource"]),
            queue_depth: m.gauge("queue_depth", "Services waiting in the work queue"),
            queue_wait: m.histogram(
                "queue_wait_seconds",
                "Time a Service waited in the queue before a worker took it",
            ),
            queue_retries: m.counter(
                "queue_retries_total",
                "Services requeued with backoff, by error kind",
                &["kind"],
            ),
            watch_events: m.counter("watch_events_total", "Watch events received, by kind", &["kind"]),
            watch_errors: m.counter(
                "watch_errors_total",
                "Failed lists and watches (undecodable objects included), by kind",
                &["kind"],
            ),
            invalid_objects: m.counter("invalid_objects_total", "Objects roster could not use, by kind", &["kind"]),
            cached_objects: m.gauge_vec("cached_objects", "Objects in roster's caches, by kind", &["kind"]),
            unconfirmed_writes: m.gauge_vec(
                "unconfirmed_writes",
                "roster's own writes and deletes the watch has not delivered yet, by kind",
                &["kind"],
            ),
            leader: m.gauge("leader", "1 while this replica holds the leader Lease (or runs without election)"),
            propagation_latency: m.histogram(
                "propagation_latency_seconds",
                "From the change roster observed (or a pod's Ready transition) to the write that published it",
            ),
            probes: m.counter("probes_total", "BackendSet readiness probes by result", &["result"]),
            probe_duration: m.histogram("probe_duration_seconds", "Duration of BackendSet readiness probes"),
            backends: m.gauge_vec("backends", "BackendSet backend addresses by readiness", &["ready"]),
            shadow_services: m.gauge_vec(
                "shadow_services",
                "Shadow mode: Services by how what is live compares with what roster would write",
                &["state"],
            ),
            shadow_differences: m.counter(
                "shadow_differences_total",
                "Shadow mode: unexplained differences found, by kind, counted when a Service starts to differ",
                &["kind"],
            ),
            shadow_divergences: m.counter(
                "shadow_divergences_total",
                "Shadow mode: differences that are roster's documented divergences from upstream, by README row",
                &["row"],
            ),
            upstream_active: m.gauge(
                "upstream_controllers_active",
                "1 while the built-in EndpointSlice controllers are seen writing after roster took over",
            ),
            handback_waiting: m.gauge(
                "handback_waiting_services",
                "Services handed back whose roster slices wait for an upstream slice",
            ),
            ready_held_pods: m.gauge(
                "ready_held_pods",
                "Flapping pods kept out of the ready endpoints by a readiness hold-down (roster.dev/ready-hold-down)",
            ),
            registry: m.0,
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
