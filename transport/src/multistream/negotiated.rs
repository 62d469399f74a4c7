//! [`Negotiated`]: the stream after negotiation, completing a lazy dialer's confirmation on
//! first use.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite, IoSlice, IoSliceMut};
use futures::ready;

use super::codec::{is_echo_of, FrameReader, HEADER_LINE, NA_LINE};
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
pub struct Negotiated<S> {
    io: S,
    state: NegotiatedState,
    /// Our side is closed (closing twice is a no-op, as the state's answer may come later).
    write_closed: bool,
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
        }
    }

    pub(crate) fn expecting(io: S, protocol: ProtocolName) -> Self {
        let max = (protocol.as_str().len() + 1).max(HEADER_LINE.len());
        Negotiated {
            io,
            state: NegotiatedState::Expecting(Expecting {
                protocol,
                header_pending: true,
                reader: FrameReader::new(max),
            }),
            write_closed: false,
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
        }
    }

    /// Whether the negotiation is complete, i.e. the listener's confirmation
    /// has been received (always true except for a lazy dialer).
    pub fn is_complete(&self) -> bool {
        matches!(self.state, NegotiatedState::Completed)
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

    /// Returns the underlying stream if negotiation is complete, or `self`
    /// unchanged otherwise (so no negotiation state is lost).
    pub fn into_inner(self) -> Result<S, Self> {
        match self.state {
            NegotiatedState::Completed => Ok(self.io),
            _ => Err(self),
        }
    }
}

impl<S: AsyncRead + Unpin> Negotiated<S> {
    /// Reads the listener's (lazy) confirmation if it is still outstanding.
    ///
    /// Returns immediately if negotiation is already complete. Fails with
    /// [`NegotiationError::Failed`] if the listener refused the protocol (or
    /// if an earlier attempt already failed). Reads only negotiation
    /// messages, never application data.
    pub async fn complete(&mut self) -> Result<(), NegotiationError> {
        poll_fn(|cx| self.poll_negotiate(cx)).await
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
    S: AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
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
        match this.state {
            NegotiatedState::Completed | NegotiatedState::Expecting(_) => {
                Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
            }
            NegotiatedState::Failed => Poll::Ready(Err(failed_io_error())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
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
