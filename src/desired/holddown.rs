//! The readiness hold-down, roster's own extension (no upstream controller damps flapping readiness), opted
//! into per Service with `roster.dev/ready-hold-down: <duration>`.
//!
//! A pod that becomes NotReady leaves the ready endpoints at once: safety never waits. A pod that becomes
//! Ready joins at once too, unless that transition ends a flap: [`FLAP_TRANSITIONS`] readiness transitions
//! (either way, this one included) within [`FLAP_WINDOW`]. A flapping pod rejoins only once it has stayed
//! Ready for the hold-down; until then it is published as not ready. So a pod's first Ready, or a single
//! failed probe (Ready, NotReady, Ready: three transitions), is never delayed.
//!
//! The decision is a function of the transitions roster saw (the controller keeps the last
//! [`FLAP_TRANSITIONS`] of each pod of an opted-in Service) and of `now`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::PodRecord;

/// Transitions within [`FLAP_WINDOW`] that make a pod flapping.
pub const FLAP_TRANSITIONS: usize = 4;
/// The window in which [`FLAP_TRANSITIONS`] transitions make a pod flapping.
pub const FLAP_WINDOW: Duration = Duration::from_secs(120);

/// A readiness change of a pod, when roster saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub at: Instant,
    /// Ready after the change.
    pub ready: bool,
}

/// Until when a pod stays out of the ready endpoints: `Some` while it is Ready by its own account, its
/// latest transition (the last of `history`, oldest first) made it Ready and ended a flap, and it has not
/// yet stayed Ready for `hold`. `None`: the pod is published as it is.
pub fn held_until(ready: bool, history: &[Transition], hold: Duration, now: Instant) -> Option<Instant> {
    let (latest, earlier) = history.split_last()?;
    if !ready || !latest.ready {
        return None;
    }
    let until = latest.at.checked_add(hold)?;
    if now >= until {
        return None;
    }
    let window_start = latest.at.checked_sub(FLAP_WINDOW);
    let in_window = earlier
        .iter()
        .filter(|t| window_start.is_none_or(|start| t.at >= start))
        .count();
    (in_window + 1 >= FLAP_TRANSITIONS).then_some(until)
}

/// A held pod as it is published: not ready (in `notReadyAddresses`, and neither ready nor serving in
/// slices).
pub fn withheld(pod: &PodRecord) -> Arc<PodRecord> {
    Arc::new(PodRecord {
        ready: false,
        ..pod.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::PodFixture;

    const HOLD: Duration = Duration::from_secs(10);

    /// Transitions at these offsets (seconds after `t0`), alternating and ending with `last_ready`.
    fn history(t0: Instant, offsets: &[u64], last_ready: bool) -> Vec<Transition> {
        let n = offsets.len();
        offsets
            .iter()
            .enumerate()
            .map(|(i, s)| Transition {
                at: t0 + Duration::from_secs(*s),
                ready: (n - 1 - i).is_multiple_of(2) == last_ready,
            })
            .collect()
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn a_flapping_pod_is_held_until_it_stays_ready_for_the_hold_down() {
        let t0 = Instant::now();
        let flapped = history(t0, &[0, 3, 6, 9], true);
        assert_eq!(held_until(true, &flapped, HOLD, at(t0, 9)), Some(at(t0, 19)));
        assert_eq!(held_until(true, &flapped, HOLD, at(t0, 18)), Some(at(t0, 19)));
        assert_eq!(
            held_until(true, &flapped, HOLD, at(t0, 19)),
            None,
            "the hold ends"
        );
    }

    #[test]
    fn steady_pods_and_single_failures_are_never_held() {
        let t0 = Instant::now();
        let cases = [
            ("never seen changing", vec![]),
            ("first Ready", history(t0, &[9], true)),
            ("one failed probe", history(t0, &[0, 5, 9], true)),
            ("flaps older than the window", history(t0, &[0, 1, 2, 200], true)),
        ];
        for (name, transitions) in cases {
            let now = transitions.last().map_or(t0, |t| t.at);
            assert_eq!(held_until(true, &transitions, HOLD, now), None, "{name}");
        }
    }

    #[test]
    fn not_ready_is_never_held() {
        let t0 = Instant::now();
        let flapping_down = history(t0, &[0, 3, 6, 9], false);
        assert_eq!(held_until(false, &flapping_down, HOLD, at(t0, 9)), None);
        let flapped_up = history(t0, &[0, 3, 6, 9], true);
        assert_eq!(
            held_until(false, &flapped_up, HOLD, at(t0, 10)),
            None,
            "the pod's own word wins"
        );
    }

    #[test]
    fn the_flap_is_counted_when_the_pod_became_ready() {
        let t0 = Instant::now();
        let window = FLAP_WINDOW.as_secs();
        let edge = history(t0, &[0, 1, 2, window], true);
        assert_eq!(
            held_until(true, &edge, HOLD, at(t0, window)),
            Some(at(t0, window + 10))
        );
        let past = history(t0, &[0, 1, 2, window + 1], true);
        assert_eq!(held_until(true, &past, HOLD, at(t0, window + 1)), None);
    }

    #[test]
    fn a_held_pod_is_published_not_ready() {
        let pod = PodFixture::new("web-1").build();
        let held = withheld(&pod);
        assert!(!held.ready);
        assert_eq!(
            PodRecord {
                ready: true,
                ..(*held).clone()
            },
            *pod
        );
    }
}
