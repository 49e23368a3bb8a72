//! The list and watch of one kind, as a stream of [`Event`]s: list in pages, then watch from the list's
//! resourceVersion with bookmarks, resume a watch that ends from the last version seen, and list again when
//! the server answers 410 Gone. These are the semantics of kube-runtime's `watcher`; roster runs its own
//! loop for the wire format. kube's watcher decodes JSON only, and pod events are most of what roster reads:
//! a kind that decodes its protobuf form ([`Watched::PROTOBUF`], pods) asks kube-apiserver for
//! `application/vnd.kubernetes.protobuf`, where every field roster does not read is skipped by its length.
//! Servers that answer JSON anyway (roster's in-memory API server) are read as JSON: each response is
//! decoded by the media type it declares.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use http::header::{ACCEPT, CONTENT_TYPE};
use http_body_util::BodyExt;
use kube::api::{ListParams, WatchParams};
use kube::core::{ObjectList, Request, Status, WatchEvent};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use prost::Message;
use tokio::time::{Instant, Sleep};

use super::watch::Watched;

const JSON: &str = "application/json";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// The first four bytes of every protobuf object kube-apiserver sends (before its `runtime.Unknown`).
const PROTOBUF_MAGIC: &[u8] = b"k8s\0";
/// How long past the server-side timeout a silent watch is given before roster drops it.
const IDLE_MARGIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] kube::Error),
    #[error("the API server answered {code} {reason}: {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("undecodable {what}: {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("the list carries no resourceVersion")]
    NoResourceVersion,
    #[error("the watch was silent for {0:?}")]
    Idle(Duration),
}

impl Error {
    fn decode(what: &'static str, detail: impl ToString) -> Error {
        Error::Decode {
            what,
            detail: detail.to_string(),
        }
    }

    fn gone(&self) -> bool {
        matches!(self, Error::Api { code: 410, .. })
    }

