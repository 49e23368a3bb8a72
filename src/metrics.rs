//! Every Prometheus metric roster exports, registered in one registry. Names follow Prometheus conventions
//! (`_total` counters, `_seconds` durations, base units); the README lists them.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub leader: IntGauge,
    pub ready_held_pods: IntGauge,
    pub reconcile: ReconcileMetrics,
    pub api: ApiMetrics,
    pub queue: QueueMetrics,
    pub watch: WatchMetrics,
    pub slices: SliceMetrics,
    pub backendset: BackendSetMetrics,
    pub adoption: AdoptionMetrics,
}

/// Reconciles of Services and what they found.
#[derive(Clone)]
pub struct ReconcileMetrics {
    pub results: IntCounterVec,
    pub duration: Histogram,
    pub retries: IntCounterVec,
    pub invalid_objects: IntCounterVec,
    pub propagation_latency: Histogram,
}

/// Requests to the API server, and the write budget they spend.
#[derive(Clone)]
pub struct ApiMetrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub writes: IntCounterVec,
    pub budget_qps: Gauge,
    pub budget_cuts: IntCounterVec,
    pub budget_wait: Histogram,
}

/// The work queue.
#[derive(Clone)]
pub struct QueueMetrics {
    pub depth: IntGauge,
    pub adds: IntCounterVec,
    pub work_duration: HistogramVec,
    pub wait: Histogram,
}

/// Watches and the caches they fill.
#[derive(Clone)]
pub struct WatchMetrics {
    pub events: IntCounterVec,
    pub errors: IntCounterVec,
    pub cached_objects: IntGaugeVec,
    pub unconfirmed_writes: IntGaugeVec,
}

/// roster's EndpointSlices.
#[derive(Clone)]
pub struct SliceMetrics {
    pub endpoint_changes: IntCounterVec,
    pub desired: IntGauge,
    pub endpoints_desired: IntGauge,
}

/// BackendSet probes, lookups and addresses.
#[derive(Clone)]
pub struct BackendSetMetrics {
    pub probes: IntCounterVec,
    pub probe_duration: Histogram,
    pub backends: IntGaugeVec,
    pub dns_lookups: IntCounterVec,
}

