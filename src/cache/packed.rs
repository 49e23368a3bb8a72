//! An Endpoints or EndpointSlice as the object cache keeps it: its identity in the clear and the rest as
//! LZ4-compressed JSON, decoded when a reconcile reads it.
//!
//! As k8s-openapi structs these objects are most of roster's memory at scale: every address is a dozen
//! small allocations (IP, node name, a target reference of four strings) in structs of several hundred
//! bytes. Compressed against a dictionary of the text these kinds share (field names, condition values,
//! label keys), an address costs about what its own text costs (its pod's uid, name and IP). The encoding
//! is JSON, the objects' own wire form, so nothing a reader may need is lost.
//!
//! A reconcile reads its Service's objects once or twice and decodes them then: about 1 ms of CPU for a
//! 100 KB Endpoints of 1,500 addresses (BENCHMARKS.md, S2), a few microseconds for a small Service's.

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::written::{Kind, ObjectId, Version};
use super::{SERVICE_NAME_LABEL, ServiceKey};
use crate::desired::{LABEL_MANAGED_BY, SLICE_CONTROLLER_NAME};

/// The kinds the object cache keeps packed.
pub trait Packable: Resource + Serialize + DeserializeOwned {
    const KIND: Kind;
}

impl Packable for Endpoints {
    const KIND: Kind = Kind::Endpoints;
}

impl Packable for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;
}

/// One object, packed (see the module's documentation).
pub struct Packed<K> {
    namespace: Arc<str>,
    name: Arc<str>,
    uid: Box<str>,
    resource_version: Box<str>,
    /// The `endpointslice.kubernetes.io/managed-by` label.
    manager: Option<Box<str>>,
    /// The `kubernetes.io/service-name` label.
    service: Option<Arc<str>>,
    body: Arc<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Packed<K> {
    fn clone(&self) -> Self {
        Packed {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            resource_version: self.resource_version.clone(),
            manager: self.manager.clone(),
            service: self.service.clone(),
            body: self.body.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Packable> Packed<K> {
    /// Packs `obj`. `managedFields` are left out: roster never reads them, and on a real API server they are
    /// often the larger part of an object's metadata (an update without them leaves the server's copy as
    /// it is).
    pub fn new(mut obj: K) -> Packed<K> {
        let meta = obj.meta_mut();
        meta.managed_fields = None;
        let label = |key: &str| meta.labels.as_ref().and_then(|labels| labels.get(key));
        let text = |value: &Option<String>| Box::from(value.as_deref().unwrap_or_default());
        Packed {
            namespace: Arc::from(meta.namespace.as_deref().unwrap_or_default()),
            name: Arc::from(meta.name.as_deref().unwrap_or_default()),
            uid: text(&meta.uid),
            resource_version: text(&meta.resource_version),
            manager: label(LABEL_MANAGED_BY).map(|m| Box::from(m.as_str())),
            service: label(SERVICE_NAME_LABEL).map(|s| Arc::from(s.as_str())),
            body: Arc::from(compress(&obj)),
            kind: PhantomData,
        }
    }

    /// The object itself.
    pub fn decode(&self) -> Arc<K> {
        let text = lz4_flex::block::decompress_size_prepended_with_dict(&self.body, dictionary())
            .expect("the cache decompresses what it compressed");
        let obj = serde_json::from_slice(&text).expect("the cache decodes what it encoded");
        Arc::new(obj)
    }

    pub fn id(&self) -> ObjectId {
        ObjectId {
            kind: K::KIND,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    pub fn version(&self) -> Version {
        Version {
            uid: self.uid.to_string(),
            resource_version: self.resource_version.to_string(),
        }
    }

    /// Whether `meta` is this very object version (same uid and resourceVersion).
    pub fn is(&self, meta: &ObjectMeta) -> bool {
        super::same_version(&self.uid, &self.resource_version, meta)
    }
}

impl<K> Packed<K> {
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The `endpointslice.kubernetes.io/managed-by` label.
    pub fn manager(&self) -> Option<&str> {
        self.manager.as_deref()
    }

    /// The Service a slice belongs to, by its service-name label.
    pub fn service(&self) -> Option<ServiceKey> {
        let name = self.service.clone()?;
        Some(ServiceKey {
            namespace: self.namespace.clone(),
            name,
        })
    }

    /// The Service an Endpoints belongs to: the one of its own namespace and name.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Whether both hold the one packed body (a relist kept the cached copy).
    #[cfg(test)]
    pub fn shares_body(&self, other: &Packed<K>) -> bool {
        Arc::ptr_eq(&self.body, &other.body)
    }

    /// Bytes held for the object's body.
    pub fn packed_len(&self) -> usize {
        self.body.len()
    }
}

fn compress<K: Serialize>(obj: &K) -> Vec<u8> {
    let text = serde_json::to_vec(obj).expect("k8s-openapi objects encode as JSON");
    lz4_flex::block::compress_prepend_size_with_dict(&text, dictionary())
}

/// The dictionary: an EndpointSlice and an Endpoints as roster writes them, encoded the way [`compress`]
/// encodes, so that their field names, fixed values and label keys are found there instead of in each
/// object.
fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut text = serde_json::to_vec(&sample_endpoints()).expect("encodes");
        text.extend(serde_json::to_vec(&sample_slice()).expect("encodes"));
        text
    })
}

fn sample_meta() -> ObjectMeta {
    ObjectMeta {
        name: Some("name".into()),
        namespace: Some("default".into()),
        uid: Some("00000000-0000-0000-0000-000000000000".into()),
        resource_version: Some("1".into()),
        generation: Some(1),
        labels: Some(
            [
                (LABEL_MANAGED_BY.to_string(), SLICE_CONTROLLER_NAME.to_string()),
                (SERVICE_NAME_LABEL.to_string(), "name".to_string()),
            ]
            .into(),
        ),
        owner_references: Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: "name".into(),
            uid: "00000000-0000-0000-0000-000000000000".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..ObjectMeta::default()
    }
}

fn sample_pod() -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: Some("default".into()),
        name: Some("name".into()),
        uid: Some("00000000-0000-0000-0000-000000000000".into()),
        ..ObjectReference::default()
    }
}

fn sample_endpoints() -> Endpoints {
    let address = EndpointAddress {
        ip: "10.0.0.1".into(),
        node_name: Some("node".into()),
        target_ref: Some(sample_pod()),
        ..EndpointAddress::default()
    };
    Endpoints {
        metadata: sample_meta(),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![address.clone()]),
            not_ready_addresses: Some(vec![address]),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            }]),
        }]),
    }
}

