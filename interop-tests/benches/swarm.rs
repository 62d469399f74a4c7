//! Swarm benchmark: streams through a whole swarm, three stacks side by side in one process
//! on loopback.
//!
//! * `raw-quinn`   — one quinn connection, `open_bi` per exchange: the ceiling.
//! * `meshwire`    — two `Swarm`s; a behaviour asks for `OpenStream` and hands the negotiated
//!   stream to the benchmark task; the remote behaviour starts a server task for each inbound
//!   stream (`tokio::spawn` in `on_inbound_stream`), as raw quinn's and the control stack's
//!   accept loops do.
//! * `meshwire (optimistic)` — the same, with `OpenStream::optimistic`: the proposal is written
//!   with the request (one packet), and the remote's acceptor, finding the request already
//!   there, leaves its confirmation to the answer's packet. Since this is `OpenStream`'s
//!   default (with one protocol), the `meshwire` stack does the same.
//! * `meshwire (eager)` — the same with `OpenStream::eager`: the proposal is written and flushed
//!   in the swarm's task before the stream is handed over (the default until 2026-12-08).
//! * `meshwire (control)` — the same two swarms, streams opened with `StreamControl::open_stream`
//!   in the benchmark task and taken from `StreamControl::accept` by a server task: no hop
//!   through either swarm's task.
//! * `rust-libp2p` — two libp2p `Swarm`s with `libp2p-stream` (`Control::open_stream`,
//!   `accept`), rust-libp2p's own way to get raw streams out of a swarm.
//!
//! Figures:
//! 1. request/response: on an established connection, open a stream, write 32 bytes, finish,
//!    read the 32-byte echo; median and p99 of `MESHWIRE_BENCH_EXCHANGES` (default 2,000) per
//!    stack, stacks alternating in rounds of 100. This is the per-stream cost of each swarm.
//!    Next to it, the UDP datagrams sent per exchange by both ends together (read from the
//!    kernel's `/proc/net/snmp` counter around each stack's rounds, Linux only; the machine's
//!    other UDP traffic counts too, so it is an upper bound): a stack that sends its
//!    negotiation and its response in separate packets shows it here. For the optimistic
//!    stack, quinn's own counters of each end's connection too (datagrams, and the ACK,
//!    STREAM, MAX_STREAMS and STOP_SENDING frames in them), which no other traffic inflates.
//! 2. throughput: `MESHWIRE_BENCH_BYTES` (default 512 MiB) over one such stream in 64 KiB
//!    writes, best of 3 rounds.
//!
//! Both swarms run without the inbound stream rate limits (`inbound_stream_rate`,
//! `inbound_stream_rate_total`: raw quinn and rust-libp2p have none, and the default total
//! of 10,000 new streams a second made the acceptor wait a millisecond or more for a token in
//! the later rounds, which set meshwire's p99).
//!
//! Run with `cargo bench -p interop-tests --bench swarm`. `BENCH_PROFILE=<stack>[,<stack>..]`
//! (raw, meshwire, optimistic, eager, control) runs only those stacks'
//! `MESHWIRE_BENCH_EXCHANGES` exchanges, alternating in rounds of 100 when there are several
//! (for `perf record`), and prints each one's median, p99, and CPU time and context switches
//! per exchange.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::StreamExt;
use meshwire_core::{Keypair, PeerId};
use meshwire_swarm::{
    FromSwarm, InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult, StreamProtocol,
    Swarm, SwarmConfig, SwarmEvent, ToSwarm,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::with_peer_id;
use tokio::sync::{mpsc, oneshot};

const PROTO: StreamProtocol = StreamProtocol::new("/bench/1");
/// The protocol of the stream-control stack.
const PROTO_CONTROL: StreamProtocol = StreamProtocol::new("/bench/control/1");
const CHUNK: usize = 64 * 1024;
const MSG: usize = 32;

// ---------------------------------------------------------------------------------------------
// The stream work, the same for every stack.

/// Server side of one stream: a 32-byte request is echoed; anything longer is a bulk upload
/// answered with one byte after EOF.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0usize;
    let mut first = Vec::new();
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if total < MSG {
                    first.extend_from_slice(&buf[..n.min(MSG - total)]);
                }
                total += n;
            }
            Err(_) => return,
        }
    }
    let reply: &[u8] = if total == MSG { &first } else { &[1] };
    let _ = s.write_all(reply).await;
    let _ = s.close().await;
}

