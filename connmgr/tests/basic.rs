//! Behaviour of `BasicConnMgr`, `NullConnMgr` and `ConnManagerHandle`, informed by
//! go-libp2p's `p2p/net/connmgr` test suite, on a virtual clock.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use meshwire_connmgr::{
    BasicConnMgr, Config, ConnManager, ConnManagerHandle, ConnMgrError, ConnMgrMetrics,
    NullConnMgr, Trimmed,
};
use meshwire_core::{ConnectionId, Direction, Keypair, PeerId};
use prometheus_client::registry::Registry;

fn peer(i: u64) -> PeerId {
    Keypair::from_seed_for_tests(i).peer_id()
}

fn conn(i: u64) -> ConnectionId {
    ConnectionId::from_raw(i)
}

fn cfg(low: usize, high: usize, grace: Duration) -> Config {
    Config {
        low_water: low,
        high_water: high,
        grace_period: grace,
        ..Config::default()
    }
}

fn mgr(cfg: Config, start: Instant) -> BasicConnMgr {
    BasicConnMgr::new(cfg, start).expect("valid config")
}

/// Connects peers `range` with one connection each (connection id = peer index).
fn connect_range(cm: &mut BasicConnMgr, range: std::ops::Range<u64>, dir: Direction, now: Instant) {
    for i in range {
        cm.notify_connected(peer(i), conn(i), dir, now);
    }
}

fn trimmed_peers(t: &Trimmed) -> HashSet<PeerId> {
    t.iter().map(|(p, _)| *p).collect()
}

fn trimmed_conns(t: &Trimmed) -> usize {
    t.iter().map(|(_, c)| c.len()).sum()
}

/// Closes what a trim returned, as a swarm would.
fn close_all(cm: &mut BasicConnMgr, t: &Trimmed, now: Instant) {
    for (p, conns) in t {
        for c in conns {
            cm.notify_disconnected(*p, *c, now);
        }
    }
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn conn_trimming_keeps_tagged_and_drops_negative() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(200, 300, Duration::ZERO), t0);
    connect_range(&mut cm, 0..300, Direction::Outbound, t0);
    for i in 0..100 {
        cm.tag_peer(peer(i), "foo", 10);
    }
    cm.tag_peer(peer(299), "badfoo", -5);

    let out = cm.trim_open_conns(t0);
    let gone = trimmed_peers(&out);
    assert_eq!(trimmed_conns(&out), 100);
    assert!(
        (0..100).all(|i| !gone.contains(&peer(i))),
        "tagged peers must survive"
    );
    assert!(
        gone.contains(&peer(299)),
        "negatively tagged peer must be trimmed"
    );
    assert_eq!(cm.conn_count(), 200);
}

#[test]
fn trim_honours_watermarks_and_grace_period() {
    let t0 = Instant::now();
    let gp = Duration::from_millis(100);
    let mut cm = mgr(
        Config {
            silence_period: Duration::from_secs(3600),
            ..cfg(10, 20, gp)
        },
        t0,
    );

    cm.notify_connected(peer(0), conn(0), Direction::Outbound, t0);
    let t1 = t0 + 2 * gp;
    // 30 more connections, above the high watermark.
    connect_range(&mut cm, 1..31, Direction::Outbound, t1);

    // Only one connection is out of its grace period: nothing is trimmed.
    assert!(cm.trim_open_conns(t1).is_empty());
    assert_eq!(cm.conn_count(), 31);

    // Just before the grace period ends for the 30: still nothing.
    assert!(cm
        .trim_open_conns(t1 + gp - Duration::from_millis(1))
        .is_empty());

    let t2 = t1 + Duration::from_millis(200);
    let out = cm.trim_open_conns(t2);
    assert_eq!(trimmed_conns(&out), 21, "down to the low watermark");
    assert_eq!(cm.conn_count(), 10);
    close_all(&mut cm, &out, t2);
    assert_eq!(cm.conn_count(), 10);
    assert_eq!(cm.peer_count(), 10);
}

