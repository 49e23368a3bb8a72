//! Clients in the node namespace: every request a new TCP connection, so each one goes through kube-proxy's
//! rules afresh (as a new connection of a real client would), and a load of them at a steady rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::netns::Netns;

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Who answered a request: a [`super::Sandbox`]'s name and the port it was reached on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Answer {
    pub name: String,
    pub port: u16,
}

/// Makes requests from inside the node namespace.
#[derive(Clone)]
pub struct Client {
    node: Arc<Netns>,
}

impl Client {
    pub(super) fn new(node: Arc<Netns>) -> Client {
        Client { node }
    }

    /// `GET http://{addr}{path}` over a new connection: the status code and the body.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
        let socket = self.node.tcp_socket()?;
        let exchange = async {
            let stream = socket
                .connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            crate::http::exchange_on(stream, addr, path)
                .await
                .with_context(|| format!("no HTTP answer from {addr}"))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .with_context(|| format!("no answer from {addr} within {TIMEOUT:?}"))?
    }

    /// Asks `addr` (a ClusterIP and port) which sandbox answers.
    pub async fn ask(&self, addr: SocketAddr) -> anyhow::Result<Answer> {
        let (code, body) = self.get(addr, "/").await?;
        let answer = body.trim().split_once(' ').and_then(|(name, port)| {
            Some(Answer {
                name: name.to_string(),
                port: port.parse().ok()?,
            })
        });
        match answer {
            Some(answer) if code == 200 => Ok(answer),
            _ => bail!("unexpected answer from {addr}: {code} {body:?}"),
        }
    }

    /// `n` requests to `addr` one after the other; the answers in order (an error is a failed request).
    pub async fn ask_many(&self, addr: SocketAddr, n: usize) -> Vec<anyhow::Result<Answer>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.ask(addr).await);
        }
        out
    }

    /// Starts asking `addr` `per_second` times a second, each request on its own task.
    pub fn load(&self, addr: SocketAddr, per_second: u32) -> Load {
        let (stop_tx, stop_rx) = oneshot::channel();
        let client = self.clone();
        let task = tokio::spawn(run_load(client, addr, per_second, stop_rx));
        Load {
            stop: Some(stop_tx),
            task,
        }
    }
}

/// One request of a [`Load`]: when it was sent and how it ended.
#[derive(Debug)]
pub struct Outcome {
    pub sent: Instant,
    pub answered: Instant,
    pub result: Result<Answer, String>,
}

/// A steady stream of requests from [`Client::load`].
pub struct Load {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Vec<Outcome>>,
}

impl Load {
    /// Stops sending, waits for the requests in flight, and returns every outcome in the order sent.
    pub async fn finish(mut self) -> Vec<Outcome> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let mut outcomes = (&mut self.task).await.unwrap_or_default();
        outcomes.sort_by_key(|o| o.sent);
        outcomes
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_load(
    client: Client,
    addr: SocketAddr,
    per_second: u32,
    mut stop: oneshot::Receiver<()>,
) -> Vec<Outcome> {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let client = client.clone();
                requests.spawn(async move {
                    let sent = Instant::now();
                    let result = client.ask(addr).await.map_err(|e| format!("{e:#}"));
                    Outcome { sent, answered: Instant::now(), result }
                });
            }
        }
    }
    requests.join_all().await
}
