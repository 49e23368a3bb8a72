//! One request through the facade: discovery documents and `discovery.k8s.io/v1` requests are translated,
//! everything else is forwarded as it came (headers, body, status and streaming answer alike).
//!
//! The caller's credentials (`Authorization`, impersonation headers) go to kube-apiserver unchanged, so
//! authentication, RBAC and the audit log see the caller, not the facade.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;

use super::convert::{self, V1, V1BETA1};
use super::discovery::Doc;
use super::status;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

const V1_PREFIX: &str = "/apis/discovery.k8s.io/v1/";
const JSON: &str = "application/json";
/// How often a JSON patch is retried when another writer changed the slice between its read and its write
/// (kube-apiserver retries its own patches on such conflicts too).
const JSON_PATCH_ATTEMPTS: usize = 5;

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// kube-apiserver behind the facade, reached with kube's client (TLS, connection pooling): it carries no
/// credentials of its own, only each caller's.
pub struct Upstream {
    client: kube::Client,
}

/// A request already read whole: API request bodies are small, and translating needs all of it.
struct Buffered {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Upstream {
    pub fn new(client: kube::Client) -> Upstream {
        Upstream { client }
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return reply(&status::bad_request(&format!("reading the request body: {e}"))),
        };
        let req = Buffered {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
        };
        if req.headers.contains_key(header::UPGRADE) {
            let message = "the test environment's facade does not forward connection upgrades (exec, attach, \
                           port-forward): there is no kubelet behind it";
            return reply(&status::failure(501, "NotImplemented", message, None));
        }
        match (Doc::at(&req.path), req.path.strip_prefix(V1_PREFIX)) {
            (Some(doc), _) if req.method == Method::GET => self.discovery(doc, &req).await,
            (_, Some(rest)) => {
                let upstream_path = format!("/apis/{V1BETA1}/{rest}");
                self.slice(&req, &upstream_path).await
            }
            _ => match self
                .send(&req.method, &uri(&req.path, &req.query), &req.headers, req.body)
                .await
            {
                Ok(res) => streamed(res),
                Err(unreachable) => unreachable,
            },
        }
    }

    /// Sends one request to kube-apiserver; a transport failure becomes a 503 Status.
    async fn send(
        &self,
        method: &Method,
        uri: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<kube::client::Body>, Response<Body>> {
        let mut req = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in headers.iter() {
            if !HOP_BY_HOP.contains(&name.as_str()) && name != header::CONTENT_LENGTH {
                req = req.header(name, value);
            }
        }
        let req = req
            .body(kube::client::Body::from(body))
            .map_err(|e| reply(&status::bad_request(&format!("forwarding {uri}: {e}"))))?;
        self.client.send(req).await.map_err(|e| {
            let message = format!("kube-apiserver behind the test environment's facade did not answer: {e}");
            reply(&status::unavailable(&message))
        })
    }

    async fn discovery(&self, doc: Doc, req: &Buffered) -> Response<Body> {
        // Plain JSON, whatever the caller prefers: 1.20 answers an aggregated-discovery request with the
        // plain document anyway, and a compressed or protobuf one could not be rewritten.
        let headers = json_headers(&req.headers, JSON);
        let res = match self
            .send(&Method::GET, &doc.upstream_path(), &headers, Bytes::new())
            .await
        {
            Ok(res) => res,
            Err(unreachable) => return unreachable,
        };
        rewritten(res, |body| doc.rewrite(body)).await
    }

    /// A `discovery.k8s.io/v1` request, sent to `upstream_path` (its v1beta1 twin).
    async fn slice(&self, req: &Buffered, upstream_path: &str) -> Response<Body> {
        let accept = req.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let Some(accept) = json_accept(accept) else {
            let message = "the test environment's discovery.k8s.io/v1 facade translates JSON only; \
                           accept application/json";
            return reply(&status::not_acceptable(message));
        };
        let headers = json_headers(&req.headers, &accept);
        let uri = uri(upstream_path, &req.query);
        match req.method {
            Method::POST | Method::PUT => self.write(req, &uri, headers).await,
            Method::PATCH => self.patch(req, upstream_path, &uri, headers).await,
            Method::GET if is_watch(req) => {
                match self.send(&req.method, &uri, &headers, Bytes::new()).await {
                    Ok(res) => watch_converted(res),
                    Err(unreachable) => unreachable,
                }
            }
            _ => match self.send(&req.method, &uri, &headers, req.body.clone()).await {
                Ok(res) => converted(res).await,
                Err(unreachable) => unreachable,
            },
        }
    }

    /// Create and update: the v1 body is stored as v1beta1 (or refused with 422).
    async fn write(&self, req: &Buffered, uri: &str, headers: HeaderMap) -> Response<Body> {
        let Ok(mut slice) = decode_json_body(req) else {
            // Not JSON: kube-apiserver gives the decoding error a v1 server would.
            return self
                .forward_converted(&req.method, uri, &headers, req.body.clone())
                .await;
        };
        if let Err(causes) = convert::to_v1beta1(&mut slice) {
            let name = slice["metadata"]["name"]
                .as_str()
                .or(slice["metadata"]["generateName"].as_str())
                .or(req.path.rsplit('/').next().filter(|_| req.method == Method::PUT))
                .unwrap_or_default();
            return reply(&status::invalid_slice(name, &causes));
        }
        self.forward_converted(&req.method, uri, &headers, to_bytes(&slice))
            .await
    }

    async fn forward_converted(
        &self,
        method: &Method,
        uri: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response<Body> {
        match self.send(method, uri, headers, body).await {
            Ok(res) => converted(res).await,
            Err(unreachable) => unreachable,
        }
    }

    async fn patch(
        &self,
        req: &Buffered,
        upstream_path: &str,
        uri: &str,
        headers: HeaderMap,
    ) -> Response<Body> {
        let media = media_type(&req.headers);
        let name = req.path.rsplit('/').next().unwrap_or_default();
        match media.as_str() {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let Ok(mut patch) = serde_json::from_slice::<Value>(&req.body) else {
                    return self
                        .forward_converted(&req.method, uri, &headers, req.body.clone())
                        .await;
                };
                // Both versions' slices differ only inside `endpoints`, an atomic list a merge or strategic
                // merge patch replaces whole: translating the patch is exact, and the server applies it.
                if let Err(causes) = convert::to_v1beta1(&mut patch) {
                    return reply(&status::invalid_slice(name, &causes));
                }
                self.forward_converted(&req.method, uri, &headers, to_bytes(&patch))
                    .await
            }
            "application/json-patch+json" => self.json_patch(req, upstream_path, uri, headers).await,
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                let message = "server-side apply of discovery.k8s.io/v1 EndpointSlices is not supported by the \
                               test environment's facade over kube-apiserver 1.20 (field ownership would be \
                               recorded against v1beta1 fields); use a merge, JSON or strategic merge patch";
                reply(&status::unsupported_media_type(message))
            }
            _ => {
                self.forward_converted(&req.method, uri, &headers, req.body.clone())
                    .await
            }
        }
    }