#[test]
fn grace_period_applies_to_each_connection() {
    let t0 = Instant::now();
    let gp = Duration::from_secs(60);
    let mut cm = mgr(cfg(1, 2, gp), t0);
    connect_range(&mut cm, 0..3, Direction::Outbound, t0);
    let t1 = t0 + 2 * gp;
    // Peer 0 is the least valuable, but just opened a second connection.
    cm.tag_peer(peer(1), "v", 5);
    cm.tag_peer(peer(2), "v", 5);
    cm.notify_connected(peer(0), conn(100), Direction::Outbound, t1);
    let out = cm.trim_open_conns(t1);
    assert!(!trimmed_peers(&out).contains(&peer(0)));
    assert_eq!(trimmed_conns(&out), 1);
    // Once the new connection ages, peer 0 goes first, with both connections.
    let out = cm.trim_open_conns(t1 + gp);
    let out: Vec<_> = out.into_iter().map(sort_conns).collect();
    assert_eq!(out, vec![(peer(0), vec![conn(0), conn(100)])]);
}

fn sort_conns((p, mut c): (PeerId, Vec<ConnectionId>)) -> (PeerId, Vec<ConnectionId>) {
    c.sort();
    (p, c)
}

#[test]
fn automatic_trim_only_at_high_water_and_respects_silence_period() {
    let t0 = Instant::now();
    let mut cm = mgr(
        Config {
            silence_period: 10 * SEC,
            ..cfg(5, 10, Duration::ZERO)
        },
        t0,
    );
    connect_range(&mut cm, 0..9, Direction::Outbound, t0);
    // Below the high watermark: background checks do nothing.
    assert!(cm.handle_timeout(t0 + SEC).is_empty());
    assert_eq!(cm.conn_count(), 9);

    // At the high watermark: trimmed down to the low watermark.
    cm.notify_connected(peer(9), conn(9), Direction::Outbound, t0 + SEC);
    let t1 = t0 + 2 * SEC;
    assert_eq!(
        cm.poll_timeout(),
        Some(t0 + SEC),
        "due as soon as the high watermark is reached"
    );
    let out = cm.handle_timeout(t1);
    assert_eq!(trimmed_conns(&out), 5);
    close_all(&mut cm, &out, t1);

    // Back above the high watermark within the silence period: no automatic trim...
    connect_range(&mut cm, 10..16, Direction::Outbound, t1);
    assert_eq!(cm.conn_count(), 11);
    assert!(cm.handle_timeout(t1 + 5 * SEC).is_empty());
    assert!(cm
        .handle_timeout(t1 + 10 * SEC - Duration::from_millis(1))
        .is_empty());
    assert_eq!(cm.poll_timeout(), Some(t1 + 10 * SEC));
    // ...until it has passed.
    let out = cm.handle_timeout(t1 + 10 * SEC);
    assert_eq!(trimmed_conns(&out), 6);
    assert_eq!(cm.conn_count(), 5);
}

#[test]
fn quick_burst_respects_silence_period() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(10, 20, Duration::ZERO), t0);
    let mut closed = 0;
    // 30 connections, polling after each as an eager swarm would.
    for i in 0..30 {
        let now = t0 + Duration::from_millis(100 * i);
        cm.notify_connected(peer(i), conn(i), Direction::Inbound, now);
        let out = cm.handle_timeout(now);
        closed += trimmed_conns(&out);
        close_all(&mut cm, &out, now);
    }
    assert_eq!(
        closed, 10,
        "exactly one automatic trim within the silence period"
    );
    assert_eq!(closed + cm.conn_count(), 30);
}

#[test]
fn explicit_trim_ignores_silence_and_high_water() {
    let t0 = Instant::now();
    let mut cm = mgr(
        Config {
            silence_period: Duration::from_secs(3600),
            ..cfg(3, 10, Duration::ZERO)
        },
        t0,
    );
    connect_range(&mut cm, 0..6, Direction::Outbound, t0);
    // Below the high watermark, but explicit trims go down to the low watermark anyway.
    assert_eq!(trimmed_conns(&cm.trim_open_conns(t0)), 3);
    connect_range(&mut cm, 6..9, Direction::Outbound, t0);
    // A second explicit trim right away is not silenced.
    assert_eq!(trimmed_conns(&cm.trim_open_conns(t0)), 3);
    assert_eq!(cm.info().last_trim, Some(t0));
    // At or below the low watermark there is nothing to do.
    assert!(cm.trim_open_conns(t0).is_empty());
}

