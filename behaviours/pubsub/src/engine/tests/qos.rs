//! QoS 1 on engines: acknowledgements, retransmission under loss, duplicate suppression,
//! non-acking subscribers, bounds, hostile frames.

use std::collections::HashMap;

use super::*;
use crate::qos::{Qos, QosConfig, QosFrame, QosWireError};

/// Fast QoS: 500 ms to the first retransmission, `retries` retransmissions.
fn qos_config(retries: u32) -> GossipsubConfig {
    GossipsubConfig {
        duplicate_cache_time: Duration::from_secs(600),
        qos: QosConfig {
            ack_timeout: Duration::from_millis(500),
            max_retransmissions: retries,
            ..QosConfig::default()
        },
        ..fast()
    }
}

/// (delivered, failed) verdicts at node `i`, and the other events' messages.
struct Verdicts {
    delivered: Vec<(MessageId, Vec<PeerId>)>,
    failed: Vec<(MessageId, Vec<PeerId>, Vec<PeerId>)>,
}

fn verdicts(events: &[GossipsubEvent]) -> Verdicts {
    let mut v = Verdicts {
        delivered: Vec::new(),
        failed: Vec::new(),
    };
    for e in events {
        match e {
            GossipsubEvent::QosDelivered { message_id, acked } => {
                v.delivered.push((message_id.clone(), acked.clone()))
            }
            GossipsubEvent::QosDeliveryFailed {
                message_id,
                acked,
                failed,
            } => v
                .failed
                .push((message_id.clone(), acked.clone(), failed.clone())),
            _ => {}
        }
    }
    v
}

fn data_of(events: &[GossipsubEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            GossipsubEvent::Message { message, .. } => Some(message.data.clone()),
            _ => None,
        })
        .collect()
}

/// Advances until node `i` has `n` verdicts (or `limit` passes); returns its events.
fn until_verdicts(net: &mut Net, i: usize, n: usize, limit: Duration) -> Vec<GossipsubEvent> {
    let mut events = Vec::new();
    let end = net.now + limit;
    while net.now < end {
        net.advance(Duration::from_millis(500));
        events.extend(net.events(i));
        let v = verdicts(&events);
        if v.delivered.len() + v.failed.len() >= n {
            break;
        }
    }
    events
}

#[test]
fn qos1_under_loss_reaches_every_subscriber_exactly_once() {
    // 1 publisher, 8 subscribers, all meshwire; 20% of every RPC and QoS frame lost.
    let n = 9;
    let mut net = Net::new(n, |_| qos_config(8));
    net.connect_all();
    net.qos_all();
    net.subscribe_all();
    net.advance(Duration::from_secs(2));
    for i in 0..n {
        net.events(i);
    }
    net.loss = 0.20;
    let messages = 40;
    let mut others: Vec<Vec<GossipsubEvent>> = vec![Vec::new(); n];
    for k in 0..messages {
        net.nodes[0]
            .publish_with(
                net.now,
                topic(),
                format!("m{k}").into_bytes(),
                Qos::AtLeastOnce,
            )
            .unwrap();
        net.deliver();
    }
    let mut publisher = Vec::new();
    let end = net.now + Duration::from_secs(400);
    while net.now < end {
        net.advance(Duration::from_millis(500));
        publisher.extend(net.events(0));
        for (i, other) in others.iter_mut().enumerate().skip(1) {
            other.extend(net.events(i));
        }
        let v = verdicts(&publisher);
        if v.delivered.len() + v.failed.len() >= messages {
            break;
        }
    }
    let v = verdicts(&publisher);
    assert!(v.failed.is_empty(), "failed: {:?}", v.failed);
    assert_eq!(v.delivered.len(), messages);
    assert!(v.delivered.iter().all(|(_, acked)| acked.len() == n - 1));
    let mut lost = 0;
    for (i, other) in others.iter().enumerate().skip(1) {
        let got = data_of(other);
        let mut count: HashMap<Vec<u8>, usize> = HashMap::new();
        for d in got {
            *count.entry(d).or_default() += 1;
        }
        assert!(count.values().all(|c| *c == 1), "node {i} got a duplicate");
        lost += messages - count.len();
    }
    assert_eq!(lost, 0, "deliveries lost");
    let stats = net.nodes[0].qos_stats();
    println!(
        "qos under 20% loss: {messages} messages x {} subscribers, {} retransmissions, \
         {} acks sent by subscribers, {} acks received, 0 lost, 0 duplicated",
        n - 1,
        stats.retransmissions,
        (1..n)
            .map(|i| net.nodes[i].qos_stats().acks_sent)
            .sum::<u64>(),
        stats.acks_received
    );
    assert!(
        stats.retransmissions > 0,
        "the loss never needed a retransmission"
    );
    assert_eq!(stats.acks_received, (messages * (n - 1)) as u64);
    assert_eq!(net.nodes[0].qos_sizes(), Default::default());
}

