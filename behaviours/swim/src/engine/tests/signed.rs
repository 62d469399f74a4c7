//! Signed alive records (issue 11, attack 5 "member injection"): a member enters only through
//! its own signed record; forged, missing or misplaced signatures are dropped and counted;
//! the node re-signs when its incarnation changes; unreachable members fail their probes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};
use multiaddr::Multiaddr;

use super::{core, events, gossip, key, meta, msg, peer, realm, record, signed, state, transmits};
use crate::record::{sign_alive, verify_alive, AliveRecord, Ed25519Verifier, Signature};
use crate::wire::{Ack, Body, Gossip, PushPull, Update, UpdateKind};
use crate::{MemberState, NodeMeta, SwimConfig, SwimEngine, SwimEvent};

fn quiet() -> SwimConfig {
    SwimConfig {
        gossip_interval: None,
        push_pull_interval: None,
        ..SwimConfig::default()
    }
}

fn with_signature(i: u64, inc: u64, signature: Signature) -> Update {
    with_record(i, inc, meta("m"), signature)
}

/// An alive update about member `i` at `inc` with `m` and this signature.
fn with_record(i: u64, inc: u64, m: Arc<NodeMeta>, signature: Signature) -> Update {
    Update::alive(AliveRecord::new(peer(i), inc, m, signature))
}

#[test]
fn forged_or_missing_signatures_are_dropped() {
    let now = Instant::now();
    let mut c = core(0, quiet(), now);
    let m = meta("m");
    let updates = vec![
        // No signature.
        with_signature(1, 0, Signature::ZERO),
        // Signed by another key (the sender's own).
        with_signature(2, 0, sign_alive(&key(9), &realm(), 0, &m)),
        // Member 3's signature of another incarnation.
        with_signature(3, 0, sign_alive(&key(3), &realm(), 1, &m)),
        // Member 4's signature of other metadata (e.g. addresses swapped in by the sender).
        with_signature(4, 0, sign_alive(&key(4), &realm(), 0, &meta("other"))),
    ];
    gossip(&mut c, now, 9, updates);
    assert!(c.members(&realm()).is_empty());
    assert!(events(&mut c).is_empty());
    let s = c.stats(&realm()).unwrap();
    assert_eq!((s.signatures_checked, s.signatures_rejected), (4, 4));
    // Forged news about a known member changes nothing either: no new metadata (addresses)
    // or incarnation without the member's own signature.
    gossip(&mut c, now, 9, vec![signed(5, 0, m.clone())]);
    assert_eq!(state(&c, 5), Some((MemberState::Alive, 0)));
    events(&mut c);
    let evil = with_record(
        5,
        1,
        meta("evil"),
        sign_alive(&key(9), &realm(), 1, &meta("evil")),
    );
    gossip(&mut c, now, 9, vec![evil]);
    assert_eq!(state(&c, 5), Some((MemberState::Alive, 0)));
    assert_eq!(c.member(&realm(), &peer(5)).unwrap().meta, m);
    assert!(events(&mut c).is_empty());
    // Repeats of what we hold are never checked again.
    let before = c.stats(&realm()).unwrap().signatures_checked;
    gossip(&mut c, now, 9, vec![signed(5, 0, m)]);
    assert_eq!(c.stats(&realm()).unwrap().signatures_checked, before);
}

