//! roster's envtest-style test environment: one API for two tiers of Kubernetes API server.
//!
//! * [`Tier::Real`]: `etcd` + `kube-apiserver` from `KUBEBUILDER_ASSETS` (Go envtest's convention; the
//!   project's `scripts/envtest-assets` builds v1.20.2 from Debian's source package). One server is shared by
//!   all tests of a test binary; tests isolate themselves with their own namespaces.
//! * [`Tier::Memory`]: roster's in-memory API server ([`memory::MemoryApiServer`]), one per environment, with
//!   fault injection and request counters, serving what 1.20 lacks (discovery.k8s.io/v1 EndpointSlices,
//!   streaming lists).
//!
//! The tier comes from `ROSTER_TESTENV=memory|real|auto` (auto, the default: real when `KUBEBUILDER_ASSETS`
//! is set).
//!
//! On top of the real tier, [`dataplane::DataPlane`] runs kube-proxy in a network namespace, with pods as
//! namespaces on its bridge, so tests can send real connections through ClusterIPs.

pub mod dataplane;
pub mod fixtures;
pub mod http;
pub mod kubeconfig;
pub mod kubelet;
pub mod real;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;

pub use dataplane::DataPlane;
pub use kubelet::Kubelet;
pub use real::{PeerApiServer, RealApiServer};
pub use roster_apiserver::{self as memory, MemoryApiServer, MemoryOptions, kubectl_cache_dir};

/// Which API server a [`TestEnv`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    Memory,
    Real,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Memory => "memory",
            Tier::Real => "real",
        })
    }
}

impl Tier {
    /// The tier `ROSTER_TESTENV` asks for (`auto`: real when `KUBEBUILDER_ASSETS` is set).
    pub fn from_env() -> anyhow::Result<Tier> {
        match std::env::var("ROSTER_TESTENV").unwrap_or_default().as_str() {
            "memory" => Ok(Tier::Memory),
            "real" => Ok(Tier::Real),
            "" | "auto" if std::env::var_os("KUBEBUILDER_ASSETS").is_some() => Ok(Tier::Real),
            "" | "auto" => Ok(Tier::Memory),
            other => bail!("ROSTER_TESTENV={other}: expected memory, real or auto"),
        }
    }

    /// Every tier this machine can run: memory always, real when `KUBEBUILDER_ASSETS` holds the binaries.
    /// `ROSTER_TESTENV=memory|real` narrows it to one tier.
    pub fn available() -> Vec<Tier> {
        let real = RealApiServer::assets_from_env().is_some();
        match std::env::var("ROSTER_TESTENV").unwrap_or_default().as_str() {
            "memory" => vec![Tier::Memory],
            "real" => vec![Tier::Real],
            _ if real => vec![Tier::Memory, Tier::Real],
            _ => vec![Tier::Memory],
        }
    }
}

enum Backend {
    Memory(MemoryApiServer),
    Real(Arc<RealApiServer>),
    /// A real server of this environment alone, which a test may kill and restart (same port, same etcd).
    DedicatedReal {
        server: Arc<tokio::sync::Mutex<RealApiServer>>,
        url: String,
    },
}

/// A running API server with an admin client and a kubeconfig file kubectl can use.
pub struct TestEnv {
    backend: Backend,
    client: kube::Client,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

static SHARED_REAL: OnceCell<Arc<RealApiServer>> = OnceCell::const_new();

impl TestEnv {
    /// Starts the tier `ROSTER_TESTENV` asks for.
    pub async fn start() -> anyhow::Result<TestEnv> {
        TestEnv::start_tier(Tier::from_env()?).await
    }

    /// Starts (memory) or joins (real: one shared server per test process) the given tier.
    pub async fn start_tier(tier: Tier) -> anyhow::Result<TestEnv> {
        match tier {
            Tier::Memory => TestEnv::memory(MemoryOptions::default()).await,
            Tier::Real => TestEnv::with_real(shared_real().await?).await,
        }
    }

    /// A fresh in-memory API server with the given options.
    pub async fn memory(options: MemoryOptions) -> anyhow::Result<TestEnv> {
        let server = MemoryApiServer::start(options).await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        kubeconfig::write(&kubeconfig, &server.url(), None)?;
        let client = kube::Client::try_from(kubeconfig::config(&server.url(), None).await?)?;
        Ok(TestEnv {
            backend: Backend::Memory(server),
            client,
            kubeconfig,
            _dir: dir,
        })
    }