#[test]
fn a_subscriber_whose_gossip_path_drops_everything_gets_each_message_once_by_retransmission() {
    // 0 - 1 (QoS subscriber) and 0 - 2 (a plain gossipsub subscriber, never expected). Every
    // message 0 sends 1 is lost, IWANT answers included: only QoS retransmissions reach it.
    let mut net = Net::new(3, |_| qos_config(3));
    net.connect(0, 1);
    net.connect(0, 2);
    let (p0, p1) = (net.ids[0], net.ids[1]);
    net.nodes[0].set_peer_qos(&p1, true);
    net.nodes[1].set_peer_qos(&p0, true);
    net.nodes[1].subscribe(net.now, topic());
    net.nodes[2].subscribe(net.now, topic());
    net.advance(Duration::from_secs(1));
    for i in 0..3 {
        net.events(i);
    }
    net.drop_data.insert((0, 1));
    let messages = 20;
    let mut ids = Vec::new();
    for k in 0..messages {
        ids.push(
            net.nodes[0]
                .publish_with(net.now, topic(), vec![k], Qos::AtLeastOnce)
                .unwrap(),
        );
    }
    net.deliver();
    let mut got1 = data_of(&net.events(1));
    assert!(got1.is_empty(), "the gossip copies were lost");
    let events = until_verdicts(&mut net, 0, messages as usize, Duration::from_secs(10));
    got1.extend(data_of(&net.events(1)));
    got1.sort();
    assert_eq!(got1, (0..messages).map(|k| vec![k]).collect::<Vec<_>>());
    let v = verdicts(&events);
    assert!(v.failed.is_empty());
    let mut delivered: Vec<MessageId> = v.delivered.iter().map(|(id, _)| id.clone()).collect();
    delivered.sort();
    ids.sort();
    assert_eq!(delivered, ids);
    assert!(v.delivered.iter().all(|(_, acked)| acked == &vec![p1]));
    // One retransmission each; the plain subscriber got the gossip copies and no QoS frame.
    assert_eq!(
        net.nodes[0].qos_stats().retransmissions,
        u64::from(messages)
    );
    assert_eq!(data_of(&net.events(2)).len(), usize::from(messages));
    assert!(net
        .qos_log
        .iter()
        .all(|(f, t, _)| (*f, *t) != (0, 2) && *f != 2));
}

#[test]
fn a_lost_ack_brings_a_retransmission_that_is_acknowledged_but_not_delivered_twice() {
    let mut net = Net::new(2, |_| qos_config(3));
    net.connect(0, 1);
    net.qos_all();
    net.nodes[1].subscribe(net.now, topic());
    net.advance(Duration::from_secs(1));
    net.events(0);
    net.events(1);
    // The first ack is lost.
    net.drop_qos.insert((1, 0));
    let id = net.nodes[0]
        .publish_with(net.now, topic(), b"once".to_vec(), Qos::AtLeastOnce)
        .unwrap();
    net.deliver();
    net.drop_qos.clear();
    let events = until_verdicts(&mut net, 0, 1, Duration::from_secs(5));
    assert_eq!(
        verdicts(&events).delivered,
        vec![(id.clone(), vec![net.ids[1]])]
    );
    assert_eq!(data_of(&net.events(1)), vec![b"once".to_vec()]);
    assert_eq!(net.nodes[0].qos_stats().retransmissions, 1);
    assert_eq!(net.nodes[1].qos_stats().acks_sent, 2);
    // The same retransmission replayed three more times: acknowledged, never delivered.
    let (_, _, frame) = net
        .qos_log
        .iter()
        .find(|(f, _, fr)| *f == 0 && !fr.messages.is_empty())
        .cloned()
        .unwrap();
    for _ in 0..3 {
        net.nodes[1].handle_qos_frame(net.now, net.ids[0], frame.clone());
    }
    assert!(data_of(&net.events(1)).is_empty());
    assert_eq!(net.nodes[1].qos_stats().acks_sent, 5);
    // Late acks for a settled message change nothing.
    net.deliver();
    assert!(verdicts(&net.events(0)).delivered.is_empty());
}

