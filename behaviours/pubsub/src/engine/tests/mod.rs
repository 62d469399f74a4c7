//! Engine tests on a virtual clock: engines wired to each other by a test router that carries
//! every RPC through the wire encoding.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};

use super::*;
use crate::wire::WireError;

mod choke;
mod idontwant;
mod lossy;
mod metrics;
mod qos;
mod scoring;
mod wildcard;
use crate::wire::{self, ControlGraft, ControlIHave, ControlIWant, ControlPrune};

const TOPIC: &str = "t";

fn topic() -> TopicHash {
    TopicHash::from(TOPIC)
}

fn fast() -> GossipsubConfig {
    GossipsubConfig {
        heartbeat_initial_delay: Duration::from_millis(100),
        ..GossipsubConfig::default()
    }
}

struct Net {
    nodes: Vec<GossipsubEngine>,
    ids: Vec<PeerId>,
    index: HashMap<PeerId, usize>,
    now: Instant,
    /// RPCs carried, per (from, to).
    log: Vec<(usize, usize, Rpc)>,
    /// Nodes whose outbound traffic is held (a slow reader on the other end).
    held: HashSet<usize>,
    /// The share of RPCs lost in transit, drawn from `loss_rng`.
    loss: f64,
    loss_rng: crate::rng::Rng,
    /// Links (from, to) on which RPCs carrying messages are lost (control still passes).
    drop_data: HashSet<(usize, usize)>,
    /// Links (from, to) on which QoS frames are lost.
    drop_qos: HashSet<(usize, usize)>,
    /// QoS frames carried, per (from, to).
    qos_log: Vec<(usize, usize, crate::qos::QosFrame)>,
}

