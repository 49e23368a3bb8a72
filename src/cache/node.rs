//! Nodes: only the name and the zone label are read.

use std::borrow::Cow;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::desired::labels::LABEL_ZONE;

/// The Node fields roster reads: name and the `topology.kubernetes.io/zone` label (other labels are dropped
/// while decoding).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NodeProjection {
    #[serde(deserialize_with = "super::meta::node_meta")]
    pub metadata: ObjectMeta,
}

impl NodeProjection {
    pub fn zone(&self) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(LABEL_ZONE).map(String::as_str)
    }
}

impl kube::Resource for NodeProjection {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Node".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "nodes".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What the Node cache says about a pod's node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeLookup {
    /// The node is not in the cache (not yet seen, or deleted).
    Missing,
    /// The node exists; `zone` is its zone label, if any.
    Found { zone: Option<Arc<str>> },
}
