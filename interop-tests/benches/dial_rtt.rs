//! Dial + first request/response, counted in round trips: every stack dials its server
//! through a [`DelayRelay`] on loopback that adds `MESHWIRE_BENCH_DELAY_MS` (default 20 ms)
//! each way, so a round trip costs ~40 ms and the few hundred microseconds of CPU vanish.
//!
//! * `raw quinn`   — quinn endpoints with meshwire's TLS and transport settings: connect,
//!   `open_bi`, the request, no negotiation. The floor: 1 RTT of QUIC handshake, then the
//!   request travels with the client's handshake-finishing flight, 1 RTT for its answer.
//! * `meshwire`    — `QuicTransport::dial` + `Connection::open_negotiated(["/bench/1"])`.
//! * `rust-libp2p` — `libp2p::quic::tokio::Transport` dial, an outbound substream negotiated
//!   with `multistream-select` `V1Lazy` (what its swarm does for one protocol).
//!
//! * `swarm meshwire` / `swarm rust-libp2p` — whole swarms: a fresh client swarm per dial
//!   (`Swarm::dial` → `ConnectionEstablished` → a stream opened through `StreamControl` /
//!   `libp2p-stream`), the server swarm's stream handed to the echo task.
//!
//! One exchange: the dialer writes 32 bytes, finishes its side, reads the 32-byte echo;
//! timed from the dial to the echo, divided by the relay's measured RTT (median of UDP pings
//! through it). `MESHWIRE_BENCH_DIALS` (default 10) dials per stack, stacks alternating;
//! medians. The datagrams each way until the echo arrived are counted by the relay.
//!
//! Run with `cargo bench -p interop-tests --bench dial_rtt`.

use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::poll_fn;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use interop_tests::delay_relay::{Counts, DelayRelay};
use libp2p::core::muxing::StreamMuxerExt;
use libp2p::core::transport::{
    DialOpts, ListenerId as P2pListenerId, PortUse, Transport as _, TransportEvent as P2pEvent,
};
use libp2p::core::Endpoint;
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{
    quic::multiaddr_to_socketaddr, quic::socketaddr_to_multiaddr, Transport, TransportEvent,
    TransportExt,
};

const PROTO: &str = "/bench/1";
const MSG: usize = 32;
const NEG_TIMEOUT: Duration = Duration::from_secs(10);

/// Server side: reads to EOF, echoes what it read.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut got = Vec::new();
    if s.read_to_end(&mut got).await.is_ok() {
        let _ = s.write_all(&got).await;
        let _ = s.close().await;
    }
}

/// Client side: the request, our end, the echo.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    let req = [7u8; MSG];
    s.write_all(&req).await.expect("write");
    s.close().await.expect("finish");
    let mut back = [0u8; MSG];
    s.read_exact(&mut back).await.expect("read echo");
    assert_eq!(back, req);
}

struct Joined {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl AsyncRead for Joined {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncRead::poll_read(Pin::new(&mut self.get_mut().recv), cx, buf)
    }
}

impl AsyncWrite for Joined {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_close(Pin::new(&mut self.get_mut().send), cx)
    }
}

// ---------------------------------------------------------------------------------------------

struct RawQuinn {
    client: quinn::Endpoint,
    relay: DelayRelay,
    _server: quinn::Endpoint,
}