impl Net {
    fn new(n: usize, config: impl Fn(usize) -> GossipsubConfig) -> Self {
        let now = Instant::now();
        let mut nodes = Vec::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let key = Keypair::from_seed_for_tests(i as u64 + 1);
            ids.push(key.peer_id());
            let mut c = config(i);
            c.seed = i as u64;
            nodes.push(GossipsubEngine::new(key, c, 1).unwrap());
        }
        let index = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        Net {
            nodes,
            ids,
            index,
            now,
            log: Vec::new(),
            held: HashSet::new(),
            loss: 0.0,
            loss_rng: crate::rng::Rng::new(7),
            drop_data: HashSet::new(),
            drop_qos: HashSet::new(),
            qos_log: Vec::new(),
        }
    }

    /// `a` dials `b`.
    fn connect(&mut self, a: usize, b: usize) {
        self.connect_speaking(a, b, PeerKind::Gossipsub1_1);
    }

    /// `a` dials `b`, both speaking `kind`.
    fn connect_speaking(&mut self, a: usize, b: usize, kind: PeerKind) {
        let (pa, pb) = (self.ids[a], self.ids[b]);
        self.nodes[a].handle_peer_connected(self.now, pb, kind, true);
        self.nodes[b].handle_peer_connected(self.now, pa, kind, false);
    }

    /// Every node learns that every other speaks the QoS protocol.
    fn qos_all(&mut self) {
        for i in 0..self.nodes.len() {
            for j in 0..self.nodes.len() {
                if i != j {
                    let p = self.ids[j];
                    self.nodes[i].set_peer_qos(&p, true);
                }
            }
        }
    }

    fn connect_all(&mut self) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                self.connect(a, b);
            }
        }
    }

    /// Carries RPCs until none is left.
    fn deliver(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                if self.held.contains(&i) {
                    continue;
                }
                while let Some((peer, rpc)) = self.nodes[i].poll_transmit() {
                    moved = true;
                    let mut body = wire::encode_rpc(&rpc);
                    if self.nodes[i].qos_marked(&peer, &rpc) {
                        crate::qos::wire::mark(&mut body);
                    }
                    let max = self.nodes[i].config().max_transmit_size;
                    assert!(body.len() <= max, "an RPC over max_transmit_size");
                    let decoded = wire::decode_rpc(&body, max).unwrap();
                    let marked = crate::qos::wire::is_marked(&body);
                    let j = self.index[&peer];
                    if self.loss > 0.0
                        && (self.loss_rng.next_u64() % 10_000) < (self.loss * 10_000.0) as u64
                    {
                        continue;
                    }
                    if !decoded.publish.is_empty() && self.drop_data.contains(&(i, j)) {
                        continue;
                    }
                    self.log.push((i, j, decoded.clone()));
                    let from = self.ids[i];
                    self.nodes[j].handle_rpc_marked(self.now, from, decoded, marked);
                }
                while let Some((peer, frame)) = self.nodes[i].poll_qos_transmit() {
                    moved = true;
                    let j = self.index[&peer];
                    let body = crate::qos::wire::encode(&frame);
                    let limits = crate::qos::wire::FrameLimits {
                        max_frame: self.nodes[j].config().max_transmit_size,
                        max_acks: self.nodes[j].config().qos.max_ack_batch,
                        max_id_len: self.nodes[j].config().max_message_id_len,
                    };
                    let decoded = crate::qos::wire::decode_frame(&body, &limits).unwrap();
                    if self.loss > 0.0
                        && (self.loss_rng.next_u64() % 10_000) < (self.loss * 10_000.0) as u64
                    {
                        continue;
                    }
                    if self.drop_qos.contains(&(i, j)) {
                        continue;
                    }
                    self.qos_log.push((i, j, decoded.clone()));
                    let from = self.ids[i];
                    self.nodes[j].handle_qos_frame(self.now, from, decoded);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances the clock by `d` in steps of 100 ms, running heartbeats and carrying traffic.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(100)).min(end);
            for n in &mut self.nodes {
                if n.poll_timeout().is_some_and(|t| t <= self.now) {
                    n.handle_timeout(self.now);
                }
            }
            self.deliver();
        }
    }

    fn events(&mut self, i: usize) -> Vec<GossipsubEvent> {
        std::iter::from_fn(|| self.nodes[i].poll_event()).collect()
    }

    fn messages(&mut self, i: usize) -> Vec<GossipMessage> {
        self.events(i)
            .into_iter()
            .filter_map(|e| match e {
                GossipsubEvent::Message { message, .. } => Some(message),
                _ => None,
            })
            .collect()
    }

    /// Every node subscribes, one after the other, each seeing the earlier ones' announcements
    /// (so the later ones graft the earlier ones at once).
    fn subscribe_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.nodes[i].subscribe(self.now, topic());
            self.deliver();
        }
    }

    fn mesh(&self, i: usize) -> HashSet<PeerId> {
        self.nodes[i].mesh_peers(&topic()).copied().collect()
    }

    /// Injects an RPC from node `from` to node `to` as if it came off the wire.
    fn inject(&mut self, from: usize, to: usize, rpc: Rpc) {
        let peer = self.ids[from];
        self.nodes[to].handle_rpc(self.now, peer, rpc);
    }

    fn sent(&self, from: usize, to: usize) -> impl Iterator<Item = &Rpc> {
        self.log
            .iter()
            .filter(move |(f, t, _)| *f == from && *t == to)
            .map(|(_, _, r)| r)
    }
}

fn control(rpc: &Rpc) -> ControlMessage {
    rpc.control.clone().unwrap_or_default()
}

