//! The RBAC checker: what a user asked the real API server for, and what it was refused, read from the
//! kube-apiserver audit log (JSON lines, one per request stage), and what a set of RBAC rules grants.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

/// One permission: (API group, resource[/subresource], verb), as RBAC rules name them.
pub type Permission = (String, String, String);

/// What one user did, according to the audit log.
#[derive(Debug, Default)]
pub struct Activity {
    /// Resource requests (each counted once, at its last stage), by permission.
    pub requests: BTreeMap<Permission, usize>,
    /// Requests answered 403 Forbidden: "verb group/resource (uri)".
    pub forbidden: Vec<String>,
    /// Non-resource requests (discovery), with their codes.
    pub non_resource: BTreeMap<String, BTreeSet<i64>>,
}

impl Activity {
    pub fn total(&self) -> usize {
        self.requests.values().sum::<usize>() + self.non_resource.len()
    }

    pub fn used(&self) -> BTreeSet<Permission> {
        self.requests.keys().cloned().collect()
    }

    /// A readable table of everything the user did.
    pub fn summary(&self) -> String {
        let mut lines: Vec<String> = self
            .requests
            .iter()
            .map(|((g, r, v), n)| format!("  {v:<7} {:<40} x{n}", group_resource(g, r)))
            .collect();
        lines.extend(
            self.non_resource
                .iter()
                .map(|(uri, codes)| format!("  GET     {uri:<40} codes {codes:?}")),
        );
        lines.join("\n")
    }
}

fn group_resource(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{group}/{resource}")
    }
}

/// Reads `audit.log` and returns the activity of `user` (e.g. `system:serviceaccount:NS:NAME`).
pub fn activity(audit_log: &Path, user: &str) -> Activity {
    let text = std::fs::read_to_string(audit_log).expect("reading the audit log");
    let mut out = Activity::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue; // a line being written right now
        };
        if event["user"]["username"] != user || event["stage"] == "ResponseStarted" {
            continue; // a watch logs ResponseStarted and ResponseComplete: count it once
        }
        let code = event["responseStatus"]["code"].as_i64().unwrap_or(0);
        let verb = event["verb"].as_str().unwrap_or_default().to_string();
        let uri = event["requestURI"].as_str().unwrap_or_default();
        let Some(obj) = event.get("objectRef") else {
            out.non_resource
                .entry(uri.split('?').next().unwrap_or(uri).to_string())
                .or_default()
                .insert(code);
            if code == 403 {
                out.forbidden.push(format!("{verb} {uri}"));
            }
            continue;
        };
        let group = obj["apiGroup"].as_str().unwrap_or_default().to_string();
        let mut resource = obj["resource"].as_str().unwrap_or_default().to_string();
        if let Some(sub) = obj["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        if code == 403 {
            out.forbidden
                .push(format!("{verb} {} ({uri})", group_resource(&group, &resource)));
        }
        *out.requests.entry((group, resource, verb)).or_default() += 1;
    }
    out
}

/// Every permission the rules of the given ClusterRoles / Roles grant (no wildcards: the chart has none, and
/// a `*` here would be taken literally and so never match a request, failing the "used" check loudly).
pub fn granted(roles: &[&Value]) -> BTreeSet<Permission> {
    let mut out = BTreeSet::new();
    for role in roles {
        for rule in role["rules"].as_array().into_iter().flatten() {
            let list = |field: &str| -> Vec<String> {
                serde_json::from_value(rule[field].clone()).unwrap_or_default()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        out.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_checker_reads_denials_and_usage_from_audit_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let user = "system:serviceaccount:ns:roster";
    let line = |user: &str, stage: &str, verb: &str, group: &str, res: &str, code: i64| {
        serde_json::json!({"stage": stage, "user": {"username": user}, "verb": verb, "requestURI": "/x",
            "objectRef": {"apiGroup": group, "resource": res}, "responseStatus": {"code": code}})
        .to_string()
    };
    let lines = [
        line(user, "ResponseComplete", "create", "", "endpoints", 403),
        line(user, "ResponseStarted", "watch", "", "pods", 200),
        line(user, "ResponseComplete", "watch", "", "pods", 200),
        line("admin", "ResponseComplete", "delete", "", "pods", 403),
        r#"{"stage":"ResponseComplete","user":{"username":"system:serviceaccount:ns:roster"},"verb":"get","requestURI":"/apis/discovery.k8s.io/v1","responseStatus":{"code":404}}"#.to_string(),
    ];
    std::fs::write(&log, lines.join("\n")).unwrap();
    let a = activity(&log, user);
    assert_eq!(a.forbidden, ["create endpoints (/x)"]);
    assert_eq!(a.total(), 3, "{a:?}");
    assert_eq!(a.requests[&("".into(), "pods".into(), "watch".into())], 1);
    let role = serde_json::json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]});
    let g = granted(&[&role]);
    assert_eq!(g.len(), 2);
    assert_eq!(g.difference(&a.used()).count(), 1, "list granted, never used");
}
