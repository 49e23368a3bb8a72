//! Kubeconfig files and `kube::Config`s for both tiers, so kubectl and kube::Client see the same server.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::real::ADMIN_TOKEN;

/// A kubeconfig for `server`: a static bearer token over TLS without verification (real tier) or no
/// credentials at all over plain HTTP (in-memory tier).
pub fn render(server: &str, token: Option<&str>) -> String {
    let tls = if server.starts_with("https://") {
        "\n    insecure-skip-tls-verify: true"
    } else {
        ""
    };
    let user = token
        .map(|t| format!("\n    token: {t}"))
        .unwrap_or_else(|| " {}".into());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {server}{tls}\n\
         users:\n- name: envtest\n  user:{user}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    \
         user: envtest\n    namespace: default\ncurrent-context: envtest\n"
    )
}

pub fn write(path: &Path, server: &str, token: Option<&str>) -> std::io::Result<()> {
    std::fs::write(path, render(server, token))
}

/// A `kube::Config` equivalent to the kubeconfig `render` writes.
pub async fn config(server: &str, token: Option<&str>) -> anyhow::Result<kube::Config> {
    let kubeconfig: Kubeconfig = serde_saphyr::from_str(&render(server, token))?;
    let options = KubeConfigOptions::default();
    Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?)
}

/// The admin config of the real tier at `server`.
pub async fn admin_config(server: &str) -> anyhow::Result<kube::Config> {
    config(server, Some(ADMIN_TOKEN)).await
}
