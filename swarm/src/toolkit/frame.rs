//! Length-prefixed frames: an unsigned-varint length, then that many bytes.
//!
//! This is the framing of identify, Kademlia, circuit relay, gossipsub and most libp2p
//! protocols. Reading checks the announced length against a bound before it buffers anything,
//! and the buffer grows with the bytes that arrive (a peer announcing a large frame and
//! sending nothing costs nothing); a prefix longer than a `u64` varint is refused.

use std::io;

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};

use crate::StreamError;

/// Longest unsigned varint of a `u64`.
pub const MAX_PREFIX_LEN: usize = 10;

/// Most bytes buffered ahead of what has arrived while reading a frame body.
const READ_CHUNK: usize = 8 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FrameError {
    /// The frame announces more bytes than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The length prefix is not a valid unsigned varint (too long or not minimal).
    #[error("invalid frame length prefix")]
    InvalidPrefix,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The read or write took longer than its time limit.
    #[error(transparent)]
    Timeout(#[from] super::Timeout),
    /// The resource manager had no room for the frame
    /// ([`read_frame_reserved`]).
    #[error("resource manager: {0}")]
    Resource(#[from] meshwire_rcmgr::ResourceError),
    /// The stream failed (a refused lazy negotiation reads as
    /// [`StreamError::UnsupportedProtocols`]).
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return FrameError::Truncated;
        }
        FrameError::Stream(StreamError::from_io(e))
    }
}

impl FrameError {
    /// Whether the remote refused the (lazily negotiated) protocol.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, FrameError::Stream(e) if e.is_unsupported())
    }
}

/// Encodes `len` as an unsigned varint into `buf`; returns the used prefix.
fn encode_prefix(len: u64, buf: &mut [u8; MAX_PREFIX_LEN]) -> &[u8] {
    unsigned_varint::encode::u64(len, buf)
}

/// Reads one frame of at most `max` bytes. `Ok(None)` on a clean end of stream before the
/// frame's first byte.
///
/// ```
/// use meshwire_swarm::toolkit::{read_frame, write_frame, FrameError};
///
/// # futures::executor::block_on(async {
/// let mut wire = Vec::new();
/// write_frame(&mut wire, b"hello").await?;
/// let mut input = futures::io::Cursor::new(wire);
/// assert_eq!(read_frame(&mut input, 16).await?, Some(b"hello".to_vec()));
/// assert_eq!(read_frame(&mut input, 16).await?, None);
/// # Ok::<_, FrameError>(()) }).unwrap();
/// ```
///
/// # Errors
///
/// [`FrameError::TooLarge`] (before anything of the body is read),
/// [`FrameError::InvalidPrefix`], [`FrameError::Truncated`], or the stream's error.
pub async fn read_frame<S>(io: &mut S, max: usize) -> Result<Option<Vec<u8>>, FrameError>
where
    S: AsyncRead + Unpin,
{
    read_frame_with(io, max, |_| Ok::<(), FrameError>(())).await
}

/// [`read_frame`] that shows the announced length to `admit` before buffering any of the body:
/// `admit` may refuse it (e.g. over a memory budget) with its own error.
///
/// # Errors
///
/// As [`read_frame`], converted into `E`, or `admit`'s error.
pub async fn read_frame_with<S, E>(
    io: &mut S,
    max: usize,
    admit: impl FnOnce(usize) -> Result<(), E>,
) -> Result<Option<Vec<u8>>, E>
where
    S: AsyncRead + Unpin,
    E: From<FrameError>,
{
    let Some(len) = read_prefix(io, max).await? else {
        return Ok(None);
    };
    admit(len)?;
    let mut body = Vec::new();
    read_body(io, len, &mut body).await?;
    Ok(Some(body))
}