#[test]
fn lowest_values_trimmed_first() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(10, 20, Duration::ZERO), t0);
    connect_range(&mut cm, 0..30, Direction::Outbound, t0);
    for i in 0..30 {
        // Values in a scrambled order: peer i gets (i * 7) % 30.
        cm.tag_peer(peer(i), "v", ((i * 7) % 30) as i32);
    }
    let out = cm.trim_open_conns(t0);
    let expected: HashSet<PeerId> = (0..30).filter(|i| (i * 7) % 30 < 20).map(peer).collect();
    assert_eq!(trimmed_peers(&out), expected);
    // Returned in trim order: ascending value.
    let values: Vec<u64> = out
        .iter()
        .map(|(p, _)| {
            (0..30)
                .find(|i| peer(*i) == *p)
                .map(|i| (i * 7) % 30)
                .unwrap_or(99)
        })
        .collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
}

#[test]
fn inbound_before_outbound_at_equal_value() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(4, 8, Duration::ZERO), t0);
    connect_range(&mut cm, 0..4, Direction::Outbound, t0);
    connect_range(&mut cm, 4..8, Direction::Inbound, t0);
    for i in 0..8 {
        cm.tag_peer(peer(i), "v", 1);
    }
    let out = cm.trim_open_conns(t0);
    assert_eq!(trimmed_peers(&out), (4..8).map(peer).collect());
}

#[test]
fn stream_hints_order_idle_peers_first_then_fewer_streams() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(1, 4, Duration::ZERO), t0);
    // peer 0: inbound, 5 streams; peer 1: outbound, idle; peer 2: inbound, 1 stream;
    // peer 3: outbound, 2 streams.
    cm.notify_connected(peer(0), conn(0), Direction::Inbound, t0);
    cm.notify_connected(peer(1), conn(1), Direction::Outbound, t0);
    cm.notify_connected(peer(2), conn(2), Direction::Inbound, t0);
    cm.notify_connected(peer(3), conn(3), Direction::Outbound, t0);
    cm.notify_streams(peer(0), conn(0), 5);
    cm.notify_streams(peer(2), conn(2), 1);
    cm.notify_streams(peer(3), conn(3), 2);
    let order: Vec<PeerId> = cm.trim_open_conns(t0).into_iter().map(|(p, _)| p).collect();
    // Idle first; then inbound (fewer streams first); outbound with streams kept.
    assert_eq!(order, vec![peer(1), peer(2), peer(0)]);
}

#[test]
fn trimmed_peer_loses_all_connections_at_once() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(3, 5, Duration::ZERO), t0);
    // Peer 0 holds three connections and is the least valuable.
    for c in 0..3 {
        cm.notify_connected(peer(0), conn(100 + c), Direction::Outbound, t0);
    }
    connect_range(&mut cm, 1..5, Direction::Outbound, t0);
    for i in 1..5 {
        cm.tag_peer(peer(i), "v", 10);
    }
    cm.tag_peer(peer(0), "v", 1);
    assert_eq!(cm.conn_count(), 7);
    let out = cm.trim_open_conns(t0);
    let out: Vec<_> = out.into_iter().map(sort_conns).collect();
    assert_eq!(out[0], (peer(0), vec![conn(100), conn(101), conn(102)]));
    assert_eq!(trimmed_conns(&out), 4);
    assert!(
        cm.get_tag_info(peer(0)).is_none(),
        "a trimmed peer's entry is forgotten"
    );
    assert_eq!(cm.conn_count(), 3);
    // The disconnect notifications that follow are harmless.
    close_all(&mut cm, &out, t0);
    assert_eq!(cm.conn_count(), 3);
    assert_eq!(cm.peer_count(), 3);
}

#[test]
fn trims_never_go_below_low_water() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(4, 5, Duration::ZERO), t0);
    // Peer 0 (cheapest) has 3 connections; the others one each. Candidates: 6, target 2.
    for c in 0..3 {
        cm.notify_connected(peer(0), conn(100 + c), Direction::Outbound, t0);
    }
    connect_range(&mut cm, 1..4, Direction::Outbound, t0);
    cm.tag_peer(peer(1), "v", 1);
    cm.tag_peer(peer(2), "v", 2);
    cm.tag_peer(peer(3), "v", 3);
    let out = cm.trim_open_conns(t0);
    // Closing peer 0 would leave 3 < 4: it is skipped and the next cheapest go instead.
    assert_eq!(
        out.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        vec![peer(1), peer(2)]
    );
    assert_eq!(cm.conn_count(), 4);
}

