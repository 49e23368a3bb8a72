//! LIST: resourceVersion semantics, selectors, and `limit`/`continue` pages that all come from one
//! snapshot (the remaining items are kept, as shared object references, until the token expires).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::Shared;
use super::convert::render;
use super::error::{Cause, CauseKind, StatusError};
use super::registry::ResourceType;
use super::selectors::Selectors;
use super::store::{ObjRef, Store};

const CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug, Default)]
pub(crate) struct ListQuery {
    pub selectors: Selectors,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// One page of a list.
pub(crate) struct ListPage {
    pub revision: u64,
    pub items: Vec<ObjRef>,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

struct Snapshot {
    revision: u64,
    items: Arc<[ObjRef]>,
    offset: usize,
    count_remaining: bool,
    created: Instant,
}

/// Continue tokens and the snapshot rest each one stands for.
pub(crate) struct ContinueTokens {
    ttl: Duration,
    pages: HashMap<String, Snapshot>,
}

impl ContinueTokens {
    pub fn new(ttl: Duration) -> ContinueTokens {
        ContinueTokens {
            ttl,
            pages: HashMap::new(),
        }
    }

    /// Cuts the page at `offset` of `items`, remembering the rest under a new token.
    fn page(
        &mut self,
        revision: u64,
        items: Arc<[ObjRef]>,
        offset: usize,
        limit: Option<usize>,
        count_remaining: bool,
    ) -> ListPage {
        let end = limit
            .filter(|l| *l > 0)
            .map_or(items.len(), |l| (offset + l).min(items.len()));
        let page: Vec<ObjRef> = items[offset..end].to_vec();
        if end >= items.len() {
            return ListPage {
                revision,
                items: page,
                continue_token: None,
                remaining: None,
            };
        }
        let ttl = self.ttl;
        self.pages.retain(|_, s| s.created.elapsed() < ttl);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let remaining = count_remaining.then_some(items.len() - end);
        let snapshot = Snapshot {
            revision,
            items,
            offset: end,
            count_remaining,
            created: Instant::now(),
        };
        self.pages.insert(token.clone(), snapshot);
        ListPage {
            revision,
            items: page,
            continue_token: Some(token),
            remaining,
        }
    }

    fn resume(&mut self, token: &str, limit: Option<usize>) -> Result<ListPage, StatusError> {
        let well_formed = token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return Err(StatusError::bad_request(format!(
                "continue key is not valid: {token:?} is not a token this server issued"
            )));
        }
        let fresh = self.pages.get(token).filter(|s| s.created.elapsed() < self.ttl);
        let Some(s) = fresh else {
            return Err(StatusError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        };
        let (revision, items, offset, count) = (s.revision, s.items.clone(), s.offset, s.count_remaining);
        Ok(self.page(revision, items, offset, limit, count))
    }
}

fn invalid_options(cause: Cause) -> StatusError {
    StatusError::invalid_list_options(cause)
}

/// Which revision a list reads: the newest, or exactly `rv`.
enum ReadAt {
    Latest,
    Exact(u64),
}

fn read_at(q: &ListQuery) -> Result<(ReadAt, Option<u64>), StatusError> {
    let rv = q.resource_version.as_deref().unwrap_or("");
    let matching = q.resource_version_match.as_deref().unwrap_or("");
    if !matching.is_empty() && rv.is_empty() {
        return Err(invalid_options(Cause::forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )));
    }
    if !["", "Exact", "NotOlderThan"].contains(&matching) {
        let supported = "supported values: \"Exact\", \"NotOlderThan\", \"\"";
        let cause = Cause::new(CauseKind::NotSupported, "resourceVersionMatch", supported);
        return Err(invalid_options(cause.with_value(matching)));
    }
    if rv.is_empty() || rv == "0" {
        if matching == "Exact" {
            return Err(invalid_options(Cause::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            )));
        }
        return Ok((ReadAt::Latest, None));
    }
    let n: u64 = rv
        .parse()
        .map_err(|_| StatusError::bad_request(format!("Invalid value for resourceVersion: {rv}")))?;
    let exact = matching == "Exact" || (matching.is_empty() && q.limit.is_some_and(|l| l > 0));
    Ok((if exact { ReadAt::Exact(n) } else { ReadAt::Latest }, Some(n)))
}

