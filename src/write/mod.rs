//! The only module that writes to the API server: Endpoints, EndpointSlices, BackendSet status and Events.
//!
//! Callers decide *what* to write by comparing desired with current state (an identical object is never
//! sent); the writer makes sure every write is made by the leader only, within the write budget, with
//! optimistic concurrency (the resourceVersion of the object it replaces), is counted, and is recorded in
//! [`Written`] until the watch shows it, so that the key it was made for waits for the watch meanwhile.
//!
//! A write that has to wait for the budget is not made with what was decided before the wait: the writer
//! waits, keeps the token for the key and answers [`Error::Recompute`], and the worker computes the key
//! again from the newest state, so that every change that arrived meanwhile goes into the one write the
//! token pays for.

mod budget;
mod events;
mod leadership;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Endpoints, ObjectReference};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use budget::{Mode as BudgetMode, Signal, WriteBudget};
pub use events::{EventType, EventWriter, Notice};
pub use leadership::{Gains, Leadership};

use crate::backendset::BackendSet;
use crate::cache::ObjectKey;
use crate::cache::written::{Answer, Intent, Kind, ObjectId, Seen, Version, Written};
use crate::controller::queue::WorkKey;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The field manager roster's writes are attributed to.
pub const FIELD_MANAGER: &str = "roster";

/// A kind roster writes, with the watch its writes are confirmed by.
pub trait Recorded:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
}

impl Recorded for Endpoints {
    const KIND: Kind = Kind::Endpoints;
}

impl Recorded for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;
}

impl Recorded for BackendSet {
    const KIND: Kind = Kind::BackendSet;
}

pub struct Writer {
    client: Client,
    budget: Arc<WriteBudget>,
    /// Keys holding a token they waited for, for their next write.
    prepaid: Mutex<HashSet<WorkKey>>,
    metrics: Metrics,
    leadership: Leadership,
    events: EventWriter,
    written: Mutex<Written<WorkKey>>,
    /// Writes made and failed since start, for the periodic summary.
    activity: Mutex<(u64, u64)>,
}

impl Writer {
    pub fn new(
        client: Client,
        budget: Arc<WriteBudget>,
        metrics: Metrics,
        leadership: Leadership,
        instance: String,
    ) -> Writer {
        let events = EventWriter::new(client.clone(), "roster", instance);
        Writer {
            client,
            budget,
            prepaid: Mutex::default(),
            metrics,
            leadership,
            events,
            written: Mutex::new(Written::default()),
            activity: Mutex::new((0, 0)),
        }
    }

    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    pub fn budget(&self) -> &WriteBudget {
        &self.budget
    }

    /// The key's work is done: a token it waited for and did not spend goes back to the budget.
    pub fn settle(&self, key: &WorkKey) {
        if self.prepaid.lock().expect("prepaid lock").remove(key) {
            self.budget.give_back();
        }
    }

    /// Admits a write for `key`: the leader's only, paid for by the budget. A write that had to wait for its
    /// token is [`Error::Recompute`]: the key is computed again, with the token kept for its first write.
    async fn admit(&self, key: &WorkKey) -> Result<()> {
        if !self.leadership.is_leader() {
            return Err(Error::NotLeader);
        }
        if self.prepaid.lock().expect("prepaid lock").remove(key) || self.budget.try_acquire() {
            return Ok(());
        }
        self.budget.acquire().await;
        self.prepaid.lock().expect("prepaid lock").insert(key.clone());
        Err(Error::Recompute)
    }

