//! Unit tests of the engine through its public driver API (plus a few internal probes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};
use multiaddr::Multiaddr;

use crate::record::sign_alive;
use crate::wire::{
    Ack, Body, Gossip, MemberRecord, Message, Nack, Ping, PingReq, PushPull, Update, UpdateKind,
};
use crate::{MemberState, NodeMeta, Realm, SwimConfig, SwimEngine, SwimEvent, TransmitKind};

fn key(i: u64) -> Keypair {
    Keypair::from_seed_for_tests(i)
}

fn peer(i: u64) -> PeerId {
    key(i).peer_id()
}

/// Member `i`'s own signed alive update at `inc` with `m`.
fn signed(i: u64, inc: u64, m: Arc<NodeMeta>) -> Update {
    let signature = sign_alive(&key(i), &realm(), inc, &m);
    crate::wire::Update::alive(crate::record::AliveRecord::new(peer(i), inc, m, signature))
}

/// A push-pull record of member `i` in `state` at `inc`, with its own signed alive record at
/// `inc` with `m`.
fn record(i: u64, inc: u64, state: MemberState, m: Arc<NodeMeta>) -> MemberRecord {
    let signature = sign_alive(&key(i), &realm(), inc, &m);
    MemberRecord {
        incarnation: inc,
        state,
        record: crate::record::AliveRecord::new(peer(i), inc, m, signature),
    }
}

fn realm() -> Realm {
    Realm::new("org.example.mesh").unwrap()
}

fn meta(tag: &str) -> Arc<NodeMeta> {
    let a: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
    Arc::new(NodeMeta::new(vec![a], tag.as_bytes().to_vec()).unwrap())
}

fn core(i: u64, cfg: SwimConfig, now: Instant) -> SwimEngine {
    SwimEngine::new(&key(i), [realm()], NodeMeta::empty(), cfg, i, now).unwrap()
}

fn msg(body: Body) -> Message {
    Message {
        realm: realm(),
        body,
    }
}

fn alive(i: u64, inc: u64) -> Update {
    signed(i, inc, meta("m"))
}

fn suspect(i: u64, inc: u64, from: u64) -> Update {
    Update {
        peer: peer(i),
        incarnation: inc,
        kind: UpdateKind::Suspect { from: peer(from) },
    }
}

fn dead(i: u64, inc: u64, from: u64) -> Update {
    Update {
        peer: peer(i),
        incarnation: inc,
        kind: UpdateKind::Dead { from: peer(from) },
    }
}

fn left(i: u64, inc: u64) -> Update {
    Update {
        peer: peer(i),
        incarnation: inc,
        kind: UpdateKind::Left,
    }
}

/// Delivers updates to `c` as a gossip datagram from `from`; except that an alive update
/// about a member `c` does not know yet comes from that member itself (first-hand), so that
/// the member enters at once instead of waiting unconfirmed (docs/swim.md section 3b; the
/// tests of that state use [`gossip_from`]).
fn gossip(c: &mut SwimEngine, now: Instant, from: u64, updates: Vec<Update>) {
    let (first_hand, rest): (Vec<Update>, Vec<Update>) = updates.into_iter().partition(|u| {
        matches!(u.kind, UpdateKind::Alive { .. })
            && u.peer != peer(from)
            && u.peer != c.local_peer_id()
            && c.member(&realm(), &u.peer).is_none()
    });
    for u in first_hand {
        let p = u.peer;
        let bytes = msg(Body::Gossip(Gossip { updates: vec![u] })).encode();
        c.handle_datagram(now, p, &bytes).unwrap();
    }
    gossip_from(c, now, peer(from), rest);
}

/// Delivers updates to `c` as a gossip datagram from `from`, as they are.
fn gossip_from(c: &mut SwimEngine, now: Instant, from: PeerId, updates: Vec<Update>) {
    let bytes = msg(Body::Gossip(Gossip { updates })).encode();
    c.handle_datagram(now, from, &bytes).unwrap();
}

fn events(c: &mut SwimEngine) -> Vec<SwimEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn transmits(c: &mut SwimEngine) -> Vec<crate::Transmit> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn state(c: &SwimEngine, i: u64) -> Option<(MemberState, u64)> {
    c.member(&realm(), &peer(i))
        .map(|m| (m.state, m.incarnation))
}

// ----- a tiny instant-delivery network -----

struct Net {
    nodes: Vec<SwimEngine>,
    now: Instant,
    /// (from, to) pairs whose datagrams are dropped.
    cut: Vec<(usize, usize)>,
    down: Vec<bool>,
    events: Vec<(usize, SwimEvent)>,
    /// When set, every datagram sent, delivered or not: (from, to, body).
    sent: Option<Vec<(usize, usize, Body)>>,
}

impl Net {
    fn new(n: usize, cfg: SwimConfig) -> Self {
        let now = Instant::now();
        let nodes = (0..n).map(|i| core(i as u64, cfg.clone(), now)).collect();
        Net {
            nodes,
            now,
            cut: Vec::new(),
            down: vec![false; n],
            events: Vec::new(),
            sent: None,
        }
    }

    fn index(&self, p: &PeerId) -> Option<usize> {
        self.nodes.iter().position(|n| n.local_peer_id() == *p)
    }

    fn deliver(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.nodes[i].poll_transmit() {
                    moved = true;
                    let Some(j) = self.index(&t.to) else { continue };
                    if self.down[i] || self.down[j] {
                        if t.kind == TransmitKind::PushPull && !self.down[i] {
                            let now = self.now;
                            self.nodes[i].handle_push_pull_failed(now, t.to, &realm());
                        }
                        continue;
                    }
                    let from = self.nodes[i].local_peer_id();
                    let now = self.now;
                    match t.kind {
                        TransmitKind::Datagram => {
                            if let Some(sent) = self.sent.as_mut() {
                                sent.push((i, j, t.message.body.clone()));
                            }
                            if self.cut.contains(&(i, j)) {
                                continue;
                            }
                            let bytes = t.message.encode();
                            assert!(bytes.len() <= self.nodes[i].config().mtu);
                            self.nodes[j].handle_datagram(now, from, &bytes).unwrap();
                        }
                        TransmitKind::PushPull => {
                            let req = crate::wire::encode_frame(&t.message);
                            let (len, pre) = crate::wire::decode_frame_len(&req, 1 << 22)
                                .unwrap()
                                .unwrap();
                            let reply = self.nodes[j]
                                .handle_push_pull_bytes(now, from, &req[pre..pre + len])
                                .unwrap();
                            if let Some(reply) = reply {
                                let to = self.nodes[j].local_peer_id();
                                assert!(self.nodes[i]
                                    .handle_push_pull_bytes(now, to, &reply)
                                    .unwrap()
                                    .is_none());
                            }
                        }
                    }
                }
            }
            for i in 0..self.nodes.len() {
                while let Some(e) = self.nodes[i].poll_event() {
                    self.events.push((i, e));
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(10);
            for i in 0..self.nodes.len() {
                if self.down[i] {
                    continue;
                }
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    let now = self.now;
                    self.nodes[i].handle_timeout(now);
                }
            }
            self.deliver();
        }
    }

    fn join_all(&mut self) {
        let seed = self.nodes[0].local_peer_id();
        for i in 1..self.nodes.len() {
            let now = self.now;
            self.nodes[i].join(now, &realm(), &[seed]).unwrap();
            self.deliver();
        }
    }
}

