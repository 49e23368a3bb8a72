//! The record of roster's own writes that its watches have not shown yet.
//!
//! roster reconciles from its watch caches. Right after a write the cache still holds the version the write
//! replaced, and a reconcile that trusted it would act on that old version: a fast second change compared
//! against it looks like no change at all (upstream's stuck readiness, #125638 and #126578), and a slice
//! created a moment ago is created again (duplicate EndpointSlices, #92928). So the writer records each of its
//! answers here, and reconciles read the caches through this record ([`Written::view`]): roster's own latest
//! write of an object until the watch shows it. One mechanism serves every kind roster writes: Endpoints,
//! EndpointSlices and BackendSet status.
//!
//! A write is recorded in two steps: [`Written::begin`] before the request, so that watch events that race
//! with the answer are noted, and [`Written::finish`] with the answer. Each entry keeps the versions of the
//! object the watch may still deliver before the write: the one its first unshown write replaced, and
//! roster's own writes since. An event of one of those is old news. The watch has *shown* the entry when it
//! delivers roster's written version (or its deletion, for a delete), or anything else: someone else's
//! newer write, or a deletion or re-creation by someone else, which the next reconcile must then see.
//!
//! A relist settles entries by the same rules against the list; a create answered before the relist began
//! that the list lacks was deleted since, and so was the object of a delete sent before it began. A conflict never drops an entry (the view prefers nothing over
//! what the watch shows newer, so a retry simply waits for the watch). An entry the watch never shows
//! expires after [`UNSHOWN_TTL`], and the cache is trusted again: an update based on a stale version then
//! fails with a 409 and is retried.

use std::any::Any;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// How long an entry may wait for its watch event before the cache is trusted again.
pub const UNSHOWN_TTL: Duration = Duration::from_secs(60);

/// The kinds roster writes, each with its own watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Endpoints,
    EndpointSlice,
    BackendSet,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Endpoints, Kind::EndpointSlice, Kind::BackendSet];

    /// The metric label of the kind.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Endpoints => "endpoints",
            Kind::EndpointSlice => "endpointslice",
            Kind::BackendSet => "backendset",
        }
    }
}

/// One object: its kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectId {
    pub kind: Kind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjectId {
    pub fn of(kind: Kind, meta: &ObjectMeta) -> ObjectId {
        ObjectId {
            kind,
            namespace: Arc::from(meta.namespace.as_deref().unwrap_or_default()),
            name: Arc::from(meta.name.as_deref().unwrap_or_default()),
        }
    }
}

/// One version of an object: its uid and resourceVersion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Version {
    pub uid: String,
    pub resource_version: String,
}

impl Version {
    pub fn of(meta: &ObjectMeta) -> Version {
        Version {
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// What a watch event says of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The object exists at this version.
    Object(Version),
    /// The object of this uid is gone.
    Deleted(String),
}

/// A write about to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// A create, of `name` or (generated names) of a name not known yet.
    Create { name: Option<Arc<str>> },
    /// An update of the object at version `replaced`.
    Update { name: Arc<str>, replaced: Version },
    /// A delete of the object at version `replaced`.
    Delete { name: Arc<str>, replaced: Version },
}

impl Intent {
    fn name(&self) -> Option<&Arc<str>> {
        match self {
            Intent::Create { name } => name.as_ref(),
            Intent::Update { name, .. } | Intent::Delete { name, .. } => Some(name),
        }
    }

    fn replaced(&self) -> Option<&Version> {
        match self {
            Intent::Create { .. } => None,
            Intent::Update { replaced, .. } | Intent::Delete { replaced, .. } => Some(replaced),
        }
    }
}

/// A write in flight, from [`Written::begin`] to [`Written::finish`].
#[derive(Debug)]
pub struct Ticket(u64);

/// An object roster wrote, as the server answered.
pub type Answer = Arc<dyn Any + Send + Sync>;

struct InFlight<K> {
    key: K,
    kind: Kind,
    namespace: Arc<str>,
    intent: Intent,
    /// What the watch delivered meanwhile about the objects the write may concern.
    seen: Vec<(Arc<str>, Seen)>,
    /// The relist epoch of the kind when the write began.
    epoch: u64,
}

/// roster's last write of an object, not shown by the watch yet.
#[derive(Clone)]
enum Unshown {
    Written { obj: Answer, version: Version },
    Deleted { uid: String },
}

struct Entry<K> {
    key: K,
    unshown: Unshown,
    /// Versions the watch may still show before roster's write: old news.
    history: Vec<Version>,
    /// The chain of writes began with a create.
    created: bool,
    since: Instant,
    /// The relist epoch of the kind when the answer came.
    epoch: u64,
}

impl<K> Entry<K> {
    /// Whether `seen` shows the write, and whether it is exactly roster's own.
    fn shown_by(&self, seen: &Seen) -> (bool, bool) {
        match (&self.unshown, seen) {
            (_, Seen::Object(v)) if self.history.contains(v) => (false, false),
            (Unshown::Written { version, .. }, Seen::Object(v)) => (true, v == version),
            (Unshown::Written { version, .. }, Seen::Deleted(uid)) => (*uid == version.uid, false),
            (Unshown::Deleted { uid }, Seen::Object(v)) => (v.uid != *uid, false),
            (Unshown::Deleted { uid: deleted }, Seen::Deleted(uid)) => (uid == deleted, uid == deleted),
        }
    }