/// One request/response on a fresh stream.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let req = [7u8; MSG];
    s.write_all(&req).await.expect("write");
    s.close().await.expect("finish");
    let mut back = [0u8; MSG];
    s.read_exact(&mut back).await.expect("read echo");
    assert_eq!(back, req);
}

/// A bulk upload on one stream; returns the time from the first write to the reply.
async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, total: u64) -> Duration {
    let buf = vec![0xa5u8; CHUNK];
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n]).await.expect("write");
        left -= n as u64;
    }
    s.close().await.expect("finish");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("reply");
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// raw quinn

struct RawQuinn {
    conn: quinn::Connection,
    _server: quinn::Endpoint,
    _client: quinn::Endpoint,
}

struct Joined {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl AsyncRead for Joined {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncRead::poll_read(std::pin::Pin::new(&mut self.get_mut().recv), cx, buf)
    }
}

impl AsyncWrite for Joined {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(std::pin::Pin::new(&mut self.get_mut().send), cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.get_mut().send), cx)
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_close(std::pin::Pin::new(&mut self.get_mut().send), cx)
    }
}

impl RawQuinn {
    async fn start() -> Self {
        let server_kp = Keypair::generate();
        let client_kp = Keypair::generate();
        let server_tls = meshwire_transport::tls::server_config(&server_kp).expect("tls");
        let (client_tls, _) =
            meshwire_transport::tls::client_config(&client_kp, Some(server_kp.peer_id()))
                .expect("tls");
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(server_tls))
            .expect("server tls");
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        sc.transport_config(Arc::new(QuicConfig::default().transport_config()));
        let server = quinn::Endpoint::server(sc, "127.0.0.1:0".parse().unwrap()).expect("server");
        let addr = server.local_addr().unwrap();
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
        let conn = client
            .connect(addr, "l")
            .expect("connect")
            .await
            .expect("handshake");
        RawQuinn {
            conn,
            _server: server,
            _client: client,
        }
    }

    async fn stream(&self) -> Joined {
        let (send, recv) = self.conn.open_bi().await.expect("open_bi");
        Joined { send, recv }
    }
}

// ---------------------------------------------------------------------------------------------
// meshwire

/// How the bench's behaviour opens a stream.
#[derive(Clone, Copy)]
enum Open {
    /// `OpenStream::new` as it is.
    Default,
    /// With `OpenStream::optimistic`.
    Optimistic,
    /// With `OpenStream::eager`.
    Eager,
}

/// A request for a stream to a peer, answered on the oneshot.
type StreamRequest = (PeerId, Open, oneshot::Sender<meshwire_swarm::Stream>);

/// Serves inbound streams, each in a task of its own, and hands outbound streams to whoever
/// asked.
struct Bench {
    requests: mpsc::UnboundedReceiver<StreamRequest>,
    waiting: VecDeque<(
        meshwire_swarm::StreamRequestId,
        oneshot::Sender<meshwire_swarm::Stream>,
    )>,
    /// The QUIC connection, once established, for its packet counters.
    quic: Arc<std::sync::Mutex<Option<quinn::Connection>>>,
}

impl NetworkBehaviour for Bench {
    type Event = ();

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTO]
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        tokio::spawn(serve(stream.stream));
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionEstablished { handle, .. } = event {
            *self.quic.lock().expect("lock") = handle.as_quic().cloned();
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        if let Some(pos) = self.waiting.iter().position(|(id, _)| *id == result.id) {
            let (_, reply) = self.waiting.remove(pos).expect("position");
            let _ = reply.send(result.result.expect("outbound stream").stream);
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
        match self.requests.poll_recv(cx) {
            Poll::Ready(Some((peer, open, reply))) => {
                let req = OpenStream::new(peer, PROTO).no_dial();
                let req = match open {
                    Open::Default => req,
                    Open::Optimistic => req.optimistic(),
                    Open::Eager => req.eager(),
                };
                self.waiting.push_back((req.id, reply));
                Poll::Ready(ToSwarm::OpenStream(req))
            }
            _ => Poll::Pending,
        }
    }
}

