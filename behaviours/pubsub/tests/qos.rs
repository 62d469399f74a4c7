//! QoS 1 on loopback QUIC swarms (pubsub + identify, so peers learn who speaks
//! `/meshwire/pubsub/qos/1.0.0`): the publisher's per-peer data queue holds one message, so a
//! burst of 50 QoS 1 messages loses 49 gossip copies to each subscriber; the QoS subscriber
//! still gets all 50 exactly once through retransmissions and acknowledges every one, while
//! the plain subscriber (no identify: never expected) keeps only what gossip brought it.

// The derive's `QnEvent::Identify` payload is never read here.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use futures::AsyncWriteExt;
use meshwire_core::{Keypair, PeerId};
use meshwire_pubsub::engine::InvalidReason;
use meshwire_pubsub::metrics::GossipsubMetrics;
use meshwire_pubsub::qos::QosConfig;
use meshwire_pubsub::qos::QosWireError;
use meshwire_pubsub::{Behaviour, Config, Event, MessageId, Qos, TopicHash, QOS_PROTOCOL};
use meshwire_swarm::toolkit::{FrameError, Outbox, Tasks};
use meshwire_swarm::{
    DialOpts, Multiaddr, NetworkBehaviour, OpenStream, Swarm, SwarmConfig, SwarmEvent, SwarmHandle,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

const TOPIC: &str = "qos";

#[derive(NetworkBehaviour)]
struct Qn {
    pubsub: Behaviour,
    identify: meshwire_identify::Behaviour,
}

struct Node<B: NetworkBehaviour> {
    peer: PeerId,
    addr: Multiaddr,
    handle: SwarmHandle<B>,
    events: mpsc::Receiver<SwarmEvent<B::Event>>,
}

fn config() -> Config {
    Config::default()
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_heartbeat_initial_delay(Duration::from_millis(100))
        .with_qos(QosConfig {
            ack_timeout: Duration::from_millis(500),
            max_retransmissions: 5,
            ..QosConfig::default()
        })
}

async fn start<B: NetworkBehaviour>(key: Keypair, behaviour: B) -> Node<B> {
    let peer = key.peer_id();
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

fn qos_node(key: &Keypair, config: Config) -> Qn {
    Qn {
        pubsub: Behaviour::new(key, config).expect("config"),
        identify: meshwire_identify::Behaviour::new(meshwire_identify::Config::from_public_key(
            key.public(),
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_subscriber_gets_every_message_once_though_its_gossip_copies_are_dropped() {
    // The publisher keeps one data RPC per peer: a burst overflows every subscriber's queue.
    let key = Keypair::generate();
    let mut pubsub = Behaviour::new(&key, config().with_max_queued_messages(1)).unwrap();
    let mut registry = Registry::default();
    let metrics = GossipsubMetrics::register(&mut registry, 8);
    pubsub.set_metrics(metrics);
    let identify =
        meshwire_identify::Behaviour::new(meshwire_identify::Config::from_public_key(key.public()));
    let mut publisher = start(key, Qn { pubsub, identify }).await;
    let key = Keypair::generate();
    let mut sub = start(key.clone(), qos_node(&key, config())).await;
    let key = Keypair::generate();
    let mut plain = start(key.clone(), Behaviour::new(&key, config()).unwrap()).await;
    for b in [
        (sub.peer, sub.addr.clone()),
        (plain.peer, plain.addr.clone()),
    ] {
        publisher
            .handle
            .dial(DialOpts::peer(b.0).address(b.1))
            .await
            .expect("dial");
    }
    sub.handle
        .with_behaviour(|b| b.pubsub.subscribe(TOPIC))
        .await
        .unwrap();
    plain
        .handle
        .with_behaviour(|b| b.subscribe(TOPIC))
        .await
        .unwrap();
    // Publish once both subscriptions, and the subscriber's QoS protocol, are known.
    let (s, p) = (sub.peer, plain.peer);
    let mut tries = 0;
    loop {
        let ready = publisher
            .handle
            .with_behaviour(move |b| {
                let e = b.pubsub.engine();
                let topic = TopicHash::from(TOPIC);
                e.topic_peers(&topic).count() == 2 && e.peer_qos(&s) && !e.peer_qos(&p)
            })
            .await
            .unwrap();
        if ready {
            break;
        }
        tries += 1;
        assert!(tries < 200, "subscriptions or protocols never learnt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = 50usize;
    let ids: Vec<MessageId> = publisher
        .handle
        .with_behaviour(move |b| {
            (0..total)
                .map(|k| {
                    b.pubsub
                        .publish_with(TOPIC, vec![k as u8; 200], Qos::AtLeastOnce)
                        .expect("publish")
                })
                .collect()
        })
        .await
        .unwrap();
    // The verdicts.
    let mut delivered: HashMap<MessageId, Vec<PeerId>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while delivered.len() < total {
        let event = tokio::time::timeout_at(deadline, publisher.events.recv())
            .await
            .expect("every verdict within 30 s")
            .expect("publisher running");
        match event {
            SwarmEvent::Behaviour(QnEvent::Pubsub(Event::QosDelivered { message_id, acked })) => {
                delivered.insert(message_id, acked);
            }
            SwarmEvent::Behaviour(QnEvent::Pubsub(Event::QosDeliveryFailed {
                message_id,
                failed,
                ..
            })) => panic!("{message_id:?} failed for {failed:?}"),
            _ => {}
        }
    }
    for id in &ids {
        assert_eq!(delivered.get(id), Some(&vec![sub.peer]), "{id:?}");
    }
    // The subscriber: every message, once (a further second for stray duplicates).
    let mut got: HashMap<Vec<u8>, usize> = HashMap::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, sub.events.recv()).await {
        if let SwarmEvent::Behaviour(QnEvent::Pubsub(Event::Message { message, .. })) = event {
            *got.entry(message.data).or_default() += 1;
        }
    }
    assert_eq!(got.len(), total, "distinct messages at the QoS subscriber");
    assert!(got.values().all(|n| *n == 1), "a message delivered twice");
    let mut plain_got = 0;
    while let Ok(event) = plain.events.try_recv() {
        if let SwarmEvent::Behaviour(Event::Message { .. }) = event {
            plain_got += 1;
        }
    }
    let (stats, dropped) = publisher
        .handle
        .with_behaviour(move |b| {
            let e = b.pubsub.engine();
            (e.qos_stats(), e.queue_stats(&s).map(|q| q.dropped_messages))
        })
        .await
        .unwrap();
    let dropped = dropped.unwrap();
    assert!(dropped > 0, "the gossip path dropped nothing");
    assert!(
        stats.retransmissions >= dropped,
        "{stats:?}, {dropped} dropped"
    );
    assert_eq!(stats.acks_received, total as u64);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(&format!("pubsub_qos_delivered_total {total}")));
    assert!(text.contains(&format!(
        "pubsub_qos_retransmissions_total {}",
        stats.retransmissions
    )));
    println!(
        "qos: {total} messages, {dropped} gossip copies dropped for the QoS subscriber, \
         {} retransmissions, {} acks; plain subscriber got {plain_got}",
        stats.retransmissions, stats.acks_received
    );
}

/// A raw peer writing given bytes on fresh QoS streams.
#[derive(Default)]
struct Raw {
    outbox: Outbox<(), Vec<u8>>,
    tasks: Tasks<PeerId, Result<(), FrameError>>,
}

impl NetworkBehaviour for Raw {
    type Event = ();
    fn protocols(&self) -> Vec<meshwire_swarm::StreamProtocol> {
        vec![]
    }
    fn on_outbound_stream(&mut self, res: meshwire_swarm::OutboundStreamResult) {
        if let Some(bytes) = self.outbox.take_stream(res.id) {
            let Ok(out) = res.result else { return };
            let mut stream = out.stream;
            let _ = self
                .tasks
                .try_push(res.peer, Duration::from_secs(10), async move {
                    stream.write_all(&bytes).await?;
                    stream.close().await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_qos_frames_are_typed_errors_counted_against_the_sender() {
    let key = Keypair::generate();
    let mut node = start(key.clone(), Behaviour::new(&key, config()).unwrap()).await;
    let raw = start(Keypair::generate(), Raw::default()).await;
    let (target, addr) = (node.peer, node.addr.clone());
    raw.handle
        .dial(DialOpts::peer(target).address(addr))
        .await
        .expect("dial");
    let frames: Vec<Vec<u8>> = vec![
        // A length prefix announcing 1 MiB (over max_transmit_size).
        vec![0x80, 0x80, 0x40],
        // A body that is not protobuf.
        vec![3, 0xff, 0xff, 0xff],
        // An empty frame.
        vec![0],
    ];
    for bytes in frames {
        raw.handle
            .with_behaviour(move |b| {
                b.outbox
                    .open_stream(OpenStream::new(target, QOS_PROTOCOL), bytes)
                    .unwrap();
            })
            .await
            .unwrap();
    }
    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reasons.len() < 3 {
        let event = tokio::time::timeout_at(deadline, node.events.recv())
            .await
            .expect("three invalid frames reported")
            .expect("node running");
        if let SwarmEvent::Behaviour(Event::Invalid {
            reason: InvalidReason::Qos(e),
            ..
        }) = event
        {
            reasons.push(e);
        }
    }
    assert!(reasons.contains(&QosWireError::TooLarge {
        len: 1 << 20,
        max: 65_536
    }));
    assert!(reasons
        .iter()
        .any(|e| matches!(e, QosWireError::Protobuf(_))));
    assert!(reasons.contains(&QosWireError::Empty));
    let raw_peer = raw.peer;
    let invalid = node
        .handle
        .with_behaviour(move |b| b.engine().invalid_messages(&raw_peer))
        .await
        .unwrap();
    assert_eq!(invalid, 3);
}