#[test]
fn a_real_member_enters_with_its_signed_record() {
    let now = Instant::now();
    let mut c = core(0, quiet(), now);
    gossip(&mut c, now, 9, vec![signed(1, 3, meta("m"))]);
    assert_eq!(state(&c, 1), Some((MemberState::Alive, 3)));
    assert!(matches!(
        events(&mut c)[..],
        [SwimEvent::MemberJoined { .. }]
    ));
    // It is gossiped on with its signature, which every receiver can check.
    let t = transmits(&mut c);
    assert!(t.is_empty() || t.iter().all(|t| t.message.body.updates().len() <= 2));
    let mut other = core(7, quiet(), now);
    c.join(now, &realm(), &[peer(7)]).unwrap();
    let req = transmits(&mut c)
        .into_iter()
        .find(|t| t.to == peer(7))
        .unwrap()
        .message;
    let Body::PushPull(pp) = &req.body else {
        panic!("{req:?}")
    };
    assert!(pp.members.iter().any(|r| *r.peer() == peer(1)
        && r.signed_incarnation() == 3
        && verify_alive(
            &Ed25519Verifier,
            &realm(),
            r.peer(),
            3,
            &r.record.meta,
            &r.record.signature
        )));
    other.handle_push_pull(now, peer(0), req).unwrap();
    assert_eq!(state(&other, 0), Some((MemberState::Alive, 0)));
    // A third party in a table pushed to us waits unconfirmed, with its signed record.
    assert_eq!(state(&other, 1), None);
    let waiting = other.unconfirmed_member(&realm(), &peer(1)).unwrap();
    assert_eq!(waiting.incarnation, 3);
}

#[test]
fn push_pull_records_need_signatures() {
    let now = Instant::now();
    let mut c = core(0, quiet(), now);
    let mut forged = record(3, 0, MemberState::Alive, meta("x"));
    let r = &forged.record;
    forged.record = AliveRecord::new(r.peer, r.incarnation, r.meta.clone(), Signature::ZERO);
    let mut misplaced = record(4, 2, MemberState::Alive, meta("x"));
    // Signed at 2, claimed at 1.
    let r = &misplaced.record;
    misplaced.record = AliveRecord::new(r.peer, 1, r.meta.clone(), r.signature);
    let req = msg(Body::PushPull(PushPull {
        join: true,
        response: false,
        members: vec![
            record(1, 0, MemberState::Alive, meta("p")),
            forged,
            misplaced,
            record(5, 0, MemberState::Alive, meta("ok")),
        ],
    }));
    assert!(c.handle_push_pull(now, peer(1), req).is_some());
    assert_eq!(state(&c, 1), Some((MemberState::Alive, 0)));
    assert_eq!(state(&c, 3), None);
    assert_eq!(state(&c, 4), None);
    // Signed, but second-hand in a request: it waits unconfirmed.
    assert_eq!(state(&c, 5), None);
    assert!(c.unconfirmed_member(&realm(), &peer(5)).is_some());
    assert_eq!(c.stats(&realm()).unwrap().signatures_rejected, 2);
}

#[test]
fn refutation_and_new_metadata_are_signed_again() {
    let now = Instant::now();
    let mut c = core(0, quiet(), now);
    gossip(&mut c, now, 1, vec![signed(1, 0, meta("m"))]);
    transmits(&mut c);
    // Suspected: refute at incarnation 1, with a fresh signature.
    gossip(&mut c, now, 1, vec![super::suspect(0, 0, 1)]);
    assert_eq!(c.incarnation(&realm()), Some(1));
    let own = c.local_record(&realm()).unwrap();
    assert_eq!(own.incarnation, 1);
    assert!(verify_alive(
        &Ed25519Verifier,
        &realm(),
        &peer(0),
        1,
        &own.record.meta,
        &own.record.signature
    ));
    // The refutation that goes out carries it.
    let ping = msg(Body::Ping(crate::wire::Ping {
        seq: 3,
        updates: Vec::new(),
    }));
    c.handle_datagram(now, peer(1), &ping.encode()).unwrap();
    let t = transmits(&mut c);
    let refutation = t
        .iter()
        .flat_map(|t| t.message.body.updates())
        .find(|u| u.peer == peer(0))
        .expect("refutation");
    let UpdateKind::Alive { record } = &refutation.kind else {
        panic!("{refutation:?}")
    };
    assert!(verify_alive(
        &Ed25519Verifier,
        &realm(),
        &peer(0),
        1,
        &record.meta,
        &record.signature
    ));
    // An engine that learns it accepts it.
    let mut other = core(2, quiet(), now);
    other.handle_message(
        now,
        peer(0),
        msg(Body::Gossip(Gossip {
            updates: vec![refutation.clone()],
        })),
    );
    assert_eq!(state(&other, 0), Some((MemberState::Alive, 1)));
    // New metadata: incarnation 2, signed.
    let a: Multiaddr = "/ip4/10.9.9.9/udp/1/quic-v1".parse().unwrap();
    c.set_metadata(now, NodeMeta::new(vec![a], Vec::new()).unwrap())
        .unwrap();
    let own = c.local_record(&realm()).unwrap();
    assert_eq!(own.incarnation, 2);
    assert!(verify_alive(
        &Ed25519Verifier,
        &realm(),
        &peer(0),
        2,
        &own.record.meta,
        &own.record.signature
    ));
    // Someone else's alive about us, not signed by us, does not make us bump.
    let fake = with_record(
        0,
        9,
        meta("x"),
        sign_alive(&key(1), &realm(), 9, &meta("x")),
    );
    gossip(&mut c, now, 1, vec![fake]);
    assert_eq!(c.incarnation(&realm()), Some(2));
}

