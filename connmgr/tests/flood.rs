//! The flood rule of `BasicConnMgr` (`Config::flood_headroom`): above the high watermark
//! (plus headroom), inbound-only peers with no tag and no protection are no longer
//! sheltered by the grace period and are closed newest first.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use meshwire_connmgr::{
    bump_sum_unbounded, decay_none, BasicConnMgr, Config, ConnManager, ConnMgrMetrics, Decayer,
    Trimmed,
};
use meshwire_core::{ConnectionId, Direction, Keypair, PeerId};
use prometheus_client::registry::Registry;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn peer(i: u64) -> PeerId {
    Keypair::from_seed_for_tests(i).peer_id()
}

fn conn(i: u64) -> ConnectionId {
    ConnectionId::from_raw(i)
}

/// Watermarks 5/10, a one-minute grace period and the default flood rule (no headroom).
fn cfg() -> Config {
    Config {
        low_water: 5,
        high_water: 10,
        grace_period: 60 * SEC,
        ..Config::default()
    }
}

fn mgr(cfg: Config, start: Instant) -> BasicConnMgr {
    BasicConnMgr::new(cfg, start).expect("valid config")
}

fn trimmed_peers(t: &Trimmed) -> HashSet<PeerId> {
    t.iter().map(|(p, _)| *p).collect()
}

fn trimmed_conns(t: &Trimmed) -> usize {
    t.iter().map(|(_, c)| c.len()).sum()
}

fn close_all(cm: &mut BasicConnMgr, t: &Trimmed, now: Instant) {
    for (p, conns) in t {
        for c in conns {
            cm.notify_disconnected(*p, *c, now);
        }
    }
}

/// Connects peer `i` inbound (connection id `i`) at `now` and runs `handle_timeout` as the
/// swarm does after every new connection; returns what was trimmed (already closed).
fn flood_one(cm: &mut BasicConnMgr, i: u64, now: Instant) -> Trimmed {
    cm.notify_connected(peer(i), conn(i), Direction::Inbound, now);
    let out = cm.handle_timeout(now);
    close_all(cm, &out, now);
    out
}

#[test]
fn default_config_has_the_rule_at_the_high_watermark() {
    let c = Config::default();
    assert_eq!(c.flood_headroom, Some(0));
    assert_eq!(c.flood_limit(), Some(192));
    assert_eq!(
        Config {
            flood_headroom: Some(8),
            ..c.clone()
        }
        .flood_limit(),
        Some(200)
    );
    assert_eq!(
        Config {
            flood_headroom: None,
            ..c.clone()
        }
        .flood_limit(),
        None
    );
    // Trimming disabled disables the rule too.
    assert_eq!(Config::with_watermarks(0, 0).flood_limit(), None);
}

#[test]
fn a_flood_in_its_grace_period_is_trimmed_newest_first() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(), t0);
    let mut closed = Vec::new();
    for i in 0..40 {
        let out = flood_one(&mut cm, i, t0 + i as u32 * MS);
        assert!(cm.conn_count() <= 10, "count {} after {i}", cm.conn_count());
        closed.extend(trimmed_peers(&out));
    }
    // Every connection is in its grace period, yet the count stays at the high watermark:
    // the first ten are kept, every later one is closed as it arrives.
    assert_eq!(cm.conn_count(), 10);
    for i in 0..10 {
        assert!(cm.get_tag_info(peer(i)).is_some(), "peer {i} kept");
    }
    let expected: HashSet<PeerId> = (10..40).map(peer).collect();
    assert_eq!(closed.into_iter().collect::<HashSet<_>>(), expected);
    assert_eq!(cm.flood_trimmed(), 30);
}

#[test]
fn a_burst_between_calls_keeps_the_oldest() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(), t0);
    for i in 0..25 {
        cm.notify_connected(peer(i), conn(i), Direction::Inbound, t0 + i as u32 * MS);
    }
    let now = t0 + SEC;
    let out = cm.handle_timeout(now);
    assert_eq!(trimmed_conns(&out), 15);
    assert_eq!(trimmed_peers(&out), (10..25).map(peer).collect());
    // Ties in the opening time are broken by connection id, newest (highest) first.
    let mut cm = mgr(cfg(), t0);
    for i in 0..12 {
        cm.notify_connected(peer(i), conn(i), Direction::Inbound, t0);
    }
    let out = cm.handle_timeout(t0);
    assert_eq!(
        trimmed_peers(&out),
        [peer(10), peer(11)].into_iter().collect()
    );
}

