//! Circuit relay benchmark: what a relay costs a connection, meshwire's relay against
//! rust-libp2p 0.57's (`libp2p-relay` 0.22), in one process on loopback QUIC.
//!
//! Paths, each its own pair of nodes (a client and a server):
//!
//! * `direct`            — two meshwire nodes over QUIC: the baseline.
//! * `meshwire relay`    — the same two meshwire nodes (QUIC + relay client) through a meshwire
//!   relay (`meshwire_relay::Behaviour`, no circuit limits): Noise + Yamux over the circuit.
//! * `rust-libp2p relay` — the same meshwire nodes through a rust-libp2p relay
//!   (`relay::Behaviour`, no circuit limits).
//!
//! Both relays carry the very same client stack (meshwire's relay client, Noise and Yamux at
//! both ends), so the difference between the last two rows is the relay alone: its stream
//! handling and its copy loop. As a reference, the full rust-libp2p stack is measured too:
//! two rust-libp2p nodes (relay client with Noise + Yamux, `libp2p-stream`) directly and
//! through each relay (`MESHWIRE_BENCH_RELAY_LIBP2P_CLIENTS=0` skips them).
//!
//! Each relay runs on its own thread (a current-thread tokio runtime, as if it were its own
//! process), the nodes on a two-thread runtime.
//!
//! Figures, every path measured in the same run, alternating in rounds:
//! 1. echo round trip: 64 bytes written and read back on one open stream,
//!    `MESHWIRE_BENCH_EXCHANGES` (default 1,000) times; p50 and p99.
//! 2. request: a new stream per exchange (protocol negotiation, 64-byte request, close, 64-byte
//!    echo), as many; p50 and p99.
//! 3. throughput: `MESHWIRE_BENCH_BYTES` (default 64 MiB) over one stream in 64 KiB writes,
//!    acknowledged by the server after the end of the stream; best and median of
//!    `MESHWIRE_BENCH_ROUNDS` (default 5).
//! 4. relay CPU per MiB: the CPU time of the relay's thread during the transfers (from
//!    `/proc/thread-self/stat`, 10 ms ticks) over the MiB it relayed. On a loaded machine the
//!    throughput figures move with the load; this one much less.
//!
//! `MESHWIRE_BENCH_RELAY_BUFFER` sets the meshwire relay's copy buffer per circuit direction
//! (`BehaviourConfig::circuit_buffer`, default `circuit::DEFAULT_BUFFER_SIZE`).
//!
//! Run with `cargo bench -p interop-tests --bench relay`.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent as LpEvent;
use meshwire_core::{Keypair, PeerId};
use meshwire_relay::{client, ServerConfig};
use meshwire_swarm::{
    DialOpts, InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult, StreamProtocol,
    Swarm, SwarmConfig, SwarmEvent, ToSwarm,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr, Protocol, TransportExt};
use tokio::sync::{mpsc, oneshot};

const PROTO: &str = "/bench/relay/1";
const CHUNK: usize = 64 * 1024;
const MSG: usize = 64;
/// First byte of a stream: echo everything back until the end of the stream.
const ECHO: u8 = b'E';
/// First byte of a stream: swallow everything, answer one byte after the end.
const SINK: u8 = b'S';

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxStream = Box<dyn Io>;

// ---------------------------------------------------------------------------------------------
// The stream work, the same on every path.

/// Server side of one stream.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut mode = [0u8; 1];
    if s.read_exact(&mut mode).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) if mode[0] == ECHO => {
                if s.write_all(&buf[..n]).await.is_err() || s.flush().await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
    if mode[0] == SINK {
        let _ = s.write_all(&[1]).await;
    }
    let _ = s.close().await;
}

/// `n` echo round trips of [`MSG`] bytes on one stream; each one's duration.
async fn echo_rounds(s: &mut BoxStream, n: usize) -> Vec<Duration> {
    let req = [7u8; MSG];
    let mut back = [0u8; MSG];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&req).await.expect("write");
        s.flush().await.expect("flush");
        s.read_exact(&mut back).await.expect("read echo");
        out.push(t.elapsed());
    }
    assert_eq!(back, req);
    out
}

