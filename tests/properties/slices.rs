//! EndpointSlices: valid, exact, packed into the fewest slices, deterministic and idempotent, and one plan
//! from any previous state.

use proptest::prelude::*;
use roster::desired;

use crate::generators::*;
use crate::model::*;

proptest! {
    #![proptest_config(config(256))]

    /// (a)–(e) for EndpointSlices: valid, exactly the eligible endpoints (per family, per port list), packed
    /// into the fewest slices, deterministic, order-independent, and a second plan over the result is empty.
    #[test]
    fn slices_are_valid_exact_deterministic_and_idempotent(
        svc in service_strategy(),
        (pods, shuffled) in pods_and_shuffled(24),
        max in prop_oneof![1..=4usize, Just(100usize)],
    ) {
        let record = service_record(&svc);
        let plan = desired::desired_slices(&record, &pod_records(&pods), &nodes, &[], &slice_input(&record, max));
        prop_assert!(plan.update.is_empty() && plan.delete.is_empty(), "nothing exists: only creates");
        check_slices_valid(&plan.create, &svc, max)?;
        let (want, missing) = model_slices(&svc, &pods);
        prop_assert_eq!(as_set(&slice_tuples(&plan.create)), want);
        prop_assert_eq!(as_set(&plan.missing_nodes), missing);
        prop_assert_eq!(plan.create.len(), plan.stats.slices_desired, "not packed into the fewest slices");
        for family in slice_families(&svc) {
            prop_assert!(plan.create.iter().any(|s| s.address_type == family.address_type()),
                "every address type has a slice (a placeholder when empty)");
        }

        let again = desired::desired_slices(&service_record(&svc), &pod_records(&pods), &nodes, &[], &slice_input(&service_record(&svc), max));
        prop_assert_eq!(&again, &plan, "same input, different plan");
        let permuted = desired::desired_slices(&record, &pod_records(&shuffled), &nodes, &[], &slice_input(&record, max));
        prop_assert_eq!(&permuted, &plan, "pod order changed the plan");

        let mut serial = 0;
        let mut existing = apply_plan(&[], &plan, &mut serial)?;
        let replan = desired::desired_slices(&record, &pod_records(&pods), &nodes, &existing, &slice_input(&record, max));
        prop_assert!(replan.is_empty(), "rewrites what it just wrote: {replan:?}");
        existing.reverse();
        let replan = desired::desired_slices(&record, &pod_records(&shuffled), &nodes, &existing, &slice_input(&record, max));
        prop_assert!(replan.is_empty(), "listing order caused a write");
    }

    /// From the slices of one pod set, one plan reaches exactly the slices of another pod set: no endpoint
    /// lost or duplicated, no slice over the limit, no write to a missing slice, and nothing left to do.
    #[test]
    fn slices_converge_from_any_previous_state_in_one_plan(
        svc in service_strategy(),
        before in proptest::collection::vec(pod_strategy(), 0..20),
        after in proptest::collection::vec(pod_strategy(), 0..20),
        max in prop_oneof![1..=4usize, Just(100usize)],
        lowered_max in 1..=4usize,
    ) {
        let record = service_record(&svc);
        let (before, after) = (named(before), named(after));
        let mut serial = 0;
        let first = desired::desired_slices(&record, &pod_records(&before), &nodes, &[], &slice_input(&record, max));
        let existing = apply_plan(&[], &first, &mut serial)?;
        // Also lower --max-endpoints-per-slice between the two runs, as an operator may.
        for limit in [max, lowered_max.min(max)] {
            let plan = desired::desired_slices(&record, &pod_records(&after), &nodes, &existing, &slice_input(&record, limit));
            let now = apply_plan(&existing, &plan, &mut serial)?;
            check_slices_valid(&now, &svc, limit)?;
            prop_assert_eq!(as_set(&slice_tuples(&now)), model_slices(&svc, &after).0);
            let replan = desired::desired_slices(&record, &pod_records(&after), &nodes, &now, &slice_input(&record, limit));
            prop_assert!(replan.is_empty(), "not converged after one plan: {replan:?}");
        }
    }
}
