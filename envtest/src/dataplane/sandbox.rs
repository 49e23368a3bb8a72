//! A pod's network as kubelet and a CNI bridge plugin would make it: its own namespace, a veth pair whose
//! other end is on the node's bridge, one address of the pod range, and no route beyond that range. Each
//! port it serves answers any HTTP request with `<name> <port>`, and records when it answered.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use super::netns::{Netns, cidr};

/// One answered request: which port, and when.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    pub port: u16,
    pub at: Instant,
}

/// A pod's (or any backend's) network namespace with its servers; removed on drop.
pub struct Sandbox {
    name: String,
    ip: Ipv4Addr,
    served: Arc<Mutex<Vec<Served>>>,
    servers: Vec<(u16, JoinHandle<()>)>,
    netns: Netns,
}

impl Sandbox {
    /// Makes the namespace and plugs it into `bridge` of `node` through the veth `host_link`.
    pub(super) fn create(
        node: &Netns,
        bridge: &str,
        host_link: &str,
        name: &str,
        ip: Ipv4Addr,
        prefix_len: u8,
    ) -> anyhow::Result<Sandbox> {
        let netns = Netns::create()?;
        node.ip(&[
            "link",
            "add",
            host_link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        node.ip(&["link", "set", host_link, "master", bridge, "up"])?;
        netns.ip(&["addr", "add", &cidr(ip, prefix_len), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        Ok(Sandbox {
            name: name.to_string(),
            ip,
            served: Arc::default(),
            servers: Vec::new(),
            netns,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Serves `port` (answering with this sandbox's name and the port) until [`Sandbox::stop`] or drop.
    /// Needs a tokio runtime.
    pub fn serve(&mut self, port: u16) -> anyhow::Result<()> {
        let listener = self.netns.listen(SocketAddr::from((self.ip, port)))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (name, served) = (self.name.clone(), self.served.clone());
        let task = tokio::spawn(accept_loop(listener, name, port, served));
        self.servers.push((port, task));
        Ok(())
    }

    /// Stops serving `port`: connections to it are refused from now on.
    pub fn stop(&mut self, port: u16) {
        self.servers.retain(|(p, task)| {
            if *p == port {
                task.abort();
            }
            *p != port
        });
    }

    /// Requests answered so far.
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().unwrap().clone()
    }

    /// How many requests were answered at or after `since`.
    pub fn served_since(&self, since: Instant) -> usize {
        self.served().iter().filter(|s| s.at >= since).count()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for (_, task) in &self.servers {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    name: String,
    port: u16,
    served: Arc<Mutex<Vec<Served>>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let (name, served) = (name.clone(), served.clone());
        let answer = service_fn(move |_: Request<hyper::body::Incoming>| {
            served.lock().unwrap().push(Served {
                port,
                at: Instant::now(),
            });
            let body = Bytes::from(format!("{name} {port}\n"));
            async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
        });
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), answer));
    }
}
