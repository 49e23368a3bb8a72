//! A plane: a real kube-apiserver, kube-proxy on it in a node namespace, and the endpoint controller under
//! test in the same namespace (so BackendSet probes reach sandboxes there). One plane per controller, shared
//! by the tests of this binary; each test works in its own Kubernetes namespace.
//!
//! kube-controller-manager watches every namespace and cannot be scoped to one, so it gets an API server of
//! its own; roster's plane uses the binary's shared real server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use roster_envtest::dataplane::{DataPlane, KubeProxyOptions, NODE_NAME, NodeProcess};
use roster_envtest::{RealApiServer, TestEnv, Tier, real};
use tokio::sync::OnceCell;

use crate::backends::register_crd;
use crate::kcm;
use crate::support::eventually;

/// The endpoint controller feeding kube-proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    /// roster, `--services all`, probing BackendSets from the node namespace.
    Roster,
    /// kube-controller-manager 1.20.2 with only its endpoint controller: a cross-check of the harness.
    Upstream,
}

/// roster's admin server, on the node namespace's loopback.
const ROSTER_ADMIN: &str = "127.0.0.1:9090";

pub struct Plane {
    pub server: Arc<RealApiServer>,
    pub dataplane: DataPlane,
    /// Kept running for as long as the plane lives.
    _controller: NodeProcess,
}

static ROSTER: OnceCell<Plane> = OnceCell::const_new();
static UPSTREAM: OnceCell<Plane> = OnceCell::const_new();

impl Plane {
    /// The shared plane of `controller`, or `None` (reason printed) when this machine cannot run it;
    /// in CI a missing piece fails the test instead, since scripts/test installs everything.
    pub async fn of(controller: Controller) -> Option<&'static Plane> {
        if let Some(why) = unavailable(controller) {
            assert!(
                std::env::var_os("CI").is_none(),
                "{why} (scripts/test installs it)"
            );
            eprintln!("data-plane test skipped: {why}");
            return None;
        }
        let cell = match controller {
            Controller::Roster => &ROSTER,
            Controller::Upstream => &UPSTREAM,
        };
        let plane = cell.get_or_try_init(|| Plane::start(controller)).await;
        Some(plane.unwrap_or_else(|e| panic!("starting the {controller:?} data plane: {e:#}")))
    }

    async fn start(controller: Controller) -> anyhow::Result<Plane> {
        let server = match controller {
            Controller::Roster => {
                let env = TestEnv::start_tier(Tier::Real).await?;
                env.real_server().expect("the real tier").clone()
            }
            Controller::Upstream => {
                let assets = RealApiServer::assets_from_env().expect("checked by unavailable()");
                Arc::new(RealApiServer::start(&assets, &[]).await?)
            }
        };
        let env = TestEnv::with_real(server.clone()).await?;
        prepare(&env, controller).await;
        let options = KubeProxyOptions::default();
        let dataplane = DataPlane::start(&server.url(), real::ADMIN_TOKEN, &options).await?;
        let controller = start_controller(&dataplane, controller).await?;
        Ok(Plane {
            server,
            dataplane,
            _controller: controller,
        })
    }

    /// A fresh environment (client, kubectl) on this plane's API server.
    pub async fn env(&self) -> TestEnv {
        TestEnv::with_real(self.server.clone())
            .await
            .expect("test environment")
    }
}

fn unavailable(controller: Controller) -> Option<String> {
    let Some(assets) = RealApiServer::assets_from_env() else {
        return Some(
            "KUBEBUILDER_ASSETS with kube-apiserver and etcd is not set (scripts/envtest-assets)".into(),
        );
    };
    if let Some(why) = DataPlane::unavailable() {
        return Some(why);
    }
    let kcm = assets.join("kube-controller-manager");
    (controller == Controller::Upstream && !kcm.is_file()).then(|| {
        format!(
            "{} has no kube-controller-manager (scripts/envtest-assets --with-controller-manager)",
            assets.display()
        )
    })
}

/// The Node kube-proxy runs as, and (roster's plane) the BackendSet CRD.
async fn prepare(env: &TestEnv, controller: Controller) {
    let node = env.kubelet().create_node(NODE_NAME, Some("zone-a")).await;
    if let Err(e) = node {
        assert!(
            matches!(&e, kube::Error::Api(s) if s.code == 409),
            "creating the Node: {e}"
        );
    }
    if controller == Controller::Roster {
        register_crd(env).await;
    }
}

async fn start_controller(dataplane: &DataPlane, controller: Controller) -> anyhow::Result<NodeProcess> {
    let kubeconfig = dataplane.node_kubeconfig().display().to_string();
    let process = match controller {
        Controller::Roster => {
            let args = [
                "run",
                "--kubeconfig",
                &kubeconfig,
                "--services",
                "all",
                "--admin-addr",
                ROSTER_ADMIN,
                "--log-level",
                "warn",
                // The Service CIDR is the only network denied besides the built-ins: the pod range,
                // where the BackendSet backends live, is probed.
                "--service-cidr",
                real::SERVICE_CIDR,
            ];
            let roster = PathBuf::from(env!("CARGO_BIN_EXE_roster"));
            dataplane.spawn("roster", &roster, &args.map(String::from))?
        }
        Controller::Upstream => {
            let kcm = RealApiServer::assets_from_env()
                .expect("checked by unavailable()")
                .join("kube-controller-manager");
            let mut args = kcm::args(dataplane.node_kubeconfig(), &["endpoint"]);
            args.push("--port=0".into());
            dataplane.spawn("kube-controller-manager", &kcm, &args)?
        }
    };
    wait_ready(dataplane, controller, &process).await;
    Ok(process)
}

/// roster's `/readyz`; kube-controller-manager's "Caches are synced for endpoint" log line.
async fn wait_ready(dataplane: &DataPlane, controller: Controller, process: &NodeProcess) {
    let client = dataplane.client();
    let admin: SocketAddr = ROSTER_ADMIN.parse().unwrap();
    eventually(&format!("{controller:?} is ready"), || async {
        match controller {
            Controller::Roster => client
                .get(admin, "/readyz")
                .await
                .is_ok_and(|(code, _)| code == 200),
            Controller::Upstream => process.log().contains("Caches are synced for endpoint"),
        }
    })
    .await;
}
