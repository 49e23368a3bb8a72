//! Plain-HTTP GETs against the processes a test runs beside its API server (roster's admin server,
//! kube-controller-manager's insecure port), for `/metrics`, `/healthz` and `/readyz`.
//!
//! hyper's client does the HTTP/1.1 framing: kube-controller-manager answers `/metrics` with a chunked body,
//! and a hand-rolled reader that kept the chunk-size lines in the text split whichever sample line straddled a
//! chunk boundary, so a poll for `workqueue_depth{name="endpoint"} 0` could miss it for as long as the text
//! kept its length.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// How long one GET may take, connection included, before it counts as no answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET http://{addr}{path}`: the status code and the body as text, or `None` when nothing answers in time.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    tokio::time::timeout(TIMEOUT, exchange(addr, path))
        .await
        .ok()
        .flatten()
}

async fn exchange(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    exchange_on(stream, addr, path).await
}

/// A GET over a connection the caller made (the data-plane tier makes them inside a network namespace).
pub async fn exchange_on(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    path: &str,
) -> Option<(u16, String)> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    let driver = tokio::spawn(connection);
    let request = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let code = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    driver.abort();
    Some((code, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers with the body split into chunks in the middle of a line, as Go's net/http does
    /// (kube-controller-manager 1.20.2 sends `/metrics` in 2 KiB chunks, cut wherever the bytes fall).
    #[tokio::test]
    async fn a_chunked_body_comes_back_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            let chunks = ["workqueue_dep", "th{name=\"endpoint\"} 0\n"];
            let mut reply = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            for chunk in chunks {
                reply.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
            }
            reply.push_str("0\r\n\r\n");
            socket.write_all(reply.as_bytes()).await.unwrap();
        });
        let (code, body) = get(addr, "/metrics").await.expect("an answer");
        assert_eq!(code, 200);
        assert_eq!(body, "workqueue_depth{name=\"endpoint\"} 0\n");
    }

    #[tokio::test]
    async fn nothing_listening_is_no_answer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert_eq!(get(addr, "/metrics").await, None);
    }
}
