//! Running one readiness probe against one address: TCP connect, HTTP(S) GET, or the gRPC health check.
//!
//! As kubelet: HTTP succeeds on a status in 200..400 (redirects are not followed), HTTPS does not verify
//! certificates, gRPC needs `SERVING` from `grpc.health.v1.Health/Check` over cleartext HTTP/2. The deny list
//! is checked before every connection, whatever the caller checked before.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use super::deny::DenyList;
use super::spec::Handler;

/// How one probe went; [`Outcome::label`] is the `result` label of `roster_probes_total`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The backend answered, or refused, unhealthily.
    Failure(String),
    Timeout(String),
    /// The address is in the deny list: nothing was sent.
    Denied(String),
    /// The probe could not be made (no such named port, a TLS setup error).
    Error(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure(_) => "failure",
            Outcome::Timeout(_) => "timeout",
            Outcome::Denied(_) => "denied",
            Outcome::Error(_) => "error",
        }
    }

    /// For the thresholds: every outcome but success is a failure, with its message.
    pub fn into_result(self) -> Result<(), String> {
        match self {
            Outcome::Success => Ok(()),
            Outcome::Failure(m) | Outcome::Timeout(m) | Outcome::Denied(m) | Outcome::Error(m) => Err(m),
        }
    }
}

/// Runs probes; cheap to clone.
#[derive(Clone)]
pub struct Prober {
    deny: Arc<DenyList>,
    tls: Arc<rustls::ClientConfig>,
}

impl Prober {
    pub fn new(deny: Arc<DenyList>) -> Prober {
        Prober {
            deny,
            tls: Arc::new(insecure_tls_config()),
        }
    }

    /// Probes `ip` within `timeout`. `hostname` is the DNS name the address was resolved from (HTTP
    /// probes send it as `Host` and TLS server name); `ports` are the backend's named ports.
    pub async fn probe(
        &self,
        ip: IpAddr,
        hostname: Option<&str>,
        handler: &Handler,
        ports: &BTreeMap<String, i32>,
        timeout: Duration,
    ) -> Outcome {
        if let Some(message) = self.deny.check(ip) {
            return Outcome::Denied(message);
        }
        let port = match handler.port_for(ports) {
            Ok(port) => port,
            Err(message) => return Outcome::Error(message),
        };
        let addr = SocketAddr::new(ip, port);
        let run = async {
            match handler {
                Handler::Tcp { .. } => tcp(addr).await,
                Handler::Http {
                    path, https, headers, ..
                } => {
                    let host = host_header(addr, hostname, headers, *https);
                    http_get(addr, &host, path, headers, https.then_some(&self.tls)).await
                }
                Handler::Grpc { service, .. } => grpc(addr, service).await,
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Timeout(format!("timeout: no answer within {}s", timeout.as_secs_f64())),
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, Outcome> {
    TcpStream::connect(addr)
        .await
        .map_err(|err| Outcome::Failure(format!("connect: {}", io_message(&err))))
}

async fn tcp(addr: SocketAddr) -> Outcome {
    match connect(addr).await {
        Ok(_) => Outcome::Success,
        Err(outcome) => outcome,
    }
}

fn io_message(err: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset by peer".into(),
        HostUnreachable => "no route to host".into(),
        NetworkUnreachable => "network is unreachable".into(),
        TimedOut => "timed out".into(),
        _ => err.to_string(),
    }
}

/// Aborts a spawned connection task when the probe ends (or is cancelled by its timeout).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `Host` of an HTTP probe: the probe's own `Host` header, else the backend's DNS name (with the port
/// unless it is the scheme's default), else `ip:port`.
fn host_header(
    addr: SocketAddr,
    hostname: Option<&str>,
    headers: &[(String, String)],
    https: bool,
) -> String {
    if let Some((_, value)) = headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("host")) {
        return value.clone();
    }
    let default_port = if https { 443 } else { 80 };
    match hostname {
        Some(name) if addr.port() == default_port => name.to_owned(),
        Some(name) => format!("{name}:{}", addr.port()),
        None => addr.to_string(),
    }
}

/// The TLS server name (SNI): the `Host`'s name when it is a DNS name, else the IP (no SNI).
fn server_name(host: &str, ip: IpAddr) -> ServerName<'static> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.contains(':') => name,
        _ => host,
    };
    match ServerName::try_from(name.to_owned()) {
        Ok(dns @ ServerName::DnsName(_)) => dns,
        _ => ServerName::IpAddress(ip.into()),
    }
}

async fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(String, String)],
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Outcome {
    let stream = match connect(addr).await {
        Ok(stream) => stream,
        Err(outcome) => return outcome,
    };
    let request = match http_request(host, path, headers) {
        Ok(request) => request,
        Err(message) => return Outcome::Error(message),
    };
    let response = match tls {
        Some(config) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            match connector.connect(server_name(host, addr.ip()), stream).await {
                Ok(stream) => send_http1(TokioIo::new(stream), request).await,
                Err(err) => return Outcome::Failure(format!("TLS handshake: {err}")),
            }
        }
        None => send_http1(TokioIo::new(stream), request).await,
    };
    match response {
        Ok(status) if (200..400).contains(&status) => Outcome::Success,
        Ok(status) => Outcome::Failure(format!("HTTP probe failed with statuscode: {status}")),
        Err(message) => Outcome::Failure(message),
    }
}

fn http_request(
    host: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::get(path)
        .header("host", host)
        .header("user-agent", concat!("roster-probe/", env!("CARGO_PKG_VERSION")))
        .header("accept", "*/*")
        .header("connection", "close");
    for (name, value) in headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
    {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Full::new(Bytes::new()))
        .map_err(|err| format!("building the request: {err}"))
}

async fn send_http1<T>(io: TokioIo<T>, request: Request<Full<Bytes>>) -> Result<u16, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|err| format!("HTTP: {err}"))?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("HTTP: {err}"))?;
    Ok(response.status().as_u16())
}

/// gRPC health check: `grpc.health.v1.Health/Check` for `service` must answer `SERVING`.
async fn grpc(addr: SocketAddr, service: &str) -> Outcome {
    let stream = match connect(addr).await {
        Ok(stream) => stream,
        Err(outcome) => return outcome,
    };
    match grpc_check(stream, addr, service).await {
        Ok(1) => Outcome::Success,
        Ok(status) => Outcome::Failure(format!(
            "service unhealthy (responded with \"{}\")",
            serving_status_name(status)
        )),
        Err(message) => Outcome::Failure(message),
    }
}

async fn grpc_check(stream: TcpStream, addr: SocketAddr, service: &str) -> Result<u64, String> {
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|err| format!("gRPC: HTTP/2: {err}"))?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", concat!("roster-probe/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(grpc_frame(&health_check_request(service))))
        .map_err(|err| format!("gRPC: {err}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("gRPC: {err}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("gRPC: HTTP status {}", response.status().as_u16()));
    }
    let header_status = grpc_status(response.headers());
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("gRPC: reading the answer: {err}"))?;
    let status = collected.trailers().and_then(grpc_status).or(header_status);
    match status {
        Some((0, _)) => {}
        Some((code, message)) => return Err(format!("gRPC status {code}: {message}")),
        None => return Err("gRPC: no grpc-status in the answer".to_owned()),
    }
    parse_health_response(collected.to_bytes())
}

fn grpc_status(headers: &http::HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((code, message))
}

/// `HealthCheckRequest { string service = 1; }`.
pub fn health_check_request(service: &str) -> Vec<u8> {
    if service.is_empty() {
        return Vec::new();
    }
    let mut message = vec![0x0a];
    put_varint(&mut message, service.len() as u64);
    message.extend_from_slice(service.as_bytes());
    message
}

/// A gRPC length-prefixed message: uncompressed flag, big-endian length, the message.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The `status` (field 1) of a framed `HealthCheckResponse`; absent means 0 (`UNKNOWN`).
pub fn parse_health_response(mut body: Bytes) -> Result<u64, String> {
    let malformed = || "gRPC: malformed HealthCheckResponse".to_owned();
    if body.remaining() < 5 {
        return Err(malformed());
    }
    if body.get_u8() != 0 {
        return Err("gRPC: compressed answers are not supported".to_owned());
    }
    let len = body.get_u32() as usize;
    if body.remaining() < len {
        return Err(malformed());
    }
    let mut message = body.split_to(len);
    let mut status = 0;
    while message.has_remaining() {
        let key = get_varint(&mut message).ok_or_else(malformed)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut message).ok_or_else(malformed)?,
            (_, 0) => {
                get_varint(&mut message).ok_or_else(malformed)?;
            }
            (_, 2) => {
                let skip = get_varint(&mut message).ok_or_else(malformed)? as usize;
                if message.remaining() < skip {
                    return Err(malformed());
                }
                message.advance(skip);
            }
            (_, 5) if message.remaining() >= 4 => message.advance(4),
            (_, 1) if message.remaining() >= 8 => message.advance(8),
            _ => return Err(malformed()),
        }
    }
    Ok(status)
}

fn serving_status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "unknown status",
    }
}

/// TLS for HTTPS probes: certificates are not verified (kubelet does not either; backends often use
/// self-signed certificates), signatures still are.
fn insecure_tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnyCertificate(provider.clone()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
