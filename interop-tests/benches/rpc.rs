//! RPC benchmark: meshwire RPC against rust-libp2p's request-response (CBOR codec), one
//! caller and one echo provider on loopback QUIC, in one process.
//!
//! * `meshwire`    — two swarms with `meshwire_rpc::Behaviour`; the provider registers an
//!   echo handler, the caller finds it through the DHT (the provider is its only kademlia
//!   peer) and calls `org.bench.echo.call` through its `SwarmHandle`
//!   (`with_behaviour(|b| b.call_async(..))`, then the `PendingCall`).
//! * `rust-libp2p` — two swarms with `libp2p::request_response::cbor::Behaviour<Vec<u8>,
//!   Vec<u8>>`; the server answers every request with its payload; the client's swarm runs on
//!   its own task and takes requests over a channel, answering each through a oneshot (the
//!   same shape as meshwire's handle).
//!
//! Both carry the same `MESHWIRE_BENCH_PAYLOAD` bytes (default 256) each way. Figures, per
//! stack, stacks alternating:
//! 1. sequential: `MESHWIRE_BENCH_EXCHANGES` (default 2,000) calls one at a time: p50/p99.
//! 2. concurrent: `MESHWIRE_BENCH_CALLS` (default 20,000) calls from
//!    `MESHWIRE_BENCH_CONCURRENCY` (default 32) tasks: calls/s, p50/p99 per call.
//!
//! Run with `cargo bench -p interop-tests --bench rpc`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::request_response as lp_rr;
use meshwire_core::Keypair;
use meshwire_rpc::{CallOpts, Config as RpcConfig, ProcedureName};
use meshwire_swarm::{Swarm, SwarmConfig, SwarmEvent, SwarmHandle};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use tokio::sync::{mpsc, oneshot};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One call: the payload out, the echo back (checked).
trait Caller: Clone + Send + Sync + 'static {
    fn call(&self, payload: Vec<u8>) -> impl std::future::Future<Output = Vec<u8>> + Send;
}

// ---------------------------------------------------------------------------------------------
// meshwire RPC

fn echo() -> ProcedureName {
    "org.bench.echo.call".parse().expect("name")
}

async fn meshwire_node() -> (
    SwarmHandle<meshwire_rpc::Behaviour>,
    meshwire_core::PeerId,
    meshwire_swarm::Multiaddr,
) {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let kad = meshwire_kad::Behaviour::new(peer, meshwire_kad::Config::default());
    let rpc = meshwire_rpc::Behaviour::new(kad, RpcConfig::default());
    let quic = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let config = SwarmConfig {
        idle_connection_timeout: Some(Duration::from_secs(600)),
        // A load generator: no per-connection limit on the rate of new streams.
        inbound_stream_rate: None,
        ..SwarmConfig::default()
    };
    let mut swarm = Swarm::new(quic, rpc, config);
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let (handle, mut events) = swarm.spawn();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    (handle, peer, addr)
}

#[derive(Clone)]
struct Meshwire {
    handle: SwarmHandle<meshwire_rpc::Behaviour>,
    _provider: SwarmHandle<meshwire_rpc::Behaviour>,
}

impl Meshwire {
    async fn start() -> Self {
        let (provider, provider_id, addr) = meshwire_node().await;
        provider
            .with_behaviour(|b| {
                b.register(echo(), |payload: Vec<u8>| async move { Ok(payload) })
                    .expect("register")
            })
            .await
            .expect("provider");
        let (handle, _, _) = meshwire_node().await;
        handle
            .with_behaviour(move |b| {
                b.kad_mut().add_address(provider_id, addr);
            })
            .await
            .expect("caller");
        let m = Meshwire {
            handle,
            _provider: provider,
        };
        // Found through the DHT at the first call.
        m.call(vec![1]).await;
        m
    }
}

impl Caller for Meshwire {
    async fn call(&self, payload: Vec<u8>) -> Vec<u8> {
        let len = payload.len();
        let pending = self
            .handle
            .with_behaviour(move |b| b.call_async(echo(), payload, CallOpts::default()))
            .await
            .expect("swarm");
        let back = pending.await.expect("call");
        assert_eq!(back.len(), len);
        back
    }
}

// ---------------------------------------------------------------------------------------------
// rust-libp2p request-response (CBOR)

type LpBehaviour = lp_rr::cbor::Behaviour<Vec<u8>, Vec<u8>>;

fn lp_swarm() -> libp2p::Swarm<LpBehaviour> {
    let behaviour = LpBehaviour::new(
        [(
            libp2p::StreamProtocol::new("/bench/echo/1"),
            lp_rr::ProtocolSupport::Full,
        )],
        lp_rr::Config::default().with_max_concurrent_streams(256),
    );
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| behaviour)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}

type Request = (Vec<u8>, oneshot::Sender<Vec<u8>>);

#[derive(Clone)]
struct RustLibp2p {
    tx: mpsc::Sender<Request>,
}