#[test]
fn protected_peers_survive_trims() {
    // go's TestPeerProtectionSingleTag.
    let t0 = Instant::now();
    let mut cm = mgr(
        Config {
            silence_period: Duration::from_secs(3600),
            ..cfg(19, 20, Duration::ZERO)
        },
        t0,
    );
    let mut next = 0u64;
    let mut add = |cm: &mut BasicConnMgr, value: i32| {
        cm.notify_connected(peer(next), conn(next), Direction::Outbound, t0);
        cm.tag_peer(peer(next), "test", value);
        next += 1;
        next - 1
    };
    for _ in 0..20 {
        add(&mut cm, 20);
    }
    for i in 0..5 {
        cm.protect(peer(i), "global");
        cm.tag_peer(peer(i), "test", -100);
    }
    // One more: protected connections do not count, so there is nothing to trim.
    add(&mut cm, 20);
    assert!(cm.trim_open_conns(t0).is_empty());

    for _ in 0..5 {
        add(&mut cm, 20);
    }
    let out = cm.trim_open_conns(t0);
    assert_eq!(trimmed_conns(&out), 2);
    assert!((0..5).all(|i| !trimmed_peers(&out).contains(&peer(i))));

    assert!(!cm.unprotect(peer(0), "global"));
    for _ in 0..2 {
        add(&mut cm, 20);
    }
    let out = cm.trim_open_conns(t0);
    assert!(
        trimmed_peers(&out).contains(&peer(0)),
        "unprotected peer is trimmed first"
    );
    assert!((1..5).all(|i| !trimmed_peers(&out).contains(&peer(i))));
}

#[test]
fn two_protection_tags_need_two_unprotects() {
    // go's TestPeerProtectionMultipleTags.
    let t0 = Instant::now();
    let mut cm = mgr(
        Config {
            silence_period: Duration::from_secs(3600),
            ..cfg(19, 20, Duration::ZERO)
        },
        t0,
    );
    connect_range(&mut cm, 0..20, Direction::Outbound, t0);
    for i in 0..20 {
        cm.tag_peer(peer(i), "test", 20);
    }
    for i in 0..5 {
        cm.protect(peer(i), "tag1");
        cm.protect(peer(i), "tag2");
        cm.tag_peer(peer(i), "test", -100);
    }
    connect_range(&mut cm, 20..21, Direction::Outbound, t0);
    let out = cm.trim_open_conns(t0);
    assert!((0..5).all(|i| !trimmed_peers(&out).contains(&peer(i))));

    assert_eq!(cm.protections(peer(0)), ["tag1", "tag2"]);
    assert!(cm.protections(peer(10)).is_empty());
    for i in 0..5 {
        assert!(cm.unprotect(peer(i), "tag1"), "still protected by tag2");
        assert_eq!(cm.protections(peer(i)), ["tag2"]);
        assert!(cm.is_protected(peer(i), None));
        assert!(!cm.is_protected(peer(i), Some("tag1")));
        assert!(cm.is_protected(peer(i), Some("tag2")));
    }
    connect_range(&mut cm, 21..27, Direction::Outbound, t0);
    let out = cm.trim_open_conns(t0);
    assert!(!out.is_empty());
    assert!((0..5).all(|i| !trimmed_peers(&out).contains(&peer(i))));

    assert!(!cm.unprotect(peer(0), "tag2"));
    assert!(!cm.is_protected(peer(0), None));
    connect_range(&mut cm, 27..30, Direction::Outbound, t0);
    let out = cm.trim_open_conns(t0);
    assert!(trimmed_peers(&out).contains(&peer(0)));
    assert!((1..5).all(|i| !trimmed_peers(&out).contains(&peer(i))));
}

#[test]
fn protection_is_idempotent_per_tag() {
    // go's TestPeerProtectionIdempotent.
    let t0 = Instant::now();
    let mut cm = mgr(cfg(10, 20, Duration::ZERO), t0);
    let p = peer(1);
    for _ in 0..4 {
        cm.protect(p, "global");
    }
    assert!(cm.unprotect(p, "unused"), "still protected by global");
    assert!(cm.unprotect(p, "unused2"));
    assert!(
        !cm.unprotect(p, "global"),
        "one unprotect revokes repeated protects"
    );
    assert!(!cm.is_protected(p, None));
    assert!(
        !cm.unprotect(p, "global"),
        "unprotecting an unprotected peer is harmless"
    );
}

