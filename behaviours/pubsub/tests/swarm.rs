//! Gossipsub swarms on loopback QUIC: meshes form, messages from every node reach every
//! subscriber (flooded, and through the mesh alone on a line), and a peer sending garbage is
//! counted without disturbing the others.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::AsyncWriteExt;
use meshwire_core::{Keypair, PeerId};
use meshwire_pubsub::{Behaviour, Config, Event, InvalidReason, TopicHash};
use meshwire_swarm::{
    DialOpts, Multiaddr, OpenStream, Swarm, SwarmConfig, SwarmEvent, SwarmHandle,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use tokio::sync::mpsc;

const TOPIC: &str = "meshwire/test";

struct Node {
    peer: PeerId,
    addr: Multiaddr,
    handle: SwarmHandle<Behaviour>,
    events: mpsc::Receiver<SwarmEvent<Event>>,
}

fn config(flood_publish: bool) -> Config {
    Config::default()
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_heartbeat_initial_delay(Duration::from_millis(100))
        .with_flood_publish(flood_publish)
}

async fn start(config: Config) -> Node {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let behaviour = Behaviour::new(&key, config).expect("config");
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("transport");
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let (handle, events) = swarm.spawn();
    Node {
        peer,
        addr,
        handle,
        events,
    }
}

async fn dial(from: &Node, to: &Node) {
    from.handle
        .dial(DialOpts::peer(to.peer).address(to.addr.clone()))
        .await
        .expect("dial");
}

/// Waits until `n` messages have arrived at each node in `expect` (by node index), collecting
/// (data, source) per node.
async fn collect(
    nodes: &mut [Node],
    expect: usize,
    within: Duration,
) -> Vec<HashSet<(Vec<u8>, PeerId)>> {
    let mut got: Vec<HashSet<(Vec<u8>, PeerId)>> = vec![HashSet::new(); nodes.len()];
    let deadline = tokio::time::Instant::now() + within;
    while got.iter().any(|g| g.len() < expect) {
        let polls = nodes
            .iter_mut()
            .enumerate()
            .map(|(i, n)| Box::pin(async move { (i, n.events.recv().await) }));
        let next = tokio::time::timeout_at(deadline, futures::future::select_all(polls)).await;
        let Ok(((i, event), _, _)) = next else {
            break;
        };
        if let Some(SwarmEvent::Behaviour(Event::Message { message, .. })) = event {
            assert_eq!(message.topic, TopicHash::from(TOPIC));
            got[i].insert((message.data, message.source.expect("signed")));
        }
    }
    got
}

async fn subscribe_all(nodes: &[Node]) {
    for n in nodes {
        assert!(n
            .handle
            .with_behaviour(|b| b.subscribe(TOPIC))
            .await
            .unwrap());
    }
}

/// Publishes one message from each node, retrying while it has no subscribed peer yet.
async fn publish_from_each(nodes: &[Node]) {
    for (i, n) in nodes.iter().enumerate() {
        let data = format!("from {i}").into_bytes();
        let mut tries = 0;
        loop {
            let d = data.clone();
            match n
                .handle
                .with_behaviour(move |b| b.publish(TOPIC, d))
                .await
                .unwrap()
            {
                Ok(_) => break,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("publish from {i}: {e}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_swarms_fully_connected_deliver_every_message() {
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(start(config(true)).await);
    }
    for a in 0..5 {
        for b in a + 1..5 {
            dial(&nodes[a], &nodes[b]).await;
        }
    }
    subscribe_all(&nodes).await;
    // Let subscriptions and grafts settle over a few heartbeats.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for n in &nodes {
        let mesh = n
            .handle
            .with_behaviour(|b| b.engine().mesh_peers(&TopicHash::from(TOPIC)).count())
            .await
            .unwrap();
        assert_eq!(mesh, 4, "every other node in the mesh (fewer than D)");
    }
    publish_from_each(&nodes).await;
    let got = collect(&mut nodes, 4, Duration::from_secs(10)).await;
    let peers: Vec<PeerId> = nodes.iter().map(|n| n.peer).collect();
    for (i, g) in got.iter().enumerate() {
        let expected: HashSet<(Vec<u8>, PeerId)> = (0..5)
            .filter(|j| *j != i)
            .map(|j| (format!("from {j}").into_bytes(), peers[j]))
            .collect();
        assert_eq!(g, &expected, "node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_of_swarms_forwards_through_the_mesh() {
    // 0 - 1 - 2 - 3 - 4, no flood publishing: messages travel hop by hop through meshes.
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(start(config(false)).await);
    }
    for a in 0..4 {
        dial(&nodes[a], &nodes[a + 1]).await;
    }
    subscribe_all(&nodes).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    publish_from_each(&nodes).await;
    let got = collect(&mut nodes, 4, Duration::from_secs(10)).await;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.len(), 4, "node {i} got {g:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_peer_is_counted_and_the_mesh_keeps_working() {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start(config(true)).await);
    }
    dial(&nodes[0], &nodes[1]).await;
    dial(&nodes[0], &nodes[2]).await;
    subscribe_all(&nodes).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A raw peer opens /meshsub/1.1.0 streams to node 0 and writes: a malformed protobuf,
    // then (on a new stream) a frame announcing more than max_transmit_size.
    let key = Keypair::generate();
    let attacker = key.peer_id();
    let transport = QuicTransport::new(key, QuicConfig::default()).unwrap();
    // It accepts /meshsub streams (and holds them), as a gossipsub peer would: a peer refusing
    // node 0's stream is dropped from the engine, and its count with it.
    let raw_behaviour = Raw {
        accept: true,
        ..Raw::default()
    };
    let mut raw: Swarm<Raw> = Swarm::new(transport, raw_behaviour, SwarmConfig::default());
    raw.add_peer_address(nodes[0].peer, nodes[0].addr.clone());
    for frame in [
        vec![3u8, 0x08, 0x01, 0x00], // length 3, field 1 with the varint wire type
        vec![0x80, 0x80, 0x08],      // length 131,072 > 65,536
    ] {
        raw.behaviour_mut().send(nodes[0].peer, frame);
    }
    let drive = tokio::spawn(async move {
        loop {
            raw.next_event().await;
        }
    });
    let mut invalid = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while invalid.len() < 2 {
        let ev = tokio::time::timeout_at(deadline, nodes[0].events.recv())
            .await
            .expect("invalid frames reported");
        if let Some(SwarmEvent::Behaviour(Event::Invalid { peer, reason })) = ev {
            assert_eq!(peer, attacker);
            let kind = match reason {
                InvalidReason::Decode(meshwire_pubsub::wire::WireError::Protobuf(_)) => "protobuf",
                InvalidReason::Decode(meshwire_pubsub::wire::WireError::TooLarge { .. }) => "large",
                other => panic!("unexpected {other:?}"),
            };
            invalid.insert(kind, ());
        }
    }
    // Read while the attacker is still connected: its disconnection may end its entry.
    let count = nodes[0]
        .handle
        .with_behaviour(move |b| b.engine().invalid_messages(&attacker))
        .await
        .unwrap();
    drive.abort();
    assert_eq!(count, 2);
    // The honest nodes still exchange messages.
    publish_from_each(&nodes).await;
    let got = collect(&mut nodes, 2, Duration::from_secs(10)).await;
    assert!(got.iter().all(|g| g.len() == 2), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_loses_its_own_messages_and_delays_nobody() {
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(start(config(true)).await);
    }
    dial(&nodes[0], &nodes[1]).await;
    subscribe_all(&nodes).await;
    // A raw subscriber of node 0 that never reads what node 0 sends it.
    let key = Keypair::generate();
    let stalled = key.peer_id();
    let transport = QuicTransport::new(key, QuicConfig::default()).unwrap();
    let raw = Raw {
        accept: true,
        ..Raw::default()
    };
    let mut raw: Swarm<Raw> = Swarm::new(transport, raw, SwarmConfig::default());
    raw.add_peer_address(nodes[0].peer, nodes[0].addr.clone());
    let subscribe = meshwire_pubsub::wire::Rpc {
        subscriptions: vec![meshwire_pubsub::wire::SubOpts {
            subscribe: Some(true),
            topic_id: Some(TOPIC.into()),
        }],
        ..Default::default()
    };
    raw.behaviour_mut().send(
        nodes[0].peer,
        meshwire_pubsub::wire::encode_frame(&subscribe),
    );
    let drive = tokio::spawn(async move {
        loop {
            raw.next_event().await;
        }
    });
    let topic = TopicHash::from(TOPIC);
    loop {
        let t = topic.clone();
        let known = nodes[0]
            .handle
            .with_behaviour(move |b| b.engine().topic_peers(&t).any(|p| *p == stalled))
            .await
            .unwrap();
        if known {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The fast peer's application reads its events all along.
    let total = 4000;
    let mut events = std::mem::replace(&mut nodes[1].events, mpsc::channel(1).1);
    let reader = tokio::spawn(async move {
        let mut got = HashSet::new();
        while got.len() < total {
            match events.recv().await {
                Some(SwarmEvent::Behaviour(Event::Message { message, .. })) => {
                    got.insert(message.data[..4].to_vec());
                }
                Some(_) => {}
                None => break,
            }
        }
        got.len()
    });
    // 4,000 messages of 1 KiB (more than the stalled peer's stream window and queues), in
    // batches so the fast peer's queue is drained between them.
    for batch in 0..40 {
        nodes[0]
            .handle
            .with_behaviour(move |b| {
                for k in 0..100 {
                    let mut data = vec![0u8; 1024];
                    data[..4].copy_from_slice(&((batch * 100 + k) as u32).to_be_bytes());
                    b.publish(TOPIC, data).expect("publish");
                }
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the fast peer got everything in time")
        .unwrap();
    assert_eq!(got, total);
    let stats = nodes[0]
        .handle
        .with_behaviour(move |b| b.engine().queue_stats(&stalled))
        .await
        .unwrap()
        .expect("the stalled peer is known");
    assert!(
        stats.dropped_messages > 0,
        "the stalled peer's own messages were dropped: {stats:?}"
    );
    assert!(stats.queued_messages <= 1024);
    println!("stalled peer: {stats:?}");
    drive.abort();
}

/// A raw peer writing given bytes on fresh `/meshsub/1.1.0` streams; with `accept`, it also
/// accepts the remote's streams and never reads them (a stalled reader).
#[derive(Default)]
struct Raw {
    outbox: meshwire_swarm::toolkit::Outbox<(), Vec<u8>>,
    tasks: meshwire_swarm::toolkit::Tasks<PeerId, Result<(), meshwire_swarm::toolkit::FrameError>>,
    accept: bool,
    held: Vec<meshwire_swarm::Stream>,
}

impl Raw {
    fn send(&mut self, peer: PeerId, bytes: Vec<u8>) {
        let req = OpenStream::new(peer, meshwire_pubsub::PROTOCOL_V1_1);
        self.outbox.open_stream(req, bytes).unwrap();
    }
}

impl meshwire_swarm::NetworkBehaviour for Raw {
    type Event = ();
    fn protocols(&self) -> Vec<meshwire_swarm::StreamProtocol> {
        if self.accept {
            vec![meshwire_pubsub::PROTOCOL_V1_1]
        } else {
            vec![]
        }
    }
    fn on_inbound_stream(&mut self, inbound: meshwire_swarm::InboundStream) {
        self.held.push(inbound.stream);
    }
    fn on_outbound_stream(&mut self, res: meshwire_swarm::OutboundStreamResult) {
        if let Some(bytes) = self.outbox.take_stream(res.id) {
            let Ok(out) = res.result else { return };
            let mut stream = out.stream;
            let _ = self
                .tasks
                .try_push(res.peer, Duration::from_secs(10), async move {
                    stream.write_all(&bytes).await?;
                    stream.flush().await?;
                    // Hold the stream open a little so the reader sees the frame, not a reset.
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    Ok(())
                });
        }
    }
    fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<meshwire_swarm::ToSwarm<()>> {
        if let std::task::Poll::Ready(c) = self.outbox.poll(cx) {
            return std::task::Poll::Ready(c);
        }
        while self.tasks.poll_result(cx).is_ready() {}
        std::task::Poll::Pending
    }
}
