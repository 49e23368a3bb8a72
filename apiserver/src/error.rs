//! `Status` errors in the API server's own wording, and the field causes of `Invalid` answers.

use serde_json::{Value, json};

use super::registry::ResourceType;

/// An API error as the server reports it: an HTTP code, a `Status` reason and a message; `details`
/// holds the `Status.details` object (name, group, kind, causes) when there is one.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for StatusError {}

/// The kind of one field error, with its `Status` cause reason and its message prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CauseKind {
    Required,
    Invalid,
    Forbidden,
    Duplicate,
    NotSupported,
    TooMany,
}

impl CauseKind {
    fn reason(self) -> &'static str {
        match self {
            CauseKind::Required => "FieldValueRequired",
            CauseKind::Invalid => "FieldValueInvalid",
            CauseKind::Forbidden => "FieldValueForbidden",
            CauseKind::Duplicate => "FieldValueDuplicate",
            CauseKind::NotSupported => "FieldValueNotSupported",
            CauseKind::TooMany => "FieldValueTooMany",
        }
    }

    fn label(self) -> &'static str {
        match self {
            CauseKind::Required => "Required value",
            CauseKind::Invalid => "Invalid value",
            CauseKind::Forbidden => "Forbidden",
            CauseKind::Duplicate => "Duplicate value",
            CauseKind::NotSupported => "Unsupported value",
            CauseKind::TooMany => "Too many",
        }
    }
}

/// One field error of an `Invalid` answer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cause {
    pub kind: CauseKind,
    pub field: String,
    pub value: Option<Value>,
    pub detail: String,
}