impl RawQuinn {
    async fn start(one_way: Duration) -> Self {
        let server_kp = meshwire_core::Keypair::generate();
        let client_kp = meshwire_core::Keypair::generate();
        let server_tls = meshwire_transport::tls::server_config(&server_kp).expect("tls");
        let (client_tls, _) =
            meshwire_transport::tls::client_config(&client_kp, Some(server_kp.peer_id()))
                .expect("tls");
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(server_tls))
            .expect("server tls");
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        sc.transport_config(Arc::new(QuicConfig::default().transport_config()));
        sc.migration(false);
        let server = quinn::Endpoint::server(sc, "127.0.0.1:0".parse().unwrap()).expect("server");
        let relay = DelayRelay::start(server.local_addr().unwrap(), one_way).expect("relay");
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(client_tls))
            .expect("client tls");
        let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
        cc.transport_config(Arc::new(QuicConfig::default().transport_config()));
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client");
        client.set_default_client_config(cc);
        let ep = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(serve(Joined { send, recv }));
                    }
                });
            }
        });
        RawQuinn {
            client,
            relay,
            _server: server,
        }
    }

    async fn run(&self) -> (Duration, Counts) {
        self.relay.reset();
        let t0 = Instant::now();
        let conn = self
            .client
            .connect(self.relay.local_addr(), "l")
            .expect("connect")
            .await
            .expect("handshake");
        let (send, recv) = conn.open_bi().await.expect("open_bi");
        request(&mut Joined { send, recv }).await;
        let took = t0.elapsed();
        let counts = self.relay.counts();
        conn.close(0u32.into(), b"");
        (took, counts)
    }
}

// ---------------------------------------------------------------------------------------------

struct Meshwire {
    client: QuicTransport,
    relay: DelayRelay,
    server_peer: meshwire_core::PeerId,
}

impl Meshwire {
    async fn start(one_way: Duration) -> Self {
        let server_kp = meshwire_core::Keypair::generate();
        let server_peer = server_kp.peer_id();
        let mut server = QuicTransport::new(server_kp, QuicConfig::default()).expect("server");
        server
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .expect("listen");
        let addr = loop {
            if let TransportEvent::NewListenAddr { addr, .. } = server.next_event().await {
                break addr;
            }
        };
        let relay = DelayRelay::start(multiaddr_to_socketaddr(&addr).expect("quic addr"), one_way)
            .expect("relay");
        tokio::spawn(async move {
            loop {
                if let TransportEvent::Incoming { upgrade, .. } = server.next_event().await {
                    tokio::spawn(async move {
                        let Ok(conn) = upgrade.await else { return };
                        while let Ok((_, s)) = conn.accept_negotiated(&[PROTO], NEG_TIMEOUT).await {
                            tokio::spawn(serve(s));
                        }
                    });
                }
            }
        });
        let client = QuicTransport::new(meshwire_core::Keypair::generate(), QuicConfig::default())
            .expect("client");
        Meshwire {
            client,
            relay,
            server_peer,
        }
    }

    async fn run(&mut self) -> (Duration, Counts) {
        self.relay.reset();
        let target = socketaddr_to_multiaddr(self.relay.local_addr());
        let t0 = Instant::now();
        let conn = self
            .client
            .dial(&target, Some(self.server_peer))
            .expect("dial")
            .await
            .expect("handshake");
        let (_, mut s) = conn
            .open_negotiated([PROTO], NEG_TIMEOUT)
            .await
            .expect("open_negotiated");
        request(&mut s).await;
        let took = t0.elapsed();
        let counts = self.relay.counts();
        conn.close(0, "");
        (took, counts)
    }
}

// ---------------------------------------------------------------------------------------------

struct RustLibp2p {
    client: libp2p::quic::tokio::Transport,
    relay: DelayRelay,
}

impl RustLibp2p {
    async fn start(one_way: Duration) -> Self {
        let server_kp = libp2p::identity::Keypair::generate_ed25519();
        let mut server = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(&server_kp));
        server
            .listen_on(
                P2pListenerId::next(),
                "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
            )
            .expect("listen");
        let mut server = Box::pin(server);
        let addr = loop {
            if let P2pEvent::NewAddress { listen_addr, .. } =
                poll_fn(|cx| server.as_mut().poll(cx)).await
            {
                break listen_addr;
            }
        };
        let addr = multiaddr_to_socketaddr(&addr.to_string().parse().expect("multiaddr"))
            .expect("quic addr");
        let relay = DelayRelay::start(addr, one_way).expect("relay");
        tokio::spawn(async move {
            loop {
                if let P2pEvent::Incoming { upgrade, .. } =
                    poll_fn(|cx| server.as_mut().poll(cx)).await
                {
                    tokio::spawn(async move {
                        let Ok((_peer, mut conn)) = upgrade.await else {
                            return;
                        };
                        while let Ok(sub) = poll_fn(|cx| conn.poll_inbound_unpin(cx)).await {
                            tokio::spawn(async move {
                                if let Ok((_, s)) =
                                    multistream_select::listener_select_proto(sub, [PROTO]).await
                                {
                                    serve(s).await;
                                }
                            });
                        }
                    });
                }
            }
        });
        let client_kp = libp2p::identity::Keypair::generate_ed25519();
        let client = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(&client_kp));
        RustLibp2p { client, relay }
    }

    async fn run(&mut self) -> (Duration, Counts) {
        self.relay.reset();
        let target: libp2p::Multiaddr = socketaddr_to_multiaddr(self.relay.local_addr())
            .to_string()
            .parse()
            .expect("multiaddr");
        let t0 = Instant::now();
        let dial = self
            .client
            .dial(
                target,
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
        request(&mut s).await;
        let took = t0.elapsed();
        let counts = self.relay.counts();
        drop(s);
        let _ = conn.close().await;
        (took, counts)
    }
}

