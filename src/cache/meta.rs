//! Slim `metadata` decoding for the projections: only the fields roster reads are kept, so
//! `managedFields`, annotations and owner references of pods and nodes are never held in memory.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Deserializer};

use crate::desired::labels::{CONTROL_PLANE_LABELS, LABEL_ZONE};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    deletion_timestamp: Option<Time>,
}

impl From<SlimMeta> for ObjectMeta {
    fn from(slim: SlimMeta) -> Self {
        ObjectMeta {
            name: slim.name,
            namespace: slim.namespace,
            uid: slim.uid,
            resource_version: slim.resource_version,
            labels: slim.labels,
            deletion_timestamp: slim.deletion_timestamp,
            ..ObjectMeta::default()
        }
    }
}

/// Pod metadata: identity, resource version, labels and deletion timestamp.
pub(super) fn pod_meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    Ok(SlimMeta::deserialize(deserializer)?.into())
}

/// Node metadata: identity, resource version and only the zone and control-plane labels.
pub(super) fn node_meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let mut meta: ObjectMeta = SlimMeta::deserialize(deserializer)?.into();
    if let Some(labels) = &mut meta.labels {
        labels.retain(|key, _| key == LABEL_ZONE || CONTROL_PLANE_LABELS.contains(&key.as_str()));
    }
    Ok(meta)
}