// ----- precedence and state transitions -----

#[test]
fn alive_precedence() {
    let now = Instant::now();
    let mut c = core(0, SwimConfig::default(), now);
    gossip(&mut c, now, 9, vec![alive(1, 3)]);
    assert_eq!(state(&c, 1), Some((MemberState::Alive, 3)));
    assert!(matches!(
        events(&mut c)[..],
        [SwimEvent::MemberJoined { .. }]
    ));
    // Lower or equal incarnation: ignored.
    gossip(&mut c, now, 9, vec![alive(1, 2), alive(1, 3)]);
    assert!(events(&mut c).is_empty());
    // Suspect(3) overrides alive(3); alive(3) does not override suspect(3).
    gossip(&mut c, now, 9, vec![suspect(1, 3, 9)]);
    assert_eq!(state(&c, 1), Some((MemberState::Suspect, 3)));
    gossip(&mut c, now, 9, vec![alive(1, 3)]);
    assert_eq!(state(&c, 1), Some((MemberState::Suspect, 3)));
    // Alive(4) overrides suspect(3): refuted.
    gossip(&mut c, now, 9, vec![alive(1, 4)]);
    assert_eq!(state(&c, 1), Some((MemberState::Alive, 4)));
    let ev = events(&mut c);
    assert!(
        matches!(
            ev[..],
            [
                SwimEvent::MemberSuspected { .. },
                SwimEvent::MemberRefuted { .. }
            ]
        ),
        "{ev:?}"
    );
    assert_eq!(c.stats(&realm()).unwrap().false_suspicions, 1);
    // New metadata at a higher incarnation: updated.
    let u = signed(1, 5, meta("other"));
    gossip(&mut c, now, 9, vec![u]);
    assert!(matches!(
        events(&mut c)[..],
        [SwimEvent::MemberUpdated { .. }]
    ));
}

#[test]
fn suspect_precedence() {
    let now = Instant::now();
    let mut c = core(0, SwimConfig::default(), now);
    gossip(&mut c, now, 9, vec![alive(1, 3)]);
    events(&mut c);
    gossip(&mut c, now, 9, vec![suspect(1, 2, 9)]);
    assert_eq!(
        state(&c, 1),
        Some((MemberState::Alive, 3)),
        "older suspicion ignored"
    );
    gossip(&mut c, now, 9, vec![suspect(1, 5, 9)]);
    assert_eq!(
        state(&c, 1),
        Some((MemberState::Suspect, 5)),
        "suspect(i) overrides alive(i') for i >= i'"
    );
    // A newer suspicion of a suspect starts a new one.
    gossip(&mut c, now, 9, vec![suspect(1, 6, 8)]);
    assert_eq!(state(&c, 1), Some((MemberState::Suspect, 6)));
    // Suspicions of unknown members are ignored.
    gossip(&mut c, now, 9, vec![suspect(2, 0, 9)]);
    assert_eq!(state(&c, 2), None);
    let ev = events(&mut c);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, SwimEvent::MemberSuspected { .. }))
            .count(),
        2
    );
}

