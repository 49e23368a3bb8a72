//! `roster explain`: its verdicts are membership in the desired Endpoints and EndpointSlices, its reasons
//! are the documented rules, and its selection and near-misses are the Kubernetes selector semantics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointSubset, Service};
use proptest::prelude::*;
use roster::cache::{NodeProjection, PodProjection};
use roster::desired::{self, Exclusion};
use roster::explain::{Objects, Placement, Report, SlicePlacement, Verdict, explain};
use serde_json::json;

use crate::generators::*;
use crate::model::*;

const NOW: &str = "2024-01-03T00:00:00Z";

/// The Service, the pods labelled `labels[i]` as the API server sends them, and Nodes n1 (zone-a) and n2.
fn objects(service: Service, pods: &[(String, PodSpec)], labels: &[BTreeMap<String, String>]) -> Objects {
    let pod = |(i, (name, spec)): (usize, &(String, PodSpec))| {
        serde_json::from_value::<PodProjection>(pod_json(name, spec, &labels[i])).unwrap()
    };
    let node = |zone: Option<&str>, name: &str| {
        let labels: BTreeMap<&str, &str> = zone
            .map(|z| ("topology.kubernetes.io/zone", z))
            .into_iter()
            .collect();
        serde_json::from_value::<NodeProjection>(json!({"metadata": {"name": name, "labels": labels}}))
            .unwrap()
    };
    Objects {
        service,
        pods: pods.iter().enumerate().map(pod).collect(),
        nodes: Ok(vec![node(Some("zone-a"), "n1"), node(None, "n2")]),
        ..Objects::default()
    }
}

fn report(svc: &SvcSpec, pods: &[(String, PodSpec)]) -> Report {
    let labels = vec![app_web(); pods.len()];
    explain(&objects(service_object(svc), pods, &labels), NOW.parse().unwrap())
}

/// Pod name → under `addresses` (true) or `notReadyAddresses`.
fn listed(subsets: &[EndpointSubset]) -> BTreeMap<String, bool> {
    endpoints_tuples(subsets)
        .into_iter()
        .map(|t| (t.2, t.3))
        .collect()
}

fn placed(placement: Placement) -> Option<bool> {
    match placement {
        Placement::Addresses => Some(true),
        Placement::NotReadyAddresses => Some(false),
        Placement::Truncated | Placement::Absent { .. } => None,
    }
}

/// Why a pod is not in the Endpoints, by the documented rules (F6–F8, F16, F18), in the order they apply.
fn model_exclusion(svc: &SvcSpec, pod: &PodSpec) -> Option<Exclusion> {
    let ips = pod.ips();
    if pod.is_terminal() {
        return Some(Exclusion::Terminal);
    }
    if ips.is_empty() {
        return Some(Exclusion::NoIp);
    }
    if pod.terminating && !svc.pnra {
        return Some(Exclusion::Terminating);
    }
    let family = endpoints_family(svc, &ips);
    if !ips.iter().any(|ip| Family::of(ip) == family) {
        return Some(Exclusion::NoIpOfFamily);
    }
    let portless_headless = svc.ports.is_empty() && svc.headless;
    let resolves = svc.ports.iter().any(|p| resolve_port(p, pod).is_some());
    (!resolves && !portless_headless).then_some(Exclusion::NoPort)
}

