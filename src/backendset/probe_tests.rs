use std::convert::Infallible;
use std::sync::Mutex;

use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::backendset::args::BackendArgs;
use crate::backendset::crd::PortRef;

/// A throwaway self-signed certificate (CN=roster-test) for the HTTPS probe test; nothing trusts it.
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBlTCCATqgAwIBAgIUP+thgLlpk2M07Jn2G+l5B3psX2YwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLcm9zdGVyLXRlc3QwIBcNMjYxMTIyMDA0MjI5WhgPMjEyNjEw
MjkwMDQyMjlaMBYxFDASBgNVBAMMC3Jvc3Rlci10ZXN0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAENBEJGX/pEhAKj0aTqKcLkagMYxuxQVDgDIiHuab1/Lga8PPr
uUUYK2ZXOSmeYCawGwuqoUpD55iWJYsH8YT9z6NkMGIwHQYDVR0OBBYEFJYTQbBG
WGlLwbj4bJmtoeOXu8fWMB8GA1UdIwQYMBaAFJYTQbBGWGlLwbj4bJmtoeOXu8fW
MA8GA1UdEwEB/wQFMAMBAf8wDwYDVR0RBAgwBocEfwAAATAKBggqhkjOPQQDAgNJ
ADBGAiEAq8i8hY0fpHnkfp0vrIB+maUvZETuJBdKee30iINBnmECIQCbH87dBl98
74kUDRqJxIhTDdCQckbLgZGkoPaUrWGRvQ==
-----END CERTIFICATE-----
";
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOp6jj/mfFNfwD5PI
i4x2CJAFGScbr6GyCwi78qc0D4yhRANCAAQ0EQkZf+kSEAqPRpOopwuRqAxjG7FB
UOAMiIe5pvX8uBrw8+u5RRgrZlc5KZ5gJrAbC6qhSkPnmJYliwfxhP3P
-----END PRIVATE KEY-----
";

/// Probes loopback test servers: the tests' prober has an empty deny list.
fn prober() -> Prober {
    Prober::new(Arc::new(DenyList::default()))
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn tcp_handler(port: u16) -> Handler {
    Handler::Tcp {
        port: PortRef::Number(i32::from(port)),
    }
}

fn http_handler(port: u16, https: bool, headers: &[(&str, &str)]) -> Handler {
    Handler::Http {
        port: PortRef::Number(i32::from(port)),
        path: "/healthz?full=1".into(),
        https,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

const SECOND: Duration = Duration::from_secs(1);

async fn probe(handler: &Handler, addr: SocketAddr) -> Outcome {
    prober()
        .probe(addr.ip(), None, handler, &BTreeMap::new(), SECOND)
        .await
}

#[tokio::test]
async fn tcp_connects_or_reports_why_not() {
    let (listener, addr) = bind().await;
    assert_eq!(probe(&tcp_handler(addr.port()), addr).await, Outcome::Success);
    drop(listener);
    assert_eq!(
        probe(&tcp_handler(addr.port()), addr).await,
        Outcome::Failure("connect: connection refused".into())
    );
}

#[tokio::test]
async fn named_ports_resolve_through_the_backend() {
    let (_listener, addr) = bind().await;
    let handler = Handler::Tcp {
        port: PortRef::Name("pg".into()),
    };
    let ports = BTreeMap::from([("pg".to_owned(), i32::from(addr.port()))]);
    assert_eq!(
        prober().probe(addr.ip(), None, &handler, &ports, SECOND).await,
        Outcome::Success
    );
    assert_eq!(
        prober()
            .probe(addr.ip(), None, &handler, &BTreeMap::new(), SECOND)
            .await,
        Outcome::Error("invalid port name: probe port \"pg\" is not in the backend's ports".into())
    );
}

#[tokio::test]
async fn denied_addresses_are_never_contacted() {
    let (listener, addr) = bind().await;
    let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
    let deny = Arc::new(DenyList::new(BackendArgs::default().deny_list()));
    let outcome = Prober::new(deny)
        .probe(
            addr.ip(),
            None,
            &tcp_handler(addr.port()),
            &BTreeMap::new(),
            SECOND,
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Denied("denied: 127.0.0.1 is in --probe-deny-cidrs 127.0.0.0/8".into())
    );
    assert_eq!(outcome.label(), "denied");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!accepted.is_finished(), "nothing connected");
    accepted.abort();
}

/// Answers every HTTP request on `listener` with `status`, recording the request heads.
fn raw_http_server(listener: TcpListener, status: &'static str) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).to_lowercase());
                let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    seen
}

#[tokio::test]
async fn http_succeeds_on_2xx_and_3xx_only() {
    let cases = [
        ("200 OK", Outcome::Success),
        ("302 Found", Outcome::Success),
        (
            "404 Not Found",
            Outcome::Failure("HTTP probe failed with statuscode: 404".into()),
        ),
        (
            "503 Service Unavailable",
            Outcome::Failure("HTTP probe failed with statuscode: 503".into()),
        ),
    ];
    for (status, want) in cases {
        let (listener, addr) = bind().await;
        raw_http_server(listener, status);
        assert_eq!(
            probe(&http_handler(addr.port(), false, &[]), addr).await,
            want,
            "{status}"
        );
    }
}

#[tokio::test]
async fn http_sends_path_and_headers() {
    let (listener, addr) = bind().await;
    let seen = raw_http_server(listener, "200 OK");
    let handler = http_handler(
        addr.port(),
        false,
        &[("Host", "db.example.com"), ("X-Check", "deep")],
    );
    assert_eq!(probe(&handler, addr).await, Outcome::Success);
    let head = seen.lock().unwrap()[0].clone();
    assert!(head.starts_with("get /healthz?full=1 http/1.1\r\n"), "{head}");
    assert!(head.contains("host: db.example.com\r\n"), "{head}");
    assert!(head.contains("x-check: deep\r\n"), "{head}");
    assert!(head.contains("user-agent: roster-probe/"), "{head}");

    let (listener, addr) = bind().await;
    let seen = raw_http_server(listener, "200 OK");
    probe(&http_handler(addr.port(), false, &[]), addr).await;
    let handler = http_handler(addr.port(), false, &[]);
    let outcome = prober()
        .probe(
            addr.ip(),
            Some("api.example.com"),
            &handler,
            &BTreeMap::new(),
            SECOND,
        )
        .await;
    assert_eq!(outcome, Outcome::Success);
    let heads = seen.lock().unwrap().clone();
    assert!(
        heads[0].contains(&format!("host: {addr}\r\n")),
        "a literal IP: ip:port"
    );
    let want = format!("host: api.example.com:{}\r\n", addr.port());
    assert!(heads[1].contains(&want), "a DNS name: the name: {}", heads[1]);
}

#[test]
fn host_and_server_name() {
    let addr: SocketAddr = "198.51.100.10:443".parse().unwrap();
    let headers = vec![("Host".to_owned(), "db.example.com:8443".to_owned())];
    let cases = [
        (None, vec![], true, "198.51.100.10:443"),
        (Some("api.example.com"), vec![], true, "api.example.com"),
        (Some("api.example.com"), vec![], false, "api.example.com:443"),
        (
            Some("api.example.com"),
            headers.clone(),
            true,
            "db.example.com:8443",
        ),
    ];
    for (hostname, headers, https, want) in cases {
        assert_eq!(host_header(addr, hostname, &headers, https), want);
    }
    let sni = |host: &str| match server_name(host, addr.ip()) {
        ServerName::DnsName(name) => name.as_ref().to_owned(),
        ServerName::IpAddress(_) => "ip".to_owned(),
        _ => "other".to_owned(),
    };
    assert_eq!(sni("db.example.com:8443"), "db.example.com");
    assert_eq!(sni("api.example.com"), "api.example.com");
    assert_eq!(sni("198.51.100.10:443"), "ip");
    assert_eq!(sni("[2001:db8::1]:443"), "ip");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let (listener, addr) = bind().await;
    let _hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let outcome = prober()
        .probe(
            addr.ip(),
            None,
            &http_handler(addr.port(), false, &[]),
            &BTreeMap::new(),
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(outcome, Outcome::Timeout("timeout: no answer within 0.3s".into()));
    assert_eq!(outcome.label(), "timeout");
}

#[tokio::test]
async fn https_accepts_self_signed_certificates() {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let cert = CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                continue;
            };
            let mut buf = vec![0; 4096];
            let _ = tls.read(&mut buf).await;
            let _ = tls
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
            let _ = tls.shutdown().await;
        }
    });
    assert_eq!(
        probe(&http_handler(addr.port(), true, &[]), addr).await,
        Outcome::Success
    );
    let plain = probe(&http_handler(addr.port(), false, &[]), addr).await;
    assert!(
        matches!(plain, Outcome::Failure(_)),
        "plain HTTP to a TLS server fails: {plain:?}"
    );
}

