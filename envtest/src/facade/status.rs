//! The `Status` bodies the facade answers itself, shaped as kube-apiserver's: for a v1 slice that 1.20
//! cannot hold, a patch or media type it cannot translate, and an unreachable kube-apiserver.

use serde_json::{Value, json};

use super::convert::{Cause, GROUP};

/// A failed `Status` with `code`, `reason` and `message`, and `details` when given.
pub fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

/// 422 Invalid for an EndpointSlice `name`, one cause per field, worded as kube-apiserver words its own.
pub fn invalid_slice(name: &str, causes: &[Cause]) -> Value {
    let listed: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    let message = match listed.as_slice() {
        [one] => format!("EndpointSlice.{GROUP} {name:?} is invalid: {one}"),
        many => format!("EndpointSlice.{GROUP} {name:?} is invalid: [{}]", many.join(", ")),
    };
    let causes: Vec<Value> = causes
        .iter()
        .map(|c| json!({"reason": "FieldValueForbidden", "message": c.message, "field": c.field}))
        .collect();
    let details = json!({"name": name, "group": GROUP, "kind": "EndpointSlice", "causes": causes});
    failure(422, "Invalid", &message, Some(details))
}

pub fn bad_request(message: &str) -> Value {
    failure(400, "BadRequest", message, None)
}

pub fn unsupported_media_type(message: &str) -> Value {
    failure(415, "UnsupportedMediaType", message, None)
}

pub fn not_acceptable(message: &str) -> Value {
    failure(406, "NotAcceptable", message, None)
}

/// kube-apiserver did not answer (killed, restarting): what a load balancer in front of it would say.
pub fn unavailable(message: &str) -> Value {
    failure(503, "ServiceUnavailable", message, None)
}
