//! Noise + Yamux connections end to end over in-memory pipes.

use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::FutureExt;
use meshwire_core::{Direction, Keypair};
use tokio::time::timeout;
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::*;
use crate::connection::CLOSE_CODE_NORMAL;
use crate::{CloseReason, ConnectionError, Multiaddr, TransportError};

const T: Duration = Duration::from_secs(20);

fn addr(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

async fn connect_with(
    cfg: &UpgradeConfig,
    remote_for_listener: Multiaddr,
) -> (Connection, Connection) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (alice, bob) = (Keypair::generate(), Keypair::generate());
    let (out, inb) = tokio::join!(
        upgrade_outbound(
            a.compat(),
            &alice,
            Some(bob.peer_id()),
            addr("/memory/1"),
            addr("/memory/2"),
            cfg
        ),
        upgrade_inbound(
            b.compat(),
            &bob,
            addr("/memory/2"),
            remote_for_listener,
            cfg
        ),
    );
    let (out, inb) = (out.unwrap(), inb.unwrap());
    assert_eq!(out.peer_id(), bob.peer_id());
    assert_eq!(inb.peer_id(), alice.peer_id());
    (out, inb)
}

async fn connect() -> (Connection, Connection) {
    connect_with(&UpgradeConfig::default(), addr("/memory/1")).await
}

#[tokio::test]
async fn upgrade_yields_connections_with_the_given_addresses_and_directions() {
    let (out, inb) = connect().await;
    assert_eq!(out.direction(), Direction::Outbound);
    assert_eq!(inb.direction(), Direction::Inbound);
    assert_eq!(out.local_addr(), &addr("/memory/1"));
    assert_eq!(out.remote_addr(), &addr("/memory/2"));
    assert_eq!(inb.local_addr(), &addr("/memory/2"));
    assert!(!out.is_relayed());
    assert_eq!(out.relay_peer_id(), None);
    assert!(out.as_quic().is_none());
    let y = out.as_yamux().expect("a yamux connection");
    assert_eq!(y.handshake_rtt(), out.rtt());
    assert!(out.rtt() > Duration::ZERO && out.rtt() < T);
}

#[tokio::test]
async fn relayed_remote_addresses_name_the_relay() {
    let relay = Keypair::generate().peer_id();
    let peer = Keypair::generate().peer_id();
    let circuit = addr(&format!(
        "/ip4/198.51.100.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{peer}"
    ));
    let (_out, inb) = connect_with(&UpgradeConfig::default(), circuit).await;
    assert!(inb.is_relayed());
    assert_eq!(inb.relay_peer_id(), Some(relay));

    // Without the trailing peer, and with the relay's /p2p missing.
    let c = crate::circuit_relay;
    assert_eq!(
        c(&addr(&format!(
            "/ip4/1.2.3.4/tcp/1/p2p/{relay}/p2p-circuit"
        ))),
        Some(relay)
    );
    assert_eq!(c(&addr("/ip4/1.2.3.4/tcp/1/p2p-circuit")), None);
    assert_eq!(c(&addr(&format!("/ip4/1.2.3.4/tcp/1/p2p/{relay}"))), None);
}

#[tokio::test]
async fn negotiated_streams_work_in_both_directions() {
    let (out, inb) = connect().await;
    for (a, b) in [(&out, &inb), (&inb, &out)] {
        let ask = async {
            let (p, mut s) = a.open_negotiated(["/echo/1"], T).await.unwrap();
            assert_eq!(p, "/echo/1");
            s.write_all(b"ping").await.unwrap();
            s.close().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        };
        let answer = async {
            let (p, mut s) = b
                .accept_negotiated(&["/other", "/echo/1"], T)
                .await
                .unwrap();
            assert_eq!(p, "/echo/1");
            let mut got = Vec::new();
            // Reads end when the asker closes its write side; ours stays open to answer.
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.close().await.unwrap();
        };
        let (got, ()) = timeout(T, async { tokio::join!(ask, answer) })
            .await
            .unwrap();
        assert_eq!(got, b"ping");
    }
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 256) as u8)
        .collect()
}