/// A gRPC health server answering `status` (or the gRPC status `code` when not 0).
async fn grpc_server(status: u64, code: u32) -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| async move {
                    assert_eq!(request.uri().path(), "/grpc.health.v1.Health/Check");
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(
                        body,
                        grpc_frame(&health_check_request("db")),
                        "the request names the service"
                    );
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", code.to_string().parse().unwrap());
                    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                        Ok(Frame::data(grpc_frame(&[0x08, status as u8]))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let response = hyper::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(StreamBody::new(futures::stream::iter(frames)))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn grpc_health_needs_serving() {
    let cases = [
        (1, 0, Outcome::Success),
        (
            2,
            0,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into()),
        ),
        (1, 12, Outcome::Failure("gRPC status 12: ".into())),
    ];
    for (status, code, want) in cases {
        let addr = grpc_server(status, code).await;
        let handler = Handler::Grpc {
            port: addr.port(),
            service: "db".into(),
        };
        assert_eq!(probe(&handler, addr).await, want, "status {status} code {code}");
    }
}

#[test]
fn health_messages_encode_and_decode() {
    assert_eq!(health_check_request(""), Vec::<u8>::new());
    assert_eq!(health_check_request("db"), vec![0x0a, 2, b'd', b'b']);
    assert_eq!(&grpc_frame(&[0x08, 1])[..], &[0, 0, 0, 0, 2, 0x08, 1]);
    let cases: [(&[u8], Result<u64, String>); 6] = [
        (&[0, 0, 0, 0, 2, 0x08, 1], Ok(1)),
        (&[0, 0, 0, 0, 0], Ok(0)),
        (&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 2], Ok(2)),
        (
            &[1, 0, 0, 0, 2, 0x08, 1],
            Err("gRPC: compressed answers are not supported".into()),
        ),
        (
            &[0, 0, 0, 0, 9, 0x08, 1],
            Err("gRPC: malformed HealthCheckResponse".into()),
        ),
        (&[0, 0, 0], Err("gRPC: malformed HealthCheckResponse".into())),
    ];
    for (body, want) in cases {
        assert_eq!(
            parse_health_response(Bytes::copy_from_slice(body)),
            want,
            "{body:?}"
        );
    }
}

#[test]
fn outcomes_feed_the_thresholds() {
    assert_eq!(Outcome::Success.into_result(), Ok(()));
    assert_eq!(Outcome::Timeout("t".into()).into_result(), Err("t".into()));
    assert_eq!(Outcome::Error("e".into()).label(), "error");
    assert_eq!(Outcome::Failure("f".into()).label(), "failure");
}
