//! Validating a BackendSet's spec: which backends and which probe roster can use, and why not the others.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::crd::{Backend, BackendSet, PortRef, Probe};
use crate::cache::parse_ip;

/// The status message of an `exec` probe.
pub const EXEC_NOT_SUPPORTED: &str =
    "exec probes are not supported: roster cannot run commands on external backends";

/// Where a backend's addresses come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Ip(IpAddr),
    Hostname(String),
}

/// A backend roster can use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidBackend {
    pub source: Source,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub ports: BTreeMap<String, i32>,
}

/// A backend roster cannot use, reported in status and not published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidBackend {
    /// What the user wrote (`ip` or `hostname`), or `backends[i]` when neither.
    pub address: String,
    pub hostname: Option<String>,
    pub message: String,
}

/// How often and how patiently a probe runs, and how many results flip readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    Tcp {
        port: PortRef,
    },
    Http {
        port: PortRef,
        path: String,
        https: bool,
        headers: Vec<(String, String)>,
    },
    Grpc {
        port: u16,
        service: String,
    },
}

/// A valid readiness probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub handler: Handler,
    pub timing: Timing,
}

/// A BackendSet's spec as roster uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedSpec {
    pub service_name: String,
    pub backends: Vec<ValidBackend>,
    pub invalid: Vec<InvalidBackend>,
    /// `Ok(None)`: no probe, every address is ready. `Err`: the probe is invalid and nothing is published.
    pub probe: Result<Option<ProbeSpec>, String>,
}

impl ParsedSpec {
    pub fn parse(bs: &BackendSet) -> ParsedSpec {
        let mut backends = Vec::new();
        let mut invalid = Vec::new();
        for (index, backend) in bs.spec.backends.iter().enumerate() {
            match validate_backend(index, backend) {
                Ok(valid) => backends.push(valid),
                Err(bad) => invalid.push(bad),
            }
        }
        ParsedSpec {
            service_name: service_name(bs),
            backends,
            invalid,
            probe: validate_probe(bs.spec.readiness_probe.as_ref()),
        }
    }

    /// The distinct hostnames to resolve, in spec order.
    pub fn hostnames(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for backend in &self.backends {
            if let Source::Hostname(name) = &backend.source
                && !names.contains(name)
            {
                names.push(name.clone());
            }
        }
        names
    }
}

/// `spec.serviceName`, defaulting to the BackendSet's name.
pub fn service_name(bs: &BackendSet) -> String {
    bs.spec
        .service_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| bs.metadata.name.clone().unwrap_or_default())
}

fn validate_backend(index: usize, backend: &Backend) -> Result<ValidBackend, InvalidBackend> {
    let bad = |address: &str, hostname: Option<&str>, message: String| InvalidBackend {
        address: address.to_owned(),
        hostname: hostname.map(str::to_owned),
        message,
    };
    let ip = backend.ip.as_deref().filter(|s| !s.is_empty());
    let hostname = backend.hostname.as_deref().filter(|s| !s.is_empty());
    let source = match (ip, hostname) {
        (Some(ip), Some(host)) => return Err(bad(ip, Some(host), "set ip or hostname, not both".into())),
        (None, None) => {
            return Err(bad(
                &format!("backends[{index}]"),
                None,
                "set ip or hostname".into(),
            ));
        }
        (Some(text), None) => Source::Ip(parse_ip(text).ok_or_else(|| bad(text, None, "invalid IP".into()))?),
        (None, Some(host)) => match parse_ip(host) {
            Some(ip) => Source::Ip(ip),
            None => Source::Hostname(
                normalize_hostname(host).ok_or_else(|| bad(host, Some(host), "invalid hostname".into()))?,
            ),
        },
    };
    let (text, host) = match &source {
        Source::Ip(_) => (ip.or(hostname).unwrap_or_default(), None),
        Source::Hostname(name) => (name.as_str(), Some(name.as_str())),
    };
    if let Some(message) = backend
        .ports
        .iter()
        .find_map(|(name, port)| port_error(name, *port))
    {
        return Err(bad(text, host, message));
    }
    if let Some(node) = backend.node_name.as_deref().filter(|n| !is_dns_subdomain(n)) {
        return Err(bad(text, host, format!("invalid nodeName: {node:?}")));
    }
    Ok(ValidBackend {
        source,
        node_name: backend.node_name.clone().filter(|n| !n.is_empty()),
        zone: backend.zone.clone().filter(|z| !z.is_empty()),
        ports: backend.ports.clone(),
    })
}

fn port_error(name: &str, port: i32) -> Option<String> {
    if !is_port_name(name) {
        return Some(format!("invalid port name: {name:?}"));
    }
    if !(1..=65535).contains(&port) {
        return Some(format!("invalid port: {name} = {port} (must be 1-65535)"));
    }
    None
}

/// A lower-case DNS name without the trailing dot, or `None` when `name` is not one.
pub fn normalize_hostname(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    is_dns_subdomain(&name).then_some(name)
}