#[test]
fn outbound_tagged_decaying_and_protected_peers_are_no_flood_candidates() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(), t0);
    let tag = cm
        .register_decaying_tag("d", 60 * SEC, decay_none(), bump_sum_unbounded())
        .expect("registered");
    // 10 outbound peers, then inbound peers that are tagged (even at 0), have a decaying
    // value, are protected, or also have an outbound connection.
    for i in 0..10 {
        cm.notify_connected(peer(i), conn(i), Direction::Outbound, t0);
    }
    cm.notify_connected(peer(10), conn(10), Direction::Inbound, t0);
    cm.tag_peer(peer(10), "app", 0);
    cm.notify_connected(peer(11), conn(11), Direction::Inbound, t0);
    cm.bump(peer(11), tag, 1).expect("bumped");
    cm.protect(peer(12), "relay");
    cm.notify_connected(peer(12), conn(12), Direction::Inbound, t0);
    cm.notify_connected(peer(13), conn(13), Direction::Inbound, t0);
    cm.notify_connected(peer(13), conn(113), Direction::Outbound, t0);
    assert!(cm.handle_timeout(t0 + SEC).is_empty());
    assert_eq!(cm.conn_count(), 15);
    // A plain inbound newcomer goes, and only it.
    let out = flood_one(&mut cm, 14, t0 + 2 * SEC);
    assert_eq!(trimmed_peers(&out), [peer(14)].into_iter().collect());
    assert_eq!(cm.conn_count(), 15);
}

#[test]
fn tagging_a_newcomer_takes_it_out_of_the_flood() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(), t0);
    for i in 0..10 {
        flood_one(&mut cm, i, t0);
    }
    cm.notify_connected(peer(10), conn(10), Direction::Inbound, t0 + MS);
    cm.tag_peer(peer(10), "kad", 5);
    cm.notify_connected(peer(11), conn(11), Direction::Inbound, t0 + 2 * MS);
    let out = cm.handle_timeout(t0 + 3 * MS);
    // Two over the limit; the tagged newcomer is kept, so the newest two untagged go.
    assert_eq!(
        trimmed_peers(&out),
        [peer(11), peer(9)].into_iter().collect()
    );
    assert!(cm.get_tag_info(peer(10)).is_some());
}

#[test]
fn peers_past_their_grace_period_are_left_to_the_ordinary_trim() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(), t0);
    // Four long-lived untagged inbound peers (fewer than the low watermark, so the ordinary
    // trim has nothing to do).
    for i in 0..4 {
        flood_one(&mut cm, i, t0);
    }
    let later = t0 + 120 * SEC;
    for i in 100..130 {
        flood_one(&mut cm, i, later + (i as u32) * MS);
    }
    assert_eq!(cm.conn_count(), 10);
    for i in 0..4 {
        assert!(
            cm.get_tag_info(peer(i)).is_some(),
            "long-lived peer {i} kept"
        );
    }
    for i in 100..106 {
        assert!(cm.get_tag_info(peer(i)).is_some(), "first newcomers kept");
    }
}

