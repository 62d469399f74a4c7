//! The Yamux backend of [`Connection`](super::Connection): streams multiplexed over one byte
//! stream (in meshwire, a Noise-encrypted relay stream; see [`crate::upgrade`]).
//!
//! A `yamux::Connection` must be polled by one owner, so a driver task (`tokio::spawn`) owns
//! it: handles send it stream-open requests over a channel, and it puts the peer's new
//! streams into a bounded queue (`UpgradeConfig::max_inbound_streams_pending`, default 32)
//! that [`Connection::accept_stream`](super::Connection::accept_stream) reads. When the queue
//! is full a new inbound stream is dropped (yamux resets it) and counted
//! ([`YamuxConnection::inbound_streams_dropped`]); nothing waits in memory beyond the bound.
//!
//! Lifetime, as for QUIC: the connection lives while a [`Connection`](super::Connection)
//! handle or one of its streams does. [`close`](super::Connection::close) (or dropping the last
//! handle and stream) makes the driver send a yamux GoAway (code 0, normal; yamux carries no
//! application code or reason), flush and close the underlying stream, waiting at most
//! `UpgradeConfig::close_timeout` (default 5 s). A local close fails this side's streams at
//! once (`ConnectionAborted`); a peer's GoAway or the end of the underlying stream ends the
//! connection with [`CloseReason::Remote`] (code [`CLOSE_CODE_NORMAL`], empty reason), and its
//! streams read what was buffered and then end of stream, as yamux does. An I/O failure of the
//! underlying stream is [`CloseReason::Reset`] (reset, aborted, broken pipe) or
//! [`CloseReason::Transport`] (anything else, a Noise decryption failure included), as is a
//! yamux protocol violation. Yamux has no idle timeout: the stream below decides.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use futures::task::AtomicWaker;
use tokio::sync::{mpsc, oneshot, Notify};

use super::error::{CloseReason, ConnectionError, CLOSE_CODE_NORMAL};
use super::in_memory::lock;

/// Inbound streams handled per driver wake-up before it yields to other tasks.
const INBOUND_BUDGET: usize = 64;
/// Stream-open requests queued to the driver (callers beyond it wait their turn).
const OPEN_QUEUE: usize = 32;

/// What the driver needs to know besides the stream itself.
#[derive(Clone, Debug)]
pub(crate) struct YamuxParams {
    /// `yamux::Config` to run with (validated by the caller).
    pub config: yamux::Config,
    /// Inbound streams waiting for `accept_stream` before new ones are dropped.
    pub max_inbound_pending: usize,
    /// Time allowed to flush the GoAway and close the underlying stream.
    pub close_timeout: Duration,
    /// The handshake's round-trip time, reported by `Connection::rtt`.
    pub rtt: Duration,
    /// What the peer can make this connection buffer, in bytes (the Yamux connection receive
    /// window plus the Noise buffers), reported by `Connection::receive_buffer_limit`.
    pub receive_buffer: u64,
}

type OpenReply = oneshot::Sender<Result<yamux::Stream, ConnectionError>>;

/// A handle on a Yamux connection and its driver task.
///
/// Reached through [`Connection::as_yamux`](super::Connection::as_yamux) for what only this
/// backend has.
#[derive(Clone)]
pub struct YamuxConnection {
    shared: Arc<Shared>,
    alive: Arc<Alive>,
    inbound: Arc<tokio::sync::Mutex<mpsc::Receiver<yamux::Stream>>>,
    rtt: Duration,
    receive_buffer: u64,
}

impl fmt::Debug for YamuxConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YamuxConnection")
            .field("closed", &self.shared.reason())
            .finish_non_exhaustive()
    }
}

/// Held by every handle and stream; the driver closes the connection once the last is gone.
struct Alive {
    open_tx: mpsc::Sender<OpenReply>,
}

/// The wakers of one stream, so a local close can fail its pending reads and writes.
#[derive(Default)]
struct Slot {
    read: AtomicWaker,
    write: AtomicWaker,
}

