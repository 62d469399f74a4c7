//! meshwire's gossipsub against rust-libp2p 0.57's (`libp2p-gossipsub`, strict signing and
//! validation on both sides) on loopback QUIC, in one mesh:
//!
//! - `gossipsub_mixed_mesh_*`: 5 meshwire and 5 rust-libp2p nodes, every pair connected;
//!   a message published by each of the ten reaches the nine others, with the author the
//!   publisher (signatures verified by every receiver of the other implementation) and the
//!   message id the one the publisher computed (both implementations name messages alike).
//!   The meshwire nodes score their peers: no libp2p peer ends below 0, and they earn
//!   credit.
//! - `gossipsub_v1_0_*`: a rust-libp2p node speaking `/meshsub/1.0.0` only, with two
//!   meshwire nodes: messages flow every way and meshwire knows the peer as v1.0.
//! - `gossipsub_wildcard_*`: realm-scoped topics (`<realm>/<topic>`) are plain topics to
//!   rust-libp2p: its messages reach a meshwire `sensors.#` pattern subscriber through a
//!   meshwire exact subscriber, once, and the pattern subscriber's own messages reach it.
//! - `gossipsub_qos_*`: the QoS 1 mark (an unknown protobuf field on the RPC) forced onto a
//!   meshwire publisher's copies to rust-libp2p: rust-libp2p delivers each message once and
//!   keeps the stream, never acknowledges (it does not speak `/meshwire/pubsub/qos/1.0.0`),
//!   and the publisher reports the failure after its bounded retransmissions.
//! - `gossipsub_choking_*`: the mixed mesh with choking on in the meshwire nodes (a meshwire
//!   extension: CHOKE/UNCHOKE in unknown `ControlMessage` fields, a support flag next to the
//!   subscriptions): meshwire nodes choke only each other — rust-libp2p never announced
//!   support — and six rounds of ten messages still reach every node once.
//! - `gossipsub_line_*`: the ten nodes in a line alternating implementations, no flood
//!   publishing: every message crosses the line hop by hop through the meshes, so each
//!   implementation forwards the other's messages.
//! - `gossipsub_idontwant_*`: IDONTWANT on `/meshsub/1.2.0` both ways, in a square where one
//!   corner holds each message for validation (and never forwards it) and the opposite corner
//!   forwards it 500 ms late: the late copy reaches the fourth node, which must not send it to
//!   the holder, because the holder said IDONTWANT on its first receipt — a large message
//!   (2,000 bytes, over both implementations' 1,000-byte threshold) is not sent, a small one
//!   (no IDONTWANT) is, which shows the observation works. Observed through rust-libp2p's
//!   metrics (IDONTWANT received, copies received) and meshwire's (duplicates, copies
//!   suppressed).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub as lp_gs;
use libp2p::swarm::SwarmEvent as LpSwarmEvent;
use libp2p::SwarmBuilder;
use meshwire_core::{Keypair, PeerId};
use meshwire_pubsub::qos::QosConfig;
use meshwire_pubsub::{
    Acceptance, Behaviour, ChokeConfig, Config, Event, GossipsubMetrics, PeerKind, PeerScoreParams,
    Qos, TopicHash, TopicScoreParams,
};
use meshwire_swarm::{DialOpts, Swarm, SwarmConfig, SwarmEvent, SwarmHandle};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::Multiaddr;
use tokio::sync::mpsc;

const TOPIC: &str = "interop/gossip";
const HEARTBEAT: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(30);

fn mw_peer(p: &libp2p::PeerId) -> PeerId {
    PeerId::from_bytes(&p.to_bytes()).expect("peer id bytes")
}

fn lp_addr(a: &Multiaddr) -> libp2p::Multiaddr {
    a.to_string().parse().expect("address")
}

fn mw_addr(a: &libp2p::Multiaddr) -> Multiaddr {
    a.to_string().parse().expect("address")
}

/// A message as a receiver saw it: data, author, message id.
type Receipt = (Vec<u8>, PeerId, Vec<u8>);

/// One node of either implementation, running on its own task.
enum Node {
    Mw {
        peer: PeerId,
        addr: Multiaddr,
        handle: SwarmHandle<Behaviour>,
    },
    Lp {
        peer: PeerId,
        addr: Multiaddr,
        commands: mpsc::UnboundedSender<LpCommand>,
    },
}

type LpCommand = Box<dyn FnOnce(&mut libp2p::Swarm<lp_gs::Behaviour>) + Send>;

