use serde_json::json;

use super::*;

fn backend_set(spec: serde_json::Value) -> BackendSet {
    serde_json::from_value(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "BackendSet",
        "metadata": {"name": "db", "namespace": "shop"}, "spec": spec
    }))
    .unwrap()
}

fn probe(value: serde_json::Value) -> Result<Option<ProbeSpec>, String> {
    let probe: Probe = serde_json::from_value(value).unwrap();
    validate_probe(Some(&probe))
}

#[test]
fn service_name_defaults_to_the_backendset_name() {
    assert_eq!(service_name(&backend_set(json!({}))), "db");
    assert_eq!(service_name(&backend_set(json!({"serviceName": ""}))), "db");
    assert_eq!(
        service_name(&backend_set(json!({"serviceName": "postgres"}))),
        "postgres"
    );
}

#[test]
fn backends_are_validated_one_by_one() {
    let cases = [
        (
            json!({"ip": "198.51.100.10"}),
            Ok(Source::Ip("198.51.100.10".parse().unwrap())),
        ),
        (
            json!({"ip": "010.001.002.003"}),
            Ok(Source::Ip("10.1.2.3".parse().unwrap())),
        ),
        (
            json!({"ip": "2001:DB8::1"}),
            Ok(Source::Ip("2001:db8::1".parse().unwrap())),
        ),
        (
            json!({"hostname": "DB.Example.com."}),
            Ok(Source::Hostname("db.example.com".into())),
        ),
        (
            json!({"hostname": "198.51.100.10"}),
            Ok(Source::Ip("198.51.100.10".parse().unwrap())),
        ),
        (json!({"ip": "10.0.0"}), Err(("10.0.0", "invalid IP"))),
        (
            json!({"ip": "db.example.com"}),
            Err(("db.example.com", "invalid IP")),
        ),
        (
            json!({"hostname": "-db.example.com"}),
            Err(("-db.example.com", "invalid hostname")),
        ),
        (
            json!({"hostname": "db..example.com"}),
            Err(("db..example.com", "invalid hostname")),
        ),
        (
            json!({"hostname": "under_score.example.com"}),
            Err(("under_score.example.com", "invalid hostname")),
        ),
        (
            json!({"ip": "198.51.100.10", "hostname": "db.example.com"}),
            Err(("198.51.100.10", "set ip or hostname, not both")),
        ),
        (json!({}), Err(("backends[0]", "set ip or hostname"))),
        (
            json!({"ip": "198.51.100.10", "ports": {"Postgres": 5432}}),
            Err(("198.51.100.10", "invalid port name: \"Postgres\"")),
        ),
        (
            json!({"ip": "198.51.100.10", "ports": {"pg": 70000}}),
            Err(("198.51.100.10", "invalid port: pg = 70000 (must be 1-65535)")),
        ),
        (
            json!({"hostname": "db.example.com", "ports": {"pg": 0}}),
            Err(("db.example.com", "invalid port: pg = 0 (must be 1-65535)")),
        ),
        (
            json!({"ip": "198.51.100.10", "nodeName": "Node_1"}),
            Err(("198.51.100.10", "invalid nodeName: \"Node_1\"")),
        ),
    ];
    for (backend, want) in cases {
        let parsed = ParsedSpec::parse(&backend_set(json!({"backends": [backend.clone()]})));
        let got = match (parsed.backends.first(), parsed.invalid.first()) {
            (Some(valid), None) => Ok(valid.source.clone()),
            (None, Some(bad)) => Err((bad.address.as_str(), bad.message.as_str())),
            other => panic!("{backend}: {other:?}"),
        };
        assert_eq!(got, want, "{backend}");
    }
}

#[test]
fn valid_backends_keep_their_fields_and_invalid_ones_do_not_stop_the_rest() {
    let parsed = ParsedSpec::parse(&backend_set(json!({"backends": [
        {"ip": "198.51.100.10", "nodeName": "node-1", "zone": "zone-a", "ports": {"pg": 5432}},
        {"ip": "not-an-ip"},
        {"hostname": "db.example.com"},
        {"hostname": "DB.example.com"},
    ]})));
    assert_eq!(parsed.backends.len(), 3);
    assert_eq!(parsed.invalid.len(), 1);
    let first = &parsed.backends[0];
    assert_eq!(
        (
            first.node_name.as_deref(),
            first.zone.as_deref(),
            first.ports.get("pg")
        ),
        (Some("node-1"), Some("zone-a"), Some(&5432))
    );
    assert_eq!(parsed.hostnames(), ["db.example.com"], "each name once");
    assert_eq!(parsed.probe, Ok(None), "no probe");
}

