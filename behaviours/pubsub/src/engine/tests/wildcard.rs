//! Wildcard subscriptions and realms on the engine: pattern subscribers get messages on
//! topics first used after they subscribed, once each; realms never mix.

use super::*;

fn wt(s: &str) -> TopicHash {
    TopicHash::from(s)
}

/// (topic, data) of every message delivered at node `i`.
fn delivered(net: &mut Net, i: usize) -> Vec<(String, Vec<u8>)> {
    let mut got: Vec<(String, Vec<u8>)> = net
        .messages(i)
        .into_iter()
        .map(|m| (m.topic.as_str().to_string(), m.data))
        .collect();
    got.sort();
    got
}

fn pair(topic: &str, data: &str) -> (String, Vec<u8>) {
    (topic.to_string(), data.as_bytes().to_vec())
}

#[test]
fn pattern_subscribers_get_matching_new_topics_exactly_once() {
    let mut net = Net::new(4, |_| fast());
    net.connect_all();
    net.nodes[1].subscribe(net.now, wt("org.a/sensors.#"));
    net.nodes[2].subscribe(net.now, wt("org.a/sensors.*.temp"));
    // Node 3 subscribes to both overlapping patterns and to the exact topic.
    for t in [
        "org.a/sensors.#",
        "org.a/sensors.*.temp",
        "org.a/sensors.kitchen.temp",
    ] {
        net.nodes[3].subscribe(net.now, wt(t));
    }
    net.advance(Duration::from_secs(2));
    for i in 0..4 {
        net.events(i);
    }
    // Topics nobody used before: published by a node subscribed to nothing.
    for (t, d) in [
        ("org.a/sensors.kitchen.temp", "k"),
        ("org.a/sensors.garage.humidity", "h"),
        ("org.a/sensors", "s"),
        ("org.a/other.kitchen.temp", "o"),
    ] {
        let result = net.nodes[0].publish(net.now, wt(t), d.as_bytes().to_vec());
        assert_eq!(result.is_ok(), t != "org.a/other.kitchen.temp", "{t}");
        net.deliver();
    }
    net.advance(Duration::from_secs(2));
    assert_eq!(
        delivered(&mut net, 1),
        vec![
            pair("org.a/sensors", "s"),
            pair("org.a/sensors.garage.humidity", "h"),
            pair("org.a/sensors.kitchen.temp", "k"),
        ]
    );
    assert_eq!(
        delivered(&mut net, 2),
        vec![pair("org.a/sensors.kitchen.temp", "k")]
    );
    // Three matching subscriptions, one delivery per message.
    assert_eq!(
        delivered(&mut net, 3),
        vec![
            pair("org.a/sensors", "s"),
            pair("org.a/sensors.garage.humidity", "h"),
            pair("org.a/sensors.kitchen.temp", "k"),
        ]
    );
}

#[test]
fn a_pattern_subscriber_gets_messages_forwarded_through_a_topic_mesh() {
    // 0 - 1 - 2 - 3: the publisher (0) and the pattern subscriber (3) are two hops apart,
    // the exact subscriber (1) and another pattern subscriber (2) between them.
    let mut net = Net::new(4, |_| fast());
    net.connect(0, 1);
    net.connect(1, 2);
    net.connect(2, 3);
    net.nodes[1].subscribe(net.now, wt("org.a/chat.room1"));
    net.nodes[2].subscribe(net.now, wt("org.a/chat.*"));
    net.nodes[3].subscribe(net.now, wt("org.a/#"));
    net.advance(Duration::from_secs(2));
    for i in 0..4 {
        net.events(i);
    }
    net.nodes[0]
        .publish(net.now, wt("org.a/chat.room1"), b"hi".to_vec())
        .unwrap();
    net.advance(Duration::from_secs(1));
    for i in 1..4 {
        assert_eq!(
            delivered(&mut net, i),
            vec![pair("org.a/chat.room1", "hi")],
            "node {i}"
        );
    }
}

#[test]
fn realms_never_mix() {
    let mut net = Net::new(4, |_| fast());
    net.connect_all();
    net.nodes[1].subscribe(net.now, wt("org.a/chat"));
    net.nodes[2].subscribe(net.now, wt("org.b/chat"));
    net.nodes[3].subscribe(net.now, wt("org.b/#"));
    net.advance(Duration::from_secs(2));
    for i in 0..4 {
        net.events(i);
    }
    net.nodes[0]
        .publish(net.now, wt("org.a/chat"), b"for a".to_vec())
        .unwrap();
    net.nodes[0]
        .publish(net.now, wt("org.b/chat"), b"for b".to_vec())
        .unwrap();
    net.advance(Duration::from_secs(1));
    assert_eq!(delivered(&mut net, 1), vec![pair("org.a/chat", "for a")]);
    assert_eq!(delivered(&mut net, 2), vec![pair("org.b/chat", "for b")]);
    assert_eq!(delivered(&mut net, 3), vec![pair("org.b/chat", "for b")]);
}