fn graft_rpc() -> Rpc {
    Rpc {
        control: Some(ControlMessage {
            graft: vec![ControlGraft {
                topic_id: Some(TOPIC.into()),
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    }
}

#[test]
fn subscriptions_are_announced_to_peers_and_new_peers() {
    let mut net = Net::new(3, |_| fast());
    net.connect(0, 1);
    net.nodes[0].subscribe(net.now, topic());
    net.deliver();
    let ev = net.events(1);
    assert!(ev.contains(&GossipsubEvent::Subscribed {
        peer: net.ids[0],
        topic: topic()
    }));
    // A peer connecting later learns the subscription too.
    net.connect(0, 2);
    net.deliver();
    assert_eq!(
        net.nodes[2].topic_peers(&topic()).collect::<Vec<_>>(),
        vec![&net.ids[0]]
    );
    net.nodes[0].unsubscribe(net.now, &topic());
    net.deliver();
    assert!(net.events(2).contains(&GossipsubEvent::Unsubscribed {
        peer: net.ids[0],
        topic: topic()
    }));
    assert_eq!(net.nodes[2].topic_peers(&topic()).count(), 0);
}

#[test]
fn meshes_form_within_bounds_and_are_symmetric() {
    let mut net = Net::new(20, |_| fast());
    net.connect_all();
    net.subscribe_all();
    net.advance(Duration::from_secs(5));
    for i in 0..20 {
        let mesh = net.mesh(i);
        assert!(
            (5..=12).contains(&mesh.len()),
            "node {i} mesh {} outside D_lo..=D_hi",
            mesh.len()
        );
        for p in &mesh {
            let j = net.index[p];
            assert!(net.mesh(j).contains(&net.ids[i]), "mesh {i}-{j} one-sided");
        }
    }
}

#[test]
fn messages_reach_every_subscriber_through_the_mesh_alone() {
    // Without flood publishing, and on a ring with chords so most pairs are not connected.
    let mut net = Net::new(30, |_| GossipsubConfig {
        flood_publish: false,
        ..fast()
    });
    for i in 0..30 {
        for k in [1, 3, 7] {
            net.connect(i, (i + k) % 30);
        }
    }
    net.subscribe_all();
    net.advance(Duration::from_secs(3));
    for i in 0..30 {
        net.events(i);
    }
    let id = net.nodes[0]
        .publish(net.now, topic(), b"hello".to_vec())
        .unwrap();
    net.deliver();
    for i in 1..30 {
        let got = net.messages(i);
        assert_eq!(got.len(), 1, "node {i} got {} copies", got.len());
        assert_eq!(got[0].data, b"hello");
        assert_eq!(got[0].source, Some(net.ids[0]));
    }
    assert_eq!(net.messages(0), vec![], "no delivery to ourselves");
    assert_eq!(
        id,
        MessageId(wire::sign::default_message_id(Some(&net.ids[0]), Some(1)))
    );
}

#[test]
fn flood_publish_sends_to_every_topic_peer() {
    let mut net = Net::new(15, |_| fast());
    net.connect_all();
    net.subscribe_all();
    net.advance(Duration::from_secs(2));
    net.log.clear();
    net.nodes[0]
        .publish(net.now, topic(), b"x".to_vec())
        .unwrap();
    // Before any forwarding: every one of the 14 topic peers has the message queued.
    let mut direct = HashSet::new();
    while let Some((peer, rpc)) = net.nodes[0].poll_transmit() {
        if !rpc.publish.is_empty() {
            direct.insert(peer);
        }
    }
    assert_eq!(direct.len(), 14);
}

#[test]
fn oversubscribed_mesh_is_pruned_to_d_keeping_outbound_peers() {
    // Node 0 dialed nodes 1..=3 (outbound); 4..=19 dialed node 0.
    let mut net = Net::new(20, |_| fast());
    for j in 1..20 {
        if j <= 3 {
            net.connect(0, j);
        } else {
            net.connect(j, 0);
        }
    }
    net.nodes[0].subscribe(net.now, topic());
    net.deliver();
    // Everyone grafts node 0, the outbound peers last.
    for j in (1..20).rev() {
        net.inject(j, 0, graft_rpc());
    }
    let mesh = net.mesh(0).len();
    assert_eq!(
        mesh, 15,
        "inbound grafts accepted up to D_hi, outbound ones beyond"
    );
    net.nodes[0].handle_timeout(net.now + Duration::from_secs(1));
    let mesh = net.mesh(0);
    assert_eq!(mesh.len(), 6, "pruned to D");
    let outbound = (1..=3).filter(|j| mesh.contains(&net.ids[*j])).count();
    assert!(
        outbound >= 2,
        "at least D_out outbound peers kept, got {outbound}"
    );
    // Each pruned peer got a PRUNE with the 60 s backoff.
    net.deliver();
    let pruned: Vec<usize> = (1..20).filter(|j| !mesh.contains(&net.ids[*j])).collect();
    for j in pruned {
        let prunes: Vec<ControlPrune> = net.sent(0, j).flat_map(|r| control(r).prune).collect();
        assert!(
            prunes.iter().any(|p| p.backoff == Some(60)),
            "peer {j} not pruned with backoff"
        );
    }
}

#[test]
fn graft_during_backoff_is_pruned_and_counted_then_accepted_after() {
    let mut net = Net::new(2, |_| fast());
    net.connect(0, 1);
    net.subscribe_all();
    assert!(net.mesh(0).contains(&net.ids[1]));
    // 1 prunes 0 with a 10 s backoff: 0 removes it and must not graft for 10 s.
    let prune = Rpc {
        control: Some(ControlMessage {
            prune: vec![ControlPrune {
                topic_id: Some(TOPIC.into()),
                peers: vec![],
                backoff: Some(10),
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    net.inject(1, 0, prune);
    assert!(!net.mesh(0).contains(&net.ids[1]));
    net.log.clear();
    net.advance(Duration::from_secs(9));
    assert!(
        !net.sent(0, 1).any(|r| !control(r).graft.is_empty()),
        "grafted during the backoff"
    );
    // A GRAFT from 1 now (0's backoff on 1 runs): answered with PRUNE, counted.
    net.inject(1, 0, graft_rpc());
    assert_eq!(net.nodes[0].invalid_messages(&net.ids[1]), 1);
    net.deliver();
    assert!(net.sent(0, 1).any(|r| !control(r).prune.is_empty()));
    assert!(!net.mesh(0).contains(&net.ids[1]));
    // After the backoff (and slack), the heartbeat grafts again.
    net.advance(Duration::from_secs(65));
    assert!(net.mesh(0).contains(&net.ids[1]));
    assert!(net.mesh(1).contains(&net.ids[0]));
}

#[test]
fn graft_for_a_topic_we_are_not_in_is_pruned() {
    let mut net = Net::new(2, |_| fast());
    net.connect(0, 1);
    net.inject(1, 0, graft_rpc());
    net.deliver();
    let prunes: Vec<ControlPrune> = net.sent(0, 1).flat_map(|r| control(r).prune).collect();
    assert_eq!(prunes.len(), 1);
    assert_eq!(net.nodes[0].mesh_peers(&topic()).count(), 0);
}

#[test]
fn gossip_lets_a_non_mesh_peer_fetch_a_message_with_iwant() {
    // 0 and 1 both subscribe; 1 is in 0's topic peers but kept out of the mesh (PRUNE with
    // a long backoff), so it can only learn of messages through IHAVE.
    let mut net = Net::new(2, |_| GossipsubConfig {
        flood_publish: false,
        ..fast()
    });
    net.connect(0, 1);
    net.subscribe_all();
    let prune = |b| Rpc {
        control: Some(ControlMessage {
            prune: vec![ControlPrune {
                topic_id: Some(TOPIC.into()),
                peers: vec![],
                backoff: Some(b),
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    net.inject(0, 1, prune(3600));
    net.inject(1, 0, prune(3600));
    assert!(net.mesh(0).is_empty() && net.mesh(1).is_empty());
    // Without mesh or fanout peers a non-flood publish finds nobody: make 0 flood this once.
    net.nodes[0].config.flood_publish = true;
    net.held.insert(0);
    net.nodes[0]
        .publish(net.now, topic(), b"g".to_vec())
        .unwrap();
    // Drop the direct copy: 1 must get it from gossip.
    while net.nodes[0].poll_transmit().is_some() {}
    net.held.clear();
    net.advance(Duration::from_secs(2));
    let ihaves: Vec<ControlIHave> = net.sent(0, 1).flat_map(|r| control(r).ihave).collect();
    assert!(!ihaves.is_empty(), "no IHAVE sent");
    let iwants: Vec<ControlIWant> = net.sent(1, 0).flat_map(|r| control(r).iwant).collect();
    assert!(!iwants.is_empty(), "no IWANT sent");
    assert_eq!(net.messages(1).len(), 1);
}

#[test]
fn ihave_is_bounded_per_peer_and_heartbeat() {
    let mut net = Net::new(2, |_| GossipsubConfig {
        max_ihave_length: 50,
        ..fast()
    });
    net.connect(0, 1);
    net.subscribe_all();
    net.log.clear();
    let ihave = |from: usize, n: usize| Rpc {
        control: Some(ControlMessage {
            ihave: vec![ControlIHave {
                topic_id: Some(TOPIC.into()),
                message_ids: (from..from + n)
                    .map(|i| format!("m{i}").into_bytes())
                    .collect(),
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    // 12 IHAVEs of 10 fresh ids each: at most 10 IHAVEs taken, and at most 50 ids asked.
    for k in 0..12 {
        net.inject(1, 0, ihave(k * 10, 10));
    }
    net.deliver();
    let asked: usize = net
        .sent(0, 1)
        .flat_map(|r| control(r).iwant)
        .map(|w| w.message_ids.len())
        .sum();
    assert_eq!(asked, 50);
    // The next heartbeat resets the budget.
    net.log.clear();
    net.nodes[0].handle_timeout(net.now + Duration::from_secs(1));
    net.inject(1, 0, ihave(1000, 10));
    net.deliver();
    let asked: usize = net
        .sent(0, 1)
        .flat_map(|r| control(r).iwant)
        .map(|w| w.message_ids.len())
        .sum();
    assert_eq!(asked, 10);
}

#[test]
fn ihave_ids_longer_than_the_bound_are_not_asked_for() {
    let mut net = Net::new(2, |_| GossipsubConfig {
        max_message_id_len: 64,
        ..fast()
    });
    net.connect(0, 1);
    net.subscribe_all();
    net.log.clear();
    net.inject(
        1,
        0,
        Rpc {
            control: Some(ControlMessage {
                ihave: vec![ControlIHave {
                    topic_id: Some(TOPIC.into()),
                    message_ids: vec![vec![7; 64], vec![8; 65], vec![9; 60_000]],
                }],
                ..ControlMessage::default()
            }),
            ..Rpc::default()
        },
    );
    net.deliver();
    let asked: Vec<Vec<u8>> = net
        .sent(0, 1)
        .flat_map(|r| control(r).iwant)
        .flat_map(|w| w.message_ids)
        .collect();
    assert_eq!(asked, vec![vec![7; 64]]);
}

#[test]
fn iwant_is_served_at_most_gossip_retransmission_times() {
    let mut net = Net::new(2, |_| fast());
    net.connect(0, 1);
    net.subscribe_all();
    let id = net.nodes[0]
        .publish(net.now, topic(), b"r".to_vec())
        .unwrap();
    net.deliver();
    net.log.clear();
    let iwant = Rpc {
        control: Some(ControlMessage {
            iwant: vec![ControlIWant {
                message_ids: vec![id.0.clone()],
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    for _ in 0..5 {
        net.inject(1, 0, iwant.clone());
    }
    net.held.insert(1);
    net.deliver();
    let served = net.sent(0, 1).filter(|r| !r.publish.is_empty()).count();
    assert_eq!(served, 3);
}

#[test]
fn message_cache_serves_for_history_length_and_gossips_for_history_gossip() {
    let mut net = Net::new(2, |_| fast());
    net.connect(0, 1);
    net.subscribe_all();
    let id = net.nodes[0]
        .publish(net.now, topic(), b"c".to_vec())
        .unwrap();
    for _ in 0..3 {
        assert!(net.nodes[0].mcache.gossip_ids(&topic()).contains(&id));
        net.nodes[0].mcache.shift();
    }
    assert!(!net.nodes[0].mcache.gossip_ids(&topic()).contains(&id));
    assert!(net.nodes[0]
        .mcache
        .get_for_iwant(&id, net.ids[1], 3)
        .is_some());
    net.nodes[0].mcache.shift();
    net.nodes[0].mcache.shift();
    assert!(net.nodes[0]
        .mcache
        .get_for_iwant(&id, net.ids[1], 3)
        .is_none());
}

#[test]
fn fanout_is_used_for_unsubscribed_topics_and_expires_after_ttl() {
    let mut net = Net::new(10, |_| GossipsubConfig {
        flood_publish: false,
        fanout_ttl: Duration::from_secs(5),
        ..fast()
    });
    net.connect_all();
    for i in 1..10 {
        net.nodes[i].subscribe(net.now, topic());
        net.deliver();
    }
    net.advance(Duration::from_secs(2));
    net.nodes[0]
        .publish(net.now, topic(), b"f".to_vec())
        .unwrap();
    assert_eq!(net.nodes[0].fanout_peers(&topic()).count(), 6);
    net.deliver();
    let receivers = (1..10).filter(|i| net.messages(*i).len() == 1).count();
    assert_eq!(receivers, 9, "the fanout peers forward into their mesh");
    net.advance(Duration::from_secs(4));
    assert_eq!(net.nodes[0].fanout_peers(&topic()).count(), 6);
    net.advance(Duration::from_secs(2));
    assert_eq!(net.nodes[0].fanout_peers(&topic()).count(), 0, "expired");
}

#[test]
fn joining_a_topic_grafts_its_fanout_peers() {
    let mut net = Net::new(8, |_| GossipsubConfig {
        flood_publish: false,
        ..fast()
    });
    net.connect_all();
    for i in 1..8 {
        net.nodes[i].subscribe(net.now, topic());
    }
    net.deliver();
    net.nodes[0]
        .publish(net.now, topic(), b"f".to_vec())
        .unwrap();
    let fanout: HashSet<PeerId> = net.nodes[0].fanout_peers(&topic()).copied().collect();
    net.nodes[0].subscribe(net.now, topic());
    assert_eq!(net.mesh(0), fanout);
    assert_eq!(net.nodes[0].fanout_peers(&topic()).count(), 0);
}

#[test]
fn validation_holds_messages_until_accepted() {
    let mut net = Net::new(3, |i| GossipsubConfig {
        validate_messages: i == 1,
        flood_publish: false,
        ..fast()
    });
    // A line: 0 - 1 - 2.
    net.connect(0, 1);
    net.connect(1, 2);
    net.subscribe_all();
    for (verdict, data) in [
        (Acceptance::Accept, b"a".to_vec()),
        (Acceptance::Reject, b"r".to_vec()),
        (Acceptance::Ignore, b"i".to_vec()),
    ] {
        net.nodes[0]
            .publish(net.now, topic(), data.clone())
            .unwrap();
        net.deliver();
        let (id, source) = net
            .events(1)
            .into_iter()
            .find_map(|e| match e {
                GossipsubEvent::Message {
                    message_id,
                    propagation_source,
                    ..
                } => Some((message_id, propagation_source)),
                _ => None,
            })
            .unwrap();
        assert_eq!(net.messages(2), vec![], "forwarded before validation");
        assert!(net.nodes[1].report_validation(net.now, &id, &source, verdict));
        assert!(!net.nodes[1].report_validation(net.now, &id, &source, verdict));
        net.deliver();
        let got = net.messages(2);
        if verdict == Acceptance::Accept {
            assert_eq!(got.len(), 1);
        } else {
            assert_eq!(got, vec![]);
        }
    }
    assert_eq!(
        net.nodes[1].invalid_messages(&net.ids[0]),
        1,
        "one rejection"
    );
}

#[test]
fn duplicates_are_dropped_until_the_seen_cache_expires() {
    let mut net = Net::new(2, |_| fast());
    net.connect(0, 1);
    net.subscribe_all();
    let m = wire::sign::sign(
        &Keypair::from_seed_for_tests(99),
        5,
        TOPIC.into(),
        b"d".to_vec(),
    );
    let rpc = Rpc {
        publish: vec![m],
        ..Rpc::default()
    };
    net.inject(0, 1, rpc.clone());
    net.inject(0, 1, rpc.clone());
    assert_eq!(net.messages(1).len(), 1);
    net.advance(Duration::from_secs(61));
    net.inject(0, 1, rpc);
    assert_eq!(
        net.messages(1).len(),
        1,
        "seen again after duplicate_cache_time"
    );
}

#[test]
fn invalid_signatures_are_counted_and_not_delivered() {
    let mut net = Net::new(3, |_| fast());
    net.connect(0, 1);
    net.connect(1, 2);
    net.subscribe_all();
    let mut m = wire::sign::sign(
        &Keypair::from_seed_for_tests(99),
        5,
        TOPIC.into(),
        b"d".to_vec(),
    );
    m.data = Some(b"forged".to_vec());
    net.inject(
        0,
        1,
        Rpc {
            publish: vec![m],
            ..Rpc::default()
        },
    );
    net.deliver();
    assert_eq!(net.messages(1), vec![]);
    assert_eq!(net.messages(2), vec![]);
    assert_eq!(net.nodes[1].invalid_messages(&net.ids[0]), 1);
    net.nodes[1].handle_invalid_rpc(net.now, net.ids[0], WireError::InvalidPrefix);
    assert_eq!(net.nodes[1].invalid_messages(&net.ids[0]), 2);
}

#[test]
fn copies_of_a_cached_message_skip_verification_only_when_identical() {
    let mut net = Net::new(2, |_| fast());
    net.connect(0, 1);
    net.subscribe_all();
    let m = wire::sign::sign(
        &Keypair::from_seed_for_tests(99),
        5,
        TOPIC.into(),
        b"d".to_vec(),
    );
    let rpc = |m: Message| Rpc {
        publish: vec![m],
        ..Rpc::default()
    };
    net.inject(0, 1, rpc(m.clone()));
    // An exact copy: a duplicate, not invalid.
    net.inject(0, 1, rpc(m.clone()));
    assert_eq!(net.messages(1).len(), 1);
    assert_eq!(net.nodes[1].invalid_messages(&net.ids[0]), 0);
    // Same author and seqno (so the same id) but another payload, another signature, or a
    // key field: each is verified, fails, and counts against the sender.
    let mut forged_data = m.clone();
    forged_data.data = Some(b"forged".to_vec());
    let mut forged_signature = m.clone();
    if let Some(sig) = forged_signature.signature.as_mut() {
        sig[0] ^= 1;
    }
    let mut wrong_key = m.clone();
    wrong_key.key = Some(Keypair::from_seed_for_tests(7).public().encode_protobuf());
    for (k, forged) in [forged_data, forged_signature, wrong_key]
        .into_iter()
        .enumerate()
    {
        net.inject(0, 1, rpc(forged));
        assert_eq!(
            net.nodes[1].invalid_messages(&net.ids[0]),
            k as u64 + 1,
            "forged copy {k} verified and refused"
        );
    }
    assert!(net.messages(1).is_empty(), "no forged copy delivered");
}

#[test]
fn a_slow_peer_drops_its_own_data_and_control_goes_first() {
    let mut net = Net::new(3, |_| GossipsubConfig {
        max_queued_messages: 4,
        ..fast()
    });
    net.connect(0, 1);
    net.connect(0, 2);
    net.subscribe_all();
    // Node 0 drains only what goes to 2; 1 never reads.
    for k in 0..10u8 {
        net.nodes[0].publish(net.now, topic(), vec![k]).unwrap();
        while let Some(rpc) = net.nodes[0].poll_transmit_to(&net.ids[2]) {
            let from = net.ids[0];
            net.nodes[2].handle_rpc(net.now, from, rpc);
        }
    }
    assert_eq!(net.messages(2).len(), 10, "the fast peer got everything");
    let stats = net.nodes[0].queue_stats(&net.ids[1]).unwrap();
    assert_eq!(stats.queued_messages, 4);
    assert_eq!(stats.dropped_messages, 6);
    // A control message for the slow peer jumps its data.
    net.nodes[0].unsubscribe(net.now, &topic());
    let first = net.nodes[0].poll_transmit_to(&net.ids[1]).unwrap();
    assert!(first.publish.is_empty() && !first.subscriptions.is_empty());
}

#[test]
fn control_rpcs_are_split_to_fit_max_transmit_size() {
    let ids: Vec<Vec<u8>> = (0..5000).map(|i| format!("{i:040}").into_bytes()).collect();
    let control = ControlMessage {
        ihave: vec![ControlIHave {
            topic_id: Some(TOPIC.into()),
            message_ids: ids.clone(),
        }],
        ..ControlMessage::default()
    };
    let parts = split_control(control, 4096);
    assert!(parts.len() > 1);
    let mut back = Vec::new();
    for part in parts {
        let rpc = Rpc {
            control: Some(part.clone()),
            ..Rpc::default()
        };
        assert!(wire::rpc_len(&rpc) <= 4096);
        back.extend(part.ihave.into_iter().flat_map(|i| i.message_ids));
    }
    assert_eq!(back, ids);
}

#[test]
fn peer_exchange_is_reported_and_sent_when_enabled() {
    let mut net = Net::new(4, |_| GossipsubConfig {
        do_px: true,
        ..fast()
    });
    net.connect(0, 1);
    net.connect(0, 2);
    net.connect(0, 3);
    net.subscribe_all();
    net.events(1);
    net.nodes[0].unsubscribe(net.now, &topic());
    net.deliver();
    // PRUNEs on unsubscribe carry no PX; a PRUNE for an oversubscribed mesh does.
    let stranger = Keypair::from_seed_for_tests(1234).peer_id();
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
    net.inject(2, 1, px);
    assert!(net.events(1).contains(&GossipsubEvent::PeerExchange {
        topic: topic(),
        peers: vec![stranger]
    }));
}

#[test]
fn publish_errors() {
    let mut net = Net::new(2, |_| GossipsubConfig {
        max_transmit_size: 200,
        ..fast()
    });
    assert_eq!(
        net.nodes[0].publish(net.now, topic(), vec![]),
        Err(PublishError::NoPeersSubscribedToTopic)
    );
    net.connect(0, 1);
    net.subscribe_all();
    assert!(matches!(
        net.nodes[0].publish(net.now, topic(), vec![0; 300]),
        Err(PublishError::MessageTooLarge { max: 200, .. })
    ));
    assert!(net.nodes[0].publish(net.now, topic(), vec![0; 10]).is_ok());
}

#[test]
fn custom_message_id_function_names_messages() {
    let content_id: MessageIdFn =
        std::sync::Arc::new(|m: &GossipMessage| MessageId(m.data.clone()));
    let mut net = Net::new(2, |_| GossipsubConfig {
        message_id_fn: Some(content_id.clone()),
        ..fast()
    });
    net.connect(0, 1);
    net.subscribe_all();
    assert_eq!(
        net.nodes[0].publish(net.now, topic(), b"same".to_vec()),
        Ok(MessageId(b"same".to_vec()))
    );
    assert_eq!(
        net.nodes[0].publish(net.now, topic(), b"same".to_vec()),
        Err(PublishError::Duplicate)
    );
}

#[test]
fn subscriptions_per_peer_are_bounded() {
    let mut net = Net::new(2, |_| GossipsubConfig {
        max_topics_per_peer: 3,
        ..fast()
    });
    net.connect(0, 1);
    let subs = (0..5)
        .map(|i| wire::SubOpts {
            subscribe: Some(true),
            topic_id: Some(format!("t{i}")),
        })
        .collect();
    net.inject(
        1,
        0,
        Rpc {
            subscriptions: subs,
            ..Rpc::default()
        },
    );
    assert_eq!(net.nodes[0].peer_topics(&net.ids[1]).count(), 3);
    assert!(net.nodes[0].invalid_messages(&net.ids[1]) > 0);
}

#[test]
fn disconnect_forgets_the_peer_everywhere() {
    let mut net = Net::new(3, |_| fast());
    net.connect_all();
    net.subscribe_all();
    assert!(net.mesh(0).contains(&net.ids[1]));
    net.nodes[0].handle_peer_disconnected(net.now, &net.ids[1].clone());
    assert!(!net.mesh(0).contains(&net.ids[1]));
    assert!(!net.nodes[0].topic_peers(&topic()).any(|p| *p == net.ids[1]));
    assert!(net.nodes[0].queue_stats(&net.ids[1]).is_none());
}

#[test]
fn config_is_validated() {
    let bad = GossipsubConfig {
        mesh_n_low: 7,
        ..GossipsubConfig::default()
    };
    assert_eq!(bad.validate(), Err(ConfigError::Degrees));
    let bad = GossipsubConfig {
        history_gossip: 6,
        ..GossipsubConfig::default()
    };
    assert_eq!(bad.validate(), Err(ConfigError::History));
    assert_eq!(GossipsubConfig::default().validate(), Ok(()));
}

#[test]
fn control_for_made_up_topics_keeps_no_state_and_is_bounded() {
    let mut net = Net::new(2, |_| GossipsubConfig {
        max_messages_per_rpc: 100,
        ..fast()
    });
    net.connect(0, 1);
    let topics = |n: usize| (0..n).map(|i| Some(format!("made-up-{i}")));
    let rpc = Rpc {
        control: Some(ControlMessage {
            graft: topics(150).map(|t| ControlGraft { topic_id: t }).collect(),
            prune: topics(150)
                .map(|t| ControlPrune {
                    topic_id: t,
                    peers: vec![],
                    backoff: Some(60),
                })
                .collect(),
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    net.inject(1, 0, rpc);
    assert!(
        net.nodes[0].backoffs.is_empty(),
        "no backoff for topics we are not in"
    );
    assert_eq!(
        net.nodes[0].invalid_messages(&net.ids[1]),
        1,
        "over the per-RPC limit"
    );
    net.held.insert(1);
    net.deliver();
    let prunes: usize = net.sent(0, 1).map(|r| control(r).prune.len()).sum();
    assert_eq!(
        prunes, 100,
        "each GRAFT taken answered with PRUNE, up to the limit"
    );
}

#[test]
fn subscriptions_arriving_while_the_mesh_is_below_d_lo_are_grafted_at_once() {
    // Node 0 is in the topic before it has peers; six subscribed peers connect one by one.
    let mut net = Net::new(7, |_| fast());
    for i in 0..7 {
        net.nodes[i].subscribe(net.now, topic());
    }
    for j in 1..7 {
        net.connect(0, j);
        net.deliver();
    }
    // No heartbeat has run: node 0 grafted the first D_lo (5) on their subscriptions, not
    // the sixth (which grafted node 0 itself, its own mesh being empty).
    let grafted: Vec<usize> = (1..7)
        .filter(|j| net.sent(0, *j).any(|r| !control(r).graft.is_empty()))
        .collect();
    assert_eq!(grafted, vec![1, 2, 3, 4, 5]);
    assert_eq!(net.mesh(0).len(), 6);
    for j in 1..7 {
        assert!(net.mesh(j).contains(&net.ids[0]), "mesh of node {j}");
    }
}