// ---------------------------------------------------------------------------------------------
// Whole swarms: a fresh client swarm per dial, the server swarm behind the relay.

/// meshwire swarms, streams through `StreamControl` (no behaviour in the way).
struct MeshwireSwarm {
    relay: DelayRelay,
    server_peer: meshwire_core::PeerId,
}

fn meshwire_swarm() -> meshwire_swarm::Swarm<meshwire_swarm::DummyBehaviour> {
    let transport = QuicTransport::new(meshwire_core::Keypair::generate(), QuicConfig::default())
        .expect("quic");
    meshwire_swarm::Swarm::new(
        transport,
        meshwire_swarm::DummyBehaviour,
        meshwire_swarm::SwarmConfig::default(),
    )
}

impl MeshwireSwarm {
    async fn start(one_way: Duration) -> Self {
        let mut server = meshwire_swarm();
        server
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .expect("listen");
        let addr = loop {
            if let meshwire_swarm::SwarmEvent::NewListenAddr { address, .. } =
                server.next_event().await
            {
                break address;
            }
        };
        let relay = DelayRelay::start(multiaddr_to_socketaddr(&addr).expect("quic addr"), one_way)
            .expect("relay");
        let server_peer = server.local_peer_id();
        let mut incoming = server
            .stream_control()
            .accept(meshwire_swarm::StreamProtocol::new(PROTO))
            .expect("accept");
        tokio::spawn(async move {
            while let Some(s) = futures::StreamExt::next(&mut incoming).await {
                tokio::spawn(serve(s.stream));
            }
        });
        tokio::spawn(async move {
            loop {
                server.next_event().await;
            }
        });
        MeshwireSwarm { relay, server_peer }
    }

    async fn run(&self) -> (Duration, Counts) {
        let mut client = meshwire_swarm();
        let control = client.stream_control();
        self.relay.reset();
        let target = meshwire_transport::with_peer_id(
            &socketaddr_to_multiaddr(self.relay.local_addr()),
            self.server_peer,
        );
        let t0 = Instant::now();
        client.dial(target).expect("dial");
        loop {
            if let meshwire_swarm::SwarmEvent::ConnectionEstablished { .. } =
                client.next_event().await
            {
                break;
            }
        }
        let driver = tokio::spawn(async move {
            loop {
                client.next_event().await;
            }
        });
        let mut s = control
            .open_stream(self.server_peer, meshwire_swarm::StreamProtocol::new(PROTO))
            .await
            .expect("stream");
        request(&mut s).await;
        let took = t0.elapsed();
        let counts = self.relay.counts();
        driver.abort();
        (took, counts)
    }
}

/// rust-libp2p swarms with `libp2p-stream`.
struct RustLibp2pSwarm {
    relay: DelayRelay,
    server_peer: libp2p::PeerId,
}

fn libp2p_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