proptest! {
    #![proptest_config(config(256))]

    /// Every pod is explained; it is placed in the Endpoints exactly where `desired_endpoints` and the
    /// model of the documented rules put it, and in the EndpointSlices with the model's conditions; a pod
    /// left out is left out for the reason the rules give; a ready verdict is a ready address.
    #[test]
    fn verdicts_are_membership_in_the_desired_endpoints(
        svc in service_strategy(),
        pods in proptest::collection::vec(pod_strategy(), 0..16),
    ) {
        let pods = named(pods);
        let report = report(&svc, &pods);
        let mut names: Vec<&String> = pods.iter().map(|(name, _)| name).collect();
        names.sort();
        let explained: Vec<&String> = report.pods.iter().map(|p| &p.name).collect();
        prop_assert_eq!(explained, names);

        let desired = desired::desired_endpoints(&service_record(&svc), &pod_records(&pods), endpoints_input(&svc));
        let in_desired = listed(&desired.subsets);
        let in_model: BTreeMap<String, bool> = model_endpoints(&svc, &pods).into_iter().map(|t| (t.2, t.3)).collect();
        let (slice_model, _) = model_slices(&svc, &pods);
        let in_slices: BTreeMap<String, (bool, bool, bool)> = slice_model.into_iter().map(|t| (t.3, t.4)).collect();
        let specs: BTreeMap<&String, &PodSpec> = pods.iter().map(|(name, spec)| (name, spec)).collect();
        for pod in &report.pods {
            let placed = placed(pod.endpoints);
            prop_assert_eq!(placed, in_desired.get(&pod.name).copied(), "{} in desired_endpoints", &pod.name);
            prop_assert_eq!(placed, in_model.get(&pod.name).copied(), "{} in the model", &pod.name);
            if pod.verdict == Verdict::Ready {
                prop_assert_eq!(placed, Some(true), "{} ready", &pod.name);
            }
            let why = match pod.endpoints {
                Placement::Absent { why } => Some(why),
                _ => None,
            };
            prop_assert_eq!(why, model_exclusion(&svc, specs[&pod.name]), "{} left out", &pod.name);
            let in_slice = match pod.slices {
                SlicePlacement::Endpoint { ready, serving, terminating } => Some((ready, serving, terminating)),
                SlicePlacement::Absent { .. } => None,
            };
            prop_assert_eq!(in_slice, in_slices.get(&pod.name).copied(), "{} in the slices", &pod.name);
        }
    }

    /// The selected pods are those the selector matches, and the near-misses of a selector of several
    /// requirements are exactly the pods that fail one of them.
    #[test]
    fn selection_and_near_misses_follow_the_selector(
        reqs in proptest::collection::vec(req_strategy(), 1..4),
        labels in proptest::collection::vec(labels_strategy(), 0..12),
    ) {
        let svc = one_port_service();
        let mut service = service_object(&svc);
        service.spec.as_mut().unwrap().selector = None;
        service.metadata.annotations = Some([("roster.dev/selector".to_owned(), selector_text(&reqs))].into());
        let spec = PodSpec { v4: Some((0, 1)), ..pod_spec_template() };
        let pods: Vec<(String, PodSpec)> = (0..labels.len()).map(|i| (format!("p{i:02}"), spec.clone())).collect();
        let report = explain(&objects(service, &pods, &labels), NOW.parse().unwrap());

        let mut distinct: Vec<Req> = reqs.clone();
        distinct.sort_by_key(requirement_key);
        distinct.dedup_by_key(|r| requirement_key(r));
        let failing = |l: &BTreeMap<String, String>| distinct.iter().filter(|r| !r.matches(l)).count();
        let named = |want: &dyn Fn(usize) -> bool| -> Vec<String> {
            (0..labels.len()).filter(|i| want(failing(&labels[*i]))).map(|i| pods[i].0.clone()).collect()
        };
        let selected: Vec<String> = report.pods.iter().map(|p| p.name.clone()).collect();
        prop_assert_eq!(selected, named(&|n| n == 0));
        let misses: Vec<String> = report.near_misses.iter().map(|m| m.name.clone()).collect();
        let one_off = named(&|n| n == 1);
        if distinct.len() > 1 {
            prop_assert_eq!(misses, one_off);
        } else {
            prop_assert!(misses.iter().all(|m| one_off.contains(m)), "{:?} not all in {:?}", misses, one_off);
        }
    }
}

/// What a requirement means, whatever its spelling (`==` or `=`, the order of a set): a selector holds
/// each requirement once.
fn requirement_key(req: &Req) -> String {
    let set = |vs: &[&str]| {
        let mut vs = vs.to_vec();
        vs.sort();
        vs.dedup();
        vs.join(",")
    };
    match req {
        Req::Eq(k, v, _) => format!("{k}={v}"),
        Req::In(k, vs) => format!("{k} in {}", set(vs)),
        Req::NotIn(k, vs) => format!("{k} notin {}", set(vs)),
        other => other.text(),
    }
}

/// A running, ready pod on n1 with no ports.
fn pod_spec_template() -> PodSpec {
    PodSpec {
        v4: None,
        v4_legacy: false,
        v6: None,
        v6_first: false,
        phase: Some("Running"),
        ready: Some("True"),
        terminating: false,
        node: Some("n1"),
        hostname: false,
        subdomain: None,
        ports: Vec::new(),
        init_ports: Vec::new(),
    }
}
