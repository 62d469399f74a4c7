//! Members heard of second-hand wait unconfirmed (issue 11, "members signed with an
//! attacker's own fresh keys"; docs/swim.md section 3b).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};
use multiaddr::Multiaddr;

use super::{core, gossip, gossip_from, key, meta, msg, peer, realm, signed, state, transmits};
use crate::record::sign_alive;
use crate::wire::{Ack, Body, Gossip, PushPull, Update, UpdateKind};
use crate::{MemberState, NodeMeta, SwimConfig, SwimEngine};

fn quiet() -> SwimConfig {
    SwimConfig {
        push_pull_interval: None,
        ..SwimConfig::default()
    }
}

/// A self-signed alive record of `k` at an unreachable documentation address.
fn self_signed(k: &Keypair, j: usize) -> Update {
    let addr: Multiaddr = format!("/ip4/198.51.100.{}/udp/443/quic-v1", j % 250)
        .parse()
        .unwrap();
    let m = Arc::new(NodeMeta::new(vec![addr], Vec::new()).unwrap());
    {
        let signature = sign_alive(k, &realm(), 0, &m);
        crate::wire::Update::alive(crate::record::AliveRecord::new(
            k.peer_id(),
            0,
            m,
            signature,
        ))
    }
}

fn alive_about(t: &crate::Transmit) -> impl Iterator<Item = PeerId> + '_ {
    t.message
        .body
        .updates()
        .iter()
        .filter(|u| matches!(u.kind, UpdateKind::Alive { .. }))
        .map(|u| u.peer)
}

