//! WATCH: initial state or replay from a resourceVersion, then live events from the store's log, with
//! selector transitions, bookmarks, timeouts, and the in-stream 410 when history is gone.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::convert::render;
use super::error::{Cause, StatusError};
use super::list::matching;
use super::registry::ResourceType;
use super::selectors::Selectors;
use super::store::{Event, EventType, Obj, ObjRef, stamp_rv};
use super::table::{Include, table};
use super::{Control, Shared};

const CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug, Default)]
pub(crate) struct WatchQuery {
    pub selectors: Selectors,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub send_initial_events: Option<bool>,
    /// Serve each object as a one-row `Table` (kubectl).
    pub table: Option<Include>,
}

pub(crate) type WatchStream = ReceiverStream<Result<Bytes, std::io::Error>>;

struct Watcher {
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    prefix: String,
    selectors: Selectors,
    bookmarks: bool,
    cursor: u64,
    table: Option<Include>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

/// Where a new watch starts.
enum Start {
    Initial {
        objects: Vec<ObjRef>,
        end_bookmark: bool,
    },
    After,
    Expired(u64),
}

fn invalid_watch(detail: &str, field: &str) -> StatusError {
    StatusError::invalid_list_options(Cause::forbidden(field, detail))
}

fn check_query(q: &WatchQuery) -> Result<(), StatusError> {
    let matching = q.resource_version_match.as_deref().unwrap_or("");
    match q.send_initial_events {
        Some(true) if matching != "NotOlderThan" => Err(invalid_watch(
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            "resourceVersionMatch",
        )),
        Some(true) if !q.bookmarks => Err(invalid_watch(
            "sendInitialEvents requires setting allowWatchBookmarks to true",
            "allowWatchBookmarks",
        )),
        None if !matching.is_empty() => Err(invalid_watch(
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            "resourceVersionMatch",
        )),
        _ => Ok(()),
    }
}

/// Starts a watch; the stream ends when the client goes, the timeout passes, or a hook closes it.
pub(crate) fn start(
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    ns: Option<&str>,
    q: WatchQuery,
) -> Result<WatchStream, StatusError> {
    check_query(&q)?;
    let rv = q.resource_version.as_deref().unwrap_or("");
    let parsed: Option<u64> = match rv {
        "" | "0" => None,
        _ => Some(
            rv.parse()
                .map_err(|_| StatusError::bad_request(format!("Invalid value for resourceVersion: {rv}")))?,
        ),
    };
    let prefix = rt.prefix(ns);
    let (tx, rx) = mpsc::channel(16);
    let state = shared.state.lock().unwrap();
    let revisions = state.store.subscribe();
    let control = shared.control.subscribe();
    let started = *control.borrow();
    let initial = q.send_initial_events.unwrap_or(parsed.is_none());
    let (start, cursor) = if initial {
        let objects = matching(&state.store, &rt, ns, &q.selectors);
        let end_bookmark = q.send_initial_events == Some(true);
        (
            Start::Initial {
                objects,
                end_bookmark,
            },
            state.store.revision(),
        )
    } else {
        let from = parsed.unwrap_or(state.store.revision());
        if from < state.store.floor() {
            (Start::Expired(from), from)
        } else {
            (Start::After, from)
        }
    };
    drop(state);
    let watcher = Watcher {
        shared,
        rt,
        prefix,
        selectors: q.selectors,
        bookmarks: q.bookmarks,
        cursor,
        table: q.table,
        tx,
    };
    let deadline = q.timeout.map(|t| Instant::now() + t);
    tokio::spawn(watcher.run(start, started, revisions, control, deadline));
    Ok(ReceiverStream::new(rx))
}

fn event_line(buf: &mut BytesMut, kind: &str, object: &[u8]) {
    buf.put_slice(b"{\"type\":\"");
    buf.put_slice(kind.as_bytes());
    buf.put_slice(b"\",\"object\":");
    buf.put_slice(object);
    buf.put_slice(b"}\n");
}

/// The event a watch with `selectors` sees for `e`: selector transitions become ADDED, or DELETED with the
/// last state that matched, stamped with the new revision (as upstream's watch cache does).
fn visible(e: &Event, selectors: &Selectors) -> Option<(EventType, ObjRef)> {
    let now = selectors.matches(&e.object);
    let before = e.prev.as_ref().filter(|p| selectors.matches(p));
    match (e.kind, before, now) {
        (EventType::Added, _, true) | (EventType::Modified, None, true) => {
            Some((EventType::Added, e.object.clone()))
        }
        (EventType::Modified, Some(_), true) => Some((EventType::Modified, e.object.clone())),
        (EventType::Modified, Some(prev), false) => Some((EventType::Deleted, restamp(prev, e.rv))),
        (EventType::Deleted, _, true) => Some((EventType::Deleted, e.object.clone())),
        _ => None,
    }
}

fn restamp(obj: &Obj, rv: u64) -> ObjRef {
    let mut value = obj.value();
    stamp_rv(&mut value, rv);
    Arc::new(Obj::new(&value, rv, &[]))
}

pub(crate) fn expired_line(rv: u64, floor: u64) -> Bytes {
    let status = StatusError::expired(format!("too old resource version: {rv} ({floor})"));
    let mut buf = BytesMut::new();
    event_line(
        &mut buf,
        "ERROR",
        &serde_json::to_vec(&status.to_json()).expect("JSON"),
    );
    buf.freeze()
}

impl Watcher {
    async fn send(&self, chunk: Bytes) -> bool {
        chunk.is_empty() || self.tx.send(Ok(chunk)).await.is_ok()
    }

