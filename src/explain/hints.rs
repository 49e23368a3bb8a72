//! The rest of the seed notes' troubleshooting checklist, for the case at hand: what to check next.

use super::drift::Who;
use super::pods::Verdict;
use super::report::{Outcome, Report, Source};

/// The hints that apply to `report`.
pub fn hints(report: &Report) -> Vec<String> {
    let mut hints = Vec::new();
    match &report.source {
        Source::Selector { selector, .. } => hints.extend(selector_hints(report, selector)),
        Source::Nothing => hints.push(
            "a Service without a selector gets endpoints from no controller: add spec.selector, write its \
             Endpoints yourself, or bind a BackendSet to it"
                .to_owned(),
        ),
        Source::ExternalName { external_name } => hints.push(format!(
            "clients get a DNS CNAME to {external_name}: check that name resolves and answers from inside the \
             cluster; no proxy and no endpoints take part"
        )),
        _ => {}
    }
    hints.extend(drift_hints(report));
    if report.outcome == Outcome::Healthy {
        hints.extend(connection_hints(report));
    }
    hints
}

fn selector_hints(report: &Report, selector: &str) -> Vec<String> {
    let ns = &report.service.namespace;
    let mut hints = Vec::new();
    if report.pods.is_empty() {
        hints.push(format!(
            "no pod matches the selector: kubectl get pods -n {ns} -l '{selector}' --show-labels"
        ));
    }
    if !report.near_misses.is_empty() {
        hints.push(
            "some pods miss the selector by one label: fix their labels or the Service's selector".to_owned(),
        );
    }
    let verdicts = |v: Verdict| report.pods.iter().filter(move |p| p.verdict == v);
    if report.ready_endpoints == 0 && verdicts(Verdict::NotReady).next().is_some() {
        hints.push(
            "not-ready pods get no traffic until their readiness probe passes: kubectl describe pod shows \
             the probe's failures in its events"
                .to_owned(),
        );
    }
    if verdicts(Verdict::NoPort).next().is_some() {
        hints.push(
            "a named targetPort must name a containerPort of the same protocol in every pod: name the \
             container port, or give the targetPort as a number"
                .to_owned(),
        );
    }
    hints
}

/// What to do about the drift, by who writes the objects that differ.
fn drift_hints(report: &Report) -> Vec<String> {
    let drift = &report.drift;
    let unexplained = drift
        .endpoints
        .iter()
        .chain(&drift.slices)
        .filter(|d| d.explained_by.is_none());
    let mut writers: Vec<Option<Who>> = unexplained
        .map(|d| d.managed_by.as_ref().map(|m| m.who))
        .collect();
    writers.sort();
    writers.dedup();
    writers
        .into_iter()
        .map(|writer| drift_hint(report, writer))
        .collect()
}

fn drift_hint(report: &Report, writer: Option<Who>) -> String {
    let name = &report.service.name;
    match writer {
        Some(Who::Roster) => {
            "roster writes these objects, and they differ from what it computes: it may not be \
            running, not be the leader, or not have caught up yet (its /metrics show roster_leader and \
            roster_reconciles_total), or someone edited them"
                .to_owned()
        }
        Some(Who::Upstream) => {
            "kube-controller-manager writes these objects: the differences are between its \
            rules and roster's (or it has not caught up)"
                .to_owned()
        }
        Some(Who::Other | Who::ByHand) => format!(
            "an object no endpoints controller of this Service manages holds these addresses (by hand or by \
             another controller); proxies read every EndpointSlice labelled kubernetes.io/service-name={name}: \
             fix or delete it"
        ),
        None => "what roster computes is not live: is a controller managing this Service (roster with \
            --services=all, or the roster.dev/selector annotation; or kube-controller-manager) and running?"
            .to_owned(),
    }
}

/// For a Service whose endpoints are ready but which clients say they cannot reach.
fn connection_hints(report: &Report) -> Vec<String> {
    let service = &report.service;
    let mut hints = Vec::new();
    let port = service.ports.first();
    match (&service.cluster_ip, port) {
        (Some(ip), Some(port)) if !service.headless => hints.push(format!(
            "if clients cannot connect: from a pod inside the cluster, connect to {ip}:{} (the Service \
             port, not the targetPort); a ClusterIP is virtual, so do not ping it",
            port.port
        )),
        _ if service.headless => hints.push(format!(
            "headless: the DNS name {}.{}.svc answers with the ready pods' IPs; connect to a pod IP and \
             its targetPort",
            service.name, service.namespace
        )),
        _ => {}
    }
    let ready = report.pods.iter().find(|p| p.verdict == Verdict::Ready);
    let target = ready.and_then(|p| Some((p, p.ips.first()?, p.ports.iter().find_map(|r| r.resolved)?)));
    if let Some((pod, ip, target_port)) = target {
        hints.push(format!(
            "try a pod directly: {ip}:{target_port} ({}); if that fails too, check that the application \
             listens on all addresses (0.0.0.0), not on localhost only",
            pod.name
        ));
    }
    hints
}