/// The attack: one hostile member gossips 20,000 members, each with a valid alive record
/// signed by a fresh key of its own, at unreachable addresses, over 20 s; meanwhile an honest
/// member announces a new honest member every 2 s. The victim holds a bounded number of them
/// unconfirmed, never counts, probes or disseminates one, pings a bounded number, penalises
/// the hostile introducer, holds none after the suspicion timeout — and confirms every honest
/// newcomer at once.
#[test]
fn self_signed_fakes_stay_unconfirmed_and_honest_joins_are_confirmed() {
    let start = Instant::now();
    let cfg = quiet();
    let mut c = core(0, cfg.clone(), start);
    // Honest members 1..=5 and the hostile member 9, all first-hand.
    let honest: Vec<u64> = (1..=5).collect();
    let hostile = 9;
    gossip(
        &mut c,
        start,
        1,
        honest
            .iter()
            .chain([&hostile])
            .map(|&i| signed(i, 0, meta("m")))
            .collect(),
    );
    transmits(&mut c);
    let t_sign = Instant::now();
    let fakes: Vec<Keypair> = (0..20_000u64).map(|i| key(1_000_000 + i)).collect();
    let fake_updates: Vec<Update> = fakes
        .iter()
        .enumerate()
        .map(|(j, k)| self_signed(k, j))
        .collect();
    let signing = t_sign.elapsed();
    let fake_set: HashSet<PeerId> = fakes.iter().map(Keypair::peer_id).collect();
    // Honest newcomers 100.. announced by member 1, one every 2 s; they answer pings.
    let newcomers: Vec<u64> = (100..110).collect();
    let mut announced_at: Vec<Option<Instant>> = vec![None; newcomers.len()];
    let mut confirmed_after: Vec<Option<Duration>> = vec![None; newcomers.len()];
    // The hostile member itself answers its pings (it is a member like any other).
    let answering: HashSet<PeerId> = honest
        .iter()
        .chain(newcomers.iter())
        .chain([&hostile])
        .map(|&i| peer(i))
        .collect();

    let attack_end = start + Duration::from_secs(20);
    let end = attack_end + cfg.suspicion_min_timeout(7) * 2;
    let mut now = start;
    let mut chunks = fake_updates.chunks(100);
    let mut next_chunk = start;
    let (mut max_waiting, mut pings_to_fakes, mut fake_alive_sent) = (0usize, 0u64, 0u64);
    let mut fake_ever_member = 0usize;
    let mut newcomer_gossiped = HashSet::new();
    while now < end {
        // 100 fakes per datagram, a datagram every 100 ms: 1,000 a second for 20 s.
        while next_chunk <= now && next_chunk < attack_end {
            if let Some(chunk) = chunks.next() {
                gossip_from(&mut c, now, peer(hostile), chunk.to_vec());
            }
            next_chunk += Duration::from_millis(100);
        }
        for (k, &n) in newcomers.iter().enumerate() {
            let at = start + Duration::from_secs(2 * k as u64 + 1);
            if announced_at[k].is_none() && now >= at {
                gossip_from(&mut c, now, peer(1), vec![signed(n, 0, meta("new"))]);
                announced_at[k] = Some(now);
            }
        }
        c.handle_timeout(now);
        for t in transmits(&mut c) {
            if fake_set.contains(&t.to) {
                pings_to_fakes += 1;
            }
            fake_alive_sent += alive_about(&t).filter(|p| fake_set.contains(p)).count() as u64;
            for p in alive_about(&t) {
                if let Some(k) = newcomers.iter().position(|&n| peer(n) == p) {
                    newcomer_gossiped.insert(k);
                }
            }
            if let Body::Ping(p) = &t.message.body {
                if answering.contains(&t.to) {
                    let ack = msg(Body::Ack(Ack {
                        seq: p.seq,
                        updates: Vec::new(),
                    }));
                    c.handle_message(now, t.to, ack);
                }
            }
        }
        for (k, &n) in newcomers.iter().enumerate() {
            if confirmed_after[k].is_none() && state(&c, n).is_some() {
                confirmed_after[k] = announced_at[k].map(|a| now - a);
            }
        }
        max_waiting = max_waiting.max(c.unconfirmed_count(&realm()));
        fake_ever_member = fake_ever_member.max(
            c.members(&realm())
                .iter()
                .filter(|m| fake_set.contains(&m.peer))
                .count(),
        );
        now = c
            .poll_timeout()
            .unwrap_or(end)
            .min(next_chunk.max(now))
            .max(now + Duration::from_millis(1));
    }
    let s = c.stats(&realm()).unwrap();
    println!(
        "20,000 self-signed fakes from one member over 20 s (signing {signing:?}): at most {max_waiting} \
         unconfirmed at once, {} taken unconfirmed, {} dropped at admission or by the penalty, {} failed \
         confirmation, {} expired; {pings_to_fakes} pings to fakes; hostile introducer penalised {} times; \
         {} signatures checked; fakes ever members {fake_ever_member}, alive updates about fakes sent \
         {fake_alive_sent}; honest newcomers confirmed after {:?}",
        s.unconfirmed_added,
        s.unconfirmed_dropped,
        s.unconfirmed_failed,
        s.unconfirmed_expired,
        s.introducers_penalised,
        s.signatures_checked,
        confirmed_after
    );
    // Bounded memory: the waiting entries never exceed the per-introducer bound (plus the
    // honest newcomer of the moment).
    assert!(
        max_waiting <= cfg.max_unconfirmed_per_introducer + 1,
        "{s:?}"
    );
    assert_eq!(fake_ever_member, 0);
    assert_eq!(fake_alive_sent, 0, "fakes were disseminated");
    assert_eq!(c.unconfirmed_count(&realm()), 0, "{s:?}");
    assert!(s.introducers_penalised >= 1, "{s:?}");
    // Each admitted fake costs at most 3 pings; admitted ones are bounded by the
    // per-introducer bound until the penalty, which lasts past the attack.
    assert!(s.unconfirmed_added <= 2 * cfg.max_unconfirmed_per_introducer as u64 + 10);
    assert!(pings_to_fakes <= 3 * s.unconfirmed_added, "{s:?}");
    // Every honest newcomer is a member, was confirmed within a period, and is gossiped on.
    assert!(
        confirmed_after
            .iter()
            .all(|d| d.is_some_and(|d| d <= cfg.probe_interval)),
        "{confirmed_after:?}"
    );
    assert_eq!(newcomer_gossiped.len(), newcomers.len());
    assert_eq!(c.live_member_count(&realm()), 6 + newcomers.len());
}