    /// The error an answer with HTTP status `code` and `body` (a `Status`, if the server sent one) reports.
    fn answered(code: u16, format: Format, body: Bytes) -> Error {
        let status = match format {
            Format::Json => serde_json::from_slice::<Status>(&body).ok(),
            Format::Protobuf => protobuf::unwrap(body.clone())
                .ok()
                .and_then(|raw| protobuf::Status::decode(raw).ok())
                .map(Status::from),
        };
        match status {
            Some(status) => Error::Api {
                code,
                reason: status.reason,
                message: status.message,
            },
            None => Error::Api {
                code,
                reason: String::new(),
                message: String::from_utf8_lossy(&body).trim().to_owned(),
            },
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        Error::Api {
            code: status.code,
            reason: status.reason,
            message: status.message,
        }
    }
}

/// The list and watch of `api`'s kind, with `config`'s selectors, timeout and page size.
pub fn list_watch<K: Watched>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, Error>> {
    let source = Source {
        request: Request::new(api.resource_url()),
        client: api.into_client(),
        config,
    };
    futures::stream::unfold((source, State::Empty), |(source, state)| async move {
        let (event, state) = source.step(state).await;
        Some((event, (source, state)))
    })
}

struct Source {
    client: Client,
    request: Request,
    config: watcher::Config,
}

enum State<K> {
    Empty,
    Listing {
        continue_token: Option<String>,
        objects: std::vec::IntoIter<K>,
        resource_version: Option<String>,
    },
    Listed {
        resource_version: String,
    },
    Watching {
        resource_version: String,
        frames: Frames,
    },
}

impl Source {
    /// Advances `state` to the next event (or error) to report.
    async fn step<K: Watched>(&self, mut state: State<K>) -> (Result<Event<K>, Error>, State<K>) {
        loop {
            state = match state {
                State::Empty => {
                    let listing = State::Listing {
                        continue_token: None,
                        objects: Vec::new().into_iter(),
                        resource_version: None,
                    };
                    return (Ok(Event::Init), listing);
                }
                State::Listing {
                    continue_token,
                    mut objects,
                    resource_version,
                } => {
                    if let Some(obj) = objects.next() {
                        let listing = State::Listing {
                            continue_token,
                            objects,
                            resource_version,
                        };
                        return (Ok(Event::InitApply(obj)), listing);
                    }
                    if continue_token.is_none()
                        && let Some(resource_version) = resource_version
                    {
                        return (Ok(Event::InitDone), State::Listed { resource_version });
                    }
                    match self.page::<K>(continue_token).await {
                        Ok(page) if page.resource_version.is_none() && page.continue_token.is_none() => {
                            return (Err(Error::NoResourceVersion), State::Empty);
                        }
                        Ok(page) => State::Listing {
                            continue_token: page.continue_token,
                            objects: page.items.into_iter(),
                            resource_version: page.resource_version,
                        },
                        Err(err) => return (Err(err), State::Empty),
                    }
                }
                State::Listed { resource_version } => match self.watch::<K>(&resource_version).await {
                    Ok(frames) => State::Watching {
                        resource_version,
                        frames,
                    },
                    Err(err) if err.gone() => return (Err(err), State::Empty),
                    Err(err) => return (Err(err), State::Listed { resource_version }),
                },
                State::Watching {
                    resource_version,
                    mut frames,
                } => match frames.next_event::<K>().await {
                    None => State::Listed { resource_version },
                    Some(Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj))) => {
                        return observed(obj, Event::Apply, frames);
                    }
                    Some(Ok(WatchEvent::Deleted(obj))) => return observed(obj, Event::Delete, frames),
                    Some(Ok(WatchEvent::Bookmark(bookmark))) => State::Watching {
                        resource_version: bookmark.metadata.resource_version,
                        frames,
                    },
                    Some(Ok(WatchEvent::Error(status))) => {
                        let err = Error::from(*status);
                        // 410 Gone: the version is too old to resume from; everything is listed again.
                        let next = if err.gone() {
                            State::Empty
                        } else {
                            State::Listed { resource_version }
                        };
                        return (Err(err), next);
                    }
                    Some(Err(err)) => return (Err(err), State::Listed { resource_version }),
                },
            };
        }
    }

    /// One page of the list, from `continue_token`.
    async fn page<K: Watched>(&self, continue_token: Option<String>) -> Result<Page<K>, Error> {
        let mut params = list_params(&self.config);
        params.continue_token = continue_token;
        let request = self.request.list(&params).map_err(kube::Error::BuildRequest)?;
        let (format, body) = self.send::<K>(request).await?;
        if params.continue_token.is_none() {
            tracing::debug!(kind = K::LABEL, ?format, "listing");
        }
        let body = body.collect().await?.to_bytes();
        match format {
            Format::Json => Page::from_json(&body),
            Format::Protobuf => Page::from_protobuf(body),
        }
    }

    async fn watch<K: Watched>(&self, resource_version: &str) -> Result<Frames, Error> {
        let params = watch_params(&self.config);
        let request = self
            .request
            .watch(&params, resource_version)
            .map_err(kube::Error::BuildRequest)?;
        let (format, body) = self.send::<K>(request).await?;
        let idle = Duration::from_secs(self.config.timeout.unwrap_or(290).into()) + IDLE_MARGIN;
        Ok(Frames::new(body, format, idle))
    }

    /// Sends `request` asking for `K`'s preferred media type; an error answer becomes [`Error::Api`].
    async fn send<K: Watched>(
        &self,
        mut request: http::Request<Vec<u8>>,
    ) -> Result<(Format, kube::client::Body), Error> {
        let accept = if K::PROTOBUF.is_some() {
            http::HeaderValue::from_static("application/vnd.kubernetes.protobuf, application/json")
        } else {
            http::HeaderValue::from_static(JSON)
        };
        request.headers_mut().insert(ACCEPT, accept);
        let response = self.client.send(request.map(kube::client::Body::from)).await?;
        let format = Format::of(response.headers());
        let status = response.status();
        let body = response.into_body();
        if status.is_client_error() || status.is_server_error() {
            let bytes = body.collect().await?.to_bytes();
            return Err(Error::answered(status.as_u16(), format, bytes));
        }
        Ok((format, body))
    }
}

/// An object the watch shows as `event`: the watch goes on from its version, or lists again if it has none.
fn observed<K: Watched>(
    obj: K,
    event: fn(K) -> Event<K>,
    frames: Frames,
) -> (Result<Event<K>, Error>, State<K>) {
    match obj.meta().resource_version.clone().filter(|rv| !rv.is_empty()) {
        Some(resource_version) => (
            Ok(event(obj)),
            State::Watching {
                resource_version,
                frames,
            },
        ),
        None => (Err(Error::NoResourceVersion), State::Empty),
    }
}