    /// An environment on a real API server the caller started (for tests that restart or own it).
    pub async fn with_real(server: Arc<RealApiServer>) -> anyhow::Result<TestEnv> {
        let url = server.url();
        TestEnv::on_real(Backend::Real(server), &url).await
    }

    /// A real API server (etcd + kube-apiserver from `KUBEBUILDER_ASSETS`) for this environment alone, so a
    /// test can kill and restart kube-apiserver ([`TestEnv::dedicated_real_server`]) without disturbing
    /// others. It stops when the environment is dropped.
    pub async fn dedicated_real() -> anyhow::Result<TestEnv> {
        let assets = RealApiServer::assets_from_env()
            .context("the real tier needs KUBEBUILDER_ASSETS with kube-apiserver and etcd")?;
        let server = RealApiServer::start(&assets, &[]).await?;
        let url = server.url();
        let server = Arc::new(tokio::sync::Mutex::new(server));
        TestEnv::on_real(
            Backend::DedicatedReal {
                server,
                url: url.clone(),
            },
            &url,
        )
        .await
    }

    async fn on_real(backend: Backend, url: &str) -> anyhow::Result<TestEnv> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        kubeconfig::write(&kubeconfig, url, Some(real::ADMIN_TOKEN))?;
        let client = kube::Client::try_from(kubeconfig::admin_config(url).await?)?;
        Ok(TestEnv {
            backend,
            client,
            kubeconfig,
            _dir: dir,
        })
    }

    pub fn tier(&self) -> Tier {
        match self.backend {
            Backend::Memory(_) => Tier::Memory,
            Backend::Real(_) | Backend::DedicatedReal { .. } => Tier::Real,
        }
    }

    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn url(&self) -> String {
        match &self.backend {
            Backend::Memory(m) => m.url(),
            Backend::Real(r) => r.url(),
            Backend::DedicatedReal { url, .. } => url.clone(),
        }
    }

    /// The in-memory server's hooks (fault injection, counters, compaction); `None` on the real tier.
    pub fn memory_server(&self) -> Option<&MemoryApiServer> {
        match &self.backend {
            Backend::Memory(m) => Some(m),
            Backend::Real(_) | Backend::DedicatedReal { .. } => None,
        }
    }

    /// The shared (or caller-started) real server; `None` on the memory tier and for
    /// [`TestEnv::dedicated_real`], whose server is [`TestEnv::dedicated_real_server`].
    pub fn real_server(&self) -> Option<&Arc<RealApiServer>> {
        match &self.backend {
            Backend::Real(r) => Some(r),
            Backend::Memory(_) | Backend::DedicatedReal { .. } => None,
        }
    }

    /// The server of a [`TestEnv::dedicated_real`] environment, to kill or restart.
    pub fn dedicated_real_server(&self) -> Option<Arc<tokio::sync::Mutex<RealApiServer>>> {
        match &self.backend {
            Backend::DedicatedReal { server, .. } => Some(server.clone()),
            _ => None,
        }
    }

    /// Whether the server serves `discovery.k8s.io/v1` (1.20 serves only v1beta1).
    pub fn serves_endpointslices_v1(&self) -> bool {
        self.tier() == Tier::Memory
    }

    /// A `kubectl` command bound to this environment's kubeconfig and discovery cache.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("KUBECACHEDIR", kubectl_cache_dir(&self.kubeconfig));
        cmd
    }

    /// Runs kubectl with `args`, returning stdout, or an error carrying stderr.
    pub fn kubectl_run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl().args(args).output().context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    pub fn kubelet(&self) -> Kubelet {
        Kubelet::new(self.client())
    }

    /// Creates a namespace with a unique name starting with `prefix`, for isolation on a shared server.
    pub async fn create_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(name)
    }
}

async fn shared_real() -> anyhow::Result<Arc<RealApiServer>> {
    let server = SHARED_REAL
        .get_or_try_init(|| async {
            let assets = RealApiServer::assets_from_env().context(
                "the real tier needs KUBEBUILDER_ASSETS with kube-apiserver and etcd (run scripts/envtest-assets)",
            )?;
            RealApiServer::start(&assets, &[]).await.map(Arc::new)
        })
        .await?;
    Ok(server.clone())
}
