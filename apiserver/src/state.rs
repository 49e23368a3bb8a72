//! The server state behind one lock, and the create and update pipelines every write goes through.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::builtin::{apply_defaults, child, initial_status, normalize};
use super::convert::{to_storage, to_view};
use super::error::{Cause, StatusError};
use super::ipalloc::{ClusterIps, NodePorts};
use super::list::ContinueTokens;
use super::registry::{Behaviour, Registry, ResourceType};
use super::store::{Obj, ObjRef, Store, stamp_rv};
use super::{MemoryOptions, apply, crd, services, validate};

#[derive(Clone, Debug, Default)]
pub(crate) struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub force: bool,
}

/// The result of an update: the object now stored, and whether the write changed anything.
pub(crate) struct Written {
    pub obj: ObjRef,
    pub changed: bool,
    pub created: bool,
}

pub(crate) struct State {
    pub store: Store,
    pub registry: Registry,
    pub continues: ContinueTokens,
    pub cluster_ips: ClusterIps,
    pub node_ports: NodePorts,
}

pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(crate) fn meta_str<'a>(v: &'a Value, key: &str) -> &'a str {
    v["metadata"][key].as_str().unwrap_or("")
}

/// `generateName` suffix: five characters of upstream's alphabet (no vowels, no confusable digits).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn metadata(v: &mut Value) -> &mut Map<String, Value> {
    child(v, "metadata")
}

/// Fills in or checks `kind` and `apiVersion`.
fn check_type_meta(rt: &ResourceType, v: &mut Value) -> Result<(), StatusError> {
    let Some(map) = v.as_object_mut() else {
        return Err(StatusError::bad_request(
            "the body of the request must be a JSON object",
        ));
    };
    let api_version = rt.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(av)
            if av != api_version && !(rt.behaviour == Behaviour::Custom && av.starts_with(&rt.group)) =>
        {
            return Err(StatusError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({api_version})"
            )));
        }
        Some(_) => {}
        None => {
            map.insert("apiVersion".into(), Value::from(api_version));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != rt.kind => Err(StatusError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            rt.kind
        ))),
        Some(_) => Ok(()),
        None => {
            map.insert("kind".into(), Value::from(rt.kind.clone()));
            Ok(())
        }
    }
}

/// Sets or checks the object's namespace against the URL's.
fn check_namespace(rt: &ResourceType, ns: &str, v: &mut Value) -> Result<(), StatusError> {
    let meta = metadata(v);
    if !rt.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    match meta.get("namespace").and_then(Value::as_str) {
        Some(body_ns) if !body_ns.is_empty() && body_ns != ns => Err(StatusError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), Value::from(ns));
            Ok(())
        }
    }
}

const SYSTEM_FIELDS: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

/// Everything outside metadata and status, which is what `generation` tracks.
fn spec_part(v: &Value) -> Map<String, Value> {
    let mut m = v.as_object().cloned().unwrap_or_default();
    for k in ["metadata", "status", "apiVersion", "kind"] {
        m.remove(k);
    }
    m
}

/// Keeps `.status` out of main-resource writes, and everything but `.status` out of status writes.
fn split_status(rt: &ResourceType, status_write: bool, old: &Value, new: Value) -> Value {
    if !rt.status {
        return new;
    }
    let (mut base, status) = if status_write {
        (old.clone(), new.get("status").cloned())
    } else {
        (new, old.get("status").cloned())
    };
    let map = base.as_object_mut().expect("objects");
    match status {
        Some(s) => map.insert("status".into(), s),
        None => map.remove("status"),
    };
    base
}

/// The update's preconditions: a resourceVersion or uid in the body must match the stored object.
fn check_preconditions(rt: &ResourceType, name: &str, new: &Value, old: &Value) -> Result<(), StatusError> {
    let rv = meta_str(new, "resourceVersion");
    if !rv.is_empty() && rv != meta_str(old, "resourceVersion") {
        return Err(StatusError::modified(rt, name));
    }
    let uid = meta_str(new, "uid");
    if !uid.is_empty() && uid != meta_str(old, "uid") {
        let why = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta_str(old, "uid")
        );
        return Err(StatusError::conflict(rt, name, &why));
    }
    Ok(())
}

fn carry_system_fields(old: &Value, new: &mut Value) {
    let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
    let meta = metadata(new);
    for key in SYSTEM_FIELDS.iter().chain(&["resourceVersion"]) {
        match old_meta.get(*key) {
            Some(v) => meta.insert(key.to_string(), v.clone()),
            None => meta.remove(*key),
        };
    }
    for key in ["generateName", "managedFields"] {
        if let (None, Some(v)) = (meta.get(key), old_meta.get(key)) {
            meta.insert(key.into(), v.clone());
        }
    }
}

