//! Discovery documents with `discovery.k8s.io/v1` added: the group list (`/apis`), the group
//! (`/apis/discovery.k8s.io`) and the v1 resource list, made from 1.20's v1beta1 one.
//!
//! kube-apiserver 1.20 has no aggregated discovery: asked for it (kubectl asks first), it answers the plain
//! `APIGroupList`, and kubectl falls back to the per-group documents, which this module rewrites. The
//! facade answers the same way, so kubectl sees v1 whichever document it reads.

use serde_json::{Value, json};

use super::convert::{GROUP, V1, V1BETA1};

/// A discovery document the facade rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doc {
    /// `/apis`: an `APIGroupList`.
    Groups,
    /// `/apis/discovery.k8s.io`: an `APIGroup`.
    Group,
    /// `/apis/discovery.k8s.io/v1`: an `APIResourceList`, served from v1beta1's.
    ResourcesV1,
}

impl Doc {
    /// The document at `path`, if the facade rewrites it.
    pub fn at(path: &str) -> Option<Doc> {
        match path.trim_end_matches('/') {
            "/apis" => Some(Doc::Groups),
            "/apis/discovery.k8s.io" => Some(Doc::Group),
            "/apis/discovery.k8s.io/v1" => Some(Doc::ResourcesV1),
            _ => None,
        }
    }

    /// The kube-apiserver path whose answer this document is made from.
    pub fn upstream_path(self) -> String {
        match self {
            Doc::Groups => "/apis".into(),
            Doc::Group => format!("/apis/{GROUP}"),
            Doc::ResourcesV1 => format!("/apis/{V1BETA1}"),
        }
    }

    /// Rewrites kube-apiserver's answer in place.
    pub fn rewrite(self, doc: &mut Value) {
        match self {
            Doc::Groups => {
                let groups = doc["groups"].as_array_mut().into_iter().flatten();
                for group in groups.filter(|g| g["name"] == GROUP) {
                    add_v1(group);
                }
            }
            Doc::Group => add_v1(doc),
            Doc::ResourcesV1 => doc["groupVersion"] = json!(V1),
        }
    }
}

/// Lists v1 first and prefers it, as releases serving both versions do.
fn add_v1(group: &mut Value) {
    let v1 = json!({"groupVersion": V1, "version": "v1"});
    if let Some(versions) = group["versions"].as_array_mut()
        && !versions.contains(&v1)
    {
        versions.insert(0, v1.clone());
    }
    group["preferredVersion"] = v1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_list_gains_v1_as_preferred() {
        let mut doc = json!({"kind": "APIGroupList", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]},
            {"name": GROUP, "versions": [{"groupVersion": V1BETA1, "version": "v1beta1"}],
             "preferredVersion": {"groupVersion": V1BETA1, "version": "v1beta1"}}]});
        Doc::Groups.rewrite(&mut doc);
        assert_eq!(
            doc["groups"][1]["versions"],
            json!([{"groupVersion": V1, "version": "v1"}, {"groupVersion": V1BETA1, "version": "v1beta1"}])
        );
        assert_eq!(doc["groups"][1]["preferredVersion"]["version"], "v1");
        assert_eq!(doc["groups"][0]["versions"].as_array().unwrap().len(), 1);
        Doc::Groups.rewrite(&mut doc);
        assert_eq!(
            doc["groups"][1]["versions"].as_array().unwrap().len(),
            2,
            "idempotent"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(Doc::at("/apis/"), Some(Doc::Groups));
        assert_eq!(Doc::at("/apis/discovery.k8s.io/v1"), Some(Doc::ResourcesV1));
        assert_eq!(Doc::at("/apis/discovery.k8s.io/v1beta1"), None);
        assert_eq!(Doc::ResourcesV1.upstream_path(), "/apis/discovery.k8s.io/v1beta1");
    }
}