impl RustLibp2pSwarm {
    async fn start(one_way: Duration) -> Self {
        use futures::StreamExt;
        let mut server = libp2p_swarm();
        let mut incoming = server
            .behaviour()
            .new_control()
            .accept(libp2p::StreamProtocol::new(PROTO))
            .expect("accept");
        server
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .expect("listen");
        let addr = loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                server.select_next_some().await
            {
                break address;
            }
        };
        let addr = multiaddr_to_socketaddr(&addr.to_string().parse().expect("multiaddr"))
            .expect("quic addr");
        let relay = DelayRelay::start(addr, one_way).expect("relay");
        let server_peer = *server.local_peer_id();
        tokio::spawn(async move {
            loop {
                server.select_next_some().await;
            }
        });
        tokio::spawn(async move {
            while let Some((_, s)) = incoming.next().await {
                tokio::spawn(serve(s));
            }
        });
        RustLibp2pSwarm { relay, server_peer }
    }

    async fn run(&self) -> (Duration, Counts) {
        use futures::StreamExt;
        let mut client = libp2p_swarm();
        let mut control = client.behaviour().new_control();
        self.relay.reset();
        let target: libp2p::Multiaddr = socketaddr_to_multiaddr(self.relay.local_addr())
            .to_string()
            .parse::<libp2p::Multiaddr>()
            .expect("multiaddr")
            .with(libp2p::multiaddr::Protocol::P2p(self.server_peer));
        let t0 = Instant::now();
        client.dial(target).expect("dial");
        loop {
            if let libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } =
                client.select_next_some().await
            {
                break;
            }
        }
        let driver = tokio::spawn(async move {
            loop {
                client.select_next_some().await;
            }
        });
        let mut s = control
            .open_stream(self.server_peer, libp2p::StreamProtocol::new(PROTO))
            .await
            .expect("open stream");
        request(&mut s).await;
        let took = t0.elapsed();
        let counts = self.relay.counts();
        driver.abort();
        (took, counts)
    }
}