/// One request/response on a fresh stream.
async fn request(mut s: BoxStream) {
    let mut req = [7u8; MSG + 1];
    req[0] = ECHO;
    s.write_all(&req).await.expect("write");
    s.close().await.expect("finish");
    let mut back = [0u8; MSG];
    s.read_exact(&mut back).await.expect("read echo");
    assert_eq!(back[..], req[1..]);
}

/// A bulk upload on one stream; the time from the first write to the server's reply.
async fn bulk(mut s: BoxStream, total: u64) -> Duration {
    let mut buf = vec![0xa5u8; CHUNK];
    let start = Instant::now();
    buf[0] = SINK;
    let mut left = total + 1;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n]).await.expect("write");
        buf[0] = 0xa5;
        left -= n as u64;
    }
    s.close().await.expect("finish");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("reply");
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// meshwire nodes: QUIC + relay client + a behaviour handing streams out

/// A request for a stream to a peer, answered on the oneshot.
type StreamRequest = (PeerId, oneshot::Sender<meshwire_swarm::Stream>);

/// Hands inbound streams to a server task and outbound streams to whoever asked.
struct Bench {
    requests: mpsc::UnboundedReceiver<StreamRequest>,
    waiting: VecDeque<(
        meshwire_swarm::StreamRequestId,
        oneshot::Sender<meshwire_swarm::Stream>,
    )>,
    inbound: mpsc::UnboundedSender<meshwire_swarm::Stream>,
}

impl NetworkBehaviour for Bench {
    type Event = ();

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![StreamProtocol::new(PROTO)]
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        let _ = self.inbound.send(stream.stream);
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        if let Some(pos) = self.waiting.iter().position(|(id, _)| *id == result.id) {
            let (_, reply) = self.waiting.remove(pos).expect("position");
            let _ = reply.send(result.result.expect("outbound stream").stream);
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
        match self.requests.poll_recv(cx) {
            Poll::Ready(Some((peer, reply))) => {
                let req = OpenStream::new(peer, StreamProtocol::new(PROTO)).no_dial();
                self.waiting.push_back((req.id, reply));
                Poll::Ready(ToSwarm::OpenStream(req))
            }
            _ => Poll::Pending,
        }
    }
}

#[derive(NetworkBehaviour)]
struct MwNode {
    relay_client: client::Behaviour,
    bench: Bench,
}

fn no_idle() -> SwarmConfig {
    SwarmConfig {
        idle_connection_timeout: None,
        // A load generator: no per-connection limit on the rate of new streams.
        inbound_stream_rate: None,
        ..SwarmConfig::default()
    }
}

/// A meshwire node; its inbound streams are served in tasks.
fn mw_node() -> (Swarm<MwNode>, mpsc::UnboundedSender<StreamRequest>) {
    let key = Keypair::generate();
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (in_tx, mut in_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(s) = in_rx.recv().await {
            tokio::spawn(serve(s));
        }
    });
    let (relay_transport, relay_client) = client::new(key.clone(), client::Config::default());
    let transport = QuicTransport::new(key, QuicConfig::default())
        .expect("quic")
        .or_transport(relay_transport);
    let behaviour = MwNode {
        relay_client,
        bench: Bench {
            requests: req_rx,
            waiting: VecDeque::new(),
            inbound: in_tx,
        },
    };
    (Swarm::new(transport, behaviour, no_idle()), req_tx)
}

/// Runs a meshwire swarm for the rest of the process.
fn run_mw<B: NetworkBehaviour + Send + 'static>(mut swarm: Swarm<B>)
where
    B::Event: Send,
{
    tokio::spawn(async move {
        loop {
            swarm.next_event().await;
        }
    });
}

