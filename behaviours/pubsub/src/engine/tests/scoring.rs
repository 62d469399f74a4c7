//! The router acting on scores: graylist, negative scores out of meshes, publish and gossip
//! thresholds, peer exchange acceptance, broken promises, IP colocation, opportunistic
//! grafting.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use meshwire_core::Keypair;

use super::*;
use crate::engine::score::params::{PeerScoreParams, PeerScoreThresholds, TopicScoreParams};

/// Scoring on for the test topic with only P4 (invalid messages, weight -1, topic weight 1)
/// and the global components at their defaults (P5 ×10, P6, P7 ×-10).
fn scored() -> GossipsubConfig {
    let mut params = PeerScoreParams::default();
    params.topics.insert(
        topic(),
        TopicScoreParams {
            topic_weight: 1.0,
            time_in_mesh_weight: 0.0,
            first_message_deliveries_weight: 0.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            invalid_message_deliveries_weight: -1.0,
            invalid_message_deliveries_decay: 0.9,
            ..TopicScoreParams::default()
        },
    );
    GossipsubConfig {
        score_params: Some(params),
        score_thresholds: PeerScoreThresholds::default(),
        ..fast()
    }
}

/// A message on the test topic whose signature does not verify.
fn forged() -> Rpc {
    let mut m = wire::sign::sign(&Keypair::from_seed_for_tests(77), 1, TOPIC.into(), vec![1]);
    m.data = Some(vec![2]);
    Rpc {
        publish: vec![m],
        ..Rpc::default()
    }
}

fn valid(seqno: u64) -> Rpc {
    let m = wire::sign::sign(
        &Keypair::from_seed_for_tests(78),
        seqno,
        TOPIC.into(),
        vec![3],
    );
    Rpc {
        publish: vec![m],
        ..Rpc::default()
    }
}

#[test]
fn graylisted_peers_are_ignored_entirely() {
    let mut net = Net::new(2, |_| scored());
    net.connect(0, 1);
    net.subscribe_all();
    // 9 forged messages: P4 = 81 → -81, below the graylist threshold (-80).
    for _ in 0..9 {
        net.inject(1, 0, forged());
    }
    assert_eq!(net.nodes[0].peer_score(&net.ids[1]), Some(-81.0));
    net.events(0);
    net.inject(1, 0, valid(1));
    assert_eq!(
        net.messages(0),
        vec![],
        "a graylisted peer's message is dropped"
    );
    let unsub = Rpc {
        subscriptions: vec![wire::SubOpts {
            subscribe: Some(false),
            topic_id: Some(TOPIC.into()),
        }],
        ..Rpc::default()
    };
    net.inject(1, 0, unsub);
    assert_eq!(
        net.nodes[0].topic_peers(&topic()).count(),
        1,
        "nor its subscriptions"
    );
    // 8 forged: -64, above the graylist: taken.
    let mut net = Net::new(2, |_| scored());
    net.connect(0, 1);
    net.subscribe_all();
    for _ in 0..8 {
        net.inject(1, 0, forged());
    }
    net.events(0);
    net.inject(1, 0, valid(1));
    assert_eq!(net.messages(0).len(), 1);
}

#[test]
fn negative_peers_leave_the_mesh_and_cannot_graft_back() {
    let mut net = Net::new(3, |_| scored());
    net.connect_all();
    net.subscribe_all();
    assert!(net.mesh(0).contains(&net.ids[1]));
    net.inject(1, 0, forged());
    assert_eq!(net.nodes[0].peer_score(&net.ids[1]), Some(-1.0));
    net.advance(Duration::from_millis(300));
    assert!(
        !net.mesh(0).contains(&net.ids[1]),
        "pruned at the heartbeat"
    );
    assert!(net.mesh(0).contains(&net.ids[2]));
    // Its GRAFT (after the backoff, so no P7) is answered with PRUNE while it is negative.
    net.nodes[0].backoffs.clear();
    net.log.clear();
    net.inject(1, 0, graft_rpc());
    net.deliver();
    assert!(!net.mesh(0).contains(&net.ids[1]));
    assert!(net.sent(0, 1).any(|r| !control(r).prune.is_empty()));
}

#[test]
fn publish_threshold_keeps_our_messages_from_bad_peers() {
    let mut net = Net::new(3, |_| scored());
    net.connect_all();
    net.subscribe_all();
    // 8 forged: -64 < -50 (publish) but > -80 (graylist).
    for _ in 0..8 {
        net.inject(1, 0, forged());
    }
    net.log.clear();
    net.nodes[0]
        .publish(net.now, topic(), b"p".to_vec())
        .unwrap();
    net.held.insert(1);
    net.deliver();
    assert!(!net.sent(0, 1).any(|r| !r.publish.is_empty()));
    assert!(net.sent(0, 2).any(|r| !r.publish.is_empty()));
}