#[test]
fn a_silent_subscriber_fails_after_bounded_retransmissions_and_memory_stays_bounded() {
    let retries = 2;
    let mut net = Net::new(3, |_| GossipsubConfig {
        qos: QosConfig {
            max_outstanding: 16,
            ..qos_config(retries).qos
        },
        ..qos_config(retries)
    });
    net.connect(0, 1);
    net.connect(0, 2);
    net.qos_all();
    net.nodes[1].subscribe(net.now, topic());
    net.nodes[2].subscribe(net.now, topic());
    net.advance(Duration::from_secs(1));
    for i in 0..3 {
        net.events(i);
    }
    // Node 2 never acknowledges (everything it sends on the QoS protocol is lost).
    net.drop_qos.insert((2, 0));
    let mut published = 0;
    let mut busy = 0;
    for k in 0..200u32 {
        match net.nodes[0].publish_with(
            net.now,
            topic(),
            k.to_be_bytes().to_vec(),
            Qos::AtLeastOnce,
        ) {
            Ok(_) => published += 1,
            Err(PublishError::QosBusy(16)) => busy += 1,
            Err(e) => panic!("{e}"),
        }
        net.deliver();
        assert!(net.nodes[0].qos_sizes().outstanding <= 16);
    }
    assert_eq!((published, busy), (16, 184));
    let events = until_verdicts(&mut net, 0, 16, Duration::from_secs(10));
    let v = verdicts(&events);
    assert!(v.delivered.is_empty());
    assert_eq!(v.failed.len(), 16);
    let (p1, p2) = (net.ids[1], net.ids[2]);
    assert!(v
        .failed
        .iter()
        .all(|(_, acked, failed)| acked == &vec![p1] && failed == &vec![p2]));
    let stats = net.nodes[0].qos_stats();
    assert_eq!(stats.retransmissions, 16 * u64::from(retries));
    assert_eq!(stats.failed, 16);
    assert_eq!(net.nodes[0].qos_sizes(), Default::default());
    // Node 2 got each message once (retransmissions deduplicated).
    assert_eq!(data_of(&net.events(2)).len(), 16);
    // Room again.
    assert!(net.nodes[0]
        .publish_with(net.now, topic(), b"more".to_vec(), Qos::AtLeastOnce)
        .is_ok());
}

#[test]
fn plain_subscribers_are_not_expected_and_none_expected_is_delivered_at_once() {
    let mut net = Net::new(2, |_| qos_config(3));
    net.connect(0, 1);
    net.nodes[1].subscribe(net.now, topic());
    net.advance(Duration::from_secs(1));
    net.events(0);
    let id = net.nodes[0]
        .publish_with(net.now, topic(), b"x".to_vec(), Qos::AtLeastOnce)
        .unwrap();
    assert_eq!(verdicts(&net.events(0)).delivered, vec![(id, vec![])]);
    net.advance(Duration::from_secs(5));
    assert_eq!(data_of(&net.events(1)), vec![b"x".to_vec()]);
    // The plain peer got an unmarked copy and sent nothing on the QoS protocol.
    assert!(net.qos_log.is_empty());
    assert_eq!(net.nodes[1].qos_stats().acks_sent, 0);
}

#[test]
fn qos_reaches_a_pattern_subscriber_outside_any_mesh() {
    let mut net = Net::new(2, |_| GossipsubConfig {
        flood_publish: false,
        ..qos_config(3)
    });
    net.connect(0, 1);
    net.qos_all();
    net.nodes[1].subscribe(net.now, TopicHash::from("org.a/sensors.#"));
    net.advance(Duration::from_secs(1));
    net.events(0);
    net.events(1);
    let id = net.nodes[0]
        .publish_with(
            net.now,
            TopicHash::from("org.a/sensors.x"),
            b"t".to_vec(),
            Qos::AtLeastOnce,
        )
        .unwrap();
    let events = until_verdicts(&mut net, 0, 1, Duration::from_secs(5));
    assert_eq!(verdicts(&events).delivered, vec![(id, vec![net.ids[1]])]);
    assert_eq!(data_of(&net.events(1)), vec![b"t".to_vec()]);
    assert_eq!(net.nodes[0].qos_stats().retransmissions, 0);
}