#[test]
fn upsert_sees_old_value() {
    // go's TestUpsertTag, including the early tag before the connection.
    let t0 = Instant::now();
    let mut cm = mgr(cfg(1, 1, Duration::from_secs(600)), t0);
    let p = peer(1);
    let mut seen = Vec::new();
    cm.upsert_tag(p, "tag", &mut |v| {
        seen.push(v);
        v + 1
    });
    assert_eq!(cm.get_tag_info(p).map(|t| t.value), Some(1));
    cm.notify_connected(p, conn(1), Direction::Inbound, t0);
    cm.upsert_tag(p, "tag", &mut |v| {
        seen.push(v);
        v + 1
    });
    cm.upsert_tag(p, "tag", &mut |v| {
        seen.push(v);
        v - 1
    });
    assert_eq!(seen, vec![0, 1, 2]);
    let info = cm.get_tag_info(p).expect("tracked");
    assert_eq!(info.value, 1);
    assert_eq!(info.tags.len(), 1);
}

#[test]
fn untag_is_harmless_for_unknown_peers_and_tags() {
    // go's TestUntagPeer.
    let t0 = Instant::now();
    let mut cm = mgr(cfg(1, 1, Duration::from_secs(600)), t0);
    let p = peer(1);
    cm.untag_peer(p, "nothing");
    assert!(cm.get_tag_info(p).is_none(), "untag creates no entry");

    cm.notify_connected(p, conn(1), Direction::Inbound, t0);
    cm.tag_peer(p, "tag", 5);
    cm.tag_peer(p, "tag two", 5);
    cm.untag_peer(peer(2), "test");
    cm.untag_peer(p, "test");
    assert_eq!(cm.get_tag_info(p).map(|t| t.tags.len()), Some(2));
    cm.untag_peer(p, "tag");
    let info = cm.get_tag_info(p).expect("tracked");
    assert_eq!(info.tags.len(), 1);
    assert_eq!(info.value, 5);
    // Retagging replaces, not adds.
    cm.tag_peer(p, "tag two", 7);
    assert_eq!(cm.get_tag_info(p).map(|t| t.value), Some(7));
}

#[test]
fn get_tag_info_fields() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(1, 1, Duration::from_secs(600)), t0);
    let p = peer(1);
    assert!(cm.get_tag_info(p).is_none());

    let t1 = t0 + 3 * SEC;
    cm.notify_connected(p, conn(7), Direction::Outbound, t1);
    let info = cm.get_tag_info(p).expect("tracked");
    assert_eq!(info.first_seen, t1);
    assert_eq!(info.value, 0);
    assert!(info.tags.is_empty());
    assert_eq!(info.conns.len(), 1);
    assert_eq!(info.conns.get(&conn(7)), Some(&t1));

    let t2 = t1 + 5 * SEC;
    cm.notify_connected(p, conn(8), Direction::Inbound, t2);
    cm.tag_peer(p, "tag", 5);
    let info = cm.get_tag_info(p).expect("tracked");
    assert_eq!(
        info.first_seen, t1,
        "first seen stays at the first connection"
    );
    assert_eq!(info.value, 5);
    assert_eq!(info.tags.get("tag"), Some(&5));
    assert_eq!(info.conns.get(&conn(8)), Some(&t2));
    assert_eq!(info.conns.len(), 2);
}

#[test]
fn temporary_entries() {
    let t0 = Instant::now();
    // go's TestTemporaryEntryConvertedOnConnection: early tags survive the connection and
    // first_seen is reset to it.
    let mut cm = mgr(cfg(1, 1, Duration::ZERO), t0);
    let p = peer(1);
    cm.tag_peer(p, "test", 20);
    let info = cm.get_tag_info(p).expect("temporary entry");
    assert_eq!((info.value, info.first_seen, info.conns.len()), (20, t0, 0));
    assert_eq!(
        cm.peer_count(),
        0,
        "temporary entries are not connected peers"
    );
    let t1 = t0 + SEC;
    cm.notify_connected(p, conn(1), Direction::Inbound, t1);
    let info = cm.get_tag_info(p).expect("entry");
    assert_eq!((info.value, info.first_seen, info.conns.len()), (20, t1, 1));
    assert_eq!(cm.peer_count(), 1);

    // go's TestTemporaryEntriesClearedFirst.
    let mut cm = mgr(cfg(1, 1, Duration::ZERO), t0);
    let temp = peer(9);
    cm.tag_peer(temp, "test", 20);
    connect_range(&mut cm, 1..3, Direction::Outbound, t0);
    let out = cm.trim_open_conns(t0);
    assert_eq!(trimmed_conns(&out), 1);
    assert!(
        cm.get_tag_info(temp).is_none(),
        "temporary entry pruned by the trim"
    );
}