/// Shadow mode, takeover and handback.
#[derive(Clone)]
pub struct AdoptionMetrics {
    pub shadow_services: IntGaugeVec,
    pub shadow_differences: IntCounterVec,
    pub shadow_divergences: IntCounterVec,
    pub upstream_active: IntGauge,
    pub handback_waiting: IntGauge,
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
            leader: m.gauge("leader", "1 while this replica holds the leader Lease (or runs without election)"),
            ready_held_pods: m.gauge(
                "ready_held_pods",
                "Flapping pods kept out of the ready endpoints by a readiness hold-down (roster.dev/ready-hold-down)",
            ),
            reconcile: ReconcileMetrics::new(&m),
            api: ApiMetrics::new(&m),
            queue: QueueMetrics::new(&m),
            watch: WatchMetrics::new(&m),
            slices: SliceMetrics::new(&m),
            backendset: BackendSetMetrics::new(&m),
            adoption: AdoptionMetrics::new(&m),
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

impl ReconcileMetrics {
    fn new(m: &Maker) -> ReconcileMetrics {
        ReconcileMetrics {
            results: m.counter("reconciles_total", "Service reconciles by result", &["result"]),
            duration: m.histogram("reconcile_duration_seconds", "Time to reconcile one Service"),
            retries: m.counter(
                "queue_retries_total",
                "Services requeued with backoff, by error kind",
                &["kind"],
            ),
            invalid_objects: m.counter("invalid_objects_total", "Objects roster could not use, by kind", &["kind"]),
            propagation_latency: m.histogram(
                "propagation_latency_seconds",
                "From the change roster observed (or a pod's Ready transition) to the write that published it",
            ),
        }
    }
}

impl ApiMetrics {
    fn new(m: &Maker) -> ApiMetrics {
        ApiMetrics {
            requests: m.counter(
                "api_requests_total",
                "Every API request, by verb, resource and HTTP status code (`error`: no answer)",
                &["verb", "resource", "code"],
            ),
            request_duration: m.histogram_vec(
                "api_request_duration_seconds",
                "Time to an API request's answer (watches excluded), by verb and resource",
                &["verb", "resource"],
            ),
            writes: m.counter(
                "api_writes_total",
                "Writes roster made, by resource, verb and outcome (success, or the error kind: conflict, ...)",
                &["resource", "verb", "outcome"],
            ),
            budget_qps: m.float_gauge(
                "write_budget_qps",
                "Writes per second the write budget allows now (adaptive: between 1 and --write-qps)",
            ),
            budget_cuts: m.counter(
                "write_budget_cuts_total",
                "Times the adaptive write budget lowered its rate, by reason (throttled, server_error, slow)",
                &["reason"],
            ),
            budget_wait: m.histogram(
                "write_budget_wait_seconds",
                "Time a write waited for the write budget (a token, or the end of a Retry-After pause)",
            ),
        }
    }
}

impl QueueMetrics {
    fn new(m: &Maker) -> QueueMetrics {
        QueueMetrics {
            depth: m.gauge("queue_depth", "Keys waiting in the work queue"),
            adds: m.counter(
                "queue_adds_total",
                "Keys added to the work queue, by kind",
                &["kind"],
            ),
            work_duration: m.histogram_vec(
                "queue_work_duration_seconds",
                "Time a worker spent on one key, by kind",
                &["kind"],
            ),
            wait: m.histogram(
                "queue_wait_seconds",
                "Time a Service waited in the queue before a worker took it",
            ),
        }
    }
}

impl WatchMetrics {
    fn new(m: &Maker) -> WatchMetrics {
        WatchMetrics {
            events: m.counter("watch_events_total", "Watch events received, by kind", &["kind"]),
            errors: m.counter(
                "watch_errors_total",
                "Failed lists and watches (undecodable objects included), by kind",
                &["kind"],
            ),
            cached_objects: m.gauge_vec("cached_objects", "Objects in roster's caches, by kind", &["kind"]),
            unconfirmed_writes: m.gauge_vec(
                "unconfirmed_writes",
                "roster's own writes and deletes the watch has not delivered yet, by kind",
                &["kind"],
            ),
        }
    }
}

impl SliceMetrics {
    fn new(m: &Maker) -> SliceMetrics {
        SliceMetrics {
            endpoint_changes: m.counter(
                "endpointslice_endpoint_changes_total",
                "Endpoints added to, updated in and removed from roster's EndpointSlices",
                &["change"],
            ),
            desired: m.gauge(
                "endpointslices_desired",
                "EndpointSlices an ideal packing of every Service's endpoints needs",
            ),
            endpoints_desired: m.gauge(
                "endpointslice_endpoints_desired",
                "Endpoints of every Service roster publishes in EndpointSlices",
            ),
        }
    }
}

impl BackendSetMetrics {
    fn new(m: &Maker) -> BackendSetMetrics {
        BackendSetMetrics {
            probes: m.counter(
                "probes_total",
                "BackendSet readiness probes by result",
                &["result"],
            ),
            probe_duration: m.histogram(
                "probe_duration_seconds",
                "Duration of BackendSet readiness probes",
            ),
            backends: m.gauge_vec(
                "backends",
                "BackendSet backend addresses by readiness",
                &["ready"],
            ),
            dns_lookups: m.counter(
                "dns_lookups_total",
                "BackendSet DNS lookups by result (success, failure)",
                &["result"],
            ),
        }
    }
}

impl AdoptionMetrics {
    fn new(m: &Maker) -> AdoptionMetrics {
        AdoptionMetrics {
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
        }
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
        m.reconcile.results.with_label_values(&["success"]).inc();
        m.api
            .writes
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
        m.api.budget_qps.set(2.5);
        let text = m.render();
        assert!(text.contains("roster_write_budget_qps 2.5"), "{text}");
        assert!(
            text.contains("roster_write_budget_wait_seconds_count 0"),
            "{text}"
        );
        assert!(text.contains("process_start_time_seconds"), "{text}");
    }
}