fn list_params(config: &watcher::Config) -> ListParams {
    let (resource_version, version_match) = match config.list_semantic {
        watcher::ListSemantic::Any => (Some("0".to_owned()), Some(kube::api::VersionMatch::NotOlderThan)),
        watcher::ListSemantic::MostRecent => (None, None),
    };
    ListParams {
        label_selector: config.label_selector.clone(),
        field_selector: config.field_selector.clone(),
        resource_version,
        version_match,
        limit: config.page_size,
        ..ListParams::default()
    }
}

fn watch_params(config: &watcher::Config) -> WatchParams {
    WatchParams {
        label_selector: config.label_selector.clone(),
        field_selector: config.field_selector.clone(),
        timeout: config.timeout,
        bookmarks: config.bookmarks,
        send_initial_events: false,
    }
}

/// The media type of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Protobuf,
}

impl Format {
    fn of(headers: &http::HeaderMap) -> Format {
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        match content_type {
            Some(media) if media.starts_with(PROTOBUF) => Format::Protobuf,
            _ => Format::Json,
        }
    }

    /// Splits the next complete frame off `buffer`: a line of JSON, or a protobuf message behind its
    /// 4-byte big-endian length.
    fn frame(self, buffer: &mut BytesMut) -> Option<Bytes> {
        match self {
            Format::Json => {
                let end = buffer.iter().position(|&b| b == b'\n')?;
                let line = buffer.split_to(end + 1).freeze();
                Some(line.slice(..end))
            }
            Format::Protobuf => {
                let length = u32::from_be_bytes(buffer.get(..4)?.try_into().ok()?) as usize;
                if buffer.len() < 4 + length {
                    return None;
                }
                buffer.advance(4);
                Some(buffer.split_to(length).freeze())
            }
        }
    }
}

/// A watch's answer, read frame by frame.
struct Frames<B = kube::client::Body> {
    body: B,
    format: Format,
    buffer: BytesMut,
    /// How long the watch may be silent.
    idle: Duration,
    last_data: Instant,
    /// One timer for the whole watch, not one per read: when it fires, it is moved to `idle` after the last
    /// data if data came since it was set.
    deadline: Pin<Box<Sleep>>,
}

impl<B> Frames<B>
where
    B: hyper::body::Body<Data = Bytes, Error = kube::Error> + Unpin,
{
    fn new(body: B, format: Format, idle: Duration) -> Frames<B> {
        Frames {
            body,
            format,
            buffer: BytesMut::new(),
            idle,
            last_data: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// The next event, or `None` when the server ended the watch.
    async fn next_event<K: Watched>(&mut self) -> Option<Result<WatchEvent<K>, Error>> {
        loop {
            if let Some(frame) = self.format.frame(&mut self.buffer) {
                if frame.is_empty() {
                    continue;
                }
                return Some(match self.format {
                    Format::Json => event_from_json(&frame),
                    Format::Protobuf => event_from_protobuf(frame),
                });
            }
            let next = tokio::select! {
                biased;
                next = self.body.frame() => next?,
                () = &mut self.deadline => {
                    let silent_until = self.last_data + self.idle;
                    if Instant::now() < silent_until {
                        self.deadline.as_mut().reset(silent_until);
                        continue;
                    }
                    return Some(Err(Error::Idle(self.idle)));
                }
            };
            self.last_data = Instant::now();
            match next {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Err(err) => return Some(Err(err.into())),
            }
        }
    }
}

/// One page of a list.
struct Page<K> {
    items: Vec<K>,
    resource_version: Option<String>,
    continue_token: Option<String>,
}

impl<K: Watched> Page<K> {
    fn from_json(body: &[u8]) -> Result<Page<K>, Error> {
        let list: ObjectList<K> = serde_json::from_slice(body).map_err(|e| Error::decode("list", e))?;
        Ok(Page {
            items: list.items,
            resource_version: list.metadata.resource_version.filter(|v| !v.is_empty()),
            continue_token: list.metadata.continue_.filter(|v| !v.is_empty()),
        })
    }

    fn from_protobuf(body: Bytes) -> Result<Page<K>, Error> {
        let list = protobuf::List::decode(protobuf::unwrap(body)?).map_err(|e| Error::decode("list", e))?;
        let meta = list.metadata.unwrap_or_default();
        let items = list
            .items
            .iter()
            .map(|raw| decode_object::<K>(raw))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            resource_version: meta.resource_version.filter(|v| !v.is_empty()),
            continue_token: meta.continue_token.filter(|v| !v.is_empty()),
        })
    }
}

fn decode_object<K: Watched>(raw: &[u8]) -> Result<K, Error> {
    let decode = K::PROTOBUF.ok_or_else(|| Error::decode(K::LABEL, "no protobuf decoder"))?;
    decode(raw).map_err(|e| Error::decode(K::LABEL, e))
}

