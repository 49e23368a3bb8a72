//! The MVCC store: objects as compact JSON bytes keyed like etcd, one global revision, and a bounded
//! event log that feeds watches and lets lists read a past revision.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;

/// One stored object version: its JSON plus the metadata selectors need.
#[derive(Debug)]
pub(crate) struct Obj {
    pub json: Bytes,
    pub rv: u64,
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub labels: Box<[(Box<str>, Box<str>)]>,
    /// Field-selector values, by label (`spec.nodeName`, ...).
    pub fields: Box<[(&'static str, Box<str>)]>,
}

pub(crate) type ObjRef = Arc<Obj>;

/// Sets `metadata.resourceVersion` to `rv`.
pub(crate) fn stamp_rv(value: &mut Value, rv: u64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, p| v.get(*p))
}

/// A field-selector value: strings as they are, booleans and numbers as text, absent as `""` (a
/// missing boolean as `false`).
fn field_value(value: &Value, label: &str) -> Box<str> {
    let path: Vec<&str> = label.split('.').collect();
    let found = str_at(value, &path).or_else(|| match label {
        "source" => str_at(value, &["source", "component"]),
        _ => None,
    });
    match found {
        Some(Value::String(s)) => s.as_str().into(),
        Some(Value::Bool(b)) => b.to_string().into(),
        Some(Value::Number(n)) => n.to_string().into(),
        Some(Value::Object(o)) if label == "source" => {
            o.get("component").and_then(Value::as_str).unwrap_or("").into()
        }
        None if label == "spec.unschedulable" || label == "spec.hostNetwork" => "false".into(),
        _ => "".into(),
    }
}

/// The JSON of `value` in an allocation of exactly its size (a growing Vec may hold twice as much).
fn compact_json(value: &Value) -> Bytes {
    let mut json = serde_json::to_vec(value).expect("JSON values serialize");
    json.shrink_to_fit();
    Bytes::from(json)
}

impl Obj {
    /// Serializes `value` (whose resourceVersion is already `rv`) and extracts its selector fields.
    pub fn new(value: &Value, rv: u64, fields: &'static [&'static str]) -> Obj {
        let meta = &value["metadata"];
        let text = |k: &str| -> Box<str> { meta.get(k).and_then(Value::as_str).unwrap_or("").into() };
        let labels = meta
            .get("labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.as_str().into(), v.as_str().unwrap_or("").into()))
                    .collect()
            })
            .unwrap_or_default();
        Obj {
            json: compact_json(value),
            rv,
            namespace: text("namespace"),
            name: text("name"),
            labels,
            fields: fields.iter().map(|f| (*f, field_value(value, f))).collect(),
        }
    }

    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).expect("stored objects are JSON")
    }

    pub fn field(&self, label: &str) -> Option<&str> {
        match label {
            "metadata.name" => Some(&self.name),
            "metadata.namespace" => Some(&self.namespace),
            _ => self.fields.iter().find(|(f, _)| *f == label).map(|(_, v)| &**v),
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One write: the new object (for a deletion, the last state stamped with the deletion revision) and the
/// object before it.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub key: Box<str>,
    pub object: ObjRef,
    pub prev: Option<ObjRef>,
}

/// A revision older than the compaction floor was asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Compacted {
    pub floor: u64,
}

pub(crate) struct Store {
    objects: BTreeMap<Box<str>, ObjRef>,
    revision: u64,
    log: VecDeque<Arc<Event>>,
    /// Watches and exact reads may start at any revision at or above the floor.
    floor: u64,
    history: usize,
    revision_tx: watch::Sender<u64>,
}

