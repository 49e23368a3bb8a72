//! Fault injection, request counters and the bounded request log.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The Kubernetes verb of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn is_write(self) -> bool {
        matches!(self, Verb::Create | Verb::Update | Verb::Patch | Verb::Delete)
    }
}

/// A rule that makes matching requests fail, wait or lose their connection.
#[derive(Clone, Debug)]
pub struct Fault {
    pub verb: Option<Verb>,
    /// Plural, optionally with a subresource (`pods/status`); `pods` also matches `pods/status`.
    pub resource: Option<String>,
    pub path_contains: Option<String>,
    pub action: FaultAction,
    /// How many requests it hits; `None` until cleared.
    pub times: Option<u32>,
}

impl Fault {
    /// A fault with `action` on every request until cleared; narrow it with the fields.
    pub fn new(action: FaultAction) -> Fault {
        Fault {
            verb: None,
            resource: None,
            path_contains: None,
            action,
            times: None,
        }
    }

    /// Answers `code` to `verb` requests on `resource` until cleared, with `Retry-After` when given (429, 503).
    pub fn status(verb: Verb, resource: &str, code: u16, retry_after_secs: Option<u32>) -> Fault {
        Fault {
            verb: Some(verb),
            resource: Some(resource.into()),
            ..Fault::new(FaultAction::Status {
                code,
                retry_after_secs,
            })
        }
    }

    /// The same fault, for the first `n` matching requests only.
    pub fn times(self, n: u32) -> Fault {
        Fault {
            times: Some(n),
            ..self
        }
    }

    fn matches(&self, verb: Verb, resource: &str, path: &str) -> bool {
        let resource_ok = self
            .resource
            .as_deref()
            .is_none_or(|r| r == resource || resource.split_once('/').is_some_and(|(plural, _)| plural == r));
        self.verb.is_none_or(|v| v == verb)
            && resource_ok
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
    }
}

#[derive(Clone, Debug)]
pub enum FaultAction {
    /// Answer with this code (a `Status` body); 429 and 503 carry `Retry-After` when given.
    Status {
        code: u16,
        retry_after_secs: Option<u32>,
    },
    /// Wait, then serve the request normally.
    Delay(Duration),
    /// Watches: send the headers, then cut the connection. Other requests: cut the connection.
    DropStream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultId(u64);

#[derive(Default)]
pub(crate) struct Faults {
    next: u64,
    rules: Vec<(FaultId, Fault)>,
}

impl Faults {
    pub fn add(&mut self, fault: Fault) -> FaultId {
        self.next += 1;
        let id = FaultId(self.next);
        self.rules.push((id, fault));
        id
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn remove(&mut self, id: FaultId) {
        self.rules.retain(|(i, _)| *i != id);
    }

    /// The action of the first matching rule, counting down its `times`.
    pub fn take(&mut self, verb: Verb, resource: &str, path: &str) -> Option<FaultAction> {
        let idx = self
            .rules
            .iter()
            .position(|(_, f)| f.matches(verb, resource, path))?;
        let fault = &mut self.rules[idx].1;
        let action = fault.action.clone();
        match &mut fault.times {
            Some(1) => {
                self.rules.remove(idx);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(action)
    }
}

/// Requests by (verb, resource), plus the writes that changed nothing.
#[derive(Clone, Debug, Default)]
pub struct RequestCounts {
    counts: BTreeMap<(Verb, String), u64>,
    noops: BTreeMap<String, u64>,
}

impl RequestCounts {
    pub fn get(&self, verb: Verb, resource: &str) -> u64 {
        self.counts
            .get(&(verb, resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// create + update + patch + delete requests on `resource`.
    pub fn writes(&self, resource: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((v, r), _)| v.is_write() && r == resource)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total_writes(&self) -> u64 {
        self.counts
            .iter()
            .filter(|((v, _), _)| v.is_write())
            .map(|(_, n)| n)
            .sum()
    }

    /// Updates and patches of `resource` that changed nothing (no new resourceVersion).
    pub fn noop_writes(&self, resource: &str) -> u64 {
        self.noops.get(resource).copied().unwrap_or(0)
    }

    pub fn total_noop_writes(&self) -> u64 {
        self.noops.values().sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = ((Verb, String), u64)> + '_ {
        self.counts.iter().map(|(k, v)| (k.clone(), *v))
    }
}

/// One served request.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub verb: Option<Verb>,
    pub resource: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub time: SystemTime,
}

const LOG_LEN: usize = 10_000;

#[derive(Default)]
pub(crate) struct Telemetry {
    counts: Mutex<RequestCounts>,
    log: Mutex<VecDeque<RequestRecord>>,
}

impl Telemetry {
    pub fn count(&self, verb: Verb, resource: &str) {
        *self
            .counts
            .lock()
            .unwrap()
            .counts
            .entry((verb, resource.to_string()))
            .or_default() += 1;
    }

    pub fn count_noop(&self, resource: &str) {
        *self
            .counts
            .lock()
            .unwrap()
            .noops
            .entry(resource.to_string())
            .or_default() += 1;
    }

    pub fn counts(&self) -> RequestCounts {
        self.counts.lock().unwrap().clone()
    }

    pub fn reset(&self) {
        *self.counts.lock().unwrap() = RequestCounts::default();
    }

    pub fn record(&self, record: RequestRecord) {
        let mut log = self.log.lock().unwrap();
        if log.len() == LOG_LEN {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub fn log(&self) -> Vec<RequestRecord> {
        self.log.lock().unwrap().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_match_and_count_down() {
        let mut faults = Faults::default();
        let fault = Fault {
            verb: Some(Verb::Update),
            resource: Some("endpoints".into()),
            path_contains: None,
            action: FaultAction::Status {
                code: 500,
                retry_after_secs: None,
            },
            times: Some(2),
        };
        faults.add(fault);
        assert!(
            faults
                .take(Verb::Get, "endpoints", "/api/v1/namespaces/d/endpoints/x")
                .is_none()
        );
        assert!(
            faults
                .take(Verb::Update, "pods", "/api/v1/namespaces/d/pods/x")
                .is_none()
        );
        assert!(faults.take(Verb::Update, "endpoints", "/x").is_some());
        assert!(faults.take(Verb::Update, "endpoints", "/x").is_some());
        assert!(faults.take(Verb::Update, "endpoints", "/x").is_none());
        let id = faults.add(Fault {
            resource: Some("pods".into()),
            ..Fault::new(FaultAction::DropStream)
        });
        assert!(faults.take(Verb::Patch, "pods/status", "/p").is_some());
        faults.remove(id);
        assert!(faults.take(Verb::Patch, "pods/status", "/p").is_none());
    }

    #[test]
    fn counts_split_writes_and_noops() {
        let t = Telemetry::default();
        t.count(Verb::Create, "endpoints");
        t.count(Verb::Update, "endpoints");
        t.count(Verb::List, "endpoints");
        t.count(Verb::Patch, "pods/status");
        t.count_noop("endpoints");
        let c = t.counts();
        assert_eq!(c.writes("endpoints"), 2);
        assert_eq!(c.total_writes(), 3);
        assert_eq!(c.get(Verb::List, "endpoints"), 1);
        assert_eq!(c.noop_writes("endpoints"), 1);
        t.reset();
        assert_eq!(t.counts().total_writes(), 0);
    }
}
