//! The API server a benchmark runs against, and the count of the controller's writes on it.
//!
//! * memory: roster's in-memory API server in this process; writes come from its request counters (every
//!   write to a resource the harness itself never writes is the controller's).
//! * real: etcd + kube-apiserver v1.20.2 from `KUBEBUILDER_ASSETS`, with a second static token for the
//!   controller under test (user `bench-controller`), so the audit log separates its requests from the
//!   harness's. The controller and the harness talk to kube-apiserver itself, not through the test
//!   environment's EndpointSlice facade: 1.20 serves no discovery.k8s.io/v1, so both controllers are compared
//!   on Endpoints, over kube-apiserver's own TLS (and HTTP/2).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use roster_envtest::{MemoryApiServer, RealApiServer, TestEnv, Tier, kubeconfig};
use serde::{Deserialize, Serialize};

/// The user the controller under test authenticates as on the real tier.
pub const CONTROLLER_USER: &str = "bench-controller";
const CONTROLLER_TOKEN: &str = "roster-bench-controller";

/// Resources the harness writes itself; every other write is the controller's (memory tier).
const HARNESS_RESOURCES: [&str; 6] = [
    "pods",
    "pods/status",
    "services",
    "nodes",
    "nodes/status",
    "namespaces",
];

pub struct Cluster {
    env: TestEnv,
    /// The harness's client: admin, to the API server itself.
    client: kube::Client,
    controller_kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(tier: Tier) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let controller_kubeconfig = dir.path().join("controller.kubeconfig");
        let env = match tier {
            Tier::Memory => TestEnv::start_tier(Tier::Memory).await?,
            Tier::Real => {
                let assets = RealApiServer::assets_from_env()
                    .context("the real tier needs KUBEBUILDER_ASSETS (run scripts/envtest-assets)")?;
                let token =
                    format!("{CONTROLLER_TOKEN},{CONTROLLER_USER},{CONTROLLER_USER}-uid,system:masters");
                let server = RealApiServer::start(&assets, &[token]).await?;
                TestEnv::with_real(Arc::new(server)).await?
            }
        };
        let token = (tier == Tier::Real).then_some(CONTROLLER_TOKEN);
        let url = env.apiserver_url();
        kubeconfig::write(&controller_kubeconfig, &url, token)?;
        let client = match tier {
            Tier::Memory => env.client(),
            Tier::Real => kube::Client::try_from(kubeconfig::admin_config(&url).await?)?,
        };
        Ok(Cluster {
            env,
            client,
            controller_kubeconfig,
            _dir: dir,
        })
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        self.env.apiserver_url()
    }

    /// The harness's (admin) client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn memory(&self) -> Option<&MemoryApiServer> {
        self.env.memory_server()
    }

    /// Kubeconfig of the controller under test (its own user on the real tier).
    pub fn controller_kubeconfig(&self) -> &Path {
        &self.controller_kubeconfig
    }

    /// Process id of kube-apiserver (real tier), for its CPU share.
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.env.real_server().map(|s| s.apiserver_pid())
    }

    /// Starts counting the controller's writes.
    pub fn begin_writes(&self) -> WriteWindow {
        let audit_offset = self
            .audit_log()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        if let Some(m) = self.memory() {
            m.reset_request_counts();
        }
        WriteWindow {
            audit_offset,
            since: SystemTime::now(),
        }
    }

    /// The controller's writes since `window` began.
    pub async fn writes_since(&self, window: &WriteWindow) -> anyhow::Result<WriteCounts> {
        match (self.memory(), self.audit_log()) {
            (Some(m), _) => Ok(memory_writes(m, window)),
            (None, Some(path)) => {
                // The audit backend writes each event when the request completes; give it a moment.
                tokio::time::sleep(Duration::from_millis(300)).await;
                audit_writes(&path, window.audit_offset)
            }
            (None, None) => anyhow::bail!("no write counter for this tier"),
        }
    }

    fn audit_log(&self) -> Option<PathBuf> {
        self.env.real_server().map(|s| s.dir().join("audit.log"))
    }
}

/// Where a write count starts.
pub struct WriteWindow {
    audit_offset: u64,
    since: SystemTime,
}

