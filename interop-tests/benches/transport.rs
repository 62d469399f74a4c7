//! Transport benchmark: three QUIC stacks side by side in one process on loopback.
//!
//! * `raw-quinn`   — two quinn endpoints with the same transport settings
//!   (`QuicConfig::default().transport_config()`) and libp2p-TLS certificates, one bi stream,
//!   no protocol negotiation: the ceiling.
//! * `meshwire`    — `QuicTransport` + `Connection::open_negotiated(["/bench/1"])`.
//! * `rust-libp2p` — `libp2p::quic::tokio::Transport` used directly as a `libp2p::core::Transport`,
//!   a substream from the `StreamMuxer`, negotiated with rust-libp2p's `multistream-select`
//!   (`V1Lazy`, like the swarm does for a single protocol).
//!
//! Figures:
//! 1. throughput: N bytes (default 1 GiB, `MESHWIRE_BENCH_BYTES` overrides) over one stream
//!    client→server in 64 KiB writes; the server reads to EOF and replies one byte; timed from
//!    the first write to the reply. One warm-up at 16 MiB per stack, then 3 rounds with the
//!    stacks alternating; best (and median) per stack.
//! 2. latency: dial start → the dialer has read the listener's first byte on a negotiated
//!    `/bench/1` stream (the dialer sends 1 byte and finishes its side; the listener replies 1
//!    byte). Median of 50 per stack (`MESHWIRE_BENCH_DIALS` overrides), stacks alternating.
//!
//! Run with `cargo bench -p interop-tests --bench transport`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::poll_fn;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use libp2p::core::muxing::StreamMuxerExt;
use libp2p::core::transport::{
    DialOpts, ListenerId as P2pListenerId, PortUse, Transport as _, TransportEvent as P2pEvent,
};
use libp2p::core::Endpoint;

use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{Multiaddr, Transport, TransportEvent, TransportExt};

const CHUNK: usize = 64 * 1024;
const PROTO: &str = "/bench/1";
const NEG_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The common stream protocol.

/// Client side: writes `total` bytes in 64 KiB writes, finishes the stream, reads the one-byte
/// reply. Returns the time from the first write to the reply.
async fn client_bulk<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, total: u64) -> Duration {
    let buf = vec![0xa5u8; CHUNK];
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n]).await.expect("client write");
        left -= n as u64;
    }
    s.close().await.expect("client finish");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("client read reply");
    start.elapsed()
}

/// Server side: reads to EOF, replies one byte and finishes.
async fn server_bulk<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    s.write_all(&[1]).await?;
    s.close().await?;
    Ok(got)
}

/// quinn's two halves as one futures-io stream.
struct Joined {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl AsyncRead for Joined {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        futures::io::AsyncRead::poll_read(Pin::new(&mut self.get_mut().recv), cx, buf)
    }
}

impl AsyncWrite for Joined {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures::io::AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::io::AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::io::AsyncWrite::poll_close(Pin::new(&mut self.get_mut().send), cx)
    }
}

/// One run: `(dial start → reply, first write → reply)`.
type Run = (Duration, Duration);

// ---------------------------------------------------------------------------------------------
// Raw quinn.

struct RawQuinn {
    client: quinn::Endpoint,
    server_addr: SocketAddr,
    _server: quinn::Endpoint,
}

impl RawQuinn {
    async fn start() -> Self {
        let server_kp = meshwire_core::Keypair::generate();
        let client_kp = meshwire_core::Keypair::generate();
        let server_tls = meshwire_transport::tls::server_config(&server_kp).expect("server tls");
        let (client_tls, _outcome) =
            meshwire_transport::tls::client_config(&client_kp, Some(server_kp.peer_id()))
                .expect("client tls");

        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(server_tls))
            .expect("quic server tls");
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(QuicConfig::default().transport_config()));
        server_config.migration(false);
        let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap())
            .expect("server endpoint");
        let server_addr = server.local_addr().unwrap();

        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(client_tls))
            .expect("quic client tls");
        let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
        client_config.transport_config(Arc::new(QuicConfig::default().transport_config()));
        let mut client =
            quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client endpoint");
        client.set_default_client_config(client_config);

        let ep = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    if let Ok((send, recv)) = conn.accept_bi().await {
                        let mut s = Joined { send, recv };
                        let _ = server_bulk(&mut s).await;
                        conn.closed().await;
                    }
                });
            }
        });
        RawQuinn {
            client,
            server_addr,
            _server: server,
        }
    }

    async fn run(&self, total: u64) -> Run {
        let t0 = Instant::now();
        let conn = self
            .client
            .connect(self.server_addr, "l")
            .expect("connect")
            .await
            .expect("handshake");
        let (send, recv) = conn.open_bi().await.expect("open_bi");
        let mut s = Joined { send, recv };
        let bulk = client_bulk(&mut s, total).await;
        let all = t0.elapsed();
        conn.close(0u32.into(), b"");
        (all, bulk)
    }
}