impl Slot {
    fn wake(&self) {
        self.read.wake();
        self.write.wake();
    }
}

struct Shared {
    reason: Mutex<Option<CloseReason>>,
    /// Set by a local close: streams fail and the driver sends GoAway.
    local_close: AtomicBool,
    /// Wakes `closed()` and `accept_stream` waiters.
    notify: Notify,
    driver: AtomicWaker,
    slots: Mutex<Slots>,
    dropped_inbound: AtomicU64,
}

#[derive(Default)]
struct Slots {
    list: Vec<Weak<Slot>>,
    prune_at: usize,
}

impl Shared {
    fn reason(&self) -> Option<CloseReason> {
        lock(&self.reason).clone()
    }

    /// Records why the connection ended; the first reason wins. Returns whether this one did.
    fn set_reason(&self, reason: CloseReason) -> bool {
        let mut r = lock(&self.reason);
        if r.is_some() {
            return false;
        }
        *r = Some(reason);
        drop(r);
        self.notify.notify_waiters();
        true
    }

    fn register_slot(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        let mut slots = lock(&self.slots);
        if slots.list.len() >= slots.prune_at {
            slots.list.retain(|w| w.strong_count() > 0);
            slots.prune_at = (2 * slots.list.len()).max(64);
        }
        slots.list.push(Arc::downgrade(&slot));
        slot
    }

    fn wake_streams(&self) {
        let list = std::mem::take(&mut lock(&self.slots).list);
        for slot in list.iter().filter_map(Weak::upgrade) {
            slot.wake();
        }
    }

    fn closed_error(&self) -> ConnectionError {
        ConnectionError::Closed(
            self.reason()
                .unwrap_or_else(|| CloseReason::Transport("yamux driver ended".into())),
        )
    }

    async fn wait_closed(&self) -> CloseReason {
        loop {
            let notified = self.notify.notified();
            if let Some(r) = self.reason() {
                return r;
            }
            notified.await;
        }
    }
}

impl YamuxConnection {
    /// Starts the driver task (on the current tokio runtime) for `io`.
    pub(crate) fn spawn<T>(io: T, mode: yamux::Mode, params: YamuxParams) -> Self
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            reason: Mutex::new(None),
            local_close: AtomicBool::new(false),
            notify: Notify::new(),
            driver: AtomicWaker::new(),
            slots: Mutex::new(Slots::default()),
            dropped_inbound: AtomicU64::new(0),
        });
        let (open_tx, open_rx) = mpsc::channel(OPEN_QUEUE);
        let (inbound_tx, inbound_rx) = mpsc::channel(params.max_inbound_pending.max(1));
        let conn = yamux::Connection::new(io, params.config, mode);
        tokio::spawn(drive(
            conn,
            shared.clone(),
            open_rx,
            inbound_tx,
            params.close_timeout,
        ));
        YamuxConnection {
            shared,
            alive: Arc::new(Alive { open_tx }),
            inbound: Arc::new(tokio::sync::Mutex::new(inbound_rx)),
            rtt: params.rtt,
            receive_buffer: params.receive_buffer,
        }
    }

    /// What the peer can make this connection buffer, in bytes: the Yamux connection receive
    /// window plus the Noise buffers.
    pub fn receive_buffer_limit(&self) -> u64 {
        self.receive_buffer
    }

    /// Inbound streams dropped (reset) so far because the accept queue was full.
    pub fn inbound_streams_dropped(&self) -> u64 {
        self.shared.dropped_inbound.load(Ordering::Relaxed)
    }

    /// The round trip measured during the handshake (see `Connection::rtt`).
    pub fn handshake_rtt(&self) -> Duration {
        self.rtt
    }

    fn check_open(&self) -> Result<(), ConnectionError> {
        match self.shared.reason() {
            Some(r) => Err(ConnectionError::Closed(r)),
            None => Ok(()),
        }
    }

    fn wrap(&self, stream: yamux::Stream) -> YamuxStream {
        YamuxStream {
            inner: Some(stream),
            slot: self.shared.register_slot(),
            shared: self.shared.clone(),
            _alive: self.alive.clone(),
        }
    }

    pub(crate) async fn open_stream(&self) -> Result<YamuxStream, ConnectionError> {
        self.check_open()?;
        let (tx, rx) = oneshot::channel();
        self.alive
            .open_tx
            .send(tx)
            .await
            .map_err(|_| self.shared.closed_error())?;
        let stream = rx.await.map_err(|_| self.shared.closed_error())??;
        Ok(self.wrap(stream))
    }

    pub(crate) async fn accept_stream(&self) -> Result<YamuxStream, ConnectionError> {
        self.check_open()?;
        let mut rx = self.inbound.lock().await;
        tokio::select! {
            s = rx.recv() => match s {
                Some(s) if self.shared.reason().is_none() => Ok(self.wrap(s)),
                _ => Err(self.shared.closed_error()),
            },
            r = self.shared.wait_closed() => Err(ConnectionError::Closed(r)),
        }
    }

    pub(crate) fn close(&self, code: u32, reason: &str) {
        if self.shared.set_reason(CloseReason::Local {
            code,
            reason: reason.to_owned(),
        }) {
            self.shared.local_close.store(true, Ordering::Release);
            self.shared.wake_streams();
            self.shared.driver.wake();
        }
    }

    pub(crate) async fn closed(&self) -> CloseReason {
        self.shared.wait_closed().await
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason()
    }

    pub(crate) fn rtt(&self) -> Duration {
        self.rtt
    }
}