#[test]
fn dead_and_left_override_at_equal_or_higher_incarnation() {
    let now = Instant::now();
    let mut c = core(0, SwimConfig::default(), now);
    gossip(&mut c, now, 9, vec![alive(1, 3), alive(2, 3), alive(3, 3)]);
    events(&mut c);
    gossip(&mut c, now, 9, vec![dead(1, 2, 9)]);
    assert_eq!(
        state(&c, 1),
        Some((MemberState::Alive, 3)),
        "older death ignored"
    );
    gossip(&mut c, now, 9, vec![dead(1, 3, 9), suspect(2, 3, 9)]);
    assert_eq!(state(&c, 1), Some((MemberState::Dead, 3)));
    gossip(&mut c, now, 9, vec![dead(2, 3, 9)]);
    assert_eq!(
        state(&c, 2),
        Some((MemberState::Dead, 3)),
        "dead overrides suspect"
    );
    gossip(&mut c, now, 9, vec![left(3, 4)]);
    assert_eq!(state(&c, 3), Some((MemberState::Left, 4)));
    // Nothing overrides dead/left but an alive with a higher incarnation.
    gossip(
        &mut c,
        now,
        9,
        vec![suspect(1, 9, 9), alive(1, 3), left(1, 9)],
    );
    assert_eq!(state(&c, 1), Some((MemberState::Dead, 3)));
    gossip(&mut c, now, 9, vec![alive(1, 4)]);
    assert_eq!(state(&c, 1), Some((MemberState::Alive, 4)), "rejoined");
    let ev = events(&mut c);
    let kinds: Vec<&str> = ev
        .iter()
        .map(|e| match e {
            SwimEvent::MemberFailed { .. } => "failed",
            SwimEvent::MemberLeft { .. } => "left",
            SwimEvent::MemberJoined { .. } => "joined",
            SwimEvent::MemberSuspected { .. } => "suspected",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["failed", "suspected", "failed", "left", "joined"]);
    assert_eq!(c.live_member_count(&realm()), 1);
}

#[test]
fn dead_members_are_forgotten_after_retention() {
    let now = Instant::now();
    let cfg = SwimConfig::default();
    let mut c = core(0, cfg.clone(), now);
    gossip(&mut c, now, 9, vec![alive(1, 0), dead(1, 0, 9)]);
    c.handle_timeout(now + cfg.dead_retention - Duration::from_millis(1));
    assert!(state(&c, 1).is_some());
    c.handle_timeout(now + cfg.dead_retention);
    assert_eq!(state(&c, 1), None);
}

// ----- incarnations and refutation -----

#[test]
fn refutes_suspicion_of_itself() {
    let now = Instant::now();
    let mut c = core(0, SwimConfig::default(), now);
    assert_eq!(c.incarnation(&realm()), Some(0));
    // A ping carrying the suspicion (buddy system): the ack carries the refutation first.
    let ping = msg(Body::Ping(Ping {
        seq: 7,
        updates: vec![suspect(0, 0, 9)],
    }));
    c.handle_datagram(now, peer(9), &ping.encode()).unwrap();
    assert_eq!(c.incarnation(&realm()), Some(1));
    assert_eq!(c.local_health(&realm()), Some(1), "refuting raises LHM");
    let t = transmits(&mut c);
    let Body::Ack(ack) = &t[0].message.body else {
        panic!("{t:?}")
    };
    assert_eq!(ack.seq, 7);
    assert_eq!(ack.updates[0].peer, peer(0));
    assert_eq!(ack.updates[0].incarnation, 1);
    assert!(matches!(ack.updates[0].kind, UpdateKind::Alive { .. }));
    // Suspected at a higher incarnation: jump above it.
    gossip(&mut c, now, 9, vec![suspect(0, 5, 9)]);
    assert_eq!(c.incarnation(&realm()), Some(6));
    // Declared dead: refute too.
    gossip(&mut c, now, 9, vec![dead(0, 6, 9)]);
    assert_eq!(c.incarnation(&realm()), Some(7));
    // An alive about us at a higher incarnation (a previous life): take over.
    gossip(&mut c, now, 9, vec![alive(0, 10)]);
    assert_eq!(c.incarnation(&realm()), Some(11));
    assert_eq!(c.stats(&realm()).unwrap().refutations, 4);
    // A stale accusation: no bump, but the current incarnation is announced again.
    transmits(&mut c);
    let mut c2 = core(0, SwimConfig::default(), now);
    gossip(&mut c2, now, 9, vec![suspect(0, 0, 9)]);
    assert_eq!(c2.incarnation(&realm()), Some(1));
    // Exhaust the fresh announcement, then accuse the old incarnation again.
    for s in 0..3 {
        let p = msg(Body::Ping(Ping {
            seq: s,
            updates: vec![],
        }));
        c2.handle_datagram(now, peer(9), &p.encode()).unwrap();
    }
    transmits(&mut c2);
    let p = msg(Body::Ping(Ping {
        seq: 50,
        updates: vec![suspect(0, 0, 8)],
    }));
    c2.handle_datagram(now, peer(8), &p.encode()).unwrap();
    assert_eq!(
        c2.incarnation(&realm()),
        Some(1),
        "no bump for a stale accusation"
    );
    assert_eq!(c2.stats(&realm()).unwrap().reannouncements, 1);
    let t = transmits(&mut c2);
    let Body::Ack(ack) = &t[0].message.body else {
        panic!()
    };
    assert_eq!(
        (ack.updates[0].peer, ack.updates[0].incarnation),
        (peer(0), 1)
    );
}

#[test]
fn local_metadata_change_bumps_incarnation_and_spreads() {
    let mut net = Net::new(3, SwimConfig::default());
    net.join_all();
    net.run(Duration::from_secs(5));
    let now = net.now;
    let m = NodeMeta::new(vec![], b"v2".to_vec()).unwrap();
    net.nodes[2].set_metadata(now, m).unwrap();
    assert_eq!(net.nodes[2].incarnation(&realm()), Some(1));
    net.run(Duration::from_secs(5));
    for i in 0..2 {
        let m = net.nodes[i].member(&realm(), &peer(2)).unwrap();
        assert_eq!(&m.data()[..], b"v2");
    }
    assert!(net
        .events
        .iter()
        .any(|(_, e)| matches!(e, SwimEvent::MemberUpdated { .. })));
    let too_big = NodeMeta::new(vec![], vec![0u8; 600]).unwrap();
    assert!(net.nodes[2].set_metadata(now, too_big).is_err());
}

// ----- dissemination limits -----

#[test]
fn piggyback_respects_retransmit_limit() {
    let now = Instant::now();
    let cfg = SwimConfig {
        gossip_interval: None,
        ..SwimConfig::default()
    };
    let mut c = core(0, cfg.clone(), now);
    // 20 members: limit = 4 × ⌈log10(21 + 1)⌉ = 8 (21 members counting us).
    let updates: Vec<Update> = (1..=20).map(|i| alive(i, 0)).collect();
    gossip(&mut c, now, 1, updates);
    let limit = cfg.retransmit_limit(21) as usize;
    assert_eq!(limit, 8);
    let mut seen = 0;
    for s in 0..50 {
        let p = msg(Body::Ping(Ping {
            seq: s,
            updates: vec![],
        }));
        c.handle_datagram(now, peer(1), &p.encode()).unwrap();
        for t in transmits(&mut c) {
            seen += t
                .message
                .body
                .updates()
                .iter()
                .filter(|u| u.peer == peer(5))
                .count();
        }
    }
    assert_eq!(
        seen, limit,
        "each update piggybacked exactly λ·⌈log10(N+1)⌉ times"
    );
    assert_eq!(
        c.membership(&realm()).queue_transmits(&peer(5)),
        None,
        "then dropped"
    );
}

#[test]
fn datagrams_never_exceed_the_mtu() {
    let now = Instant::now();
    for mtu in [800usize, 1200, 1400] {
        let cfg = SwimConfig {
            mtu,
            ..SwimConfig::default()
        };
        let mut c = core(0, cfg.clone(), now);
        // 60 members with maximal metadata (512 bytes encoded).
        let addr: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let data_len = 512 - (1 + 1 + addr.len() + 2);
        let big = Arc::new(NodeMeta::new(vec![addr], vec![7u8; data_len]).unwrap());
        assert_eq!(big.encoded_len(), 512);
        let updates: Vec<Update> = (1..=60).map(|i| signed(i, 0, big.clone())).collect();
        for chunk in updates.chunks(2) {
            gossip(&mut c, now, 1, chunk.to_vec());
        }
        let mut max = 0;
        let mut t_now = now;
        for s in 0..200u32 {
            let p = msg(Body::PingReq(PingReq {
                seq: s,
                target: peer(3),
                nack_timeout_ms: 100,
                updates: vec![],
            }));
            c.handle_datagram(t_now, peer(1), &p.encode()).unwrap();
            t_now += Duration::from_millis(50);
            c.handle_timeout(t_now);
            for t in transmits(&mut c) {
                if t.kind == TransmitKind::Datagram {
                    let len = t.message.encode().len();
                    assert_eq!(len, t.message.encoded_len());
                    assert!(len <= mtu, "{len} > {mtu}");
                    max = max.max(len);
                }
            }
        }
        assert!(max > mtu / 2, "updates were piggybacked ({max})");
    }
}

// ----- realms -----

#[test]
fn realms_are_isolated() {
    let now = Instant::now();
    let other = Realm::new("org.example.other").unwrap();
    let mut c = core(0, SwimConfig::default(), now);
    let m = Message {
        realm: other.clone(),
        body: Body::Gossip(Gossip {
            updates: vec![alive(1, 0)],
        }),
    };
    c.handle_datagram(now, peer(9), &m.encode()).unwrap();
    assert_eq!(c.core_stats().foreign_realm_messages, 1);
    assert!(c.members(&realm()).is_empty());
    assert!(c.join(now, &other, &[peer(1)]).is_err());

    // A engine in two realms keeps two memberships.
    let mut two = SwimEngine::new(
        &key(0),
        [realm(), other.clone()],
        NodeMeta::empty(),
        SwimConfig::default(),
        1,
        now,
    )
    .unwrap();
    two.handle_message(
        now,
        peer(1),
        Message {
            realm: other.clone(),
            body: Body::Gossip(Gossip {
                updates: vec![{
                    // Signed for the other realm: a record signed for one realm is
                    // refused in another.
                    let m = meta("m");
                    let signature = sign_alive(&key(1), &other, 0, &m);
                    crate::wire::Update::alive(crate::record::AliveRecord::new(
                        peer(1),
                        0,
                        m,
                        signature,
                    ))
                }],
            }),
        },
    );
    two.handle_message(
        now,
        peer(2),
        msg(Body::Gossip(Gossip {
            updates: vec![alive(2, 0)],
        })),
    );
    assert_eq!(
        two.members(&other)
            .iter()
            .map(|m| m.peer)
            .collect::<Vec<_>>(),
        vec![peer(1)]
    );
    assert_eq!(
        two.members(&realm())
            .iter()
            .map(|m| m.peer)
            .collect::<Vec<_>>(),
        vec![peer(2)]
    );
    let ev: Vec<Realm> = events(&mut two).iter().map(|e| e.realm().clone()).collect();
    assert_eq!(ev, vec![other, realm()]);
}

// ----- probing -----

#[test]
fn round_robin_probes_every_member_once_per_round() {
    let now = Instant::now();
    let cfg = SwimConfig {
        gossip_interval: None,
        push_pull_interval: None,
        ..SwimConfig::default()
    };
    let mut c = core(0, cfg, now);
    gossip(&mut c, now, 1, (1..=10).map(|i| alive(i, 0)).collect());
    let mut t = now;
    let mut targets = Vec::new();
    for _ in 0..20 {
        t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        for tr in transmits(&mut c) {
            if let Body::Ping(p) = &tr.message.body {
                // Answer at once so no probe fails.
                let ack = msg(Body::Ack(Ack {
                    seq: p.seq,
                    updates: vec![],
                }));
                targets.push(tr.to);
                c.handle_datagram(t, tr.to, &ack.encode()).unwrap();
            }
        }
    }
    assert_eq!(targets.len(), 20);
    for round in targets.chunks(10) {
        let mut r = round.to_vec();
        r.sort();
        r.dedup();
        assert_eq!(r.len(), 10, "each member once per round");
    }
    assert_ne!(targets[..10], targets[10..], "reshuffled between rounds");
    let _ = t;
}

#[test]
fn ping_req_path_relays_the_ack() {
    let mut net = Net::new(5, SwimConfig::default());
    net.join_all();
    net.run(Duration::from_secs(3));
    // 0 cannot reach 4 directly (either way), the others can.
    net.cut = vec![(0, 4), (4, 0)];
    net.run(Duration::from_secs(30));
    let s0 = net.nodes[0].stats(&realm()).unwrap();
    assert!(s0.probes_acked_indirect > 0, "{s0:?}");
    assert!(s0.ping_reqs_sent >= 3);
    let served: u64 = (1..4)
        .map(|i| net.nodes[i].stats(&realm()).unwrap().acks_relayed)
        .sum();
    assert!(served > 0);
    assert_eq!(
        state(&net.nodes[0], 4).map(|s| s.0),
        Some(MemberState::Alive)
    );
    assert!(!net
        .events
        .iter()
        .any(|(_, e)| matches!(e, SwimEvent::MemberFailed { .. })));
}

#[test]
fn crashed_member_is_detected_and_declared_failed() {
    let mut net = Net::new(6, SwimConfig::default());
    net.join_all();
    net.run(Duration::from_secs(3));
    net.down[5] = true;
    net.run(Duration::from_secs(25));
    for i in 0..5 {
        assert_eq!(
            state(&net.nodes[i], 5).map(|s| s.0),
            Some(MemberState::Dead),
            "node {i}"
        );
        assert!(net.events.iter().any(|(n, e)| *n == i
            && matches!(e, SwimEvent::MemberFailed { peer: p, .. } if *p == peer(5))));
    }
    // Forgotten after the retention time.
    net.run(Duration::from_secs(35));
    assert_eq!(state(&net.nodes[0], 5), None);
    // Helpers answered the failed ping-reqs with nacks.
    let nacks: u64 = (0..5)
        .map(|i| net.nodes[i].stats(&realm()).unwrap().nacks_received)
        .sum();
    assert!(nacks > 0);
}

#[test]
fn a_cut_off_node_keeps_its_failure_declarations_and_rejoins_cleanly() {
    // No anti-entropy: the isolation below cuts datagrams only.
    let cfg = SwimConfig {
        push_pull_interval: None,
        ..SwimConfig::default()
    };
    let mut net = Net::new(5, cfg);
    net.join_all();
    net.run(Duration::from_secs(5));
    for j in 0..4 {
        net.cut.push((4, j));
        net.cut.push((j, 4));
    }
    net.sent = Some(Vec::new());
    // Until node 4 has declared every other member failed (it is alone).
    let mut waited = 0;
    while net.nodes[4].live_member_count(&realm()) > 0 {
        net.run(Duration::from_secs(1));
        waited += 1;
        assert!(waited < 200, "node 4 never gave up on the others");
    }
    // The others gave up on node 4 long before.
    for i in 0..4 {
        assert_eq!(net.nodes[i].live_member_count(&realm()), 3, "node {i}");
    }
    assert!((0..4).all(|i| state(&net.nodes[4], i).is_some_and(|s| s.0 == MemberState::Dead)));
    // The link is back; alone, node 4 joins again through node 0.
    net.cut.clear();
    let mark = net.events.len();
    let now = net.now;
    net.nodes[4].join(now, &realm(), &[peer(0)]).unwrap();
    net.deliver();
    net.run(Duration::from_secs(10));
    // Its failure declarations, made hearing from nobody, were never sent (packets sent
    // into a broken link can arrive late); the others', made while hearing each other, were.
    assert_eq!(net.nodes[4].stats(&realm()).unwrap().failures_kept_local, 4);
    assert!((0..4).all(|i| net.nodes[i].stats(&realm()).unwrap().failures_kept_local == 0));
    assert!(net.sent.iter().flatten().any(|(from, _, b)| *from < 4
        && b.updates()
            .iter()
            .any(|u| u.peer == peer(4) && matches!(u.kind, UpdateKind::Dead { .. }))));
    let leaked: Vec<_> = net
        .sent
        .iter()
        .flatten()
        .filter(|(from, _, b)| {
            *from == 4
                && b.updates()
                    .iter()
                    .any(|u| matches!(u.kind, UpdateKind::Dead { .. }))
        })
        .collect();
    assert!(leaked.is_empty(), "node 4 spread failures: {leaked:?}");
    let wrong: Vec<_> = net.events[mark..]
        .iter()
        .filter(|(_, e)| matches!(e, SwimEvent::MemberFailed { peer: p, .. } if *p != peer(4)))
        .collect();
    assert!(wrong.is_empty(), "live members declared failed: {wrong:?}");
    for i in 0..5 {
        assert_eq!(net.nodes[i].live_member_count(&realm()), 4, "node {i}");
    }
    // Node 4 learned the others back from the seed's table at once.
    assert!(net.events[mark..].iter().any(|(n, e)| *n == 4
        && matches!(e, SwimEvent::MemberJoined { member, .. } if member.peer == peer(3))));
}

#[test]
fn local_health_multiplier_moves() {
    let now = Instant::now();
    let cfg = SwimConfig {
        gossip_interval: None,
        push_pull_interval: None,
        ..SwimConfig::default()
    };
    // Two members only: no helper, so a failed probe counts +1.
    let mut c = core(0, cfg.clone(), now);
    gossip(&mut c, now, 1, vec![alive(1, 0)]);
    // Run until the first probe (never answered) failed.
    let mut guard = 0;
    while c.stats(&realm()).unwrap().probes_failed == 0 && guard < 100 {
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        transmits(&mut c);
        guard += 1;
    }
    assert_eq!(c.local_health(&realm()), Some(1));
    // Saturates at awareness_max (here through refutations, +1 each).
    for inc in 0..20 {
        gossip(&mut c, now, 1, vec![suspect(0, 10 + 2 * inc, 1)]);
    }
    assert_eq!(c.local_health(&realm()), Some(cfg.awareness_max));

    // A successful probe lowers it by one.
    let mut c = core(0, cfg.clone(), now);
    gossip(&mut c, now, 1, vec![suspect(0, 0, 1)]);
    assert_eq!(c.local_health(&realm()), Some(1), "refuting raised it");
    gossip(&mut c, now, 1, vec![alive(1, 0)]);
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    for tr in transmits(&mut c) {
        if let Body::Ping(p) = &tr.message.body {
            let ack = msg(Body::Ack(Ack {
                seq: p.seq,
                updates: vec![],
            }));
            c.handle_datagram(t, tr.to, &ack.encode()).unwrap();
        }
    }
    assert_eq!(c.local_health(&realm()), Some(0));

    // With helpers: nacks from every helper cost nothing; missed nacks count one each.
    for nacking in [3usize, 1] {
        let mut c = core(0, cfg.clone(), now);
        gossip(&mut c, now, 1, (1..=5).map(|i| alive(i, 0)).collect());
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        let ping = transmits(&mut c);
        let target = ping[0].to;
        // No ack; at the probe timeout, ping-reqs go to 3 helpers (and the ping is retried).
        let t2 = c.poll_timeout().unwrap();
        c.handle_timeout(t2);
        let reqs: Vec<_> = transmits(&mut c)
            .into_iter()
            .filter(|t| matches!(t.message.body, Body::PingReq(_)))
            .collect();
        assert_eq!(reqs.len(), 3);
        for r in reqs.iter().take(nacking) {
            let Body::PingReq(pr) = &r.message.body else {
                unreachable!()
            };
            assert_eq!(pr.target, target);
            assert!(pr.nack_timeout_ms > 0);
            let nack = msg(Body::Nack(Nack {
                seq: pr.seq,
                updates: vec![],
            }));
            c.handle_datagram(t2, r.to, &nack.encode()).unwrap();
        }
        // End of the period: the probe failed.
        let end = c.poll_timeout().unwrap();
        c.handle_timeout(end);
        let s = c.stats(&realm()).unwrap();
        assert_eq!(s.probes_failed, 1);
        assert_eq!(c.local_health(&realm()), Some(3 - nacking as u32));
        assert_eq!(
            c.member(&realm(), &target).unwrap().state,
            MemberState::Suspect
        );
    }
}

#[test]
fn lhm_scales_probe_interval_and_timeout() {
    let now = Instant::now();
    let cfg = SwimConfig {
        gossip_interval: None,
        push_pull_interval: None,
        ..SwimConfig::default()
    };
    let mut c = core(0, cfg.clone(), now);
    gossip(
        &mut c,
        now,
        1,
        vec![
            alive(1, 0),
            suspect(0, 0, 1),
            suspect(0, 1, 1),
            suspect(0, 2, 1),
        ],
    );
    assert_eq!(c.local_health(&realm()), Some(3));
    let t0 = c.poll_timeout().unwrap();
    c.handle_timeout(t0);
    transmits(&mut c);
    // Indirect phase at 4 × probe_timeout, next period at 4 × probe_interval.
    let t1 = c.poll_timeout().unwrap();
    assert_eq!(t1 - t0, cfg.probe_timeout * 4);
    c.handle_timeout(t1);
    transmits(&mut c);
    let t2 = c.poll_timeout().unwrap();
    assert_eq!(t2 - t0, cfg.probe_interval * 4);
}

#[test]
fn suspicion_timeout_shrinks_with_confirmations() {
    let now = Instant::now();
    let cfg = SwimConfig::default();
    let mut c = core(0, cfg.clone(), now);
    // 10 members (11 with us): min = 4 × log10(11) s, max = 6 × min, k = 2.
    gossip(&mut c, now, 1, (1..=10).map(|i| alive(i, 0)).collect());
    gossip(&mut c, now, 1, vec![suspect(5, 0, 1)]);
    let min = cfg.suspicion_min_timeout(11);
    let (n, d0) = c.suspicion(&realm(), &peer(5)).unwrap();
    assert_eq!((n, d0 - now), (0, min * 6));
    gossip(&mut c, now, 2, vec![suspect(5, 0, 1)]);
    assert_eq!(
        c.suspicion(&realm(), &peer(5)).unwrap().0,
        0,
        "the accuser again: no confirmation"
    );
    gossip(&mut c, now, 2, vec![suspect(5, 0, 2)]);
    let (n, d1) = c.suspicion(&realm(), &peer(5)).unwrap();
    assert_eq!(n, 1);
    assert!(d1 < d0 && d1 - now > min);
    gossip(&mut c, now, 3, vec![suspect(5, 0, 3)]);
    let (n, d2) = c.suspicion(&realm(), &peer(5)).unwrap();
    assert_eq!((n, d2 - now), (2, min));
    // Declared failed at the deadline.
    c.handle_timeout(d2);
    assert_eq!(state(&c, 5), Some((MemberState::Dead, 0)));
    assert_eq!(c.stats(&realm()).unwrap().failures_declared, 1);
    // Without Lifeguard: a fixed timeout of the minimum.
    let mut plain = core(0, SwimConfig::without_lifeguard(), now);
    gossip(&mut plain, now, 1, (1..=10).map(|i| alive(i, 0)).collect());
    gossip(&mut plain, now, 1, vec![suspect(5, 0, 1)]);
    assert_eq!(plain.suspicion(&realm(), &peer(5)).unwrap().1 - now, min);
}

/// Regression (10,000-member simulation, docs/swim.md section 8): suspicions taken from push-pull
/// tables used to become this node's own accusations, gossiped as such, so that at scale
/// every false suspicion collected its confirmations within seconds (a push-pull every few
/// milliseconds in the group) and fell to the minimum timeout; the few nodes that then missed
/// the refutation declared a live member failed.
#[test]
fn a_suspicion_from_a_push_pull_table_is_hearsay() {
    let now = Instant::now();
    // No probe fails (and accuses) during the test.
    let cfg = SwimConfig {
        probe_interval: Duration::from_secs(3600),
        ..SwimConfig::default()
    };
    let mut c = core(0, cfg.clone(), now);
    gossip(&mut c, now, 1, (1..=10).map(|i| alive(i, 0)).collect());
    let max = cfg.suspicion_min_timeout(11) * cfg.suspicion_max_timeout_mult;
    // Member 6 is suspect by gossip (accuser 1); member 5 we hold alive.
    gossip(&mut c, now, 1, vec![suspect(6, 0, 1)]);
    events(&mut c);
    let table = |partner: u64| {
        msg(Body::PushPull(PushPull {
            join: false,
            response: false,
            members: vec![
                record(partner, 0, MemberState::Alive, meta("m")),
                record(5, 0, MemberState::Suspect, meta("m")),
                record(6, 0, MemberState::Suspect, meta("m")),
            ],
        }))
    };
    assert!(c.handle_push_pull(now, peer(2), table(2)).is_some());
    // Member 6: the partner's table is no independent confirmation.
    assert_eq!(c.suspicion(&realm(), &peer(6)), Some((0, now + max)));
    // Member 5: suspect, at the maximum timeout, reported with the partner as accuser.
    assert_eq!(c.suspicion(&realm(), &peer(5)), Some((0, now + max)));
    assert!(events(&mut c).iter().any(|e| matches!(
        e,
        SwimEvent::MemberSuspected { peer: p, accuser, .. } if *p == peer(5) && *accuser == peer(2)
    )));
    assert!(c.handle_push_pull(now, peer(3), table(3)).is_some());
    assert_eq!(c.suspicion(&realm(), &peer(5)), Some((0, now + max)));
    assert_eq!(c.suspicion(&realm(), &peer(6)), Some((0, now + max)));
    let st = c.stats(&realm()).unwrap();
    assert_eq!((st.hearsay_suspicions, st.suspicion_confirmations), (1, 0));
    // Nothing of it is gossiped as this node's accusation (the buddy update in a ping to the
    // suspect itself aside).
    let mut t = now;
    for _ in 0..10 {
        t += cfg.gossip_interval.unwrap();
        c.handle_timeout(t);
        for tr in transmits(&mut c).into_iter().filter(|tr| tr.to != peer(5)) {
            assert!(
                !tr.message.body.updates().iter().any(|u| matches!(
                    u.kind,
                    UpdateKind::Suspect { from } if u.peer == peer(5) || from == peer(0)
                )),
                "{:?}",
                tr.message.body
            );
        }
    }
    // The first accuser heard of takes the hearsay's place (no confirmation, it is spread
    // on); the next one is a confirmation.
    gossip(&mut c, t, 1, vec![suspect(5, 0, 1)]);
    assert_eq!(c.suspicion(&realm(), &peer(5)), Some((0, now + max)));
    gossip(&mut c, t, 2, vec![suspect(5, 0, 2)]);
    assert_eq!(c.suspicion(&realm(), &peer(5)).map(|s| s.0), Some(1));
    // The member refutes as usual.
    gossip(&mut c, t, 5, vec![alive(5, 1)]);
    assert_eq!(state(&c, 5), Some((MemberState::Alive, 1)));
}

#[test]
fn buddy_system_tells_the_suspect() {
    let now = Instant::now();
    let cfg = SwimConfig {
        gossip_interval: None,
        push_pull_interval: None,
        ..SwimConfig::default()
    };
    let mut c = core(0, cfg.clone(), now);
    gossip(&mut c, now, 1, vec![alive(1, 0)]);
    gossip(&mut c, now, 2, vec![suspect(1, 0, 2)]);
    // Drain the queue so only the buddy mechanism could put the suspicion in the ping.
    for s in 0..20 {
        let p = msg(Body::Ping(Ping {
            seq: s,
            updates: vec![],
        }));
        c.handle_datagram(now, peer(2), &p.encode()).unwrap();
    }
    transmits(&mut c);
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    let ping = transmits(&mut c)
        .into_iter()
        .find(|t| matches!(t.message.body, Body::Ping(_)))
        .unwrap();
    assert_eq!(ping.to, peer(1));
    let first = &ping.message.body.updates()[0];
    assert_eq!((first.peer, first.incarnation), (peer(1), 0));
    assert!(matches!(first.kind, UpdateKind::Suspect { .. }));
    // Without the buddy system the ping is bare.
    let mut plain = core(
        0,
        SwimConfig {
            buddy: false,
            ..cfg
        },
        now,
    );
    gossip(&mut plain, now, 1, vec![alive(1, 0)]);
    gossip(&mut plain, now, 2, vec![suspect(1, 0, 2)]);
    for s in 0..20 {
        let p = msg(Body::Ping(Ping {
            seq: s,
            updates: vec![],
        }));
        plain.handle_datagram(now, peer(2), &p.encode()).unwrap();
    }
    transmits(&mut plain);
    let t = plain.poll_timeout().unwrap();
    plain.handle_timeout(t);
    let ping = transmits(&mut plain)
        .into_iter()
        .find(|t| matches!(t.message.body, Body::Ping(_)))
        .unwrap();
    assert!(ping.message.body.updates().is_empty());
}

// ----- join, push-pull, leave -----

#[test]
fn join_push_pull_and_failure() {
    let mut net = Net::new(4, SwimConfig::default());
    net.join_all();
    // The joiners know everyone at once; earlier members learn later joiners by gossip.
    assert_eq!(net.nodes[3].live_member_count(&realm()), 3);
    net.run(Duration::from_secs(2));
    for i in 0..4 {
        assert_eq!(net.nodes[i].live_member_count(&realm()), 3, "node {i}");
    }
    // A seed that cannot be reached: JoinFailed.
    let now = net.now;
    let mut lone = core(7, SwimConfig::default(), now);
    lone.join(now, &realm(), &[peer(8)]).unwrap();
    let t = transmits(&mut lone);
    assert_eq!(t[0].kind, TransmitKind::PushPull);
    lone.handle_push_pull_failed(now, peer(8), &realm());
    assert!(matches!(
        events(&mut lone)[..],
        [SwimEvent::JoinFailed { .. }]
    ));
    // And by timeout when the driver never reports.
    lone.join(now, &realm(), &[peer(8)]).unwrap();
    transmits(&mut lone);
    lone.handle_timeout(now + SwimConfig::default().push_pull_timeout);
    assert!(matches!(
        events(&mut lone)[..],
        [SwimEvent::JoinFailed { .. }]
    ));
    // Unsolicited push-pull answers are ignored.
    let answer = msg(Body::PushPull(PushPull {
        join: false,
        response: true,
        members: vec![record(3, 0, MemberState::Alive, meta("x"))],
    }));
    assert!(lone.handle_push_pull(now, peer(8), answer).is_none());
    assert!(lone.members(&realm()).is_empty());
}

#[test]
fn push_pull_state_is_bounded() {
    let now = Instant::now();
    let cfg = SwimConfig {
        max_push_pull_members: 10,
        ..SwimConfig::default()
    };
    let mut c = core(0, cfg, now);
    gossip(&mut c, now, 1, (1..=50).map(|i| alive(i, 0)).collect());
    transmits(&mut c);
    c.join(now, &realm(), &[peer(1)]).unwrap();
    let t = transmits(&mut c);
    let Body::PushPull(pp) = &t[0].message.body else {
        panic!()
    };
    assert!(pp.join && !pp.response);
    assert_eq!(pp.members.len(), 10);
    assert_eq!(*pp.members[0].peer(), peer(0), "the sender first");
    let mut ids: Vec<PeerId> = pp.members.iter().map(|r| *r.peer()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    // A request is answered with a (bounded) response and merged.
    let req = msg(Body::PushPull(PushPull {
        join: true,
        response: false,
        members: vec![record(77, 2, MemberState::Alive, meta("j"))],
    }));
    let answer = c.handle_push_pull(now, peer(77), req).unwrap();
    let Body::PushPull(pp) = &answer.body else {
        panic!()
    };
    assert!(pp.response && pp.members.len() == 10);
    assert_eq!(state(&c, 77), Some((MemberState::Alive, 2)));
}

#[test]
fn graceful_leave() {
    let mut net = Net::new(6, SwimConfig::default());
    net.join_all();
    net.run(Duration::from_secs(3));
    let now = net.now;
    net.nodes[5].leave(now);
    assert!(net.nodes[5].has_left());
    assert_eq!(net.nodes[5].poll_timeout(), None);
    assert_eq!(net.nodes[5].incarnation(&realm()), Some(1));
    net.deliver();
    net.run(Duration::from_secs(5));
    for i in 0..5 {
        assert_eq!(
            state(&net.nodes[i], 5),
            Some((MemberState::Left, 1)),
            "node {i}"
        );
    }
    assert!(net
        .events
        .iter()
        .any(|(_, e)| matches!(e, SwimEvent::MemberLeft { .. })));
    assert!(!net
        .events
        .iter()
        .any(|(_, e)| matches!(e, SwimEvent::MemberFailed { .. })));
}

#[test]
fn core_rejects_bad_setup() {
    let now = Instant::now();
    let big = NodeMeta::new(vec![], vec![0u8; 600]).unwrap();
    assert!(SwimEngine::new(&key(0), [realm()], big, SwimConfig::default(), 0, now).is_err());
    assert!(SwimEngine::new(
        &key(0),
        Vec::<Realm>::new(),
        NodeMeta::empty(),
        SwimConfig::default(),
        0,
        now
    )
    .is_err());
    let mut c = core(0, SwimConfig::default(), now);
    assert!(c.handle_datagram(now, peer(1), &[1, 99]).is_err());
    assert!(c.handle_datagram(now, peer(1), &[]).is_err());
    assert_eq!(c.core_stats().decode_errors, 2);
    // Messages claiming to come from ourselves are ignored.
    c.handle_message(
        now,
        peer(0),
        msg(Body::Gossip(Gossip {
            updates: vec![alive(3, 0)],
        })),
    );
    assert_eq!(c.core_stats().self_messages, 1);
    assert!(c.members(&realm()).is_empty());
}

mod fuzz {
    use super::*;
    use crate::wire::Limits;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Message::decode(&bytes, &Limits::default());
        }

        #[test]
        fn decoder_survives_mutated_messages(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let m = msg(Body::PingReq(PingReq {
                seq: 3,
                target: peer(1),
                nack_timeout_ms: 400,
                updates: vec![alive(2, 1), suspect(3, 4, 5), dead(6, 7, 8), left(9, 10)],
            }));
            let mut bytes = m.encode();
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            if let Ok(decoded) = Message::decode(&bytes, &Limits::default()) {
                // Whatever decodes re-encodes to the same bytes.
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }

        #[test]
        fn core_survives_random_datagrams(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let now = Instant::now();
            let mut c = core(0, SwimConfig::default(), now);
            let mut framed = vec![1u8, bytes.first().copied().unwrap_or(1) % 8, 16];
            framed.extend_from_slice(b"org.example.mesh");
            framed.extend_from_slice(&bytes);
            let _ = c.handle_datagram(now, peer(1), &framed);
            let _ = c.handle_push_pull_bytes(now, peer(1), &framed);
            c.handle_timeout(now + Duration::from_secs(5));
        }
    }
}

// ----- cut-off nodes: local verdicts, rejoin targets -----

/// Engine 0 learns members 1 and 2, then hears from nobody until it has declared both failed
/// (verdicts kept local). Returns the time reached.
fn isolated_core_with_local_verdicts(cfg: SwimConfig) -> (SwimEngine, Instant) {
    let mut now = Instant::now();
    let mut c = core(0, cfg, now);
    gossip(&mut c, now, 1, vec![alive(1, 0), alive(2, 0)]);
    assert_eq!(c.live_member_count(&realm()), 2);
    let mut waited = 0;
    while c.live_member_count(&realm()) > 0 {
        now += Duration::from_millis(100);
        c.handle_timeout(now);
        transmits(&mut c);
        waited += 1;
        assert!(waited < 3000, "never declared them failed");
    }
    assert_eq!(c.stats(&realm()).unwrap().failures_kept_local, 2);
    events(&mut c);
    (c, now)
}

#[test]
fn a_local_verdict_is_taken_back_on_a_message_or_alive_at_the_same_incarnation() {
    let (mut c, now) = isolated_core_with_local_verdicts(SwimConfig::default());
    assert_eq!(state(&c, 1), Some((MemberState::Dead, 0)));
    // A datagram straight from 1 (it is alive and reaches us), carrying alive(2) at the
    // incarnation we declared dead: neither ever heard of our verdict, so neither refutes.
    gossip(&mut c, now, 1, vec![alive(2, 0)]);
    assert_eq!(state(&c, 1), Some((MemberState::Alive, 0)));
    assert_eq!(state(&c, 2), Some((MemberState::Alive, 0)));
    assert_eq!(c.live_member_count(&realm()), 2);
    let back: Vec<PeerId> = events(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            SwimEvent::MemberJoined { member, .. } => Some(member.peer),
            _ => None,
        })
        .collect();
    assert_eq!(back, vec![peer(1), peer(2)]);
    assert_eq!(c.stats(&realm()).unwrap().failures_revoked, 2);
    // A spread verdict is not taken back that way: dead news from others stands until the
    // member refutes with a higher incarnation.
    gossip(&mut c, now, 1, vec![dead(2, 0, 1)]);
    gossip(&mut c, now, 1, vec![alive(2, 0)]);
    assert_eq!(state(&c, 2), Some((MemberState::Dead, 0)));
}