#[test]
fn probes_are_validated() {
    let cases = [
        (
            json!({"exec": {"command": ["pg_isready"]}}),
            Err(EXEC_NOT_SUPPORTED.to_owned()),
        ),
        (
            json!({}),
            Err("readinessProbe needs one of tcpSocket, httpGet or grpc".to_owned()),
        ),
        (
            json!({"tcpSocket": {"port": 5432}, "grpc": {"port": 5432}}),
            Err("readinessProbe may have only one of tcpSocket, httpGet or grpc".to_owned()),
        ),
        (
            json!({"tcpSocket": {"port": 0}}),
            Err("readinessProbe.tcpSocket.port: 0 is not a valid port (1-65535)".to_owned()),
        ),
        (
            json!({"httpGet": {"port": "Web"}}),
            Err("readinessProbe.httpGet.port: \"Web\" is not a valid port name".to_owned()),
        ),
        (
            json!({"httpGet": {"port": 80, "scheme": "FTP"}}),
            Err("readinessProbe.httpGet.scheme \"FTP\": use HTTP or HTTPS".to_owned()),
        ),
        (
            json!({"httpGet": {"port": 80, "path": "/a b"}}),
            Err("readinessProbe.httpGet.path \"/a b\" is not a valid path".to_owned()),
        ),
        (
            json!({"httpGet": {"port": 80, "httpHeaders": [{"name": "bad header", "value": "x"}]}}),
            Err("readinessProbe.httpGet.httpHeaders: invalid header \"bad header\"".to_owned()),
        ),
        (
            json!({"grpc": {"port": 70000}}),
            Err("readinessProbe.grpc.port: 70000 is not a valid port (1-65535)".to_owned()),
        ),
        (
            json!({"tcpSocket": {"port": 5432}, "periodSeconds": 0}),
            Err("readinessProbe.periodSeconds must be at least 1".to_owned()),
        ),
        (
            json!({"tcpSocket": {"port": 5432}, "failureThreshold": 0}),
            Err("readinessProbe.failureThreshold must be at least 1".to_owned()),
        ),
    ];
    for (value, want) in cases {
        assert_eq!(probe(value.clone()).map(|_| ()), want.map(|_: ()| ()), "{value}");
    }
}

#[test]
fn probe_defaults_and_handlers() {
    let tcp = probe(json!({"tcpSocket": {"port": "pg"}})).unwrap().unwrap();
    assert_eq!(
        tcp.timing,
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        },
        "kubelet's defaults"
    );
    assert_eq!(
        tcp.handler,
        Handler::Tcp {
            port: PortRef::Name("pg".into())
        }
    );
    let http = probe(json!({
        "httpGet": {"port": 8443, "path": "healthz", "scheme": "https",
                    "httpHeaders": [{"name": "Host", "value": "db.example.com"}]},
        "periodSeconds": 2, "timeoutSeconds": 3, "successThreshold": 2, "failureThreshold": 4, "initialDelaySeconds": 5
    }))
    .unwrap()
    .unwrap();
    assert_eq!(
        http.handler,
        Handler::Http {
            port: PortRef::Number(8443),
            path: "/healthz".into(),
            https: true,
            headers: vec![("Host".into(), "db.example.com".into())],
        }
    );
    assert_eq!(
        (http.timing.period, http.timing.timeout, http.timing.initial_delay),
        (
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::from_secs(5)
        )
    );
    assert_eq!(
        (http.timing.success_threshold, http.timing.failure_threshold),
        (2, 4)
    );
    let grpc = probe(json!({"grpc": {"port": 50051, "service": "db"}}))
        .unwrap()
        .unwrap();
    assert_eq!(
        grpc.handler,
        Handler::Grpc {
            port: 50051,
            service: "db".into()
        }
    );
}

#[test]
fn probe_ports_resolve_per_backend() {
    let ports = BTreeMap::from([("pg".to_owned(), 5432)]);
    let cases = [
        (
            Handler::Tcp {
                port: PortRef::Number(6432),
            },
            Ok(6432),
        ),
        (
            Handler::Tcp {
                port: PortRef::Name("pg".into()),
            },
            Ok(5432),
        ),
        (
            Handler::Tcp {
                port: PortRef::Name("admin".into()),
            },
            Err("invalid port name: probe port \"admin\" is not in the backend's ports".to_owned()),
        ),
        (
            Handler::Grpc {
                port: 50051,
                service: String::new(),
            },
            Ok(50051),
        ),
    ];
    for (handler, want) in cases {
        assert_eq!(handler.port_for(&ports), want, "{handler:?}");
    }
}

#[test]
fn names_follow_kubernetes_rules() {
    for (name, ok) in [
        ("db", true),
        ("db-1.example.com", true),
        ("a".repeat(64).as_str(), false),
        ("", false),
        ("db.", false),
    ] {
        assert_eq!(is_dns_subdomain(name), ok, "{name:?}");
    }
    for (name, ok) in [
        ("pg", true),
        ("http-alt", true),
        ("1234", false),
        ("a--b", false),
        ("-a", false),
        ("sixteen-chars-xx", false),
    ] {
        assert_eq!(is_port_name(name), ok, "{name:?}");
    }
}
