//! PATCH: JSON patch (RFC 6902), merge patch (RFC 7386), strategic merge patch (built-in kinds only)
//! and server-side apply, each computed on the current object and then written as an update.

use std::sync::Arc;

use serde_json::Value;

use super::convert::to_view;
use super::error::StatusError;
use super::registry::ResourceType;
use super::state::{State, WriteOptions, Written};
use super::{apply, strategic};

const ACCEPTED: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

fn decode(body: &[u8]) -> Result<Value, StatusError> {
    serde_json::from_slice(body).map_err(|e| StatusError::bad_request(format!("error decoding patch: {e}")))
}

fn unprocessable(message: String) -> StatusError {
    StatusError::new(422, "Invalid", message)
}

/// The patched object, or the error upstream gives for this patch type.
fn patched(rt: &ResourceType, media: &str, mut doc: Value, body: &[u8]) -> Result<Value, StatusError> {
    match media {
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| StatusError::bad_request(format!("error decoding json patch: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                unprocessable(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
        }
        "application/merge-patch+json" => {
            let patch = decode(body)?;
            if !patch.is_object() {
                return Err(StatusError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, &patch);
        }
        "application/strategic-merge-patch+json" if rt.is_builtin() => {
            strategic::strategic_merge(&mut doc, &decode(body)?, &rt.kind)
                .map_err(StatusError::bad_request)?;
        }
        "application/strategic-merge-patch+json" => {
            return Err(StatusError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: {ACCEPTED}"
            )));
        }
        other => {
            return Err(StatusError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: {ACCEPTED}, application/strategic-merge-patch+json; got {other}"
            )));
        }
    }
    Ok(doc)
}

/// Applies a PATCH with content type `content_type` to `name`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn patch(
    state: &mut State,
    rt: &Arc<ResourceType>,
    ns: &str,
    name: &str,
    status_write: bool,
    content_type: &str,
    body: &[u8],
    opts: &WriteOptions,
) -> Result<Written, StatusError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media == "application/apply-patch+yaml" || media == "application/apply-patch+json" {
        return apply::apply(state, rt, ns, name, status_write, body, opts);
    }
    let current = state.get(rt, ns, name)?;
    let doc = to_view(rt, current.value());
    let new = patched(rt, media, doc, body)?;
    state.update(rt, ns, name, status_write, new, opts)
}
