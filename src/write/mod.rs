//! The only module that writes to the API server: Endpoints, EndpointSlices, BackendSet status and Events.
//!
//! Callers decide *what* to write by comparing desired with current state (an identical object is never
//! sent); the writer makes sure every write is made by the leader only, within the write budget, with
//! optimistic concurrency (the resourceVersion of the object it replaces), and is counted.

mod budget;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{Endpoints, ObjectReference};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

pub use budget::WriteBudget;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The field manager roster's writes are attributed to.
pub const FIELD_MANAGER: &str = "roster";

/// Whether this replica may write: set by leader election (always true without it).
#[derive(Clone, Default)]
pub struct LeaderFlag(Arc<AtomicBool>);

impl LeaderFlag {
    pub fn new(leader: bool) -> LeaderFlag {
        LeaderFlag(Arc::new(AtomicBool::new(leader)))
    }

    pub fn set(&self, leader: bool) {
        self.0.store(leader, Ordering::SeqCst);
    }

    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct Writer {
    client: Client,
    budget: WriteBudget,
    metrics: Metrics,
    leader: LeaderFlag,
    recorder: Recorder,
}

impl Writer {
    pub fn new(
        client: Client,
        budget: WriteBudget,
        metrics: Metrics,
        leader: LeaderFlag,
        instance: String,
    ) -> Writer {
        let reporter = Reporter {
            controller: "roster".into(),
            instance: Some(instance),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Writer {
            client,
            budget,
            metrics,
            leader,
            recorder,
        }
    }

    pub fn leader(&self) -> &LeaderFlag {
        &self.leader
    }

    pub async fn create_endpoints(&self, ep: &Endpoints) -> Result<Endpoints> {
        let api = Api::<Endpoints>::namespaced(self.client.clone(), &ns_of(ep));
        self.write(
            "endpoints",
            "create",
            &ep.name_any(),
            api.create(&post_params(), ep),
        )
        .await
    }

    /// Replaces `ep`, conditional on its `metadata.resourceVersion`.
    pub async fn replace_endpoints(&self, ep: &Endpoints) -> Result<Endpoints> {
        let api = Api::<Endpoints>::namespaced(self.client.clone(), &ns_of(ep));
        self.write(
            "endpoints",
            "update",
            &ep.name_any(),
            api.replace(&ep.name_any(), &post_params(), ep),
        )
        .await
    }

    /// Deletes `ep` if it is still the object roster saw (uid and resourceVersion preconditions).
    pub async fn delete_endpoints(&self, ep: &Endpoints) -> Result<()> {
        let api = Api::<Endpoints>::namespaced(self.client.clone(), &ns_of(ep));
        let name = ep.name_any();
        let params = delete_params(ep);
        ignore_not_found(
            self.write("endpoints", "delete", &name, api.delete(&name, &params))
                .await
                .map(|_| ()),
        )
    }

    pub async fn create_slice(&self, slice: &EndpointSlice) -> Result<EndpointSlice> {
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), &ns_of(slice));
        let what = slice
            .metadata
            .generate_name
            .clone()
            .unwrap_or_else(|| slice.name_any());
        self.write(
            "endpointslices",
            "create",
            &what,
            api.create(&post_params(), slice),
        )
        .await
    }

    pub async fn replace_slice(&self, slice: &EndpointSlice) -> Result<EndpointSlice> {
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), &ns_of(slice));
        let name = slice.name_any();
        self.write(
            "endpointslices",
            "update",
            &name,
            api.replace(&name, &post_params(), slice),
        )
        .await
    }

    pub async fn delete_slice(&self, slice: &EndpointSlice) -> Result<()> {
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), &ns_of(slice));
        let name = slice.name_any();
        let params = delete_params(slice);
        ignore_not_found(
            self.write("endpointslices", "delete", &name, api.delete(&name, &params))
                .await
                .map(|_| ()),
        )
    }

    /// Writes a BackendSet's status (merge patch on the status subresource).
    pub async fn patch_backendset_status(
        &self,
        namespace: &str,
        name: &str,
        status: &crate::backendset::BackendSetStatus,
    ) -> Result<()> {
        let api = Api::<crate::backendset::BackendSet>::namespaced(self.client.clone(), namespace);
        let patch = kube::api::Patch::Merge(serde_json::json!({ "status": status }));
        let params = kube::api::PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let call = api.patch_status(name, &params, &patch);
        self.write("backendsets/status", "patch", name, call)
            .await
            .map(|_| ())
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
        if !self.leader.is_leader() {
            return;
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        self.budget.acquire().await;
        self.metrics
            .api_writes
            .with_label_values(&["events", "create"])
            .inc();
        if let Err(err) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%err, reason, "could not publish an Event");
        }
    }

    async fn write<T>(
        &self,
        resource: &str,
        verb: &str,
        name: &str,
        call: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        if !self.leader.is_leader() {
            return Err(Error::NotLeader);
        }
        self.budget.acquire().await;
        if !self.leader.is_leader() {
            return Err(Error::NotLeader);
        }
        self.metrics.api_writes.with_label_values(&[resource, verb]).inc();
        let result = call
            .await
            .map_err(|e| Error::from_kube(e, format!("{resource} {name}")));
        if let Err(Error::Conflict { .. }) = &result {
            self.metrics.conflicts.with_label_values(&[resource]).inc();
        }
        result
    }
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

fn ns_of<K: Resource>(obj: &K) -> String {
    obj.meta().namespace.clone().unwrap_or_else(|| "default".into())
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
