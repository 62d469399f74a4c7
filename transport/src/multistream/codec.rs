//! The wire codec: varint-length-prefixed messages, read one at a time and never past the end
//! of the current message, and their encoding.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::error::NegotiationError;
use super::protocol_name::{ProtocolName, MAX_PROTOCOL_NAME_LEN};

/// The header message body.
pub(crate) const HEADER_LINE: &[u8] = b"/multistream/1.0.0\n";
/// The rejection message body.
pub(crate) const NA_LINE: &[u8] = b"na\n";
/// The listing request message body.
pub(crate) const LS_LINE: &[u8] = b"ls\n";

/// Reads length-prefixed negotiation messages one at a time, never consuming
/// a byte past the end of the current message.
pub(crate) struct FrameReader {
    max_len: usize,
    max_prefix_bytes: usize,
    state: FrameState,
    buf: Vec<u8>,
}

#[derive(Clone, Copy)]
enum FrameState {
    /// Decoding the varint length prefix.
    Length {
        value: usize,
        shift: u32,
        bytes: usize,
    },
    /// Reading `len` body bytes, `filled` of which have arrived.
    Body { len: usize, filled: usize },
}

const FRAME_START: FrameState = FrameState::Length {
    value: 0,
    shift: 0,
    bytes: 0,
};

impl FrameReader {
    pub(crate) fn new(max_len: usize) -> Self {
        // Number of 7-bit groups needed to encode `max_len`.
        let mut max_prefix_bytes = 1;
        let mut rest = max_len >> 7;
        while rest > 0 {
            max_prefix_bytes += 1;
            rest >>= 7;
        }
        FrameReader {
            max_len,
            max_prefix_bytes,
            state: FRAME_START,
            buf: Vec::new(),
        }
    }

    /// How many bytes the body buffer holds room for.
    #[cfg(test)]
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The body of the frame last returned by `poll_frame` as `Some(len)`.
    pub(crate) fn frame(&self, len: usize) -> &[u8] {
        self.buf.get(..len).unwrap_or(&[])
    }

    /// Reads the next frame, returning `Ok(Some(len))` with the body available
    /// through [`FrameReader::frame`], or `Ok(None)` on a clean end of stream
    /// before the first byte of a frame.
    pub(crate) fn poll_frame<R>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<usize>, NegotiationError>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let result = self.poll_frame_inner(io, cx);
        if let Poll::Ready(Err(_)) = result {
            self.state = FRAME_START;
        }
        result
    }

    fn poll_frame_inner<R>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<usize>, NegotiationError>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        loop {
            match self.state {
                FrameState::Length {
                    mut value,
                    mut shift,
                    mut bytes,
                } => {
                    let mut byte = [0u8; 1];
                    let n = match Pin::new(&mut *io).poll_read(cx, &mut byte) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(n)) => n,
                        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    };
                    if n == 0 {
                        if bytes == 0 {
                            return Poll::Ready(Ok(None));
                        }
                        return Poll::Ready(Err(unexpected_eof()));
                    }
                    let group = usize::from(byte[0] & 0x7f);
                    value |= group.checked_shl(shift).unwrap_or(usize::MAX);
                    bytes += 1;
                    if value > self.max_len {
                        return Poll::Ready(Err(NegotiationError::MessageTooLarge {
                            max: self.max_len,
                        }));
                    }
                    if byte[0] & 0x80 == 0 {
                        // A final zero group after other groups is a
                        // non-minimal encoding, which libp2p rejects.
                        if (bytes > 1 && group == 0) || value == 0 {
                            return Poll::Ready(Err(NegotiationError::InvalidMessage));
                        }
                        self.buf.clear();
                        self.buf.resize(value, 0);
                        self.state = FrameState::Body {
                            len: value,
                            filled: 0,
                        };
                    } else {
                        if bytes >= self.max_prefix_bytes {
                            // Any further group encodes a value above the
                            // bound (or is non-minimal).
                            return Poll::Ready(Err(NegotiationError::MessageTooLarge {
                                max: self.max_len,
                            }));
                        }
                        shift += 7;
                        self.state = FrameState::Length {
                            value,
                            shift,
                            bytes,
                        };
                    }
                }
                FrameState::Body { len, filled } => {
                    let Some(dest) = self.buf.get_mut(filled..len) else {
                        return Poll::Ready(Err(NegotiationError::InvalidMessage));
                    };
                    let n = match Pin::new(&mut *io).poll_read(cx, dest) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(n)) => n,
                        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    };
                    if n == 0 {
                        return Poll::Ready(Err(unexpected_eof()));
                    }
                    let filled = filled.saturating_add(n).min(len);
                    if filled == len {
                        self.state = FRAME_START;
                        return Poll::Ready(Ok(Some(len)));
                    }
                    self.state = FrameState::Body { len, filled };
                }
            }
        }
    }

    /// Reads the next frame; `Ok(None)` on a clean end of stream.
    pub(crate) async fn read<R>(&mut self, io: &mut R) -> Result<Option<&[u8]>, NegotiationError>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let len = poll_fn(|cx| self.poll_frame(io, cx)).await?;
        Ok(len.map(|len| self.frame(len)))
    }
}

