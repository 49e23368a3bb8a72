//! roster's one error type. `kind()` is a stable short name used as a metric label and in Events.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Api(#[source] kube::Error),
    #[error("conflict writing {what}: the object changed on the server")]
    Conflict { what: String },
    /// 429: the write budget has slowed down and paused for the server's Retry-After.
    #[error("the API server asked roster to slow down (429 Too Many Requests)")]
    TooManyRequests,
    #[error("namespace {0} is terminating")]
    NamespaceTerminating(String),
    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },
    #[error("Nodes not in the cache yet: {0:?}")]
    NodesMissing(Vec<String>),
    #[error("not the leader: writes are paused")]
    NotLeader,
    /// Not a failure: a write waited for the write budget, and the key is computed again from the newest
    /// state before it writes (see [`crate::write`]).
    #[error("waited for the write budget: computing again from the newest state")]
    Recompute,
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// A stable short name for metrics labels and Event reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Api(_) => "api",
            Error::Conflict { .. } => "conflict",
            Error::TooManyRequests => "throttled",
            Error::NamespaceTerminating(_) => "namespace_terminating",
            Error::Invalid { .. } => "invalid",
            Error::NodesMissing(_) => "nodes_missing",
            Error::NotLeader => "not_leader",
            Error::Recompute => "recompute",
            Error::Config(_) => "config",
        }
    }

    /// Sorts a kube error into the case that decides the retry.
    pub fn from_kube(err: kube::Error, what: impl Into<String>) -> Error {
        match &err {
            // AlreadyExists on a create means the cache lagged: like a conflict, retry from fresh state.
            kube::Error::Api(s) if s.code == 409 => Error::Conflict { what: what.into() },
            kube::Error::Api(s) if s.code == 429 => Error::TooManyRequests,
            kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated") => {
                Error::NamespaceTerminating(what.into())
            }
            kube::Error::Api(s) if s.code == 422 => Error::Invalid {
                what: what.into(),
                message: s.message.clone(),
            },
            _ => Error::Api(err),
        }
    }

    /// Invalid input waits for the object to change instead of retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::Invalid { .. } | Error::NamespaceTerminating(_) | Error::Config(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