/// A synthetic peer ID of an ed25519 key nobody has (made without key generation).
fn made_up_peer(i: u64) -> PeerId {
    let mut b = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    for k in 0..4u64 {
        b.extend_from_slice(&(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k).to_le_bytes());
    }
    PeerId::from_bytes(&b).unwrap()
}

/// The attack: 20,000 made-up members with made-up addresses, unsigned or signed by random
/// keys (not theirs), gossiped to a node that has two honest members. None enters, none is
/// alive after the suspicion timeout, and the node sends nothing to any of them.
#[test]
fn injected_fake_members_never_enter() {
    let start = Instant::now();
    let cfg = quiet();
    let mut c = core(0, cfg.clone(), start);
    gossip(
        &mut c,
        start,
        1,
        vec![signed(1, 0, meta("m")), signed(2, 0, meta("m"))],
    );
    let random_keys: Vec<Keypair> = (0..16).map(|_| Keypair::generate()).collect();
    let fakes: Vec<PeerId> = (0..20_000u64).map(made_up_peer).collect();
    let fake_set: HashSet<PeerId> = fakes.iter().copied().collect();
    let t = Instant::now();
    for (n, chunk) in fakes.chunks(1_000).enumerate() {
        let updates = chunk
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let addr: Multiaddr = format!("/ip4/198.51.100.{}/udp/443/quic-v1", j % 250)
                    .parse()
                    .unwrap();
                let m = Arc::new(NodeMeta::new(vec![addr], Vec::new()).unwrap());
                let signature = if j % 2 == 0 {
                    Signature::ZERO
                } else {
                    sign_alive(&random_keys[j % 16], &realm(), 0, &m)
                };
                Update::alive(AliveRecord::new(*p, 0, m, signature))
            })
            .collect();
        // Spread over 10 s, from a member (the attacker is an authenticated peer).
        let at = start + Duration::from_millis(500 * n as u64);
        c.handle_message(at, peer(1), msg(Body::Gossip(Gossip { updates })));
    }
    let spent = t.elapsed();
    let s = c.stats(&realm()).unwrap();
    assert_eq!(s.signatures_rejected + s.signatures_unchecked, 20_000);
    println!(
        "20,000 fake members: {} signatures checked ({} rejected), {} dropped unchecked over the budget, {:?} (signing included)",
        s.signatures_checked, s.signatures_rejected, s.signatures_unchecked, spent
    );
    // Run well past the longest suspicion timeout, honest members answering every ping.
    let end = start + cfg.suspicion_min_timeout(3) * cfg.suspicion_max_timeout_mult * 2;
    let mut now = start;
    let mut sent_to_fakes = 0;
    while now < end {
        c.handle_timeout(now);
        for t in transmits(&mut c) {
            if fake_set.contains(&t.to) {
                sent_to_fakes += 1;
            }
            if let Body::Ping(p) = &t.message.body {
                let ack = msg(Body::Ack(Ack {
                    seq: p.seq,
                    updates: Vec::new(),
                }));
                c.handle_message(now, t.to, ack);
            }
        }
        now = c
            .poll_timeout()
            .unwrap_or(end)
            .max(now + Duration::from_millis(1));
    }
    let alive_fakes = c
        .members(&realm())
        .iter()
        .filter(|m| fake_set.contains(&m.peer) && m.state.is_live())
        .count();
    println!(
        "after {:?}: {alive_fakes} fake members alive, {sent_to_fakes} transmits to them",
        end - start
    );
    assert_eq!(alive_fakes, 0);
    assert_eq!(sent_to_fakes, 0);
    assert_eq!(c.members(&realm()).len(), 2);
    assert!(c
        .members(&realm())
        .iter()
        .all(|m| m.state == MemberState::Alive));
}