/// Reads `len` bytes into `body`, growing it by at most [`READ_CHUNK`] beyond what arrived.
async fn read_body<S>(io: &mut S, len: usize, body: &mut Vec<u8>) -> Result<(), FrameError>
where
    S: AsyncRead + Unpin,
{
    body.reserve_exact(len.min(READ_CHUNK));
    while body.len() < len {
        let want = (len - body.len()).min(READ_CHUNK);
        let start = body.len();
        body.resize(start + want, 0);
        let n = io.read(&mut body[start..]).await?;
        body.truncate(start + n);
        if n == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(())
}

/// [`read_frame`] from a swarm [`Stream`](crate::Stream) that first reserves the frame's
/// announced length with the swarm's resource manager (charged to the stream, its peer, its
/// protocol and the system), so what peers make a behaviour buffer counts against their
/// share. The reservation comes back with the frame; keep it as long as the bytes (or what
/// is decoded from them) are held.
///
/// # Errors
///
/// As [`read_frame`], and [`FrameError::Resource`] when a scope has no room (nothing of the
/// body is read then).
pub async fn read_frame_reserved(
    stream: &mut crate::Stream,
    max: usize,
) -> Result<Option<(Vec<u8>, meshwire_rcmgr::Reservation)>, FrameError> {
    let Some(len) = read_prefix(stream, max).await? else {
        return Ok(None);
    };
    let reservation = stream.reserve_memory(len as u64)?;
    let mut body = Vec::new();
    read_body(stream, len, &mut body).await?;
    Ok(Some((body, reservation)))
}

/// Reads the length prefix one byte at a time (so nothing past it is consumed) and checks it
/// against `max`.
async fn read_prefix<S>(io: &mut S, max: usize) -> Result<Option<usize>, FrameError>
where
    S: AsyncRead + Unpin,
{
    let mut prefix = [0u8; MAX_PREFIX_LEN];
    let mut n = 0;
    loop {
        let mut byte = [0u8; 1];
        if io.read(&mut byte).await? == 0 {
            return if n == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        prefix[n] = byte[0];
        n += 1;
        if byte[0] & 0x80 == 0 {
            break;
        }
        if n == MAX_PREFIX_LEN {
            return Err(FrameError::InvalidPrefix);
        }
    }
    let (len, _) =
        unsigned_varint::decode::u64(&prefix[..n]).map_err(|_| FrameError::InvalidPrefix)?;
    match usize::try_from(len) {
        Ok(len) if len <= max => Ok(Some(len)),
        _ => Err(FrameError::TooLarge { len, max }),
    }
}

/// Writes `body` as one frame (prefix and body in one write when the body is small) and
/// flushes.
///
/// # Errors
///
/// The stream's error.
pub async fn write_frame<S>(io: &mut S, body: &[u8]) -> Result<(), FrameError>
where
    S: AsyncWrite + Unpin,
{
    let mut buf = [0u8; MAX_PREFIX_LEN];
    let prefix = encode_prefix(body.len() as u64, &mut buf);
    if body.len() <= READ_CHUNK {
        let mut frame = Vec::with_capacity(prefix.len() + body.len());
        frame.extend_from_slice(prefix);
        frame.extend_from_slice(body);
        io.write_all(&frame).await?;
    } else {
        io.write_all(prefix).await?;
        io.write_all(body).await?;
    }
    io.flush().await?;
    Ok(())
}

/// Writes every frame that `queue` yields, each within `timeout`, until the queue ends or
/// stays empty for `idle`; then closes `io` (the remote reads a clean end of stream). The
/// writing half of a long-lived stream that carries a peer's messages.
///
/// # Errors
///
/// [`FrameError::Timeout`] if a write takes longer than `timeout`, or the stream's error.
pub async fn write_frames<S, Q>(
    io: &mut S,
    queue: &mut Q,
    idle: Duration,
    timeout: Duration,
) -> Result<(), FrameError>
where
    S: AsyncWrite + Unpin,
    Q: futures::Stream<Item = Vec<u8>> + Unpin,
{
    while let Ok(Some(frame)) = tokio::time::timeout(idle, queue.next()).await {
        super::with_timeout(timeout, write_frame(io, &frame)).await?;
    }
    super::with_timeout(timeout, async { Ok(io.close().await?) }).await
}

/// `body` as one frame in a buffer (prefix then body), for protocols that build their
/// messages before writing.
pub fn encode_frame(body: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; MAX_PREFIX_LEN];
    let prefix = encode_prefix(body.len() as u64, &mut buf);
    let mut frame = Vec::with_capacity(prefix.len() + body.len());
    frame.extend_from_slice(prefix);
    frame.extend_from_slice(body);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    #[test]
    fn round_trip_and_clean_end() {
        block_on(async {
            let mut wire = Vec::new();
            write_frame(&mut wire, b"").await.unwrap();
            write_frame(&mut wire, &[7u8; 20_000]).await.unwrap();
            let mut input = Cursor::new(wire);
            assert_eq!(read_frame(&mut input, 20_000).await.unwrap(), Some(vec![]));
            assert_eq!(
                read_frame(&mut input, 20_000).await.unwrap(),
                Some(vec![7u8; 20_000])
            );
            assert_eq!(read_frame(&mut input, 20_000).await.unwrap(), None);
        });
    }

    #[test]
    fn over_limit_refused_before_the_body() {
        block_on(async {
            // The prefix says 1,000; nothing follows. The limit is checked first.
            let mut input = Cursor::new(encode_frame(&[0u8; 1000])[..2].to_vec());
            match read_frame(&mut input, 999).await {
                Err(FrameError::TooLarge {
                    len: 1000,
                    max: 999,
                }) => {}
                other => panic!("{other:?}"),
            }
        });
    }

    #[test]
    fn truncated_prefix_and_body() {
        block_on(async {
            let mut input = Cursor::new(vec![0x80]);
            assert!(matches!(
                read_frame(&mut input, 100).await,
                Err(FrameError::Truncated)
            ));
            let mut input = Cursor::new(vec![5, 1, 2]);
            assert!(matches!(
                read_frame(&mut input, 100).await,
                Err(FrameError::Truncated)
            ));
        });
    }

    #[test]
    fn overlong_and_non_minimal_prefixes_refused() {
        block_on(async {
            let mut input = Cursor::new(vec![0xff; 11]);
            assert!(matches!(
                read_frame(&mut input, usize::MAX).await,
                Err(FrameError::InvalidPrefix)
            ));
            // 0x81 0x00 is 1 written in two bytes.
            let mut input = Cursor::new(vec![0x81, 0x00, 9]);
            assert!(matches!(
                read_frame(&mut input, 100).await,
                Err(FrameError::InvalidPrefix)
            ));
        });
    }

    #[test]
    fn admit_sees_the_length_first() {
        block_on(async {
            let mut input = Cursor::new(encode_frame(b"abc"));
            let mut seen = None;
            let got = read_frame_with(&mut input, 10, |len| {
                seen = Some(len);
                Ok::<(), FrameError>(())
            })
            .await
            .unwrap();
            assert_eq!((seen, got), (Some(3), Some(b"abc".to_vec())));
            let mut input = Cursor::new(encode_frame(b"abc"));
            let refused = read_frame_with(&mut input, 10, |_| {
                Err(FrameError::TooLarge { len: 3, max: 2 })
            })
            .await;
            assert!(matches!(refused, Err(FrameError::TooLarge { .. })));
        });
    }

    /// A reader that announces a 1 MiB frame and then trickles: the buffer never runs far
    /// ahead of what arrived.
    struct Trickle {
        sent: usize,
        prefix: Vec<u8>,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if self.sent < self.prefix.len() {
                buf[0] = self.prefix[self.sent];
                self.sent += 1;
                return Poll::Ready(Ok(1));
            }
            // 10 bytes of body, then the stream ends.
            if self.sent < self.prefix.len() + 10 {
                self.sent += 1;
                buf[0] = 1;
                return Poll::Ready(Ok(1));
            }
            Poll::Ready(Ok(0))
        }
    }

    #[test]
    fn buffer_grows_with_arrived_bytes_only() {
        block_on(async {
            let mut buf = [0u8; MAX_PREFIX_LEN];
            let prefix = encode_prefix(1 << 20, &mut buf).to_vec();
            let mut io = Trickle { sent: 0, prefix };
            let len = read_prefix(&mut io, 1 << 20).await.unwrap().unwrap();
            assert_eq!(len, 1 << 20);
            let mut body = Vec::new();
            let res = read_body(&mut io, len, &mut body).await;
            assert!(matches!(res, Err(FrameError::Truncated)));
            assert_eq!(body.len(), 10);
            // 10 bytes arrived: the buffer never reserved the announced megabyte.
            assert!(
                body.capacity() <= 2 * (10 + READ_CHUNK),
                "{}",
                body.capacity()
            );
        });
    }
}
