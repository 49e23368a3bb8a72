//! What every case uses: its context (an environment and a namespace of its own), raw HTTP requests that
//! keep the status code, checks of the `Status` error body, and a line-by-line watch reader.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures::future::BoxFuture;
use http::{Method, Request};
use http_body_util::BodyExt;
use kube::client::Body;
use roster_envtest::{MemoryApiServer, TestEnv, Tier};
use serde_json::{Value, json};

pub const MERGE: &str = "application/merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";
pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub const APPLY: &str = "application/apply-patch+yaml";

/// One conformance case: a name, the async body, and what the tier must serve for it to run.
pub struct Case {
    pub name: &'static str,
    pub run: fn(Ctx) -> BoxFuture<'static, anyhow::Result<()>>,
    pub needs: Needs,
}

/// What a case needs beyond the API both tiers serve.
#[derive(Clone, Copy)]
pub enum Needs {
    Any,
    /// discovery.k8s.io/v1 EndpointSlices: 1.20 serves v1beta1, the real tier's facade adds v1.
    EndpointSliceV1,
    /// The real tier's facade itself: the v1beta1 objects behind v1, and what 1.20 cannot hold.
    Facade,
    /// Streaming lists, `sendInitialEvents` (memory only).
    StreamingList,
    /// A test hook only the in-memory server has; the reason says why the real tier cannot stand in.
    MemoryHooks(&'static str),
}

impl Needs {
    pub fn skip_reason(self, tier: Tier) -> Option<String> {
        let facade = roster_envtest::Facade::wanted().unwrap_or(true);
        match (self, tier) {
            (Needs::Any, _) => None,
            (Needs::Facade, Tier::Memory) => {
                Some("the in-memory server serves v1 itself: no v1beta1 behind it, hints kept".into())
            }
            (Needs::EndpointSliceV1 | Needs::Facade, Tier::Real) if !facade => {
                Some("ROSTER_FACADE=off, and 1.20 itself has no discovery.k8s.io/v1".into())
            }
            (_, Tier::Memory) | (Needs::EndpointSliceV1 | Needs::Facade, Tier::Real) => None,
            (Needs::StreamingList, Tier::Real) => {
                Some("1.20 has no streaming lists (sendInitialEvents)".into())
            }
            (Needs::MemoryHooks(why), Tier::Real) => Some(why.into()),
        }
    }
}

/// Builds `Vec<Case>` from async fns taking a [`Ctx`]: `cases![a, b => Needs::StreamingList]`.
macro_rules! cases {
    ($($f:ident $(=> $needs:expr)?),* $(,)?) => {
        vec![$($crate::support::Case {
            name: stringify!($f),
            run: |cx| Box::pin($f(cx)),
            needs: $crate::support::needs_or_any(&[$($needs)?]),
        }),*]
    };
}
pub(crate) use cases;

pub fn needs_or_any(needs: &[Needs]) -> Needs {
    needs.first().copied().unwrap_or(Needs::Any)
}

/// `ensure!(got == want)` with both values in the message.
macro_rules! check_eq {
    ($got:expr, $want:expr $(,)?) => {
        check_eq!($got, $want, "{}", stringify!($got))
    };
    ($got:expr, $want:expr, $($ctx:tt)+) => {{
        let (got, want) = (&$got, &$want);
        anyhow::ensure!(got == want, "{}: got {:?}, want {:?}", format!($($ctx)+), got, want);
    }};
}
pub(crate) use check_eq;

/// A case's world: its environment and a namespace no other case touches.
pub struct Ctx {
    pub env: TestEnv,
    pub ns: String,
}

/// A response with its status code kept (kube's helpers turn error codes into `Err`).
#[derive(Debug)]
pub struct Reply {
    /// `METHOD path`, for failure messages.
    pub request: String,
    pub code: u16,
    pub content_type: String,
    pub body: Value,
}

impl Ctx {
    pub fn client(&self) -> kube::Client {
        self.env.client()
    }

    /// The in-memory server's hooks; an error on the real tier (cases needing them are skipped there).
    pub fn memory(&self) -> anyhow::Result<&MemoryApiServer> {
        self.env
            .memory_server()
            .context("this case needs the in-memory server's hooks")
    }

    /// `/api/v1/namespaces/<ns>/<resource>`.
    pub fn core(&self, resource: &str) -> String {
        format!("/api/v1/namespaces/{}/{resource}", self.ns)
    }