struct Meshwire {
    control: meshwire_swarm::StreamControl,
    peer: PeerId,
    requests: mpsc::UnboundedSender<StreamRequest>,
    /// Each end's QUIC connection (dialer, listener).
    quic: [SharedQuic; 2],
}

type SharedQuic = Arc<std::sync::Mutex<Option<quinn::Connection>>>;

/// Packets and frames one end of a QUIC connection sent so far.
#[derive(Default, Clone, Copy)]
struct Sent {
    datagrams: u64,
    acks: u64,
    stream: u64,
    max_streams: u64,
    stop_sending: u64,
}

impl Sent {
    fn of(quic: &SharedQuic) -> Sent {
        match &*quic.lock().expect("lock") {
            Some(c) => {
                let s = c.stats();
                let f = s.frame_tx;
                Sent {
                    datagrams: s.udp_tx.datagrams,
                    acks: f.acks,
                    stream: f.stream,
                    max_streams: f.max_streams_bidi,
                    stop_sending: f.stop_sending,
                }
            }
            None => Sent::default(),
        }
    }

    fn add(&mut self, before: Sent, after: Sent) {
        self.datagrams += after.datagrams.saturating_sub(before.datagrams);
        self.acks += after.acks.saturating_sub(before.acks);
        self.stream += after.stream.saturating_sub(before.stream);
        self.max_streams += after.max_streams.saturating_sub(before.max_streams);
        self.stop_sending += after.stop_sending.saturating_sub(before.stop_sending);
    }

    fn per(&self, n: usize) -> String {
        let n = n.max(1) as f64;
        format!(
            "{:.2} datagrams ({:.2} ACK, {:.2} STREAM, {:.2} MAX_STREAMS, {:.2} STOP_SENDING frames)",
            self.datagrams as f64 / n,
            self.acks as f64 / n,
            self.stream as f64 / n,
            self.max_streams as f64 / n,
            self.stop_sending as f64 / n
        )
    }
}

fn meshwire_swarm() -> (
    Swarm<Bench>,
    mpsc::UnboundedSender<StreamRequest>,
    SharedQuic,
) {
    let quic = SharedQuic::default();
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).expect("quic");
    let config = SwarmConfig {
        idle_connection_timeout: None,
        // A load generator: no limit on the rate of new streams, per connection or in all
        // (raw quinn and rust-libp2p have none; with the default total of 10,000 a second the
        // acceptor waited for tokens, a millisecond or more, in the later rounds).
        inbound_stream_rate: None,
        inbound_stream_rate_total: None,
        ..SwarmConfig::default()
    };
    let swarm = Swarm::new(
        transport,
        Bench {
            requests: req_rx,
            waiting: VecDeque::new(),
            quic: quic.clone(),
        },
        config,
    );
    (swarm, req_tx, quic)
}

impl Meshwire {
    async fn start() -> Self {
        let (mut server, _, server_quic) = meshwire_swarm();
        server
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .expect("listen");
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.next_event().await {
                break address;
            }
        };
        let peer = server.local_peer_id();
        let mut incoming = server
            .stream_control()
            .accept(PROTO_CONTROL)
            .expect("first registration");
        tokio::spawn(async move {
            while let Some(s) = incoming.next().await {
                tokio::spawn(serve(s.stream));
            }
        });
        tokio::spawn(async move {
            loop {
                server.next_event().await;
            }
        });
        let (mut client, requests, client_quic) = meshwire_swarm();
        let control = client.stream_control();
        client.dial(with_peer_id(&addr, peer)).expect("dial");
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = client.next_event().await {
                break;
            }
        }
        tokio::spawn(async move {
            loop {
                client.next_event().await;
            }
        });
        Meshwire {
            control,
            peer,
            requests,
            quic: [client_quic, server_quic],
        }
    }

    async fn control_stream(&self) -> meshwire_swarm::Stream {
        self.control
            .open_stream(self.peer, PROTO_CONTROL)
            .await
            .expect("stream")
    }

    async fn stream(&self) -> meshwire_swarm::Stream {
        self.behaviour_stream(Open::Default).await
    }

    async fn optimistic_stream(&self) -> meshwire_swarm::Stream {
        self.behaviour_stream(Open::Optimistic).await
    }

    async fn eager_stream(&self) -> meshwire_swarm::Stream {
        self.behaviour_stream(Open::Eager).await
    }

    async fn behaviour_stream(&self, open: Open) -> meshwire_swarm::Stream {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((self.peer, open, tx))
            .expect("swarm alive");
        rx.await.expect("stream")
    }
}

