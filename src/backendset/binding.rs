//! Which BackendSet publishes to which Service: the Service must exist, be selectorless and not
//! ExternalName, and when several BackendSets name one Service the oldest wins.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::ResourceExt;

use super::crd::BackendSet;
use super::spec::service_name;
use crate::cache::{BackendSetKey, ServiceKey, ServiceRecord};
use crate::desired::ANNOTATION_SELECTOR;

/// What roster needs to know about a Service to bind a BackendSet to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFacts {
    /// `spec.selector` is set, or the `roster.dev/selector` annotation (roster selects pods for it).
    pub has_selector: bool,
    pub external_name: bool,
}

impl ServiceFacts {
    pub fn of(svc: &ServiceRecord) -> ServiceFacts {
        ServiceFacts {
            has_selector: svc.has_spec_selector || svc.annotations.contains_key(ANNOTATION_SELECTOR),
            external_name: svc.is_external_name(),
        }
    }
}

/// Whether a BackendSet publishes to its Service, and if not why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    Bound,
    ServiceNotFound,
    ServiceHasSelector,
    ServiceIsExternalName,
    /// An older BackendSet (named) publishes to the Service.
    Conflict {
        winner: String,
    },
}

impl Binding {
    /// The `ServiceBound` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Binding::Bound => "Bound",
            Binding::ServiceNotFound => "ServiceNotFound",
            Binding::ServiceHasSelector => "ServiceHasSelector",
            Binding::ServiceIsExternalName => "ServiceIsExternalName",
            Binding::Conflict { .. } => "Conflict",
        }
    }

    /// The `ServiceBound` condition's message.
    pub fn message(&self, service: &str) -> String {
        match self {
            Binding::Bound => format!("publishing the backends as the endpoints of Service {service}"),
            Binding::ServiceNotFound => format!("Service {service} does not exist in this namespace"),
            Binding::ServiceHasSelector => format!(
                "Service {service} selects pods (spec.selector or the {ANNOTATION_SELECTOR} annotation); \
                 only selectorless Services take backends from a BackendSet"
            ),
            Binding::ServiceIsExternalName => {
                format!("Service {service} is of type ExternalName, which has no endpoints")
            }
            Binding::Conflict { winner } => {
                format!("BackendSet {winner} is older and already publishes to Service {service}")
            }
        }
    }
}

/// What [`bind`] needs of a BackendSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetFacts {
    pub namespace: String,
    pub name: String,
    pub created: Option<Timestamp>,
    /// `spec.serviceName`, defaulted.
    pub service: String,
}

impl SetFacts {
    pub fn of(bs: &BackendSet) -> SetFacts {
        SetFacts {
            namespace: bs.namespace().unwrap_or_default(),
            name: bs.name_any(),
            created: bs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            service: service_name(bs),
        }
    }

    pub fn key(&self) -> BackendSetKey {
        BackendSetKey::new(&self.namespace, &self.name)
    }

    pub fn service_key(&self) -> ServiceKey {
        ServiceKey::new(&self.namespace, &self.service)
    }
}

/// The binding of every BackendSet. Among BackendSets naming one bindable Service, the oldest (creation
/// time, then name) is bound and the others conflict.
pub fn bind(
    sets: &[SetFacts],
    service: &dyn Fn(&ServiceKey) -> Option<ServiceFacts>,
) -> BTreeMap<BackendSetKey, Binding> {
    let mut bindings = BTreeMap::new();
    let mut claims: BTreeMap<ServiceKey, Vec<&SetFacts>> = BTreeMap::new();
    for set in sets {
        let binding = match service(&set.service_key()) {
            None => Binding::ServiceNotFound,
            Some(facts) if facts.external_name => Binding::ServiceIsExternalName,
            Some(facts) if facts.has_selector => Binding::ServiceHasSelector,
            Some(_) => {
                claims.entry(set.service_key()).or_default().push(set);
                continue;
            }
        };
        bindings.insert(set.key(), binding);
    }
    for mut claimants in claims.into_values() {
        claimants.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        let winner = claimants[0].name.clone();
        bindings.insert(claimants[0].key(), Binding::Bound);
        for loser in &claimants[1..] {
            bindings.insert(
                loser.key(),
                Binding::Conflict {
                    winner: winner.clone(),
                },
            );
        }
    }
    bindings
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    use super::*;
    use crate::cache::{Interner, SelectorSource};

    fn set(name: &str, service: &str, created: i64) -> SetFacts {
        SetFacts {
            namespace: "db".into(),
            name: name.into(),
            created: Some(Timestamp::from_second(1_700_000_000 + created).unwrap()),
            service: service.into(),
        }
    }

    fn facts(has_selector: bool, external_name: bool) -> Option<ServiceFacts> {
        Some(ServiceFacts {
            has_selector,
            external_name,
        })
    }

    fn services(key: &ServiceKey) -> Option<ServiceFacts> {
        match &*key.name {
            "plain" | "shared" => facts(false, false),
            "selecting" => facts(true, false),
            "external" => facts(false, true),
            _ => None,
        }
    }

    #[test]
    fn bindings_by_service_state() {
        let sets = [
            set("a", "plain", 0),
            set("b", "missing", 0),
            set("c", "selecting", 0),
            set("d", "external", 0),
        ];
        let got = bind(&sets, &services);
        let want = [
            ("a", Binding::Bound),
            ("b", Binding::ServiceNotFound),
            ("c", Binding::ServiceHasSelector),
            ("d", Binding::ServiceIsExternalName),
        ];
        for (name, binding) in want {
            assert_eq!(got[&BackendSetKey::new("db", name)], binding, "{name}");
        }
    }

    #[test]
    fn oldest_wins_then_name() {
        let cases = [
            (
                [
                    set("young", "shared", 10),
                    set("old", "shared", 5),
                    set("zzz", "shared", 5),
                ],
                "old",
            ),
            (
                [
                    set("b", "shared", 5),
                    set("a", "shared", 5),
                    set("c", "shared", 5),
                ],
                "a",
            ),
        ];
        for (sets, winner) in cases {
            let got = bind(&sets, &services);
            for s in &sets {
                let want = if s.name == winner {
                    Binding::Bound
                } else {
                    Binding::Conflict {
                        winner: winner.to_owned(),
                    }
                };
                assert_eq!(got[&s.key()], want, "{}", s.name);
            }
        }
    }

    #[test]
    fn unbindable_services_never_conflict() {
        let sets = [set("a", "selecting", 0), set("b", "selecting", 1)];
        let got = bind(&sets, &services);
        assert!(got.values().all(|b| *b == Binding::ServiceHasSelector), "{got:?}");
    }

    #[test]
    fn service_facts_from_objects() {
        let cases = [
            (json!({"spec": {"ports": [{"port": 80}]}}), facts(false, false)),
            (json!({"spec": {"selector": {}}}), facts(false, false)),
            (json!({"spec": {"selector": {"app": "web"}}}), facts(true, false)),
            (
                json!({"metadata": {"annotations": {"roster.dev/selector": "app=web"}}, "spec": {}}),
                facts(true, false),
            ),
            (
                json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
                facts(false, true),
            ),
        ];
        for (svc, want) in cases {
            let svc: Service = serde_json::from_value(svc.clone()).unwrap();
            let record = ServiceRecord::from_service(&svc, SelectorSource::Spec, &mut Interner::new());
            assert_eq!(Some(ServiceFacts::of(&record)), want, "{svc:?}");
        }
    }
}
