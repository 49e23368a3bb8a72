//! Nodes: only what endpoints and topology hints need is read: the name, the zone label, the control-plane
//! labels, the Ready condition and the allocatable CPU.

use std::borrow::Cow;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::interner::Interner;
use crate::desired::labels::{CONTROL_PLANE_LABELS, LABEL_ZONE};

/// The Node fields roster reads (other labels, resources and conditions' details are dropped while
/// decoding).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NodeProjection {
    #[serde(deserialize_with = "super::meta::node_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: NodeStatusProjection,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NodeStatusProjection {
    #[serde(default)]
    pub allocatable: AllocatableProjection,
    #[serde(default)]
    pub conditions: Vec<NodeConditionProjection>,
}

/// `status.allocatable`: only the CPU quantity.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct AllocatableProjection {
    pub cpu: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NodeConditionProjection {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub status: String,
}

impl NodeProjection {
    pub fn zone(&self) -> Option<&str> {
        self.label(LABEL_ZONE)
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
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

/// What the cache keeps of a Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRecord {
    /// The `topology.kubernetes.io/zone` label (an empty value counts as none).
    pub zone: Option<Arc<str>>,
    /// Allocatable CPU in millicores; 0 when the Node reports none (or none that parses).
    pub cpu_millis: u64,
    /// The Ready condition is `True`.
    pub ready: bool,
    /// Labelled as a control-plane (or master) Node.
    pub control_plane: bool,
}

impl NodeRecord {
    pub fn from_projection(node: &NodeProjection, interner: &mut Interner) -> Self {
        let status = &node.status;
        NodeRecord {
            zone: node.zone().filter(|z| !z.is_empty()).map(|z| interner.intern(z)),
            cpu_millis: status
                .allocatable
                .cpu
                .as_deref()
                .and_then(cpu_millis)
                .unwrap_or(0),
            ready: status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            control_plane: CONTROL_PLANE_LABELS.iter().any(|key| node.label(key).is_some()),
        }
    }
}

/// A CPU quantity (`4`, `3500m`, `0.5`, `2k`, `1e3`, `1Ki`) in millicores, rounded up as Kubernetes' own
/// `MilliValue` does; `None` when it is not a non-negative quantity.
pub fn cpu_millis(quantity: &str) -> Option<u64> {
    let text = quantity.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (pow10, factor) = quantity_suffix(suffix)?;
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let mantissa: u128 = format!("{int}{frac}").parse().ok()?;
    let value = mantissa.checked_mul(factor)?;
    let exp = pow10 + 3 - i32::try_from(frac.len()).ok()?;
    let millis = match u32::try_from(exp) {
        Ok(up) => value.checked_mul(10u128.checked_pow(up)?)?,
        Err(_) => value.div_ceil(10u128.checked_pow(exp.unsigned_abs())?),
    };
    u64::try_from(millis).ok()
}

/// A quantity suffix as (power of ten, binary factor).
fn quantity_suffix(suffix: &str) -> Option<(i32, u128)> {
    let decimal = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
    if let Some(i) = decimal.iter().position(|s| *s == suffix) {
        return Some((3 * i32::try_from(i).ok()? - 9, 1));
    }
    let binary = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if let Some(i) = binary.iter().position(|s| *s == suffix) {
        return Some((0, 1u128 << (10 * (i + 1))));
    }
    let exponent = suffix.strip_prefix(['e', 'E'])?;
    Some((exponent.parse().ok()?, 1))
}

/// What the Node cache says about a pod's node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeLookup {
    /// The node is not in the cache (not yet seen, or deleted).
    Missing,
    /// The node exists; `zone` is its zone label, if any.
    Found { zone: Option<Arc<str>> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_read_as_millicores_rounded_up() {
        let cases = [
            ("4", Some(4000)),
            ("3500m", Some(3500)),
            ("0.5", Some(500)),
            ("1.25", Some(1250)),
            ("+2", Some(2000)),
            ("2k", Some(2_000_000)),
            ("1e3", Some(1_000_000)),
            ("1E-3", Some(1)),
            ("1Ki", Some(1_024_000)),
            ("1500u", Some(2)),
            ("1n", Some(1)),
            ("0", Some(0)),
            (".5", Some(500)),
            ("-1", None),
            ("", None),
            ("m", None),
            ("1.2.3", None),
            ("four", None),
            ("4 cores", None),
        ];
        for (text, want) in cases {
            assert_eq!(cpu_millis(text), want, "{text:?}");
        }
    }
}
