//! A report as text: a table for people, JSON for scripts.

use std::fmt::Write as _;

use super::drift::{DriftItem, Live, ManagedBy, Who};
use super::pods::{Placement, PodExplanation, SlicePlacement, Verdict};
use super::report::{Outcome, Report, ServiceSummary, Source};

/// The report as pretty-printed JSON.
pub fn json(report: &Report) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("a report serializes");
    text.push('\n');
    text
}

/// The report as kubectl-style text: the Service, its pods in a table, why, near-misses, drift, hints.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let service = &report.service;
    let fields = [
        ("Service", format!("{}/{}", service.namespace, service.name)),
        ("Type", service_type(service, &report.source)),
        ("Ports", ports(service)),
        ("Source", source(&report.source)),
        ("Endpoints", live_endpoints(&report.live)),
        ("Slices", live_slices(&report.live)),
    ];
    for (name, value) in fields {
        let _ = writeln!(out, "{:<12} {value}", format!("{name}:"));
    }
    for note in &report.notes {
        let _ = writeln!(out, "{:<12} {note}", "Note:");
    }
    if let Source::BackendSet {
        status: Some(status), ..
    } = &report.source
    {
        out.push_str(&backendset(status));
    }
    out.push_str(&pods(&report.pods));
    out.push_str(&near_misses(report));
    out.push_str(&drift(report));
    if !report.hints.is_empty() {
        out.push_str("\nHints:\n");
        report.hints.iter().for_each(|h| {
            let _ = writeln!(out, "  - {h}");
        });
    }
    let _ = writeln!(out, "\nResult: {}", result(report));
    out
}

fn service_type(service: &ServiceSummary, source: &Source) -> String {
    match (source, &service.cluster_ip) {
        (Source::ExternalName { external_name }, _) => {
            format!("ExternalName, a DNS CNAME to {external_name}")
        }
        _ if service.headless => format!("{}, headless (clusterIP: None)", service.type_),
        (_, Some(ip)) => format!("{} {ip}", service.type_),
        (_, None) => service.type_.clone(),
    }
}

fn ports(service: &ServiceSummary) -> String {
    let port = |p: &super::report::PortSummary| {
        let name = if p.name.is_empty() {
            String::new()
        } else {
            format!("{} ", p.name)
        };
        format!("{name}{} -> {}/{}", p.port, p.target_port, p.protocol)
    };
    match service.ports.is_empty() {
        true => "none".to_owned(),
        false => service.ports.iter().map(port).collect::<Vec<_>>().join(", "),
    }
}

fn source(source: &Source) -> String {
    match source {
        Source::Selector {
            selector,
            from_annotation: false,
        } => format!("the pods matching {selector}"),
        Source::Selector {
            selector,
            from_annotation: true,
        } => {
            format!("the pods matching {selector} (the roster.dev/selector annotation)")
        }
        Source::InvalidSelector { message } => {
            format!("none: roster leaves this Service alone, its {message}")
        }
        Source::HandMade => {
            "written by hand (no selector); EndpointSlices mirror hand-made Endpoints".to_owned()
        }
        Source::BackendSet { name, status } => {
            let summary = status.as_ref().and_then(|s| s.summary.clone());
            format!(
                "BackendSet {name} (ready {})",
                summary.unwrap_or_else(|| "unknown".to_owned())
            )
        }
        Source::Nothing => "none: no selector, no Endpoints, no BackendSet".to_owned(),
        Source::ExternalName { .. } => {
            "none, by design: an ExternalName Service is only a DNS name".to_owned()
        }
    }
}

fn live_endpoints(live: &Live) -> String {
    match &live.endpoints {
        Some(ep) => format!(
            "{} ready, {} not ready, managed by {}",
            ep.ready,
            ep.not_ready,
            manager(&ep.managed_by)
        ),
        None => "none".to_owned(),
    }
}

