//! SWIM over connections without datagrams (as relayed connections are): three swarms on the
//! in-memory transport with datagrams turned off form a cluster, probe each other for ten
//! protocol periods without a single suspicion (every message goes as a frame on the per-peer
//! fallback stream), and still detect a node that really stops (hangs with its connections
//! open, so its probes fail over the streams). A peer writing fallback frames by hand gets
//! through no more than datagrams would, within the stream limits.
//!
//! Run with output: `cargo test -p meshwire-swim --test no_datagrams -- --nocapture`.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::AsyncWriteExt;
use meshwire_core::{Keypair, PeerId};
use meshwire_swarm::toolkit::{encode_frame, Outbox};
use meshwire_swarm::{
    Multiaddr, NetworkBehaviour, OpenStream, OutboundStreamResult, Stream, StreamError,
    StreamProtocol, Swarm, SwarmConfig, SwarmEvent, ToSwarm,
};
use meshwire_swim::behaviour::IoStats;
use meshwire_swim::{Behaviour, Config, Event, Realm, Stats, STREAM_PROTOCOL};
use meshwire_transport::memory::MemoryTransport;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const N: usize = 3;

fn realm() -> Realm {
    "org.example.relayed".parse().unwrap()
}

/// A fast configuration: 200 ms protocol period, 100 ms probe timeout.
fn config() -> Config {
    let mut c = Config::default().with_rejoin_interval(Some(Duration::from_millis(500)));
    c.swim.probe_interval = Duration::from_millis(200);
    c.swim.probe_timeout = Duration::from_millis(100);
    c.swim.gossip_interval = Some(Duration::from_millis(50));
    c.swim.push_pull_interval = Some(Duration::from_secs(2));
    c
}

/// Idle connections close after 500 ms unless a behaviour keeps them: the fallback streams
/// must not be what keeps a dead member's connection, nor may a live member's close.
fn swarm_config() -> SwarmConfig {
    SwarmConfig {
        idle_connection_timeout: Some(Duration::from_millis(500)),
        ..SwarmConfig::default()
    }
}

enum Cmd {
    Join(Vec<(PeerId, Multiaddr)>),
    Live(oneshot::Sender<Vec<PeerId>>),
    Io(oneshot::Sender<IoStats>),
    Stats(oneshot::Sender<Stats>),
    Connected(oneshot::Sender<usize>),
    /// Stop polling the swarm for good, keeping its connections open: a hung process.
    Freeze,
}

struct Node {
    peer: PeerId,
    addr: Multiaddr,
    cmd: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> T {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(cmd(tx)).unwrap();
        rx.await.unwrap()
    }
}

async fn spawn_node(
    index: usize,
    config: Config,
    events: mpsc::UnboundedSender<(usize, Event)>,
) -> Node {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let behaviour = Behaviour::new(&key, [realm()], config).unwrap();
    let transport = MemoryTransport::new(peer).without_datagrams();
    let mut swarm = Swarm::new(transport, behaviour, swarm_config());
    swarm.listen_on("/memory/0".parse().unwrap()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let (cmd, mut cmds) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = swarm.next_event() => {
                    if let SwarmEvent::Behaviour(e) = ev {
                        let _ = events.send((index, e));
                    }
                }
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Join(seeds)) => swarm.behaviour_mut().join(&realm(), &seeds).unwrap(),
                    Some(Cmd::Live(tx)) => {
                        let live = swarm.behaviour().live_members(&realm());
                        let _ = tx.send(live.into_iter().map(|m| m.peer).collect());
                    }
                    Some(Cmd::Io(tx)) => {
                        let _ = tx.send(swarm.behaviour().io_stats().clone());
                    }
                    Some(Cmd::Stats(tx)) => {
                        let _ = tx.send(swarm.behaviour().stats(&realm()).unwrap());
                    }
                    Some(Cmd::Connected(tx)) => {
                        let _ = tx.send(swarm.connected_peers().count());
                    }
                    Some(Cmd::Freeze) => std::future::pending::<()>().await,
                    None => return,
                },
            }
        }
    });
    Node {
        peer,
        addr,
        cmd,
        task,
    }
}