/// Two meshwire nodes connected directly (`relay` = `None`) or through the relay at
/// `relay` (`<addr>/p2p/<relay>`).
async fn mw_pair(relay: Option<&Multiaddr>) -> Path {
    let (mut server, _) = mw_node();
    let server_id = server.local_peer_id();
    let target = match relay {
        None => {
            server
                .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
                .expect("listen");
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = server.next_event().await {
                    break with_peer_id(&address, server_id);
                }
            }
        }
        Some(relay) => {
            server
                .listen_on(relay.clone().with(Protocol::P2pCircuit))
                .expect("listen through the relay");
            loop {
                match server.next_event().await {
                    SwarmEvent::NewListenAddr { address, .. } => {
                        break with_peer_id(&address, server_id)
                    }
                    SwarmEvent::Behaviour(MwNodeEvent::RelayClient(
                        client::Event::ReservationFailed { error, .. },
                    )) => panic!("reservation failed: {error}"),
                    _ => {}
                }
            }
        }
    };
    run_mw(server);
    let (mut client, requests) = mw_node();
    client
        .dial(DialOpts::peer(server_id).address(target))
        .expect("dial");
    loop {
        match client.next_event().await {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } if peer_id == server_id => {
                assert_eq!(endpoint.is_relayed(), relay.is_some());
                break;
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial: {error}"),
            _ => {}
        }
    }
    run_mw(client);
    Path::Meshwire {
        peer: server_id,
        requests,
    }
}

/// A meshwire relay without circuit limits; its address with `/p2p/<relay>`.
async fn mw_relay() -> Multiaddr {
    let key = Keypair::generate();
    let config = ServerConfig {
        max_circuit_duration: None,
        max_circuit_bytes: None,
        ..ServerConfig::default()
    };
    let io = meshwire_relay::BehaviourConfig {
        circuit_buffer: env_u64("MESHWIRE_BENCH_RELAY_BUFFER")
            .map_or(meshwire_relay::circuit::DEFAULT_BUFFER_SIZE, |b| b as usize),
        ..meshwire_relay::BehaviourConfig::default()
    };
    let relay =
        meshwire_relay::Behaviour::with_config(key.clone(), config, io).expect("relay config");
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, relay, no_idle());
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break with_peer_id(&address, swarm.local_peer_id());
        }
    };
    run_mw(swarm);
    addr
}

// ---------------------------------------------------------------------------------------------
// rust-libp2p: the relay, and nodes with the relay client and libp2p-stream

#[derive(libp2p::swarm::NetworkBehaviour)]
struct LpRelay {
    relay: libp2p::relay::Behaviour,
}