/// The live slices, counted per manager.
fn live_slices(live: &Live) -> String {
    let mut by_manager: Vec<(String, usize)> = Vec::new();
    for slice in &live.slices {
        let who = manager(&slice.managed_by);
        match by_manager.iter_mut().find(|(m, _)| *m == who) {
            Some((_, count)) => *count += 1,
            None => by_manager.push((who, 1)),
        }
    }
    let counts = by_manager.into_iter().map(|(who, count)| match count {
        1 => format!("1 EndpointSlice, managed by {who}"),
        n => format!("{n} EndpointSlices, managed by {who}"),
    });
    let counts: Vec<String> = counts.collect();
    match counts.is_empty() {
        true => "none".to_owned(),
        false => counts.join("; "),
    }
}

fn manager(managed_by: &ManagedBy) -> String {
    match (managed_by.who, managed_by.by.as_deref()) {
        (Who::Roster, Some("roster") | None) => "roster".to_owned(),
        (Who::Upstream, None) => "upstream (kube-controller-manager)".to_owned(),
        (Who::ByHand, _) => "hand (no manager label)".to_owned(),
        (who, by) => format!("{} ({})", self::who(who), by.unwrap_or_default()),
    }
}

fn who(who: Who) -> &'static str {
    match who {
        Who::Roster => "roster",
        Who::Upstream => "upstream",
        Who::Other => "another controller",
        Who::ByHand => "hand",
    }
}

fn backendset(status: &crate::backendset::BackendSetStatus) -> String {
    let mut out = String::new();
    for c in &status.conditions {
        let _ = writeln!(
            out,
            "{:<12} {}={} ({}): {}",
            "Condition:", c.type_, c.status, c.reason, c.message
        );
    }
    for a in &status.addresses {
        let state = if a.ready { "ready" } else { "not ready" };
        let why = a.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        let _ = writeln!(out, "{:<12} {} {state}{why}", "Address:", a.address);
    }
    out
}

fn pods(pods: &[PodExplanation]) -> String {
    if pods.is_empty() {
        return String::new();
    }
    let mut rows = vec![
        ["POD", "IP", "NODE", "VERDICT", "ENDPOINTS", "SLICES"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for pod in pods {
        rows.push(vec![
            pod.name.clone(),
            pod.ips.first().cloned().unwrap_or_else(|| "<none>".to_owned()),
            pod.node.clone().unwrap_or_else(|| "<none>".to_owned()),
            verdict(pod.verdict).to_owned(),
            placement(pod.endpoints).to_owned(),
            slice_placement(pod.slices).to_owned(),
        ]);
    }
    let mut out = format!("\n{}", columns(&rows));
    let explained = pods
        .iter()
        .filter(|p| p.verdict != Verdict::Ready || p.why.len() > 1);
    let lines: Vec<String> = explained
        .flat_map(|p| p.why.iter().map(move |why| format!("  {}: {why}", p.name)))
        .collect();
    if !lines.is_empty() {
        out.push_str("\nWhy:\n");
        lines.iter().for_each(|l| {
            let _ = writeln!(out, "{l}");
        });
    }
    out
}

fn verdict(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Ready => "ready",
        Verdict::NotReady => "not ready",
        Verdict::Terminating => "terminating",
        Verdict::Terminal => "finished",
        Verdict::NoIp => "no IP",
        Verdict::NoIpOfFamily => "no IP of family",
        Verdict::NoPort => "no port",
        Verdict::NodeMissing => "Node missing",
        Verdict::Truncated => "truncated",
    }
}

fn placement(placement: Placement) -> &'static str {
    match placement {
        Placement::Addresses => "ready",
        Placement::NotReadyAddresses => "not ready",
        Placement::Truncated => "truncated",
        Placement::Absent { .. } => "-",
    }
}