fn event_from_json<K: Watched>(line: &[u8]) -> Result<WatchEvent<K>, Error> {
    match serde_json::from_slice::<WatchEvent<K>>(line) {
        Ok(event) => Ok(event),
        // A failure answered in the stream instead of an event.
        Err(err) => match serde_json::from_slice::<Status>(line) {
            Ok(status) if status.code != 0 => Err(status.into()),
            _ => Err(Error::decode("watch event", err)),
        },
    }
}

fn event_from_protobuf<K: Watched>(frame: Bytes) -> Result<WatchEvent<K>, Error> {
    let event = protobuf::WatchEvent::decode(frame).map_err(|e| Error::decode("watch event", e))?;
    let raw = protobuf::unwrap(event.object.and_then(|o| o.raw).unwrap_or_default())?;
    let object = || decode_object::<K>(&raw);
    Ok(match event.kind.as_deref().unwrap_or_default() {
        "ADDED" => WatchEvent::Added(object()?),
        "MODIFIED" => WatchEvent::Modified(object()?),
        "DELETED" => WatchEvent::Deleted(object()?),
        "BOOKMARK" => WatchEvent::Bookmark(kube::core::watch::Bookmark {
            types: Default::default(),
            metadata: kube::core::watch::BookmarkMeta {
                resource_version: object()?.meta().resource_version.clone().unwrap_or_default(),
                annotations: Default::default(),
            },
        }),
        "ERROR" => {
            let status = protobuf::Status::decode(raw).map_err(|e| Error::decode("status", e))?;
            WatchEvent::Error(Box::new(status.into()))
        }
        other => return Err(Error::decode("watch event", format!("unknown type {other:?}"))),
    })
}

/// kube-apiserver's protobuf envelopes (`k8s.io/apimachinery` `runtime` and `meta/v1`), with the object
/// inside kept as raw bytes for the kind's own decoder.
mod protobuf {
    use bytes::Bytes;
    use prost::Message;

    use super::{Error, PROTOBUF_MAGIC};

    /// `runtime.Unknown`: the type and the raw object.
    #[derive(Clone, PartialEq, Message)]
    struct Unknown {
        #[prost(bytes = "bytes", optional, tag = "2")]
        raw: Option<Bytes>,
    }

    /// Any list: its `ListMeta` and each item's message.
    #[derive(Clone, PartialEq, Message)]
    pub struct List {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<ListMeta>,
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub items: Vec<Bytes>,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct ListMeta {
        #[prost(string, optional, tag = "2")]
        pub resource_version: Option<String>,
        #[prost(string, optional, tag = "3")]
        pub continue_token: Option<String>,
    }

    /// `meta/v1.WatchEvent`, a frame of a watch.
    #[derive(Clone, PartialEq, Message)]
    pub struct WatchEvent {
        #[prost(string, optional, tag = "1")]
        pub kind: Option<String>,
        #[prost(message, optional, tag = "2")]
        pub object: Option<RawExtension>,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct RawExtension {
        #[prost(bytes = "bytes", optional, tag = "1")]
        pub raw: Option<Bytes>,
    }

    /// `meta/v1.Status`, a failure.
    #[derive(Clone, PartialEq, Message)]
    pub struct Status {
        #[prost(string, optional, tag = "3")]
        pub message: Option<String>,
        #[prost(string, optional, tag = "4")]
        pub reason: Option<String>,
        #[prost(int32, optional, tag = "6")]
        pub code: Option<i32>,
    }

    impl From<Status> for kube::core::Status {
        fn from(status: Status) -> kube::core::Status {
            let code = status
                .code
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or_default();
            kube::core::Status::failure(
                &status.message.unwrap_or_default(),
                &status.reason.unwrap_or_default(),
            )
            .with_code(code)
        }
    }

