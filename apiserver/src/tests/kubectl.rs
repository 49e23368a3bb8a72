//! kubectl v1.32 against the server: apply, get, get -w, status patches and delete.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::start;

const MANIFEST: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  labels:
    app: web
spec:
  nodeName: n1
  containers:
  - name: app
    image: registry.k8s.io/pause:3.9
    ports:
    - containerPort: 8080
";

fn kubectl_available() -> bool {
    std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn kubectl(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(config)
        .env("KUBECACHEDIR", crate::kubectl_cache_dir(config))
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

async fn ok(config: &Path, args: &[&str]) -> String {
    let (success, stdout, stderr) = kubectl(config, args).await;
    assert!(success, "kubectl {args:?} failed: {stderr}");
    stdout
}

fn setup(dir: &Path, server: &crate::MemoryApiServer) -> PathBuf {
    let config = dir.join("kubeconfig");
    server.write_kubeconfig(&config).unwrap();
    std::fs::write(dir.join("app.yaml"), MANIFEST).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_patch_delete() {
    if !kubectl_available() {
        eprintln!("kubectl not installed; skipping");
        return;
    }
    let (server, client) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &server);
    let manifest = dir.path().join("app.yaml");
    let manifest = manifest.to_str().unwrap();
    let out = ok(&config, &["apply", "-f", manifest]).await;
    assert!(
        out.contains("service/web created") && out.contains("pod/web-0 created"),
        "{out}"
    );
    let out = ok(&config, &["apply", "-f", manifest]).await;
    assert!(
        out.contains("service/web unchanged") && out.contains("pod/web-0 unchanged"),
        "{out}"
    );
    let listed: Value = serde_json::from_str(&ok(&config, &["get", "pods", "-o", "json"]).await).unwrap();
    assert_eq!(listed["items"][0]["metadata"]["name"], "web-0");
    let pods = ok(&config, &["get", "pods"]).await;
    let header: Vec<&str> = pods.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], "{pods}");
    assert!(pods.lines().nth(1).unwrap_or("").starts_with("web-0"), "{pods}");
    let wide = ok(&config, &["get", "pods", "-o", "wide"]).await;
    assert!(wide.lines().next().unwrap_or("").contains("NODE"), "{wide}");
    let services = ok(&config, &["get", "svc", "web"]).await;
    let row: Vec<&str> = services.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(
        row[..5],
        ["web", "ClusterIP", "10.96.0.2", "<none>", "80/TCP"],
        "{services}"
    );
    ok(&config, &["get", "svc,ep,ns,nodes,leases,cm", "-A"]).await;
    let conditions = r#"{"status":{"conditions":[{"type":"Ready","status":"True"}],"podIP":"10.1.0.7"}}"#;
    ok(
        &config,
        &[
            "patch",
            "pod",
            "web-0",
            "--subresource=status",
            "--type=merge",
            "-p",
            conditions,
        ],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        pods.get("web-0").await.unwrap().status.unwrap().pod_ip.as_deref(),
        Some("10.1.0.7")
    );
    let strategic = r#"{"status":{"conditions":[{"type":"PodScheduled","status":"True"}]}}"#;
    ok(
        &config,
        &[
            "patch",
            "pod",
            "web-0",
            "--subresource=status",
            "--type=strategic",
            "-p",
            strategic,
        ],
    )
    .await;
    let json_patch = r#"[{"op":"replace","path":"/status/phase","value":"Running"}]"#;
    ok(
        &config,
        &[
            "patch",
            "pod",
            "web-0",
            "--subresource=status",
            "--type=json",
            "-p",
            json_patch,
        ],
    )
    .await;
    let status = pods.get("web-0").await.unwrap().status.unwrap();
    assert_eq!(
        (status.conditions.unwrap().len(), status.phase.as_deref()),
        (2, Some("Running"))
    );
    ok(&config, &["describe", "pod", "web-0"]).await;
    ok(&config, &["delete", "pod", "web-0", "--wait=false"]).await;
    assert!(
        pods.get("web-0")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some(),
        "bound pods terminate gracefully"
    );
    let cm = dir.path().join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  a: b\n",
    )
    .unwrap();
    ok(&config, &["create", "-f", cm.to_str().unwrap()]).await;
    let (created_twice, _, stderr) = kubectl(&config, &["create", "-f", cm.to_str().unwrap()]).await;
    assert!(!created_twice && stderr.contains("AlreadyExists"), "{stderr}");
    ok(&config, &["delete", "configmap", "cm"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_streams_changes() {
    if !kubectl_available() {
        eprintln!("kubectl not installed; skipping");
        return;
    }
    let (server, client) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &server);
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(
        &Default::default(),
        &super::from(json!({"metadata": {"name": "w"}})),
    )
    .await
    .unwrap();
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&config)
        .env("KUBECACHEDIR", crate::kubectl_cache_dir(&config))
        .args(["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    assert!(
        next().await.starts_with("NAME"),
        "kubectl prints its default columns without Table output"
    );
    assert!(next().await.starts_with("w "));
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await
    .unwrap();
    assert!(next().await.starts_with("w "), "the change streams");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_prints_custom_resource_columns() {
    if !kubectl_available() {
        eprintln!("kubectl not installed; skipping");
        return;
    }
    let (server, _client) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &server);
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.roster.dev"},
        "spec": {"group": "roster.dev", "scope": "Namespaced", "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "additionalPrinterColumns": [{"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"color": {"type": "string"}}}}}}}]}});
    server
        .create_object("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        .unwrap();
    let gadget = json!({"apiVersion": "roster.dev/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"color": "red"}});
    server
        .create_object("/apis/roster.dev/v1/namespaces/default/gadgets", gadget)
        .unwrap();
    let out = ok(&config, &["get", "gadgets"]).await;
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "COLOR", "AGE"], "{out}");
    assert_eq!(rows[1][..2], ["g", "red"], "{out}");
}