#[test]
fn duplicate_and_unknown_notifications_are_ignored() {
    // go's TestDoubleConnection and TestDisconnected.
    let t0 = Instant::now();
    let mut cm = mgr(cfg(1, 5, Duration::from_secs(600)), t0);
    let p = peer(1);
    cm.notify_connected(p, conn(1), Direction::Outbound, t0);
    cm.tag_peer(p, "foo", 10);
    cm.notify_connected(p, conn(1), Direction::Outbound, t0);
    assert_eq!(cm.conn_count(), 1);
    assert_eq!(cm.get_tag_info(p).map(|t| t.value), Some(10));

    cm.notify_disconnected(peer(2), conn(2), t0);
    cm.notify_disconnected(p, conn(2), t0);
    cm.notify_streams(peer(2), conn(2), 4);
    assert_eq!(cm.conn_count(), 1);
    assert_eq!(cm.get_tag_info(p).map(|t| t.value), Some(10));

    cm.notify_disconnected(p, conn(1), t0);
    assert_eq!(cm.conn_count(), 0);
    assert_eq!(cm.peer_count(), 0);
    assert!(
        cm.get_tag_info(p).is_none(),
        "the last disconnect forgets the peer"
    );
}

#[test]
fn disabled_watermarks_never_trim() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(0, 10, Duration::ZERO), t0);
    connect_range(&mut cm, 0..20, Direction::Outbound, t0);
    assert!(cm.trim_open_conns(t0).is_empty());
    assert!(cm.handle_timeout(t0 + Duration::from_secs(100)).is_empty());
    assert_eq!(cm.conn_count(), 20);
}

#[test]
fn config_validation() {
    let t0 = Instant::now();
    assert_eq!(
        BasicConnMgr::new(cfg(10, 5, SEC), t0).err(),
        Some(ConnMgrError::LowAboveHigh { low: 10, high: 5 })
    );
    let zero_res = Config {
        decay_resolution: Duration::ZERO,
        ..Config::default()
    };
    assert_eq!(
        BasicConnMgr::new(zero_res, t0).err(),
        Some(ConnMgrError::ZeroDecayResolution)
    );
    let zero_check = Config {
        silence_period: Duration::ZERO,
        ..cfg(1, 2, Duration::ZERO)
    };
    assert_eq!(
        BasicConnMgr::new(zero_check, t0).err(),
        Some(ConnMgrError::ZeroCheckInterval)
    );
    // With no silence period, half the grace period is the check interval (go's rule).
    let c = Config {
        silence_period: Duration::ZERO,
        ..cfg(1, 2, 10 * SEC)
    };
    assert_eq!(c.check_interval(), 5 * SEC);
    assert!(c.validate().is_ok());
    let d = Config::default();
    assert_eq!(
        (d.low_water, d.high_water, d.grace_period, d.silence_period),
        (160, 192, 60 * SEC, 10 * SEC)
    );
    assert!(ConnMgrError::LowAboveHigh { low: 10, high: 5 }
        .to_string()
        .contains("10"));
}

