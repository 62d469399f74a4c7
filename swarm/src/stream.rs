//! [`Stream`], the negotiated stream the swarm hands to behaviours.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::io::{AsyncRead, AsyncWrite, IoSliceMut};
use futures::ready;
use meshwire_rcmgr::{Reservation, ResourceError, StreamScope};
use meshwire_transport::multistream::{Negotiated, NegotiationConfig, NegotiationError};

mod drain;

pub use drain::{DRAIN_MAX_BYTES, DRAIN_TIMEOUT, MAX_DRAINS, MAX_DRAINS_PER_CONNECTION};

/// How the swarm's acceptors negotiate inbound streams: the listener's confirmation (with the
/// header echo) is left to the stream's first use. A stream for a
/// [`StreamControl`](crate::StreamControl) receiver writes it on its first read, write, flush
/// or close, in the task that serves it, so it leaves in the same packet as the answer
/// written with it instead of a packet of its own (which the dialer would also acknowledge at
/// once); dropped unused, it writes it on drop ([`Stream`]'s drop rule). A stream for a
/// behaviour has it written by the acceptor before the handover (a behaviour may hold a
/// stream unused while the dialer waits for the confirmation) — unless the dialer's first
/// bytes arrived with its proposal (an optimistic dialer, which does not wait for it:
/// [`Stream::confirm_unless_data`]). Same bytes, same order.
///
/// Outbound single-protocol streams are deferred too by default ([`OPTIMISTIC`]); a behaviour
/// that needs a stream opened and not yet used to reach the remote at once (its acceptor's
/// limits, its behaviours) asks for [`OpenStream::eager`](crate::OpenStream::eager).
pub(crate) const NEGOTIATION: NegotiationConfig = NegotiationConfig::new().with_deferred_send(true);

/// How an [optimistic](crate::OpenStream::optimistic) outbound stream is negotiated: a
/// [`V1Lazy`](meshwire_transport::multistream::Version::V1Lazy) dialer whose header and
/// proposal are written by the stream's first use, in one packet with the request — the
/// same deferral as the acceptors' [`NEGOTIATION`], on the other side.
pub(crate) const OPTIMISTIC: NegotiationConfig = NEGOTIATION;

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
    /// Drains of dropped streams running for this connection, and for the whole swarm.
    drains: drain::DrainCounters,
}

