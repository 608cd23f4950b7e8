//! A TCP proxy in front of one node's cluster endpoint: every other node
//! reaches the node through it (the node advertises the proxy's address).
//! Normally it passes bytes through; the nemesis makes it delay each chunk,
//! throttle the bandwidth, or cut every open connection.
//!
//! Outgoing connections to the node are bound to the proxy's own address,
//! so iptables rules between node addresses do not touch them: a partition
//! drops a peer's packets to the proxy address instead.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to traffic now.
#[derive(Default)]
struct Shaping {
    /// Sleep before forwarding each chunk, milliseconds.
    delay_ms: AtomicU64,
    /// Bytes per second per direction of a connection; 0: unlimited.
    rate: AtomicU64,
    /// Bumped to close every connection opened before.
    generation: AtomicU64,
}

pub struct Proxy {
    shaping: Arc<Shaping>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` and forwards to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let shaping = Arc::new(Shaping::default());
        let s = Arc::clone(&shaping);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _ = serve(inbound, listen, target, s).await;
                });
            }
        });
        Ok(Proxy { shaping, accept })
    }

    pub fn set_delay(&self, delay: Duration) {
        self.shaping
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn set_rate(&self, bytes_per_second: u64) {
        self.shaping.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        self.shaping.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Back to passing bytes through unchanged.
    pub fn heal(&self) {
        self.set_delay(Duration::ZERO);
        self.set_rate(0);
    }

    /// Stops accepting and cuts every connection.
    pub fn close(&self) {
        self.cut();
        self.accept.abort();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.close();
    }
}

async fn serve(
    inbound: TcpStream,
    local: SocketAddr,
    target: SocketAddr,
    s: Arc<Shaping>,
) -> std::io::Result<()> {
    let generation = s.generation.load(Ordering::Relaxed);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local.ip(), 0))?;
    let outbound = tokio::time::timeout(Duration::from_secs(5), socket.connect(target)).await??;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    let (ri, wi) = inbound.into_split();
    let (ro, wo) = outbound.into_split();
    let up = pump(ri, wo, Arc::clone(&s), generation);
    let down = pump(ro, wi, Arc::clone(&s), generation);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    Ok(())
}

/// Copies one direction until EOF, an error or a cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    s: Arc<Shaping>,
    generation: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let cut = async {
            while s.generation.load(Ordering::Relaxed) == generation {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = cut => return,
        };
        let delay = s.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let rate = s.rate.load(Ordering::Relaxed);
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        if s.generation.load(Ordering::Relaxed) != generation
            || to.write_all(&buf[..n]).await.is_err()
        {
            return;
        }
    }
}