#[test]
fn patterns_per_peer_are_bounded_and_plain_topics_are_not_patterns() {
    let mut net = Net::new(2, |_| GossipsubConfig {
        max_patterns_per_peer: 1,
        ..fast()
    });
    net.connect(0, 1);
    net.nodes[1].subscribe(net.now, wt("org.a/x.#"));
    net.nodes[1].subscribe(net.now, wt("org.a/y.#"));
    // Without a realm, `#` is just a character of a plain gossipsub topic.
    net.nodes[1].subscribe(net.now, wt("z.#"));
    net.advance(Duration::from_secs(1));
    net.events(1);
    assert!(net.nodes[0]
        .publish(net.now, wt("org.a/x.1"), b"x".to_vec())
        .is_ok());
    // Node 0 recorded only the first pattern: nothing to send this one to.
    assert_eq!(
        net.nodes[0].publish(net.now, wt("org.a/y.1"), b"y".to_vec()),
        Err(PublishError::NoPeersSubscribedToTopic)
    );
    assert_eq!(
        net.nodes[0].publish(net.now, wt("z.1"), b"z".to_vec()),
        Err(PublishError::NoPeersSubscribedToTopic)
    );
    net.advance(Duration::from_secs(1));
    assert_eq!(delivered(&mut net, 1), vec![pair("org.a/x.1", "x")]);
}

#[test]
fn unsubscribing_a_pattern_stops_delivery() {
    let mut net = Net::new(2, |_| fast());
    net.connect(0, 1);
    net.nodes[1].subscribe(net.now, wt("org.a/x.#"));
    net.advance(Duration::from_secs(1));
    assert!(net.nodes[0]
        .publish(net.now, wt("org.a/x.1"), b"1".to_vec())
        .is_ok());
    net.advance(Duration::from_secs(1));
    assert_eq!(delivered(&mut net, 1), vec![pair("org.a/x.1", "1")]);
    net.nodes[1].unsubscribe(net.now, &wt("org.a/x.#"));
    net.advance(Duration::from_secs(1));
    assert_eq!(
        net.nodes[0].publish(net.now, wt("org.a/x.2"), b"2".to_vec()),
        Err(PublishError::NoPeersSubscribedToTopic)
    );
    // Even a message sent to it regardless is no longer taken.
    let msg = sign::sign(
        &Keypair::from_seed_for_tests(99),
        5,
        "org.a/x.3".into(),
        b"3".to_vec(),
    );
    net.inject(
        0,
        1,
        Rpc {
            publish: vec![msg],
            ..Rpc::default()
        },
    );
    assert!(delivered(&mut net, 1).is_empty());
}

#[test]
fn a_pattern_subscriber_recovers_a_message_lost_on_the_eager_path_through_gossip() {
    // 0 publishes on a topic nobody subscribes to exactly; 1 matches it with a pattern, but
    // every message 0 sends it is lost. 0's heartbeat gossips the id (IHAVE), 1 asks for it
    // (IWANT) and gets it: once.
    let mut net = Net::new(2, |_| fast());
    net.connect(0, 1);
    net.nodes[1].subscribe(net.now, wt("org.a/sensors.#"));
    net.advance(Duration::from_secs(1));
    net.events(1);
    net.drop_data.insert((0, 1));
    net.nodes[0]
        .publish(net.now, wt("org.a/sensors.kitchen.temp"), b"21".to_vec())
        .unwrap();
    net.deliver();
    assert!(delivered(&mut net, 1).is_empty(), "the eager copy was lost");
    net.drop_data.clear();
    net.advance(Duration::from_secs(2));
    assert_eq!(
        delivered(&mut net, 1),
        vec![pair("org.a/sensors.kitchen.temp", "21")]
    );
    let ihaves: Vec<ControlIHave> = net.sent(0, 1).flat_map(|r| control(r).ihave).collect();
    assert!(ihaves
        .iter()
        .any(|i| i.topic_id.as_deref() == Some("org.a/sensors.kitchen.temp")));
    assert!(net.sent(1, 0).any(|r| !control(r).iwant.is_empty()));
    // More heartbeats: the gossip goes on while the message is in the gossip windows, but
    // nothing is delivered twice.
    net.advance(Duration::from_secs(5));
    assert!(delivered(&mut net, 1).is_empty());
}

#[test]
fn pattern_gossip_is_bounded_and_only_for_matching_topics() {
    // 0 has ten pattern neighbours; with gossip_lazy 3 and gossip_factor 0.25, each topic
    // is gossiped to max(3, 2) = 3 of them per heartbeat, and a non-matching topic to none.
    let mut net = Net::new(12, |_| GossipsubConfig {
        gossip_lazy: 3,
        ..fast()
    });
    for i in 1..12 {
        net.connect(0, i);
    }
    for i in 1..11 {
        net.nodes[i].subscribe(net.now, wt("org.a/sensors.#"));
    }
    net.nodes[11].subscribe(net.now, wt("org.a/other"));
    net.advance(Duration::from_secs(1));
    for i in 0..12 {
        net.events(i);
    }
    net.log.clear();
    net.nodes[0]
        .publish(net.now, wt("org.a/sensors.x"), b"x".to_vec())
        .unwrap();
    net.nodes[0]
        .publish(net.now, wt("org.a/other"), b"o".to_vec())
        .unwrap();
    net.deliver();
    net.log.clear();
    // One heartbeat.
    net.advance(Duration::from_millis(1000));
    let gossiped: Vec<usize> = (1..12)
        .filter(|i| {
            net.sent(0, *i).any(|r| {
                control(r)
                    .ihave
                    .iter()
                    .any(|h| h.topic_id.as_deref() == Some("org.a/sensors.x"))
            })
        })
        .collect();
    assert_eq!(gossiped.len(), 3, "{gossiped:?}");
    assert!(gossiped.iter().all(|i| *i <= 10));
    assert!(net.sent(0, 11).all(|r| control(r).ihave.is_empty()));
}