/// Members with keys of their own (a Sybil's self-signed identities) do enter, but if they
/// cannot be reached their probes fail: the grace for a first connection is given once and
/// taken back by a failed dial, so each is suspected at its first probe and declared failed.
#[test]
fn unreachable_members_fail_their_probes() {
    let start = Instant::now();
    let cfg = quiet();
    let mut c = core(0, cfg.clone(), start);
    let sybils: Vec<Keypair> = (100..105).map(key).collect();
    let updates = sybils
        .iter()
        .map(|k| {
            let m = meta("m");
            {
                let signature = sign_alive(k, &realm(), 0, &m);
                Update::alive(AliveRecord::new(k.peer_id(), 0, m, signature))
            }
        })
        .collect();
    gossip(&mut c, start, 9, updates);
    assert_eq!(c.live_member_count(&realm()), 5);
    // The driver reports each probe's ping unsent (it dials), then the dial failing; the
    // second time it reports a ping unsent, the engine gives no grace.
    let mut now = start;
    let end = start + Duration::from_secs(120);
    let mut unsent_calls = HashSet::new();
    while now < end {
        c.handle_timeout(now);
        for t in transmits(&mut c) {
            if let Body::Ping(p) = &t.message.body {
                c.handle_probe_unsent(now, &t.to, p.seq);
                if !unsent_calls.insert(t.to) {
                    continue;
                }
                if t.to == sybils[0].peer_id() {
                    // This one's dial never ends: the grace holds once, not twice.
                    continue;
                }
                c.handle_probe_unreachable(now, &t.to);
            }
        }
        now = c
            .poll_timeout()
            .unwrap_or(end)
            .max(now + Duration::from_millis(1));
    }
    let s = c.stats(&realm()).unwrap();
    assert_eq!(c.live_member_count(&realm()), 0, "{s:?}");
    assert!(s.probes_unreachable >= 4, "{s:?}");
    assert!(s.probes_grace_refused >= 1, "{s:?}");
    assert_eq!(s.probes_unsent, 1, "{s:?}");
    assert!(sybils.iter().all(|k| c
        .member(&realm(), &k.peer_id())
        .is_none_or(|m| m.state == MemberState::Dead)));
}

#[test]
fn verification_budget_bounds_checks() {
    let now = Instant::now();
    let cfg = SwimConfig {
        signature_checks_per_sec: 10,
        signature_check_burst: 20,
        ..quiet()
    };
    let mut c = SwimEngine::new(&key(0), [realm()], NodeMeta::empty(), cfg, 0, now).unwrap();
    let updates: Vec<Update> = (1..=50).map(|i| signed(i, 0, meta("m"))).collect();
    gossip(&mut c, now, 1, updates.clone());
    let s = c.stats(&realm()).unwrap();
    assert_eq!((s.signatures_checked, s.signatures_unchecked), (20, 30));
    assert_eq!(c.live_member_count(&realm()), 20);
    // A second later, 10 more.
    gossip(&mut c, now + Duration::from_secs(1), 1, updates);
    assert_eq!(c.live_member_count(&realm()), 30);
}