fn sample_slice() -> EndpointSlice {
    EndpointSlice {
        metadata: sample_meta(),
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec!["10.0.0.1".into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: Some("node".into()),
            target_ref: Some(sample_pod()),
            zone: Some("zone".into()),
            ..Endpoint::default()
        }],
        ports: Some(vec![SlicePort {
            name: Some("http".into()),
            port: Some(80),
            protocol: Some("TCP".into()),
            ..SlicePort::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;

    fn slice_of(pods: usize) -> EndpointSlice {
        let mut slice = sample_slice();
        slice.metadata.name = Some("web-abcde".into());
        slice.metadata.resource_version = Some("7".into());
        let endpoint = slice.endpoints.remove(0);
        slice.endpoints = (0..pods)
            .map(|i| {
                let mut endpoint = endpoint.clone();
                endpoint.addresses = vec![format!("10.1.{}.{}", i / 250, i % 250)];
                let pod = endpoint.target_ref.as_mut().unwrap();
                pod.name = Some(format!("web-7d4b9c-{i:05}"));
                pod.uid = Some(format!("3f2a{i:04}-1b2c-4d5e-8f90-a1b2c3d4e5f6"));
                endpoint
            })
            .collect();
        slice
    }

    #[test]
    fn an_object_decodes_to_itself_without_managed_fields() {
        let mut slice = slice_of(5);
        slice.metadata.annotations = Some([("a".to_string(), "b".to_string())].into());
        let packed = Packed::new(slice.clone());
        assert_eq!(*packed.decode(), slice);

        slice.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        let decoded = Packed::new(slice.clone()).decode();
        assert!(decoded.metadata.managed_fields.is_none());
        slice.metadata.managed_fields = None;
        assert_eq!(*decoded, slice);
    }

    #[test]
    fn identity_and_manager_are_kept_in_the_clear() {
        let packed = Packed::new(slice_of(1));
        assert_eq!(packed.id().kind, Kind::EndpointSlice);
        assert_eq!(&*packed.id().name, "web-abcde");
        assert_eq!(&*packed.id().namespace, "default");
        assert_eq!(packed.version().resource_version, "7");
        assert_eq!(packed.manager(), Some(SLICE_CONTROLLER_NAME));
        assert_eq!(&*packed.service().unwrap().name, "name");
        let mut meta = slice_of(1).metadata;
        assert!(packed.is(&meta));
        meta.resource_version = Some("8".into());
        assert!(!packed.is(&meta));
    }

    #[test]
    fn an_object_costs_about_its_own_text() {
        let json = |slice: &EndpointSlice| serde_json::to_vec(slice).unwrap().len();
        // The dictionary holds what every object repeats: a small one packs to a fraction of its text.
        let small = Packed::new(slice_of(1)).packed_len();
        assert!(
            small < json(&slice_of(1)) / 2,
            "{small} bytes packed, {} as JSON",
            json(&slice_of(1))
        );
        let large = Packed::new(slice_of(101)).packed_len();
        let per_endpoint = (large - small) / 100;
        let text = json(&slice_of(101)) / 101;
        assert!(
            per_endpoint < text / 2,
            "{per_endpoint} bytes per endpoint packed, {text} as JSON"
        );
    }
}