// ---------------------------------------------------------------------------------------------

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The relay's own round trip: median of UDP pings through a relay in front of an echo
/// socket.
fn relay_rtt(one_way: Duration) -> Duration {
    let echo = UdpSocket::bind("127.0.0.1:0").expect("echo socket");
    let echo_addr: SocketAddr = echo.local_addr().expect("echo addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let relay = DelayRelay::start(echo_addr, one_way).expect("relay");
    let ping = UdpSocket::bind("127.0.0.1:0").expect("ping socket");
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..10 {
        let t = Instant::now();
        ping.send_to(b"ping", relay.local_addr()).expect("ping");
        ping.recv_from(&mut buf).expect("pong");
        rtts.push(t.elapsed());
    }
    // Stops the echo thread.
    let _ = ping.send_to(&[], echo_addr);
    median(&mut rtts)
}

fn flights(c: &[Counts]) -> String {
    let mut to_s: Vec<u64> = c.iter().map(|c| c.to_server.datagrams).collect();
    let mut to_c: Vec<u64> = c.iter().map(|c| c.to_client.datagrams).collect();
    let mut bytes_s: Vec<u64> = c.iter().map(|c| c.to_server.bytes).collect();
    let mut bytes_c: Vec<u64> = c.iter().map(|c| c.to_client.bytes).collect();
    let med = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    format!(
        "datagrams to server {} ({} B), to client {} ({} B)",
        med(&mut to_s),
        med(&mut bytes_s),
        med(&mut to_c),
        med(&mut bytes_c)
    )
}

async fn bench() {
    let one_way = Duration::from_millis(env_u64("MESHWIRE_BENCH_DELAY_MS").unwrap_or(20));
    let dials = env_u64("MESHWIRE_BENCH_DIALS").unwrap_or(10).max(1) as usize;
    let rtt = tokio::task::spawn_blocking(move || relay_rtt(one_way))
        .await
        .expect("ping");

    let raw = RawQuinn::start(one_way).await;
    let mut mesh = Meshwire::start(one_way).await;
    let mut p2p = RustLibp2p::start(one_way).await;
    let mesh_swarm = MeshwireSwarm::start(one_way).await;
    let p2p_swarm = RustLibp2pSwarm::start(one_way).await;
    // Warm-up (first-use costs: client endpoints, lazy statics).
    raw.run().await;
    mesh.run().await;
    p2p.run().await;
    mesh_swarm.run().await;
    p2p_swarm.run().await;

    let (mut t_raw, mut t_mesh, mut t_p2p) = (Vec::new(), Vec::new(), Vec::new());
    let (mut c_raw, mut c_mesh, mut c_p2p) = (Vec::new(), Vec::new(), Vec::new());
    let (mut t_mesh_swarm, mut c_mesh_swarm) = (Vec::new(), Vec::new());
    let (mut t_p2p_swarm, mut c_p2p_swarm) = (Vec::new(), Vec::new());
    for _ in 0..dials {
        let (t, c) = raw.run().await;
        t_raw.push(t);
        c_raw.push(c);
        let (t, c) = mesh.run().await;
        t_mesh.push(t);
        c_mesh.push(c);
        let (t, c) = p2p.run().await;
        t_p2p.push(t);
        c_p2p.push(c);
        let (t, c) = mesh_swarm.run().await;
        t_mesh_swarm.push(t);
        c_mesh_swarm.push(c);
        let (t, c) = p2p_swarm.run().await;
        t_p2p_swarm.push(t);
        c_p2p_swarm.push(c);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rtts = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();
    let (m_raw, m_mesh, m_p2p) = (median(&mut t_raw), median(&mut t_mesh), median(&mut t_p2p));
    println!(
        "dial + first request/response on a new stream through a delay relay ({} ms each way, \
         measured RTT {:.2} ms; median of {dials})",
        one_way.as_millis(),
        ms(rtt)
    );
    println!(
        "dial+request raw quinn   {:7.2} ms = {:.2} RTT  {}",
        ms(m_raw),
        rtts(m_raw),
        flights(&c_raw)
    );
    println!(
        "dial+request meshwire    {:7.2} ms = {:.2} RTT  {}",
        ms(m_mesh),
        rtts(m_mesh),
        flights(&c_mesh)
    );
    println!(
        "dial+request rust-libp2p {:7.2} ms = {:.2} RTT  {}",
        ms(m_p2p),
        rtts(m_p2p),
        flights(&c_p2p)
    );
    println!(
        "dial+request meshwire {:.2} RTT, rust-libp2p {:.2} RTT, raw quinn {:.2} RTT",
        rtts(m_mesh),
        rtts(m_p2p),
        rtts(m_raw)
    );
    let (m_mesh_swarm, m_p2p_swarm) = (median(&mut t_mesh_swarm), median(&mut t_p2p_swarm));
    println!(
        "dial+request swarm meshwire    {:7.2} ms = {:.2} RTT  {}  (Swarm::dial, ConnectionEstablished, StreamControl)",
        ms(m_mesh_swarm),
        rtts(m_mesh_swarm),
        flights(&c_mesh_swarm)
    );
    println!(
        "dial+request swarm rust-libp2p {:7.2} ms = {:.2} RTT  {}  (Swarm::dial, ConnectionEstablished, libp2p-stream)",
        ms(m_p2p_swarm),
        rtts(m_p2p_swarm),
        flights(&c_p2p_swarm)
    );
    println!(
        "dial+request through swarms: meshwire {:.2} RTT, rust-libp2p {:.2} RTT",
        rtts(m_mesh_swarm),
        rtts(m_p2p_swarm)
    );
    if std::env::var("MESHWIRE_BENCH_LOG").is_ok() {
        for (name, relay) in [
            ("raw quinn", &raw.relay),
            ("meshwire", &mesh.relay),
            ("rust-libp2p", &p2p.relay),
            ("meshwire swarm", &mesh_swarm.relay),
            ("rust-libp2p swarm", &p2p_swarm.relay),
        ] {
            println!("last dial of {name}, datagrams as the relay received them:");
            for d in relay.log() {
                println!("  {:8.2} ms {:?} {} B", ms(d.at), d.way, d.len);
            }
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async { tokio::spawn(bench()).await.expect("bench task") });
    rt.shutdown_timeout(Duration::from_millis(100));
}
