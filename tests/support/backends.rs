//! What the BackendSet integration tests need besides an API server: test addresses on a dummy interface,
//! TCP/HTTP backends listening there, a DNS server, the BackendSet CRD, and roster's controller to drive.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use clap::Parser;
use hickory_resolver::proto::op::{Message, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use roster::admin::{Health, Liveness, Readiness};
use roster::args::{Cli, Command as RosterCommand};
use roster::backendset::{BackendArgs, BackendSet, BackendView};
use roster::cache::ServiceKey;
use roster::controller::{self, Config, Context};
use roster::metrics::Metrics;
use roster::write::{BudgetMode, Leadership, WriteBudget, Writer};
use roster_envtest::TestEnv;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::support::{eventually, eventually_some};

/// Addresses the tests' backends listen on: on a dummy interface of this machine, so probes never leave
/// it, and of a range Endpoints validation accepts (TEST-NET-2).
pub const LIVE_IP: &str = "198.51.100.10";
pub const OTHER_IP: &str = "198.51.100.11";

/// The interface of this test process (and its veth peer): named after the process, removed once it is
/// gone, so that a test binary never removes the addresses another one uses.
fn interface() -> (String, String) {
    let me = std::process::id();
    (format!("rbs{me}"), format!("rbs{me}p"))
}

/// Puts [`LIVE_IP`] and [`OTHER_IP`] on a dummy (or veth) interface of this test process (once). `false`,
/// with the reason printed, when that is not possible here (not root, no `ip`): the test is then skipped.
pub fn test_addresses() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(setup_interface);
    if let Err(why) = ready {
        eprintln!("skipped: the BackendSet tests need {LIVE_IP} and {OTHER_IP} on a dummy interface: {why}");
    }
    ready.is_ok()
}

fn setup_interface() -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("running ip: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("File exists") || stderr.contains("already assigned") {
            Ok(())
        } else {
            Err(format!("ip {}: {}", args.join(" "), stderr.trim()))
        }
    };
    // A dummy interface; where the kernel has no dummy driver, one end of a veth pair (its peer stays in
    // this network namespace too). Either way the addresses are local: probes never leave the machine.
    let (interface, peer) = interface();
    if let Err(no_dummy) = run(&["link", "add", &interface, "type", "dummy"]) {
        run(&["link", "add", &interface, "type", "veth", "peer", "name", &peer])
            .map_err(|no_veth| format!("{no_dummy}; {no_veth}"))?;
        run(&["link", "set", &peer, "up"])?;
    }
    // Removed once this process is gone, however it ends (a static's destructor never runs).
    let me = std::process::id();
    let cleanup = format!("while kill -0 {me} 2>/dev/null; do sleep 1; done; ip link del {interface}");
    roster_envtest::real::spawn_shell(&cleanup).map_err(|e| format!("starting the link cleaner: {e}"))?;
    for ip in [LIVE_IP, OTHER_IP] {
        run(&["addr", "add", &format!("{ip}/32"), "dev", &interface])?;
    }
    run(&["link", "set", &interface, "up"])?;
    std::net::TcpListener::bind((LIVE_IP, 0))
        .map(drop)
        .map_err(|e| format!("binding {LIVE_IP}: {e}"))
}

/// A port nothing listens on at `ip` now (for backends that are down from the start).
pub fn free_port(ip: &str) -> u16 {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind a test address");
    listener.local_addr().unwrap().port()
}

