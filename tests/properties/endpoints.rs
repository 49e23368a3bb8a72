//! Endpoints: valid, exact, deterministic and idempotent, converging from any previous state, and truncated
//! over capacity.

use proptest::prelude::*;
use roster::desired;

use crate::generators::*;
use crate::model::*;
use crate::support::assert_truncated;

proptest! {
    #![proptest_config(config(256))]

    /// (a) valid, (b) exactly the eligible pods, (c) deterministic, (d) pod order does not matter, (e) writing
    /// the result and planning again gives no write: for Endpoints.
    #[test]
    fn endpoints_are_valid_exact_deterministic_and_idempotent(
        svc in service_strategy(),
        (pods, shuffled) in pods_and_shuffled(24),
    ) {
        let record = service_record(&svc);
        let d = desired::desired_endpoints(&record, &pod_records(&pods), endpoints_input(&svc));
        let written = written_endpoints(&d);
        check_endpoints_valid(&written, &svc)?;

        let got = endpoints_tuples(&d.subsets);
        prop_assert_eq!(as_set(&got).len(), got.len(), "an address listed twice for one port");
        prop_assert_eq!(as_set(&got), model_endpoints(&svc, &pods));
        prop_assert!(!d.truncated);

        let again = desired::desired_endpoints(&service_record(&svc), &pod_records(&pods), endpoints_input(&svc));
        prop_assert_eq!(&again, &d, "same input, different output");
        let permuted = desired::desired_endpoints(&record, &pod_records(&shuffled), endpoints_input(&svc));
        prop_assert_eq!(&permuted, &d, "pod order changed the output");

        prop_assert_eq!(desired::endpoints_need_write(Some(&written), &d), None);
        // The server's copy in another order, with targetRef resourceVersions: still no write.
        let mut noisy = written.clone();
        if let Some(subsets) = &mut noisy.subsets {
            subsets.reverse();
            for s in subsets.iter_mut() {
                for list in [&mut s.addresses, &mut s.not_ready_addresses].into_iter().flatten() {
                    list.reverse();
                    for a in list.iter_mut() {
                        a.target_ref.as_mut().unwrap().resource_version = Some("42".into());
                    }
                }
            }
        }
        prop_assert_eq!(desired::endpoints_need_write(Some(&noisy), &d), None);
    }

    /// From the Endpoints of one pod set, the write for another pod set yields exactly the new desired state,
    /// and nothing after it.
    #[test]
    fn endpoints_converge_from_any_previous_state(
        svc in service_strategy(),
        before in proptest::collection::vec(pod_strategy(), 0..16),
        after in proptest::collection::vec(pod_strategy(), 0..16),
    ) {
        let record = service_record(&svc);
        let (before, after) = (named(before), named(after));
        let old = written_endpoints(&desired::desired_endpoints(&record, &pod_records(&before), endpoints_input(&svc)));
        let want = desired::desired_endpoints(&record, &pod_records(&after), endpoints_input(&svc));
        match desired::endpoints_need_write(Some(&old), &want) {
            None => prop_assert_eq!(as_set(&endpoints_tuples(old.subsets.as_deref().unwrap_or_default())),
                                    model_endpoints(&svc, &after)),
            Some(new) => {
                prop_assert_eq!(new.metadata.resource_version.as_deref(), Some("1"), "optimistic concurrency");
                check_endpoints_valid(&new, &svc)?;
                prop_assert_eq!(as_set(&endpoints_tuples(new.subsets.as_deref().unwrap_or_default())),
                                model_endpoints(&svc, &after));
                prop_assert_eq!(desired::endpoints_need_write(Some(&new), &want), None);
            }
        }
    }
}

// ---- over capacity ----

fn simple_pods(ready: &[bool]) -> Vec<(String, PodSpec)> {
    let pod = |i: usize, ready: bool| PodSpec {
        v4: Some(((i / 254) as u8, (i % 254 + 1) as u8)),
        v4_legacy: false,
        v6: None,
        v6_first: false,
        phase: Some("Running"),
        ready: Some(if ready { "True" } else { "False" }),
        terminating: false,
        node: Some("n1"),
        hostname: false,
        subdomain: None,
        ports: vec![],
        init_ports: vec![],
    };
    ready
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("p{i:04}"), pod(i, *r)))
        .collect()
}

proptest! {
    #![proptest_config(config(8))]

    /// Over 1000 addresses: Endpoints keep exactly 1000, ready ones first, with the over-capacity annotation,
    /// and are not rewritten on the next sync (F24, F25); the slices hold every pod.
    #[test]
    fn over_capacity_truncates_ready_first_and_slices_hold_all(
        ready in proptest::collection::vec(proptest::bool::weighted(0.9), 1001..1200),
    ) {
        let svc = one_port_service();
        let pods = simple_pods(&ready);
        let record = service_record(&svc);
        let records = pod_records(&pods);
        let d = desired::desired_endpoints(&record, &records, endpoints_input(&svc));
        prop_assert!(d.truncated);
        let written = written_endpoints(&d);
        check_endpoints_valid(&written, &svc)?;
        let model = model_endpoints(&svc, &pods);
        let (ready_ips, not_ready_ips): (Vec<String>, Vec<String>) = {
            let (ready, not_ready): (Vec<&EpTuple>, Vec<&EpTuple>) = model.iter().partition(|t| t.3);
            let ips = |tuples: Vec<&EpTuple>| tuples.into_iter().map(|t| t.1.clone()).collect();
            (ips(ready), ips(not_ready))
        };
        assert_truncated(&written, &ready_ips, &not_ready_ips);
        prop_assert!(as_set(&endpoints_tuples(&d.subsets)).is_subset(&model));
        prop_assert_eq!(desired::endpoints_need_write(Some(&written), &d), None, "rewritten every sync");

        let plan = desired::desired_slices(&record, &records, &nodes, &[], &slice_input(&record, 100));
        prop_assert_eq!(plan.create.len(), ready.len().div_ceil(100));
        prop_assert_eq!(as_set(&slice_tuples(&plan.create)), model_slices(&svc, &pods).0);
    }
}