#[test]
fn a_rejoin_keeps_dead_members_until_an_answer_and_falls_back_on_them() {
    let (mut c, now) = isolated_core_with_local_verdicts(SwimConfig::default());
    // No seed answers: the members held dead are kept, and are the fallback targets.
    c.join(now, &realm(), &[peer(9)]).unwrap();
    transmits(&mut c);
    c.handle_push_pull_failed(now, peer(9), &realm());
    assert!(
        matches!(&events(&mut c)[..], [SwimEvent::JoinFailed { seed, .. }] if *seed == peer(9))
    );
    assert_eq!(state(&c, 1), Some((MemberState::Dead, 0)));
    assert_eq!(state(&c, 2), Some((MemberState::Dead, 0)));
    let n = c.rejoin(now, &realm(), &[peer(9)], 3).unwrap();
    assert_eq!(n, 3);
    let mut to: Vec<PeerId> = transmits(&mut c)
        .into_iter()
        .filter(|t| t.kind == TransmitKind::PushPull)
        .map(|t| t.to)
        .collect();
    to.sort();
    let mut want = vec![peer(1), peer(2), peer(9)];
    want.sort();
    assert_eq!(to, want);
    // Member 1 answers, knowing only itself: the dead members are forgotten then (2 becomes
    // a former member), and 1 is alive from its own table.
    let answer = msg(Body::PushPull(PushPull {
        join: true,
        response: true,
        members: vec![record(1, 0, MemberState::Alive, meta("m"))],
    }));
    assert!(c.handle_push_pull(now, peer(1), answer).is_none());
    assert_eq!(state(&c, 1), Some((MemberState::Alive, 0)));
    assert_eq!(state(&c, 2), None);
    assert_eq!(
        c.former_members(&realm())
            .iter()
            .map(|m| m.peer)
            .collect::<Vec<_>>(),
        vec![peer(2)]
    );
    assert!(c.former_member(&realm(), &peer(2)).is_some());
    // With a live member, rejoin does nothing.
    assert_eq!(c.rejoin(now, &realm(), &[peer(9)], 3).unwrap(), 0);
}