/// The time within which every live member declares a crashed one failed (as in the QUIC
/// swarm test): two probe rounds until someone probes it, the failed probe, the suspicion's
/// spread and its longest timeout, and the declaration's spread.
fn failure_bound(c: &meshwire_swim::SwimConfig, members: usize) -> Duration {
    let first_probe = c.probe_interval * (2 * members as u32);
    let min = c.suspicion_min_timeout(members + 1);
    let max = min * c.suspicion_max_timeout_mult;
    let spread = c.gossip_interval.unwrap_or(c.probe_interval) * 5;
    first_probe + c.probe_interval + spread + max + spread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swim_converges_probes_and_detects_failure_without_datagrams() {
    let io = converge_probe_and_detect(config()).await;
    // One stream each way per peer, kept open throughout (idle timeout 30 s).
    for (i, io) in io.iter().enumerate() {
        assert_eq!(io.stream_fallbacks, N as u64 - 1, "node {i}: {io:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_idle_out_are_reopened_without_losing_probes() {
    // Streams close after 60 ms without a message: most messages find their stream closed
    // or closing and open a new one.
    let mut cfg = config();
    cfg.fallback_stream_idle_timeout = Duration::from_millis(60);
    let io = converge_probe_and_detect(cfg).await;
    for (i, io) in io.iter().enumerate() {
        assert!(io.stream_fallbacks >= 5, "node {i}: {io:?}");
        assert_eq!(io.stream_fallbacks_failed, 0, "node {i}: {io:?}");
    }
}

/// Three nodes without datagrams: they converge, probe each other for 10 periods without a
/// suspicion, and the two others declare a hung third one failed. Returns the IO counters of
/// the steady phase's end.
async fn converge_probe_and_detect(cfg: Config) -> Vec<IoStats> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for i in 0..N {
        nodes.push(spawn_node(i, cfg.clone(), tx.clone()).await);
    }

    // --- Formation through node 0. ---------------------------------------------------------
    let start = Instant::now();
    let seed = (nodes[0].peer, nodes[0].addr.clone());
    for n in &nodes[1..] {
        n.cmd.send(Cmd::Join(vec![seed.clone()])).unwrap();
    }
    loop {
        let mut all = true;
        for n in &nodes {
            all &= n.ask(Cmd::Live).await.len() == N - 1;
        }
        if all {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no convergence within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "no_datagrams: {N} nodes converged in {:.2?}",
        start.elapsed()
    );

    // --- Steady phase: 10 protocol periods, probes answered over the fallback streams. ----
    let before: Vec<Stats> = {
        let mut v = Vec::new();
        for n in &nodes {
            v.push(n.ask(Cmd::Stats).await);
        }
        v
    };
    let periods = 10;
    let until = Instant::now() + cfg.swim.probe_interval * periods;
    let mut bad = Vec::new();
    while let Ok(Some((i, e))) = tokio::time::timeout_at(until, events.recv()).await {
        if matches!(
            e,
            Event::MemberSuspected { .. } | Event::MemberFailed { .. }
        ) {
            bad.push((i, e));
        }
    }
    // Also none during formation: every event so far was a join.
    assert!(bad.is_empty(), "suspicions over streams: {bad:?}");
    let mut steady = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let s = n.ask(Cmd::Stats).await;
        let b = &before[i];
        assert_eq!(s.suspicions_raised, 0, "node {i}: {s:?}");
        assert_eq!(s.probes_failed, 0, "node {i}: {s:?}");
        let acked = s.probes_acked_direct - b.probes_acked_direct;
        // One probe per period (timers on a loaded machine may slip a little).
        assert!(
            acked >= periods as u64 / 2,
            "node {i}: only {acked} probes acked in {periods} periods"
        );
        assert_eq!(n.ask(Cmd::Live).await.len(), N - 1);
        assert_eq!(n.ask(Cmd::Connected).await, N - 1, "node {i}");
        let io = n.ask(Cmd::Io).await;
        println!("no_datagrams: node {i}: {acked} probes acked in {periods} periods; {io:?}");
        assert_eq!(io.datagrams_sent, 0, "node {i}: {io:?}");
        assert_eq!(io.datagrams_received, 0, "node {i}: {io:?}");
        assert!(io.stream_fallbacks >= 1, "node {i}: {io:?}");
        assert!(io.stream_messages_sent > 0, "node {i}: {io:?}");
        assert!(io.stream_messages_received > 0, "node {i}: {io:?}");
        assert_eq!(io.stream_messages_dropped, 0, "node {i}: {io:?}");
        assert_eq!(io.datagrams_bad, 0, "node {i}: {io:?}");
        steady.push(io);
    }

    // --- A node that really stops is declared failed by the others. -------------------------
    // It hangs with its connections open, so its probes fail over the fallback streams
    // (not because a dial of it fails).
    let dead = nodes.pop().unwrap();
    dead.cmd.send(Cmd::Freeze).unwrap();
    let stopped = Instant::now();
    let bound = failure_bound(&cfg.swim, N - 1);
    let mut failed = vec![None; nodes.len()];
    while failed.iter().any(Option::is_none) {
        let left = (stopped + bound).saturating_duration_since(Instant::now());
        let Ok(Some((i, e))) = tokio::time::timeout(left, events.recv()).await else {
            panic!("not every node declared the stopped one failed within {bound:.2?}: {failed:?}");
        };
        match e {
            Event::MemberFailed { peer, .. } if peer == dead.peer => {
                failed[i].get_or_insert(stopped.elapsed());
            }
            Event::MemberFailed { peer, .. } | Event::MemberSuspected { peer, .. } => {
                assert_eq!(peer, dead.peer, "node {i} suspected a live member");
            }
            _ => {}
        }
    }
    println!(
        "no_datagrams: the stopped node was declared failed after {failed:?} (bound {bound:.2?})"
    );
    for n in &nodes {
        assert_eq!(n.ask(Cmd::Live).await, vec![nodes_other(&nodes, n.peer)]);
    }
    dead.task.abort();
    steady
}

/// The one live node other than `me`.
fn nodes_other(nodes: &[Node], me: PeerId) -> PeerId {
    nodes.iter().map(|n| n.peer).find(|p| *p != me).unwrap()
}

/// A behaviour that opens raw fallback streams for the test (a peer speaking the protocol
/// by hand).
#[derive(Default)]
struct Opener {
    outbox: Outbox<std::convert::Infallible, oneshot::Sender<Result<Stream, StreamError>>>,
}

impl NetworkBehaviour for Opener {
    type Event = std::convert::Infallible;
    fn protocols(&self) -> Vec<StreamProtocol> {
        Vec::new()
    }
    fn on_outbound_stream(&mut self, res: OutboundStreamResult) {
        if let Some(tx) = self.outbox.take_stream(res.id) {
            let _ = tx.send(res.result.map(|o| o.stream));
        }
    }
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::Event>> {
        self.outbox.poll(cx)
    }
}

/// Streams of a raw peer to `victim` at `addr`, opened on request.
fn raw_peer(
    victim: PeerId,
    addr: Multiaddr,
) -> mpsc::UnboundedSender<oneshot::Sender<Result<Stream, StreamError>>> {
    let key = Keypair::generate();
    let transport = MemoryTransport::new(key.peer_id()).without_datagrams();
    let mut swarm = Swarm::new(transport, Opener::default(), SwarmConfig::default());
    swarm.add_peer_address(victim, addr);
    let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<_>>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = swarm.next_event() => {}
                req = rx.recv() => match req {
                    Some(reply) => {
                        let open = OpenStream::new(victim, STREAM_PROTOCOL);
                        swarm.behaviour_mut().outbox.open_stream(open, reply).unwrap();
                    }
                    None => return,
                },
            }
        }
    });
    tx
}