#[test]
fn hostile_qos_input_is_refused_without_delivery_or_ack() {
    let mut net = Net::new(3, |_| qos_config(3));
    net.connect(0, 1);
    net.connect(1, 2);
    net.qos_all();
    net.nodes[1].subscribe(net.now, topic());
    net.advance(Duration::from_secs(1));
    net.events(1);
    // Node 2 retransmits a message authored by someone else.
    let forged = sign::sign(
        &Keypair::from_seed_for_tests(99),
        1,
        TOPIC.into(),
        b"f".to_vec(),
    );
    net.nodes[1].handle_qos_frame(
        net.now,
        net.ids[2],
        QosFrame {
            acks: Vec::new(),
            messages: vec![forged.clone()],
        },
    );
    let events = net.events(1);
    assert!(data_of(&events).is_empty());
    assert!(events.iter().any(|e| matches!(
        e,
        GossipsubEvent::Invalid {
            reason: InvalidReason::Qos(QosWireError::NotAuthor),
            ..
        }
    )));
    // A marked copy relayed by a non-author is delivered but not acknowledged.
    net.nodes[1].handle_rpc_marked(
        net.now,
        net.ids[2],
        Rpc {
            publish: vec![forged],
            ..Rpc::default()
        },
        true,
    );
    assert_eq!(data_of(&net.events(1)), vec![b"f".to_vec()]);
    assert_eq!(net.nodes[1].qos_stats().acks_sent, 0);
    // A bad frame is counted against its sender.
    net.nodes[1].handle_invalid_qos_frame(net.now, net.ids[2], QosWireError::Empty);
    assert_eq!(net.nodes[1].invalid_messages(&net.ids[2]), 2);
    // Acks for messages never published, or from peers never expected, are ignored.
    net.nodes[0].handle_qos_frame(
        net.now,
        net.ids[1],
        QosFrame {
            acks: vec![b"nothing".to_vec()],
            messages: Vec::new(),
        },
    );
    assert_eq!(net.nodes[0].qos_stats().acks_received, 0);
}

#[test]
fn a_qos_frame_does_not_make_a_peer_expected_and_a_silent_one_is_capped_then_demoted() {
    let mut net = Net::new(3, |_| GossipsubConfig {
        qos: QosConfig {
            max_outstanding: 16,
            max_outstanding_per_peer: 4,
            demote_after: 2,
            demote_for: Duration::from_secs(60),
            ..qos_config(1).qos
        },
        ..qos_config(1)
    });
    net.connect(0, 1);
    net.connect(0, 2);
    net.nodes[1].subscribe(net.now, topic());
    net.nodes[2].subscribe(net.now, topic());
    net.advance(Duration::from_secs(1));
    let (p1, p2) = (net.ids[1], net.ids[2]);
    // Any peer can send a QoS frame: it does not make the sender expected.
    net.nodes[0].handle_qos_frame(
        net.now,
        p2,
        QosFrame {
            acks: vec![b"x".to_vec()],
            messages: Vec::new(),
        },
    );
    assert!(!net.nodes[0].peer_qos(&p2));
    // Both announce the protocol (identify); node 2 never acknowledges.
    net.qos_all();
    net.drop_qos.insert((2, 0));
    for i in 0..3 {
        net.events(i);
    }
    // 40 publishes against a table of 16: node 2 holds at most 4 of them.
    for k in 0..40u32 {
        net.nodes[0]
            .publish_with(net.now, topic(), k.to_be_bytes().to_vec(), Qos::AtLeastOnce)
            .unwrap();
        net.deliver();
        assert!(net.nodes[0].qos_sizes().outstanding <= 4);
    }
    let events = until_verdicts(&mut net, 0, 40, Duration::from_secs(10));
    let v = verdicts(&events);
    assert_eq!(v.delivered.len(), 36);
    assert!(v.delivered.iter().all(|(_, acked)| acked == &vec![p1]));
    assert_eq!(v.failed.len(), 4);
    assert!(v
        .failed
        .iter()
        .all(|(_, acked, failed)| acked == &vec![p1] && failed == &vec![p2]));
    let stats = net.nodes[0].qos_stats();
    assert_eq!(
        (stats.not_expected, stats.demotions, stats.failed),
        (36, 1, 4)
    );
    // Demoted: the next message expects node 1 only and is delivered at once after its ack.
    net.nodes[0]
        .publish_with(net.now, topic(), b"after".to_vec(), Qos::AtLeastOnce)
        .unwrap();
    net.deliver();
    assert_eq!(net.nodes[0].qos_sizes().outstanding, 0);
    assert_eq!(net.nodes[0].qos_stats().not_expected, 37);
    // After the back-off it is expected again.
    net.advance(Duration::from_secs(61));
    net.nodes[0]
        .publish_with(net.now, topic(), b"later".to_vec(), Qos::AtLeastOnce)
        .unwrap();
    net.deliver();
    assert_eq!(net.nodes[0].qos_sizes().outstanding, 1);
}