impl StreamCounters {
    /// The counters of a new connection; `swarm_drains` counts the drains of every
    /// connection of the swarm (the [`MAX_DRAINS`] bound).
    pub(crate) fn new(swarm_drains: Arc<AtomicUsize>) -> Arc<Self> {
        Arc::new(StreamCounters {
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            inbound: AtomicUsize::new(0),
            keep_alive: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            drains: drain::DrainCounters::new(swarm_drains),
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
    /// Our side was closed while a lazy confirmation was still expected (the close did not
    /// wait for it): a later close is a no-op. (Here rather than in [`Stream`]: it fits in
    /// the guard's padding.)
    closed_early: bool,
    /// Boxed: a scope names its peer and protocol, and streams move often. The read-ahead
    /// shares the allocation, so a stream is no larger for it.
    heap: Box<GuardHeap>,
}

/// The parts of a [`StreamGuard`] kept on the heap.
#[derive(Debug)]
struct GuardHeap {
    scope: StreamScope,
    /// Bytes the acceptor read to learn whether the dialer was optimistic, returned by the
    /// stream's first reads.
    ahead: Option<ReadAhead>,
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
            closed_early: false,
            heap: Box::new(GuardHeap { scope, ahead: None }),
        }
    }

    /// Moves the stream's share into `protocol`'s scope.
    pub(crate) fn set_protocol(&mut self, protocol: &str) -> Result<(), ResourceError> {
        self.heap.scope.set_protocol(protocol)
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

/// The most an acceptor reads ahead of a behaviour's stream ([`Stream::confirm_unless_data`]):
/// one read of what already arrived, returned to the behaviour by its first reads.
pub(crate) const READ_AHEAD: usize = 512;

/// The most a dropped stream reads, without waiting, to find the remote's end of the stream
/// ([`Stream`]'s drop rule); with more left unread the remote is asked to stop sending.
const DROP_DRAIN: usize = 1024;

/// What [`Stream::confirm_unless_data`] read, for the stream's first reads: data (in order,
/// then what comes from the stream), or the error the transport reported once (a reset
/// would read as a clean end of stream afterwards).
#[derive(Debug)]
enum ReadAhead {
    Data { buf: Vec<u8>, pos: usize },
    Failed(io::Error),
}

/// A confirmation left to the stream's first use (`NEGOTIATION`) is written when the stream
/// is dropped unused, so the remote gets it and then the end of the stream, as if it had been
/// written before the stream was handed out.
///
/// It also takes the remote's end of the stream if it already arrived unread (a response read
/// with `read_exact` and dropped): quinn answers a receive side dropped before its end was
/// read with STOP_SENDING, even when the end is there — a packet of its own when nothing else
/// is written at once, which the remote acknowledges with another (4 datagrams per exchange
/// instead of 2 for a request/response whose next request is opened through the swarm's task:
/// `cargo bench -p interop-tests --bench swarm`, line `exchange UDP datagrams`).
///
/// A lazily negotiated outbound stream whose remote has not answered its proposal yet, and
/// whose end has not arrived, is not dropped at once: its transport stream goes to a bounded
/// drain (module `drain`: at most [`DRAIN_MAX_BYTES`] read and discarded within
/// [`DRAIN_TIMEOUT`], [`MAX_DRAINS_PER_CONNECTION`] and [`MAX_DRAINS`] at once), so a remote
/// that writes its confirmation after our close and drop (rust-libp2p's listener) can still
/// write it and read our message, instead of getting STOP_SENDING. Its write side is ended
/// first as the drop would have ended it (not drained over Yamux, where the drop of an
/// unclosed stream resets it).
impl Drop for Stream {
    fn drop(&mut self) {
        if self.io.has_unsent() && !self.io.try_send_unsent() {
            // Reset, or its write side full or failed: the remote sees the end of the stream.
            tracing::trace!("stream dropped before its protocol confirmation could be written");
        }
        if self.take_arrived_end() || !self.io.is_expecting() {
            return;
        }
        let closed = self.guard.closed_early;
        if closed || self.io.get_ref().drop_finishes() {
            drain::start(self.io.get_mut(), !closed, &self.guard.counters);
        }
    }
}

impl Stream {
    pub(crate) fn new(io: Negotiated<meshwire_transport::Stream>, guard: StreamGuard) -> Self {
        Stream { io, guard }
    }

    /// For a behaviour's inbound stream whose confirmation was left to its first use
    /// (`NEGOTIATION`): if the dialer's first bytes already arrived with its proposal (an
    /// optimistic dialer, which reads the confirmation with the answer and does not wait for
    /// it), leaves the confirmation to the stream's first use, to travel with the answer;
    /// otherwise (the dialer may be waiting for it before it writes) writes it now, as
    /// [`Stream::send_unsent_now`]. Looks without waiting: one read of at most
    /// [`READ_AHEAD`] bytes of what already arrived, kept for the stream's first reads.
    /// Returns whether the confirmation was left to the first use.
    pub(crate) fn confirm_unless_data(&mut self) -> bool {
        if !self.io.has_unsent() {
            return false;
        }
        let mut buf = [0u8; READ_AHEAD];
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        // Straight from the transport's stream: a read through `Negotiated` would start the
        // write of the confirmation.
        match Pin::new(self.io.get_mut()).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(n)) if n > 0 => {
                let data = buf.get(..n).unwrap_or_default().to_vec();
                self.guard.heap.ahead = Some(ReadAhead::Data { buf: data, pos: 0 });
                true
            }
            Poll::Ready(Err(error)) => {
                // Kept for the first read (the transport reports it once).
                self.guard.heap.ahead = Some(ReadAhead::Failed(error));
                self.send_unsent_now();
                false
            }
            // Nothing yet, or the end of the stream (which stays ended for the next read):
            // answer a dialer that may be waiting.
            _ => {
                self.send_unsent_now();
                false
            }
        }
    }

    /// Reads, without waiting, what is left of the remote's side if its end already arrived
    /// (at most [`DROP_DRAIN`] bytes, discarded: the stream is being dropped), so that the
    /// transport sees the end read and asks the remote to stop sending only when it has not
    /// finished. Reads the transport's stream directly: a lazy dialer's confirmation left
    /// unread does not matter any more. Returns whether the remote's side is over: its end
    /// read, or the stream failed (reset, stopped); `false` when nothing more has arrived
    /// yet or [`DROP_DRAIN`] bytes were read without the end.
    fn take_arrived_end(&mut self) -> bool {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut buf = [0u8; DROP_DRAIN / 4];
        for _ in 0..4 {
            match Pin::new(self.io.get_mut()).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(n)) if n > 0 => continue,
                // The end (now read), or a failed or stopped stream.
                Poll::Ready(_) => return true,
                Poll::Pending => return false,
            }
        }
        false
    }

    /// Serves a read from what [`Stream::confirm_unless_data`] read, if anything is left;
    /// drops it once used up.
    fn read_ahead(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        let ahead = &mut self.guard.heap.ahead;
        let served = match ahead.as_mut()? {
            ReadAhead::Failed(_) => None,
            ReadAhead::Data { buf: data, pos } => {
                let rest = data.get(*pos..).unwrap_or_default();
                let n = rest.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
                    dst.copy_from_slice(src);
                }
                *pos += n;
                Some((n, *pos >= data.len()))
            }
        };
        match served {
            Some((n, used_up)) => {
                if used_up {
                    *ahead = None;
                }
                Some(Ok(n))
            }
            None => match ahead.take() {
                Some(ReadAhead::Failed(error)) => Some(Err(error)),
                _ => None,
            },
        }
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
        self.guard.heap.scope.reserve_memory(bytes)
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
        let this = self.get_mut();
        if this.guard.heap.ahead.is_some() && !buf.is_empty() {
            if let Some(result) = this.read_ahead(buf) {
                return Poll::Ready(result);
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }

    #[inline]
    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.guard.heap.ahead.is_some() {
            if let Some(buf) = bufs.iter_mut().find(|b| !b.is_empty()) {
                if let Some(result) = this.read_ahead(buf) {
                    return Poll::Ready(result);
                }
            }
        }
        Pin::new(&mut this.io).poll_read_vectored(cx, bufs)
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

    /// Finishes our side. On a lazily negotiated outbound stream whose confirmation has not
    /// been read yet, the close writes what is left of the proposal and our end, and returns
    /// without waiting for the remote's answer (as rust-libp2p's lazy dialer): a refusal shows
    /// on the next read ([`Stream::is_protocol_refused`]). Waiting there would hold the close
    /// until the remote's behaviour first uses the stream, since a listener that finds the
    /// request already there leaves its confirmation to the answer.
    /// Dropped after such a close, the stream is drained rather than stopped ([`Stream`]'s
    /// drop rule), so a remote that confirms late still can.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.guard.closed_early {
            return Poll::Ready(Ok(()));
        }
        if this.io.is_complete() {
            return Pin::new(&mut this.io).poll_close(cx);
        }
        // The proposal (if still unwritten) first, then our end, straight to the transport.
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        ready!(Pin::new(this.io.get_mut()).poll_close(cx))?;
        this.guard.closed_early = true;
        Poll::Ready(Ok(()))
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
