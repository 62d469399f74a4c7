//! [`NoiseOutput`]: the encrypted stream after the handshake.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};

use super::{NoiseError, MAX_FRAME_PLAINTEXT, MAX_NOISE_MESSAGE, TAG_LEN};

/// Bytes of the length prefix of every Noise message.
const LEN_PREFIX: usize = 2;

/// An authenticated, encrypted byte stream: `futures::io::{AsyncRead, AsyncWrite}` over the
/// stream the handshake ran on.
///
/// Writes are buffered into one frame of at most [`MAX_FRAME_PLAINTEXT`] bytes, encrypted and
/// sent when the frame is full or on `poll_flush`/`poll_close` (so flush after a message that
/// must leave now). Reads decrypt whole frames; a frame that fails authentication, or one
/// shorter than its tag, fails the read (and every later one) with an `InvalidData` error
/// wrapping the [`NoiseError`]. The stream ending inside a frame is `UnexpectedEof`; ending
/// between frames is a clean end of stream. Buffers are allocated once, about 256 KiB in all.
pub struct NoiseOutput<S> {
    io: S,
    state: Box<snow::TransportState>,
    handshake_rtt: Duration,
    /// Received bytes not yet decrypted: `rbuf[rstart..rend]` (whole or partial frames).
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    /// Decrypted bytes not yet read: `plain[ppos..plen]`.
    plain: Box<[u8]>,
    ppos: usize,
    plen: usize,
    /// A frame failed to decrypt: the stream is unusable for reading.
    read_failed: bool,
    /// Plaintext written but not yet encrypted (at most `MAX_FRAME_PLAINTEXT`).
    pending: Vec<u8>,
    /// An encrypted frame being written: `sbuf[spos..slen]`.
    sbuf: Box<[u8]>,
    spos: usize,
    slen: usize,
}

impl<S> NoiseOutput<S> {
    pub(super) fn new(io: S, state: snow::TransportState, handshake_rtt: Duration) -> Self {
        NoiseOutput {
            io,
            state: Box::new(state),
            handshake_rtt,
            rbuf: vec![0; LEN_PREFIX + MAX_NOISE_MESSAGE].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            plain: vec![0; MAX_NOISE_MESSAGE].into_boxed_slice(),
            ppos: 0,
            plen: 0,
            read_failed: false,
            pending: Vec::with_capacity(MAX_FRAME_PLAINTEXT),
            sbuf: vec![0; LEN_PREFIX + MAX_NOISE_MESSAGE].into_boxed_slice(),
            spos: 0,
            slen: 0,
        }
    }

    /// The time from sending our handshake message to receiving the peer's next one: one
    /// network round trip plus the peer's key agreement (well under a millisecond).
    pub fn handshake_rtt(&self) -> Duration {
        self.handshake_rtt
    }

    /// The stream the handshake ran on.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The raw stream, for tests that write under the encryption.
    #[cfg(test)]
    pub(super) fn into_io(self) -> S {
        self.io
    }
}

impl<S> fmt::Debug for NoiseOutput<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseOutput")
            .field("handshake_rtt", &self.handshake_rtt)
            .finish_non_exhaustive()
    }
}

fn invalid(e: NoiseError) -> io::Error {
    e.into()
}

impl<S: AsyncRead + Unpin> AsyncRead for NoiseOutput<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.ppos < this.plen {
                let n = buf.len().min(this.plen - this.ppos);
                buf[..n].copy_from_slice(&this.plain[this.ppos..this.ppos + n]);
                this.ppos += n;
                return Poll::Ready(Ok(n));
            }
            if this.read_failed {
                return Poll::Ready(Err(invalid(NoiseError::Broken)));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let have = this.rend - this.rstart;
            if have >= LEN_PREFIX {
                let start = this.rstart;
                let len = usize::from(u16::from_be_bytes([this.rbuf[start], this.rbuf[start + 1]]));
                if len < TAG_LEN {
                    this.read_failed = true;
                    return Poll::Ready(Err(invalid(NoiseError::FrameTooShort { len })));
                }
                if have >= LEN_PREFIX + len {
                    let frame = &this.rbuf[start + LEN_PREFIX..start + LEN_PREFIX + len];
                    this.rstart += LEN_PREFIX + len;
                    if this.rstart == this.rend {
                        this.rstart = 0;
                        this.rend = 0;
                    }
                    // Decrypt straight into the caller's buffer when the whole frame fits.
                    if buf.len() >= len - TAG_LEN {
                        match this.state.read_message(frame, buf) {
                            Ok(0) => continue,
                            Ok(n) => return Poll::Ready(Ok(n)),
                            Err(e) => {
                                this.read_failed = true;
                                return Poll::Ready(Err(invalid(e.into())));
                            }
                        }
                    }
                    match this.state.read_message(frame, &mut this.plain) {
                        Ok(n) => {
                            this.ppos = 0;
                            this.plen = n;
                            continue;
                        }
                        Err(e) => {
                            this.read_failed = true;
                            return Poll::Ready(Err(invalid(e.into())));
                        }
                    }
                }
            }
            // Need more bytes. The buffer holds the largest frame, so after moving the partial
            // frame to the front there is always room.
            if this.rend == this.rbuf.len() {
                this.rbuf.copy_within(this.rstart..this.rend, 0);
                this.rend -= this.rstart;
                this.rstart = 0;
            }
            let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut this.rbuf[this.rend..]))?;
            if n == 0 {
                if this.rend == this.rstart {
                    return Poll::Ready(Ok(0));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a noise frame",
                )));
            }
            this.rend += n;
        }
    }
}

impl<S: AsyncWrite + Unpin> NoiseOutput<S> {
    /// Encrypts what is pending and writes every encrypted byte out.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.spos < self.slen {
                let n = ready!(
                    Pin::new(&mut self.io).poll_write(cx, &self.sbuf[self.spos..self.slen])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.spos += n;
                continue;
            }
            if self.pending.is_empty() {
                self.spos = 0;
                self.slen = 0;
                return Poll::Ready(Ok(()));
            }
            let n = self
                .state
                .write_message(&self.pending, &mut self.sbuf[LEN_PREFIX..])
                .map_err(|e| invalid(e.into()))?;
            let len = u16::try_from(n).map_err(|_| {
                invalid(NoiseError::FrameTooLarge {
                    len: n,
                    max: MAX_NOISE_MESSAGE,
                })
            })?;
            self.sbuf[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
            self.spos = 0;
            self.slen = LEN_PREFIX + n;
            self.pending.clear();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoiseOutput<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() == MAX_FRAME_PLAINTEXT {
            ready!(this.poll_send(cx))?;
        }
        let n = buf.len().min(MAX_FRAME_PLAINTEXT - this.pending.len());
        this.pending.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}