// ---------------------------------------------------------------------------------------------
// meshwire.

struct Meshwire {
    client: QuicTransport,
    server_addr: Multiaddr,
    server_peer: meshwire_core::PeerId,
}

impl Meshwire {
    async fn start() -> Self {
        let server_kp = meshwire_core::Keypair::generate();
        let server_peer = server_kp.peer_id();
        let mut server =
            QuicTransport::new(server_kp, QuicConfig::default()).expect("meshwire server");
        server
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .expect("listen");
        let server_addr = loop {
            if let TransportEvent::NewListenAddr { addr, .. } = server.next_event().await {
                break addr;
            }
        };
        tokio::spawn(async move {
            loop {
                if let TransportEvent::Incoming { upgrade, .. } = server.next_event().await {
                    tokio::spawn(async move {
                        let Ok(conn) = upgrade.await else { return };
                        if let Ok((_, mut s)) = conn.accept_negotiated(&[PROTO], NEG_TIMEOUT).await
                        {
                            let _ = server_bulk(&mut s).await;
                            conn.closed().await;
                        }
                    });
                }
            }
        });
        let client = QuicTransport::new(meshwire_core::Keypair::generate(), QuicConfig::default())
            .expect("meshwire client");
        Meshwire {
            client,
            server_addr,
            server_peer,
        }
    }

    async fn run(&mut self, total: u64) -> Run {
        let t0 = Instant::now();
        let conn = self
            .client
            .dial(&self.server_addr, Some(self.server_peer))
            .expect("dial")
            .await
            .expect("handshake");
        let (_, mut s) = conn
            .open_negotiated([PROTO], NEG_TIMEOUT)
            .await
            .expect("open_negotiated");
        let bulk = client_bulk(&mut s, total).await;
        let all = t0.elapsed();
        conn.close(0, "");
        (all, bulk)
    }
}

// ---------------------------------------------------------------------------------------------
// rust-libp2p.

struct RustLibp2p {
    client: libp2p::quic::tokio::Transport,
    server_addr: libp2p::Multiaddr,
}

impl RustLibp2p {
    async fn start() -> Self {
        let server_kp = libp2p::identity::Keypair::generate_ed25519();
        let mut server = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(&server_kp));
        server
            .listen_on(
                P2pListenerId::next(),
                "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
            )
            .expect("listen");
        let mut server = Box::pin(server);
        let server_addr = loop {
            if let P2pEvent::NewAddress { listen_addr, .. } =
                poll_fn(|cx| server.as_mut().poll(cx)).await
            {
                break listen_addr;
            }
        };
        tokio::spawn(async move {
            loop {
                if let P2pEvent::Incoming { upgrade, .. } =
                    poll_fn(|cx| server.as_mut().poll(cx)).await
                {
                    tokio::spawn(async move {
                        let Ok((_peer, mut conn)) = upgrade.await else {
                            return;
                        };
                        let Ok(sub) = poll_fn(|cx| conn.poll_inbound_unpin(cx)).await else {
                            return;
                        };
                        let Ok((_, mut s)) =
                            multistream_select::listener_select_proto(sub, [PROTO]).await
                        else {
                            return;
                        };
                        let _ = server_bulk(&mut s).await;
                        // Keep the connection until the dialer closes it.
                        while poll_fn(|cx| conn.poll_inbound_unpin(cx)).await.is_ok() {}
                    });
                }
            }
        });
        let client_kp = libp2p::identity::Keypair::generate_ed25519();
        let client = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(&client_kp));
        RustLibp2p {
            client,
            server_addr,
        }
    }

    async fn run(&mut self, total: u64) -> Run {
        let t0 = Instant::now();
        let dial = self
            .client
            .dial(
                self.server_addr.clone(),
                DialOpts {
                    role: Endpoint::Dialer,
                    port_use: PortUse::Reuse,
                },
            )
            .expect("dial");
        let (_peer, mut conn) = dial.await.expect("handshake");
        let sub = poll_fn(|cx| conn.poll_outbound_unpin(cx))
            .await
            .expect("open substream");
        let (_, mut s) = multistream_select::dialer_select_proto(
            sub,
            [PROTO],
            multistream_select::Version::V1Lazy,
        )
        .await
        .expect("negotiate");
        let bulk = client_bulk(&mut s, total).await;
        let all = t0.elapsed();
        drop(s);
        let _ = conn.close().await;
        (all, bulk)
    }
}

// ---------------------------------------------------------------------------------------------

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