impl Node {
    fn peer(&self) -> PeerId {
        match self {
            Node::Mw { peer, .. } | Node::Lp { peer, .. } => *peer,
        }
    }

    fn addr(&self) -> Multiaddr {
        match self {
            Node::Mw { addr, .. } | Node::Lp { addr, .. } => addr.clone(),
        }
    }

    async fn lp_call<R: Send + 'static>(
        commands: &mpsc::UnboundedSender<LpCommand>,
        f: impl FnOnce(&mut libp2p::Swarm<lp_gs::Behaviour>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = tokio::sync::oneshot::channel();
        commands
            .send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .expect("libp2p node running");
        rx.await.expect("libp2p node answered")
    }

    async fn dial(&self, to: &Node) {
        match self {
            Node::Mw { handle, .. } => {
                handle
                    .dial(DialOpts::peer(to.peer()).address(to.addr()))
                    .await
                    .expect("meshwire dial");
            }
            Node::Lp { commands, .. } => {
                let addr = lp_addr(&to.addr());
                Self::lp_call(commands, move |s| s.dial(addr).expect("libp2p dial")).await;
            }
        }
    }

    async fn subscribe(&self) {
        self.subscribe_to(TOPIC).await;
    }

    async fn subscribe_to(&self, topic: &'static str) {
        match self {
            Node::Mw { handle, .. } => {
                assert!(handle
                    .with_behaviour(move |b| b.subscribe(topic))
                    .await
                    .unwrap());
            }
            Node::Lp { commands, .. } => {
                let subscribed = Self::lp_call(commands, move |s| {
                    s.behaviour_mut().subscribe(&lp_gs::IdentTopic::new(topic))
                })
                .await;
                assert!(matches!(subscribed, Ok(true)));
            }
        }
    }

    /// Publishes `data`, retrying while no peer is known to subscribe; the message id.
    async fn publish(&self, data: Vec<u8>) -> Vec<u8> {
        self.publish_on(TOPIC, data).await
    }

    /// [`Self::publish`] on `topic`.
    async fn publish_on(&self, topic: &'static str, data: Vec<u8>) -> Vec<u8> {
        for _ in 0..200 {
            let d = data.clone();
            let id = match self {
                Node::Mw { handle, .. } => handle
                    .with_behaviour(move |b| b.publish(topic, d))
                    .await
                    .unwrap()
                    .map(|id| id.0)
                    .ok(),
                Node::Lp { commands, .. } => Self::lp_call(commands, move |s| {
                    s.behaviour_mut().publish(lp_gs::IdentTopic::new(topic), d)
                })
                .await
                .map(|id| id.0)
                .ok(),
            };
            if let Some(id) = id {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not publish from {}", self.peer());
    }
}

/// Scoring for the test topic: first deliveries count (P2, decaying slowly so one message
/// still shows at the end of the test), invalid messages cost (P4), no mesh delivery quota
/// (P3 off: the test is too short and quiet for one); P5–P7 at defaults.
fn score_params() -> PeerScoreParams {
    let mut params = PeerScoreParams::default();
    params.topics.insert(
        TOPIC.into(),
        TopicScoreParams {
            first_message_deliveries_decay: 0.99,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            ..TopicScoreParams::default()
        },
    );
    params
}

async fn meshwire_node(
    flood_publish: bool,
    receipts: mpsc::UnboundedSender<(PeerId, Receipt)>,
) -> Node {
    let config = Config::default()
        .with_heartbeat_interval(HEARTBEAT)
        .with_heartbeat_initial_delay(HEARTBEAT)
        .with_flood_publish(flood_publish)
        .with_score_params(Some(score_params()));
    meshwire_node_with(config, receipts).await
}

async fn meshwire_node_with(
    config: Config,
    receipts: mpsc::UnboundedSender<(PeerId, Receipt)>,
) -> Node {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let behaviour = Behaviour::new(&key, config).expect("config");
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let (handle, mut events) = swarm.spawn();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let SwarmEvent::Behaviour(Event::Message {
                message,
                message_id,
                ..
            }) = event
            {
                let source = message.source.expect("strict: signed");
                let _ = receipts.send((peer, (message.data, source, message_id.0)));
            }
        }
    });
    Node::Mw { peer, addr, handle }
}