    /// The object inside an encoded `runtime.Unknown` (after its magic prefix).
    pub fn unwrap(encoded: Bytes) -> Result<Bytes, Error> {
        let Some(envelope) = encoded.strip_prefix(PROTOBUF_MAGIC) else {
            return Err(Error::decode("object", "no protobuf magic prefix"));
        };
        let envelope = encoded.slice_ref(envelope);
        let unknown = Unknown::decode(envelope).map_err(|e| Error::decode("object", e))?;
        Ok(unknown.raw.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    //! The fixtures are kube-apiserver 1.20.2's own answers about two pods (`web-0` serving with two
    //! addresses, `web-1` terminating and not ready): a list as JSON and as protobuf, a one-item page, and a
    //! watch from version 0.

    use super::*;
    use crate::cache::PodProjection;

    const LIST_JSON: &[u8] = include_bytes!("testdata/pod-list.json");
    const LIST_PROTOBUF: &[u8] = include_bytes!("testdata/pod-list.pb");
    const PAGE_PROTOBUF: &[u8] = include_bytes!("testdata/pod-list-page.pb");
    const WATCH_PROTOBUF: &[u8] = include_bytes!("testdata/pod-watch.pb");

    fn json(pod: &PodProjection) -> serde_json::Value {
        serde_json::to_value(pod).expect("a projection serializes")
    }

    fn from_json() -> Page<PodProjection> {
        Page::from_json(LIST_JSON).expect("the JSON list decodes")
    }

    #[test]
    fn a_protobuf_list_decodes_to_the_projections_of_the_json_list() {
        let expected = from_json();
        let got = Page::<PodProjection>::from_protobuf(Bytes::from_static(LIST_PROTOBUF)).expect("decodes");
        assert_eq!(got.resource_version, expected.resource_version);
        assert_eq!(got.continue_token, None);
        assert_eq!(got.items.len(), 2);
        for (got, expected) in got.items.iter().zip(&expected.items) {
            assert_eq!(json(got), json(expected));
        }
        // What each field decoded to, so that a field both decoders miss cannot pass.
        let [serving, terminating] = &got.items[..] else {
            unreachable!()
        };
        let meta = &serving.metadata;
        assert_eq!(
            (meta.namespace.as_deref(), meta.name.as_deref()),
            (Some("default"), Some("web-0"))
        );
        assert!(meta.uid.as_deref().is_some_and(|uid| uid.len() == 36));
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.len(), 2);
        assert!(meta.deletion_timestamp.is_none());
        assert!(terminating.metadata.deletion_timestamp.is_some());
        let spec = &serving.spec;
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("web-0"), Some("web"))
        );
        let ports: Vec<_> = spec.containers[0]
            .ports
            .iter()
            .map(|p| (p.name.as_deref(), p.container_port, p.protocol.as_deref()))
            .collect();
        assert_eq!(
            ports,
            [(Some("http"), 8080, Some("TCP")), (Some("dns"), 53, Some("UDP"))]
        );
        assert_eq!(spec.init_containers[0].ports[0].container_port, 9090);
        let status = &serving.status;
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.5"));
        let ips: Vec<&str> = status.pod_ips.iter().map(|ip| ip.ip.as_str()).collect();
        assert_eq!(ips, ["10.1.0.5", "fd00::5"]);
        let ready = &status.conditions[0];
        assert_eq!((ready.type_.as_str(), ready.status.as_str()), ("Ready", "True"));
        let at = ready.last_transition_time.as_ref().map(|t| t.0.to_string());
        assert_eq!(at.as_deref(), Some("2026-12-06T03:00:01Z"));
        assert_eq!(terminating.status.conditions[0].status, "False");
    }

    #[test]
    fn a_protobuf_page_carries_its_continue_token() {
        let page = Page::<PodProjection>::from_protobuf(Bytes::from_static(PAGE_PROTOBUF)).expect("decodes");
        assert_eq!(page.items.len(), 1);
        assert!(page.continue_token.is_some_and(|token| !token.is_empty()));
    }

    /// The watch's frames, split at every byte boundary a network read could cut them at.
    #[test]
    fn protobuf_watch_frames_survive_any_split() {
        let expected = from_json();
        for cut in 0..=WATCH_PROTOBUF.len() {
            let mut buffer = BytesMut::new();
            let mut events = Vec::new();
            for chunk in [&WATCH_PROTOBUF[..cut], &WATCH_PROTOBUF[cut..]] {
                buffer.extend_from_slice(chunk);
                while let Some(frame) = Format::Protobuf.frame(&mut buffer) {
                    events.push(event_from_protobuf::<PodProjection>(frame).expect("an event"));
                }
            }
            assert!(buffer.is_empty(), "cut at {cut}: {} bytes left", buffer.len());
            assert_eq!(events.len(), 2, "cut at {cut}");
            for (event, expected) in events.iter().zip(&expected.items) {
                let WatchEvent::Added(pod) = event else {
                    panic!("cut at {cut}: {event:?}")
                };
                assert_eq!(json(pod), json(expected));
            }
        }
    }