#[test]
fn gossip_threshold_silences_ihave_both_ways() {
    let mut net = Net::new(2, |_| scored());
    net.connect(0, 1);
    net.subscribe_all();
    // 4 forged: -16 < -10 (gossip).
    for _ in 0..4 {
        net.inject(1, 0, forged());
    }
    net.log.clear();
    let ihave = Rpc {
        control: Some(ControlMessage {
            ihave: vec![ControlIHave {
                topic_id: Some(TOPIC.into()),
                message_ids: vec![b"unseen".to_vec()],
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    net.inject(1, 0, ihave);
    net.deliver();
    assert!(!net.sent(0, 1).any(|r| !control(r).iwant.is_empty()));
}

#[test]
fn broken_iwant_promises_become_behaviour_penalties() {
    let mut net = Net::new(2, |_| scored());
    net.connect(0, 1);
    net.subscribe_all();
    let ihave = Rpc {
        control: Some(ControlMessage {
            ihave: vec![ControlIHave {
                topic_id: Some(TOPIC.into()),
                message_ids: vec![b"never".to_vec(), b"coming".to_vec()],
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    net.inject(1, 0, ihave);
    net.held.insert(0);
    assert_eq!(net.nodes[0].score_sizes().1, 2, "two promises");
    // Node 1 never answers; after iwant_followup_time (3 s) the next heartbeat counts 2.
    net.advance(Duration::from_secs(4));
    let score = net.nodes[0].peer_score(&net.ids[1]).unwrap();
    assert!(
        score < -10.0,
        "P7 (2 broken promises, decayed) gave {score}"
    );
    assert_eq!(net.nodes[0].score_sizes().1, 0);
}

#[test]
fn a_promise_kept_is_no_penalty() {
    let mut net = Net::new(2, |_| scored());
    net.connect(0, 1);
    net.subscribe_all();
    let m = valid(9);
    let id =
        wire::sign::default_message_id(Some(&Keypair::from_seed_for_tests(78).peer_id()), Some(9));
    let ihave = Rpc {
        control: Some(ControlMessage {
            ihave: vec![ControlIHave {
                topic_id: Some(TOPIC.into()),
                message_ids: vec![id],
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    net.inject(1, 0, ihave);
    net.inject(1, 0, m);
    net.advance(Duration::from_secs(4));
    assert_eq!(net.nodes[0].peer_score(&net.ids[1]), Some(0.0));
}

#[test]
fn peer_exchange_needs_accept_px_threshold() {
    let mut net = Net::new(2, |_| scored());
    net.connect(0, 1);
    net.subscribe_all();
    let stranger = Keypair::from_seed_for_tests(4321).peer_id();
    let px = Rpc {
        control: Some(ControlMessage {
            prune: vec![ControlPrune {
                topic_id: Some(TOPIC.into()),
                peers: vec![wire::PeerInfo {
                    peer_id: Some(stranger.to_bytes()),
                    signed_peer_record: None,
                }],
                backoff: Some(60),
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    net.events(0);
    net.inject(1, 0, px.clone());
    let exchanged = |ev: Vec<GossipsubEvent>| {
        ev.iter()
            .any(|e| matches!(e, GossipsubEvent::PeerExchange { .. }))
    };
    assert!(!exchanged(net.events(0)), "score 0 < 10");
    // P5: 1.0 × 10 = 10 ≥ 10.
    let p1 = net.ids[1];
    assert!(net.nodes[0].set_application_score(&p1, 1.0));
    net.inject(1, 0, px);
    assert!(exchanged(net.events(0)));
}

#[test]
fn ip_colocation_pushes_sybils_out_of_the_mesh() {
    let mut net = Net::new(15, |_| scored());
    net.connect_all();
    net.subscribe_all();
    // Nodes 1..=12 share one IP (threshold 10): (12 - 10)^2 × -5 = -20 each.
    let ip = IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7));
    for j in 1..=12 {
        let p = net.ids[j];
        net.nodes[0].add_peer_ip(p, ip);
    }
    assert_eq!(net.nodes[0].peer_score(&net.ids[1]), Some(-20.0));
    net.advance(Duration::from_millis(300));
    let mesh = net.mesh(0);
    assert!(
        mesh.iter().all(|p| net.index[p] > 12),
        "only 13 and 14 left: {mesh:?}"
    );
    // One of them leaves the IP: the others are back to 5² × ... (11 - 10)^2 × -5 = -5.
    let p = net.ids[12];
    net.nodes[0].remove_peer_ip(&p, &ip);
    assert_eq!(net.nodes[0].peer_score(&net.ids[1]), Some(-5.0));
}

#[test]
fn opportunistic_grafting_brings_in_better_peers() {
    let mut net = Net::new(16, |_| GossipsubConfig {
        opportunistic_graft_ticks: 1,
        ..scored()
    });
    // A star: node 0 and 15 peers, all of which graft it; its heartbeat prunes to D.
    for j in 1..16 {
        net.connect(0, j);
    }
    net.subscribe_all();
    net.advance(Duration::from_millis(300));
    let before = net.mesh(0);
    assert_eq!(before.len(), 6);
    // Forget the backoffs of that pruning, so only scores decide.
    net.nodes[0].backoffs.clear();
    // The peers outside node 0's mesh get a good application score (P5 = 30).
    let outside: Vec<PeerId> = net.ids[1..]
        .iter()
        .filter(|p| !before.contains(p))
        .copied()
        .collect();
    assert!(
        !outside.is_empty(),
        "node 0's mesh holds every peer: {}",
        before.len()
    );
    for p in &outside {
        assert!(net.nodes[0].set_application_score(p, 3.0));
    }
    net.nodes[0].handle_timeout(net.now + Duration::from_secs(1));
    let after = net.mesh(0);
    let grafted = outside.iter().filter(|p| after.contains(p)).count();
    assert_eq!(
        grafted,
        2.min(outside.len()),
        "opportunistic_graft_peers of them"
    );
}

#[test]
fn slow_peers_lose_score() {
    let mut net = Net::new(2, |_| GossipsubConfig {
        max_queued_messages: 2,
        ..scored()
    });
    net.connect(0, 1);
    net.subscribe_all();
    while net.nodes[0].poll_transmit().is_some() {}
    for k in 0..7u8 {
        let sent = net.nodes[0].publish(net.now, topic(), vec![k]);
        if k < 2 {
            assert!(sent.is_ok());
        } else {
            assert_eq!(sent, Err(PublishError::AllQueuesFull));
        }
    }
    // 5 dropped × -0.2.
    let score = net.nodes[0].peer_score(&net.ids[1]).unwrap();
    assert!((score + 1.0).abs() < 1e-9, "{score}");
}