async fn echo_server(conn: Connection, n: usize) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut s = conn.accept_stream().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let (mut r, mut w) = (&mut s).split();
            futures::io::copy(&mut r, &mut w).await.unwrap();
            w.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn echo_clients(conn: Connection, n: usize, len: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut s = conn.open_stream().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let data = pattern(i, len);
            let (mut r, mut w) = (&mut s).split();
            let send = async {
                w.write_all(&data).await.unwrap();
                w.close().await.unwrap();
            };
            let recv = async {
                // read_exact into a zeroed buffer (futures' read_to_end zeroes its spare
                // capacity byte by byte, which dominates an unoptimised test build).
                let mut got = vec![0u8; len];
                r.read_exact(&mut got).await.unwrap();
                assert_eq!(r.read(&mut [0u8; 1]).await.unwrap(), 0, "end of stream");
                got
            };
            let ((), got) = tokio::join!(send, recv);
            assert!(got == data, "stream {i}: data differs");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_both_directions_keep_data_intact() {
    const STREAMS: usize = 64;
    const LEN: usize = 1 << 20;
    let cfg = UpgradeConfig {
        max_inbound_streams_pending: STREAMS,
        yamux: YamuxConfig {
            max_num_streams: 256,
            max_connection_receive_window: 256 * YAMUX_STREAM_WINDOW,
        },
        ..UpgradeConfig::default()
    };
    let (out, inb) = connect_with(&cfg, addr("/memory/1")).await;
    let started = std::time::Instant::now();
    timeout(Duration::from_secs(120), async {
        tokio::join!(
            echo_server(inb.clone(), STREAMS),
            echo_clients(out.clone(), STREAMS, LEN),
            echo_server(out.clone(), STREAMS),
            echo_clients(inb.clone(), STREAMS, LEN),
        )
    })
    .await
    .expect("echo finished in time");
    eprintln!(
        "{} streams × {} KiB echoed each way in {:?}",
        2 * STREAMS,
        LEN / 1024,
        started.elapsed()
    );
    assert_eq!(out.as_yamux().unwrap().inbound_streams_dropped(), 0);
    assert!(out.close_reason().is_none() && inb.close_reason().is_none());
}

#[tokio::test]
async fn the_inbound_queue_bound_is_honoured() {
    let cfg = UpgradeConfig {
        max_inbound_streams_pending: 4,
        ..UpgradeConfig::default()
    };
    let (out, inb) = connect_with(&cfg, addr("/memory/1")).await;
    let mut opened = Vec::new();
    for i in 0..10u8 {
        let mut s = out.open_stream().await.unwrap();
        // yamux announces a stream with its first frame.
        s.write_all(&[i]).await.unwrap();
        s.flush().await.unwrap();
        opened.push(s);
    }
    let yamux = inb.as_yamux().unwrap();
    timeout(T, async {
        while yamux.inbound_streams_dropped() < 6 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("six streams dropped");
    // The first four wait in the queue, in order, with their data.
    for i in 0..4u8 {
        let mut s = timeout(T, inb.accept_stream()).await.unwrap().unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], i);
    }
    // Nothing else was kept.
    assert!(inb.accept_stream().now_or_never().is_none());
    assert_eq!(yamux.inbound_streams_dropped(), 6);
    // The dropped streams were reset: the opener's reads end.
    for mut s in opened.drain(4..) {
        let mut buf = Vec::new();
        let n = timeout(T, s.read_to_end(&mut buf)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    // The connection itself is fine.
    assert!(inb.close_reason().is_none());
    let mut s = out.open_stream().await.unwrap();
    s.write_all(b"x").await.unwrap();
    s.flush().await.unwrap();
    let mut t = timeout(T, inb.accept_stream()).await.unwrap().unwrap();
    let mut b = [0u8; 1];
    t.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"x");
}

#[tokio::test]
async fn close_reports_local_and_remote_reasons_and_fails_streams() {
    let (out, inb) = connect().await;
    let mut s = out.open_stream().await.unwrap();
    s.write_all(b"a").await.unwrap();
    s.flush().await.unwrap();
    let mut t = inb.accept_stream().await.unwrap();
    let mut b = [0u8; 1];
    t.read_exact(&mut b).await.unwrap();

    // A read pending on the closing side fails once the connection is closed.
    let pending_read = tokio::spawn(async move {
        let mut b = [0u8; 1];
        s.read(&mut b).await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(out.close_reason().is_none());
    out.close(7, "bye");
    let local = CloseReason::Local {
        code: 7,
        reason: "bye".into(),
    };
    assert_eq!(out.close_reason(), Some(local.clone()));
    assert_eq!(timeout(T, out.closed()).await.unwrap(), local);
    let read = timeout(T, pending_read).await.unwrap().unwrap();
    assert_eq!(
        read.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionAborted
    );
    assert!(matches!(
        out.open_stream().await,
        Err(ConnectionError::Closed(CloseReason::Local { code: 7, .. }))
    ));
    assert!(matches!(
        out.accept_stream().await,
        Err(ConnectionError::Closed(CloseReason::Local { code: 7, .. }))
    ));

    // The peer sees a remote close (yamux's GoAway has no code or reason).
    let remote = CloseReason::Remote {
        code: CLOSE_CODE_NORMAL,
        reason: String::new(),
    };
    assert_eq!(timeout(T, inb.closed()).await.unwrap(), remote);
    assert!(matches!(
        timeout(T, inb.accept_stream()).await.unwrap(),
        Err(ConnectionError::Closed(CloseReason::Remote { .. }))
    ));
    // Its stream ends.
    let mut rest = Vec::new();
    let r = timeout(T, t.read_to_end(&mut rest)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    // Closing again changes nothing.
    out.close(9, "again");
    assert_eq!(out.close_reason(), Some(local));
}

#[tokio::test]
async fn a_pending_accept_ends_when_the_connection_closes() {
    let (out, inb) = connect().await;
    let accept = tokio::spawn({
        let inb = inb.clone();
        async move { inb.accept_stream().await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    inb.close(1, "done");
    let r = timeout(T, accept).await.unwrap().unwrap();
    assert!(matches!(
        r,
        Err(ConnectionError::Closed(CloseReason::Local { code: 1, .. }))
    ));
    assert!(matches!(
        timeout(T, out.closed()).await.unwrap(),
        CloseReason::Remote { .. }
    ));
}

#[tokio::test]
async fn dropping_the_last_handle_and_stream_closes_the_connection() {
    let (out, inb) = connect().await;
    let clone = out.clone();
    drop(out);
    // A clone keeps it open.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(inb.close_reason().is_none());

    // So does a stream once every handle is gone.
    let mut s = clone.open_stream().await.unwrap();
    drop(clone);
    s.write_all(b"still here").await.unwrap();
    s.close().await.unwrap();
    let mut t = timeout(T, inb.accept_stream()).await.unwrap().unwrap();
    let mut got = Vec::new();
    t.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"still here");
    assert!(inb.close_reason().is_none());

    drop(s);
    assert_eq!(
        timeout(T, inb.closed()).await.unwrap(),
        CloseReason::Remote {
            code: CLOSE_CODE_NORMAL,
            reason: String::new()
        }
    );
}

#[tokio::test]
async fn datagrams_are_unsupported_without_hanging() {
    let (out, _inb) = connect().await;
    assert!(matches!(
        out.send_datagram(bytes::Bytes::from_static(b"x")),
        Err(ConnectionError::DatagramsUnsupported)
    ));
    assert!(matches!(
        timeout(T, out.read_datagram()).await.unwrap(),
        Err(ConnectionError::DatagramsUnsupported)
    ));
    assert_eq!(out.max_datagram_size(), None);
}

#[tokio::test]
async fn reset_aborts_and_close_half_closes() {
    let (out, inb) = connect().await;

    // Half close: the peer reads end of stream and can still answer.
    let mut s = out.open_stream().await.unwrap();
    s.write_all(b"question").await.unwrap();
    s.close().await.unwrap();
    let mut t = inb.accept_stream().await.unwrap();
    let mut got = Vec::new();
    t.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"question");
    t.write_all(b"answer").await.unwrap();
    t.close().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"answer");

    // Reset: our side fails at once; the peer's reads end and its writes fail.
    let mut s = out.open_stream().await.unwrap();
    s.write_all(b"x").await.unwrap();
    s.flush().await.unwrap();
    let mut t = inb.accept_stream().await.unwrap();
    let mut b = [0u8; 1];
    t.read_exact(&mut b).await.unwrap();
    s.reset();
    assert_eq!(
        s.read(&mut b).await.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    assert_eq!(
        s.write(b"y").await.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    let mut rest = Vec::new();
    assert_eq!(
        timeout(T, t.read_to_end(&mut rest)).await.unwrap().unwrap(),
        0
    );
    let w = timeout(T, async {
        t.write_all(b"late").await?;
        t.flush().await
    })
    .await
    .unwrap();
    assert!(w.is_err(), "writing to a reset stream fails");
    // The connection is unaffected.
    assert!(out.close_reason().is_none() && inb.close_reason().is_none());
}

#[tokio::test]
async fn the_dialer_refuses_the_wrong_peer() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (alice, bob) = (Keypair::generate(), Keypair::generate());
    let someone = Keypair::generate().peer_id();
    let cfg = UpgradeConfig::default();
    let (out, _inb) = tokio::join!(
        upgrade_outbound(
            a.compat(),
            &alice,
            Some(someone),
            addr("/memory/1"),
            addr("/memory/2"),
            &cfg
        ),
        upgrade_inbound(b.compat(), &bob, addr("/memory/2"), addr("/memory/1"), &cfg),
    );
    match out {
        Err(TransportError::PeerIdMismatch { expected, actual }) => {
            assert_eq!(expected, someone);
            assert_eq!(actual, bob.peer_id());
        }
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_peer_times_the_upgrade_out() {
    let (a, _b) = tokio::io::duplex(1 << 16);
    let cfg = UpgradeConfig {
        handshake_timeout: Duration::from_millis(100),
        ..UpgradeConfig::default()
    };
    let r = upgrade_inbound(
        a.compat(),
        &Keypair::generate(),
        addr("/memory/1"),
        addr("/memory/2"),
        &cfg,
    )
    .await;
    assert!(matches!(r, Err(TransportError::HandshakeTimeout)), "{r:?}");
}

#[tokio::test]
async fn garbage_instead_of_negotiation_is_a_typed_error() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    tokio::io::AsyncWriteExt::write_all(&mut b, &[0xff; 64])
        .await
        .unwrap();
    let r = upgrade_inbound(
        a.compat(),
        &Keypair::generate(),
        addr("/memory/1"),
        addr("/memory/2"),
        &UpgradeConfig::default(),
    )
    .await;
    assert!(matches!(r, Err(TransportError::Negotiation(_))), "{r:?}");
}

#[tokio::test]
async fn contradictory_yamux_limits_are_refused() {
    let (a, _b) = tokio::io::duplex(1 << 16);
    let cfg = UpgradeConfig {
        yamux: YamuxConfig {
            max_num_streams: 100,
            max_connection_receive_window: 1 << 20,
        },
        ..UpgradeConfig::default()
    };
    let r = upgrade_inbound(
        a.compat(),
        &Keypair::generate(),
        addr("/memory/1"),
        addr("/memory/2"),
        &cfg,
    )
    .await;
    assert!(matches!(r, Err(TransportError::InvalidConfig(_))), "{r:?}");
}

/// A stream whose reads fail with `ConnectionReset` once killed (a dead TCP connection).
struct Killable<S> {
    inner: S,
    dead: std::sync::Arc<std::sync::atomic::AtomicBool>,
    waker: std::sync::Arc<futures::task::AtomicWaker>,
}

impl<S: futures::AsyncRead + Unpin> futures::AsyncRead for Killable<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.waker.register(cx.waker());
        if self.dead.load(std::sync::atomic::Ordering::SeqCst) {
            return std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: futures::AsyncWrite + Unpin> futures::AsyncWrite for Killable<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[tokio::test]
async fn a_dead_underlying_stream_is_a_reset_here_and_a_remote_close_there() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let dead = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waker = std::sync::Arc::new(futures::task::AtomicWaker::new());
    let a = Killable {
        inner: a.compat(),
        dead: dead.clone(),
        waker: waker.clone(),
    };
    let (alice, bob) = (Keypair::generate(), Keypair::generate());
    let cfg = UpgradeConfig::default();
    let (out, inb) = tokio::join!(
        upgrade_outbound(a, &alice, None, addr("/memory/1"), addr("/memory/2"), &cfg),
        upgrade_inbound(b.compat(), &bob, addr("/memory/2"), addr("/memory/1"), &cfg),
    );
    let (out, inb) = (out.unwrap(), inb.unwrap());
    let mut s = out.open_stream().await.unwrap();
    s.write_all(b"a").await.unwrap();
    s.flush().await.unwrap();
    let _t = timeout(T, inb.accept_stream()).await.unwrap().unwrap();

    dead.store(true, std::sync::atomic::Ordering::SeqCst);
    waker.wake();
    assert_eq!(timeout(T, out.closed()).await.unwrap(), CloseReason::Reset);
    // The stream ends rather than hanging.
    let mut rest = Vec::new();
    let r = timeout(T, s.read_to_end(&mut rest)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(matches!(
        out.open_stream().await,
        Err(ConnectionError::Closed(CloseReason::Reset))
    ));
    // The failed side dropped its end, which the peer reads as the end of the connection.
    assert!(matches!(
        timeout(T, inb.closed()).await.unwrap(),
        CloseReason::Remote { .. }
    ));
}
