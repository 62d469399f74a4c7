//! [`Negotiated`]: the stream after negotiation, completing a lazy dialer's confirmation on
//! first use.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite, IoSlice, IoSliceMut};
use futures::ready;

use super::codec::{is_echo_of, FrameReader, Unsent, HEADER_LINE, NA_LINE};
use super::error::NegotiationError;
use super::protocol_name::ProtocolName;

/// A stream on which a protocol has been settled.
///
/// Returned by [`dialer_select`](super::dialer_select) and [`listener_select`](super::listener_select). Once negotiation is
/// complete every read and write is forwarded to the underlying stream after
/// a single state check, with no buffering or copying. A
/// [`Version::V1Lazy`](super::Version::V1Lazy) dialer's stream starts out incomplete: writes go
/// straight through, and the first read (or close, or
/// [`complete`](Negotiated::complete)) first consumes the listener's header
/// and confirmation. A close sends our end of the stream at once and then waits for that
/// answer, so a request closed before its response is read costs no extra round trip. If the listener refused the protocol, that read fails
/// with an [`io::Error`] wrapping [`NegotiationError::Failed`], and so does
/// every later read or write.
///
/// Negotiated with
/// [`NegotiationConfig::with_deferred_send`](super::NegotiationConfig::with_deferred_send),
/// the stream starts with the last negotiation messages unwritten (a listener's
/// confirmation, a lazy dialer's header and proposal): the first read, write, flush or close
/// writes them ahead of anything else (a read does not wait for them: it only starts the
/// write), and [`try_send_unsent`](Negotiated::try_send_unsent) writes them without a task.
pub struct Negotiated<S> {
    io: S,
    state: NegotiatedState,
    /// Our side is closed (closing twice is a no-op, as the state's answer may come later).
    write_closed: bool,
    /// A listener's answers not written yet (empty, without an allocation, otherwise).
    unsent: Unsent,
}

/// Progress of the (lazy) confirmation of a [`Negotiated`] stream.
enum NegotiatedState {
    /// Negotiation is complete; I/O goes straight to the inner stream.
    Completed,
    /// A lazy dialer still has to read the listener's answer.
    Expecting(Expecting),
    /// The lazy confirmation failed.
    Failed,
}

/// What a lazy dialer still expects from the listener.
struct Expecting {
    protocol: ProtocolName,
    header_pending: bool,
    reader: FrameReader,
}

impl Expecting {
    /// Judges the frame of length `len` just read; `Ok(true)` once the
    /// protocol is confirmed.
    fn on_frame(&mut self, len: usize) -> Result<bool, NegotiationError> {
        let frame = self.reader.frame(len);
        if self.header_pending {
            if frame == HEADER_LINE {
                self.header_pending = false;
                return Ok(false);
            }
            return Err(NegotiationError::InvalidMessage);
        }
        if is_echo_of(frame, &self.protocol) {
            tracing::debug!(protocol = %self.protocol, "multistream dialer: lazy protocol confirmed");
            return Ok(true);
        }
        if frame == NA_LINE {
            tracing::debug!(protocol = %self.protocol, "multistream dialer: lazy protocol refused");
            return Err(NegotiationError::Failed);
        }
        Err(NegotiationError::InvalidMessage)
    }
}

impl<S> Negotiated<S> {
    pub(crate) fn completed(io: S) -> Self {
        Negotiated {
            io,
            state: NegotiatedState::Completed,
            write_closed: false,
            unsent: Unsent::default(),
        }
    }

    /// A listener's stream whose last answers (`unsent`) go out on its first use.
    pub(crate) fn unsent(io: S, unsent: Unsent) -> Self {
        Negotiated {
            io,
            state: NegotiatedState::Completed,
            write_closed: false,
            unsent,
        }
    }

    /// A lazy dialer's stream: `unsent` holds the header and proposal if they are left to
    /// the first use.
    pub(crate) fn expecting(io: S, protocol: ProtocolName, unsent: Unsent) -> Self {
        let max = (protocol.as_str().len() + 1).max(HEADER_LINE.len());
        Negotiated {
            io,
            state: NegotiatedState::Expecting(Expecting {
                protocol,
                header_pending: true,
                reader: FrameReader::new(max),
            }),
            write_closed: false,
            unsent,
        }
    }

    /// The same negotiation state over another stream (tests swap a recording stream for a
    /// scripted one).
    #[cfg(test)]
    pub(crate) fn with_io<T>(self, f: impl FnOnce(S) -> T) -> Negotiated<T> {
        Negotiated {
            io: f(self.io),
            state: self.state,
            write_closed: self.write_closed,
            unsent: self.unsent,
        }
    }

    /// Whether the negotiation is complete, i.e. the listener's confirmation
    /// has been received (always true except for a lazy dialer).
    pub fn is_complete(&self) -> bool {
        matches!(self.state, NegotiatedState::Completed)
    }

