//! Request parsing: query parameters into list, watch, write and delete options, and request bodies.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use serde_json::Value;

use super::delete::DeleteOptions;
use super::error::StatusError;
use super::list::ListQuery;
use super::registry::ResourceType;
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::state::WriteOptions;
use super::watch::WatchQuery;

pub(crate) fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

pub(crate) fn selectors(rt: &ResourceType, q: &HashMap<String, String>) -> Result<Selectors, StatusError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(StatusError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), rt)
        .map_err(StatusError::bad_request)?;
    Ok(Selectors { labels, fields })
}

pub(crate) fn list_query(rt: &ResourceType, q: &HashMap<String, String>) -> Result<ListQuery, StatusError> {
    let limit = match q.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| StatusError::bad_request(format!("invalid limit: {l}")))?,
        ),
        None => None,
    };
    Ok(ListQuery {
        selectors: selectors(rt, q)?,
        limit,
        continue_token: q.get("continue").cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").cloned(),
    })
}

pub(crate) fn watch_query(rt: &ResourceType, q: &HashMap<String, String>) -> Result<WatchQuery, StatusError> {
    Ok(WatchQuery {
        selectors: selectors(rt, q)?,
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").cloned(),
        bookmarks: flag(q, "allowWatchBookmarks"),
        timeout: q
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs),
        send_initial_events: q.get("sendInitialEvents").map(|v| v == "true" || v == "1"),
        table: None,
    })
}

pub(crate) fn write_options(q: &HashMap<String, String>) -> WriteOptions {
    WriteOptions {
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        field_manager: q.get("fieldManager").cloned(),
        force: flag(q, "force"),
    }
}

pub(crate) fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOptions, StatusError> {
    let mut opts = DeleteOptions {
        grace_period: q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()),
        propagation: q.get("propagationPolicy").cloned(),
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        ..DeleteOptions::default()
    };
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| StatusError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        opts.merge_body(&v);
    }
    Ok(opts)
}

/// Decodes a JSON (or YAML) request body.
pub(crate) fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, StatusError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.contains("protobuf") {
        return Err(StatusError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {content_type}"
        )));
    }
    if content_type.contains("yaml") {
        return serde_saphyr::from_slice(body)
            .map_err(|e| StatusError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(body)
        .map_err(|e| StatusError::bad_request(format!("the body of the request could not be decoded: {e}")))
}
