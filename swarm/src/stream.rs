//! [`Stream`], the negotiated stream the swarm hands to behaviours.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::io::{AsyncRead, AsyncWrite, IoSliceMut};
use meshwire_rcmgr::{Reservation, ResourceError, StreamScope};
use meshwire_transport::multistream::{Negotiated, NegotiationConfig, NegotiationError};

/// How the swarm's acceptors negotiate inbound streams: the listener's confirmation (with the
/// header echo) is left to the stream's first use. A stream for a
/// [`StreamControl`](crate::StreamControl) receiver writes it on its first read, write, flush
/// or close, in the task that serves it, so it leaves in the same packet as the answer
/// written with it instead of a packet of its own (which the dialer would also acknowledge at
/// once); dropped unused, it writes it on drop ([`Stream`]'s drop rule). A stream for a
/// behaviour has it written by the acceptor before the handover (a behaviour may hold a
/// stream unused while the dialer waits for the confirmation). Same bytes, same order.
///
/// Outbound streams are not deferred: a stream opened and not yet written must reach the
/// remote (its acceptor's limits, its behaviours and the swarm's rules see it at once).
pub(crate) const NEGOTIATION: NegotiationConfig = NegotiationConfig::new().with_deferred_send(true);

/// Per-connection stream counters shared between the swarm and the streams it handed out.
#[derive(Debug)]
pub(crate) struct StreamCounters {
    epoch: Instant,
    /// Streams open (handed to behaviours and not dropped yet).
    open: AtomicUsize,
    /// Of those, the ones the remote opened.
    inbound: AtomicUsize,
    /// Of those, the ones that keep the connection alive.
    keep_alive: AtomicUsize,
    /// Milliseconds since `epoch` at which the last keep-alive stream ended.
    last_end_ms: AtomicU64,
}

impl StreamCounters {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(StreamCounters {
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            inbound: AtomicUsize::new(0),
            keep_alive: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        })
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn inbound(&self) -> usize {
        self.inbound.load(Ordering::Acquire)
    }

    pub(crate) fn keep_alive(&self) -> usize {
        self.keep_alive.load(Ordering::Acquire)
    }

    /// When the last keep-alive stream ended (the connection's epoch if none ever did).
    pub(crate) fn last_end(&self) -> Instant {
        self.epoch + std::time::Duration::from_millis(self.last_end_ms.load(Ordering::Acquire))
    }

    fn mark_end(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_end_ms.fetch_max(ms, Ordering::AcqRel);
    }
}

/// Counts one stream for as long as it lives, and holds its share of the resource manager.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    counters: Arc<StreamCounters>,
    keep_alive: bool,
    inbound: bool,
    /// Boxed: a scope names its peer and protocol, and streams move often.
    scope: Box<StreamScope>,
}

impl StreamGuard {
    pub(crate) fn new(counters: Arc<StreamCounters>, inbound: bool, scope: StreamScope) -> Self {
        counters.open.fetch_add(1, Ordering::AcqRel);
        counters.keep_alive.fetch_add(1, Ordering::AcqRel);
        if inbound {
            counters.inbound.fetch_add(1, Ordering::AcqRel);
        }
        StreamGuard {
            counters,
            keep_alive: true,
            inbound,
            scope: Box::new(scope),
        }
    }

    /// Moves the stream's share into `protocol`'s scope.
    pub(crate) fn set_protocol(&mut self, protocol: &str) -> Result<(), ResourceError> {
        self.scope.set_protocol(protocol)
    }

