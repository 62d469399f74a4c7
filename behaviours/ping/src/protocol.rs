//! The wire side of `/ipfs/ping/1.0.0`: one ping (dialer) and the echo loop (listener).
//!
//! Both work over any `futures::io` stream so they can be tested without a swarm. Every frame
//! is exactly [`PING_SIZE`] bytes read into a fixed buffer: nothing here allocates or sizes
//! anything from what the remote sends.

use std::io;
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Failure, PING_SIZE};

/// Sends one ping of [`PING_SIZE`] random bytes and waits for the echo. Returns the stream,
/// for the next ping, and the time from the start of the write to the end of the echo.
///
/// I/O errors go through `classify` (which recognises a refused lazy negotiation); an echo
/// that differs from the ping is a [`Failure::Other`]. No timeout: the caller adds one.
pub(crate) async fn send_ping<S>(
    mut stream: S,
    classify: fn(io::Error) -> Failure,
) -> Result<(S, Duration), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let payload: [u8; PING_SIZE] = rand::random();
    let started = Instant::now();
    stream.write_all(&payload).await.map_err(classify)?;
    stream.flush().await.map_err(classify)?;
    let mut echo = [0u8; PING_SIZE];
    stream.read_exact(&mut echo).await.map_err(classify)?;
    let rtt = started.elapsed();
    if echo != payload {
        return Err(Failure::other(io::Error::new(
            io::ErrorKind::InvalidData,
            "ping echo differs from the payload sent",
        )));
    }
    Ok((stream, rtt))
}