/// RFC 1123 subdomain: dot-separated labels of `a-z0-9-`, each 1-63 long without a leading or trailing
/// hyphen, 253 characters at most.
pub fn is_dns_subdomain(name: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// IANA service name, as container port names: 1-15 of `a-z0-9-`, at least one letter, no hyphen at
/// either end or twice in a row.
pub fn is_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Checks a readiness probe: exactly one of tcpSocket, httpGet and grpc (exec is refused), valid ports,
/// scheme and numbers.
pub fn validate_probe(probe: Option<&Probe>) -> Result<Option<ProbeSpec>, String> {
    let Some(probe) = probe else { return Ok(None) };
    if probe.exec.is_some() {
        return Err(EXEC_NOT_SUPPORTED.to_owned());
    }
    let handlers = [
        probe.tcp_socket.is_some(),
        probe.http_get.is_some(),
        probe.grpc.is_some(),
    ];
    let handler = match handlers.iter().filter(|h| **h).count() {
        0 => return Err("readinessProbe needs one of tcpSocket, httpGet or grpc".to_owned()),
        1 => handler(probe)?,
        _ => return Err("readinessProbe may have only one of tcpSocket, httpGet or grpc".to_owned()),
    };
    let at_least_one = |field: &str, value: u32| {
        if value == 0 {
            Err(format!("readinessProbe.{field} must be at least 1"))
        } else {
            Ok(value)
        }
    };
    let seconds = |s: u32| Duration::from_secs(u64::from(s));
    Ok(Some(ProbeSpec {
        handler,
        timing: Timing {
            initial_delay: seconds(probe.initial_delay_seconds),
            period: seconds(at_least_one("periodSeconds", probe.period_seconds)?),
            timeout: seconds(at_least_one("timeoutSeconds", probe.timeout_seconds)?),
            success_threshold: at_least_one("successThreshold", probe.success_threshold)?,
            failure_threshold: at_least_one("failureThreshold", probe.failure_threshold)?,
        },
    }))
}

fn handler(probe: &Probe) -> Result<Handler, String> {
    if let Some(tcp) = &probe.tcp_socket {
        return Ok(Handler::Tcp {
            port: checked_port("tcpSocket.port", &tcp.port)?,
        });
    }
    if let Some(http) = &probe.http_get {
        let https = match http.scheme.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("HTTP") => false,
            Some("HTTPS") => true,
            Some(other) => {
                return Err(format!(
                    "readinessProbe.httpGet.scheme {other:?}: use HTTP or HTTPS"
                ));
            }
        };
        let path = match http.path.as_deref() {
            None | Some("") => "/".to_owned(),
            Some(p) if p.starts_with('/') => p.to_owned(),
            Some(p) => format!("/{p}"),
        };
        if path.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(format!(
                "readinessProbe.httpGet.path {path:?} is not a valid path"
            ));
        }
        let mut headers = Vec::new();
        for h in &http.http_headers {
            let name_ok = http::HeaderName::from_bytes(h.name.as_bytes()).is_ok();
            if !name_ok || http::HeaderValue::from_str(&h.value).is_err() {
                return Err(format!(
                    "readinessProbe.httpGet.httpHeaders: invalid header {:?}",
                    h.name
                ));
            }
            headers.push((h.name.clone(), h.value.clone()));
        }
        return Ok(Handler::Http {
            port: checked_port("httpGet.port", &http.port)?,
            path,
            https,
            headers,
        });
    }
    let grpc = probe.grpc.as_ref().expect("one handler is set");
    let port = u16::try_from(grpc.port).ok().filter(|p| *p != 0).ok_or_else(|| {
        format!(
            "readinessProbe.grpc.port: {} is not a valid port (1-65535)",
            grpc.port
        )
    })?;
    Ok(Handler::Grpc {
        port,
        service: grpc.service.clone().unwrap_or_default(),
    })
}

fn checked_port(field: &str, port: &PortRef) -> Result<PortRef, String> {
    match port {
        PortRef::Number(n) if (1..=65535).contains(n) => Ok(port.clone()),
        PortRef::Number(n) => Err(format!(
            "readinessProbe.{field}: {n} is not a valid port (1-65535)"
        )),
        PortRef::Name(name) if is_port_name(name) => Ok(port.clone()),
        PortRef::Name(name) => Err(format!(
            "readinessProbe.{field}: {name:?} is not a valid port name"
        )),
    }
}

impl Handler {
    /// The port to probe on a backend: a number as is, a name through the backend's `ports`.
    pub fn port_for(&self, ports: &BTreeMap<String, i32>) -> Result<u16, String> {
        let port = match self {
            Handler::Tcp { port } | Handler::Http { port, .. } => port,
            Handler::Grpc { port, .. } => return Ok(*port),
        };
        match port {
            PortRef::Number(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
            PortRef::Name(name) => ports
                .get(name)
                .and_then(|n| u16::try_from(*n).ok())
                .ok_or_else(|| {
                    format!("invalid port name: probe port {name:?} is not in the backend's ports")
                }),
        }
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
