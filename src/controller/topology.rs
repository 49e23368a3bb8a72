//! Topology hints around the pure layer: whether the API server can store them at all, and the Events about
//! a Service's hints.
//!
//! Events follow upstream's: `TopologyAwareHintsEnabled` (Normal) when the Auto allocation starts setting
//! hints, `TopologyAwareHintsDisabled` (Warning, with the reason) when hints a Service asks for cannot be
//! set, or Auto hints stop being asked for. Each is published when a Service's state changes, not on every
//! sync, so the controller remembers what it last announced per Service and address type.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use kube::Client;

use super::Context;
use super::reconcile::service_reference;
use crate::cache::{IpFamily, ServiceKey, ServiceRecord};
use crate::desired::{HintsDisabled, HintsOutcome};

/// The first release whose EndpointSlices have `hints` (1.20's `discovery.k8s.io/v1beta1` has none, and a
/// server that cannot store a field refuses or drops it: either way a hint would be written forever).
const HINTS_SINCE: (u32, u32) = (1, 21);

/// Whether the API server stores EndpointSlice hints, from its version; `false` when it cannot be read, so
/// that roster never writes a field the server may refuse.
pub async fn server_stores_hints(client: &Client) -> bool {
    match client.apiserver_version().await {
        Ok(info) => version_stores_hints(&info.major, &info.minor),
        Err(err) => {
            tracing::warn!(%err, "the API server's version is unknown: no topology hints are written");
            false
        }
    }
}

/// `major`/`minor` as `/version` reports them (`"1"`, `"21+"`).
fn version_stores_hints(major: &str, minor: &str) -> bool {
    let number = |text: &str| -> Option<u32> {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    match (number(major), number(minor)) {
        (Some(major), Some(minor)) => (major, minor) >= HINTS_SINCE,
        _ => false,
    }
}

/// What was last announced about a Service's hints of one address type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Announced {
    /// Nothing to say: no hints asked for, or set as `trafficDistribution` asks.
    #[default]
    Quiet,
    /// The Auto allocation sets hints.
    Enabled,
    Disabled(HintsDisabled),
}

impl Announced {
    /// The same thing to say: a reason whose counts changed (endpoints scaling up one by one, say) is not
    /// news.
    fn same_as(&self, other: &Announced) -> bool {
        match (self, other) {
            (Announced::Disabled(a), Announced::Disabled(b)) => {
                std::mem::discriminant(a) == std::mem::discriminant(b)
            }
            (a, b) => a == b,
        }
    }

    fn of(outcome: &HintsOutcome) -> Announced {
        match outcome {
            HintsOutcome::NotRequested | HintsOutcome::TrafficDistribution => Announced::Quiet,
            HintsOutcome::Allocated => Announced::Enabled,
            HintsOutcome::Disabled(why) => Announced::Disabled(why.clone()),
        }
    }
}

/// One Event to publish about a Service.
#[derive(Debug, PartialEq, Eq)]
struct HintsEvent {
    warning: bool,
    reason: &'static str,
    note: String,
}

/// The last announcement per Service and address type.
#[derive(Default)]
pub struct HintsEvents {
    announced: Mutex<HashMap<ServiceKey, BTreeMap<IpFamily, Announced>>>,
}

impl HintsEvents {
    /// Publishes the Events that `outcomes` (from the slice plan just applied) call for.
    pub async fn announce(&self, ctx: &Context, svc: &ServiceRecord, outcomes: &[(IpFamily, HintsOutcome)]) {
        for event in self.changes(&svc.key(), outcomes) {
            let regarding = service_reference(svc);
            match event.warning {
                true => {
                    ctx.writer
                        .warn(&regarding, event.reason, "Update", event.note)
                        .await
                }
                false => {
                    ctx.writer
                        .normal(&regarding, event.reason, "Update", event.note)
                        .await
                }
            }
        }
    }

    pub fn forget(&self, key: &ServiceKey) {
        self.announced.lock().expect("hints events lock").remove(key);
    }