async fn libp2p_node(
    flood_publish: bool,
    receipts: mpsc::UnboundedSender<(PeerId, Receipt)>,
) -> Node {
    libp2p_node_speaking(flood_publish, false, receipts).await
}

/// A rust-libp2p node; `v1_0_only` makes it speak `/meshsub/1.0.0` alone (an old peer).
async fn libp2p_node_speaking(
    flood_publish: bool,
    v1_0_only: bool,
    receipts: mpsc::UnboundedSender<(PeerId, Receipt)>,
) -> Node {
    let swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let mut builder = lp_gs::ConfigBuilder::default();
            builder
                .heartbeat_interval(HEARTBEAT)
                .heartbeat_initial_delay(HEARTBEAT)
                .validation_mode(lp_gs::ValidationMode::Strict)
                .flood_publish(flood_publish);
            if v1_0_only {
                builder.protocol_id("/meshsub/1.0.0", lp_gs::Version::V1_0);
            }
            let config = builder.build().expect("gossipsub config");
            lp_gs::Behaviour::new(lp_gs::MessageAuthenticity::Signed(key.clone()), config)
                .expect("gossipsub")
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let peer = mw_peer(swarm.local_peer_id());
    drive_lp(swarm, move |ev| {
        if let LpSwarmEvent::Behaviour(lp_gs::Event::Message {
            message,
            message_id,
            ..
        }) = ev
        {
            let source = mw_peer(&message.source.expect("strict: signed"));
            let _ = receipts.send((peer, (message.data, source, message_id.0)));
        }
    })
    .await
}

/// Listens on loopback and runs `swarm` on its own task, handing every event to `on_event`
/// and running the node's commands; the node's handle.
async fn drive_lp(
    mut swarm: libp2p::Swarm<lp_gs::Behaviour>,
    mut on_event: impl FnMut(LpSwarmEvent<lp_gs::Event>) + Send + 'static,
) -> Node {
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let LpSwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let peer = mw_peer(swarm.local_peer_id());
    let (commands, mut rx) = mpsc::unbounded_channel::<LpCommand>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(f) => f(&mut swarm),
                    None => break,
                },
                ev = swarm.select_next_some() => on_event(ev),
            }
        }
    });
    Node::Lp {
        peer,
        addr: mw_addr(&addr),
        commands,
    }
}

/// Subscribes all, publishes one message from each, and checks that every node received the
/// nine others' messages with the publisher's author and id.
async fn run(nodes: &[Node], receipts: mpsc::UnboundedReceiver<(PeerId, Receipt)>) {
    run_rounds(nodes, receipts, 1).await;
}

