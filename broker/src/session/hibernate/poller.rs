//! The poller of one worker thread's hibernating sessions: a mio `Poll`
//! watched by tokio (`watch_sockets`), which answers PINGREQ for a
//! sleeping session (`on_readable`, `answer_pings`) and wakes it for
//! anything else; and the transport a waking session gets if its socket
//! cannot go back to tokio (`Broken`).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;

use super::{Bed, Table, MAX_READ_ASLEEP, PINGREQ, PINGRESP, TABLE};
use crate::counters::Metrics;
use crate::session::keep_alive::monotonic_ms;

/// The thread's poller registry, starting the poller on first use.
pub(super) fn registry(t: &mut Table) -> std::io::Result<&mio::Registry> {
    if t.registry.is_none() {
        let poll = mio::Poll::new()?;
        t.registry = Some(poll.registry().try_clone()?);
        // The safe constructor is deprecated for types whose descriptor
        // may change or close while registered (tokio#8587); a mio `Poll`
        // owns its epoll descriptor until it is dropped, and the crate
        // forbids `unsafe`.
        #[allow(deprecated)]
        let poll = AsyncFd::with_interest(poll, tokio::io::Interest::READABLE)?;
        actix_rt::spawn(watch_sockets(poll));
    }
    Ok(t.registry.as_ref().expect("set above"))
}

pub(super) fn deregister(tcp: &std::net::TcpStream) {
    TABLE.with(|t| {
        if let Some(registry) = &t.borrow().registry {
            let fd = tcp.as_raw_fd();
            let _ = registry.deregister(&mut mio::unix::SourceFd(&fd));
        }
    });
}

/// The worker's poller: the sockets of its hibernating sessions.
async fn watch_sockets(mut poll: AsyncFd<mio::Poll>) {
    let mut events = mio::Events::with_capacity(256);
    loop {
        let Ok(mut ready) = poll.readable_mut().await else {
            return;
        };
        if let Err(e) = ready
            .get_inner_mut()
            .poll(&mut events, Some(Duration::ZERO))
        {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "hibernation poller failed");
            }
            continue;
        }
        if events.is_empty() {
            ready.clear_ready();
            continue;
        }
        for event in events.iter() {
            on_readable(event.token().0);
        }
    }
}

/// A hibernating session's socket has something: PINGREQs are answered
/// here, anything else wakes the session.
fn on_readable(key: usize) {
    let wake = TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let Some(Bed::Asleep { sleeper, .. }) = t.beds.get_mut(key) else {
            return None;
        };
        let handle = sleeper.session.handle.clone();
        let metrics = sleeper.session.state.metrics().clone();
        let socket = &mut sleeper.socket;
        let tcp = socket.tcp.as_ref()?;
        if !socket.registered {
            return None;
        }
        let mut wake = false;
        let mut chunk = [0u8; 512];
        loop {
            match (&*tcp).read(&mut chunk) {
                Ok(0) => {
                    wake = true;
                    break;
                }
                Ok(n) => {
                    let read = socket.read.get_or_insert_with(Default::default);
                    read.extend_from_slice(&chunk[..n]);
                    if read.len() > MAX_READ_ASLEEP {
                        wake = true;
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The session reads the error itself when it wakes.
                    wake = true;
                    break;
                }
            }
        }
        if !wake {
            wake = !answer_pings(tcp, &mut socket.read, &mut socket.owed, &metrics);
            if !wake {
                handle
                    .0
                    .last_packet_ms
                    .store(monotonic_ms(), Ordering::Relaxed);
            }
        }
        if wake {
            let fd = tcp.as_raw_fd();
            socket.registered = false;
            if let Some(registry) = &t.registry {
                let _ = registry.deregister(&mut mio::unix::SourceFd(&fd));
            }
        }
        wake.then_some(handle)
    });
    if let Some(handle) = wake {
        // Asleep: `wake_now` runs the alarm; a sender may have woken it
        // already, and `woken` is then on its way.
        handle.wake_now();
    }
}

/// If what was read is whole PINGREQs and nothing else, answers them and
/// returns true; else leaves it for the session and returns false.
fn answer_pings(
    tcp: &std::net::TcpStream,
    read: &mut Option<Box<BytesMut>>,
    owed: &mut u8,
    metrics: &Metrics,
) -> bool {
    let Some(bytes) = read.as_deref() else {
        return true;
    };
    if bytes.is_empty() || bytes.len() % 2 != 0 || !bytes.chunks(2).all(|c| c == PINGREQ) {
        return bytes.is_empty();
    }
    let pings = bytes.len() / 2;
    *read = None;
    Metrics::add(&metrics.hibernating_pings, pings as u64);
    for _ in 0..pings {
        match (&*tcp).write(&PINGRESP) {
            Ok(2) => {}
            Ok(n) => {
                // The rest goes out first when the session wakes.
                *owed = (PINGRESP.len() - n) as u8;
                return false;
            }
            Err(_) => {
                *owed = PINGRESP.len() as u8;
                return false;
            }
        }
    }
    true
}

/// A transport whose socket could not be registered: reads fail with the
/// registration's error.
pub(super) struct Broken(pub(super) Option<std::io::Error>);

impl tokio::io::AsyncRead for Broken {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let e = self
            .0
            .take()
            .unwrap_or_else(|| std::io::ErrorKind::NotConnected.into());
        std::task::Poll::Ready(Err(e))
    }
}

impl tokio::io::AsyncWrite for Broken {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