    /// A watch body fed by the test: each item is one read.
    fn channel_body() -> (
        futures::channel::mpsc::UnboundedSender<&'static [u8]>,
        impl hyper::body::Body<Data = Bytes, Error = kube::Error> + Unpin,
    ) {
        use futures::StreamExt;
        let (tx, rx) = futures::channel::mpsc::unbounded::<&'static [u8]>();
        let frames = rx.map(|data| Ok(hyper::body::Frame::data(Bytes::from_static(data))));
        (tx, http_body_util::StreamBody::new(frames))
    }

    const BOOKMARK_LINE: &[u8] =
        b"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"12\"}}}\n";

    #[tokio::test(start_paused = true)]
    async fn a_watch_is_dropped_when_silent_for_its_idle_time_and_not_before() {
        let idle = Duration::from_secs(60);
        let (tx, body) = channel_body();
        let mut frames = Frames::new(body, Format::Json, idle);
        let started = Instant::now();
        // Data every 40 s keeps it alive past the first deadline, which is then moved.
        for _ in 0..3 {
            let feed = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(40)).await;
                feed.unbounded_send(BOOKMARK_LINE).expect("the watch reads");
            });
            let event = frames.next_event::<PodProjection>().await.expect("an event");
            assert!(matches!(event, Ok(WatchEvent::Bookmark(_))), "{event:?}");
        }
        assert_eq!(started.elapsed(), Duration::from_secs(120));
        let silent = Instant::now();
        let event = frames.next_event::<PodProjection>().await.expect("an error");
        assert!(matches!(event, Err(Error::Idle(d)) if d == idle), "{event:?}");
        assert_eq!(silent.elapsed(), idle, "idle counts from the last data");
        drop(tx);
    }

    #[test]
    fn json_watch_lines_split_on_newlines_and_read_failures_as_errors() {
        let gone: &[u8] = b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":\"too old\",\"reason\":\"Expired\",\"code\":410}\n";
        let mut buffer = BytesMut::from(&[BOOKMARK_LINE, gone, b"{\"type\":"].concat()[..]);
        let first = Format::Json.frame(&mut buffer).expect("a line");
        let Ok(WatchEvent::Bookmark(bookmark)) = event_from_json::<PodProjection>(&first) else {
            panic!("a bookmark")
        };
        assert_eq!(bookmark.metadata.resource_version, "12");
        let second = Format::Json.frame(&mut buffer).expect("a line");
        let err = event_from_json::<PodProjection>(&second).expect_err("a failure");
        assert!(err.gone(), "{err}");
        assert_eq!(Format::Json.frame(&mut buffer), None, "an unfinished line waits");
    }

    #[test]
    fn protobuf_bookmarks_and_errors_decode() {
        let envelope = |raw: Vec<u8>| {
            let mut unknown = PROTOBUF_MAGIC.to_vec();
            // runtime.Unknown{raw (2) = raw}
            prost::encoding::bytes::encode(2, &raw, &mut unknown);
            unknown
        };
        let frame = |kind: &str, object: Vec<u8>| {
            let event = protobuf::WatchEvent {
                kind: Some(kind.to_owned()),
                object: Some(protobuf::RawExtension {
                    raw: Some(Bytes::from(envelope(object))),
                }),
            };
            Bytes::from(event.encode_to_vec())
        };
        // Pod{metadata (1) = ObjectMeta{resourceVersion (6) = "77"}}
        let bookmark = frame("BOOKMARK", vec![0x0a, 0x04, 0x32, 0x02, b'7', b'7']);
        let Ok(WatchEvent::Bookmark(bookmark)) = event_from_protobuf::<PodProjection>(bookmark) else {
            panic!("a bookmark")
        };
        assert_eq!(bookmark.metadata.resource_version, "77");
        let status = protobuf::Status {
            message: Some("too old resource version".into()),
            reason: Some("Expired".into()),
            code: Some(410),
        };
        let error = frame("ERROR", status.encode_to_vec());
        let Ok(WatchEvent::Error(status)) = event_from_protobuf::<PodProjection>(error) else {
            panic!("an error event")
        };
        assert!(Error::from(*status).gone());
        let answered = Error::answered(500, Format::Protobuf, Bytes::from_static(b"not protobuf"));
        assert!(answered.to_string().contains("500"), "{answered}");
        assert!(event_from_protobuf::<PodProjection>(frame("ADDED", vec![0xff])).is_err());
    }
}
