//! The cache: which pods a Service selects does not depend on the order of events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use proptest::prelude::*;
use proptest::sample::select;
use roster::cache::{Cache, PodProjection, PodRecord, SelectorSource, ServiceKey};
use serde_json::json;

use crate::generators::*;

#[derive(Clone, Debug)]
enum PodOp {
    Upsert(BTreeMap<String, String>, PodSpec),
    Delete,
}

#[derive(Clone, Debug)]
struct History {
    namespace: &'static str,
    ops: Vec<PodOp>,
}

fn history_strategy() -> impl Strategy<Value = History> {
    let op = prop_oneof![
        4 => (labels_strategy(), pod_strategy()).prop_map(|(l, p)| PodOp::Upsert(l, p)),
        1 => Just(PodOp::Delete),
    ];
    (
        select(&[NS, NS, NS, "other"][..]),
        proptest::collection::vec(op, 1..4),
    )
        .prop_map(|(namespace, ops)| History { namespace, ops })
}

/// The Services of the cache test: two `spec.selector` maps and two annotation selectors.
fn cache_services(selectors: &[Vec<Req>]) -> Vec<(Service, SelectorSource)> {
    let mut out = Vec::new();
    out.push((
        serde_json::from_value(json!({"metadata": {"namespace": NS, "name": "eq", "uid": "u1"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
        .unwrap(),
        SelectorSource::Spec,
    ));
    out.push((
        serde_json::from_value(json!({"metadata": {"namespace": NS, "name": "eq2", "uid": "u2"},
            "spec": {"selector": {"app": "web", "tier": "db"}, "ports": [{"port": 80}]}}))
        .unwrap(),
        SelectorSource::Spec,
    ));
    for (i, reqs) in selectors.iter().enumerate() {
        out.push((
            serde_json::from_value(json!({"metadata": {"namespace": NS, "name": format!("sel{i}"), "uid": format!("s{i}"),
                "annotations": {"roster.dev/selector": selector_text(reqs)}}, "spec": {"ports": [{"port": 80}]}}))
            .unwrap(),
            SelectorSource::Annotation,
        ));
    }
    out
}

fn selects(svc: &Service, reqs: &[Vec<Req>], labels: &BTreeMap<String, String>) -> bool {
    let name = svc.metadata.name.as_deref().unwrap();
    match name {
        "eq" => labels.get("app").is_some_and(|v| v == "web"),
        "eq2" => {
            labels.get("app").is_some_and(|v| v == "web") && labels.get("tier").is_some_and(|v| v == "db")
        }
        _ => {
            let i: usize = name.trim_start_matches("sel").parse().unwrap();
            reqs[i].iter().all(|r| r.matches(labels))
        }
    }
}

/// Interleaves the per-pod histories in the order given by `order` (the k-th occurrence of pod p is its k-th
/// operation), with the Services added after `services_at` operations.
fn run_cache(
    histories: &[History],
    order: &[usize],
    services: &[(Service, SelectorSource)],
    services_at: usize,
) -> Cache {
    let mut cache = Cache::new();
    let mut next = vec![0; histories.len()];
    for (step, &p) in order.iter().enumerate() {
        if step == services_at {
            for (svc, source) in services {
                cache.upsert_service(svc, *source);
            }
        }
        let op = &histories[p].ops[next[p]];
        next[p] += 1;
        let name = format!("p{p}");
        match op {
            PodOp::Upsert(labels, spec) => {
                let mut pod = pod_json(&name, spec, labels);
                pod["metadata"]["namespace"] = json!(histories[p].namespace);
                cache.upsert_pod(serde_json::from_value(pod).unwrap());
            }
            PodOp::Delete => {
                cache.delete_pod(histories[p].namespace, &name);
            }
        }
    }
    if services_at >= order.len() {
        for (svc, source) in services {
            cache.upsert_service(svc, *source);
        }
    }
    cache
}

type CacheCase = (Vec<History>, Vec<usize>, Vec<usize>, usize, usize, Vec<Vec<Req>>);

fn cache_case() -> impl Strategy<Value = CacheCase> {
    (
        proptest::collection::vec(history_strategy(), 1..8),
        proptest::collection::vec(proptest::collection::vec(req_strategy(), 1..3), 2),
    )
        .prop_flat_map(|(histories, selectors)| {
            let slots: Vec<usize> = histories
                .iter()
                .enumerate()
                .flat_map(|(p, h)| std::iter::repeat_n(p, h.ops.len()))
                .collect();
            let n = slots.len();
            (
                Just(histories),
                Just(slots.clone()).prop_shuffle(),
                Just(slots).prop_shuffle(),
                0..=n,
                0..=n,
                Just(selectors),
            )
        })
}

fn selected(cache: &Cache, name: &str) -> Vec<PodRecord> {
    cache
        .pods_for_service(&ServiceKey::new(NS, name))
        .iter()
        .map(|p| (**p).clone())
        .collect()
}

proptest! {
    #![proptest_config(config(256))]

    /// (d) for the cache: the same pod events interleaved in two orders, with the Services arriving at
    /// different moments, select the same pods; those are exactly the pods of the Service's namespace that
    /// exist at the end and match its selector; and a relist of the final pods from scratch agrees.
    #[test]
    fn cache_selection_is_independent_of_event_order(
        (histories, order_a, order_b, at_a, at_b, selectors) in cache_case(),
    ) {
        let services = cache_services(&selectors);
        let a = run_cache(&histories, &order_a, &services, at_a);
        let b = run_cache(&histories, &order_b, &services, at_b);

        let finals: Vec<PodProjection> = histories
            .iter()
            .enumerate()
            .filter_map(|(p, h)| match h.ops.last()? {
                PodOp::Upsert(labels, spec) => {
                    let mut pod = pod_json(&format!("p{p}"), spec, labels);
                    pod["metadata"]["namespace"] = json!(h.namespace);
                    Some(serde_json::from_value(pod).unwrap())
                }
                PodOp::Delete => None,
            })
            .collect();
        let mut relisted = Cache::new();
        for (svc, source) in &services {
            relisted.upsert_service(svc, *source);
        }
        let records = finals.iter().map(|p: &PodProjection| relisted.compact_pod(p)).collect();
        relisted.replace_pods(records);
        // A relist over a stale cache (order A's) also lands on the same state.
        let mut stale = run_cache(&histories, &order_a[..order_a.len() / 2], &services, 0);
        let records = finals.iter().map(|p| stale.compact_pod(p)).collect();
        stale.replace_pods(records);

        for (svc, _) in &services {
            let name = svc.metadata.name.as_deref().unwrap();
            let want: Vec<String> = histories
                .iter()
                .enumerate()
                .filter(|(_, h)| h.namespace == NS)
                .filter_map(|(p, h)| match h.ops.last()? {
                    PodOp::Upsert(labels, _) if selects(svc, &selectors, labels) => Some(format!("p{p}")),
                    _ => None,
                })
                .collect();
            let mut want = want;
            want.sort();
            let got_a = selected(&a, name);
            let names: Vec<String> = got_a.iter().map(|p| p.name.to_string()).collect();
            prop_assert_eq!(&names, &want, "{} selects the wrong pods", name);
            prop_assert_eq!(&selected(&b, name), &got_a, "event order changed {}'s pods", name);
            prop_assert_eq!(&selected(&relisted, name), &got_a, "relist disagrees for {}", name);
            prop_assert_eq!(&selected(&stale, name), &got_a, "relist over a stale cache disagrees for {}", name);
        }
        prop_assert_eq!(a.len_pods(), b.len_pods());
        prop_assert_eq!(a.len_pods(), relisted.len_pods());
        prop_assert_eq!(a.len_pods(), stale.len_pods());
    }
}
