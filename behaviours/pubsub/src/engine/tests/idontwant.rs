//! IDONTWANT (gossipsub v1.2): sent on first receipt of large messages to v1.2 mesh peers,
//! before the forwarded copy; honoured when forwarding, answering IWANT and in data queues;
//! every bound.

use super::*;
use crate::engine::idontwant::{id_hash, DontSend};
use crate::metrics::GossipsubMetrics;
use crate::wire::{sign, ControlIDontWant};

const LARGE: usize = 2000;
const SMALL: usize = 100;

/// `n` nodes, every pair connected speaking v1.2 (node 3, if any, speaks v1.1 with all),
/// subscribed, meshes formed (every node's mesh holds all the others).
fn mesh(n: usize, config: impl Fn(usize) -> GossipsubConfig) -> Net {
    let mut net = Net::new(n, config);
    for a in 0..n {
        for b in a + 1..n {
            let kind = if a == 3 || b == 3 {
                PeerKind::Gossipsub1_1
            } else {
                PeerKind::Gossipsub1_2
            };
            net.connect_speaking(a, b, kind);
        }
    }
    net.subscribe_all();
    net.advance(Duration::from_secs(2));
    for i in 0..n {
        assert_eq!(net.mesh(i).len(), n - 1, "node {i}'s mesh");
        net.events(i);
    }
    net.log.clear();
    net
}

/// The id of node `author`'s `seqno`-th message (default ids; the harness starts at 1).
fn id_of(net: &Net, author: usize, seqno: u64) -> MessageId {
    MessageId(sign::default_message_id(
        Some(&net.ids[author]),
        Some(seqno),
    ))
}

/// The IDONTWANT ids of one RPC, entry by entry.
fn idontwant_ids(rpc: &Rpc) -> Vec<Vec<Vec<u8>>> {
    control(rpc)
        .idontwant
        .into_iter()
        .map(|e| e.message_ids)
        .collect()
}