    fn written(&self) -> std::sync::MutexGuard<'_, Written<WorkKey>> {
        self.written.lock().expect("written lock")
    }

    // ---- the record of roster's own writes ----

    /// roster's view of `key`'s object of kind `K`: its own unshown write, else `cached`.
    pub fn view<K: Recorded>(&self, key: &ObjectKey, cached: Option<Arc<K>>) -> Option<Arc<K>> {
        let id = ObjectId {
            kind: K::KIND,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        };
        self.written().view(&id, cached)
    }

    /// roster's view of the objects of kind `K` it writes for `work`: `cached` with its unshown writes.
    pub fn view_all<K: Recorded>(&self, work: &WorkKey, cached: Vec<Arc<K>>) -> Vec<Arc<K>> {
        let named = cached.into_iter().map(|o| (Arc::from(o.name_any()), o)).collect();
        self.written().view_all(K::KIND, work, named)
    }

    /// Keys with writes of `kind` the watch has not shown.
    pub fn unshown_keys(&self, kind: Kind) -> Vec<WorkKey> {
        self.written().keys(kind)
    }

    /// A watch event about `id`, an object of `key`: `key` when reconciles must look again.
    pub fn observe(&self, key: WorkKey, id: &ObjectId, seen: Seen) -> Option<WorkKey> {
        self.written().observe(&key, id, seen).then_some(key)
    }

    pub fn relist_began(&self, kind: Kind) {
        self.written().relist_began(kind);
    }

    pub fn relisted(&self, kind: Kind, listed: &HashMap<ObjectId, (WorkKey, Version)>) {
        self.written().relisted(kind, listed);
    }

    /// Drops writes the watches never showed (see [`crate::cache::written::UNSHOWN_TTL`]).
    pub fn expire_unshown(&self, now: Instant) {
        self.written().expire(now);
    }

    pub fn unshown(&self, kind: Kind) -> usize {
        self.written().len(kind)
    }

    fn count(&self, ok: bool) {
        let mut activity = self.activity.lock().expect("activity lock");
        activity.0 += 1;
        activity.1 += u64::from(!ok);
    }

    /// Writes made and failed since start.
    pub fn activity(&self) -> (u64, u64) {
        *self.activity.lock().expect("activity lock")
    }

    // ---- writes ----

    /// Creates `obj` for `key`; `why` says what changed, for the logs.
    pub async fn create<K: Recorded>(&self, key: &WorkKey, obj: &K, why: &str) -> Result<()> {
        self.admit(key).await?;
        let api = api::<K>(&self.client, obj);
        let name = obj.meta().name.as_deref().map(Into::into);
        let what = obj.meta().generate_name.clone().unwrap_or_else(|| obj.name_any());
        let intent = Intent::Create { name };
        let params = post_params();
        let call = api.create(&params, obj);
        self.recorded(
            key,
            obj,
            intent,
            self.write::<K, _>(key, "create", &what, why, call),
        )
        .await
    }

    /// Replaces `obj`, conditional on its `metadata.resourceVersion`.
    pub async fn replace<K: Recorded>(&self, key: &WorkKey, obj: &K, why: &str) -> Result<()> {
        self.admit(key).await?;
        let api = api::<K>(&self.client, obj);
        let name = obj.name_any();
        let intent = Intent::Update {
            name: name.as_str().into(),
            replaced: Version::of(obj.meta()),
        };
        let params = post_params();
        let call = api.replace(&name, &params, obj);
        self.recorded(
            key,
            obj,
            intent,
            self.write::<K, _>(key, "update", &name, why, call),
        )
        .await
    }

    /// Deletes `obj` if it is still the object roster saw (uid and resourceVersion preconditions); an
    /// object already gone is fine, and leaves nothing to wait for: someone else deleted it, and the watch
    /// may have shown that before this write began.
    pub async fn delete<K: Recorded>(&self, key: &WorkKey, obj: &K, why: &str) -> Result<()> {
        self.admit(key).await?;
        let api = api::<K>(&self.client, obj);
        let name = obj.name_any();
        let intent = Intent::Delete {
            name: name.as_str().into(),
            replaced: Version::of(obj.meta()),
        };
        let ticket = self.begin::<K>(key, obj, intent);
        let result = self
            .write::<K, _>(key, "delete", &name, why, api.delete(&name, &delete_params(obj)))
            .await;
        let result = result.map(|_| ());
        self.written().finish(ticket, None, result.is_err());
        ignore_not_found(result)
    }

    /// Merge-patches the status of `obj` (the cached version it replaces) with `status`.
    pub async fn patch_status<K: Recorded>(
        &self,
        key: &WorkKey,
        obj: &K,
        status: &impl Serialize,
        why: &str,
    ) -> Result<()> {
        self.admit(key).await?;
        let api = api::<K>(&self.client, obj);
        let name = obj.name_any();
        let intent = Intent::Update {
            name: name.as_str().into(),
            replaced: Version::of(obj.meta()),
        };
        let patch = Patch::Merge(serde_json::json!({ "status": status }));
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let call = api.patch_status(&name, &params, &patch);
        let what = format!("{name} status");
        self.recorded(
            key,
            obj,
            intent,
            self.write::<K, _>(key, "patch", &what, why, call),
        )
        .await
    }

    fn begin<K: Recorded>(&self, key: &WorkKey, obj: &K, intent: Intent) -> crate::cache::written::Ticket {
        let namespace = obj.namespace().unwrap_or_default();
        self.written().begin(key.clone(), K::KIND, &namespace, intent)
    }

    /// Runs a write between [`Written::begin`] and [`Written::finish`], which records the answer.
    async fn recorded<K: Recorded>(
        &self,
        key: &WorkKey,
        obj: &K,
        intent: Intent,
        write: impl Future<Output = Result<K>>,
    ) -> Result<()> {
        let ticket = self.begin(key, obj, intent);
        match write.await {
            Ok(answer) => {
                let meta = answer.meta().clone();
                let answer: Answer = Arc::new(answer);
                self.written().finish(ticket, Some((answer, &meta)), false);
                Ok(())
            }
            Err(err) => {
                self.written().finish(ticket, None, true);
                Err(err)
            }
        }
    }

    /// Publishes a Warning Event about `regarding` (best effort: a failure is logged, never retried).
    pub async fn warn(&self, regarding: &ObjectReference, reason: &str, action: &str, note: String) {
        self.event(regarding, EventType::Warning, reason, action, note)
            .await;
    }

    pub async fn normal(&self, regarding: &ObjectReference, reason: &str, action: &str, note: String) {
        self.event(regarding, EventType::Normal, reason, action, note)
            .await;
    }

    async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if !self.leadership.is_leader() {
            return;
        }
        self.budget.acquire().await;
        let notice = Notice {
            type_,
            reason,
            action,
            note,
        };
        let (verb, result) = self.events.publish(regarding, notice).await;
        let outcome = if result.is_ok() { "success" } else { "error" };
        let writes = &self.metrics.api.writes;
        writes.with_label_values(&["events", verb, outcome]).inc();
        if let Err(err) = result {
            tracing::warn!(%err, reason, "could not publish an Event");
        }
    }

    /// One admitted write, counted by outcome and logged with `why`.
    async fn write<K: Recorded, T>(
        &self,
        key: &WorkKey,
        verb: &str,
        name: &str,
        why: &str,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        let resource = K::plural(&());
        let result = call
            .await
            .map_err(|e| Error::from_kube(e, format!("{resource} {name}")));
        let outcome = result.as_ref().map_or_else(Error::kind, |_| "success");
        self.count(result.is_ok());
        let writes = &self.metrics.api.writes;
        writes.with_label_values(&[&resource, verb, outcome]).inc();
        tracing::debug!(%key, %resource, verb, name, why, outcome, "write");
        result
    }
}

fn api<K: Recorded>(client: &Client, obj: &K) -> Api<K> {
    let namespace = obj.namespace().unwrap_or_else(|| "default".into());
    Api::namespaced(client.clone(), &namespace)
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    }
}

fn delete_params<K: Resource>(obj: &K) -> DeleteParams {
    let meta = obj.meta();
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }),
        ..DeleteParams::default()
    }
}

fn ignore_not_found(result: Result<()>) -> Result<()> {
    match result {
        Err(Error::Api(kube::Error::Api(s))) if s.code == 404 => Ok(()),
        other => other,
    }
}

/// An ObjectReference to `obj`, for Events.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}
