use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use super::*;

/// The relay's end of a pipe: a futures-io stream that records resets.
struct End {
    io: Compat<DuplexStream>,
    reset: Arc<AtomicBool>,
}

impl futures::AsyncRead for End {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl futures::AsyncWrite for End {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

impl Reset for End {
    fn reset(&mut self) {
        self.reset.store(true, Ordering::SeqCst);
    }
}

/// A pipe of `capacity` bytes: the relay's end, the peer's end, the relay end's reset flag.
fn pipe(capacity: usize) -> (End, DuplexStream, Arc<AtomicBool>) {
    let (relay, remote) = duplex(capacity);
    let reset = Arc::new(AtomicBool::new(false));
    (
        End {
            io: relay.compat(),
            reset: reset.clone(),
        },
        remote,
        reset,
    )
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` and closes the writing half, while reading everything to the end.
async fn exchange(io: DuplexStream, data: Vec<u8>) -> Vec<u8> {
    let (mut rd, mut wr) = tokio::io::split(io);
    let write = async move {
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let read = async move {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        got
    };
    tokio::join!(write, read).1
}

#[tokio::test]
async fn data_integrity_both_ways() {
    for buf_size in [1, 4096] {
        let (a, src, ra) = pipe(1024);
        let (b, dst, rb) = pipe(1024);
        let (up, down) = (pattern(300_000, 1), pattern(200_001, 7));
        let len = if buf_size == 1 { 5_000 } else { usize::MAX };
        let (up, down) = (
            up[..up.len().min(len)].to_vec(),
            down[..down.len().min(len)].to_vec(),
        );
        let (end, at_dst, at_src) = tokio::join!(
            bridge(a, b, CircuitLimits::default(), buf_size),
            exchange(dst, down.clone()),
            exchange(src, up.clone()),
        );
        assert_eq!(at_dst, up);
        assert_eq!(at_src, down);
        assert_eq!(
            end,
            CircuitEnd {
                bytes_a_to_b: up.len() as u64,
                bytes_b_to_a: down.len() as u64,
                reason: CircuitEndReason::Finished
            }
        );
        assert!(!ra.load(Ordering::SeqCst) && !rb.load(Ordering::SeqCst));
    }
}

#[tokio::test]
async fn half_close_is_propagated() {
    let (a, mut src, _) = pipe(64);
    let (b, mut dst, _) = pipe(64);
    let relay = tokio::spawn(bridge(a, b, CircuitLimits::default(), 16));

    src.write_all(b"hello").await.unwrap();
    src.shutdown().await.unwrap();
    let mut got = Vec::new();
    dst.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello", "the destination sees the source's end");

    // The other direction still works after the first one closed.
    dst.write_all(b"world").await.unwrap();
    let mut reply = [0u8; 5];
    src.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"world");
    assert!(!relay.is_finished());
    dst.shutdown().await.unwrap();
    assert_eq!(src.read(&mut reply).await.unwrap(), 0);

    let end = relay.await.unwrap();
    assert_eq!(
        (end.bytes_a_to_b, end.bytes_b_to_a, end.reason),
        (5, 5, CircuitEndReason::Finished)
    );
}

#[tokio::test]
async fn byte_limit_counts_both_directions_and_resets() {
    let (a, mut src, ra) = pipe(4096);
    let (b, mut dst, rb) = pipe(4096);
    let limits = CircuitLimits {
        duration: None,
        bytes: Some(1000),
    };
    let relay = tokio::spawn(bridge(a, b, limits, 4096));
    src.write_all(&[1; 600]).await.unwrap();
    let mut got = vec![0; 600];
    dst.read_exact(&mut got).await.unwrap();
    // 600 + 600 passes the limit of 1000 for both directions together.
    dst.write_all(&[2; 600]).await.unwrap();
    let end = relay.await.unwrap();
    assert_eq!(end.reason, CircuitEndReason::DataLimit);
    assert!(end.total_bytes() <= 1000, "{end:?}");
    assert_eq!((end.bytes_a_to_b, end.bytes_b_to_a), (600, 0));
    assert!(ra.load(Ordering::SeqCst) && rb.load(Ordering::SeqCst));
    // Nothing of the second 600 bytes reached the source.
    let mut rest = Vec::new();
    src.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn exactly_the_byte_limit_finishes() {
    let (a, src, _) = pipe(256);
    let (b, dst, rb) = pipe(256);
    let limits = CircuitLimits {
        duration: None,
        bytes: Some(1000),
    };
    let (end, at_dst, _) = tokio::join!(
        bridge(a, b, limits, 128),
        exchange(dst, vec![3; 400]),
        exchange(src, vec![4; 600]),
    );
    assert_eq!(at_dst, vec![4; 600]);
    assert_eq!(end.reason, CircuitEndReason::Finished);
    assert_eq!(end.total_bytes(), 1000);
    assert!(!rb.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn duration_limit_resets_both() {
    let (a, mut src, ra) = pipe(64);
    let (b, mut dst, rb) = pipe(64);
    let limits = CircuitLimits {
        duration: Some(Duration::from_secs(120)),
        bytes: None,
    };
    let start = tokio::time::Instant::now();
    let relay = tokio::spawn(bridge(a, b, limits, 64));
    // Traffic before the deadline passes.
    tokio::time::sleep(Duration::from_secs(119)).await;
    src.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    dst.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    let end = relay.await.unwrap();
    assert_eq!(end.reason, CircuitEndReason::DurationLimit);
    assert_eq!(end.bytes_a_to_b, 4);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(120) && elapsed < Duration::from_secs(121));
    assert!(ra.load(Ordering::SeqCst) && rb.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_failed_stream_resets_the_other() {
    let (a, mut src, ra) = pipe(64);
    let (b, dst, rb) = pipe(64);
    drop(dst);
    let relay = tokio::spawn(bridge(a, b, CircuitLimits::default(), 64));
    src.write_all(b"into the void").await.unwrap();
    let end = relay.await.unwrap();
    assert!(matches!(end.reason, CircuitEndReason::Error(_)), "{end:?}");
    assert!(ra.load(Ordering::SeqCst) && rb.load(Ordering::SeqCst));
}
