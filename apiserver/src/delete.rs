//! Deletion: preconditions, finalizers, graceful pod deletion, namespace termination and CRD removal.

use std::sync::Arc;

use serde_json::{Value, json};

use super::builtin::child;
use super::crd;
use super::error::StatusError;
use super::registry::{Behaviour, ResourceType};
use super::state::{State, meta_str};
use super::store::ObjRef;

/// DeleteOptions from the query and the body.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub propagation: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body over the query's values.
    pub fn merge_body(&mut self, body: &Value) {
        if let Some(g) = body["gracePeriodSeconds"].as_i64() {
            self.grace_period = Some(g);
        }
        if let Some(uid) = body["preconditions"]["uid"].as_str() {
            self.uid = Some(uid.into());
        }
        if let Some(rv) = body["preconditions"]["resourceVersion"].as_str() {
            self.resource_version = Some(rv.into());
        }
        if let Some(p) = body["propagationPolicy"].as_str() {
            self.propagation = Some(p.into());
        }
        match body["orphanDependents"].as_bool() {
            Some(true) => self.propagation = Some("Orphan".into()),
            Some(false) if self.propagation.is_none() => self.propagation = Some("Background".into()),
            _ => {}
        }
        if body["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d == "All"))
        {
            self.dry_run = true;
        }
    }
}

/// What a delete did.
pub(crate) enum Deleted {
    /// Removed; the object as it was.
    Gone(ObjRef),
    /// Marked for deletion (finalizers or a grace period); the object now.
    Pending(ObjRef),
    /// A namespace started terminating: its content goes after a short while.
    Terminating(ObjRef),
}

impl Deleted {
    pub fn object(&self) -> &ObjRef {
        match self {
            Deleted::Gone(o) | Deleted::Pending(o) | Deleted::Terminating(o) => o,
        }
    }
}

fn check_preconditions(
    rt: &ResourceType,
    name: &str,
    v: &Value,
    opts: &DeleteOptions,
) -> Result<(), StatusError> {
    let uid = meta_str(v, "uid");
    if let Some(want) = opts.uid.as_deref().filter(|u| !u.is_empty() && *u != uid) {
        let why = format!(
            "the UID in the precondition ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
        );
        return Err(StatusError::conflict(rt, name, &why));
    }
    let rv = meta_str(v, "resourceVersion");
    if let Some(want) = opts
        .resource_version
        .as_deref()
        .filter(|r| !r.is_empty() && *r != rv)
    {
        let why = format!(
            "the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({rv}). The object might have been modified"
        );
        return Err(StatusError::conflict(rt, name, &why));
    }
    Ok(())
}

/// A pod's grace period: none when unbound or finished, else the request's, the spec's, or 30 s.
fn pod_grace_period(v: &Value, requested: Option<i64>) -> i64 {
    let unbound = v["spec"]["nodeName"].as_str().unwrap_or("").is_empty();
    let finished = matches!(v["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if unbound || finished {
        return 0;
    }
    let grace = requested
        .or_else(|| v["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    grace.max(0)
}

fn add_finalizer(v: &mut Value, finalizer: &str) {
    let meta = child(v, "metadata");
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(items) = list.as_array_mut()
        && !items.iter().any(|f| f == finalizer)
    {
        items.push(json!(finalizer));
    }
}

fn has_finalizers(v: &Value) -> bool {
    v["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

fn mark_deleting(v: &mut Value, grace: i64) {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
    let meta = child(v, "metadata");
    meta.insert(
        "deletionTimestamp".into(),
        json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    );
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
}

impl State {
    pub fn delete(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, StatusError> {
        let key = rt.key(ns, name);
        let current = self.get(rt, ns, name)?;
        let mut v = current.value();
        check_preconditions(rt, name, &v, opts)?;
        if opts.dry_run {
            return Ok(Deleted::Gone(current));
        }
        match rt.behaviour {
            Behaviour::Namespace => return Ok(self.terminate_namespace(rt, &key, current, v)),
            Behaviour::Crd => {
                crd::unregister(self, &v);
                self.commit_delete(rt, &key, v);
                return Ok(Deleted::Gone(current));
            }
            _ => {}
        }
        let deleting = !v["metadata"]["deletionTimestamp"].is_null();
        let grace = if rt.behaviour == Behaviour::Pod {
            pod_grace_period(&v, opts.grace_period)
        } else {
            0
        };
        if !deleting {
            match opts.propagation.as_deref() {
                Some("Orphan") => add_finalizer(&mut v, "orphan"),
                Some("Foreground") => add_finalizer(&mut v, "foregroundDeletion"),
                _ => {}
            }
        }
        if !has_finalizers(&v) && grace == 0 {
            if rt.behaviour != Behaviour::Pod {
                self.commit_delete(rt, &key, v);
                return Ok(Deleted::Gone(current));
            }
            // Pods are deleted gracefully even with no grace: a MODIFIED with the deletion stamp first.
            mark_deleting(&mut v, 0);
            let stamped = self.commit(rt, &key, &mut v);
            self.commit_delete(rt, &key, v);
            return Ok(Deleted::Gone(stamped));
        }
        let pending_grace = v["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
        if deleting && grace >= pending_grace {
            return Ok(Deleted::Pending(current));
        }
        mark_deleting(&mut v, grace);
        Ok(Deleted::Pending(self.commit(rt, &key, &mut v)))
    }

    fn terminate_namespace(
        &mut self,
        rt: &ResourceType,
        key: &str,
        current: ObjRef,
        mut v: Value,
    ) -> Deleted {
        if !v["metadata"]["deletionTimestamp"].is_null() {
            return Deleted::Terminating(current);
        }
        mark_deleting(&mut v, 0);
        child(&mut v, "status").insert("phase".into(), json!("Terminating"));
        Deleted::Terminating(self.commit(rt, key, &mut v))
    }

    /// The namespace controller's work, all at once: removes every object in `ns`, then `ns` itself.
    pub fn finish_namespace(&mut self, ns: &str) {
        let types: Vec<Arc<ResourceType>> = self.registry.all().filter(|rt| rt.namespaced).cloned().collect();
        for key in self.store.keys_in_namespace(ns) {
            let Some(rt) = types.iter().find(|rt| key.starts_with(&rt.storage)) else {
                continue;
            };
            if let Some(obj) = self.store.get(&key).cloned() {
                self.commit_delete(&rt.clone(), &key, obj.value());
            }
        }
        let namespaces = self.registry.builtin("", "namespaces");
        let key = namespaces.key("", ns);
        if let Some(obj) = self.store.get(&key).cloned() {
            self.commit_delete(&namespaces, &key, obj.value());
        }
    }
}