#[test]
fn metrics_after_a_trim() {
    let t0 = Instant::now();
    let mut registry = Registry::default();
    let metrics = ConnMgrMetrics::register(&mut registry);
    let mut cm = mgr(cfg(3, 5, Duration::ZERO), t0).with_metrics(metrics.clone());
    connect_range(&mut cm, 0..8, Direction::Outbound, t0);
    cm.notify_connected(peer(0), conn(100), Direction::Inbound, t0);
    cm.protect(peer(0), "a");
    cm.protect(peer(1), "a");
    cm.protect(peer(1), "b");
    assert_eq!(
        (
            metrics.connections(),
            metrics.peers(),
            metrics.protected_peers()
        ),
        (9, 8, 2)
    );

    let out = cm.trim_open_conns(t0);
    assert_eq!(trimmed_conns(&out), 3);
    assert_eq!(metrics.trims(), 1);
    assert_eq!(metrics.connections_trimmed(), 3);
    assert_eq!(
        (
            metrics.connections(),
            metrics.peers(),
            metrics.protected_peers()
        ),
        (6, 5, 2)
    );
    close_all(&mut cm, &out, t0);
    assert_eq!(metrics.connections(), 6);
    cm.unprotect(peer(1), "a");
    cm.unprotect(peer(1), "b");
    assert_eq!(metrics.protected_peers(), 1);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for line in [
        "connmgr_connections 6",
        "connmgr_peers 5",
        "connmgr_protected_peers 1",
        "connmgr_trims_total 1",
        "connmgr_connections_trimmed_total 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn poll_timeout_and_close() {
    let t0 = Instant::now();
    let mut cm = mgr(
        Config {
            silence_period: 10 * SEC,
            ..cfg(2, 4, 60 * SEC)
        },
        t0,
    );
    // Idle: a heartbeat one check interval ahead.
    assert_eq!(cm.poll_timeout(), Some(t0 + 10 * SEC));
    connect_range(&mut cm, 0..4, Direction::Outbound, t0 + SEC);
    // At the high watermark a check is due now.
    assert_eq!(cm.poll_timeout(), Some(t0 + SEC));
    // Everything is in its grace period: the check trims nothing and is retried a silence
    // period later.
    assert!(cm.handle_timeout(t0 + 2 * SEC).is_empty());
    assert_eq!(cm.poll_timeout(), Some(t0 + 12 * SEC));
    // Past the grace period, polling at the wakeups eventually trims.
    let mut now = t0 + 2 * SEC;
    let mut out = Vec::new();
    while out.is_empty() {
        now = cm.poll_timeout().expect("open");
        out = cm.handle_timeout(now);
    }
    assert!(
        now >= t0 + 61 * SEC && now <= t0 + 72 * SEC,
        "{:?}",
        now - t0
    );
    assert_eq!(trimmed_conns(&out), 2);

    cm.close();
    assert_eq!(cm.poll_timeout(), None);
    connect_range(&mut cm, 10..20, Direction::Outbound, now);
    assert!(
        cm.handle_timeout(now + 3600 * SEC).is_empty(),
        "no background trims after close"
    );
    assert_eq!(
        trimmed_conns(&cm.trim_open_conns(now + 3600 * SEC)),
        10,
        "explicit trims still work"
    );
}

#[test]
fn null_conn_mgr_does_nothing() {
    let t0 = Instant::now();
    let mut cm = NullConnMgr;
    let p = peer(1);
    cm.notify_connected(p, conn(1), Direction::Inbound, t0);
    cm.tag_peer(p, "t", 5);
    cm.upsert_tag(p, "t", &mut |v| v + 1);
    cm.untag_peer(p, "t");
    cm.notify_streams(p, conn(1), 3);
    assert!(cm.get_tag_info(p).is_none());
    cm.protect(p, "x");
    assert!(!cm.is_protected(p, None));
    assert!(!cm.is_protected(p, Some("x")));
    assert!(!cm.unprotect(p, "x"));
    assert!(cm.trim_open_conns(t0).is_empty());
    assert!(cm.handle_timeout(t0).is_empty());
    assert_eq!(cm.poll_timeout(), None);
    cm.notify_disconnected(p, conn(1), t0);
    cm.close();
}

#[test]
fn handle_is_shared_and_usable_as_a_conn_manager() {
    fn drive<C: ConnManager>(cm: &mut C, now: Instant) -> Trimmed {
        for i in 0..4 {
            cm.notify_connected(peer(i), conn(i), Direction::Outbound, now);
        }
        cm.trim_open_conns(now)
    }
    let t0 = Instant::now();
    let mut swarm_side = ConnManagerHandle::new(mgr(cfg(2, 3, Duration::ZERO), t0));
    let app = swarm_side.clone();
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            let app = app.clone();
            std::thread::spawn(move || {
                app.tag_peer(peer(i), "score", i as i32 * 10);
                app.protect(peer(0), "app");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let out = drive(&mut swarm_side, t0);
    // Peer 0 is protected; peer 1 has the lowest remaining value; target is 3 - 2 = 1.
    assert_eq!(trimmed_peers(&out), [peer(1)].into_iter().collect());
    assert!(app.is_protected(peer(0), Some("app")));
    assert_eq!(app.get_tag_info(peer(3)).map(|t| t.value), Some(30));
    assert_eq!(app.lock().conn_count(), 3);
    assert_eq!(app.with(|cm| cm.peer_count()), 3);
}