// ---------------------------------------------------------------------------------------------
// rust-libp2p with libp2p-stream

struct RustLibp2p {
    control: libp2p_stream::Control,
    peer: libp2p::PeerId,
}

fn libp2p_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}

impl RustLibp2p {
    async fn start() -> Self {
        let proto = libp2p::StreamProtocol::new("/bench/1");
        let mut server = libp2p_swarm();
        let mut incoming = server
            .behaviour()
            .new_control()
            .accept(proto)
            .expect("accept");
        server
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                server.select_next_some().await
            {
                break address;
            }
        };
        let peer = *server.local_peer_id();
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
        let mut client = libp2p_swarm();
        let control = client.behaviour().new_control();
        client
            .dial(addr.with(libp2p::multiaddr::Protocol::P2p(peer)))
            .unwrap();
        loop {
            if let libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } =
                client.select_next_some().await
            {
                break;
            }
        }
        tokio::spawn(async move {
            loop {
                client.select_next_some().await;
            }
        });
        RustLibp2p { control, peer }
    }

    async fn stream(&mut self) -> libp2p::Stream {
        self.control
            .open_stream(self.peer, libp2p::StreamProtocol::new("/bench/1"))
            .await
            .expect("open stream")
    }
}

// ---------------------------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// UDP datagrams the machine sent so far (`OutDatagrams` of `/proc/net/snmp`), `None` where
/// the file is missing or unreadable.
fn udp_out_datagrams() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "OutDatagrams")
        .and_then(|(_, v)| v.parse().ok())
}

/// Datagrams sent during a stack's rounds, accumulated.
#[derive(Default)]
struct Datagrams {
    sent: u64,
    known: bool,
}

impl Datagrams {
    fn add(&mut self, before: Option<u64>, after: Option<u64>) {
        if let (Some(b), Some(a)) = (before, after) {
            self.sent += a.saturating_sub(b);
            self.known = true;
        }
    }