async fn bench() {
    let total = env_u64("MESHWIRE_BENCH_BYTES").unwrap_or(1 << 30);
    let dials = env_u64("MESHWIRE_BENCH_DIALS").unwrap_or(50).max(1) as usize;
    let rounds = env_u64("MESHWIRE_BENCH_ROUNDS").unwrap_or(3).max(1) as usize;
    let mib = total as f64 / (1u64 << 20) as f64;

    let raw = RawQuinn::start().await;
    let mut mesh = Meshwire::start().await;
    let mut p2p = RustLibp2p::start().await;

    // Warm-up.
    let warm = total.min(16 << 20);
    raw.run(warm).await;
    mesh.run(warm).await;
    p2p.run(warm).await;
    for _ in 0..3 {
        raw.run(1).await;
        mesh.run(1).await;
        p2p.run(1).await;
    }

    // Throughput, stacks alternating.
    let (mut t_raw, mut t_mesh, mut t_p2p) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (r, m, p) = (
            raw.run(total).await.1,
            mesh.run(total).await.1,
            p2p.run(total).await.1,
        );
        eprintln!(
            "  round {}: raw-quinn {:.1} MB/s, meshwire {:.1} MB/s, rust-libp2p {:.1} MB/s",
            round + 1,
            mbps(total, r),
            mbps(total, m),
            mbps(total, p)
        );
        t_raw.push(r);
        t_mesh.push(m);
        t_p2p.push(p);
    }
    let best = |v: &Vec<Duration>| *v.iter().min().unwrap();
    let (b_raw, b_mesh, b_p2p) = (
        mbps(total, best(&t_raw)),
        mbps(total, best(&t_mesh)),
        mbps(total, best(&t_p2p)),
    );
    let (m_raw, m_mesh, m_p2p) = (
        mbps(total, median(&mut t_raw.clone())),
        mbps(total, median(&mut t_mesh.clone())),
        mbps(total, median(&mut t_p2p.clone())),
    );
    println!("throughput (best of {rounds} rounds, one stream, 64 KiB writes, loopback)");
    println!("throughput raw-quinn   {mib:5.0} MiB {b_raw:7.1} MB/s  (median {m_raw:.1})");
    println!(
        "throughput meshwire    {mib:5.0} MiB {b_mesh:7.1} MB/s  ratio vs raw quinn {:.2}  (median {m_mesh:.1})",
        b_mesh / b_raw
    );
    println!(
        "throughput rust-libp2p {mib:5.0} MiB {b_p2p:7.1} MB/s  ratio vs raw quinn {:.2}  (median {m_p2p:.1})",
        b_p2p / b_raw
    );
    println!("meshwire / rust-libp2p: {:.2}x", b_mesh / b_p2p);

    // Dial → first negotiated byte, stacks alternating.
    let (mut l_raw, mut l_mesh, mut l_p2p) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..dials {
        l_raw.push(raw.run(1).await.0);
        l_mesh.push(mesh.run(1).await.0);
        l_p2p.push(p2p.run(1).await.0);
    }
    let (l_raw, l_mesh, l_p2p) = (median(&mut l_raw), median(&mut l_mesh), median(&mut l_p2p));
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "latency dial -> first byte on a negotiated {PROTO} stream (median of {dials}, loopback)"
    );
    println!(
        "latency raw-quinn   {:8.0} us  (connect + bi stream, no negotiation)",
        us(l_raw)
    );
    println!(
        "latency meshwire    {:8.0} us  ratio vs raw quinn {:.2}",
        us(l_mesh),
        us(l_mesh) / us(l_raw)
    );
    println!(
        "latency rust-libp2p {:8.0} us  ratio vs raw quinn {:.2}",
        us(l_p2p),
        us(l_p2p) / us(l_raw)
    );
    println!(
        "meshwire latency / rust-libp2p latency: {:.2}x",
        us(l_mesh) / us(l_p2p)
    );

    println!(
        "summary: {mib:.0} MiB one-stream throughput meshwire {b_mesh:.1} MB/s = {:.2}x raw quinn, {:.2}x rust-libp2p; \
         dial->negotiated-byte median meshwire {:.0} us vs rust-libp2p {:.0} us ({:.2}x), raw quinn {:.0} us",
        b_mesh / b_raw,
        b_mesh / b_p2p,
        us(l_mesh),
        us(l_p2p),
        us(l_mesh) / us(l_p2p),
        us(l_raw)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The client runs as a task too, so the process uses exactly the two worker threads.
    rt.block_on(async { tokio::spawn(bench()).await.expect("bench task") });
    // Leftover connection tasks are abandoned.
    rt.shutdown_timeout(Duration::from_millis(100));
}