/// How the driver's main loop ended.
enum End {
    LocalClose,
    HandlesDropped,
    Remote,
    Error(yamux::ConnectionError),
}

async fn drive<T>(
    mut conn: yamux::Connection<T>,
    shared: Arc<Shared>,
    mut open_rx: mpsc::Receiver<OpenReply>,
    inbound_tx: mpsc::Sender<yamux::Stream>,
    close_timeout: Duration,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut waiting: Option<OpenReply> = None;
    let end = poll_fn(|cx| {
        poll_driver(
            &mut conn,
            &shared,
            &mut open_rx,
            &mut waiting,
            &inbound_tx,
            cx,
        )
    })
    .await;
    let graceful = match end {
        End::LocalClose => true,
        End::HandlesDropped => {
            shared.set_reason(CloseReason::Local {
                code: CLOSE_CODE_NORMAL,
                reason: String::new(),
            });
            true
        }
        End::Remote => {
            shared.set_reason(CloseReason::Remote {
                code: CLOSE_CODE_NORMAL,
                reason: String::new(),
            });
            false
        }
        End::Error(e) => {
            tracing::debug!(error = %e, "yamux: connection failed");
            shared.set_reason(close_reason_of(e));
            false
        }
    };
    // Nobody may wait on an open any more.
    open_rx.close();
    let err = || shared.closed_error();
    if let Some(w) = waiting.take() {
        let _ = w.send(Err(err()));
    }
    while let Ok(w) = open_rx.try_recv() {
        let _ = w.send(Err(err()));
    }
    drop(inbound_tx);
    if graceful {
        match tokio::time::timeout(close_timeout, poll_fn(|cx| conn.poll_close(cx))).await {
            Ok(Ok(())) => tracing::debug!("yamux: closed"),
            Ok(Err(e)) => tracing::debug!(error = %e, "yamux: close failed"),
            Err(_) => tracing::debug!(?close_timeout, "yamux: close timed out"),
        }
    }
}