    /// A JSON patch addresses v1 field paths, which v1beta1 does not have: the facade reads the slice,
    /// patches its v1 form and writes it back with the resourceVersion it read, retrying on a conflict
    /// unless the patch itself set the resourceVersion.
    async fn json_patch(
        &self,
        req: &Buffered,
        upstream_path: &str,
        uri: &str,
        headers: HeaderMap,
    ) -> Response<Body> {
        let ops: json_patch::Patch = match serde_json::from_slice(&req.body) {
            Ok(ops) => ops,
            Err(e) => return reply(&status::bad_request(&e.to_string())),
        };
        let mut put_headers = headers.clone();
        put_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
        for attempt in 1..=JSON_PATCH_ATTEMPTS {
            let read = match self
                .send(&Method::GET, upstream_path, &headers, Bytes::new())
                .await
            {
                Ok(res) if res.status().is_success() => res,
                Ok(failed) => return converted(failed).await,
                Err(unreachable) => return unreachable,
            };
            let (slice, read_rv) = match read_slice(read).await {
                Ok(read) => read,
                Err(failed) => return failed,
            };
            let (patched, pinned) = match patched_slice(slice, &ops, &read_rv, req) {
                Ok(patched) => patched,
                Err(refused) => return reply(&refused),
            };
            let res = match self
                .send(&Method::PUT, uri, &put_headers, to_bytes(&patched))
                .await
            {
                Ok(res) => res,
                Err(unreachable) => return unreachable,
            };
            if res.status() != StatusCode::CONFLICT || pinned || attempt == JSON_PATCH_ATTEMPTS {
                return converted(res).await;
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// The slice kube-apiserver returned, in its v1 form, and its resourceVersion.
async fn read_slice(res: Response<kube::client::Body>) -> Result<(Value, String), Response<Body>> {
    let bytes = match res.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Err(reply(&status::unavailable(&format!("reading the slice: {e}")))),
    };
    let mut slice: Value = serde_json::from_slice(&bytes)
        .map_err(|e| reply(&status::unavailable(&format!("decoding the slice: {e}"))))?;
    convert::to_v1(&mut slice);
    let rv = slice["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((slice, rv))
}

/// The JSON patch applied to the v1 `slice`, as v1beta1, and whether the patch pinned a resourceVersion;
/// or the Status refusing it.
fn patched_slice(
    mut slice: Value,
    ops: &json_patch::Patch,
    read_rv: &str,
    req: &Buffered,
) -> Result<(Value, bool), Value> {
    let name = req.path.rsplit('/').next().unwrap_or_default();
    if let Err(e) = json_patch::patch(&mut slice, ops) {
        let message = format!("the server rejected our request due to an error in our request: {e}");
        return Err(status::failure(422, "Invalid", &message, None));
    }
    if let Err(causes) = convert::to_v1beta1(&mut slice) {
        return Err(status::invalid_slice(name, &causes));
    }
    let rv = &mut slice["metadata"]["resourceVersion"];
    let pinned = rv.as_str().is_some_and(|v| v != read_rv);
    if !pinned {
        *rv = Value::from(read_rv);
    }
    Ok((slice, pinned))
}

fn decode_json_body(req: &Buffered) -> Result<Value, ()> {
    let media = media_type(&req.headers);
    if !(media.is_empty() || media == JSON) {
        return Err(());
    }
    serde_json::from_slice(&req.body).map_err(drop)
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The caller's Accept narrowed to what the facade can translate (JSON, tables and metadata included), or
/// `None` when it accepts no JSON at all.
fn json_accept(accept: Option<&str>) -> Option<String> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(JSON.into());
    };
    let kept: Vec<&str> = accept
        .split(',')
        .map(str::trim)
        .filter(|entry| {
            let media = entry.split(';').next().unwrap_or_default().trim();
            matches!(media, JSON | "*/*" | "application/*")
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

/// The caller's headers with `accept`, and without compression (a compressed answer could not be rewritten).
fn json_headers(headers: &HeaderMap, accept: &str) -> HeaderMap {
    let mut headers = headers.clone();
    headers.remove(header::ACCEPT_ENCODING);
    if let Ok(value) = HeaderValue::from_str(accept) {
        headers.insert(header::ACCEPT, value);
    }
    headers
}

fn is_watch(req: &Buffered) -> bool {
    let flag = req
        .query
        .iter()
        .flat_map(|q| q.split('&'))
        .any(|pair| matches!(pair, "watch=true" | "watch=1" | "watch=True"));
    flag || req.path.starts_with(&format!("/apis/{V1}/watch/"))
}

fn uri(path: &str, query: &Option<String>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("a JSON value serializes"))
}

/// A response of the facade's own.
fn reply(status_body: &Value) -> Response<Body> {
    let code = status_body["code"].as_u64().unwrap_or(500) as u16;
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, JSON)
        .body(full(to_bytes(status_body)))
        .expect("a static response")
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// kube-apiserver's response as it came, body streamed.
fn streamed(res: Response<kube::client::Body>) -> Response<Body> {
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed_unsync())
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// kube-apiserver's JSON answer to a v1 request, read whole and converted to v1.
async fn converted(res: Response<kube::client::Body>) -> Response<Body> {
    rewritten(res, convert::to_v1).await
}

/// kube-apiserver's answer with its JSON body rewritten by `edit`; a body that is not JSON is passed on.
async fn rewritten(res: Response<kube::client::Body>, edit: impl FnOnce(&mut Value)) -> Response<Body> {
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return reply(&status::unavailable(&format!(
                "reading kube-apiserver's answer: {e}"
            )));
        }
    };
    let bytes = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            edit(&mut value);
            to_bytes(&value)
        }
        Err(_) => bytes,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, full(bytes))
}

/// A watch answer, converted one event (one JSON line) at a time as the events arrive.
fn watch_converted(res: Response<kube::client::Body>) -> Response<Body> {
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    let lines = futures::stream::unfold(
        (body, Vec::new(), false),
        |(mut body, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else { continue };
                        buf.extend_from_slice(&data);
                        let out = complete_lines(&mut buf);
                        if !out.is_empty() {
                            return Some((Ok(Frame::data(out)), (body, buf, false)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(Box::new(e) as BoxError), (body, buf, true))),
                    None if buf.iter().all(u8::is_ascii_whitespace) => return None,
                    None => {
                        buf.push(b'\n');
                        let out = complete_lines(&mut buf);
                        return Some((Ok(Frame::data(out)), (body, buf, true)));
                    }
                }
            }
        },
    );
    Response::from_parts(parts, StreamBody::new(lines).boxed_unsync())
}