impl RustLibp2p {
    async fn start() -> Self {
        let mut server = lp_swarm();
        server
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
            .expect("listen");
        let addr = loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                server.select_next_some().await
            {
                break address;
            }
        };
        let server_id = *server.local_peer_id();
        tokio::spawn(async move {
            loop {
                if let libp2p::swarm::SwarmEvent::Behaviour(lp_rr::Event::Message {
                    message:
                        lp_rr::Message::Request {
                            request, channel, ..
                        },
                    ..
                }) = server.select_next_some().await
                {
                    let _ = server.behaviour_mut().send_response(channel, request);
                }
            }
        });
        let mut client = lp_swarm();
        client.add_peer_address(server_id, addr);
        let (tx, mut rx) = mpsc::channel::<Request>(1024);
        tokio::spawn(async move {
            let mut waiting: HashMap<lp_rr::OutboundRequestId, oneshot::Sender<Vec<u8>>> =
                HashMap::new();
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some((payload, reply)) => {
                            let id = client.behaviour_mut().send_request(&server_id, payload);
                            waiting.insert(id, reply);
                        }
                        None => return,
                    },
                    ev = client.select_next_some() => match ev {
                        libp2p::swarm::SwarmEvent::Behaviour(lp_rr::Event::Message {
                            message: lp_rr::Message::Response { request_id, response },
                            ..
                        }) => {
                            if let Some(reply) = waiting.remove(&request_id) {
                                let _ = reply.send(response);
                            }
                        }
                        libp2p::swarm::SwarmEvent::Behaviour(lp_rr::Event::OutboundFailure {
                            error, ..
                        }) => panic!("rust-libp2p request failed: {error}"),
                        _ => {}
                    },
                }
            }
        });
        let l = RustLibp2p { tx };
        l.call(vec![1]).await;
        l
    }
}

impl Caller for RustLibp2p {
    async fn call(&self, payload: Vec<u8>) -> Vec<u8> {
        let len = payload.len();
        let (reply, rx) = oneshot::channel();
        self.tx.send((payload, reply)).await.expect("client");
        let back = rx.await.expect("response");
        assert_eq!(back.len(), len);
        back
    }
}

// ---------------------------------------------------------------------------------------------
// The runs

async fn sequential(c: &impl Caller, n: u64, payload: &[u8]) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        c.call(payload.to_vec()).await;
        out.push(t.elapsed());
    }
    out
}

/// `total` calls from `tasks` tasks: (calls/s, latencies).
async fn concurrent(
    c: &impl Caller,
    total: u64,
    tasks: u64,
    payload: &[u8],
) -> (f64, Vec<Duration>) {
    let payload: Arc<[u8]> = payload.into();
    let start = Instant::now();
    let mut joins = Vec::new();
    for t in 0..tasks {
        let (c, payload) = (c.clone(), payload.clone());
        let n = total / tasks + u64::from(t < total % tasks);
        joins.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let t = Instant::now();
                c.call(payload.to_vec()).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(total as usize);
    for j in joins {
        all.extend(j.await.expect("task"));
    }
    (total as f64 / start.elapsed().as_secs_f64(), all)
}

async fn bench() {
    let exchanges = env_u64("MESHWIRE_BENCH_EXCHANGES").unwrap_or(2000);
    let calls = env_u64("MESHWIRE_BENCH_CALLS").unwrap_or(20_000);
    let tasks = env_u64("MESHWIRE_BENCH_CONCURRENCY").unwrap_or(32);
    let size = env_u64("MESHWIRE_BENCH_PAYLOAD").unwrap_or(256) as usize;
    let payload = vec![0xa5u8; size];
    let mw = Meshwire::start().await;
    if std::env::var("MESHWIRE_BENCH_ONLY").is_ok_and(|v| v == "meshwire") {
        let (rate, mut lat) = concurrent(&mw, calls, tasks, &payload).await;
        println!(
            "concurrent meshwire     {rate:8.0} calls/s  p50 {:7.1} us  p99 {:7.1} us",
            us(pct(&mut lat, 0.5)),
            us(pct(&mut lat, 0.99))
        );
        return;
    }
    let lp = RustLibp2p::start().await;
    println!("rpc bench: {size}-byte payloads, {exchanges} sequential calls, {calls} calls from {tasks} tasks");

    // Warm both, then alternate rounds.
    sequential(&mw, 200, &payload).await;
    sequential(&lp, 200, &payload).await;
    let (mut seq_mw, mut seq_lp) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        seq_mw.extend(sequential(&mw, exchanges / 4, &payload).await);
        seq_lp.extend(sequential(&lp, exchanges / 4, &payload).await);
    }
    let (m50, m99) = (pct(&mut seq_mw, 0.5), pct(&mut seq_mw, 0.99));
    let (l50, l99) = (pct(&mut seq_lp, 0.5), pct(&mut seq_lp, 0.99));
    println!(
        "sequential meshwire     p50 {:7.1} us  p99 {:7.1} us",
        us(m50),
        us(m99)
    );
    println!(
        "sequential rust-libp2p  p50 {:7.1} us  p99 {:7.1} us",
        us(l50),
        us(l99)
    );

    let (mut rate_mw, mut rate_lp) = (0.0f64, 0.0f64);
    let (mut con_mw, mut con_lp) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (r, l) = concurrent(&mw, calls / 2, tasks, &payload).await;
        rate_mw += r / 2.0;
        con_mw.extend(l);
        let (r, l) = concurrent(&lp, calls / 2, tasks, &payload).await;
        rate_lp += r / 2.0;
        con_lp.extend(l);
    }
    let (cm50, cm99) = (pct(&mut con_mw, 0.5), pct(&mut con_mw, 0.99));
    let (cl50, cl99) = (pct(&mut con_lp, 0.5), pct(&mut con_lp, 0.99));
    println!(
        "concurrent meshwire     {rate_mw:8.0} calls/s  p50 {:7.1} us  p99 {:7.1} us",
        us(cm50),
        us(cm99)
    );
    println!(
        "concurrent rust-libp2p  {rate_lp:8.0} calls/s  p50 {:7.1} us  p99 {:7.1} us",
        us(cl50),
        us(cl99)
    );
    println!(
        "summary: meshwire RPC {:.2}x rust-libp2p's call rate, p99 {:.2}x (concurrent), sequential p99 {:.2}x",
        rate_mw / rate_lp,
        us(cm99) / us(cl99),
        us(m99) / us(l99)
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
