//! Wildcard subscribers on loopback QUIC swarms: a `sensors.#` and a `sensors.*.temp`
//! subscriber get the messages published on matching topics first used after they
//! subscribed, exactly once each, and nothing from another realm.

use std::time::Duration;

use meshwire_core::{Keypair, PeerId};
use meshwire_pubsub::topic::{wire_pattern, Pattern, Realm, TopicName};
use meshwire_pubsub::{Behaviour, Config, Event};
use meshwire_swarm::{DialOpts, Multiaddr, Swarm, SwarmConfig, SwarmEvent, SwarmHandle};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use tokio::sync::mpsc;

struct Node {
    peer: PeerId,
    addr: Multiaddr,
    handle: SwarmHandle<Behaviour>,
    events: mpsc::Receiver<SwarmEvent<Event>>,
}

async fn start() -> Node {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let config = Config::default()
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_heartbeat_initial_delay(Duration::from_millis(100));
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

/// Every message event arriving at `node` within `within`: (topic, data).
async fn drain(node: &mut Node, within: Duration) -> Vec<(String, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, node.events.recv()).await {
        if let SwarmEvent::Behaviour(Event::Message { message, .. }) = event {
            got.push((message.topic.as_str().to_string(), message.data));
        }
    }
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscribers_get_new_matching_topics_once() {
    let realm: Realm = "org.example.home".parse().unwrap();
    let other: Realm = "org.example.office".parse().unwrap();
    let publisher = start().await;
    let mut all = start().await; // sensors.#
    let mut temps = start().await; // sensors.*.temp
    for (a, b) in [(&publisher, &all), (&publisher, &temps), (&all, &temps)] {
        a.handle
            .dial(DialOpts::peer(b.peer).address(b.addr.clone()))
            .await
            .expect("dial");
    }
    let (r1, r2) = (realm.clone(), realm.clone());
    all.handle
        .with_behaviour(move |b| b.subscribe_pattern(&r1, &"sensors.#".parse::<Pattern>().unwrap()))
        .await
        .unwrap();
    temps
        .handle
        .with_behaviour(move |b| {
            b.subscribe_pattern(&r2, &"sensors.*.temp".parse::<Pattern>().unwrap())
        })
        .await
        .unwrap();
    // Publish once both patterns have reached the publisher.
    let mut tries = 0;
    loop {
        let r = realm.clone();
        let known = publisher
            .handle
            .with_behaviour(move |b| {
                ["sensors.#", "sensors.*.temp"].iter().all(|p| {
                    let topic = wire_pattern(&r, &p.parse().unwrap());
                    b.engine().topic_peers(&topic).count() == 1
                })
            })
            .await
            .unwrap();
        if known {
            break;
        }
        tries += 1;
        assert!(tries < 100, "patterns never announced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sends = [
        (realm.clone(), "sensors.kitchen.temp", "21.5"),
        (realm.clone(), "sensors.garage.temp", "12.0"),
        (realm.clone(), "sensors.kitchen.humidity", "40"),
        (other.clone(), "sensors.kitchen.temp", "office"),
    ];
    for (r, topic, data) in sends {
        let name: TopicName = topic.parse().unwrap();
        let expect_ok = r == realm;
        let result = publisher
            .handle
            .with_behaviour(move |b| b.publish_topic(&r, &name, data))
            .await
            .unwrap();
        // Nobody listens in the other realm: nothing to send to.
        assert_eq!(result.is_ok(), expect_ok, "{topic}: {result:?}");
    }
    let (got_all, got_temps) = tokio::join!(
        drain(&mut all, Duration::from_secs(3)),
        drain(&mut temps, Duration::from_secs(3))
    );
    let t = |topic: &str, data: &str| {
        (
            format!("org.example.home/{topic}"),
            data.as_bytes().to_vec(),
        )
    };
    assert_eq!(
        got_all,
        vec![
            t("sensors.garage.temp", "12.0"),
            t("sensors.kitchen.humidity", "40"),
            t("sensors.kitchen.temp", "21.5"),
        ]
    );
    assert_eq!(
        got_temps,
        vec![
            t("sensors.garage.temp", "12.0"),
            t("sensors.kitchen.temp", "21.5")
        ]
    );
}