impl Store {
    pub fn new(history: usize) -> Store {
        let (revision_tx, _) = watch::channel(1);
        Store {
            objects: BTreeMap::new(),
            revision: 1,
            log: VecDeque::new(),
            floor: 1,
            history,
            revision_tx,
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn next_revision(&self) -> u64 {
        self.revision + 1
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }

    pub fn get(&self, key: &str) -> Option<&ObjRef> {
        self.objects.get(key)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Objects whose key starts with `prefix`, in key order.
    pub fn range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a Box<str>, &'a ObjRef)> + 'a {
        self.objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Stores `obj` (stamped with [`Store::next_revision`]) under `key`: ADDED or MODIFIED.
    pub fn put(&mut self, key: &str, obj: Obj) -> ObjRef {
        debug_assert_eq!(obj.rv, self.next_revision());
        let obj = Arc::new(obj);
        let prev = self.objects.insert(key.into(), obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(kind, key, obj.clone(), prev);
        obj
    }

    /// Removes `key`; `tombstone` is its last state stamped with [`Store::next_revision`].
    pub fn remove(&mut self, key: &str, tombstone: Obj) -> ObjRef {
        debug_assert_eq!(tombstone.rv, self.next_revision());
        let tombstone = Arc::new(tombstone);
        let prev = self.objects.remove(key);
        self.record(EventType::Deleted, key, tombstone.clone(), prev);
        tombstone
    }

    fn record(&mut self, kind: EventType, key: &str, object: ObjRef, prev: Option<ObjRef>) {
        self.revision = object.rv;
        self.log.push_back(Arc::new(Event {
            rv: object.rv,
            kind,
            key: key.into(),
            object,
            prev,
        }));
        while self.log.len() > self.history {
            if let Some(old) = self.log.pop_front() {
                self.floor = old.rv;
            }
        }
        self.revision_tx.send_replace(self.revision);
    }

    /// Drops all history: only the current revision can be watched from or read exactly.
    pub fn compact(&mut self) {
        self.log.clear();
        self.floor = self.revision;
    }

    /// The events after `rv`, or the floor when some of them were compacted.
    pub fn events_after(&self, rv: u64) -> Result<Vec<Arc<Event>>, Compacted> {
        if rv < self.floor {
            return Err(Compacted { floor: self.floor });
        }
        let start = self.log.partition_point(|e| e.rv <= rv);
        Ok(self.log.range(start..).cloned().collect())
    }

    /// The objects under `prefix` as they were at revision `rv`, rebuilt by undoing later events.
    pub fn at_revision(&self, prefix: &str, rv: u64) -> Result<BTreeMap<Box<str>, ObjRef>, Compacted> {
        if rv < self.floor {
            return Err(Compacted { floor: self.floor });
        }
        let mut state: BTreeMap<Box<str>, ObjRef> =
            self.range(prefix).map(|(k, v)| (k.clone(), v.clone())).collect();
        for event in self.log.iter().rev().take_while(|e| e.rv > rv) {
            if !event.key.starts_with(prefix) {
                continue;
            }
            match (&event.kind, &event.prev) {
                (EventType::Added, _) | (_, None) => state.remove(&event.key),
                (_, Some(prev)) => state.insert(event.key.clone(), prev.clone()),
            };
        }
        Ok(state)
    }

    /// Every key in namespace `ns`, across all types.
    pub fn keys_in_namespace(&self, ns: &str) -> Vec<Box<str>> {
        self.objects
            .iter()
            .filter(|(_, o)| &*o.namespace == ns)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, rv: u64, v: i64) -> Obj {
        let mut value = json!({"metadata": {"name": name, "namespace": "d"}, "data": v});
        stamp_rv(&mut value, rv);
        Obj::new(&value, rv, &[])
    }

    #[test]
    fn history_rebuilds_past_revisions() {
        let mut s = Store::new(10);
        s.put("/x/d/a", obj("a", 2, 1));
        s.put("/x/d/b", obj("b", 3, 1));
        s.put("/x/d/a", obj("a", 4, 2));
        s.remove("/x/d/b", obj("b", 5, 1));
        let at3 = s.at_revision("/x/", 3).unwrap();
        assert_eq!(at3.len(), 2);
        assert_eq!(at3["/x/d/a"].rv, 2);
        let at5 = s.at_revision("/x/", 5).unwrap();
        assert_eq!(at5.len(), 1);
        assert_eq!(s.events_after(3).unwrap().len(), 2);
    }

    #[test]
    fn bounded_history_raises_the_floor() {
        let mut s = Store::new(2);
        for rv in 2..6 {
            s.put("/x/d/a", obj("a", rv, rv as i64));
        }
        assert_eq!(s.floor(), 3);
        assert_eq!(s.events_after(2).unwrap_err(), Compacted { floor: 3 });
        assert_eq!(s.events_after(3).unwrap().len(), 2);
        s.compact();
        assert!(s.events_after(4).is_err());
        assert!(s.events_after(5).unwrap().is_empty());
    }
}