#[test]
fn headroom_raises_the_limit_and_multi_connection_peers_are_not_split() {
    let t0 = Instant::now();
    let mut cm = mgr(
        Config {
            flood_headroom: Some(5),
            ..cfg()
        },
        t0,
    );
    for i in 0..15 {
        assert!(flood_one(&mut cm, i, t0 + i as u32 * MS).is_empty());
    }
    assert_eq!(cm.conn_count(), 15);
    // A newcomer with three connections at once: one over the limit. Closing it would take
    // the count 2 below, so the newest single-connection peer goes instead.
    let now = t0 + SEC;
    for c in 0..3 {
        cm.notify_connected(peer(50), conn(500 + c), Direction::Inbound, now);
    }
    cm.notify_connected(peer(51), conn(51), Direction::Inbound, now - MS);
    let out = cm.handle_timeout(now);
    // Four over: peer 50 (3 connections, the newest) and then peer 51.
    assert_eq!(
        trimmed_peers(&out),
        [peer(50), peer(51)].into_iter().collect()
    );
    assert_eq!(cm.conn_count(), 15);
    cm.notify_connected(peer(60), conn(600), Direction::Inbound, now + MS);
    cm.notify_connected(peer(60), conn(601), Direction::Inbound, now + MS);
    let out = cm.handle_timeout(now + 2 * MS);
    // Two over: peer 60's two connections go together.
    assert_eq!(trimmed_conns(&out), 2);
    close_all(&mut cm, &out, now);
    cm.notify_connected(peer(70), conn(700), Direction::Inbound, now + 3 * MS);
    cm.notify_connected(peer(70), conn(701), Direction::Inbound, now + 3 * MS);
    cm.notify_connected(peer(71), conn(71), Direction::Inbound, now + 2 * MS);
    let out = cm.handle_timeout(now + 4 * MS);
    // Three over: peer 70 (2) and peer 71 (1).
    assert_eq!(trimmed_conns(&out), 3);
}

#[test]
fn without_the_rule_the_grace_period_shelters_the_flood() {
    let t0 = Instant::now();
    let mut cm = mgr(
        Config {
            flood_headroom: None,
            ..cfg()
        },
        t0,
    );
    for i in 0..40 {
        assert!(flood_one(&mut cm, i, t0 + i as u32 * MS).is_empty());
    }
    assert_eq!(cm.conn_count(), 40);
    assert_eq!(cm.flood_trimmed(), 0);
    // After the grace period, the ordinary trim goes down to the low watermark.
    let out = cm.handle_timeout(t0 + 61 * SEC);
    assert_eq!(trimmed_conns(&out), 35);
}

#[test]
fn poll_timeout_asks_for_the_rule_at_once_but_never_spins() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(), t0);
    for i in 0..10 {
        cm.notify_connected(peer(i), conn(i), Direction::Outbound, t0);
    }
    assert!(cm.handle_timeout(t0).is_empty());
    let heartbeat = cm.poll_timeout().expect("armed");
    assert!(heartbeat > t0);
    // An inbound connection over the limit: due now.
    cm.notify_connected(peer(10), conn(10), Direction::Inbound, t0);
    assert_eq!(cm.poll_timeout(), Some(t0));
    assert_eq!(trimmed_conns(&cm.handle_timeout(t0)), 1);
    // Over the limit with nothing the rule may close (an outbound newcomer): no busy loop.
    cm.notify_connected(peer(11), conn(11), Direction::Outbound, t0);
    assert!(cm.poll_timeout().is_some_and(|w| w > t0));
    cm.notify_connected(peer(12), conn(12), Direction::Inbound, t0);
    cm.protect(peer(12), "p");
    assert_eq!(cm.poll_timeout(), Some(t0));
    assert!(cm.handle_timeout(t0).is_empty());
    assert!(cm.poll_timeout().is_some_and(|w| w > t0));
}

#[test]
fn explicit_trims_keep_go_semantics() {
    let t0 = Instant::now();
    let mut cm = mgr(cfg(), t0);
    for i in 0..20 {
        cm.notify_connected(peer(i), conn(i), Direction::Inbound, t0);
    }
    // TrimOpenConns ignores the flood rule: everything is in its grace period.
    assert!(cm.trim_open_conns(t0 + SEC).is_empty());
    assert_eq!(cm.conn_count(), 20);
}

#[test]
fn metrics_count_flood_trims() {
    let t0 = Instant::now();
    let mut registry = Registry::default();
    let metrics = ConnMgrMetrics::register(&mut registry);
    let mut cm = mgr(cfg(), t0).with_metrics(metrics.clone());
    for i in 0..13 {
        flood_one(&mut cm, i, t0 + i as u32 * MS);
    }
    assert_eq!(metrics.connections_flood_trimmed(), 3);
    assert_eq!(metrics.connections_trimmed(), 3);
    assert_eq!(metrics.connections(), 10);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    assert!(text.contains("connmgr_connections_flood_trimmed_total 3"));
}
