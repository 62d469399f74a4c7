//! Identify between swarms on real QUIC loopback.

use std::collections::{HashSet, VecDeque};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::future::{select_all, BoxFuture};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use meshwire_core::{ConnectionId, Keypair, PeerId};
use meshwire_identify::protocol::{encode_frame, wire};
use meshwire_identify::{
    Behaviour, Config, Error, Event, MAX_INBOUND_STREAMS_PER_CONNECTION, PROTOCOL_NAME,
    PUSH_PROTOCOL_NAME,
};
use meshwire_swarm::toolkit::FrameError;
use meshwire_swarm::{
    ConnectedPoint, FromSwarm, InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult,
    StreamProtocol, Swarm, SwarmConfig, SwarmEvent, ToSwarm,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr};

const LOOPBACK: &str = "/ip4/127.0.0.1/udp/0/quic-v1";
const T: Duration = Duration::from_secs(30);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A swarm and every event it produced so far.
struct Node<B: NetworkBehaviour> {
    swarm: Swarm<B>,
    key: Keypair,
    addr: Multiaddr,
    events: Vec<SwarmEvent<B::Event>>,
}

impl<B: NetworkBehaviour> Node<B> {
    fn peer(&self) -> PeerId {
        self.swarm.local_peer_id()
    }

    fn dial_addr(&self) -> Multiaddr {
        with_peer_id(&self.addr, self.peer())
    }
}

async fn start<B: NetworkBehaviour>(make: impl FnOnce(&Keypair) -> B) -> Node<B> {
    let key = Keypair::generate();
    let behaviour = make(&key);
    let transport = QuicTransport::new(key.clone(), QuicConfig::default()).unwrap();
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    swarm.listen_on(LOOPBACK.parse().unwrap()).unwrap();
    let mut events = Vec::new();
    let addr = loop {
        match swarm.next_event().await {
            SwarmEvent::NewListenAddr { address, .. } => break address,
            other => events.push(other),
        }
    };
    Node {
        swarm,
        key,
        addr,
        events,
    }
}

fn identify_node_config(key: &Keypair, name: &str) -> Config {
    Config::new("ipfs/0.1.0", key.public()).with_agent_version(format!("test/{name}"))
}

async fn start_identify(name: &str, push: bool) -> Node<Behaviour> {
    let name = name.to_owned();
    start(move |key| {
        Behaviour::new(identify_node_config(key, &name).with_push_listen_addr_updates(push))
    })
    .await
}

/// Drives every node until `done` holds (panics after [`T`]).
async fn drive<B: NetworkBehaviour>(
    nodes: &mut [&mut Node<B>],
    mut done: impl FnMut(&[&mut Node<B>]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + T;
    while !done(nodes) {
        let (ev, idx) = {
            let futs: Vec<_> = nodes
                .iter_mut()
                .map(|n| Box::pin(n.swarm.next_event()))
                .collect();
            match tokio::time::timeout_at(deadline, select_all(futs)).await {
                Ok((ev, idx, _)) => (ev, idx),
                Err(_) => panic!("timed out driving the swarms"),
            }
        };
        nodes[idx].events.push(ev);
    }
}

/// Drives every node for `duration`.
async fn drive_for<B: NetworkBehaviour>(nodes: &mut [&mut Node<B>], duration: Duration) {
    let end = tokio::time::Instant::now() + duration;
    loop {
        let (ev, idx) = {
            let futs: Vec<_> = nodes
                .iter_mut()
                .map(|n| Box::pin(n.swarm.next_event()))
                .collect();
            match tokio::time::timeout_at(end, select_all(futs)).await {
                Ok((ev, idx, _)) => (ev, idx),
                Err(_) => return,
            }
        };
        nodes[idx].events.push(ev);
    }
}

fn received(events: &[SwarmEvent<Event>]) -> Vec<(PeerId, ConnectionId, meshwire_identify::Info)> {
    events
        .iter()
        .filter_map(|e| match e {
            SwarmEvent::Behaviour(Event::Received {
                peer,
                connection,
                info,
            }) => Some((*peer, *connection, info.clone())),
            _ => None,
        })
        .collect()
}

fn endpoint_to<B: NetworkBehaviour>(node: &Node<B>, peer: PeerId) -> ConnectedPoint {
    node.events
        .iter()
        .find_map(|e| match e {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } if *peer_id == peer => Some(endpoint.clone()),
            _ => None,
        })
        .expect("connection established")
}

