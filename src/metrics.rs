//! Every Prometheus metric roster exports, registered in one registry. Names follow Prometheus conventions
//! (`_total` counters, `_seconds` durations, base units); the README lists them.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub api_writes: IntCounterVec,
    pub api_requests: IntCounterVec,
    pub api_request_duration: HistogramVec,
    pub write_budget: Gauge,
    pub write_budget_cuts: IntCounterVec,
    pub write_budget_wait: Histogram,
    pub queue_depth: IntGauge,
    pub queue_adds: IntCounterVec,
    pub queue_work_duration: HistogramVec,
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
    pub slice_endpoint_changes: IntCounterVec,
    pub slices_desired: IntGauge,
    pub slice_endpoints_desired: IntGauge,
    pub dns_lookups: IntCounterVec,
    pub ready_held_pods: IntGauge,
}

fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 18).expect("static buckets")
}

/// Makes and registers metrics in one registry, each named `roster_<name>`.
struct Maker(Registry);

impl Maker {
    fn opts(name: &str, help: &str) -> Opts {
        Opts::new(name, help).namespace("roster")
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Maker::opts(name, help), labels).expect("valid counter");
        self.0.register(Box::new(c.clone())).expect("unique counter");
        c
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Maker::opts(name, help), labels).expect("valid gauge");
        self.0.register(Box::new(g.clone())).expect("unique gauge");
        g
    }

    fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        let g = Gauge::with_opts(Maker::opts(name, help)).expect("valid gauge");
        self.0.register(Box::new(g.clone())).expect("unique gauge");
        g
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let g = IntGauge::with_opts(Maker::opts(name, help)).expect("valid gauge");
        self.0.register(Box::new(g.clone())).expect("unique gauge");
        g
    }

    fn histogram_opts(name: &str, help: &str) -> HistogramOpts {
        HistogramOpts::from(Maker::opts(name, help)).buckets(latency_buckets())
    }

    fn histogram(&self, name: &str, help: &str) -> Histogram {
        let h = Histogram::with_opts(Maker::histogram_opts(name, help)).expect("valid histogram");
        self.0.register(Box::new(h.clone())).expect("unique histogram");
        h
    }

    fn histogram_vec(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let h = HistogramVec::new(Maker::histogram_opts(name, help), labels).expect("valid histogram");
        self.0.register(Box::new(h.clone())).expect("unique histogram");
        h
    }

    /// `process_*` (CPU, memory, file descriptors, start time) and `roster_build_info`.
    fn process_and_build(&self) {
        let process = prometheus::process_collector::ProcessCollector::for_self();
        self.0
            .register(Box::new(process))
            .expect("unique process collector");
        let labels = ["version", "revision"];
        let info = self.gauge_vec("build_info", "1, labelled with the running build", &labels);
        let revision = option_env!("ROSTER_REVISION").unwrap_or("unknown");
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), revision])
            .set(1);
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Maker(Registry::new());
        m.process_and_build();
        Metrics {
            reconciles: m.counter("reconciles_total", "Service reconciles by result", &["result"]),
            reconcile_duration: m.histogram("reconcile_duration_seconds", "Time to reconcile one Service"),
            api_writes: m.counter(
                "api_writes_total",
                "Writes roster made, by resource, verb and outcome (success, or the error kind: conflict, ...)",
                &["resource", "verb", "outcome"],
            ),
            api_requests: m.counter(
                "api_requests_total",
                "Every API request, by verb, resource and HTTP status code (`error`: no answer)",
                &["verb", "resource", "code"],
            ),
            api_request_duration: m.histogram_vec(
                "api_request_duration_seconds",
                "Time to an API request's answer (watches excluded), by verb and resource",
                &["verb", "resource"],
            ),
            write_budget: m.float_gauge(
                "write_budget_qps",
                "Writes per second the write budget allows now (adaptive: between 1 and --write-qps)",
            ),
            write_budget_cuts: m.counter(
                "write_budget_cuts_total",
                "Times the adaptive write budget lowered its rate, by reason (throttled, server_error, slow)",
                &["reason"],
            ),
            write_budget_wait: m.histogram(
                "write_budget_wait_seconds",
                "Time a write waited for the write budget (a token, or the end of a Retry-After pause)",
            ),
            queue_depth: m.gauge("queue_depth", "Keys waiting in the work queue"),
            queue_adds: m.counter("queue_adds_total", "Keys added to the work queue, by kind", &["kind"]),
            queue_work_duration: m.histogram_vec(
                "queue_work_duration_seconds",
                "Time a worker spent on one key, by kind",
                &["kind"],
            ),
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
            slice_endpoint_changes: m.counter(
                "endpointslice_endpoint_changes_total",
                "Endpoints added to, updated in and removed from roster's EndpointSlices",
                &["change"],
            ),
            slices_desired: m.gauge(
                "endpointslices_desired",
                "EndpointSlices an ideal packing of every Service's endpoints needs",
            ),
            slice_endpoints_desired: m.gauge(
                "endpointslice_endpoints_desired",
                "Endpoints of every Service roster publishes in EndpointSlices",
            ),
            dns_lookups: m.counter(
                "dns_lookups_total",
                "BackendSet DNS lookups by result (success, failure)",
                &["result"],
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
        m.api_writes
            .with_label_values(&["endpoints", "update", "success"])
            .inc_by(2);
        let text = m.render();
        assert!(
            text.contains("roster_reconciles_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "roster_api_writes_total{outcome=\"success\",resource=\"endpoints\",verb=\"update\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE roster_propagation_latency_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("roster_build_info{"), "{text}");
        m.write_budget.set(2.5);
        let text = m.render();
        assert!(text.contains("roster_write_budget_qps 2.5"), "{text}");
        assert!(
            text.contains("roster_write_budget_wait_seconds_count 0"),
            "{text}"
        );
        assert!(text.contains("process_start_time_seconds"), "{text}");
    }
}