/// The bounds: per introducer, in all, and an eviction that only takes from the introducer
/// holding the most.
#[test]
fn unconfirmed_members_are_bounded_per_introducer_and_in_all() {
    let now = Instant::now();
    let cfg = SwimConfig {
        max_unconfirmed: 8,
        max_unconfirmed_per_introducer: 4,
        confirmations_per_sec: 1,
        ..quiet()
    };
    let mut c = SwimEngine::new(&key(0), [realm()], NodeMeta::empty(), cfg, 0, now).unwrap();
    let fresh = |base: u64, n: u64| -> Vec<Update> {
        (base..base + n)
            .map(|i| self_signed(&key(i), i as usize))
            .collect()
    };
    // The attacker (introducer 9) announces 10: 4 are taken, 6 dropped.
    gossip_from(&mut c, now, peer(9), fresh(1_000, 10));
    // Honest introducer 1 announces 3.
    gossip_from(&mut c, now, peer(1), fresh(2_000, 3));
    let s = c.stats(&realm()).unwrap();
    assert_eq!((s.unconfirmed_added, s.unconfirmed_dropped), (7, 6));
    // The attacker's further announcements cannot push out introducer 1's.
    gossip_from(&mut c, now, peer(9), fresh(3_000, 5));
    for i in 2_000..2_003 {
        assert!(c.unconfirmed_member(&realm(), &peer(i)).is_some());
    }
    // Introducer 2 takes the last place, then introducer 3's newcomer evicts one of the
    // attacker's (the introducer holding the most), never one of introducer 1's.
    gossip_from(&mut c, now, peer(2), fresh(4_000, 1));
    gossip_from(&mut c, now, peer(3), fresh(5_000, 1));
    assert_eq!(c.unconfirmed_count(&realm()), 8);
    assert!(c.unconfirmed_member(&realm(), &peer(5_000)).is_some());
    let attackers = (1_000..1_010)
        .filter(|&i| c.unconfirmed_member(&realm(), &peer(i)).is_some())
        .count();
    assert_eq!(attackers, 3);
    for i in 2_000..2_003 {
        assert!(c.unconfirmed_member(&realm(), &peer(i)).is_some());
    }
    // None of them is a member, counted, or in a push-pull answer.
    assert_eq!(c.live_member_count(&realm()), 0);
    let answer = c
        .handle_push_pull(
            now,
            peer(1),
            msg(Body::PushPull(PushPull {
                join: true,
                response: false,
                members: Vec::new(),
            })),
        )
        .unwrap();
    let Body::PushPull(pp) = answer.body else {
        panic!()
    };
    assert_eq!(pp.members.len(), 1, "only the node itself");
}

/// A member confirmed by a message straight from it enters and is gossiped on; one whose
/// pings go unanswered is dropped after three periods; a driver-reported unreachable one at
/// once; a join's answer is taken as it is.
#[test]
fn confirmation_by_a_direct_message_failure_and_trusted_joins() {
    let start = Instant::now();
    let cfg = quiet();
    let mut c = core(0, cfg.clone(), start);
    gossip(&mut c, start, 1, vec![signed(1, 0, meta("m"))]);
    transmits(&mut c);
    gossip_from(
        &mut c,
        start,
        peer(1),
        vec![
            signed(2, 0, meta("m")),
            signed(3, 0, meta("m")),
            signed(4, 0, meta("m")),
        ],
    );
    let pinged: HashSet<PeerId> = transmits(&mut c)
        .into_iter()
        .filter(|t| matches!(t.message.body, Body::Ping(_)))
        .map(|t| t.to)
        .collect();
    assert_eq!(pinged, [2, 3, 4].map(peer).into_iter().collect());
    assert_eq!(state(&c, 2), None);
    // 2 answers (any datagram straight from it confirms it).
    c.handle_message(
        start,
        peer(2),
        msg(Body::Gossip(Gossip {
            updates: Vec::new(),
        })),
    );
    assert_eq!(state(&c, 2), Some((MemberState::Alive, 0)));
    // 4's dial fails: dropped at once.
    c.handle_probe_unreachable(start, &peer(4));
    assert!(c.unconfirmed_member(&realm(), &peer(4)).is_none());
    // 3 never answers: two more pings, one a period, then dropped.
    let mut now = start;
    let mut pings_to_3 = 1;
    while now < start + Duration::from_secs(4) {
        now += Duration::from_millis(100);
        c.handle_timeout(now);
        pings_to_3 += transmits(&mut c)
            .iter()
            .filter(|t| t.to == peer(3) && matches!(t.message.body, Body::Ping(_)))
            .count();
    }
    assert_eq!(pings_to_3, 3);
    assert!(c.unconfirmed_member(&realm(), &peer(3)).is_none());
    let s = c.stats(&realm()).unwrap();
    assert_eq!(
        (
            s.unconfirmed_confirmed,
            s.unconfirmed_failed,
            s.introducers_penalised
        ),
        (1, 2, 0)
    );
    // A join's answer: the seed's table is taken at once.
    let mut j = core(50, cfg, start);
    j.join(start, &realm(), &[peer(1)]).unwrap();
    transmits(&mut j);
    let answer = msg(Body::PushPull(PushPull {
        join: true,
        response: true,
        members: vec![
            super::record(1, 0, MemberState::Alive, meta("m")),
            super::record(7, 0, MemberState::Alive, meta("m")),
        ],
    }));
    assert!(j.handle_push_pull(start, peer(1), answer).is_none());
    assert_eq!(j.live_member_count(&realm()), 2);
}