fn idontwant_rpc(ids: Vec<Vec<u8>>) -> Rpc {
    Rpc {
        control: Some(ControlMessage {
            idontwant: vec![ControlIDontWant { message_ids: ids }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    }
}

/// Copies of messages node `from` sent node `to` (logged RPCs).
fn copies(net: &Net, from: usize, to: usize) -> usize {
    net.sent(from, to).map(|r| r.publish.len()).sum()
}

#[test]
fn a_large_message_is_announced_to_v1_2_mesh_peers_before_it_is_forwarded() {
    let mut net = mesh(4, |_| fast());
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = GossipsubMetrics::register(&mut registry, 4);
    net.nodes[1].set_metrics(metrics.clone());
    // Node 0 publishes a large message; node 1's first copy comes from node 0 (flooded).
    net.nodes[0]
        .publish(net.now, topic(), vec![7; LARGE])
        .unwrap();
    net.deliver();
    let id = id_of(&net, 0, 1);
    // To node 2 (v1.2): IDONTWANT with the id, before node 1's forwarded copy.
    let to2: Vec<&Rpc> = net.sent(1, 2).collect();
    assert_eq!(idontwant_ids(to2[0]), vec![vec![id.0.clone()]]);
    assert!(to2[0].publish.is_empty(), "IDONTWANT in its own RPC");
    let first_data = to2.iter().position(|r| !r.publish.is_empty());
    assert!(first_data.is_none_or(|i| i > 0));
    // Not to node 0 (sender and author) nor to node 3 (v1.1).
    for to in [0, 3] {
        assert!(
            net.sent(1, to).all(|r| control(r).idontwant.is_empty()),
            "IDONTWANT to node {to}"
        );
    }
    // Nodes 1 and 2 each told the other (nodes 0 and 3 are the author and v1.1).
    assert_eq!(net.nodes[1].idontwant_stats().sent, 1);
    assert_eq!(net.nodes[1].idontwant_stats().received, 1);
    assert_eq!(metrics.idontwant_sent_count(), 1);
    assert_eq!(metrics.idontwant_received_count(), 1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("pubsub_idontwant_sent_total 1"), "{text}");
    assert!(text.contains("pubsub_idontwant_received_total 1"), "{text}");

    // A small message: no IDONTWANT anywhere.
    net.log.clear();
    net.nodes[0]
        .publish(net.now, topic(), vec![7; SMALL])
        .unwrap();
    net.deliver();
    assert!(net
        .log
        .iter()
        .all(|(_, _, r)| control(r).idontwant.is_empty()));
    // Every node got both messages once.
    for i in 1..4 {
        assert_eq!(net.messages(i).len(), 2, "node {i}");
    }
}

/// Node 0 publishes a message of `size` bytes, after node 2 told node 1 IDONTWANT for its id
/// when `told`; the copies node 1 forwarded to node 2.
fn forwarded_after_idontwant(told: bool, size: usize) -> (usize, IDontWantStats) {
    let mut net = mesh(3, |_| fast());
    if told {
        let id = id_of(&net, 0, 1);
        net.inject(2, 1, idontwant_rpc(vec![id.0]));
    }
    // Node 0's copy reaches node 1 first: node 2's traffic is held until node 1 forwarded.
    net.nodes[0]
        .publish(net.now, topic(), vec![1; size])
        .unwrap();
    net.held.insert(2);
    net.deliver();
    net.held.clear();
    net.deliver();
    (copies(&net, 1, 2), net.nodes[1].idontwant_stats())
}

#[test]
fn a_peer_that_said_idontwant_is_not_forwarded_the_message() {
    let (without, _) = forwarded_after_idontwant(false, SMALL);
    assert_eq!(without, 1, "node 1 forwards to node 2 (control)");
    // Honoured whatever the message's size (the threshold is the sender's business).
    for size in [SMALL, LARGE] {
        let (with, stats) = forwarded_after_idontwant(true, size);
        assert_eq!(with, 0, "size {size}");
        assert_eq!(stats.received, 1);
        assert_eq!(stats.suppressed, 1);
    }
}

#[test]
fn idontwant_drops_a_copy_still_queued_and_iwant_is_not_answered() {
    let mut net = mesh(3, |_| fast());
    // Node 1 cannot send: node 0's message waits in node 1's queue for node 2.
    net.held.insert(1);
    net.nodes[0]
        .publish(net.now, topic(), vec![3; SMALL])
        .unwrap();
    net.deliver();
    let p2 = net.ids[2];
    assert_eq!(net.nodes[1].queue_stats(&p2).unwrap().queued_messages, 1);
    let id = id_of(&net, 0, 1);
    net.inject(2, 1, idontwant_rpc(vec![id.0.clone()]));
    assert_eq!(net.nodes[1].queue_stats(&p2).unwrap().queued_messages, 0);
    assert_eq!(net.nodes[1].idontwant_stats().removed_from_queue, 1);
    net.held.clear();
    net.deliver();
    assert_eq!(copies(&net, 1, 2), 0);
    // IWANT for it from node 2 is not answered; from node 0 (no IDONTWANT) it is.
    let iwant = Rpc {
        control: Some(ControlMessage {
            iwant: vec![ControlIWant {
                message_ids: vec![id.0.clone()],
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    net.log.clear();
    net.inject(2, 1, iwant.clone());
    net.inject(0, 1, iwant);
    net.deliver();
    assert_eq!(copies(&net, 1, 2), 0);
    assert_eq!(copies(&net, 1, 0), 1);
    assert_eq!(net.nodes[1].idontwant_stats().suppressed, 2);
}

#[test]
fn idontwant_ids_go_at_most_max_idontwant_length_per_rpc() {
    let mut net = mesh(3, |_| fast());
    // 25 large messages by node 0 in one RPC to node 1: 25 ids for node 2, in 10 + 10 + 5.
    let key = Keypair::from_seed_for_tests(1);
    let publish: Vec<Message> = (100..125)
        .map(|seqno| sign::sign(&key, seqno, TOPIC.into(), vec![9; LARGE]))
        .collect();
    net.inject(
        0,
        1,
        Rpc {
            publish,
            ..Rpc::default()
        },
    );
    net.deliver();
    let sizes: Vec<usize> = net
        .sent(1, 2)
        .flat_map(idontwant_ids)
        .map(|ids| ids.len())
        .collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    assert_eq!(net.nodes[2].idontwant_stats().received, 25);
    assert_eq!(net.nodes[2].idontwant_stats().ignored, 0);
}

#[test]
fn idontwant_is_bounded_per_rpc_per_heartbeat_per_peer_and_expires() {
    let mut net = mesh(2, |_| GossipsubConfig {
        max_idontwant_length: 10,
        max_idontwant_messages: 3,
        max_idontwant_ids_per_peer: 25,
        idontwant_ttl: 3,
        max_message_id_len: 64,
        ..fast()
    });
    let p1 = net.ids[1];
    let ids = |from: u32, n: u32| -> Vec<Vec<u8>> {
        (from..from + n).map(|i| i.to_be_bytes().to_vec()).collect()
    };
    // 15 ids in two entries: the first 10 taken.
    let mut rpc = idontwant_rpc(ids(0, 8));
    if let Some(c) = rpc.control.as_mut() {
        c.idontwant.push(ControlIDontWant {
            message_ids: ids(8, 7),
        });
    }
    net.inject(1, 0, rpc);
    let stats = net.nodes[0].idontwant_stats();
    assert_eq!((stats.received, stats.ignored), (10, 5));
    assert_eq!(net.nodes[0].idontwant_len(&p1), Some(10));
    // Two more RPCs of 10: 30 kept in all, the oldest 5 out at the cap of 25.
    net.inject(1, 0, idontwant_rpc(ids(100, 10)));
    net.inject(1, 0, idontwant_rpc(ids(200, 10)));
    assert_eq!(net.nodes[0].idontwant_len(&p1), Some(25));
    // A fourth RPC this heartbeat: ignored whole.
    net.inject(1, 0, idontwant_rpc(ids(300, 4)));
    let stats = net.nodes[0].idontwant_stats();
    assert_eq!((stats.received, stats.ignored), (30, 9));
    // After the heartbeat the count starts again; an id over max_message_id_len is ignored.
    net.advance(Duration::from_secs(1));
    net.inject(1, 0, idontwant_rpc(vec![vec![1; 65], vec![2; 64]]));
    let stats = net.nodes[0].idontwant_stats();
    assert_eq!((stats.received, stats.ignored), (31, 10));
    // Kept until the idontwant_ttl-th heartbeat after arrival: the last one two heartbeats
    // on, gone at the third.
    net.advance(Duration::from_secs(2));
    assert_eq!(net.nodes[0].idontwant_len(&p1), Some(1));
    net.advance(Duration::from_secs(1));
    assert_eq!(net.nodes[0].idontwant_len(&p1), Some(0));
}

#[test]
fn dont_send_evicts_the_oldest_and_expires_in_order() {
    let mut d = DontSend::default();
    for i in 0..5u32 {
        assert!(d.insert(id_hash(&i.to_be_bytes()), u64::from(i), 3));
    }
    assert!(
        !d.insert(id_hash(&4u32.to_be_bytes()), 9, 3),
        "already there"
    );
    assert_eq!(d.len(), 3);
    assert!(!d.contains(id_hash(&1u32.to_be_bytes())));
    assert!(d.contains(id_hash(&2u32.to_be_bytes())));
    // Ids from ticks 2, 3, 4 with a TTL of 2 at tick 5: only tick 4's stays.
    d.expire(5, 2);
    assert_eq!(d.len(), 1);
    assert!(d.contains(id_hash(&4u32.to_be_bytes())));
}

#[test]
fn a_peer_sending_a_copy_during_validation_is_not_forwarded_it() {
    // Node 1 validates; node 2 forwards node 0's message to it while it waits.
    let run = |copy_from_2: bool| -> usize {
        let mut net = mesh(3, |i| GossipsubConfig {
            validate_messages: i == 1,
            ..fast()
        });
        if !copy_from_2 {
            net.drop_data.insert((2, 1));
        }
        net.nodes[0]
            .publish(net.now, topic(), vec![5; SMALL])
            .unwrap();
        net.deliver();
        let id = id_of(&net, 0, 1);
        let p0 = net.ids[0];
        assert!(net.nodes[1].report_validation(net.now, &id, &p0, Acceptance::Accept));
        net.deliver();
        copies(&net, 1, 2)
    };
    assert_eq!(run(false), 1, "control: forwarded to node 2");
    assert_eq!(run(true), 0, "node 2 had sent it a copy");
}

#[test]
fn idontwant_bounds_are_validated() {
    for config in [
        GossipsubConfig {
            max_idontwant_length: 0,
            ..GossipsubConfig::default()
        },
        GossipsubConfig {
            max_idontwant_messages: 0,
            ..GossipsubConfig::default()
        },
        GossipsubConfig {
            max_idontwant_ids_per_peer: 0,
            ..GossipsubConfig::default()
        },
        GossipsubConfig {
            idontwant_ttl: 0,
            ..GossipsubConfig::default()
        },
    ] {
        assert_eq!(config.validate(), Err(ConfigError::Bounds));
    }
    assert!(
        PeerKind::Gossipsub1_2.supports_idontwant() && PeerKind::Gossipsub1_2.supports_backoff()
    );
    assert!(
        !PeerKind::Gossipsub1_1.supports_idontwant() && PeerKind::Gossipsub1_1.supports_backoff()
    );
    assert!(!PeerKind::Gossipsub1_0.supports_backoff());
}