    /// `/apis/<group/version>/namespaces/<ns>/<resource>`.
    pub fn group(&self, group_version: &str, resource: &str) -> String {
        format!("/apis/{group_version}/namespaces/{}/{resource}", self.ns)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> anyhow::Result<Reply> {
        let mut req = Request::builder().method(method.clone()).uri(path);
        let bytes = match body {
            Some((content_type, text)) => {
                req = req.header(http::header::CONTENT_TYPE, content_type);
                text.into_bytes()
            }
            None => Vec::new(),
        };
        let res = self
            .client()
            .send(req.body(Body::from(bytes))?)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let code = res.status().as_u16();
        let content_type = header(res.headers(), http::header::CONTENT_TYPE);
        let raw = res.into_body().collect_bytes().await?;
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into()))
        };
        Ok(Reply {
            request: format!("{method} {path}"),
            code,
            content_type,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Reply> {
        self.request(Method::POST, path, Some(("application/json", body.to_string())))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Reply> {
        self.request(Method::PUT, path, Some(("application/json", body.to_string())))
            .await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: Value) -> anyhow::Result<Reply> {
        self.request(Method::PATCH, path, Some((content_type, body.to_string())))
            .await
    }

    pub async fn delete(&self, path: &str, options: Option<Value>) -> anyhow::Result<Reply> {
        let body = options.map(|o| ("application/json", o.to_string()));
        self.request(Method::DELETE, path, body).await
    }

    /// Creates a ConfigMap in the case's namespace and returns it.
    pub async fn create_configmap(&self, name: &str, labels: Value, data: Value) -> anyhow::Result<Value> {
        let body = json!({"metadata": {"name": name, "labels": labels}, "data": data});
        self.post(&self.core("configmaps"), body).await?.ok()
    }

    /// Creates a pod (one container) in the case's namespace and returns it; `node` binds it.
    pub async fn create_pod(&self, name: &str, labels: Value, node: Option<&str>) -> anyhow::Result<Value> {
        let mut spec = json!({"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]});
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        let body = json!({"metadata": {"name": name, "labels": labels}, "spec": spec});
        self.post(&self.core("pods"), body).await?.ok()
    }

    /// Opens a watch (`path` carries the query, `watch=1` is added) and returns once the headers arrived.
    pub async fn watch(&self, path: &str) -> anyhow::Result<WatchStream> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let uri = format!("{path}{sep}watch=1");
        let req = Request::get(&uri).body(Body::empty())?;
        let res = self
            .client()
            .send(req)
            .await
            .with_context(|| format!("WATCH {uri}"))?;
        Ok(WatchStream {
            code: res.status().as_u16(),
            content_type: header(res.headers(), http::header::CONTENT_TYPE),
            body: res.into_body(),
            buf: Vec::new(),
        })
    }
}

fn header(headers: &http::HeaderMap, name: http::header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

impl Reply {
    /// The body of a 2xx reply, or an error showing the reply.
    pub fn ok(self) -> anyhow::Result<Value> {
        let Reply {
            request, code, body, ..
        } = self;
        ensure!(
            (200..300).contains(&code),
            "{request}: expected success, got HTTP {code}: {body}"
        );
        Ok(body)
    }

    /// Checks the reply is a `Status` failure with this code (and reason, when given); returns its body.
    pub fn failure(&self, code: u16, reason: Option<&str>) -> anyhow::Result<&Value> {
        self.check_failure(code, reason)
            .with_context(|| self.request.clone())
    }

    fn check_failure(&self, code: u16, reason: Option<&str>) -> anyhow::Result<&Value> {
        let b = &self.body;
        ensure!(self.code == code, "expected HTTP {code}, got {}: {b}", self.code);
        check_eq!(b["kind"], json!("Status"), "kind of {b}");
        check_eq!(b["apiVersion"], json!("v1"), "apiVersion of {b}");
        check_eq!(b["status"], json!("Failure"), "status of {b}");
        check_eq!(b["code"], json!(code), "code in {b}");
        ensure!(
            b["message"].as_str().is_some_and(|m| !m.is_empty()),
            "Status without a message: {b}"
        );
        if let Some(reason) = reason {
            check_eq!(b["reason"], json!(reason), "reason of {b}");
        }
        Ok(b)
    }

    /// The `field`s of `details.causes`.
    pub fn cause_fields(&self) -> Vec<String> {
        let causes = self.body["details"]["causes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        causes
            .iter()
            .filter_map(|c| c["field"].as_str().map(String::from))
            .collect()
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

/// A watch response read one JSON line at a time.
pub struct WatchStream {
    pub code: u16,
    pub content_type: String,
    body: Body,
    buf: Vec<u8>,
}

impl WatchStream {
    /// The next event; `None` once the server has closed the stream; an error if nothing came `within`.
    pub async fn next(&mut self, within: Duration) -> anyhow::Result<Option<Value>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(
                    serde_json::from_slice(&line).context("watch line is not one JSON object")?,
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(frame) = tokio::time::timeout(left, self.body.frame()).await else {
                bail!("no watch event within {within:?}");
            };
            match frame {
                None if self.buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => self.buf.push(b'\n'),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event, which must exist (the stream must not end first).
    pub async fn expect_event(&mut self, within: Duration) -> anyhow::Result<Value> {
        self.next(within).await?.context("the watch ended early")
    }

    /// The next event other than a BOOKMARK (the real server may send those near `timeoutSeconds`).
    pub async fn expect_change(&mut self, within: Duration) -> anyhow::Result<Value> {
        loop {
            let ev = self.expect_event(within).await?;
            if ev["type"] != "BOOKMARK" {
                return Ok(ev);
            }
        }
    }

    /// Asserts that no event (bookmarks aside) arrives for `quiet`.
    pub async fn expect_quiet(&mut self, quiet: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + quiet;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left).await {
                Err(_) => return Ok(()),
                Ok(None) => bail!("the watch ended while it should have stayed open"),
                Ok(Some(ev)) if ev["type"] == "BOOKMARK" => continue,
                Ok(Some(ev)) => bail!("unexpected watch event: {}", summary(&ev)),
            }
        }
        Ok(())
    }
}

/// `TYPE name@rv` of a watch event, for messages and comparisons.
pub fn summary(ev: &Value) -> String {
    let obj = &ev["object"];
    format!("{} {}@{}", ev["type"].as_str().unwrap_or("?"), name(obj), rv(obj))
}

pub fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

pub fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The resourceVersion as a number: both tiers use etcd-style decimal revisions, which lets cases compare
/// order (a client must not, but a conformance suite may).
pub fn rv_num(obj: &Value) -> anyhow::Result<u64> {
    let rv = rv(obj);
    rv.parse()
        .with_context(|| format!("resourceVersion {rv:?} is not decimal"))
}

/// Item names of a list reply body, in the server's order.
pub fn item_names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| items.iter().map(name).collect())
        .unwrap_or_default()
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Polls `probe` every 100 ms until it yields `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        ensure!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `text` with `%`-escapes for a query parameter value.
pub fn q(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