#[test]
fn a_cut_off_seed_rejoins_through_its_former_members() {
    // Node 0 is everyone's seed and has no seed itself. It is cut off long enough for all
    // sides to forget each other, then the link comes back.
    let cfg = SwimConfig {
        push_pull_interval: None,
        ..SwimConfig::default()
    };
    let mut net = Net::new(4, cfg);
    net.join_all();
    net.run(Duration::from_secs(5));
    for j in 1..4 {
        net.cut.push((0, j));
        net.cut.push((j, 0));
    }
    net.run(Duration::from_secs(150));
    assert_eq!(net.nodes[0].live_member_count(&realm()), 0);
    assert!(net.nodes[0].members(&realm()).is_empty(), "all forgotten");
    assert_eq!(net.nodes[0].former_members(&realm()).len(), 3);
    for i in 1..4 {
        assert_eq!(state(&net.nodes[i], 0), None, "node {i} forgot node 0");
    }
    net.cut.clear();
    // Without seeds, the periodic rejoin goes to former members.
    let now = net.now;
    assert_eq!(net.nodes[0].rejoin(now, &realm(), &[], 3).unwrap(), 3);
    net.deliver();
    net.run(Duration::from_secs(5));
    for i in 0..4 {
        assert_eq!(net.nodes[i].live_member_count(&realm()), 3, "node {i}");
    }
}

