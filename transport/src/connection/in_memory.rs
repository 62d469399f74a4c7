//! The in-memory backend of [`Connection`](super::Connection): one end of a connection pair
//! living in this process, with bounded stream pipes (backpressure) and bounded datagram
//! queues (drop when full), or no datagrams at all (like a relayed connection).
//! [`crate::memory::MemoryTransport`] pairs them up.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify};

use super::error::{CloseReason, ConnectionError};

/// Largest datagram an in-memory connection carries (the same order as a QUIC path).
pub const MAX_MEMORY_DATAGRAM: usize = 1200;
/// Bytes buffered per stream direction before the writer waits.
pub(crate) const PIPE_CAPACITY: usize = 256 * 1024;
/// Streams opened but not yet accepted, per connection direction.
const MAX_PENDING_STREAMS: usize = 256;
/// Datagrams queued before new ones are dropped.
const DATAGRAM_QUEUE: usize = 256;

/// Locks a mutex that guards plain data: a poisoned lock is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by the two ends of one in-memory connection.
struct ConnShared {
    /// `(side that closed, code, reason)` once closed.
    closed: Mutex<Option<(usize, u32, String)>>,
    notify: Notify,
    pipes: Mutex<Vec<Weak<Mutex<Pipe>>>>,
}

impl ConnShared {
    fn reason_for(&self, side: usize) -> Option<CloseReason> {
        lock(&self.closed).as_ref().map(|(closer, code, reason)| {
            if *closer == side {
                CloseReason::Local {
                    code: *code,
                    reason: reason.clone(),
                }
            } else {
                CloseReason::Remote {
                    code: *code,
                    reason: reason.clone(),
                }
            }
        })
    }
}

/// One end of an in-memory connection.
#[derive(Clone)]
pub(crate) struct MemConnection {
    side: usize,
    shared: Arc<ConnShared>,
    open_tx: mpsc::Sender<MemStream>,
    accept_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<MemStream>>>,
    dgram_tx: mpsc::Sender<Bytes>,
    dgram_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Bytes>>>,
    /// Whether the connection carries datagrams (both ends agree).
    datagrams: bool,
}