/// A TCP and HTTP/1.1 backend on a test address: answers every request with the current status code;
/// `stop` closes the listener (connections are refused), `start` opens it again on the same port.
pub struct TestBackend {
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
    accepted: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestBackend {
    pub async fn start(ip: &str, port: u16) -> TestBackend {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let mut backend = TestBackend {
            addr,
            status: Arc::new(AtomicU16::new(200)),
            accepted: Arc::new(AtomicUsize::new(0)),
            stop: None,
        };
        backend.listen().await;
        backend
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    async fn listen(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).expect("bind the test backend");
        let listener: TcpListener = socket.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (status, accepted) = (self.status.clone(), self.accepted.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = tokio::select! {
                    conn = listener.accept() => match conn { Ok(c) => c, Err(_) => return },
                    _ = &mut stop_rx => return,
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let code = status.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0; 4096];
                    let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await
                    else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let answer =
                        format!("HTTP/1.1 {code} Test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        self.stop = Some(stop_tx);
    }

    /// Closes the listener: probes get "connection refused".
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Listens again on the same address and port.
    pub async fn restart(&mut self) {
        self.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.listen().await;
    }

    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the test DNS server answers a name.
#[derive(Clone, Debug)]
pub enum Answer {
    Records(Vec<IpAddr>),
    NxDomain,
    ServFail,
}

/// A DNS server on 127.0.0.1 (UDP) answering A and AAAA queries from a table, with a fixed TTL.
pub struct TestDns {
    pub addr: SocketAddr,
    names: Arc<Mutex<HashMap<String, Answer>>>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    pub async fn start(ttl: u32) -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let names: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let queries = Arc::new(AtomicUsize::new(0));
        let (table, count) = (names.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let answer = answer(&request, &table.lock().unwrap(), ttl);
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        TestDns {
            addr,
            names,
            queries,
            task,
        }
    }

    pub fn set(&self, name: &str, answer: Answer) {
        self.names.lock().unwrap().insert(name.to_owned(), answer);
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(request: &Message, names: &HashMap<String, Answer>, ttl: u32) -> Message {
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    let Some(query) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    response.add_query(query.clone());
    let name = query.name().to_ascii().trim_end_matches('.').to_lowercase();
    match names.get(&name) {
        None | Some(Answer::NxDomain) => response.metadata.response_code = ResponseCode::NXDomain,
        Some(Answer::ServFail) => response.metadata.response_code = ResponseCode::ServFail,
        Some(Answer::Records(ips)) => {
            for ip in ips {
                let data = match (ip, query.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                response.add_answer(Record::from_rdata(query.name().clone(), ttl, data));
            }
        }
    }
    response
}

/// Registers the BackendSet CRD from crds/ (once per server) and waits until it is served.
pub async fn register_crd(env: &TestEnv) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/backendsets.roster.dev.yaml");
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("crds/ file")).expect("CRD YAML");
    let api = Api::<CustomResourceDefinition>::all(env.client());
    match api.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(err) => panic!("creating the BackendSet CRD: {err}"),
    }
    eventually("the BackendSet CRD is Established", || async {
        let Ok(crd) = api.get("backendsets.roster.dev").await else {
            return false;
        };
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    })
    .await;
    let sets = Api::<BackendSet>::all(env.client());
    eventually("BackendSets are served", || async {
        sets.list(&Default::default()).await.is_ok()
    })
    .await;
}

/// roster's controller running in this process against a test environment (services=annotated, one
/// namespace), so that tests can look at the BackendSet views it publishes.
pub struct Harness {
    pub ctx: Arc<Context>,
    pub metrics: Metrics,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Starts the controller for `namespace` with `args`; waits until its caches synced.
    pub async fn start(env: &TestEnv, namespace: &str, args: BackendArgs) -> Harness {
        let metrics = Metrics::new();
        let writer = Writer::new(
            env.client(),
            Arc::new(WriteBudget::new(
                BudgetMode::Fixed {
                    qps: 100.0,
                    burst: 100,
                },
                metrics.clone(),
            )),
            metrics.clone(),
            Leadership::new(true),
            "test".into(),
        );
        let cli = [
            "roster",
            "run",
            "--services",
            "annotated",
            "--namespace",
            namespace,
            "--workers",
            "2",
        ];
        let RosterCommand::Run(run) = Cli::try_parse_from(cli).expect("valid flags").command else {
            unreachable!("a run command")
        };
        let config = Config::from_args(&run.controller);
        let slices = controller::server_serves(&env.client(), "discovery.k8s.io/v1", "endpointslices").await;
        let ctx = Arc::new(Context::new(config, slices, writer, metrics.clone(), Some(args)));
        let readiness = Readiness::default();
        let health = Health {
            readiness: readiness.clone(),
            liveness: Liveness::new(Duration::from_secs(600)),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(controller::run(ctx.clone(), env.client(), health, stop.clone()));
        eventually("the controller's caches synced", || async {
            readiness.is_ready()
        })
        .await;
        Harness {
            ctx,
            metrics,
            stop,
            task,
        }
    }

    /// The view the Service `ns/name` publishes, if a BackendSet is bound to it.
    pub fn view(&self, ns: &str, name: &str) -> Option<Arc<BackendView>> {
        let svc = self
            .ctx
            .cache
            .read()
            .unwrap()
            .service(&ServiceKey::new(ns, name))?;
        self.ctx.backendsets.as_ref()?.bound_view(&svc)
    }

    /// Every Service of `ns` a BackendSet is bound to, sorted.
    pub fn bound_services(&self, ns: &str) -> Vec<ServiceKey> {
        let keys = self.ctx.cache.read().unwrap().service_keys();
        let bound = keys.into_iter().filter(|k| &*k.namespace == ns);
        bound.filter(|k| self.view(ns, &k.name).is_some()).collect()
    }

    pub fn probes(&self, result: &str) -> u64 {
        self.metrics.backendset.probes.with_label_values(&[result]).get()
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Quick probes: every second, 1s timeout.
pub fn test_args() -> BackendArgs {
    BackendArgs {
        dns_min_ttl: Duration::from_secs(1),
        dns_max_ttl: Duration::from_secs(2),
        ..BackendArgs::default()
    }
}

/// The current BackendSet, once `ready` holds for it.
pub async fn wait_backendset<F>(env: &TestEnv, ns: &str, name: &str, what: &str, ready: F) -> BackendSet
where
    F: Fn(&BackendSet) -> bool,
{
    let api = Api::<BackendSet>::namespaced(env.client(), ns);
    eventually_some(&format!("BackendSet {ns}/{name}: {what}"), || async {
        api.get(name).await.ok().filter(|bs| ready(bs))
    })
    .await
}
