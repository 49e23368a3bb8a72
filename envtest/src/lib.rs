//! roster's envtest-style test environment: one API for two tiers of Kubernetes API server.
//!
//! * [`Tier::Real`]: `etcd` + `kube-apiserver` from `KUBEBUILDER_ASSETS` (Go envtest's convention; the
//!   project's `scripts/envtest-assets` builds v1.20.2 from Debian's source package). One server is shared by
//!   all tests of a test binary; tests isolate themselves with their own namespaces. Clients reach it
//!   through the [`facade`], which adds `discovery.k8s.io/v1` EndpointSlices over 1.20's v1beta1
//!   (`ROSTER_FACADE=off` hands out kube-apiserver's own URL instead).
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
pub mod facade;
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
pub use facade::Facade;
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
    /// The v1 EndpointSlice facade in front of a real server, which clients and kubeconfigs are given.
    facade: Option<Arc<Facade>>,
    client: kube::Client,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

static SHARED_REAL: OnceCell<(Arc<RealApiServer>, Option<Arc<Facade>>)> = OnceCell::const_new();

impl TestEnv {
    /// Starts the tier `ROSTER_TESTENV` asks for.
    pub async fn start() -> anyhow::Result<TestEnv> {
        TestEnv::start_tier(Tier::from_env()?).await
    }

    /// Starts (memory) or joins (real: one shared server per test process) the given tier.
    pub async fn start_tier(tier: Tier) -> anyhow::Result<TestEnv> {
        match tier {
            Tier::Memory => TestEnv::memory(MemoryOptions::default()).await,
            Tier::Real => {
                let (server, facade) = shared_real().await?;
                let url = server.url();
                TestEnv::on_real(Backend::Real(server), facade, &url).await
            }
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
            facade: None,
            client,
            kubeconfig,
            _dir: dir,
        })
    }

    /// An environment on a real API server the caller started (for tests that restart or own it), behind a
    /// facade of its own.
    pub async fn with_real(server: Arc<RealApiServer>) -> anyhow::Result<TestEnv> {
        let url = server.url();
        let facade = facade_for(&server)?;
        TestEnv::on_real(Backend::Real(server), facade, &url).await
    }

    /// A real API server (etcd + kube-apiserver from `KUBEBUILDER_ASSETS`) for this environment alone, so a
    /// test can kill and restart kube-apiserver ([`TestEnv::dedicated_real_server`]) without disturbing
    /// others. It stops when the environment is dropped.
    pub async fn dedicated_real() -> anyhow::Result<TestEnv> {
        let assets = RealApiServer::assets_from_env()
            .context("the real tier needs KUBEBUILDER_ASSETS with kube-apiserver and etcd")?;
        let server = RealApiServer::start(&assets, &[]).await?;
        let url = server.url();
        let facade = facade_for(&server)?;
        let server = Arc::new(tokio::sync::Mutex::new(server));
        TestEnv::on_real(
            Backend::DedicatedReal {
                server,
                url: url.clone(),
            },
            facade,
            &url,
        )
        .await
    }

    /// Clients and the kubeconfig get the facade's URL when there is a facade, else kube-apiserver's.
    async fn on_real(
        backend: Backend,
        facade: Option<Arc<Facade>>,
        apiserver_url: &str,
    ) -> anyhow::Result<TestEnv> {
        let url = facade.as_ref().map_or(apiserver_url.to_string(), |f| f.url());
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        kubeconfig::write(&kubeconfig, &url, Some(real::ADMIN_TOKEN))?;
        let client = kube::Client::try_from(kubeconfig::admin_config(&url).await?)?;
        Ok(TestEnv {
            backend,
            facade,
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

    /// The client configuration this environment's kubeconfig gives, for code under test that builds its own
    /// client (roster does).
    pub async fn client_config(&self) -> anyhow::Result<kube::Config> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)
    }

    /// The URL clients are given: the in-memory server, or the real tier's facade (when it runs).
    pub fn url(&self) -> String {
        match &self.facade {
            Some(facade) => facade.url(),
            None => self.apiserver_url(),
        }
    }

    /// The API server itself, never the facade: on the real tier, kube-apiserver 1.20 (v1beta1 slices only).
    pub fn apiserver_url(&self) -> String {
        match &self.backend {
            Backend::Memory(m) => m.url(),
            Backend::Real(r) => r.url(),
            Backend::DedicatedReal { url, .. } => url.clone(),
        }
    }

    /// An admin client of [`TestEnv::apiserver_url`], bypassing the facade.
    pub async fn apiserver_client(&self) -> anyhow::Result<kube::Client> {
        let config = match self.tier() {
            Tier::Memory => kubeconfig::config(&self.apiserver_url(), None).await?,
            Tier::Real => kubeconfig::admin_config(&self.apiserver_url()).await?,
        };
        Ok(kube::Client::try_from(config)?)
    }

    /// The real tier's v1 EndpointSlice facade, when it runs.
    pub fn facade(&self) -> Option<&Facade> {
        self.facade.as_deref()
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

    /// Whether [`TestEnv::url`] serves `discovery.k8s.io/v1`: the in-memory server does, and the real tier
    /// does through its facade (1.20 itself serves only v1beta1).
    pub fn serves_endpointslices_v1(&self) -> bool {
        self.tier() == Tier::Memory || self.facade.is_some()
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

async fn shared_real() -> anyhow::Result<(Arc<RealApiServer>, Option<Arc<Facade>>)> {
    let shared = SHARED_REAL
        .get_or_try_init(|| async {
            let assets = RealApiServer::assets_from_env().context(
                "the real tier needs KUBEBUILDER_ASSETS with kube-apiserver and etcd (run scripts/envtest-assets)",
            )?;
            let server = RealApiServer::start(&assets, &[]).await?;
            let facade = facade_for(&server)?;
            anyhow::Ok((Arc::new(server), facade))
        })
        .await?;
    Ok(shared.clone())
}

/// A facade in front of `server`, unless `ROSTER_FACADE=off` asks for kube-apiserver itself.
fn facade_for(server: &RealApiServer) -> anyhow::Result<Option<Arc<Facade>>> {
    if !Facade::wanted()? {
        return Ok(None);
    }
    Ok(Some(Arc::new(Facade::start(&server.url(), &server.cert_dir())?)))
}