#[tokio::test]
async fn three_swarms_identify_each_other() {
    init_tracing();
    let mut a = start_identify("a", false).await;
    let mut b = start_identify("b", false).await;
    let mut c = start_identify("c", false).await;
    a.swarm.dial(b.dial_addr()).unwrap();
    a.swarm.dial(c.dial_addr()).unwrap();
    b.swarm.dial(c.dial_addr()).unwrap();

    let mut nodes = [&mut a, &mut b, &mut c];
    drive(&mut nodes, |nodes| {
        nodes.iter().all(|n| {
            let got = received(&n.events);
            let peers: HashSet<_> = got.iter().map(|(p, _, _)| *p).collect();
            let sent = n
                .events
                .iter()
                .filter(|e| matches!(e, SwarmEvent::Behaviour(Event::Sent { .. })))
                .count();
            peers.len() == 2 && sent >= 2
        })
    })
    .await;

    let names = ["a", "b", "c"];
    let all: Vec<(PeerId, Multiaddr, meshwire_core::PublicKey)> = nodes
        .iter()
        .map(|n| (n.peer(), n.addr.clone(), n.key.public()))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        assert!(
            !node
                .events
                .iter()
                .any(|e| matches!(e, SwarmEvent::Behaviour(Event::Error { .. }))),
            "{}: {:?}",
            names[i],
            node.events
        );
        for (j, other) in nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            let (peer, addr, key) = &all[j];
            let got = received(&node.events);
            let (_, _, info) = got
                .iter()
                .find(|(p, _, _)| p == peer)
                .expect("info of every other peer");
            assert_eq!(info.public_key, *key);
            assert_eq!(info.peer_id(), *peer);
            assert_eq!(info.listen_addrs, vec![addr.clone()]);
            assert!(
                info.protocols.contains(&PROTOCOL_NAME),
                "{:?}",
                info.protocols
            );
            assert!(
                info.protocols.contains(&PUSH_PROTOCOL_NAME),
                "{:?}",
                info.protocols
            );
            assert_eq!(info.agent_version, format!("test/{}", names[j]));
            assert_eq!(info.protocol_version, "ipfs/0.1.0");
            // The observed address is the remote's view of this connection: the address
            // it dialed, or the dialer's socket it saw. With QUIC's shared endpoint both are
            // our listen address.
            let their_view = endpoint_to(other, node.peer());
            assert_eq!(info.observed_addr, *their_view.remote_addr());
            assert_eq!(info.observed_addr, node.addr);
            // It was reported as a candidate external address.
            assert!(node.events.iter().any(|e| matches!(
                e,
                SwarmEvent::NewExternalAddrCandidate { address } if *address == info.observed_addr
            )));
            // The peer's listen address went to the swarm.
            assert!(node.events.iter().any(|e| matches!(
                e,
                SwarmEvent::NewExternalAddrOfPeer { peer_id, address }
                    if peer_id == peer && address == addr
            )));
            // And is cached.
            assert_eq!(node.swarm.behaviour().info(peer), Some(info));
        }
    }

    // The cache is dropped with the last connection.
    let b_peer = nodes[1].peer();
    assert!(nodes[0].swarm.disconnect_peer_id(b_peer));
    drive(&mut nodes, |n| {
        n[0].swarm.behaviour().info(&b_peer).is_none()
    })
    .await;
    assert!(nodes[0].swarm.behaviour().info(&nodes[2].peer()).is_some());
}