fn poll_driver<T>(
    conn: &mut yamux::Connection<T>,
    shared: &Shared,
    open_rx: &mut mpsc::Receiver<OpenReply>,
    waiting: &mut Option<OpenReply>,
    inbound_tx: &mpsc::Sender<yamux::Stream>,
    cx: &mut Context<'_>,
) -> Poll<End>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    shared.driver.register(cx.waker());
    if shared.local_close.load(Ordering::Acquire) {
        return Poll::Ready(End::LocalClose);
    }
    // Stream-open requests, one at a time.
    loop {
        if waiting.is_none() {
            match open_rx.poll_recv(cx) {
                Poll::Ready(Some(w)) => *waiting = Some(w),
                Poll::Ready(None) => return Poll::Ready(End::HandlesDropped),
                Poll::Pending => break,
            }
        }
        let Some(w) = waiting.as_ref() else { break };
        if w.is_closed() {
            // The caller gave up (dropped its future).
            *waiting = None;
            continue;
        }
        match conn.poll_new_outbound(cx) {
            Poll::Ready(result) => {
                if let Some(w) = waiting.take() {
                    let _ = w.send(result.map_err(|e| open_error(e, shared)));
                }
            }
            Poll::Pending => break,
        }
    }
    // Everything else: reading frames, writing the streams' frames, new inbound streams.
    for _ in 0..INBOUND_BUDGET {
        match conn.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(stream))) => match inbound_tx.try_send(stream) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(stream)) => {
                    let n = shared.dropped_inbound.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::debug!(stream = %stream, dropped = n, "yamux: accept queue full, resetting inbound stream");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            },
            Poll::Ready(Some(Err(e))) => return Poll::Ready(End::Error(e)),
            Poll::Ready(None) => return Poll::Ready(End::Remote),
            Poll::Pending => return Poll::Pending,
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

fn open_error(e: yamux::ConnectionError, shared: &Shared) -> ConnectionError {
    match e {
        yamux::ConnectionError::TooManyStreams | yamux::ConnectionError::NoMoreStreamIds => {
            ConnectionError::StreamLimit
        }
        yamux::ConnectionError::Closed => shared.closed_error(),
        other => ConnectionError::Closed(close_reason_of(other)),
    }
}

/// Maps a yamux failure to why the connection ended.
fn close_reason_of(e: yamux::ConnectionError) -> CloseReason {
    match e {
        // yamux reports read failures as decode errors wrapping the I/O error.
        yamux::ConnectionError::Io(e)
        | yamux::ConnectionError::Decode(yamux::FrameDecodeError::Io(e)) => match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => CloseReason::Reset,
            _ => CloseReason::Transport(format!("io: {e}")),
        },
        yamux::ConnectionError::Closed => CloseReason::Remote {
            code: CLOSE_CODE_NORMAL,
            reason: String::new(),
        },
        other => CloseReason::Transport(format!("yamux: {other}")),
    }
}

/// A stream of a Yamux connection.
pub(crate) struct YamuxStream {
    /// `None` once reset (dropping the yamux stream makes it send RST).
    inner: Option<yamux::Stream>,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    _alive: Arc<Alive>,
}

impl fmt::Debug for YamuxStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YamuxStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl YamuxStream {
    /// Aborts the stream: the yamux stream is dropped, which sends RST while it is open.
    pub(crate) fn reset(&mut self) {
        self.inner = None;
    }

    /// The yamux stream, or the error an operation gets after a reset or a local close.
    fn get(&mut self) -> io::Result<&mut yamux::Stream> {
        if self.shared.local_close.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed",
            ));
        }
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionReset, "stream reset"))
    }

    /// Maps a pending operation: registers the waker a local close wakes, then re-checks.
    fn pending<T>(&self, waker: &AtomicWaker, cx: &Context<'_>) -> Poll<io::Result<T>> {
        waker.register(cx.waker());
        if self.shared.local_close.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for YamuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(this.get()?).poll_read(cx, buf) {
            Poll::Pending => this.pending(&this.slot.read, cx),
            ready => ready,
        }
    }
}

impl AsyncWrite for YamuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(this.get()?).poll_write(cx, buf) {
            Poll::Pending => this.pending(&this.slot.write, cx),
            ready => ready,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(this.get()?).poll_flush(cx) {
            Poll::Pending => this.pending(&this.slot.write, cx),
            ready => ready,
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(this.get()?).poll_close(cx) {
            Poll::Pending => this.pending(&this.slot.write, cx),
            ready => ready,
        }
    }
}
