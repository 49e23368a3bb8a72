//! Readiness from a stream of probe results, with kubelet's thresholds.
//!
//! As kubelet's prober worker: an address with a probe starts not ready; a result equal to the previous one
//! extends a run, a different one starts a new run; readiness becomes the result once a run of successes
//! reaches `successThreshold` or a run of failures reaches `failureThreshold`. No probe: ready at once.
//! Pure: the caller passes the time of each result.

use jiff::Timestamp;

use super::spec::Timing;

/// The readiness of one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Threshold {
    ready: bool,
    /// Readiness was established (probed, resumed, or ready without a probe), as opposed to a new address.
    known: bool,
    last: Option<bool>,
    run: u32,
    last_probe: Option<Timestamp>,
    last_transition: Option<Timestamp>,
    message: Option<String>,
}

impl Threshold {
    /// A new address: not ready until probes pass, or ready at once without a probe.
    pub fn new(has_probe: bool, now: Timestamp) -> Threshold {
        Threshold {
            ready: !has_probe,
            known: !has_probe,
            last: None,
            run: 0,
            last_probe: None,
            last_transition: Some(now),
            message: has_probe.then(|| "not probed yet".to_owned()),
        }
    }

    /// An address whose readiness is already known (from the status a previous roster wrote, or from
    /// before a probe change): keeps it until the thresholds say otherwise.
    pub fn resume(ready: bool, last_transition: Option<Timestamp>) -> Threshold {
        Threshold {
            ready,
            known: true,
            last: None,
            run: 0,
            last_probe: None,
            last_transition,
            message: None,
        }
    }

    /// Records one probe result (`Err`: the failure message). Returns whether readiness changed.
    pub fn record(&mut self, result: Result<(), String>, timing: &Timing, now: Timestamp) -> bool {
        let success = result.is_ok();
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        self.last_probe = Some(now);
        self.known = true;
        self.message = result.err();
        let needed = if success {
            timing.success_threshold
        } else {
            timing.failure_threshold
        };
        if self.run < needed || self.ready == success {
            return false;
        }
        self.ready = success;
        self.last_transition = Some(now);
        true
    }

    /// Without a probe every address is ready.
    pub fn probe_removed(&mut self, now: Timestamp) -> bool {
        self.last = None;
        self.run = 0;
        self.message = None;
        if self.ready {
            return false;
        }
        self.ready = true;
        self.last_transition = Some(now);
        true
    }

    /// The probe changed: counting starts over, readiness stays until the new probe's thresholds flip it.
    pub fn probe_changed(&mut self) {
        self.last = None;
        self.run = 0;
    }

    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Whether readiness was established (so no `initialDelaySeconds` applies to the next probe).
    pub fn known(&self) -> bool {
        self.known
    }

    pub fn last_probe(&self) -> Option<Timestamp> {
        self.last_probe
    }

    pub fn last_transition(&self) -> Option<Timestamp> {
        self.last_transition
    }

    /// The last failure's message (while the address is failing), or why it was not probed yet.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn timing(success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    /// Feeds `results` (`+` success, `-` failure) one per second; returns readiness after each.
    fn run(mut t: Threshold, timing: &Timing, results: &str) -> String {
        results
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let result = if c == '+' {
                    Ok(())
                } else {
                    Err("connect: connection refused".into())
                };
                t.record(result, timing, at(i as i64 + 1));
                if t.ready() { 'R' } else { '.' }
            })
            .collect()
    }

    #[test]
    fn thresholds_as_kubelet_applies_them() {
        let cases = [
            ("1/3 first success readies", timing(1, 3), "+", "R"),
            ("1/3 two failures keep ready", timing(1, 3), "+--+--", "RRRRRR"),
            ("1/3 three failures unready", timing(1, 3), "+---", "RRR."),
            ("1/3 one success readies again", timing(1, 3), "+---+", "RRR.R"),
            ("2/1 needs two successes in a row", timing(2, 1), "+-++", "...R"),
            ("2/1 one failure unready", timing(2, 1), "++-", ".R."),
            (
                "3/2 interrupted runs restart",
                timing(3, 2),
                "++-+++--",
                ".....RR.",
            ),
            ("1/1 flaps with every result", timing(1, 1), "+-+-", "R.R."),
            ("failures while never ready", timing(1, 3), "----+", "....R"),
        ];
        for (name, timing, results, want) in cases {
            assert_eq!(run(Threshold::new(true, at(0)), &timing, results), want, "{name}");
        }
    }

    #[test]
    fn resumed_readiness_holds_until_failure_threshold() {
        let t = Threshold::resume(true, Some(at(-100)));
        assert_eq!(
            run(t, &timing(1, 3), "--+---"),
            "RRRRR.",
            "a success breaks the failure run"
        );
        let t = Threshold::resume(false, None);
        assert_eq!(run(t, &timing(2, 3), "++"), ".R");
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let timing = timing(1, 2);
        let mut t = Threshold::new(true, at(0));
        assert_eq!(
            (t.ready(), t.last_transition(), t.message()),
            (false, Some(at(0)), Some("not probed yet"))
        );
        assert!(t.record(Ok(()), &timing, at(1)));
        assert!(!t.record(Ok(()), &timing, at(2)));
        assert_eq!(
            (t.last_transition(), t.last_probe(), t.message()),
            (Some(at(1)), Some(at(2)), None)
        );
        assert!(!t.record(Err("timeout after 1s".into()), &timing, at(3)));
        assert_eq!((t.ready(), t.message()), (true, Some("timeout after 1s")));
        assert!(t.record(Err("timeout after 1s".into()), &timing, at(4)));
        assert_eq!((t.ready(), t.last_transition()), (false, Some(at(4))));
    }

    #[test]
    fn without_a_probe_ready_at_once() {
        let t = Threshold::new(false, at(0));
        assert_eq!((t.ready(), t.known(), t.message()), (true, true, None));
        assert!(!Threshold::new(true, at(0)).known());
        assert!(Threshold::resume(false, None).known());
        let mut t = Threshold::new(true, at(0));
        assert!(t.probe_removed(at(5)));
        assert_eq!((t.ready(), t.last_transition()), (true, Some(at(5))));
        assert!(!t.probe_removed(at(6)));
    }

    #[test]
    fn probe_change_restarts_counting_but_keeps_readiness() {
        let timing = timing(1, 2);
        let mut t = Threshold::new(true, at(0));
        t.record(Ok(()), &timing, at(1));
        t.record(Err("x".into()), &timing, at(2));
        t.probe_changed();
        assert!(!t.record(Err("x".into()), &timing, at(3)), "the run started over");
        assert!(t.ready());
        assert!(t.record(Err("x".into()), &timing, at(4)));
    }
}