    /// The Events for the states that changed, which are remembered as announced (a quiet state is not
    /// kept: most Services never ask for hints).
    fn changes(&self, key: &ServiceKey, outcomes: &[(IpFamily, HintsOutcome)]) -> Vec<HintsEvent> {
        let mut announced = self.announced.lock().expect("hints events lock");
        let mut events = Vec::new();
        for (family, outcome) in outcomes {
            let now = Announced::of(outcome);
            let last = announced.get(key).and_then(|a| a.get(family)).cloned();
            let before = last.unwrap_or_default();
            if now.same_as(&before) {
                continue;
            }
            events.extend(event(&before, &now, family.address_type()));
            let of_service = announced.entry(key.clone()).or_default();
            match now {
                Announced::Quiet => of_service.remove(family),
                now => of_service.insert(*family, now),
            };
        }
        if announced.get(key).is_some_and(BTreeMap::is_empty) {
            announced.remove(key);
        }
        events
    }
}

fn event(before: &Announced, now: &Announced, address_type: &str) -> Option<HintsEvent> {
    let (warning, reason, note) = match (before, now) {
        (before, now) if now.same_as(before) => return None,
        (_, Announced::Enabled) => (
            false,
            "TopologyAwareHintsEnabled",
            "topology hints set by the allocatable CPU of each zone".to_owned(),
        ),
        (_, Announced::Disabled(why)) => (true, "TopologyAwareHintsDisabled", format!("{why}: no hints")),
        (Announced::Enabled, Announced::Quiet) => (
            true,
            "TopologyAwareHintsDisabled",
            "topology-mode Auto is no longer set: hints removed".to_owned(),
        ),
        (_, Announced::Quiet) => return None,
    };
    let note = format!("{note}, addressType: {address_type}");
    Some(HintsEvent {
        warning,
        reason,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_need_kubernetes_1_21() {
        let cases = [
            ("1", "20", false),
            ("1", "21", true),
            ("1", "21+", true),
            ("1", "33", true),
            ("2", "0", true),
            ("1", "", false),
            ("", "", false),
        ];
        for (major, minor, want) in cases {
            assert_eq!(version_stores_hints(major, minor), want, "{major}.{minor}");
        }
    }

    #[test]
    fn events_follow_changes_of_the_hints_state_only() {
        let events = HintsEvents::default();
        let key = ServiceKey::new("shop", "web");
        let v4 = |outcome: HintsOutcome| vec![(IpFamily::V4, outcome)];
        let reasons = |outcomes: Vec<(IpFamily, HintsOutcome)>| -> Vec<(bool, &str)> {
            let changes = events.changes(&key, &outcomes);
            changes.iter().map(|e| (e.warning, e.reason)).collect()
        };
        let too_few = HintsOutcome::Disabled(HintsDisabled::TooFewEndpoints {
            endpoints: 1,
            zones: 2,
        });
        assert_eq!(
            reasons(v4(HintsOutcome::NotRequested)),
            [],
            "nothing asked, nothing said"
        );
        assert_eq!(reasons(v4(HintsOutcome::TrafficDistribution)), []);
        assert_eq!(
            reasons(v4(too_few.clone())),
            [(true, "TopologyAwareHintsDisabled")]
        );
        let fewer = HintsOutcome::Disabled(HintsDisabled::TooFewEndpoints {
            endpoints: 2,
            zones: 3,
        });
        assert_eq!(reasons(v4(too_few)), [], "said once");
        assert_eq!(reasons(v4(fewer)), [], "the same reason with other counts");
        assert_eq!(
            reasons(v4(HintsOutcome::Allocated)),
            [(false, "TopologyAwareHintsEnabled")]
        );
        assert_eq!(reasons(v4(HintsOutcome::Allocated)), []);
        assert_eq!(
            reasons(v4(HintsOutcome::NotRequested)),
            [(true, "TopologyAwareHintsDisabled")]
        );
        let dual = vec![
            (IpFamily::V4, HintsOutcome::Allocated),
            (
                IpFamily::V6,
                HintsOutcome::Disabled(HintsDisabled::ServerCannotStoreHints),
            ),
        ];
        let changes = events.changes(&key, &dual);
        let notes: Vec<&str> = changes.iter().map(|e| e.note.as_str()).collect();
        assert_eq!(
            notes,
            [
                "topology hints set by the allocatable CPU of each zone, addressType: IPv4",
                "the API server cannot store EndpointSlice hints (it predates Kubernetes 1.21): no hints, \
                 addressType: IPv6",
            ]
        );
        events.forget(&key);
        assert_eq!(
            reasons(v4(HintsOutcome::Allocated)),
            [(false, "TopologyAwareHintsEnabled")]
        );
    }
}