impl std::fmt::Debug for MemConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemConnection")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl MemConnection {
    /// Two connected ends; without `datagrams`, datagram operations fail with
    /// [`ConnectionError::DatagramsUnsupported`] on both.
    pub(crate) fn pair(datagrams: bool) -> (MemConnection, MemConnection) {
        let shared = Arc::new(ConnShared {
            closed: Mutex::new(None),
            notify: Notify::new(),
            pipes: Mutex::new(Vec::new()),
        });
        let (s0_tx, s0_rx) = mpsc::channel(MAX_PENDING_STREAMS);
        let (s1_tx, s1_rx) = mpsc::channel(MAX_PENDING_STREAMS);
        let (d0_tx, d0_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (d1_tx, d1_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let a = MemConnection {
            side: 0,
            shared: shared.clone(),
            open_tx: s1_tx,
            accept_rx: Arc::new(tokio::sync::Mutex::new(s0_rx)),
            dgram_tx: d1_tx,
            dgram_rx: Arc::new(tokio::sync::Mutex::new(d0_rx)),
            datagrams,
        };
        let b = MemConnection {
            side: 1,
            shared,
            open_tx: s0_tx,
            accept_rx: Arc::new(tokio::sync::Mutex::new(s1_rx)),
            dgram_tx: d0_tx,
            dgram_rx: Arc::new(tokio::sync::Mutex::new(d1_rx)),
            datagrams,
        };
        (a, b)
    }

    fn check_open(&self) -> Result<(), ConnectionError> {
        match self.shared.reason_for(self.side) {
            Some(r) => Err(ConnectionError::Closed(r)),
            None => Ok(()),
        }
    }

    pub(crate) async fn open_stream(&self) -> Result<MemStream, ConnectionError> {
        self.check_open()?;
        let a_to_b = Arc::new(Mutex::new(Pipe::default()));
        let b_to_a = Arc::new(Mutex::new(Pipe::default()));
        {
            let mut pipes = lock(&self.shared.pipes);
            pipes.retain(|w| w.strong_count() > 0);
            pipes.push(Arc::downgrade(&a_to_b));
            pipes.push(Arc::downgrade(&b_to_a));
        }
        let ours = MemStream {
            read: b_to_a.clone(),
            write: a_to_b.clone(),
        };
        let theirs = MemStream {
            read: a_to_b,
            write: b_to_a,
        };
        tokio::select! {
            r = self.open_tx.send(theirs) => r.map_err(|_| ConnectionError::Closed(self.closed_reason_or_transport()))?,
            _ = self.wait_closed() => return Err(ConnectionError::Closed(self.closed_reason_or_transport())),
        }
        Ok(ours)
    }

    fn closed_reason_or_transport(&self) -> CloseReason {
        self.shared
            .reason_for(self.side)
            .unwrap_or(CloseReason::Transport("peer gone".into()))
    }

    async fn wait_closed(&self) {
        loop {
            let notified = self.shared.notify.notified();
            if lock(&self.shared.closed).is_some() {
                return;
            }
            notified.await;
        }
    }

    pub(crate) async fn accept_stream(&self) -> Result<MemStream, ConnectionError> {
        self.check_open()?;
        let mut rx = self.accept_rx.lock().await;
        tokio::select! {
            s = rx.recv() => s.ok_or_else(|| ConnectionError::Closed(self.closed_reason_or_transport())),
            _ = self.wait_closed() => Err(ConnectionError::Closed(self.closed_reason_or_transport())),
        }
    }

    pub(crate) fn close(&self, code: u32, reason: &str) {
        {
            let mut closed = lock(&self.shared.closed);
            if closed.is_some() {
                return;
            }
            *closed = Some((self.side, code, reason.to_owned()));
        }
        for pipe in lock(&self.shared.pipes).drain(..) {
            if let Some(p) = pipe.upgrade() {
                lock(&p).reset();
            }
        }
        self.shared.notify.notify_waiters();
    }

    pub(crate) async fn closed(&self) -> CloseReason {
        self.wait_closed().await;
        self.closed_reason_or_transport()
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason_for(self.side)
    }

    /// The largest datagram, or `None` if the connection has no datagrams.
    pub(crate) fn max_datagram_size(&self) -> Option<usize> {
        self.datagrams.then_some(MAX_MEMORY_DATAGRAM)
    }

    pub(crate) fn send_datagram(&self, data: Bytes) -> Result<(), ConnectionError> {
        self.check_open()?;
        if !self.datagrams {
            return Err(ConnectionError::DatagramsUnsupported);
        }
        if data.len() > MAX_MEMORY_DATAGRAM {
            return Err(ConnectionError::DatagramTooLarge {
                max: MAX_MEMORY_DATAGRAM,
            });
        }
        // Unreliable: a full queue drops the datagram, as a congested path would.
        let _ = self.dgram_tx.try_send(data);
        Ok(())
    }

    pub(crate) async fn read_datagram(&self) -> Result<Bytes, ConnectionError> {
        self.check_open()?;
        if !self.datagrams {
            return Err(ConnectionError::DatagramsUnsupported);
        }
        let mut rx = self.dgram_rx.lock().await;
        tokio::select! {
            d = rx.recv() => d.ok_or_else(|| ConnectionError::Closed(self.closed_reason_or_transport())),
            _ = self.wait_closed() => Err(ConnectionError::Closed(self.closed_reason_or_transport())),
        }
    }
}

/// One direction of a stream.
#[derive(Default)]
struct Pipe {
    buf: VecDeque<u8>,
    /// The writer finished: the reader sees end-of-stream after the buffer.
    finished: bool,
    /// Reset (or the connection closed): both ends fail.
    reset: bool,
    /// The reader is gone: the writer fails.
    reader_gone: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl Pipe {
    fn reset(&mut self) {
        self.reset = true;
        self.wake_all();
    }

    fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

/// A stream of an in-memory connection.
pub(crate) struct MemStream {
    read: Arc<Mutex<Pipe>>,
    write: Arc<Mutex<Pipe>>,
}

impl std::fmt::Debug for MemStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStream").finish_non_exhaustive()
    }
}

impl MemStream {
    pub(crate) fn reset(&mut self) {
        lock(&self.read).reset();
        lock(&self.write).reset();
    }
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "stream reset")
}

impl AsyncRead for MemStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = lock(&self.read);
        if p.reset {
            return Poll::Ready(Err(reset_error()));
        }
        if !p.buf.is_empty() {
            let n = buf.len().min(p.buf.len());
            for (dst, src) in buf.iter_mut().zip(p.buf.drain(..n)) {
                *dst = src;
            }
            if let Some(w) = p.write_waker.take() {
                w.wake();
            }
            return Poll::Ready(Ok(n));
        }
        if p.finished || buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        p.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for MemStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = lock(&self.write);
        if p.reset {
            return Poll::Ready(Err(reset_error()));
        }
        if p.reader_gone {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "peer stopped reading",
            )));
        }
        if p.finished {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream already closed",
            )));
        }
        let space = PIPE_CAPACITY - p.buf.len();
        if space == 0 {
            p.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = space.min(buf.len());
        p.buf.extend(&buf[..n]);
        if let Some(w) = p.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if lock(&self.write).reset {
            return Poll::Ready(Err(reset_error()));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = lock(&self.write);
        if p.reset {
            return Poll::Ready(Err(reset_error()));
        }
        p.finished = true;
        if let Some(w) = p.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemStream {
    fn drop(&mut self) {
        // Like QUIC: dropping finishes our sending side and stops the peer's.
        {
            let mut w = lock(&self.write);
            w.finished = true;
            if let Some(wk) = w.read_waker.take() {
                wk.wake();
            }
        }
        let mut r = lock(&self.read);
        r.reader_gone = true;
        if let Some(wk) = r.write_waker.take() {
            wk.wake();
        }
    }
}