/// [`run`] with `rounds` messages from each node, two heartbeats apart.
async fn run_rounds(
    nodes: &[Node],
    mut receipts: mpsc::UnboundedReceiver<(PeerId, Receipt)>,
    rounds: usize,
) {
    for n in nodes {
        n.subscribe().await;
    }
    // Subscriptions travel and meshes form over a few heartbeats.
    tokio::time::sleep(HEARTBEAT * 6).await;
    let mut published: HashMap<Vec<u8>, (PeerId, Vec<u8>)> = HashMap::new();
    for round in 0..rounds {
        if round > 0 {
            tokio::time::sleep(HEARTBEAT * 2).await;
        }
        for (i, n) in nodes.iter().enumerate() {
            let data = if round == 0 {
                format!("message {i} from {}", n.peer()).into_bytes()
            } else {
                format!("message {i} of round {round} from {}", n.peer()).into_bytes()
            };
            let id = n.publish(data.clone()).await;
            published.insert(data, (n.peer(), id));
        }
    }
    let mut got: HashMap<PeerId, HashSet<Vec<u8>>> = HashMap::new();
    let expected = (nodes.len() - 1) * rounds;
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes
        .iter()
        .any(|n| got.get(&n.peer()).map_or(0, |s| s.len()) < expected)
    {
        let Ok(Some((receiver, (data, source, id)))) =
            tokio::time::timeout_at(deadline, receipts.recv()).await
        else {
            let counts: Vec<usize> = nodes
                .iter()
                .map(|n| got.get(&n.peer()).map_or(0, |s| s.len()))
                .collect();
            panic!("not every message arrived in time: per node {counts:?}");
        };
        let (author, published_id) = published.get(&data).expect("a message we published");
        assert_eq!(
            &source,
            author,
            "author of {:?}",
            String::from_utf8_lossy(&data)
        );
        assert_eq!(
            &id, published_id,
            "both implementations compute the same message id"
        );
        assert_ne!(receiver, *author, "no delivery to the publisher");
        assert!(
            got.entry(receiver).or_default().insert(data),
            "a message delivered twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossipsub_mixed_mesh_five_meshwire_five_libp2p() {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(meshwire_node(true, tx.clone()).await);
        nodes.push(libp2p_node(true, tx.clone()).await);
    }
    for a in 0..nodes.len() {
        for b in a + 1..nodes.len() {
            nodes[a].dial(&nodes[b]).await;
        }
    }
    run(&nodes, rx).await;
    // Every meshwire node's mesh holds libp2p peers too (mesh degree within D_lo..=D_hi of 9).
    for n in &nodes {
        if let Node::Mw { handle, .. } = n {
            let lp: HashSet<PeerId> = nodes
                .iter()
                .filter(|m| matches!(m, Node::Lp { .. }))
                .map(Node::peer)
                .collect();
            let mesh: Vec<PeerId> = handle
                .with_behaviour(|b| b.engine().mesh_peers(&TOPIC.into()).copied().collect())
                .await
                .unwrap();
            assert!((5..=12).contains(&mesh.len()), "mesh of {}", mesh.len());
            assert!(
                mesh.iter().any(|p| lp.contains(p)),
                "no libp2p peer in the mesh"
            );
            // With scoring on, no libp2p peer lost score (its messages all verified and were
            // valid), and libp2p peers earned credit (time in mesh, first deliveries). Which
            // peer delivers a given message first is a race, so not every one need have.
            let scores: Vec<f64> = handle
                .with_behaviour(move |b| {
                    lp.iter()
                        .map(|p| b.engine().peer_score(p).unwrap_or(-1.0))
                        .collect()
                })
                .await
                .unwrap();
            assert!(
                scores.iter().all(|s| *s >= 0.0) && scores.iter().any(|s| *s > 0.0),
                "scores of libp2p peers {scores:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossipsub_choking_meshwire_nodes_keep_libp2p_peers_served() {
    // 5 meshwire nodes with choking on (at most 2 unchoked mesh peers, any judged peer
    // chokeable) and 5 rust-libp2p nodes, fully connected: meshwire nodes choke each other,
    // never a libp2p peer (which never announced support), and every message still reaches
    // every node once.
    let (tx, rx) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for _ in 0..5 {
        let config = Config::default()
            .with_heartbeat_interval(HEARTBEAT)
            .with_heartbeat_initial_delay(HEARTBEAT)
            .with_score_params(Some(score_params()))
            .with_choke(ChokeConfig {
                enabled: true,
                min_unchoked: 1,
                max_unchoked: 2,
                min_samples: 2.0,
                late_ratio: 1.0,
                ..ChokeConfig::default()
            });
        nodes.push(meshwire_node_with(config, tx.clone()).await);
        nodes.push(libp2p_node(true, tx.clone()).await);
    }
    for a in 0..nodes.len() {
        for b in a + 1..nodes.len() {
            nodes[a].dial(&nodes[b]).await;
        }
    }
    run_rounds(&nodes, rx, 6).await;
    let mw: HashSet<PeerId> = nodes
        .iter()
        .filter(|m| matches!(m, Node::Mw { .. }))
        .map(Node::peer)
        .collect();
    let mut chokes = 0;
    for n in &nodes {
        if let Node::Mw { handle, peer, .. } = n {
            let all: Vec<PeerId> = nodes.iter().map(Node::peer).filter(|p| p != peer).collect();
            let (support, choked, stats) = handle
                .with_behaviour(move |b| {
                    let e = b.engine();
                    let support: Vec<(PeerId, bool)> =
                        all.iter().map(|p| (*p, e.peer_supports_choke(p))).collect();
                    (support, e.choked_peers(&TOPIC.into()), e.choke_stats())
                })
                .await
                .unwrap();
            for (p, s) in support {
                assert_eq!(s, mw.contains(&p), "support flag of {p}");
            }
            assert!(
                choked.iter().all(|p| mw.contains(p)),
                "a libp2p peer choked"
            );
            chokes += stats.chokes_sent;
        }
    }
    assert!(chokes > 0, "no meshwire node choked another");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossipsub_line_alternating_implementations_forwards_through_meshes() {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(meshwire_node(false, tx.clone()).await);
        nodes.push(libp2p_node(false, tx.clone()).await);
    }
    for a in 0..nodes.len() - 1 {
        nodes[a].dial(&nodes[a + 1]).await;
    }
    run(&nodes, rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossipsub_v1_0_libp2p_peer_joins_the_mesh() {
    // Two meshwire nodes and a rust-libp2p node speaking /meshsub/1.0.0 only.
    let (tx, rx) = mpsc::unbounded_channel();
    let nodes = vec![
        meshwire_node(true, tx.clone()).await,
        meshwire_node(true, tx.clone()).await,
        libp2p_node_speaking(true, true, tx.clone()).await,
    ];
    for a in 0..nodes.len() {
        for b in a + 1..nodes.len() {
            nodes[a].dial(&nodes[b]).await;
        }
    }
    run(&nodes, rx).await;
    let old = nodes[2].peer();
    for n in &nodes[..2] {
        if let Node::Mw { handle, .. } = n {
            let kind = handle
                .with_behaviour(move |b| b.engine().peer_kind(&old))
                .await
                .unwrap();
            assert_eq!(kind, Some(PeerKind::Gossipsub1_0));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossipsub_wildcard_subscriber_gets_libp2p_messages_through_meshwire() {
    const KITCHEN: &str = "org.example.interop/sensors.kitchen.temp";
    const GARAGE: &str = "org.example.interop/sensors.garage.temp";
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lp = libp2p_node(true, tx.clone()).await;
    let exact = meshwire_node(true, tx.clone()).await;
    let pattern = meshwire_node(true, tx.clone()).await;
    lp.dial(&exact).await;
    lp.dial(&pattern).await;
    exact.dial(&pattern).await;
    lp.subscribe_to(GARAGE).await;
    exact.subscribe_to(KITCHEN).await;
    pattern.subscribe_to("org.example.interop/sensors.#").await;
    tokio::time::sleep(HEARTBEAT * 6).await;
    // rust-libp2p publishes on a topic only the exact subscriber is in; the pattern
    // subscriber gets it from the exact one. The pattern subscriber publishes on the garage
    // topic rust-libp2p is in.
    lp.publish_on(KITCHEN, b"21.5".to_vec()).await;
    pattern.publish_on(GARAGE, b"12.0".to_vec()).await;
    let mut got: Vec<(PeerId, Vec<u8>, PeerId)> = Vec::new();
    let deadline = tokio::time::Instant::now() + HEARTBEAT * 15;
    while let Ok(Some((receiver, (data, source, _)))) =
        tokio::time::timeout_at(deadline, rx.recv()).await
    {
        got.push((receiver, data, source));
    }
    got.sort();
    let mut expected = vec![
        (exact.peer(), b"21.5".to_vec(), lp.peer()),
        (pattern.peer(), b"21.5".to_vec(), lp.peer()),
        (lp.peer(), b"12.0".to_vec(), pattern.peer()),
    ];
    expected.sort();
    assert_eq!(got, expected, "each message once at each subscriber");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossipsub_qos_mark_is_ignored_by_libp2p_which_never_acks() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lp = libp2p_node(true, tx.clone()).await;
    let retries = 2;
    let config = Config::default()
        .with_heartbeat_interval(HEARTBEAT)
        .with_heartbeat_initial_delay(HEARTBEAT)
        .with_qos(QosConfig {
            ack_timeout: Duration::from_millis(200),
            max_retransmissions: retries,
            ..QosConfig::default()
        });
    let mw = meshwire_node_with(config, tx).await;
    mw.dial(&lp).await;
    lp.subscribe().await;
    let Node::Mw { handle, .. } = &mw else {
        unreachable!()
    };
    let lp_peer = lp.peer();
    let mut tries = 0;
    loop {
        let known = handle
            .with_behaviour(move |b| {
                b.engine()
                    .topic_peers(&TopicHash::from(TOPIC))
                    .any(|p| *p == lp_peer)
            })
            .await
            .unwrap();
        if known {
            break;
        }
        tries += 1;
        assert!(tries < 100, "libp2p's subscription never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Force the mark onto our copies to rust-libp2p, as if it had announced the protocol.
    let ids: Vec<Vec<u8>> = handle
        .with_behaviour(move |b| {
            b.set_peer_qos(&lp_peer, true);
            (0..3u8)
                .map(|k| {
                    b.publish_with(TOPIC, vec![b'q', k], Qos::AtLeastOnce)
                        .expect("publish")
                        .0
                })
                .collect()
        })
        .await
        .unwrap();
    // Window: 200 + 400 + 800 ms; then a plain message on the same stream.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let plain = mw.publish(b"plain".to_vec()).await;
    let mut got: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let deadline = tokio::time::Instant::now() + HEARTBEAT * 10;
    while got.len() < 4 {
        let Ok(Some((receiver, (data, _, id)))) =
            tokio::time::timeout_at(deadline, rx.recv()).await
        else {
            panic!("rust-libp2p got {got:?}");
        };
        assert_eq!(receiver, lp_peer);
        got.push((data, id));
    }
    let mut expected: Vec<(Vec<u8>, Vec<u8>)> = (0..3u8)
        .map(|k| (vec![b'q', k], ids[k as usize].clone()))
        .collect();
    expected.push((b"plain".to_vec(), plain));
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "each message once, the mark ignored");
    let stats = handle
        .with_behaviour(|b| b.engine().qos_stats())
        .await
        .unwrap();
    assert_eq!(stats.acks_received, 0);
    assert_eq!(stats.failed, 3);
    assert_eq!(stats.retransmissions, 3 * u64::from(retries));
}

/// What a node does with the messages it receives (`gossipsub_idontwant_*`).
#[derive(Clone, Copy)]
enum Hold {
    /// Forwards them at once (no validation hook).
    No,
    /// Holds them for validation, never decided: never forwarded.
    Forever,
    /// Holds them and accepts them this long after they arrived.
    For(Duration),
}

/// A meshwire node for the IDONTWANT tests, with its metrics.
async fn meshwire_holding(hold: Hold) -> (Node, GossipsubMetrics) {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let config = Config::default()
        .with_heartbeat_interval(HEARTBEAT)
        .with_heartbeat_initial_delay(HEARTBEAT)
        .with_validate_messages(!matches!(hold, Hold::No))
        // IDONTWANT ids are kept `idontwant_ttl` heartbeats (default 3, go-libp2p's): at this
        // test's 200 ms heartbeat that is 400–600 ms after arrival, and the late corner's copy
        // comes `LATE` (500 ms) after the IDONTWANT — the default forgot it first in about 1
        // run in 4. 15 heartbeats (3 s) outlast the square's timings.
        .with_idontwant_ttl(15);
    let mut behaviour = Behaviour::new(&key, config).expect("config");
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = GossipsubMetrics::register(&mut registry, 4);
    behaviour.set_metrics(metrics.clone());
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let (handle, mut events) = swarm.spawn();
    let accepter = handle.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let (
                SwarmEvent::Behaviour(Event::Message {
                    propagation_source,
                    message_id,
                    ..
                }),
                Hold::For(delay),
            ) = (event, hold)
            {
                let h = accepter.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = h
                        .with_behaviour(move |b| {
                            b.report_message_validation_result(
                                &message_id,
                                &propagation_source,
                                Acceptance::Accept,
                            )
                        })
                        .await;
                });
            }
        }
    });
    (Node::Mw { peer, addr, handle }, metrics)
}

/// A rust-libp2p node for the IDONTWANT tests (its default protocols, 1.2 with meshwire),
/// with its metrics registry; with `hold` it validates messages and never decides.
async fn libp2p_holding(hold: bool) -> (Node, prometheus_client_libp2p::registry::Registry) {
    let mut registry = prometheus_client_libp2p::registry::Registry::default();
    let swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let mut builder = lp_gs::ConfigBuilder::default();
            builder
                .heartbeat_interval(HEARTBEAT)
                .heartbeat_initial_delay(HEARTBEAT)
                .validation_mode(lp_gs::ValidationMode::Strict);
            if hold {
                builder.validate_messages();
            }
            let config = builder.build().expect("gossipsub config");
            lp_gs::Behaviour::new(lp_gs::MessageAuthenticity::Signed(key.clone()), config)
                .expect("gossipsub")
                .with_metrics(&mut registry, lp_gs::MetricsConfig::default())
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let node = drive_lp(swarm, |_| {}).await;
    (node, registry)
}

/// A counter of rust-libp2p's gossipsub metrics, summed over its labels.
fn lp_counter(registry: &prometheus_client_libp2p::registry::Registry, name: &str) -> u64 {
    let mut text = String::new();
    prometheus_client_libp2p::encoding::text::encode(&mut text, registry).expect("encode");
    text.lines()
        .filter(|l| {
            l.starts_with(&format!("{name}_total{{")) || l.starts_with(&format!("{name}_total "))
        })
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// How long after publishing the late copy has surely gone round the square.
const SQUARE_SETTLE: Duration = Duration::from_millis(1500);
/// The late corner's delay.
const LATE: Duration = Duration::from_millis(500);
const SMALL: usize = 200;
const LARGE: usize = 2000;

/// Connects the square a—b—c—d—a, subscribes all and waits for the meshes.
async fn square(nodes: [&Node; 4]) {
    for (a, b) in [(0, 1), (1, 2), (2, 3), (3, 0)] {
        nodes[a].dial(nodes[b]).await;
    }
    for n in nodes {
        n.subscribe().await;
    }
    tokio::time::sleep(HEARTBEAT * 8).await;
}

async fn mw_kind(node: &Node, of: PeerId) -> Option<PeerKind> {
    let Node::Mw { handle, .. } = node else {
        unreachable!()
    };
    handle
        .with_behaviour(move |b| b.engine().peer_kind(&of))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossipsub_idontwant_from_meshwire_is_honoured_by_libp2p() {
    // publisher — holder (meshwire, holds forever) — rust-libp2p — late (meshwire) — publisher.
    let (publisher, _) = meshwire_holding(Hold::No).await;
    let (holder, holder_metrics) = meshwire_holding(Hold::Forever).await;
    let (lp, lp_registry) = libp2p_holding(false).await;
    let (late, _) = meshwire_holding(Hold::For(LATE)).await;
    square([&publisher, &holder, &lp, &late]).await;
    assert_eq!(
        mw_kind(&holder, lp.peer()).await,
        Some(PeerKind::Gossipsub1_2)
    );
    let topic = TopicHash::from(TOPIC);
    // Small: no IDONTWANT; rust-libp2p forwards the late copy to the holder.
    publisher.publish(vec![1; SMALL]).await;
    tokio::time::sleep(SQUARE_SETTLE).await;
    assert_eq!(lp_counter(&lp_registry, "idontwant_msgs"), 0);
    assert_eq!(
        holder_metrics.duplicate_count(&topic),
        1,
        "small: the late copy"
    );
    // Large: the holder says IDONTWANT on receipt; rust-libp2p takes it and sends nothing.
    publisher.publish(vec![2; LARGE]).await;
    tokio::time::sleep(SQUARE_SETTLE).await;
    assert_eq!(
        holder_metrics.duplicate_count(&topic),
        1,
        "large: rust-libp2p did not send the late copy"
    );
    assert_eq!(
        lp_counter(&lp_registry, "topic_msg_recv_counts"),
        2,
        "rust-libp2p got both messages"
    );
    assert!(holder_metrics.idontwant_sent_count() >= 1);
    assert!(
        lp_counter(&lp_registry, "idontwant_msgs") >= 1,
        "rust-libp2p got IDONTWANT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossipsub_idontwant_from_libp2p_is_honoured_by_meshwire() {
    // publisher — holder (rust-libp2p, holds forever) — meshwire — late (meshwire) — publisher.
    let (publisher, _) = meshwire_holding(Hold::No).await;
    let (lp, lp_registry) = libp2p_holding(true).await;
    let (mw, mw_metrics) = meshwire_holding(Hold::No).await;
    let (late, _) = meshwire_holding(Hold::For(LATE)).await;
    square([&publisher, &lp, &mw, &late]).await;
    assert_eq!(mw_kind(&mw, lp.peer()).await, Some(PeerKind::Gossipsub1_2));
    let copies = || lp_counter(&lp_registry, "topic_msg_recv_counts_unfiltered");
    // Small: rust-libp2p gets the publisher's copy and meshwire's late one.
    publisher.publish(vec![1; SMALL]).await;
    tokio::time::sleep(SQUARE_SETTLE).await;
    assert_eq!(copies(), 2, "small: both copies");
    assert_eq!(mw_metrics.idontwant_received_count(), 0);
    // Large: rust-libp2p says IDONTWANT on receipt; meshwire does not send the late copy.
    publisher.publish(vec![2; LARGE]).await;
    tokio::time::sleep(SQUARE_SETTLE).await;
    assert_eq!(copies(), 3, "large: the publisher's copy only");
    assert!(
        mw_metrics.idontwant_received_count() >= 1,
        "meshwire got IDONTWANT"
    );
    assert!(mw_metrics.idontwant_suppressed_count() >= 1);
}