    async fn send_objects(&self, kind: &str, objects: impl Iterator<Item = (EventType, ObjRef)>) -> bool {
        let mut buf = BytesMut::new();
        for (event, obj) in objects {
            let kind = if kind.is_empty() { event.as_str() } else { kind };
            event_line(&mut buf, kind, &self.render(&obj));
            if buf.len() >= CHUNK && !self.send(buf.split().freeze()).await {
                return false;
            }
        }
        self.send(buf.freeze()).await
    }

    fn render(&self, obj: &Obj) -> Bytes {
        match self.table {
            None => render(&self.rt, obj),
            Some(include) => {
                let meta = json!({"resourceVersion": obj.rv.to_string()});
                Bytes::from(
                    serde_json::to_vec(&table(&self.rt, &[obj.value()], meta, include)).expect("JSON"),
                )
            }
        }
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": self.cursor.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta});
        let mut buf = BytesMut::new();
        event_line(&mut buf, "BOOKMARK", &serde_json::to_vec(&object).expect("JSON"));
        buf.freeze()
    }

    /// Sends what happened since the cursor; false when the watch must end.
    async fn drain(&mut self) -> bool {
        let events = {
            let state = self.shared.state.lock().unwrap();
            let events = state.store.events_after(self.cursor);
            if events.is_ok() {
                self.cursor = state.store.revision().max(self.cursor);
            }
            events
        };
        let events = match events {
            Ok(events) => events,
            Err(c) => {
                self.send(expired_line(self.cursor, c.floor)).await;
                return false;
            }
        };
        let prefix = self.prefix.as_str();
        let selected = events
            .iter()
            .filter(|e| e.key.starts_with(prefix))
            .filter_map(|e| visible(e, &self.selectors))
            .collect::<Vec<_>>();
        self.send_objects("", selected.into_iter()).await
    }

    async fn run(
        mut self,
        start: Start,
        started: Control,
        mut revisions: watch::Receiver<u64>,
        mut control: watch::Receiver<Control>,
        deadline: Option<Instant>,
    ) {
        match start {
            Start::Expired(rv) => {
                let floor = self.shared.state.lock().unwrap().store.floor();
                self.send(expired_line(rv, floor)).await;
                return;
            }
            Start::Initial {
                objects,
                end_bookmark,
            } => {
                if !self
                    .send_objects("ADDED", objects.into_iter().map(|o| (EventType::Added, o)))
                    .await
                {
                    return;
                }
                if end_bookmark && !self.send(self.bookmark(true)).await {
                    return;
                }
            }
            Start::After => {}
        }
        let mut bookmarks_seen = started.bookmarks;
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        loop {
            if !self.drain().await {
                return;
            }
            tokio::select! {
                _ = self.tx.closed() => return,
                changed = control.changed() => {
                    let now = *control.borrow_and_update();
                    if changed.is_err() || now.closes != started.closes {
                        return;
                    }
                    if now.expires != started.expires {
                        let floor = self.shared.state.lock().unwrap().store.floor();
                        self.send(expired_line(self.cursor, floor.max(self.cursor + 1))).await;
                        return;
                    }
                    if now.bookmarks != bookmarks_seen {
                        bookmarks_seen = now.bookmarks;
                        if self.bookmarks && !(self.drain().await && self.send(self.bookmark(false)).await) {
                            return;
                        }
                    }
                }
                changed = revisions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
                    if self.bookmarks && self.drain().await {
                        self.send(self.bookmark(false)).await;
                    }
                    return;
                }
            }
        }
    }
}