/// Waits up to 3 s for the store to reach revision `rv`; 504 otherwise.
async fn wait_for_revision(shared: &Shared, rv: u64) -> Result<(), StatusError> {
    let mut rx = shared.state.lock().unwrap().store.subscribe();
    let reached = matches!(
        tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|r| *r >= rv)).await,
        Ok(Ok(_))
    );
    if reached {
        return Ok(());
    }
    let current = *rx.borrow();
    Err(StatusError::timeout(format!(
        "Too large resource version: {rv}, current: {current}"
    )))
}

/// The current objects of a collection that match `selectors`; a pinned `metadata.name` in one
/// namespace is a key lookup instead of a scan.
pub(crate) fn matching(
    store: &Store,
    rt: &ResourceType,
    ns: Option<&str>,
    selectors: &Selectors,
) -> Vec<ObjRef> {
    if let (Some(name), Some(ns)) = (selectors.fields.name(), ns.or((!rt.namespaced).then_some("")))
        && ns.is_empty() != rt.namespaced
    {
        return store
            .get(&rt.key(ns, name))
            .filter(|o| selectors.matches(o))
            .cloned()
            .into_iter()
            .collect();
    }
    store
        .range(&rt.prefix(ns))
        .map(|(_, o)| o)
        .filter(|o| selectors.matches(o))
        .cloned()
        .collect()
}

pub(crate) async fn list(
    shared: &Shared,
    rt: &ResourceType,
    ns: Option<&str>,
    q: &ListQuery,
) -> Result<ListPage, StatusError> {
    if let Some(token) = q.continue_token.as_deref().filter(|t| !t.is_empty()) {
        if q.resource_version.as_deref().is_some_and(|rv| !rv.is_empty()) {
            return Err(StatusError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        return shared.state.lock().unwrap().continues.resume(token, q.limit);
    }
    let (at, min_rv) = read_at(q)?;
    if let Some(rv) = min_rv {
        wait_for_revision(shared, rv).await?;
    }
    let prefix = rt.prefix(ns);
    let mut state = shared.state.lock().unwrap();
    let (revision, items): (u64, Vec<ObjRef>) = match at {
        ReadAt::Latest => (
            state.store.revision(),
            matching(&state.store, rt, ns, &q.selectors),
        ),
        ReadAt::Exact(rv) => {
            let past = state.store.at_revision(&prefix, rv).map_err(|_| {
                StatusError::expired(format!(
                    "too old resource version: {rv} ({})",
                    state.store.floor()
                ))
            })?;
            (
                rv,
                past.into_values().filter(|o| q.selectors.matches(o)).collect(),
            )
        }
    };
    let count_remaining = q.selectors.is_empty();
    Ok(state
        .continues
        .page(revision, items.into(), 0, q.limit, count_remaining))
}

fn list_header(rt: &ResourceType, page: &ListPage) -> String {
    let mut meta = format!("\"resourceVersion\":\"{}\"", page.revision);
    if let Some(token) = &page.continue_token {
        meta.push_str(&format!(",\"continue\":\"{token}\""));
    }
    if let Some(n) = page.remaining {
        meta.push_str(&format!(",\"remainingItemCount\":{n}"));
    }
    format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{{{meta}}},\"items\":[",
        rt.kind,
        rt.api_version()
    )
}

/// The list as a stream of ~64 KiB chunks, serialized outside the store's lock.
pub(crate) fn list_body(
    rt: Arc<ResourceType>,
    page: ListPage,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let header = Bytes::from(list_header(&rt, &page));
    let mut items = page.items.into_iter().enumerate();
    let mut done = false;
    let rest = futures::stream::poll_fn(move |_| {
        if done {
            return std::task::Poll::Ready(None);
        }
        let mut buf = BytesMut::with_capacity(CHUNK + 4096);
        while buf.len() < CHUNK {
            match items.next() {
                Some((i, obj)) => {
                    if i > 0 {
                        buf.put_u8(b',');
                    }
                    buf.put_slice(&render(&rt, &obj));
                }
                None => {
                    buf.put_slice(b"]}");
                    done = true;
                    break;
                }
            }
        }
        std::task::Poll::Ready(Some(Ok(buf.freeze())))
    });
    futures::stream::StreamExt::chain(futures::stream::iter([Ok(header)]), rest)
}
