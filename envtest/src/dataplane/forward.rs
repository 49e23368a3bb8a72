//! A TCP relay between network namespaces: a listener made inside one namespace, connections to a target
//! made wherever the `connect` function makes them. The node namespace reaches the API server on host
//! loopback this way without any route out of it.
//!
//! Plain threads, not tokio tasks: a relay may outlive the runtime of the test that started it (the planes of
//! a test binary are shared), and its connections are few and long (watches).

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A running relay; stops accepting on drop (open connections run to their end).
pub struct Forward {
    listener: TcpListener,
    stopped: Arc<AtomicBool>,
}

impl Forward {
    /// Relays every connection `listener` accepts to a connection `connect` makes.
    pub fn start<C>(listener: TcpListener, connect: C) -> std::io::Result<Forward>
    where
        C: Fn() -> std::io::Result<TcpStream> + Send + 'static,
    {
        let stopped = Arc::new(AtomicBool::new(false));
        let accepting = listener.try_clone()?;
        let stop = stopped.clone();
        std::thread::Builder::new()
            .name("dataplane-forward".into())
            .spawn(move || accept_loop(&accepting, &connect, &stop))?;
        Ok(Forward { listener, stopped })
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket wakes the blocked accept(2) with an error.
        let _ = nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

fn accept_loop<C>(listener: &TcpListener, connect: &C, stopped: &AtomicBool)
where
    C: Fn() -> std::io::Result<TcpStream>,
{
    for client in listener.incoming() {
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        let (Ok(client), Ok(target)) = (client, connect()) else {
            continue;
        };
        let _ = splice(client, target);
    }
}

/// Copies both directions on two threads; each half-closes its destination when its source ends.
fn splice(a: TcpStream, b: TcpStream) -> std::io::Result<()> {
    let (a2, b2) = (a.try_clone()?, b.try_clone()?);
    std::thread::Builder::new()
        .name("dataplane-copy".into())
        .spawn(move || copy(a, b))?;
    std::thread::Builder::new()
        .name("dataplane-copy".into())
        .spawn(move || copy(b2, a2))?;
    Ok(())
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.flush();
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
