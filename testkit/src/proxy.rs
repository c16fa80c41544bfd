//! [`TcpProxy`]: a per-test TCP proxy in front of a shared service (RabbitMQ, Redis,
//! PostgreSQL), so a test can take "its" service away without touching the one every other
//! test uses. Three states:
//!
//! - **forward** (the start, and after [`TcpProxy::restore`]): each connection is copied to
//!   the upstream and back.
//! - **cut** ([`TcpProxy::cut`]): live connections are reset, new ones are accepted and reset
//!   at once — a server that went down, or a broken network that says so.
//! - **black hole** ([`TcpProxy::black_hole`]): connections are accepted and what they send
//!   is read, but nothing is forwarded either way and nothing is closed — a server that hangs,
//!   or a network that silently drops packets. Only the client's own timeouts end a wait.
//!
//! A connection that was black-holed stays dead after `restore`, as one to a host that
//! vanished does (its bytes are lost, its protocol state is gone): clients must notice,
//! drop it and connect again — which is what the black-hole tests check.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const FORWARD: u8 = 0;
const CUT: u8 = 1;
const BLACK_HOLE: u8 = 2;

/// One proxied connection.
struct Link {
    /// Once set, the link forwards nothing for the rest of its life.
    holed: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

pub struct TcpProxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    links: Arc<Mutex<Vec<Link>>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let upstream = upstream.to_string();
        let (m, l) = (mode.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let _ = inbound.set_nodelay(true);
                let holed = Arc::new(AtomicBool::new(false));
                let task = match m.load(Ordering::SeqCst) {
                    CUT => {
                        reset(inbound);
                        continue;
                    }
                    BLACK_HOLE => tokio::spawn(swallow(inbound)),
                    _ => tokio::spawn(link(inbound, upstream.clone(), holed.clone())),
                };
                let mut links = l.lock().expect("links");
                links.retain(|k| !k.task.is_finished());
                links.push(Link { holed, task });
            }
        });
        Ok(Self {
            addr,
            mode,
            links,
            accept,
        })
    }

    /// `host:port` to give clients instead of the service's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every live connection and every new one until [`Self::restore`].
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::SeqCst);
        for k in self.links.lock().expect("links").drain(..) {
            // Aborting drops both sockets: the client sees its connection closed.
            k.task.abort();
        }
    }

    /// Stops forwarding on every live connection (for good) and swallows new ones until
    /// [`Self::restore`], closing nothing.
    pub fn black_hole(&self) {
        self.mode.store(BLACK_HOLE, Ordering::SeqCst);
        for k in self.links.lock().expect("links").iter() {
            k.holed.store(true, Ordering::SeqCst);
        }
    }

    /// New connections are forwarded again (black-holed ones stay dead).
    pub fn restore(&self) {
        self.mode.store(FORWARD, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for k in self.links.lock().expect("links").drain(..) {
            k.task.abort();
        }
    }
}

/// An RST instead of a FIN, as a server that is gone answers.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Reads and discards until the client gives up.
async fn swallow(mut inbound: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while matches!(inbound.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn link(inbound: TcpStream, upstream: String, holed: Arc<AtomicBool>) {
    let Ok(outbound) = TcpStream::connect(&upstream).await else {
        reset(inbound);
        return;
    };
    let _ = outbound.set_nodelay(true);
    let (mut ri, mut wi) = inbound.into_split();
    let (mut ro, mut wo) = outbound.into_split();
    // Either side closing ends the link (and drops the other side's socket)...
    tokio::select! {
        _ = pump(&mut ri, &mut wo, &holed) => {}
        _ = pump(&mut ro, &mut wi, &holed) => {}
    }
    // ...except that through a black hole the client hears nothing, not even a close.
    if holed.load(Ordering::SeqCst) {
        drop((ro, wo));
        let mut buf = vec![0u8; 16 * 1024];
        while matches!(ri.read(&mut buf).await, Ok(n) if n > 0) {}
        drop(wi);
    }
}

/// Copies `from` to `to` until `from` closes; once `holed`, keeps reading and drops it all,
/// so the sender never blocks on a full buffer and nothing reaches the other side.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    holed: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if holed.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
