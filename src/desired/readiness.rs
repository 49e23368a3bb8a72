//! Which pods become endpoints, and in which condition.

use k8s_openapi::api::discovery::v1::EndpointConditions;

use super::source::EndpointSource;
use super::verdict::Exclusion;
use crate::cache::{PodRecord, ServiceRecord};

/// Why a pod is not published at all (`None`: it is): it is terminal (Succeeded/Failed), has no IP, or is
/// terminating and `include_terminating` is false. Endpoints pass `publishNotReadyAddresses`;
/// EndpointSlices pass `true`.
pub fn pod_exclusion(pod: &PodRecord, include_terminating: bool) -> Option<Exclusion> {
    if pod.phase.is_terminal() {
        Some(Exclusion::Terminal)
    } else if pod.ips.is_empty() {
        Some(Exclusion::NoIp)
    } else if pod.terminating && !include_terminating {
        Some(Exclusion::Terminating)
    } else {
        None
    }
}

/// EndpointSlices: `serving` is the source's readiness, `terminating` its deletion, and `ready` is
/// `publishNotReadyAddresses || (serving && !terminating)` — a terminating pod is never ready unless the
/// Service publishes not-ready addresses.
pub fn slice_conditions<S: EndpointSource + ?Sized>(source: &S, svc: &ServiceRecord) -> EndpointConditions {
    let (serving, terminating) = (source.ready(), source.terminating());
    EndpointConditions {
        ready: Some(svc.publish_not_ready_addresses || (serving && !terminating)),
        serving: Some(serving),
        terminating: Some(terminating),
    }
}

/// The endpoint hostname: the pod's `spec.hostname` when its `spec.subdomain` names this Service in the same
/// namespace (the Service need not be headless).
pub fn endpoint_hostname(pod: &PodRecord, svc: &ServiceRecord) -> Option<String> {
    let hostname = pod.hostname.as_ref()?;
    let same_subdomain = pod.subdomain.as_deref() == Some(&*svc.name) && pod.namespace == svc.namespace;
    same_subdomain.then(|| hostname.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::PodPhase;
    use crate::desired::fixtures::{PodFixture, ServiceFixture};

    #[test]
    fn pod_exclusion_rules() {
        let cases = [
            ("running ready", PodFixture::new("p").build(), false, None),
            (
                "not ready still included",
                PodFixture::new("p").not_ready().build(),
                false,
                None,
            ),
            (
                "succeeded",
                PodFixture::new("p").phase(PodPhase::Succeeded).build(),
                true,
                Some(Exclusion::Terminal),
            ),
            (
                "failed",
                PodFixture::new("p").phase(PodPhase::Failed).build(),
                true,
                Some(Exclusion::Terminal),
            ),
            (
                "terminal before no ip",
                PodFixture::new("p").phase(PodPhase::Failed).ips(&[]).build(),
                true,
                Some(Exclusion::Terminal),
            ),
            (
                "no ip",
                PodFixture::new("p").ips(&[]).build(),
                true,
                Some(Exclusion::NoIp),
            ),
            (
                "terminating excluded",
                PodFixture::new("p").terminating().build(),
                false,
                Some(Exclusion::Terminating),
            ),
            (
                "terminating included",
                PodFixture::new("p").terminating().build(),
                true,
                None,
            ),
        ];
        for (name, pod, include_terminating, want) in cases {
            assert_eq!(pod_exclusion(&pod, include_terminating), want, "{name}");
        }
    }

    #[test]
    fn slice_conditions_follow_readiness_and_termination() {
        let svc = ServiceFixture::new("web").build();
        let pnra = ServiceFixture::new("web").publish_not_ready().build();
        let cases = [
            ("ready", PodFixture::new("p").build(), &svc, (true, true, false)),
            (
                "not ready",
                PodFixture::new("p").not_ready().build(),
                &svc,
                (false, false, false),
            ),
            (
                "terminating ready",
                PodFixture::new("p").terminating().build(),
                &svc,
                (false, true, true),
            ),
            (
                "terminating not ready",
                PodFixture::new("p").terminating().not_ready().build(),
                &svc,
                (false, false, true),
            ),
            (
                "pnra not ready",
                PodFixture::new("p").not_ready().build(),
                &pnra,
                (true, false, false),
            ),
            (
                "pnra terminating",
                PodFixture::new("p").terminating().build(),
                &pnra,
                (true, true, true),
            ),
        ];
        for (name, pod, svc, (ready, serving, terminating)) in cases {
            let want = EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            };
            assert_eq!(slice_conditions(pod.as_ref(), svc), want, "{name}");
        }
    }

    #[test]
    fn hostname_set_only_for_matching_subdomain_in_same_namespace() {
        let svc = ServiceFixture::new("web").build();
        let cases = [
            (
                "matching",
                PodFixture::new("p").hostname("h", "web").build(),
                Some("h"),
            ),
            (
                "other subdomain",
                PodFixture::new("p").hostname("h", "db").build(),
                None,
            ),
            ("no hostname", PodFixture::new("p").build(), None),
            (
                "other namespace",
                PodFixture::new("p")
                    .namespace("other")
                    .hostname("h", "web")
                    .build(),
                None,
            ),
        ];
        for (name, pod, want) in cases {
            assert_eq!(endpoint_hostname(&pod, &svc).as_deref(), want, "{name}");
        }
    }
}