#[tokio::test]
async fn a_new_listen_address_is_pushed() {
    init_tracing();
    let mut a = start_identify("a", true).await;
    let mut b = start_identify("b", true).await;
    let mut c = start_identify("c", true).await;
    a.swarm.dial(b.dial_addr()).unwrap();
    c.swarm.dial(a.dial_addr()).unwrap();
    let a_peer = a.peer();
    {
        let mut nodes = [&mut a, &mut b, &mut c];
        drive(&mut nodes, |n| {
            n[1].swarm.behaviour().info(&a_peer).is_some()
                && n[2].swarm.behaviour().info(&a_peer).is_some()
                && received(&n[0].events).len() >= 2
        })
        .await;
    }

    // a listens on a second address: b and c receive a push carrying it.
    let listener = a.swarm.listen_on(LOOPBACK.parse().unwrap()).unwrap();
    let pushed_with = |events: &[SwarmEvent<Event>], addr: &Multiaddr, present: bool| {
        events.iter().any(|e| match e {
            SwarmEvent::Behaviour(Event::Pushed { peer, info, .. }) => {
                *peer == a_peer && info.listen_addrs.contains(addr) == present
            }
            _ => false,
        })
    };
    let mut nodes = [&mut a, &mut b, &mut c];
    drive(&mut nodes, |n| {
        n[0].events
            .iter()
            .any(|e| matches!(e, SwarmEvent::NewListenAddr { .. }))
    })
    .await;
    let new_addr = nodes[0]
        .events
        .iter()
        .find_map(|e| match e {
            SwarmEvent::NewListenAddr { address, .. } => Some(address.clone()),
            _ => None,
        })
        .unwrap();
    drive(&mut nodes, |n| {
        pushed_with(&n[1].events, &new_addr, true) && pushed_with(&n[2].events, &new_addr, true)
    })
    .await;
    let first = nodes[0].addr.clone();
    for n in &nodes[1..] {
        let info = n.swarm.behaviour().info(&a_peer).unwrap();
        assert!(info.listen_addrs.contains(&new_addr) && info.listen_addrs.contains(&first));
        // The pushed address also went to the swarm.
        assert!(n.events.iter().any(|e| matches!(
            e,
            SwarmEvent::NewExternalAddrOfPeer { peer_id, address }
                if *peer_id == a_peer && *address == new_addr
        )));
    }
    assert!(nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, SwarmEvent::Behaviour(Event::PushSent { .. }))));

    // Closing the listener pushes again, without the address.
    for n in nodes.iter_mut() {
        n.events.clear();
    }
    assert!(nodes[0].swarm.remove_listener(listener));
    drive(&mut nodes, |n| {
        pushed_with(&n[1].events, &new_addr, false) && pushed_with(&n[2].events, &new_addr, false)
    })
    .await;
    let info = nodes[1].swarm.behaviour().info(&a_peer).unwrap();
    assert_eq!(info.listen_addrs, vec![first]);
}

#[tokio::test]
async fn without_push_nothing_is_pushed() {
    init_tracing();
    let mut a = start_identify("a", false).await;
    let mut b = start_identify("b", false).await;
    a.swarm.dial(b.dial_addr()).unwrap();
    let a_peer = a.peer();
    let mut nodes = [&mut a, &mut b];
    drive(&mut nodes, |n| {
        n[1].swarm.behaviour().info(&a_peer).is_some() && received(&n[0].events).len() == 1
    })
    .await;
    nodes[0].swarm.listen_on(LOOPBACK.parse().unwrap()).unwrap();
    drive_for(&mut nodes, Duration::from_millis(500)).await;
    assert!(!nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, SwarmEvent::Behaviour(Event::Pushed { .. }))));
    // An explicit push still works.
    let b_peer = nodes[1].peer();
    nodes[0].swarm.behaviour_mut().push([b_peer]);
    drive(&mut nodes, |n| {
        n[1].events
            .iter()
            .any(|e| matches!(e, SwarmEvent::Behaviour(Event::Pushed { .. })))
    })
    .await;
    assert_eq!(
        nodes[1]
            .swarm
            .behaviour()
            .info(&a_peer)
            .unwrap()
            .listen_addrs
            .len(),
        2
    );
}

#[tokio::test]
async fn periodic_reidentify() {
    init_tracing();
    let make = |name: &'static str| {
        move |key: &Keypair| {
            Behaviour::new(
                identify_node_config(key, name).with_interval(Duration::from_millis(300)),
            )
        }
    };
    let mut a = start(make("a")).await;
    let mut b = start(make("b")).await;
    a.swarm.dial(b.dial_addr()).unwrap();
    let mut nodes = [&mut a, &mut b];
    drive(&mut nodes, |n| {
        received(&n[0].events).len() >= 3 && received(&n[1].events).len() >= 3
    })
    .await;
    // All on one connection.
    let conns: HashSet<_> = received(&nodes[0].events)
        .iter()
        .map(|(_, c, _)| *c)
        .collect();
    assert_eq!(conns.len(), 1);
}