/// A rust-libp2p relay without circuit limits (its listen address confirmed external, so
/// that reservations carry it); its address with `/p2p/<relay>`.
async fn lp_relay() -> Multiaddr {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| LpRelay {
            relay: libp2p::relay::Behaviour::new(
                key.public().to_peer_id(),
                libp2p::relay::Config {
                    max_circuit_duration: Duration::from_secs(24 * 3600),
                    max_circuit_bytes: u64::MAX,
                    ..Default::default()
                },
            ),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let LpEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    swarm.add_external_address(addr.clone());
    let id = *swarm.local_peer_id();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    mw_addr(&addr.with(libp2p::multiaddr::Protocol::P2p(id)))
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct LpNode {
    relay_client: libp2p::relay::client::Behaviour,
    stream: libp2p_stream::Behaviour,
}

fn lp_node() -> libp2p::Swarm<LpNode> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("relay client")
        .with_behaviour(|_, relay_client| LpNode {
            relay_client,
            stream: libp2p_stream::Behaviour::new(),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build()
}

fn mw_addr(a: &libp2p::Multiaddr) -> Multiaddr {
    a.to_string().parse().expect("address")
}

fn lp_addr(a: &Multiaddr) -> libp2p::Multiaddr {
    a.to_string().parse().expect("address")
}

/// Two rust-libp2p nodes connected directly or through the relay at `relay`.
async fn lp_pair(relay: Option<&Multiaddr>) -> Path {
    let proto = libp2p::StreamProtocol::new(PROTO);
    let mut server = lp_node();
    let server_id = *server.local_peer_id();
    let mut incoming = server
        .behaviour()
        .stream
        .new_control()
        .accept(proto)
        .expect("accept");
    tokio::spawn(async move {
        while let Some((_, s)) = incoming.next().await {
            tokio::spawn(serve(s));
        }
    });
    let target = match relay {
        None => {
            server
                .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
                .expect("listen");
            loop {
                if let LpEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                    break address;
                }
            }
        }
        Some(relay) => {
            server
                .listen_on(lp_addr(relay).with(libp2p::multiaddr::Protocol::P2pCircuit))
                .expect("listen through the relay");
            let mut reserved = false;
            let mut addr = None;
            while !reserved || addr.is_none() {
                match server.select_next_some().await {
                    LpEvent::NewListenAddr { address, .. } => addr = Some(address),
                    LpEvent::Behaviour(LpNodeEvent::RelayClient(
                        libp2p::relay::client::Event::ReservationReqAccepted { .. },
                    )) => reserved = true,
                    LpEvent::ListenerClosed { reason, .. } => {
                        panic!("reservation failed: {reason:?}")
                    }
                    _ => {}
                }
            }
            addr.expect("relayed address")
        }
    };
    tokio::spawn(async move {
        loop {
            server.select_next_some().await;
        }
    });
    let mut client = lp_node();
    let control = client.behaviour().stream.new_control();
    if let Some(relay) = relay {
        // rust-libp2p's relay transport dials through an established relay connection.
        client.dial(lp_addr(relay)).expect("dial relay");
        loop {
            if let LpEvent::ConnectionEstablished { .. } = client.select_next_some().await {
                break;
            }
        }
    }
    let target = if target.iter().last() == Some(libp2p::multiaddr::Protocol::P2p(server_id)) {
        target
    } else {
        target.with(libp2p::multiaddr::Protocol::P2p(server_id))
    };
    client.dial(target).expect("dial");
    loop {
        match client.select_next_some().await {
            LpEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } if peer_id == server_id => {
                assert_eq!(endpoint.is_relayed(), relay.is_some());
                break;
            }
            LpEvent::OutgoingConnectionError { error, .. } => panic!("dial: {error}"),
            _ => {}
        }
    }
    tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
    Path::RustLibp2p {
        peer: server_id,
        control,
    }
}

// ---------------------------------------------------------------------------------------------

/// A connection to measure: streams to the server on it.
enum Path {
    Meshwire {
        peer: PeerId,
        requests: mpsc::UnboundedSender<StreamRequest>,
    },
    RustLibp2p {
        peer: libp2p::PeerId,
        control: libp2p_stream::Control,
    },
}

impl Path {
    async fn stream(&mut self) -> BoxStream {
        match self {
            Path::Meshwire { peer, requests } => {
                let (tx, rx) = oneshot::channel();
                requests.send((*peer, tx)).expect("swarm alive");
                Box::new(rx.await.expect("stream"))
            }
            Path::RustLibp2p { peer, control } => Box::new(
                control
                    .open_stream(*peer, libp2p::StreamProtocol::new(PROTO))
                    .await
                    .expect("open stream"),
            ),
        }
    }

    /// A stream in echo mode.
    async fn echo_stream(&mut self) -> BoxStream {
        let mut s = self.stream().await;
        s.write_all(&[ECHO]).await.expect("mode");
        s
    }
}

/// A relay running on its own thread (a current-thread tokio runtime), so that the CPU time
/// of that thread is the relay's: its QUIC connections, stream handling and copying.
struct RelayThread {
    addr: Multiaddr,
    cpu: mpsc::UnboundedSender<oneshot::Sender<Option<Duration>>>,
}

impl RelayThread {
    fn spawn<F, Fut>(name: &str, start: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Multiaddr>,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (cpu, mut cpu_rx) = mpsc::unbounded_channel::<oneshot::Sender<Option<Duration>>>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("relay runtime");
                rt.block_on(async move {
                    addr_tx.send(start().await).expect("bench waits");
                    while let Some(reply) = cpu_rx.recv().await {
                        let _ = reply.send(thread_cpu());
                    }
                });
            })
            .expect("relay thread");
        RelayThread {
            addr: addr_rx.recv().expect("relay address"),
            cpu,
        }
    }

    /// CPU time the relay's thread has used so far (`None` without `/proc`).
    async fn cpu(&self) -> Option<Duration> {
        let (tx, rx) = oneshot::channel();
        self.cpu.send(tx).ok()?;
        rx.await.ok().flatten()
    }
}