    fn per(&self, exchanges: usize) -> String {
        if self.known {
            format!("{:.2}", self.sent as f64 / exchanges.max(1) as f64)
        } else {
            "n/a".to_owned()
        }
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn bench() {
    let exchanges = env_u64("MESHWIRE_BENCH_EXCHANGES").unwrap_or(2000).max(100) as usize;
    let total = env_u64("MESHWIRE_BENCH_BYTES").unwrap_or(512 << 20);

    let raw = RawQuinn::start().await;
    let mesh = Meshwire::start().await;
    if let Ok(only) = std::env::var("BENCH_PROFILE") {
        profile(&only, &raw, &mesh, exchanges).await;
        return;
    }
    let mut p2p = RustLibp2p::start().await;

    // Warm-up.
    for _ in 0..50 {
        exchange(raw.stream().await).await;
        exchange(mesh.stream().await).await;
        exchange(p2p.stream().await).await;
        exchange(mesh.control_stream().await).await;
        exchange(mesh.optimistic_stream().await).await;
        exchange(mesh.eager_stream().await).await;
    }

    let (mut r, mut m, mut p, mut c, mut o, mut e) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let (mut dr, mut dm, mut dp, mut dc, mut d_o, mut de) = (
        Datagrams::default(),
        Datagrams::default(),
        Datagrams::default(),
        Datagrams::default(),
        Datagrams::default(),
        Datagrams::default(),
    );
    let (mut q_dialer, mut q_listener) = (Sent::default(), Sent::default());
    for _ in 0..exchanges / 100 {
        let before = udp_out_datagrams();
        for _ in 0..100 {
            let t = Instant::now();
            exchange(raw.stream().await).await;
            r.push(t.elapsed());
        }
        let after = udp_out_datagrams();
        dr.add(before, after);
        let before = after;
        for _ in 0..100 {
            let t = Instant::now();
            exchange(mesh.stream().await).await;
            m.push(t.elapsed());
        }
        let after = udp_out_datagrams();
        dm.add(before, after);
        let before = after;
        for _ in 0..100 {
            let t = Instant::now();
            exchange(p2p.stream().await).await;
            p.push(t.elapsed());
        }
        let after = udp_out_datagrams();
        dp.add(before, after);
        let before = after;
        for _ in 0..100 {
            let t = Instant::now();
            exchange(mesh.control_stream().await).await;
            c.push(t.elapsed());
        }
        let after = udp_out_datagrams();
        dc.add(before, after);
        let before = after;
        let sides = [Sent::of(&mesh.quic[0]), Sent::of(&mesh.quic[1])];
        for _ in 0..100 {
            let t = Instant::now();
            exchange(mesh.optimistic_stream().await).await;
            o.push(t.elapsed());
        }
        let after = udp_out_datagrams();
        d_o.add(before, after);
        q_dialer.add(sides[0], Sent::of(&mesh.quic[0]));
        q_listener.add(sides[1], Sent::of(&mesh.quic[1]));
        let before = after;
        for _ in 0..100 {
            let t = Instant::now();
            exchange(mesh.eager_stream().await).await;
            e.push(t.elapsed());
        }
        de.add(before, udp_out_datagrams());
    }
    let (r50, m50, p50) = (pct(&mut r, 0.5), pct(&mut m, 0.5), pct(&mut p, 0.5));
    let (r99, m99, p99) = (pct(&mut r, 0.99), pct(&mut m, 0.99), pct(&mut p, 0.99));
    println!(
        "request/response on a new stream per exchange, established connection ({} each, loopback)",
        r.len()
    );
    println!(
        "exchange raw-quinn   median {:7.1} us  p99 {:7.1} us",
        us(r50),
        us(r99)
    );
    println!(
        "exchange meshwire    median {:7.1} us  p99 {:7.1} us  ratio vs raw quinn {:.2}",
        us(m50),
        us(m99),
        us(m50) / us(r50)
    );
    println!(
        "exchange rust-libp2p median {:7.1} us  p99 {:7.1} us  ratio vs raw quinn {:.2}",
        us(p50),
        us(p99),
        us(p50) / us(r50)
    );
    println!(
        "meshwire / rust-libp2p exchange latency: {:.2}x",
        us(m50) / us(p50)
    );
    let (c50, c99) = (pct(&mut c, 0.5), pct(&mut c, 0.99));
    println!(
        "exchange meshwire (control) median {:7.1} us  p99 {:7.1} us  ratio vs raw quinn {:.2} (p99 {:.2})  vs rust-libp2p {:.2}x",
        us(c50),
        us(c99),
        us(c50) / us(r50),
        us(c99) / us(r99),
        us(c50) / us(p50)
    );
    let (o50, o99) = (pct(&mut o, 0.5), pct(&mut o, 0.99));
    println!(
        "exchange meshwire (optimistic) median {:7.1} us  p99 {:7.1} us  ratio vs raw quinn {:.2} (p99 {:.2})  vs rust-libp2p {:.2}x",
        us(o50),
        us(o99),
        us(o50) / us(r50),
        us(o99) / us(r99),
        us(o50) / us(p50)
    );
    let (e50, e99) = (pct(&mut e, 0.5), pct(&mut e, 0.99));
    println!(
        "exchange meshwire (eager) median {:7.1} us  p99 {:7.1} us  ratio vs raw quinn {:.2} (p99 {:.2})  vs rust-libp2p {:.2}x",
        us(e50),
        us(e99),
        us(e50) / us(r50),
        us(e99) / us(r99),
        us(e50) / us(p50)
    );
    println!(
        "exchange meshwire p99 ratio vs raw quinn {:.2}",
        us(m99) / us(r99)
    );
    let n = r.len();
    println!(
        "exchange UDP datagrams sent per exchange, both ends (/proc/net/snmp): raw-quinn {}  meshwire {}  meshwire (control) {}  rust-libp2p {}",
        dr.per(n),
        dm.per(n),
        dc.per(n),
        dp.per(n)
    );
    println!(
        "exchange UDP datagrams per exchange, meshwire (optimistic): {}  (quinn's counters: dialer {}, listener {})",
        d_o.per(n),
        q_dialer.per(n),
        q_listener.per(n)
    );
    println!(
        "exchange UDP datagrams per exchange, meshwire (eager): {}",
        de.per(n)
    );

    let mbps = |d: Duration| total as f64 / 1e6 / d.as_secs_f64();
    let (mut br, mut bm, mut bp) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        br.push(bulk(raw.stream().await, total).await);
        bm.push(bulk(mesh.stream().await, total).await);
        bp.push(bulk(p2p.stream().await, total).await);
    }
    let best = |v: &Vec<Duration>| *v.iter().min().expect("rounds");
    let (tr, tm, tp) = (mbps(best(&br)), mbps(best(&bm)), mbps(best(&bp)));
    let mib = total >> 20;
    println!("throughput, one stream through each swarm ({mib} MiB, 64 KiB writes, best of 3)");
    println!("throughput raw-quinn   {tr:7.1} MB/s");
    println!(
        "throughput meshwire    {tm:7.1} MB/s  ratio vs raw quinn {:.2}",
        tm / tr
    );
    println!(
        "throughput rust-libp2p {tp:7.1} MB/s  ratio vs raw quinn {:.2}",
        tp / tr
    );
    println!(
        "summary: per-stream exchange meshwire {:.0} us vs rust-libp2p {:.0} us ({:.2}x), raw quinn {:.0} us; \
         throughput meshwire {tm:.0} MB/s = {:.2}x raw quinn, {:.2}x rust-libp2p",
        us(m50),
        us(p50),
        us(m50) / us(p50),
        us(r50),
        tm / tr,
        tm / tp
    );
}

/// `BENCH_PROFILE=<stack>[,<stack>...]` (stacks: raw, meshwire, optimistic, eager, control):
/// only those stacks' exchanges, `MESHWIRE_BENCH_EXCHANGES` each, alternating in rounds of 100
/// when there are several (for a profiler, `perf record`, or to see what alternation costs);
/// then each one's median, p99, and CPU time and context switches per exchange.
async fn profile(only: &str, raw: &RawQuinn, mesh: &Meshwire, exchanges: usize) {
    let stacks: Vec<&str> = only.split(',').map(str::trim).collect();
    let mut lat = vec![Vec::with_capacity(exchanges); stacks.len()];
    let mut cpu = vec![0u64; stacks.len()];
    let mut switches = vec![0u64; stacks.len()];
    let round = if stacks.len() > 1 { 100 } else { exchanges };
    for _ in 0..exchanges.div_ceil(round) {
        for (i, stack) in stacks.iter().enumerate() {
            let (cpu0, switches0) = threads_cpu_and_switches();
            for _ in 0..round {
                let t = Instant::now();
                match *stack {
                    "raw" => exchange(raw.stream().await).await,
                    "meshwire" => exchange(mesh.stream().await).await,
                    "optimistic" => exchange(mesh.optimistic_stream().await).await,
                    "eager" => exchange(mesh.eager_stream().await).await,
                    "control" => exchange(mesh.control_stream().await).await,
                    other => panic!(
                        "BENCH_PROFILE: {other}: expected raw, meshwire, optimistic, eager or control"
                    ),
                }
                lat[i].push(t.elapsed());
            }
            let (cpu1, switches1) = threads_cpu_and_switches();
            cpu[i] += cpu1 - cpu0;
            switches[i] += switches1 - switches0;
        }
    }
    for (i, stack) in stacks.iter().enumerate() {
        let n = lat[i].len();
        let (p50, p99) = (pct(&mut lat[i], 0.5), pct(&mut lat[i], 0.99));
        println!(
            "profile {stack}: {n} exchanges, median {:.1} us, p99 {:.1} us, CPU {:.1} us and {:.2} context switches per exchange (all threads)",
            us(p50),
            us(p99),
            cpu[i] as f64 / 1e3 / n as f64,
            switches[i] as f64 / n as f64,
        );
    }
}

/// CPU time (ns, `/proc/self/task/*/schedstat`) and context switches (voluntary and not,
/// `/proc/self/task/*/status`) of every thread of the process so far; 0 where unreadable.
fn threads_cpu_and_switches() -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    let (mut cpu, mut switches) = (0, 0);
    for t in tasks.filter_map(Result::ok) {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            cpu += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(s) = std::fs::read_to_string(t.path().join("status")) {
            switches += s
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (cpu, switches)
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
