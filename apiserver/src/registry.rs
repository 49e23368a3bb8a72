//! The resource types the server knows: the built-in ones and those that CRDs add.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// Which per-kind rules (defaults, validation, deletion) a resource type follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Plain,
    Namespace,
    Node,
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    CoreEvent,
    EventV1,
    Lease,
    Crd,
    Custom,
}

/// The schema and status switch of one served version of a CRD.
#[derive(Debug)]
pub(crate) struct CustomSchema {
    /// `openAPIV3Schema` of this version.
    pub schema: Option<Value>,
    /// The CRD serves several versions, so reads rewrite `apiVersion`.
    pub multi_version: bool,
    /// `additionalPrinterColumns` of this version: kubectl's columns after NAME.
    pub columns: Vec<PrinterColumn>,
}

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
pub(crate) struct PrinterColumn {
    pub name: String,
    pub kind: String,
    pub json_path: String,
    pub priority: u8,
}

/// One served resource: a (group, version, plural) with its kind and rules.
#[derive(Debug)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Served with a `/status` subresource, whose writes alone change `.status`.
    pub status: bool,
    pub behaviour: Behaviour,
    /// Tracks `metadata.generation`.
    pub generation: bool,
    /// Key prefix in the store, ending with `/`; two types may share one (events).
    pub storage: String,
    /// Field-selector labels beyond `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
    pub custom: Option<CustomSchema>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods`, or `leases.coordination.k8s.io` for grouped resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn is_builtin(&self) -> bool {
        self.behaviour != Behaviour::Custom
    }

    pub fn key(&self, ns: &str, name: &str) -> String {
        format!("{}{ns}/{name}", self.storage)
    }

    /// The key prefix of a collection: one namespace, or all of them.
    pub fn prefix(&self, ns: Option<&str>) -> String {
        match ns {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.storage),
            _ => self.storage.clone(),
        }
    }

    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name" || field == "metadata.namespace" || self.fields.contains(&field)
    }
}

struct Builtin {
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    behaviour: Behaviour,
    fields: &'static [&'static str],
}

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const fn builtin(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    behaviour: Behaviour,
) -> Builtin {
    Builtin {
        group,
        plural,
        kind,
        namespaced,
        short,
        status: false,
        behaviour,
        fields: &[],
    }
}

const fn with_status(mut b: Builtin, fields: &'static [&'static str]) -> Builtin {
    b.status = true;
    b.fields = fields;
    b
}

const fn with_fields(mut b: Builtin, fields: &'static [&'static str]) -> Builtin {
    b.fields = fields;
    b
}

const BUILTINS: &[Builtin] = &[
    with_status(
        builtin(
            "",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            Behaviour::Namespace,
        ),
        &["status.phase"],
    ),
    with_status(
        builtin("", "nodes", "Node", false, &["no"], Behaviour::Node),
        &["spec.unschedulable"],
    ),
    with_status(
        builtin("", "pods", "Pod", true, &["po"], Behaviour::Pod),
        POD_FIELDS,
    ),
    with_status(
        builtin("", "services", "Service", true, &["svc"], Behaviour::Service),
        &["spec.clusterIP", "spec.type"],
    ),
    builtin("", "endpoints", "Endpoints", true, &["ep"], Behaviour::Endpoints),
    with_fields(
        builtin("", "events", "Event", true, &["ev"], Behaviour::CoreEvent),
        EVENT_FIELDS,
    ),
    builtin("", "configmaps", "ConfigMap", true, &["cm"], Behaviour::Plain),
    with_fields(
        builtin("", "secrets", "Secret", true, &[], Behaviour::Plain),
        &["type"],
    ),
    builtin(
        "",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        Behaviour::Plain,
    ),
    with_fields(
        builtin(
            "events.k8s.io",
            "events",
            "Event",
            true,
            &["ev"],
            Behaviour::EventV1,
        ),
        EVENT_FIELDS,
    ),
    builtin(
        "discovery.k8s.io",
        "endpointslices",
        "EndpointSlice",
        true,
        &[],
        Behaviour::EndpointSlice,
    ),
    builtin(
        "coordination.k8s.io",
        "leases",
        "Lease",
        true,
        &[],
        Behaviour::Lease,
    ),
    with_status(
        builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            Behaviour::Crd,
        ),
        &[],
    ),
    builtin(
        "rbac.authorization.k8s.io",
        "roles",
        "Role",
        true,
        &[],
        Behaviour::Plain,
    ),
    builtin(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        Behaviour::Plain,
    ),
    builtin(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        Behaviour::Plain,
    ),
    builtin(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        Behaviour::Plain,
    ),
];

fn storage_of(b: &Builtin) -> String {
    match b.behaviour {
        // events.k8s.io/v1 and core/v1 Events are two views of one storage, as upstream.
        Behaviour::EventV1 | Behaviour::CoreEvent => "/core/events/".into(),
        _ => format!(
            "/{}/{}/",
            if b.group.is_empty() { "core" } else { b.group },
            b.plural
        ),
    }
}

fn from_builtin(b: &Builtin) -> ResourceType {
    ResourceType {
        group: b.group.into(),
        version: "v1".into(),
        plural: b.plural.into(),
        singular: b.kind.to_lowercase(),
        kind: b.kind.into(),
        namespaced: b.namespaced,
        short_names: b.short.iter().map(|s| s.to_string()).collect(),
        status: b.status,
        behaviour: b.behaviour,
        generation: matches!(b.behaviour, Behaviour::EndpointSlice | Behaviour::Crd),
        storage: storage_of(b),
        fields: b.fields,
        custom: None,
    }
}

/// Every served type, by (group, version, plural).
pub(crate) struct Registry {
    types: BTreeMap<(String, String, String), Arc<ResourceType>>,
    /// The types each CRD (by name) added.
    by_crd: BTreeMap<String, Vec<Arc<ResourceType>>>,
}

impl Registry {
    pub fn new() -> Registry {
        let mut types = BTreeMap::new();
        for b in BUILTINS {
            let rt = Arc::new(from_builtin(b));
            types.insert((rt.group.clone(), rt.version.clone(), rt.plural.clone()), rt);
        }
        Registry {
            types,
            by_crd: BTreeMap::new(),
        }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    pub fn builtin(&self, group: &str, plural: &str) -> Arc<ResourceType> {
        self.find(group, "v1", plural).expect("built-in resource type")
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// (group, versions) pairs in a stable order: the core group first, then groups by name.
    pub fn group_versions(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rt in self.types.values() {
            let versions = out.entry(rt.group.clone()).or_default();
            if !versions.contains(&rt.version) {
                versions.push(rt.version.clone());
            }
        }
        out
    }

    /// Replaces the types of CRD `crd_name` with `types`.
    pub fn set_crd(&mut self, crd_name: &str, types: Vec<ResourceType>) {
        self.remove_crd(crd_name);
        let types: Vec<Arc<ResourceType>> = types.into_iter().map(Arc::new).collect();
        for rt in &types {
            self.types.insert(
                (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
                rt.clone(),
            );
        }
        self.by_crd.insert(crd_name.to_string(), types);
    }

    /// Stops serving CRD `crd_name`; returns the types it had.
    pub fn remove_crd(&mut self, crd_name: &str) -> Vec<Arc<ResourceType>> {
        let old = self.by_crd.remove(crd_name).unwrap_or_default();
        for rt in &old {
            self.types
                .remove(&(rt.group.clone(), rt.version.clone(), rt.plural.clone()));
        }
        old
    }
}