    /// Whether a lazy dialer still expects the listener's answer: neither its confirmation
    /// nor a refusal has been read yet.
    pub fn is_expecting(&self) -> bool {
        matches!(self.state, NegotiatedState::Expecting(_))
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The underlying stream, mutably (for operations such as a reset; reading or writing
    /// through it bypasses an outstanding lazy confirmation).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Returns the underlying stream if negotiation is complete (and a listener's answers
    /// are written), or `self` unchanged otherwise (so no negotiation state is lost).
    pub fn into_inner(self) -> Result<S, Self> {
        match self.state {
            NegotiatedState::Completed if self.unsent.is_empty() => Ok(self.io),
            _ => Err(self),
        }
    }

    /// Whether deferred negotiation messages still wait to be written.
    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }
}

impl<S: AsyncWrite + Unpin> Negotiated<S> {
    /// Writes deferred negotiation messages now if the stream takes them without waiting (a
    /// stream about to be dropped unused); returns whether nothing is left unsent.
    pub fn try_send_unsent(&mut self) -> bool {
        if self.unsent.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        match self.unsent.poll_send(&mut self.io, &mut cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(error)) => {
                tracing::trace!(%error, "multistream: deferred negotiation messages not written");
                self.unsent.clear();
                false
            }
            Poll::Pending => false,
        }
    }

    /// Starts writing deferred negotiation messages before a read: the read must not wait
    /// for them, but the other side may be waiting for them before it sends what the read
    /// expects.
    fn start_unsent(&mut self, cx: &mut Context<'_>) {
        if let Poll::Ready(Err(error)) = self.unsent.poll_send(&mut self.io, cx) {
            // The write side failed (the remote stopped it); reads may still succeed.
            tracing::debug!(%error, "multistream: deferred negotiation messages not written");
            self.unsent.clear();
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Negotiated<S> {
    /// Reads the listener's (lazy) confirmation if it is still outstanding (writing a
    /// deferred proposal first).
    ///
    /// Returns immediately if negotiation is already complete. Fails with
    /// [`NegotiationError::Failed`] if the listener refused the protocol (or
    /// if an earlier attempt already failed). Reads only negotiation
    /// messages, never application data.
    pub async fn complete(&mut self) -> Result<(), NegotiationError> {
        poll_fn(|cx| {
            if !self.unsent.is_empty() {
                self.start_unsent(cx);
            }
            self.poll_negotiate(cx)
        })
        .await
    }

    fn poll_negotiate(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), NegotiationError>> {
        loop {
            let outcome = match &mut self.state {
                NegotiatedState::Completed => return Poll::Ready(Ok(())),
                NegotiatedState::Failed => return Poll::Ready(Err(NegotiationError::Failed)),
                NegotiatedState::Expecting(expecting) => {
                    match expecting.reader.poll_frame(&mut self.io, cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(Some(len))) => expecting.on_frame(len),
                        // The listener closed the stream instead of answering.
                        Poll::Ready(Ok(None)) => Err(NegotiationError::Failed),
                        Poll::Ready(Err(error)) => Err(error),
                    }
                }
            };
            match outcome {
                Ok(false) => continue,
                Ok(true) => {
                    self.state = NegotiatedState::Completed;
                    return Poll::Ready(Ok(()));
                }
                Err(error) => {
                    self.state = NegotiatedState::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
    }
}

impl<S> fmt::Debug for Negotiated<S>
where
    S: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            NegotiatedState::Completed => "completed",
            NegotiatedState::Expecting(_) => "expecting",
            NegotiatedState::Failed => "failed",
        };
        f.debug_struct("Negotiated")
            .field("io", &self.io)
            .field("state", &state)
            .finish()
    }
}

fn failed_io_error() -> io::Error {
    NegotiationError::Failed.into()
}

impl<S> AsyncRead for Negotiated<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.unsent.is_empty() {
            this.start_unsent(cx);
        }
        if let NegotiatedState::Completed = this.state {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        match this.poll_negotiate(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_read(cx, buf),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.unsent.is_empty() {
            this.start_unsent(cx);
        }
        if let NegotiatedState::Completed = this.state {
            return Pin::new(&mut this.io).poll_read_vectored(cx, bufs);
        }
        match this.poll_negotiate(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_read_vectored(cx, bufs),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> AsyncWrite for Negotiated<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.unsent.poll_send(&mut this.io, cx))?;
        match this.state {
            NegotiatedState::Completed | NegotiatedState::Expecting(_) => {
                Pin::new(&mut this.io).poll_write(cx, buf)
            }
            NegotiatedState::Failed => Poll::Ready(Err(failed_io_error())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.unsent.poll_send(&mut this.io, cx))?;
        match this.state {
            NegotiatedState::Completed | NegotiatedState::Expecting(_) => {
                Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
            }
            NegotiatedState::Failed => Poll::Ready(Err(failed_io_error())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.unsent.poll_send(&mut this.io, cx))?;
        match this.state {
            NegotiatedState::Completed | NegotiatedState::Expecting(_) => {
                Pin::new(&mut this.io).poll_flush(cx)
            }
            NegotiatedState::Failed => Poll::Ready(Err(failed_io_error())),
        }
    }

    /// Closes the write side of the underlying stream.
    ///
    /// A lazy dialer first reads the listener's confirmation, so that a
    /// refused protocol is reported here rather than silently dropping the
    /// data written so far; if negotiation already failed, the underlying
    /// stream is simply closed.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.unsent.poll_send(&mut this.io, cx))?;
        // Our end of the stream goes at once, before the listener's confirmation of a lazy
        // proposal: waiting for it first would cost a round trip on every request that
        // closes its side before reading the response (rust-libp2p does not wait either).
        if !this.write_closed {
            ready!(Pin::new(&mut this.io).poll_close(cx))?;
            this.write_closed = true;
        }
        // A refusal is still reported by the close, once the answer is read.
        if let NegotiatedState::Expecting(_) = this.state {
            return match this.poll_negotiate(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
                Poll::Pending => Poll::Pending,
            };
        }
        Poll::Ready(Ok(()))
    }
}