// ---- A raw peer that misbehaves -------------------------------------------------------------

/// Claims `/ipfs/id/1.0.0` and writes `answer` on every such stream; opens `push_streams`
/// push streams on every connection, writes half a length prefix on each, and reports when
/// each of them fails.
struct Raw {
    answer: Vec<u8>,
    push_streams: usize,
    queue: VecDeque<ToSwarm<RawEvent>>,
    futs: FuturesUnordered<BoxFuture<'static, RawEvent>>,
    waker: Option<Waker>,
}

#[derive(Debug)]
enum RawEvent {
    Answered,
    /// A push stream of ours ended (reset or closed by the remote) after this long.
    PushStreamEnded(Duration),
}

impl Raw {
    fn new(answer: Vec<u8>, push_streams: usize) -> Self {
        Raw {
            answer,
            push_streams,
            queue: VecDeque::new(),
            futs: FuturesUnordered::new(),
            waker: None,
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

async fn read_until_end(stream: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

impl NetworkBehaviour for Raw {
    type Event = RawEvent;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL_NAME]
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionEstablished {
            peer, connection, ..
        } = event
        {
            for _ in 0..self.push_streams {
                self.queue.push_back(ToSwarm::OpenStream(
                    OpenStream::new(peer, PUSH_PROTOCOL_NAME)
                        .on_connection(connection)
                        .no_dial(),
                ));
            }
            self.wake();
        }
    }

    fn on_inbound_stream(&mut self, mut inbound: InboundStream) {
        let answer = self.answer.clone();
        self.futs.push(
            async move {
                let _ = inbound.stream.write_all(&answer).await;
                let _ = inbound.stream.close().await;
                RawEvent::Answered
            }
            .boxed(),
        );
        self.wake();
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Ok(out) = result.result else {
            return;
        };
        let mut stream = out.stream;
        self.futs.push(
            async move {
                let start = Instant::now();
                // Half a length prefix, then wait for the remote to give up on us.
                let _ = stream.write_all(&[0x80]).await;
                let _ = stream.flush().await;
                read_until_end(&mut stream).await;
                RawEvent::PushStreamEnded(start.elapsed())
            }
            .boxed(),
        );
        self.wake();
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<RawEvent>> {
        self.waker = Some(cx.waker().clone());
        if let Some(cmd) = self.queue.pop_front() {
            return Poll::Ready(cmd);
        }
        if let Poll::Ready(Some(ev)) = self.futs.poll_next_unpin(cx) {
            return Poll::Ready(ToSwarm::GenerateEvent(ev));
        }
        Poll::Pending
    }
}

/// Drives an identify node and a raw node until the identify node reports an error.
async fn identify_error_from_raw(answer: Vec<u8>) -> Error {
    let mut id = start_identify("id", false).await;
    let mut raw = start(|_| Raw::new(answer, 0)).await;
    id.swarm.dial(raw.dial_addr()).unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let ev = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                ev = id.swarm.next_event() => Some(ev),
                _ = raw.swarm.next_event() => None,
            }
        })
        .await
        .expect("an identify error");
        match ev {
            Some(SwarmEvent::Behaviour(Event::Error { peer, error, .. })) => {
                assert_eq!(peer, raw.peer());
                assert!(id.swarm.behaviour().info(&peer).is_none());
                return error;
            }
            Some(SwarmEvent::Behaviour(Event::Received { .. })) => panic!("bogus info accepted"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn an_oversized_message_is_an_error() {
    init_tracing();
    // A length prefix of 1 MB, then a little garbage.
    let mut answer = vec![0x80, 0x80, 0x40];
    answer.extend_from_slice(&[0xaa; 100]);
    let error = identify_error_from_raw(answer).await;
    assert!(
        matches!(
            error,
            Error::Frame(FrameError::TooLarge {
                len: 1_048_576,
                max: 4096
            })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_foreign_public_key_is_an_error() {
    init_tracing();
    let other = Keypair::generate();
    let msg = wire::Identify {
        public_key: Some(other.public().encode_protobuf()),
        agent_version: Some("liar/1.0".into()),
        ..Default::default()
    };
    let error = identify_error_from_raw(encode_frame(&msg, 4096).unwrap()).await;
    match error {
        Error::PublicKeyMismatch { actual, .. } => assert_eq!(actual, other.peer_id()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbage_and_truncation_are_errors() {
    init_tracing();
    let error = identify_error_from_raw(vec![4, 0x32, 9, b'x', b'y']).await;
    assert!(matches!(error, Error::Decode(_)), "{error:?}");
    let error = identify_error_from_raw(vec![10, 0x32, 8, b'x']).await;
    assert!(
        matches!(error, Error::Frame(FrameError::Truncated)),
        "{error:?}"
    );
    let error = identify_error_from_raw(Vec::new()).await;
    assert!(matches!(error, Error::NoMessage), "{error:?}");
}

#[tokio::test]
async fn inbound_streams_per_connection_are_bounded() {
    init_tracing();
    const OPENED: usize = MAX_INBOUND_STREAMS_PER_CONNECTION + 2;
    let timeout = Duration::from_secs(3);
    // Pushes are taken back to back here: this test is about the bound on streams.
    let mut id = start(|key| {
        Behaviour::new(
            identify_node_config(key, "id")
                .with_timeout(timeout)
                .with_min_push_interval(Duration::ZERO),
        )
    })
    .await;
    let mut raw = start(|_| Raw::new(Vec::new(), OPENED)).await;
    raw.swarm.dial(id.dial_addr()).unwrap();

    let mut ended: Vec<Duration> = Vec::new();
    let mut timeouts = 0;
    let deadline = tokio::time::Instant::now() + T;
    while ended.len() < OPENED || timeouts < MAX_INBOUND_STREAMS_PER_CONNECTION {
        let ev = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                ev = id.swarm.next_event() => (Some(ev), None),
                ev = raw.swarm.next_event() => (None, Some(ev)),
            }
        })
        .await
        .expect("all push streams end");
        match ev {
            (
                Some(SwarmEvent::Behaviour(Event::Error {
                    error: Error::Timeout(_),
                    ..
                })),
                _,
            ) => timeouts += 1,
            (_, Some(SwarmEvent::Behaviour(RawEvent::PushStreamEnded(after)))) => ended.push(after),
            _ => {}
        }
    }
    ended.sort();
    // The extra streams were reset at once; the others when the exchange timed out.
    let early = ended.iter().filter(|d| **d < timeout / 2).count();
    assert_eq!(
        early,
        OPENED - MAX_INBOUND_STREAMS_PER_CONNECTION,
        "{ended:?}"
    );
    assert_eq!(timeouts, MAX_INBOUND_STREAMS_PER_CONNECTION);
}

#[tokio::test]
async fn pushes_sooner_than_the_interval_wait_their_turn() {
    init_tracing();
    const OPENED: usize = 3;
    let timeout = Duration::from_secs(2);
    let interval = Duration::from_secs(1);
    let mut id = start(|key| {
        Behaviour::new(
            identify_node_config(key, "id")
                .with_timeout(timeout)
                .with_min_push_interval(interval),
        )
    })
    .await;
    let mut raw = start(|_| Raw::new(Vec::new(), OPENED)).await;
    raw.swarm.dial(id.dial_addr()).unwrap();
    let mut ended: Vec<Duration> = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    while ended.len() < OPENED {
        let ev = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                _ = id.swarm.next_event() => None,
                ev = raw.swarm.next_event() => Some(ev),
            }
        })
        .await
        .expect("the push streams end");
        if let Some(SwarmEvent::Behaviour(RawEvent::PushStreamEnded(after))) = ev {
            ended.push(after);
        }
    }
    // Each push is read in its turn, one interval after the previous one, and then times
    // out (the raw peer sends half a length prefix): the streams end an interval apart.
    ended.sort();
    assert!(ended[0] >= timeout, "{ended:?}");
    for pair in ended.windows(2) {
        assert!(pair[1] - pair[0] >= interval * 9 / 10, "{ended:?}");
    }
    assert_eq!(id.swarm.behaviour().pushes_delayed(), (OPENED - 1) as u64);
}
