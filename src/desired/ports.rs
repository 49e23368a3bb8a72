//! Resolving a Service port's `targetPort` against a pod.

use crate::cache::{PodRecord, ServicePortRecord, TargetPort};

/// The pod port a Service port sends traffic to: a numeric `targetPort` as is (unset or 0 already means
/// `port`); a named one resolves to the first named container port with the same name and protocol, searching
/// the containers and then the restartable (sidecar) init containers. `None` when the name does not resolve.
pub fn find_port(pod: &PodRecord, service_port: &ServicePortRecord) -> Option<i32> {
    match &service_port.target_port {
        TargetPort::Number(port) => Some(*port),
        TargetPort::Name(name) => pod
            .ports
            .iter()
            .find(|p| p.name == *name && p.protocol == service_port.protocol)
            .map(|p| p.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Interner, PodProjection, Protocol};
    use crate::desired::fixtures::{PodFixture, port};

    #[test]
    fn named_port_resolved_per_pod_by_name_and_protocol() {
        let pod = PodFixture::new("p")
            .port("http", 8080, Protocol::Tcp)
            .port("dns", 5353, Protocol::Udp)
            .port("dns", 5354, Protocol::Tcp)
            .port("http", 9090, Protocol::Tcp)
            .build();
        let cases = [
            (
                "number",
                port("a", 80, Protocol::Tcp, TargetPort::Number(8000)),
                Some(8000),
            ),
            (
                "name tcp first match",
                port("a", 80, Protocol::Tcp, TargetPort::Name("http".into())),
                Some(8080),
            ),
            (
                "name udp",
                port("a", 53, Protocol::Udp, TargetPort::Name("dns".into())),
                Some(5353),
            ),
            (
                "name tcp other protocol",
                port("a", 53, Protocol::Tcp, TargetPort::Name("dns".into())),
                Some(5354),
            ),
            (
                "name protocol mismatch",
                port("a", 80, Protocol::Udp, TargetPort::Name("http".into())),
                None,
            ),
            (
                "unknown name",
                port("a", 80, Protocol::Tcp, TargetPort::Name("grpc".into())),
                None,
            ),
        ];
        for (name, service_port, want) in cases {
            assert_eq!(find_port(&pod, &service_port), want, "{name}");
        }
    }

    #[test]
    fn sidecar_init_container_port_resolves() {
        let projection: PodProjection = serde_json::from_value(serde_json::json!({
            "metadata": { "namespace": "shop", "name": "p" },
            "spec": {
                "initContainers": [
                    { "name": "setup", "ports": [{ "name": "admin", "containerPort": 1 }] },
                    { "name": "mesh", "restartPolicy": "Always", "ports": [{ "name": "proxy", "containerPort": 15001 },
                                                                           { "name": "metrics", "containerPort": 2 }] }
                ],
                "containers": [{ "name": "app", "ports": [{ "name": "metrics", "containerPort": 9100 }] }]
            }
        }))
        .unwrap();
        let pod = PodRecord::from_projection(&projection, &mut Interner::new());
        let by_name = |name: &str| port("p", 80, Protocol::Tcp, TargetPort::Name(name.into()));
        let cases = [("proxy", Some(15001)), ("metrics", Some(9100)), ("admin", None)];
        for (name, want) in cases {
            assert_eq!(find_port(&pod, &by_name(name)), want, "{name}");
        }
    }
}
