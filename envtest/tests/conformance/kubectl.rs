//! H. kubectl 1.32 against each tier: client-side apply of the seed example, get (json, jsonpath, watch),
//! patch of the status subresource, delete, and the Endpoints table.

use std::process::Stdio;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{Case, Ctx, MERGE, cases, check_eq, secs};

pub fn cases() -> Vec<Case> {
    cases![
        kubectl_apply_creates_then_configures,
        kubectl_get_pods_json,
        kubectl_get_cluster_ip_jsonpath,
        kubectl_patch_status_subresource,
        kubectl_delete_wait_false,
        kubectl_get_watch_streams_changes,
        kubectl_get_endpoints,
        kubectl_keeps_its_discovery_cache_beside_the_kubeconfig,
    ]
}

/// The seed notes' `hostname-svc-clusterip` (port 8080 → targetPort 80) and a pod it selects.
fn seed_manifest(target_port: u16, pod_tier: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: hostname-svc-clusterip\nspec:\n  ports:\n  - name: web-port\n    \
         port: 8080\n    targetPort: {target_port}\n  selector:\n    app: webserver\n  type: ClusterIP\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: hostname-pod\n  labels:\n    app: webserver\n    tier: {pod_tier}\n\
         spec:\n  containers:\n  - name: web\n    image: alicek106/rr-test:echo-hostname\n    ports:\n    - containerPort: 80\n"
    )
}

/// Runs kubectl in the case's namespace off the async threads.
async fn kubectl(cx: &Ctx, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = cx.env.kubectl();
    cmd.arg("-n").arg(&cx.ns).args(args);
    let what = args.join(" ");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running kubectl")?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

async fn apply_manifest(cx: &Ctx, manifest: &str) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, manifest)?;
    kubectl(cx, &["apply", "-f", file.to_str().context("temp path")?]).await
}

async fn kubectl_apply_creates_then_configures(cx: Ctx) -> anyhow::Result<()> {
    let out = apply_manifest(&cx, &seed_manifest(80, "web")).await?;
    check_eq!(
        out.trim(),
        "service/hostname-svc-clusterip created\npod/hostname-pod created"
    );
    let svc_path = format!("{}/hostname-svc-clusterip", cx.core("services"));
    let svc = cx.get(&svc_path).await?.ok()?;
    check_eq!(
        svc["spec"]["ports"],
        json!([{"name": "web-port", "protocol": "TCP", "port": 8080, "targetPort": 80}])
    );
    let annotation = &svc["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"];
    anyhow::ensure!(
        annotation.is_string(),
        "no last-applied-configuration: {}",
        svc["metadata"]
    );
    // A changed manifest goes through the client-side apply path: GET, then a strategic merge PATCH.
    let out = apply_manifest(&cx, &seed_manifest(8000, "db")).await?;
    check_eq!(
        out.trim(),
        "service/hostname-svc-clusterip configured\npod/hostname-pod configured"
    );
    let svc = cx.get(&svc_path).await?.ok()?;
    check_eq!(svc["spec"]["ports"][0]["targetPort"], json!(8000));
    let pod = cx.get(&format!("{}/hostname-pod", cx.core("pods"))).await?.ok()?;
    check_eq!(
        pod["metadata"]["labels"],
        json!({"app": "webserver", "tier": "db"})
    );
    let out = apply_manifest(&cx, &seed_manifest(8000, "db")).await?;
    check_eq!(
        out.trim(),
        "service/hostname-svc-clusterip unchanged\npod/hostname-pod unchanged"
    );
    Ok(())
}

async fn kubectl_get_pods_json(cx: Ctx) -> anyhow::Result<()> {
    cx.create_pod("b", json!({"app": "x"}), None).await?;
    cx.create_pod("a", json!({"app": "x"}), Some("n1")).await?;
    let list: Value = serde_json::from_str(&kubectl(&cx, &["get", "pods", "-o", "json"]).await?)?;
    check_eq!(list["kind"], json!("List"));
    check_eq!(crate::support::item_names(&list), vec!["a", "b"]);
    check_eq!(list["items"][0]["kind"], json!("Pod"));
    check_eq!(list["items"][0]["spec"]["nodeName"], json!("n1"));
    let by_label = kubectl(&cx, &["get", "pods", "-l", "app=x", "-o", "name"]).await?;
    check_eq!(by_label, "pod/a\npod/b\n");
    Ok(())
}