    fn set_keep_alive(&mut self, keep: bool) {
        if keep == self.keep_alive {
            return;
        }
        self.keep_alive = keep;
        if keep {
            self.counters.keep_alive.fetch_add(1, Ordering::AcqRel);
        } else {
            self.counters.mark_end();
            self.counters.keep_alive.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.keep_alive {
            self.counters.mark_end();
            self.counters.keep_alive.fetch_sub(1, Ordering::AcqRel);
        }
        if self.inbound {
            self.counters.inbound.fetch_sub(1, Ordering::AcqRel);
        }
        self.counters.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A negotiated stream: `futures::io::{AsyncRead, AsyncWrite}` straight over the transport's
/// stream (over QUIC, the quinn stream halves), with no task or channel in between.
///
/// `close` finishes our side. Dropping the stream without closing it ends it too: over QUIC
/// quinn finishes the write side gracefully (the remote reads end-of-stream), as in
/// rust-libp2p; call [`Stream::reset`] to abort instead. While it is open, a stream keeps its
/// connection alive unless [`Stream::set_keep_alive`] says otherwise.
#[derive(Debug)]
pub struct Stream {
    io: Negotiated<meshwire_transport::Stream>,
    guard: StreamGuard,
}

/// A confirmation left to the stream's first use (`NEGOTIATION`) is written when the stream
/// is dropped unused, so the remote gets it and then the end of the stream, as if it had been
/// written before the stream was handed out.
impl Drop for Stream {
    fn drop(&mut self) {
        if self.io.has_unsent() && !self.io.try_send_unsent() {
            // Reset, or its write side full or failed: the remote sees the end of the stream.
            tracing::trace!("stream dropped before its protocol confirmation could be written");
        }
    }
}

impl Stream {
    pub(crate) fn new(io: Negotiated<meshwire_transport::Stream>, guard: StreamGuard) -> Self {
        Stream { io, guard }
    }

    /// Whether this stream keeps its connection from closing when idle (default `true`).
    /// Long-lived background streams, such as ping's, turn it off.
    pub fn set_keep_alive(&mut self, keep_alive: bool) {
        self.guard.set_keep_alive(keep_alive)
    }

    /// Reserves `bytes` of memory for what the behaviour buffers from this stream (a frame
    /// it is about to read, a queue of messages), charged to the stream, its peer, its
    /// protocol and the system in the swarm's resource manager; given back when the returned
    /// [`Reservation`] is dropped. `toolkit::read_frame_reserved` does this for each frame.
    ///
    /// # Errors
    ///
    /// The scope that has no room; drop the stream (or reset it) rather than buffer.
    pub fn reserve_memory(&self, bytes: u64) -> Result<Reservation, ResourceError> {
        self.guard.scope.reserve_memory(bytes)
    }

    /// Writes a confirmation left to the first use now, without waiting (see
    /// `NEGOTIATION`); if the stream cannot take it at once, the first use or the drop
    /// writes it.
    pub(crate) fn send_unsent_now(&mut self) {
        if self.io.has_unsent() && !self.io.try_send_unsent() {
            tracing::trace!("protocol confirmation left to the stream's first use");
        }
    }

    /// Resets the stream in both directions: the remote's reads and writes fail.
    pub fn reset(&mut self) {
        self.io.get_mut().reset()
    }

    /// Whether `error`, from a read or write of a lazily negotiated stream, says the remote
    /// refused the stream's protocol. Such an error also has the kind
    /// [`io::ErrorKind::Unsupported`] and reads "the remote refused the protocol".
    ///
    /// ```
    /// use meshwire_swarm::Stream;
    /// use meshwire_transport::multistream::NegotiationError;
    ///
    /// let refused: std::io::Error = NegotiationError::Failed.into();
    /// assert!(Stream::is_protocol_refused(&refused));
    /// assert_eq!(refused.kind(), std::io::ErrorKind::Unsupported);
    /// assert!(!Stream::is_protocol_refused(&std::io::ErrorKind::BrokenPipe.into()));
    /// ```
    pub fn is_protocol_refused(error: &io::Error) -> bool {
        matches!(
            error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<NegotiationError>()),
            Some(NegotiationError::Failed)
        )
    }

    /// Waits for the remote to confirm a lazily negotiated protocol (at once otherwise).
    ///
    /// # Errors
    ///
    /// [`NegotiationError::Failed`] if the remote refused the protocol.
    pub async fn confirm_protocol(&mut self) -> Result<(), NegotiationError> {
        self.io.complete().await
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }

    #[inline]
    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_read_vectored(cx, bufs)
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    #[inline]
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

/// Tokio's I/O traits too, so `tokio::io::{AsyncReadExt, AsyncWriteExt, copy, BufReader}`
/// work on a stream without a compat wrapper. (With both crates' extension traits imported
/// in one scope, call the methods as `tokio::io::AsyncReadExt::read(&mut s, ..)`.)
impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        match AsyncRead::poll_read(self, cx, unfilled) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(self, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(self, cx)
    }

    /// Finishes our side of the stream, as `futures`' `poll_close`.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_close(self, cx)
    }
}