#[test]
fn ping_reqs_for_non_members_are_refused() {
    let now = Instant::now();
    let mut c = core(0, SwimConfig::default(), now);
    gossip(&mut c, now, 1, vec![alive(1, 0), alive(2, 0)]);
    gossip(&mut c, now, 1, vec![dead(2, 0, 1)]);
    transmits(&mut c);
    for target in [7, 2] {
        let req = msg(Body::PingReq(PingReq {
            seq: 5,
            target: peer(target),
            nack_timeout_ms: 100,
            updates: Vec::new(),
        }));
        c.handle_datagram(now, peer(1), &req.encode()).unwrap();
        assert!(
            transmits(&mut c).iter().all(|t| t.to != peer(target)),
            "pinged {target}"
        );
    }
    assert_eq!(c.stats(&realm()).unwrap().ping_reqs_dropped, 2);
    assert_eq!(c.stats(&realm()).unwrap().ping_reqs_served, 0);
}

#[test]
fn a_probe_waiting_for_a_connection_gets_its_timers_from_the_send() {
    let now = Instant::now();
    let cfg = SwimConfig {
        gossip_interval: None,
        push_pull_interval: None,
        ..SwimConfig::default()
    };
    let mut c = core(0, cfg.clone(), now);
    gossip(&mut c, now, 1, vec![alive(1, 0)]);
    let t0 = c.poll_timeout().unwrap();
    c.handle_timeout(t0);
    let ping = transmits(&mut c)
        .into_iter()
        .find_map(|t| match t.message.body {
            Body::Ping(p) if t.to == peer(1) => Some(p.seq),
            _ => None,
        })
        .expect("probe of 1");
    // The driver needed 0.9 periods to connect before the ping could go out.
    let sent = t0 + cfg.probe_interval.mul_f64(0.9);
    c.handle_probe_sent(sent, &peer(1));
    assert_eq!(c.poll_timeout(), Some(sent + cfg.probe_timeout));
    // The original period's end passes; the ack comes within a period of the send.
    c.handle_timeout(t0 + cfg.probe_interval.mul_f64(1.2));
    transmits(&mut c);
    let ack = msg(Body::Ack(Ack {
        seq: ping,
        updates: Vec::new(),
    }));
    c.handle_datagram(t0 + cfg.probe_interval.mul_f64(1.5), peer(1), &ack.encode())
        .unwrap();
    c.handle_timeout(t0 + cfg.probe_interval * 2);
    let s = c.stats(&realm()).unwrap();
    assert_eq!((s.probes_acked_direct, s.probes_failed), (1, 0));
    assert_eq!(state(&c, 1), Some((MemberState::Alive, 0)));
    // Another peer's connection, or a later call, changes nothing.
    let before = c.poll_timeout();
    c.handle_probe_sent(t0 + cfg.probe_interval * 2, &peer(7));
    assert_eq!(c.poll_timeout(), before);
}