/// The controller's write requests in a window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WriteCounts {
    /// `"<verb> <resource>"` → requests (any response code).
    pub by_verb: BTreeMap<String, u64>,
    /// Write requests on `endpoints` (any verb, any response code).
    pub endpoints: u64,
    /// Successful creates, updates and patches of `endpoints`.
    pub endpoints_ok: u64,
    /// Write requests on `endpointslices`.
    pub endpointslices: u64,
    /// 409 answers to the controller's writes.
    pub conflicts: u64,
    /// Writes answered with another error.
    pub failed: u64,
    /// Updates that changed nothing, as the in-memory server counts them (real tier: see the observer).
    pub noop_server: Option<u64>,
}

impl WriteCounts {
    fn add(&mut self, verb: &str, resource: &str, n: u64) {
        *self.by_verb.entry(format!("{verb} {resource}")).or_default() += n;
        match resource {
            "endpoints" => self.endpoints += n,
            "endpointslices" => self.endpointslices += n,
            _ => {}
        }
    }

    fn add_code(&mut self, code: u16) {
        match code {
            409 => self.conflicts += 1,
            c if c >= 400 => self.failed += 1,
            _ => {}
        }
    }

    pub fn total(&self) -> u64 {
        self.by_verb.values().sum()
    }
}

fn memory_writes(m: &MemoryApiServer, window: &WriteWindow) -> WriteCounts {
    use roster_envtest::memory::Verb;
    let counts = m.request_counts();
    let mut out = WriteCounts::default();
    for ((verb, resource), n) in counts.iter() {
        let write = matches!(verb, Verb::Create | Verb::Update | Verb::Patch | Verb::Delete);
        if write && !HARNESS_RESOURCES.contains(&resource.as_str()) {
            out.add(&format!("{verb:?}").to_lowercase(), &resource, n);
        }
    }
    // Response codes come from the bounded request log (the last 10,000 requests).
    for r in m.request_log().iter().filter(|r| r.time >= window.since) {
        let controller = !HARNESS_RESOURCES.contains(&r.resource.as_str());
        let write = r
            .verb
            .is_some_and(|v| matches!(v, Verb::Update | Verb::Create | Verb::Patch | Verb::Delete));
        if controller && write {
            out.add_code(r.status);
        }
    }
    out.noop_server = Some(counts.noop_writes("endpoints") + counts.noop_writes("endpointslices"));
    out
}

#[derive(Deserialize)]
struct AuditEvent {
    stage: String,
    verb: String,
    user: AuditUser,
    #[serde(rename = "objectRef")]
    object_ref: Option<AuditObject>,
    #[serde(rename = "responseStatus")]
    response_status: Option<AuditStatus>,
}

#[derive(Deserialize)]
struct AuditUser {
    username: String,
}

#[derive(Deserialize)]
struct AuditObject {
    resource: Option<String>,
    subresource: Option<String>,
}

#[derive(Deserialize)]
struct AuditStatus {
    code: Option<u16>,
}

/// Counts the controller user's create/update/patch/delete requests in the audit log after `offset`.
fn audit_writes(path: &Path, offset: u64) -> anyhow::Result<WriteCounts> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let needle = format!("\"username\":\"{CONTROLLER_USER}\"");
    let mut out = WriteCounts::default();
    for line in text.lines().filter(|l| l.contains(&needle)) {
        let Ok(ev) = serde_json::from_str::<AuditEvent>(line) else {
            continue;
        };
        let write = matches!(ev.verb.as_str(), "create" | "update" | "patch" | "delete");
        if ev.stage != "ResponseComplete" || !write || ev.user.username != CONTROLLER_USER {
            continue;
        }
        let obj = ev.object_ref.unwrap_or(AuditObject {
            resource: None,
            subresource: None,
        });
        let mut resource = obj.resource.unwrap_or_default();
        if let Some(sub) = obj.subresource {
            resource = format!("{resource}/{sub}");
        }
        let code = ev.response_status.and_then(|s| s.code).unwrap_or(0);
        out.add(&ev.verb, &resource, 1);
        out.add_code(code);
        if resource == "endpoints" && ev.verb != "delete" && (200..300).contains(&code) {
            out.endpoints_ok += 1;
        }
    }
    Ok(out)
}