fn slice_placement(placement: SlicePlacement) -> &'static str {
    match placement {
        SlicePlacement::Endpoint {
            terminating: true,
            serving: true,
            ..
        } => "terminating, serving",
        SlicePlacement::Endpoint {
            terminating: true, ..
        } => "terminating",
        SlicePlacement::Endpoint { ready: true, .. } => "ready",
        SlicePlacement::Endpoint { .. } => "not ready",
        SlicePlacement::Absent { .. } => "-",
    }
}

fn near_misses(report: &Report) -> String {
    if report.near_misses.is_empty() {
        return String::new();
    }
    let mut rows = vec![vec!["NEAR MISS".to_owned(), "WANTS".to_owned(), "HAS".to_owned()]];
    for miss in &report.near_misses {
        let has = miss.label.clone().unwrap_or_else(|| "<no such label>".to_owned());
        rows.push(vec![miss.name.clone(), miss.requirement.clone(), has]);
    }
    format!("\n{}", columns(&rows))
}

fn drift(report: &Report) -> String {
    let drift = &report.drift;
    let mut out = String::from("\n");
    if drift.endpoints.is_empty() && drift.slices.is_empty() && drift.not_compared.is_empty() {
        out.push_str("Drift: none, the live objects hold what roster computes\n");
        return out;
    }
    for why in &drift.not_compared {
        let _ = writeln!(out, "Drift: not compared: {why}");
    }
    let endpoints_live = report.live.endpoints.is_some();
    let slices_live = !report.live.slices.is_empty();
    let lines = drift
        .endpoints
        .iter()
        .map(|d| difference(d, "Endpoints", endpoints_live));
    let lines = lines.chain(
        drift
            .slices
            .iter()
            .map(|d| difference(d, "EndpointSlices", slices_live)),
    );
    let lines: Vec<String> = lines.collect();
    if !lines.is_empty() {
        out.push_str("Drift: the live objects differ from what roster computes:\n");
        lines.iter().for_each(|l| {
            let _ = writeln!(out, "  {l}");
        });
    }
    out
}

fn difference(d: &DriftItem, object: &str, live: bool) -> String {
    let at = match &d.pod {
        Some(pod) => format!("{} ({pod})", d.at),
        None => d.at.clone(),
    };
    let held = match &d.managed_by {
        Some(m) if object == "EndpointSlices" => format!(" in a slice managed by {}", manager(m)),
        _ => String::new(),
    };
    let text = match d.kind.as_str() {
        "address_missing" => {
            format!("{object}: {at} is missing: roster computes it, the live object lacks it")
        }
        "address_extra" => format!("{object}: {at} is extra{held}: roster computes no such endpoint"),
        "object" if live => format!("{object}: live, where roster computes none"),
        "object" => format!("{object}: none live, where roster computes some"),
        "labels" | "capacity" => format!("{object}: its {} differ", d.kind),
        kind => format!("{object}: {at}{held}: its {} differs", kind.replace('_', " ")),
    };
    match &d.explained_by {
        Some(row) => format!("{text} (roster's documented divergence from upstream, README row {row})"),
        None => text,
    }
}

fn result(report: &Report) -> String {
    let ready = match report.ready_endpoints {
        0 => "no ready endpoint".to_owned(),
        1 => "1 ready endpoint".to_owned(),
        n => format!("{n} ready endpoints"),
    };
    let drift = match (report.outcome, report.drift.unexplained()) {
        (Outcome::NoReadyEndpoints, 0) => String::new(),
        (_, 0) => ", no drift".to_owned(),
        (_, 1) => ", 1 difference from what roster computes".to_owned(),
        (_, n) => format!(", {n} differences from what roster computes"),
    };
    format!("{ready}{drift} (exit {})", report.exit_code)
}

/// Rows as left-aligned columns three spaces apart, as kubectl prints them.
fn columns(rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, String::len))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len)).map(width).collect();
    let mut out = String::new();
    for row in rows {
        let cells = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}"));
        let _ = writeln!(out, "{}", cells.collect::<Vec<_>>().join("   ").trim_end());
    }
    out
}