#[test]
fn a_probe_whose_ping_never_went_out_is_not_a_failure() {
    let now = Instant::now();
    let cfg = SwimConfig {
        gossip_interval: None,
        push_pull_interval: None,
        ..SwimConfig::default()
    };
    let mut c = core(0, cfg.clone(), now);
    gossip(&mut c, now, 1, vec![alive(1, 0)]);
    let probe_seq = |c: &mut SwimEngine| {
        transmits(c)
            .into_iter()
            .find_map(|t| match t.message.body {
                Body::Ping(p) if t.to == peer(1) => Some(p.seq),
                _ => None,
            })
            .expect("probe of 1")
    };
    let t0 = c.poll_timeout().unwrap();
    c.handle_timeout(t0);
    let seq = probe_seq(&mut c);
    // The driver is still connecting when the period ends: skipped, not suspected.
    c.handle_probe_unsent(t0, &peer(1), seq.wrapping_add(7)); // another seq: ignored
    c.handle_probe_unsent(t0, &peer(1), seq);
    let t1 = c.poll_timeout().unwrap();
    c.handle_timeout(t1);
    transmits(&mut c);
    let t2 = c.poll_timeout().unwrap();
    c.handle_timeout(t2);
    let s = c.stats(&realm()).unwrap();
    assert_eq!((s.probes_unsent, s.probes_failed), (1, 0));
    assert_eq!(state(&c, 1), Some((MemberState::Alive, 0)));
    // This time the ping goes out (late) and no ack comes: a failed probe, a suspicion.
    let seq = probe_seq(&mut c);
    c.handle_probe_unsent(t2, &peer(1), seq);
    c.handle_probe_sent(t2 + cfg.probe_timeout / 2, &peer(1));
    let end = t2 + cfg.probe_interval * 3;
    while c.poll_timeout().unwrap() <= end {
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        transmits(&mut c);
    }
    let s = c.stats(&realm()).unwrap();
    assert!(s.probes_failed >= 1, "{s:?}");
    assert_eq!(s.probes_unsent, 1);
    assert_eq!(state(&c, 1).map(|s| s.0), Some(MemberState::Suspect));
}

mod signed;
mod unconfirmed;