fn finalizers(v: &Value) -> Vec<String> {
    v["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn check_new_finalizers(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    if old["metadata"]["deletionTimestamp"].is_null() {
        return;
    }
    let before = finalizers(old);
    let added: Vec<String> = finalizers(new)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if !added.is_empty() {
        let list = added
            .iter()
            .map(|f| format!("{f:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        causes.push(Cause::forbidden(
            "metadata.finalizers",
            format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"),
        ));
    }
}

/// A deleting object with no finalizers left and no grace period pending is removed by the update.
fn finished_deleting(v: &Value) -> bool {
    !v["metadata"]["deletionTimestamp"].is_null()
        && finalizers(v).is_empty()
        && v["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) == 0
}

impl State {
    pub fn new(opts: &MemoryOptions) -> State {
        let mut state = State {
            store: Store::new(opts.watch_history.max(1)),
            registry: Registry::new(),
            continues: ContinueTokens::new(opts.continue_ttl),
            cluster_ips: ClusterIps::new(&opts.service_cidr),
            node_ports: NodePorts::default(),
        };
        let namespaces = state.registry.builtin("", "namespaces");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            state
                .create(&namespaces, "", body, &WriteOptions::default())
                .expect("default namespaces");
        }
        let services = state.registry.builtin("", "services");
        let kubernetes = json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
        state
            .create(&services, "default", kubernetes, &WriteOptions::default())
            .expect("the kubernetes Service");
        state
    }

    /// Stores `v` (stored form) as the next revision.
    pub fn commit(&mut self, rt: &ResourceType, key: &str, v: &mut Value) -> ObjRef {
        let rv = self.store.next_revision();
        stamp_rv(v, rv);
        self.store.put(key, Obj::new(v, rv, rt.fields))
    }

    /// Removes `key`, whose last state is `last`; releases what a Service held.
    pub fn commit_delete(&mut self, rt: &ResourceType, key: &str, mut last: Value) -> ObjRef {
        if rt.behaviour == Behaviour::Service {
            services::release(self, &last);
        }
        let rv = self.store.next_revision();
        stamp_rv(&mut last, rv);
        self.store.remove(key, Obj::new(&last, rv, rt.fields))
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<ObjRef, StatusError> {
        self.store
            .get(&rt.key(ns, name))
            .cloned()
            .ok_or_else(|| StatusError::not_found(rt, name))
    }

    fn check_namespace_open(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<(), StatusError> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns_obj = self
            .store
            .get(&format!("/core/namespaces//{ns}"))
            .ok_or_else(|| StatusError::namespace_not_found(ns))?;
        if ns_obj.field("status.phase") == Some("Terminating") {
            return Err(StatusError::namespace_terminating(rt, name, ns));
        }
        Ok(())
    }

    /// Picks the name (from `generateName` if needed) of a new object.
    fn new_name(&self, rt: &ResourceType, ns: &str, v: &mut Value) -> Result<String, StatusError> {
        let meta = metadata(v);
        let name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        if !name.is_empty() {
            return Ok(name);
        }
        let prefix = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if prefix.is_empty() {
            let cause = Cause::required("metadata.name", "name or generateName is required");
            return Err(StatusError::invalid(rt, "", &[cause]));
        }
        let name = (0..8)
            .map(|_| format!("{prefix}{}", random_suffix()))
            .find(|n| self.store.get(&rt.key(ns, n)).is_none())
            .unwrap_or_else(|| format!("{prefix}{}", random_suffix()));
        meta.insert("name".into(), Value::from(name.clone()));
        Ok(name)
    }

    pub fn create(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<ObjRef, StatusError> {
        let mut v = body;
        check_type_meta(rt, &mut v)?;
        if !meta_str(&v, "resourceVersion").is_empty() {
            return Err(StatusError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        check_namespace(rt, ns, &mut v)?;
        let name = self.new_name(rt, ns, &mut v)?;
        self.check_namespace_open(rt, ns, &name)?;
        let meta = metadata(&mut v);
        for key in SYSTEM_FIELDS.iter().chain(&["selfLink"]) {
            meta.remove(*key);
        }
        initial_status(rt, &mut v);
        apply_defaults(rt, &mut v);
        normalize(rt, &mut v);
        let mut causes = self.kind_causes(rt, &mut v, None);
        if causes.is_empty() && rt.behaviour == Behaviour::Service {
            causes = services::allocate(self, &mut v, None, opts.dry_run);
        }
        if !causes.is_empty() {
            return Err(StatusError::invalid(rt, &name, &causes));
        }
        let key = rt.key(ns, &name);
        if self.store.get(&key).is_some() {
            return Err(StatusError::already_exists(rt, &name));
        }
        let meta = metadata(&mut v);
        meta.insert("uid".into(), Value::from(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), Value::from(now_rfc3339()));
        if rt.generation {
            meta.insert("generation".into(), Value::from(1));
        }
        let mut stored = to_storage(rt, v);
        if opts.dry_run {
            return Ok(Arc::new(Obj::new(&stored, 0, rt.fields)));
        }
        let obj = self.commit(rt, &key, &mut stored);
        if rt.behaviour == Behaviour::Crd {
            return Ok(crd::establish(self, rt, &key, stored));
        }
        Ok(obj)
    }

    /// Kind rules and schema: the field errors of `v` (defaulting and pruning custom resources).
    fn kind_causes(&self, rt: &ResourceType, v: &mut Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = validate::validate(rt, v, old);
        match rt.behaviour {
            Behaviour::Custom => causes.extend(crd::prepare_custom(rt, v)),
            Behaviour::Crd => causes.extend(crd::validate_crd(v, old)),
            _ => {}
        }
        causes
    }

    /// Upstream's strategies that refuse a PUT without resourceVersion.
    fn allows_unconditional_update(rt: &ResourceType) -> bool {
        !matches!(
            rt.behaviour,
            Behaviour::Lease | Behaviour::Crd | Behaviour::Custom
        )
    }

    fn allows_create_on_update(rt: &ResourceType) -> bool {
        matches!(
            rt.behaviour,
            Behaviour::Endpoints | Behaviour::CoreEvent | Behaviour::EventV1
        )
    }

    /// PUT (and the tail of every PATCH): `body` replaces the object, or its status for `status_write`.
    pub fn update(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        status_write: bool,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, StatusError> {
        let key = rt.key(ns, name);
        let Some(current) = self.store.get(&key).cloned() else {
            if State::allows_create_on_update(rt) && !status_write {
                let mut body = body;
                metadata(&mut body).remove("resourceVersion");
                let obj = self.create(rt, ns, body, opts)?;
                return Ok(Written {
                    obj,
                    changed: true,
                    created: true,
                });
            }
            return Err(StatusError::not_found(rt, name));
        };
        if meta_str(&body, "resourceVersion").is_empty() && !State::allows_unconditional_update(rt) {
            return Err(StatusError::resource_version_required(rt, name));
        }
        let stored_old = current.value();
        let old = to_view(rt, stored_old.clone());
        let mut new = body;
        check_type_meta(rt, &mut new)?;
        check_namespace(rt, ns, &mut new)?;
        let body_name = meta_str(&new, "name").to_string();
        if !body_name.is_empty() && body_name != name {
            return Err(StatusError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        metadata(&mut new).insert("name".into(), Value::from(name));
        check_preconditions(rt, name, &new, &old)?;
        let mut new = split_status(rt, status_write, &old, new);
        carry_system_fields(&old, &mut new);
        if rt.behaviour == Behaviour::Service {
            services::carry_allocations(&old, &mut new);
        }
        apply_defaults(rt, &mut new);
        normalize(rt, &mut new);
        apply::track_update(rt, &old, &mut new, opts.field_manager.as_deref());
        let mut causes = self.kind_causes(rt, &mut new, Some(&old));
        check_new_finalizers(&new, &old, &mut causes);
        if causes.is_empty() && rt.behaviour == Behaviour::Service {
            causes = services::allocate(self, &mut new, Some(&old), opts.dry_run);
        }
        if !causes.is_empty() {
            return Err(StatusError::invalid(rt, name, &causes));
        }
        if rt.generation && spec_part(&new) != spec_part(&old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            metadata(&mut new).insert("generation".into(), Value::from(generation));
        }
        let mut stored = to_storage(rt, new);
        if stored == stored_old {
            return Ok(Written {
                obj: current,
                changed: false,
                created: false,
            });
        }
        if opts.dry_run {
            return Ok(Written {
                obj: Arc::new(Obj::new(&stored, 0, rt.fields)),
                changed: true,
                created: false,
            });
        }
        if finished_deleting(&stored) {
            self.commit_delete(rt, &key, stored);
            return Ok(Written {
                obj: current,
                changed: true,
                created: false,
            });
        }
        let obj = self.commit(rt, &key, &mut stored);
        if rt.behaviour == Behaviour::Crd {
            crd::register(self, &stored);
        }
        Ok(Written {
            obj,
            changed: true,
            created: false,
        })
    }
}
