//! Credentials of a ServiceAccount, for running roster as a user of its own on the real tier (its requests
//! then stand apart in the audit log, and RBAC limits it).

use std::path::{Path, PathBuf};

use serde_json::json;

/// Mints a token for ServiceAccount `ns/name` (`POST .../serviceaccounts/NAME/token`, a TokenRequest).
pub async fn service_account_token(client: &kube::Client, ns: &str, name: &str) -> String {
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}
    });
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let answer: serde_json::Value = client.request(req).await.expect("TokenRequest");
    answer["status"]["token"]
        .as_str()
        .expect("a token in the TokenRequest status")
        .to_string()
}

/// A kubeconfig for `server` that authenticates with `token` (TLS unverified, as the test tier's).
pub fn token_kubeconfig(dir: &Path, name: &str, server: &str, token: &str) -> PathBuf {
    let path = dir.join(format!("{name}.kubeconfig"));
    roster_envtest::kubeconfig::write(&path, server, Some(token)).expect("writing a kubeconfig");
    path
}