    /// Whether a list that shows `listed` (nothing: the object is not in it) shows the write;
    /// `answered_before` tells whether the write was answered before the list began.
    fn shown_by_list(&self, listed: Option<&Version>, answered_before: bool) -> bool {
        match listed {
            Some(v) => self.shown_by(&Seen::Object(v.clone())).0,
            None => match &self.unshown {
                Unshown::Written { .. } => !self.created || answered_before,
                Unshown::Deleted { .. } => true,
            },
        }
    }
}

/// The record (see the module doc). `K` is the work-queue key a write is made for.
pub struct Written<K> {
    in_flight: HashMap<u64, InFlight<K>>,
    next_ticket: u64,
    entries: HashMap<ObjectId, Entry<K>>,
    epochs: HashMap<Kind, u64>,
}

impl<K> Default for Written<K> {
    fn default() -> Self {
        Written {
            in_flight: HashMap::new(),
            next_ticket: 0,
            entries: HashMap::new(),
            epochs: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Written<K> {
    /// Notes a write about to be sent for `key`.
    pub fn begin(&mut self, key: K, kind: Kind, namespace: &str, intent: Intent) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let flight = InFlight {
            key,
            kind,
            namespace: Arc::from(namespace),
            intent,
            seen: Vec::new(),
            epoch: self.epoch(kind),
        };
        self.in_flight.insert(ticket, flight);
        Ticket(ticket)
    }

    /// Records the answer to a write: the object written (with its metadata), `None` for a delete or a write
    /// that failed. A write that `failed` (a delete of an object already gone included) or that the watch has
    /// shown already leaves no entry.
    pub fn finish(&mut self, ticket: Ticket, answer: Option<(Answer, &ObjectMeta)>, failed: bool) {
        let Some(flight) = self.in_flight.remove(&ticket.0) else {
            return;
        };
        if failed {
            return;
        }
        let (name, unshown) = match (&flight.intent, answer) {
            (Intent::Delete { name, replaced }, _) => (
                name.clone(),
                Unshown::Deleted {
                    uid: replaced.uid.clone(),
                },
            ),
            (_, Some((obj, meta))) => {
                let name = Arc::from(meta.name.as_deref().unwrap_or_default());
                (
                    name,
                    Unshown::Written {
                        obj,
                        version: Version::of(meta),
                    },
                )
            }
            (_, None) => return,
        };
        if let (Some(replaced), Unshown::Written { version, .. }) = (flight.intent.replaced(), &unshown)
            && replaced == version
        {
            return; // the server found nothing to change (#126578): nothing to wait for
        }
        let id = ObjectId {
            kind: flight.kind,
            namespace: flight.namespace.clone(),
            name: name.clone(),
        };
        let entry = self.chained(&id, flight.key.clone(), &flight.intent, unshown);
        let shown = flight
            .seen
            .iter()
            .filter(|(seen_name, _)| *seen_name == name)
            .any(|(_, seen)| entry.shown_by(seen).0);
        if shown {
            self.entries.remove(&id);
        } else {
            self.entries.insert(id, entry);
        }
    }

    /// The entry of a new write of `id`, continuing the history of roster's unshown writes before it.
    fn chained(&self, id: &ObjectId, key: K, intent: &Intent, unshown: Unshown) -> Entry<K> {
        let (mut history, created) = match self.entries.get(id) {
            Some(before) => {
                let mut history = before.history.clone();
                if let Unshown::Written { version, .. } = &before.unshown {
                    history.push(version.clone());
                }
                (history, before.created)
            }
            None => (Vec::new(), matches!(intent, Intent::Create { .. })),
        };
        history.extend(intent.replaced().cloned());
        Entry {
            key,
            unshown,
            history,
            created,
            since: Instant::now(),
            epoch: self.epoch(id.kind),
        }
    }

    /// A watch event about `id`, an object of `key` (after the cache has taken it). Returns whether it is
    /// news to reconciles: neither the echo of roster's own write nor a version older than it.
    pub fn observe(&mut self, key: &K, id: &ObjectId, seen: Seen) -> bool {
        self.note_in_flight(key, id, &seen);
        let Some(entry) = self.entries.get(id) else {
            return true;
        };
        let (shown, echo) = entry.shown_by(&seen);
        if shown {
            self.entries.remove(id);
        }
        shown && !echo
    }

    fn note_in_flight(&mut self, key: &K, id: &ObjectId, seen: &Seen) {
        for flight in self.in_flight.values_mut() {
            let concerned = flight.kind == id.kind
                && flight.namespace == id.namespace
                && match flight.intent.name() {
                    Some(name) => *name == id.name,
                    None => flight.key == *key,
                };
            if concerned {
                flight.seen.push((id.name.clone(), seen.clone()));
            }
        }
    }

    /// roster's view of `id`: its own unshown write when there is one, else what the watch shows.
    pub fn view<T: Any + Send + Sync>(&self, id: &ObjectId, cached: Option<Arc<T>>) -> Option<Arc<T>> {
        match self.entries.get(id).map(|e| &e.unshown) {
            Some(Unshown::Written { obj, .. }) => obj.clone().downcast::<T>().ok().or(cached),
            Some(Unshown::Deleted { .. }) => None,
            None => cached,
        }
    }

    /// roster's view of the objects of `kind` written for `key`, by name: `cached` with roster's unshown
    /// writes and deletes applied.
    pub fn view_all<T: Any + Send + Sync>(
        &self,
        kind: Kind,
        key: &K,
        cached: Vec<(Arc<str>, Arc<T>)>,
    ) -> Vec<Arc<T>> {
        let mut view: HashMap<Arc<str>, Arc<T>> = cached.into_iter().collect();
        let mine = self
            .entries
            .iter()
            .filter(|(id, e)| id.kind == kind && e.key == *key);
        for (id, entry) in mine {
            match &entry.unshown {
                Unshown::Written { obj, .. } => {
                    if let Ok(obj) = obj.clone().downcast::<T>() {
                        view.insert(id.name.clone(), obj);
                    }
                }
                Unshown::Deleted { .. } => {
                    view.remove(&id.name);
                }
            }
        }
        view.into_values().collect()
    }

    /// Keys with unshown writes of `kind` (a reconcile may still have to clean them up).
    pub fn keys(&self, kind: Kind) -> Vec<K> {
        self.entries
            .iter()
            .filter(|(id, _)| id.kind == kind)
            .map(|(_, e)| e.key.clone())
            .collect()
    }

    /// A relist of `kind` began: creates answered before now that its list lacks were deleted since.
    pub fn relist_began(&mut self, kind: Kind) {
        *self.epochs.entry(kind).or_default() += 1;
    }

    fn epoch(&self, kind: Kind) -> u64 {
        self.epochs.get(&kind).copied().unwrap_or_default()
    }

    /// A complete list of `kind`: `listed` gives each listed object's version (by id) and its key.
    pub fn relisted(&mut self, kind: Kind, listed: &HashMap<ObjectId, (K, Version)>) {
        for (id, (key, version)) in listed {
            self.note_in_flight(key, id, &Seen::Object(version.clone()));
        }
        self.note_deletes_in_flight(kind, listed);
        let epoch = self.epoch(kind);
        self.entries.retain(|id, entry| {
            let version = listed.get(id).map(|(_, v)| v);
            id.kind != kind || !entry.shown_by_list(version, entry.epoch < epoch)
        });
    }

    /// A delete in flight since before the relist began whose object the list lacks: the object is gone,
    /// and the watch that follows the list will not show its deletion.
    fn note_deletes_in_flight(&mut self, kind: Kind, listed: &HashMap<ObjectId, (K, Version)>) {
        let epoch = self.epoch(kind);
        let before = self
            .in_flight
            .values_mut()
            .filter(|f| f.kind == kind && f.epoch < epoch);
        for flight in before {
            let Intent::Delete { name, replaced } = &flight.intent else {
                continue;
            };
            let id = ObjectId {
                kind,
                namespace: flight.namespace.clone(),
                name: name.clone(),
            };
            if !listed.contains_key(&id) {
                let gone = Seen::Deleted(replaced.uid.clone());
                flight.seen.push((name.clone(), gone));
            }
        }
    }

    /// Drops entries older than [`UNSHOWN_TTL`].
    pub fn expire(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| now.duration_since(e.since) < UNSHOWN_TTL);
    }

    /// Entries of `kind` the watch has not shown.
    pub fn len(&self, kind: Kind) -> usize {
        self.entries.keys().filter(|id| id.kind == kind).count()
    }
}

#[cfg(test)]
#[path = "written_tests.rs"]
mod tests;