fn unexpected_eof() -> NegotiationError {
    NegotiationError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "stream ended in the middle of a multistream-select message",
    ))
}

/// A decoded negotiation message, borrowing from the frame.
pub(crate) enum Message<'a> {
    Header,
    NotAvailable,
    ListProtocols,
    /// A protocol name, without its trailing `'\n'`; not yet checked for UTF-8.
    Protocol(&'a [u8]),
    /// Anything else: an `ls` reply or garbage.
    Other,
}

/// Classifies a frame body the way rust-libp2p does.
pub(crate) fn decode(frame: &[u8]) -> Message<'_> {
    if frame == HEADER_LINE {
        return Message::Header;
    }
    if frame == NA_LINE {
        return Message::NotAvailable;
    }
    if frame == LS_LINE {
        return Message::ListProtocols;
    }
    match frame.split_last() {
        Some((&b'\n', name)) if name.first() == Some(&b'/') && !name.contains(&b'\n') => {
            Message::Protocol(name)
        }
        _ => Message::Other,
    }
}

pub(crate) fn is_echo_of(frame: &[u8], protocol: &ProtocolName) -> bool {
    matches!(frame.split_last(), Some((&b'\n', name)) if name == protocol.as_str().as_bytes())
}

pub(crate) fn push_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let group = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(group);
            return;
        }
        out.push(group | 0x80);
    }
}

/// Appends a frame whose body is `body` (which already ends with `'\n'`).
pub(crate) fn push_line(out: &mut Vec<u8>, body: &[u8]) {
    push_varint(out, body.len());
    out.extend_from_slice(body);
}

/// Appends a frame proposing or confirming `protocol`.
pub(crate) fn push_protocol(out: &mut Vec<u8>, protocol: &ProtocolName) {
    let name = protocol.as_str().as_bytes();
    push_varint(out, name.len() + 1);
    out.extend_from_slice(name);
    out.push(b'\n');
}

/// Appends the `ls` reply frame: varint-prefixed `<name>\n` entries and a
/// final `'\n'`, truncated (with a warning) to at most `max_len` body bytes.
pub(crate) fn encode_protocol_list(out: &mut Vec<u8>, protocols: &[&str], max_len: usize) {
    let mut body = Vec::with_capacity(64);
    let mut entry = Vec::with_capacity(MAX_PROTOCOL_NAME_LEN + 3);
    for name in protocols {
        entry.clear();
        push_varint(&mut entry, name.len() + 1);
        entry.extend_from_slice(name.as_bytes());
        entry.push(b'\n');
        if body.len() + entry.len() + 1 > max_len {
            tracing::warn!(
                listed = body.len(),
                "multistream listener: protocol list truncated to the maximum message length"
            );
            break;
        }
        body.extend_from_slice(&entry);
    }
    body.push(b'\n');
    push_line(out, &body);
}

/// Negotiation messages encoded but not written yet: a listener's answers wait until it would
/// otherwise wait for the dialer, and with
/// [`NegotiationConfig::with_deferred_send`](super::NegotiationConfig::with_deferred_send) the
/// last messages wait for the negotiated stream's first use, so that they leave together with
/// what follows them.
///
/// Boxed, and absent when there is nothing to write: a [`Negotiated`](super::Negotiated)
/// stream carries one for its whole life.
#[derive(Debug, Default)]
pub(crate) struct Unsent(Option<Box<UnsentBuf>>);

#[derive(Debug, Default)]
struct UnsentBuf {
    buf: Vec<u8>,
    /// How much of `buf` is written; the whole is dropped once written and flushed.
    written: usize,
}

impl Unsent {
    /// `buf` to be written.
    pub(crate) fn new(buf: Vec<u8>) -> Self {
        if buf.is_empty() {
            return Unsent(None);
        }
        Unsent(Some(Box::new(UnsentBuf { buf, written: 0 })))
    }

    /// Whether nothing waits to be written or flushed.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The buffer to append messages to.
    pub(crate) fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0.get_or_insert_with(Box::default).buf
    }

    /// Forgets what was not written (the stream failed).
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// Writes and flushes what waits; `Ready(Ok(()))` at once when nothing does.
    pub(crate) fn poll_send<W>(&mut self, io: &mut W, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let Some(unsent) = self.0.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while unsent.written < unsent.buf.len() {
            let rest = unsent.buf.get(unsent.written..).unwrap_or_default();
            match Pin::new(&mut *io).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => unsent.written += n,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        match Pin::new(&mut *io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.clear();
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Writes `bytes` completely and flushes.
pub(crate) async fn send<W>(io: &mut W, bytes: &[u8]) -> Result<(), NegotiationError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    io.write_all(bytes).await?;
    io.flush().await?;
    Ok(())
}