/// Reads one frame into `buf`. `Ok(false)` on a clean end of stream before the frame's first
/// byte; an end of stream inside a frame is [`io::ErrorKind::UnexpectedEof`].
pub(crate) async fn read_frame<S>(stream: &mut S, buf: &mut [u8; PING_SIZE]) -> io::Result<bool>
where
    S: AsyncRead + Unpin,
{
    let mut filled = 0;
    while filled < PING_SIZE {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            // `min` guards against a reader that claims more than it was given.
            Ok(n) => filled = (filled + n).min(PING_SIZE),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Answers pings on an inbound stream: echoes every [`PING_SIZE`]-byte frame until the remote
/// finishes its side, then finishes ours. Returns the number of pings answered.
///
/// Each echo (write and flush) must complete within `limit`, else
/// [`io::ErrorKind::TimedOut`]: a remote that sends pings but never reads our echoes would
/// otherwise block the write forever (the caller resets the stream). Waiting for the next
/// ping is not limited.
pub(crate) async fn echo<S>(stream: &mut S, limit: Duration) -> io::Result<u64>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = [0u8; PING_SIZE];
    let mut answered = 0u64;
    while read_frame(stream, &mut buf).await? {
        let write = async {
            stream.write_all(&buf).await?;
            stream.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(written) => written?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    meshwire_swarm::toolkit::Timeout(limit),
                ))
            }
        }
        answered = answered.saturating_add(1);
    }
    stream.close().await?;
    Ok(answered)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    #[derive(Default)]
    struct Pipe {
        buf: VecDeque<u8>,
        closed: bool,
        reader: Option<Waker>,
    }

    /// One end of an in-memory duplex stream (unbounded, for tests).
    pub(crate) struct End {
        rx: Arc<Mutex<Pipe>>,
        tx: Arc<Mutex<Pipe>>,
        /// Deliver at most this many bytes per read, to exercise fragmentation.
        max_read: usize,
    }

    pub(crate) fn duplex() -> (End, End) {
        let a = Arc::new(Mutex::new(Pipe::default()));
        let b = Arc::new(Mutex::new(Pipe::default()));
        (
            End {
                rx: a.clone(),
                tx: b.clone(),
                max_read: usize::MAX,
            },
            End {
                rx: b,
                tx: a,
                max_read: usize::MAX,
            },
        )
    }

    impl End {
        fn close_tx(&self) {
            let mut p = self.tx.lock().unwrap();
            p.closed = true;
            if let Some(w) = p.reader.take() {
                w.wake();
            }
        }
    }

    impl Drop for End {
        fn drop(&mut self) {
            self.close_tx();
        }
    }

    impl AsyncRead for End {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let max = self.max_read;
            let mut p = self.rx.lock().unwrap();
            if p.buf.is_empty() {
                if p.closed {
                    return Poll::Ready(Ok(0));
                }
                p.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = buf.len().min(p.buf.len()).min(max);
            for (dst, src) in buf.iter_mut().zip(p.buf.drain(..n)) {
                *dst = src;
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for End {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let mut p = self.tx.lock().unwrap();
            if p.closed {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            p.buf.extend(buf);
            if let Some(w) = p.reader.take() {
                w.wake();
            }
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.close_tx();
            Poll::Ready(Ok(()))
        }
    }

    const LIMIT: Duration = Duration::from_secs(5);

    fn plain(e: io::Error) -> Failure {
        Failure::other(e)
    }

    #[tokio::test]
    async fn ping_and_echo_reuse_one_stream() {
        let (mut a, mut b) = duplex();
        let listener = tokio::spawn(async move { echo(&mut b, LIMIT).await });
        for _ in 0..10 {
            let (s, rtt) = send_ping(a, plain).await.expect("ping");
            assert!(rtt < Duration::from_secs(1));
            a = s;
        }
        a.close().await.unwrap();
        // The listener answered all ten and ended cleanly at the frame boundary.
        assert_eq!(listener.await.unwrap().unwrap(), 10);
        // It finished its side too.
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn echo_reassembles_fragmented_frames() {
        let (mut a, mut b) = duplex();
        b.max_read = 3;
        a.max_read = 5;
        let listener = tokio::spawn(async move { echo(&mut b, LIMIT).await });
        // Writes split in odd places.
        let frames: Vec<u8> = (0..(PING_SIZE * 3) as u8).collect();
        for chunk in frames.chunks(7) {
            a.write_all(chunk).await.unwrap();
        }
        let mut back = vec![0u8; frames.len()];
        a.read_exact(&mut back).await.unwrap();
        assert_eq!(back, frames);
        drop(a);
        assert_eq!(listener.await.unwrap().unwrap(), 3);
    }

    #[tokio::test]
    async fn echo_rejects_partial_frame_at_eof() {
        let (mut a, mut b) = duplex();
        let listener = tokio::spawn(async move { echo(&mut b, LIMIT).await });
        a.write_all(&[7u8; PING_SIZE + 5]).await.unwrap();
        a.close().await.unwrap();
        let err = listener.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // The complete frame was still answered.
        let mut back = [0u8; PING_SIZE];
        a.read_exact(&mut back).await.unwrap();
        assert_eq!(back, [7u8; PING_SIZE]);
    }

    #[tokio::test]
    async fn echo_of_empty_stream_is_clean() {
        let (a, mut b) = duplex();
        drop(a);
        assert_eq!(echo(&mut b, LIMIT).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn wrong_echo_is_a_failure() {
        let (a, mut b) = duplex();
        let liar = tokio::spawn(async move {
            let mut buf = [0u8; PING_SIZE];
            b.read_exact(&mut buf).await.unwrap();
            buf[0] ^= 1;
            b.write_all(&buf).await.unwrap();
            b
        });
        match send_ping(a, plain).await {
            Err(Failure::Other(e)) => assert!(e.to_string().contains("differs"), "{e}"),
            other => panic!("expected Failure::Other, got {:?}", other.map(|(_, d)| d)),
        }
        drop(liar.await.unwrap());
    }

    #[tokio::test]
    async fn short_echo_then_eof_is_a_failure() {
        let (a, mut b) = duplex();
        tokio::spawn(async move {
            let mut buf = [0u8; PING_SIZE];
            b.read_exact(&mut buf).await.unwrap();
            b.write_all(&buf[..10]).await.unwrap();
            b.close().await.unwrap();
        });
        match send_ping(a, plain).await {
            Err(Failure::Other(e)) => assert!(e.to_string().contains("end of file"), "{e}"),
            other => panic!("expected Failure::Other, got {:?}", other.map(|(_, d)| d)),
        }
    }

    #[tokio::test]
    async fn overlong_echo_does_not_confuse_the_next_ping() {
        // A remote that answers with more than a frame: the surplus is read as the start of
        // the next echo, which then differs. Never a panic, never a huge read.
        let (a, mut b) = duplex();
        tokio::spawn(async move {
            let mut buf = [0u8; PING_SIZE];
            b.read_exact(&mut buf).await.unwrap();
            b.write_all(&buf).await.unwrap();
            b.write_all(&[0u8; 1000]).await.unwrap();
            let _ = b.read_exact(&mut buf).await;
            b
        });
        let (a, _) = send_ping(a, plain).await.expect("first ping is fine");
        assert!(matches!(send_ping(a, plain).await, Err(Failure::Other(_))));
    }

    /// A remote that sends pings without end and never reads: every write of ours is
    /// blocked (its receive window is full).
    struct NeverReads {
        written: usize,
    }

    impl AsyncRead for NeverReads {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            buf.fill(7);
            Poll::Ready(Ok(buf.len()))
        }
    }

    impl AsyncWrite for NeverReads {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            // Some room at first, then none.
            if self.written < 3 * PING_SIZE {
                self.written += buf.len();
                return Poll::Ready(Ok(buf.len()));
            }
            Poll::Pending
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn an_echo_blocked_past_its_limit_times_out() {
        let mut remote = NeverReads { written: 0 };
        let limit = Duration::from_millis(100);
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), echo(&mut remote, limit))
            .await
            .expect("the echo gives up by itself")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit);
        // The pings that fit were answered first.
        assert_eq!(remote.written, 3 * PING_SIZE);
    }
}