/// Takes every complete line out of `buf`, each watch event converted to v1.
fn complete_lines(buf: &mut Vec<u8>) -> Bytes {
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return Bytes::new();
    };
    let lines: Vec<u8> = buf.drain(..=end).collect();
    let mut out = Vec::with_capacity(lines.len());
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Value>(line) {
            Ok(mut event) => {
                convert::to_v1(&mut event);
                out.extend_from_slice(&to_bytes(&event));
            }
            Err(_) => out.extend_from_slice(line),
        }
        out.push(b'\n');
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_keeps_json_forms_only() {
        assert_eq!(json_accept(None).as_deref(), Some(JSON));
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(json_accept(Some(kubectl)).as_deref(), Some(kubectl));
        let client_go = "application/vnd.kubernetes.protobuf, application/json";
        assert_eq!(json_accept(Some(client_go)).as_deref(), Some(JSON));
        assert_eq!(json_accept(Some("application/vnd.kubernetes.protobuf")), None);
    }

    #[test]
    fn watch_lines_are_converted_as_they_complete() {
        let event = r#"{"type":"ADDED","object":{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1beta1","endpoints":[{"addresses":["10.0.0.1"],"topology":{"topology.kubernetes.io/zone":"z"}}]}}"#;
        let mut buf = format!("{event}\n{}", &event[..20]).into_bytes();
        let out = complete_lines(&mut buf);
        let line: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["object"]["apiVersion"], V1);
        assert_eq!(line["object"]["endpoints"][0]["zone"], "z");
        assert_eq!(buf, &event.as_bytes()[..20], "the partial line waits for its end");
        assert!(complete_lines(&mut buf).is_empty());
    }
}