/// The CPU time of the calling thread, from `/proc/thread-self/stat` (user + system, in
/// clock ticks of 10 ms).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields 14 and 15, counted after the command name's closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

struct Row<'a> {
    name: &'static str,
    path: Path,
    relay: Option<&'a RelayThread>,
    echo: BoxStream,
    rtt: Vec<Duration>,
    req: Vec<Duration>,
    bulk: Vec<Duration>,
    /// The relay's CPU time during the bulk transfers, when it could be read.
    relay_cpu: Option<Duration>,
}

impl<'a> Row<'a> {
    async fn new(name: &'static str, mut path: Path, relay: Option<&'a RelayThread>) -> Self {
        let mut echo = path.echo_stream().await;
        echo_rounds(&mut echo, 20).await;
        for _ in 0..20 {
            request(path.stream().await).await;
        }
        Row {
            name,
            path,
            relay,
            echo,
            rtt: Vec::new(),
            req: Vec::new(),
            bulk: Vec::new(),
            relay_cpu: relay.map(|_| Duration::ZERO),
        }
    }

    /// One bulk transfer, with the relay's CPU time counted.
    async fn bulk(&mut self, total: u64) {
        let s = self.path.stream().await;
        let before = match self.relay {
            Some(r) => r.cpu().await,
            None => None,
        };
        self.bulk.push(bulk(s, total).await);
        if let (Some(relay), Some(before)) = (self.relay, before) {
            if let (Some(after), Some(sum)) = (relay.cpu().await, self.relay_cpu.as_mut()) {
                *sum += after.saturating_sub(before);
            }
        } else {
            self.relay_cpu = None;
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One path's figures.
struct Figures {
    rtt50: f64,
    rtt99: f64,
    req50: f64,
    req99: f64,
    /// Best throughput, MB/s.
    mbps: f64,
    /// Median throughput, MB/s.
    mbps50: f64,
    /// The relay's CPU milliseconds per MiB relayed.
    relay_ms_per_mib: Option<f64>,
}

fn figures(row: &mut Row, total: u64) -> Figures {
    let mbps = |d: Duration| total as f64 / 1e6 / d.as_secs_f64();
    let best = row.bulk.iter().min().copied().unwrap_or_default();
    let rounds = row.bulk.len();
    Figures {
        rtt50: us(pct(&mut row.rtt, 0.5)),
        rtt99: us(pct(&mut row.rtt, 0.99)),
        req50: us(pct(&mut row.req, 0.5)),
        req99: us(pct(&mut row.req, 0.99)),
        mbps: mbps(best),
        mbps50: mbps(pct(&mut row.bulk, 0.5)),
        relay_ms_per_mib: row
            .relay_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e3 / (rounds as f64 * total as f64 / (1 << 20) as f64)),
    }
}

async fn bench() {
    let exchanges = env_u64("MESHWIRE_BENCH_EXCHANGES").unwrap_or(1000).max(100) as usize;
    let total = env_u64("MESHWIRE_BENCH_BYTES").unwrap_or(64 << 20);
    let rounds = env_u64("MESHWIRE_BENCH_ROUNDS").unwrap_or(5).max(1);
    let with_libp2p = env_u64("MESHWIRE_BENCH_RELAY_LIBP2P_CLIENTS") != Some(0);

    let mw = RelayThread::spawn("meshwire-relay", mw_relay);
    let lp = RelayThread::spawn("rust-libp2p-relay", lp_relay);
    let mut rows = vec![
        Row::new("meshwire direct", mw_pair(None).await, None).await,
        Row::new(
            "meshwire via meshwire relay",
            mw_pair(Some(&mw.addr)).await,
            Some(&mw),
        )
        .await,
        Row::new(
            "meshwire via rust-libp2p relay",
            mw_pair(Some(&lp.addr)).await,
            Some(&lp),
        )
        .await,
    ];
    if with_libp2p {
        rows.push(Row::new("rust-libp2p direct", lp_pair(None).await, None).await);
        rows.push(
            Row::new(
                "rust-libp2p via meshwire relay",
                lp_pair(Some(&mw.addr)).await,
                Some(&mw),
            )
            .await,
        );
        rows.push(
            Row::new(
                "rust-libp2p via rust-libp2p relay",
                lp_pair(Some(&lp.addr)).await,
                Some(&lp),
            )
            .await,
        );
    }

    // Latency: every path in turn, 100 at a time.
    for _ in 0..exchanges / 100 {
        for row in rows.iter_mut() {
            let rtts = echo_rounds(&mut row.echo, 100).await;
            row.rtt.extend(rtts);
            for _ in 0..100 {
                let t = Instant::now();
                request(row.path.stream().await).await;
                row.req.push(t.elapsed());
            }
        }
    }
    // Throughput: every path in turn, each round.
    for _ in 0..rounds {
        for row in rows.iter_mut() {
            row.bulk(total).await;
        }
    }

    let figs: Vec<Figures> = rows.iter_mut().map(|r| figures(r, total)).collect();
    println!(
        "relay benchmark, loopback QUIC, one process, each relay on its own thread: {} echo round trips \
         and {} requests of {MSG} B per path; {} MiB in 64 KiB writes, {rounds} rounds",
        rows[0].rtt.len(),
        rows[0].req.len(),
        total >> 20
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>14}",
        "path",
        "rtt p50",
        "rtt p99",
        "req p50",
        "req p99",
        "best MB/s",
        "p50 MB/s",
        "relay CPU/MiB"
    );
    for (row, f) in rows.iter().zip(&figs) {
        println!(
            "{:<34} {:>7.1} us {:>7.1} us {:>7.1} us {:>7.1} us {:>9.1} {:>9.1} {:>14}",
            row.name,
            f.rtt50,
            f.rtt99,
            f.req50,
            f.req99,
            f.mbps,
            f.mbps50,
            f.relay_ms_per_mib
                .map_or("-".into(), |ms| format!("{ms:.2} ms")),
        );
    }
    let ratios = |label: &str, a: &Figures, b: &Figures| {
        let cpu = match (a.relay_ms_per_mib, b.relay_ms_per_mib) {
            (Some(x), Some(y)) if y > 0.0 => format!("  relay CPU {:.2}x", x / y),
            _ => String::new(),
        };
        println!(
            "{label:<58} rtt {:.2}x  request {:.2}x  throughput {:.2}x (median {:.2}x){cpu}",
            a.rtt50 / b.rtt50,
            a.req50 / b.req50,
            a.mbps / b.mbps,
            a.mbps50 / b.mbps50,
        );
    };
    println!("ratios (p50 latencies; best and median throughput; relay CPU per MiB):");
    ratios("meshwire via meshwire relay / direct", &figs[1], &figs[0]);
    ratios(
        "meshwire via rust-libp2p relay / direct",
        &figs[2],
        &figs[0],
    );
    ratios(
        "meshwire relay / rust-libp2p relay (meshwire clients)",
        &figs[1],
        &figs[2],
    );
    if with_libp2p {
        ratios(
            "rust-libp2p via meshwire relay / direct",
            &figs[4],
            &figs[3],
        );
        ratios(
            "rust-libp2p via rust-libp2p relay / direct",
            &figs[5],
            &figs[3],
        );
        ratios(
            "meshwire relay / rust-libp2p relay (rust-libp2p clients)",
            &figs[4],
            &figs[5],
        );
        ratios(
            "meshwire stack / rust-libp2p stack, each via its own relay",
            &figs[1],
            &figs[5],
        );
    }
    println!(
        "summary: meshwire relay vs rust-libp2p relay (meshwire clients): throughput {:.2}x (goal >= 1.0), \
         rtt {:.2}x, request latency {:.2}x (goal <= 1.0), relay CPU per MiB {}",
        figs[1].mbps / figs[2].mbps,
        figs[1].rtt50 / figs[2].rtt50,
        figs[1].req50 / figs[2].req50,
        match (figs[1].relay_ms_per_mib, figs[2].relay_ms_per_mib) {
            (Some(x), Some(y)) if y > 0.0 => format!("{:.2}x (goal <= 1.0)", x / y),
            _ => "n/a".into(),
        }
    );
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