async fn kubectl_get_cluster_ip_jsonpath(cx: Ctx) -> anyhow::Result<()> {
    let svc = json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}});
    let svc = cx.post(&cx.core("services"), svc).await?.ok()?;
    let ip = kubectl(&cx, &["get", "svc", "s", "-o", "jsonpath={.spec.clusterIP}"]).await?;
    check_eq!(json!(ip), svc["spec"]["clusterIP"]);
    Ok(())
}

async fn kubectl_patch_status_subresource(cx: Ctx) -> anyhow::Result<()> {
    cx.create_pod("p", json!({}), Some("n1")).await?;
    let patch = r#"{"status":{"phase":"Running","podIP":"10.1.2.3"}}"#;
    let out = kubectl(
        &cx,
        &[
            "patch",
            "pod",
            "p",
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
        ],
    )
    .await?;
    check_eq!(out.trim(), "pod/p patched");
    let pod = cx.get(&format!("{}/p", cx.core("pods"))).await?.ok()?;
    check_eq!(
        (pod["status"]["phase"].clone(), pod["status"]["podIP"].clone()),
        (json!("Running"), json!("10.1.2.3"))
    );
    let out = kubectl(
        &cx,
        &[
            "patch",
            "pod",
            "p",
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
        ],
    )
    .await?;
    check_eq!(out.trim(), "pod/p patched (no change)");
    Ok(())
}

async fn kubectl_delete_wait_false(cx: Ctx) -> anyhow::Result<()> {
    cx.create_pod("bound", json!({}), Some("n1")).await?;
    cx.create_pod("loose", json!({}), None).await?;
    for name in ["bound", "loose"] {
        let out = kubectl(&cx, &["delete", "pod", name, "--wait=false"]).await?;
        check_eq!(out.trim(), format!(r#"pod "{name}" deleted"#));
    }
    let bound = cx.get(&format!("{}/bound", cx.core("pods"))).await?.ok()?;
    anyhow::ensure!(
        bound["metadata"]["deletionTimestamp"].is_string(),
        "bound pod not terminating: {}",
        bound["metadata"]
    );
    check_eq!(cx.get(&format!("{}/loose", cx.core("pods"))).await?.code, 404u16);
    Ok(())
}

async fn kubectl_get_watch_streams_changes(cx: Ctx) -> anyhow::Result<()> {
    cx.create_pod("a", json!({}), None).await?;
    let mut cmd = tokio::process::Command::from(cx.env.kubectl());
    cmd.args(["-n", &cx.ns, "get", "pods", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd
        .kill_on_drop(true)
        .spawn()
        .context("spawning kubectl get -w")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut next_line = async || -> anyhow::Result<String> {
        let line = tokio::time::timeout(secs(15), lines.next_line())
            .await
            .context("no line from kubectl -w")??;
        line.context("kubectl -w exited")
    };
    check_eq!(next_line().await?, "pod/a", "the initial list");
    cx.create_pod("b", json!({}), None).await?;
    check_eq!(next_line().await?, "pod/b", "a created pod");
    cx.patch(
        &format!("{}/a", cx.core("pods")),
        MERGE,
        json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await?
    .ok()?;
    check_eq!(next_line().await?, "pod/a", "a modified pod");
    child.kill().await?;
    Ok(())
}

async fn kubectl_get_endpoints(cx: Ctx) -> anyhow::Result<()> {
    let addresses = json!([{"ip": "10.1.2.3"}, {"ip": "10.1.2.4"}]);
    let ep = json!({"metadata": {"name": "my-service"}, "subsets": [{"addresses": addresses, "ports": [{"port": 80}]}]});
    cx.post(&cx.core("endpoints"), ep).await?.ok()?;
    let out = kubectl(&cx, &["get", "endpoints"]).await?;
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    check_eq!(rows.len(), 2usize, "header and one row in {out:?}");
    check_eq!(rows[0], vec!["NAME", "ENDPOINTS", "AGE"]);
    check_eq!(rows[1][..2], ["my-service", "10.1.2.3:80,10.1.2.4:80"]);
    Ok(())
}

/// kubectl keys its discovery cache by host and port only, and test servers reuse ports: a shared
/// `~/.kube/cache` once handed the in-memory server's kubectl a 1.20 server's EndpointSlice v1beta1.
async fn kubectl_keeps_its_discovery_cache_beside_the_kubeconfig(cx: Ctx) -> anyhow::Result<()> {
    kubectl(&cx, &["get", "endpointslices"]).await?;
    let cache = roster_envtest::kubectl_cache_dir(cx.env.kubeconfig()).join("discovery");
    anyhow::ensure!(
        cache.is_dir(),
        "kubectl wrote no discovery cache in {}",
        cache.display()
    );
    Ok(())
}