/// Waits (up to 5 s) until `node`'s IO counters satisfy `ok`.
async fn io_until(node: &Node, what: &str, ok: impl Fn(&IoStats) -> bool) -> IoStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let io = node.ask(Cmd::Io).await;
        if ok(&io) {
            return io;
        }
        assert!(Instant::now() < deadline, "{what}: {io:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_streams_take_the_datagram_path_and_limits() {
    let (tx, _events) = mpsc::unbounded_channel();
    let node = spawn_node(0, config(), tx).await;
    let raw = raw_peer(node.peer, node.addr.clone());
    let open = || async {
        let (reply, stream) = oneshot::channel();
        raw.send(reply).unwrap();
        stream.await.unwrap().unwrap()
    };
    // Junk in a frame: refused by the same decoding as a datagram, and counted alike.
    let mut first = open().await;
    first.write_all(&encode_frame(b"not swim")).await.unwrap();
    first.flush().await.unwrap();
    let io = io_until(&node, "junk frame", |io| io.datagrams_bad == 1).await;
    assert_eq!(io.stream_messages_received, 1);
    assert_eq!(io.stream_fallbacks_inbound, 1);
    assert_eq!(io.datagrams_received, 0);
    // A second stream of the same peer is read; a third is reset (2 per peer by default).
    let mut second = open().await;
    second.write_all(&encode_frame(b"junk")).await.unwrap();
    second.flush().await.unwrap();
    io_until(&node, "second stream", |io| io.datagrams_bad == 2).await;
    let mut third = open().await;
    // (The reset may come before the write, or after.)
    let _ = third.write_all(&encode_frame(b"junk")).await;
    let _ = third.flush().await;
    let io = io_until(&node, "third stream", |io| io.stream_fallbacks_refused == 1).await;
    assert_eq!(io.stream_fallbacks_inbound, 2);
    assert_eq!(
        io.datagrams_bad, 2,
        "nothing of the refused stream was read"
    );
    // A frame above the engine's datagram limit ends the stream before its body is read.
    let limit = meshwire_swim::Limits::default().max_datagram_bytes;
    let mut prefix = Vec::new();
    let mut n = limit as u64 + 1;
    while n >= 0x80 {
        prefix.push((n as u8) | 0x80);
        n >>= 7;
    }
    prefix.push(n as u8);
    first.write_all(&prefix).await.unwrap();
    first.flush().await.unwrap();
    let io = io_until(&node, "oversized frame", |io| {
        io.stream_fallbacks_failed == 1
    })
    .await;
    assert_eq!(io.datagrams_bad, 3);
    // Its slot is free again: a new stream of the peer is read.
    let mut fourth = open().await;
    fourth.write_all(&encode_frame(b"junk")).await.unwrap();
    fourth.flush().await.unwrap();
    let io = io_until(&node, "fourth stream", |io| io.datagrams_bad == 4).await;
    assert_eq!(io.stream_fallbacks_inbound, 3);
    assert_eq!(io.stream_messages_received, 3);
    node.task.abort();
}