impl Cause {
    pub fn new(kind: CauseKind, field: impl Into<String>, detail: impl Into<String>) -> Cause {
        Cause {
            kind,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Cause {
        Cause::new(CauseKind::Required, field, detail)
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Cause {
        Cause::new(CauseKind::Forbidden, field, detail)
    }

    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Cause {
        Cause {
            kind: CauseKind::Invalid,
            field: field.into(),
            value: Some(value.into()),
            detail: detail.into(),
        }
    }

    pub fn with_value(mut self, value: impl Into<Value>) -> Cause {
        self.value = Some(value.into());
        self
    }

    /// The message without the field, e.g. `Invalid value: "x": must be a valid IP address`.
    fn body(&self) -> String {
        let mut s = self.kind.label().to_string();
        if let Some(v) = &self.value {
            s.push_str(": ");
            s.push_str(&serde_json::to_string(v).unwrap_or_default());
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    fn to_json(&self) -> Value {
        json!({"reason": self.kind.reason(), "message": self.body(), "field": self.field})
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// `pods "x"` or `leases.coordination.k8s.io "x"`, as upstream names a resource in messages.
fn qualified(rt: &ResourceType, name: &str) -> String {
    format!("{} \"{name}\"", rt.qualified())
}

/// `Status.details` of a resource error; like upstream's `omitempty`, the core group is left out.
fn resource_details(rt: &ResourceType, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": rt.plural});
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    d
}

impl StatusError {
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> StatusError {
        StatusError {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn with_details(mut self, details: Value) -> StatusError {
        self.details = Some(details);
        self
    }

    pub(crate) fn not_found(rt: &ResourceType, name: &str) -> StatusError {
        StatusError::new(404, "NotFound", format!("{} not found", qualified(rt, name)))
            .with_details(resource_details(rt, name))
    }

    pub(crate) fn namespace_not_found(ns: &str) -> StatusError {
        StatusError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
            .with_details(json!({"name": ns, "kind": "namespaces"}))
    }

    pub(crate) fn no_route() -> StatusError {
        StatusError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub(crate) fn already_exists(rt: &ResourceType, name: &str) -> StatusError {
        StatusError::new(
            409,
            "AlreadyExists",
            format!("{} already exists", qualified(rt, name)),
        )
        .with_details(resource_details(rt, name))
    }

    pub(crate) fn conflict(rt: &ResourceType, name: &str, why: &str) -> StatusError {
        let message = format!("Operation cannot be fulfilled on {}: {why}", qualified(rt, name));
        StatusError::new(409, "Conflict", message).with_details(resource_details(rt, name))
    }

    pub(crate) fn modified(rt: &ResourceType, name: &str) -> StatusError {
        StatusError::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn invalid(rt: &ResourceType, name: &str, causes: &[Cause]) -> StatusError {
        let list: Vec<String> = causes.iter().map(Cause::to_string).collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let kind_name = if rt.group.is_empty() || rt.is_builtin() {
            rt.kind.clone()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        let message = format!("{kind_name} \"{name}\" is invalid: {joined}");
        let causes: Vec<Value> = causes.iter().map(Cause::to_json).collect();
        let mut details = json!({"name": name, "kind": rt.kind, "causes": causes});
        if !rt.group.is_empty() {
            details["group"] = json!(rt.group);
        }
        StatusError::new(422, "Invalid", message).with_details(details)
    }

    /// The 422 of a PUT without resourceVersion on a type that forbids unconditional updates.
    pub(crate) fn resource_version_required(rt: &ResourceType, name: &str) -> StatusError {
        let cause = Cause::new(
            CauseKind::Invalid,
            "metadata.resourceVersion",
            "must be specified for an update",
        );
        let body = format!(
            "{}: Invalid value: 0x0: must be specified for an update",
            cause.field
        );
        let kind_name = if rt.group.is_empty() {
            rt.kind.clone()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        let mut details = resource_details(rt, name);
        details["causes"] = json!([{"reason": "FieldValueInvalid", "message": "Invalid value: 0x0: must be specified for an update", "field": cause.field}]);
        StatusError::new(
            422,
            "Invalid",
            format!("{kind_name} \"{name}\" is invalid: {body}"),
        )
        .with_details(details)
    }

    /// A 422 about list or watch options (`ListOptions.meta.k8s.io`).
    pub(crate) fn invalid_list_options(cause: Cause) -> StatusError {
        let message = format!("ListOptions.meta.k8s.io \"\" is invalid: {cause}");
        StatusError::new(422, "Invalid", message)
            .with_details(json!({"group": "meta.k8s.io", "kind": "ListOptions", "causes": [cause.to_json()]}))
    }

    pub(crate) fn forbidden(rt: &ResourceType, name: &str, why: &str) -> StatusError {
        StatusError::new(
            403,
            "Forbidden",
            format!("{} is forbidden: {why}", qualified(rt, name)),
        )
        .with_details(resource_details(rt, name))
    }

    pub(crate) fn namespace_terminating(rt: &ResourceType, name: &str, ns: &str) -> StatusError {
        let why = format!("unable to create new content in namespace {ns} because it is being terminated");
        let cause = json!({"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"});
        let mut err = StatusError::forbidden(rt, name, &why);
        if let Some(Value::Object(d)) = &mut err.details {
            d.insert("causes".into(), json!([cause]));
        }
        err
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> StatusError {
        StatusError::new(400, "BadRequest", message)
    }

    pub(crate) fn expired(message: impl Into<String>) -> StatusError {
        StatusError::new(410, "Expired", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> StatusError {
        StatusError::new(500, "InternalError", message)
    }

    pub(crate) fn method_not_allowed() -> StatusError {
        StatusError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub(crate) fn unsupported_media_type(message: impl Into<String>) -> StatusError {
        StatusError::new(415, "UnsupportedMediaType", message)
    }

    pub(crate) fn not_acceptable() -> StatusError {
        StatusError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
    }

    pub(crate) fn timeout(message: impl Into<String>) -> StatusError {
        StatusError::new(504, "Timeout", message)
    }

    /// The `Status` object for this error.
    pub fn to_json(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }

    /// The error for a fault or a code given by a test: the usual reason for the code.
    pub(crate) fn from_code(code: u16) -> StatusError {
        let (reason, message) = match code {
            400 => ("BadRequest", "bad request (injected)"),
            403 => ("Forbidden", "forbidden (injected)"),
            404 => ("NotFound", "not found (injected)"),
            409 => ("Conflict", "conflict (injected)"),
            410 => ("Expired", "expired (injected)"),
            422 => ("Invalid", "invalid (injected)"),
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted",
            ),
            _ => (
                "InternalError",
                "an error on the server (injected) has prevented the request from succeeding",
            ),
        };
        StatusError::new(code, reason, message)
    }
}
