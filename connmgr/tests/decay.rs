//! Decaying tags on a virtual clock, informed by go-libp2p's decay tests.

use std::time::{Duration, Instant};

use meshwire_connmgr::{
    bump_overwrite, bump_sum_bounded, bump_sum_unbounded, decay_expire_when_inactive, decay_fixed,
    decay_linear, decay_none, BasicConnMgr, Config, ConnManager, ConnMgrError, Decayer,
    DecayingTagId,
};
use meshwire_core::{ConnectionId, Direction, Keypair, PeerId};

const RES: Duration = Duration::from_millis(50);

fn peer(i: u64) -> PeerId {
    Keypair::from_seed_for_tests(i).peer_id()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A manager with the decay resolution of go's tests (50 ms).
fn tracker(t0: Instant) -> BasicConnMgr {
    let cfg = Config {
        low_water: 10,
        high_water: 10,
        grace_period: Duration::from_secs(1),
        decay_resolution: RES,
        ..Config::default()
    };
    BasicConnMgr::new(cfg, t0).expect("valid config")
}

fn value(cm: &BasicConnMgr, p: PeerId) -> Option<i32> {
    cm.get_tag_info(p).map(|t| t.value)
}

fn tag_value(cm: &BasicConnMgr, p: PeerId, name: &str) -> Option<i32> {
    cm.get_tag_info(p).and_then(|t| t.tags.get(name).copied())
}

#[test]
fn expire_when_inactive() {
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let p = peer(1);
    let tag = cm
        .register_decaying_tag(
            "pop",
            ms(250),
            decay_expire_when_inactive(Duration::from_secs(1)),
            bump_sum_unbounded(),
        )
        .expect("register");
    cm.bump(p, tag, 10).expect("bump");
    assert_eq!(value(&cm, p), Some(10));

    for step in 1..4 {
        cm.handle_timeout(t0 + ms(250 * step));
        assert_eq!(value(&cm, p), Some(10), "still active after {step} ticks");
    }
    cm.handle_timeout(t0 + ms(1000));
    assert_eq!(value(&cm, p), Some(0));
    assert_eq!(tag_value(&cm, p, "pop"), None, "expired value removed");

    // Bumping keeps a value alive.
    cm.bump(p, tag, 5).expect("bump");
    cm.handle_timeout(t0 + ms(1750));
    cm.bump(p, tag, 5).expect("bump");
    cm.handle_timeout(t0 + ms(2500));
    assert_eq!(value(&cm, p), Some(10));
    cm.handle_timeout(t0 + ms(2750));
    assert_eq!(value(&cm, p), Some(0));
}

#[test]
fn bounded_bumps() {
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let p = peer(1);
    let tag = cm
        .register_decaying_tag(
            "pop",
            ms(250),
            decay_expire_when_inactive(Duration::from_secs(1)),
            bump_sum_bounded(10, 20),
        )
        .expect("register");
    cm.bump(p, tag, 5).expect("bump");
    assert_eq!(value(&cm, p), Some(10), "raised to the lower bound");
    cm.bump(p, tag, 100).expect("bump");
    assert_eq!(value(&cm, p), Some(20), "capped at the upper bound");
}

#[test]
fn multiple_tags_without_decay() {
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let p = peer(1);
    let tags: Vec<DecayingTagId> = ["beep", "bop", "foo"]
        .iter()
        .map(|n| {
            cm.register_decaying_tag(n, ms(250), decay_none(), bump_sum_bounded(0, 100))
                .expect("register")
        })
        .collect();
    for _ in 0..2 {
        for t in &tags {
            cm.bump(p, *t, 100).expect("bump");
        }
    }
    cm.handle_timeout(t0 + Duration::from_secs(10));
    let info = cm.get_tag_info(p).expect("tracked");
    assert_eq!(info.value, 300);
    for n in ["beep", "bop", "foo"] {
        assert_eq!(info.tags.get(n), Some(&100), "{n}");
    }
}

#[test]
fn fixed_decay_on_separate_schedules() {
    // go's TestCustomFunctions.
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let p = peer(1);
    let t1 = cm
        .register_decaying_tag("beep", ms(250), decay_fixed(10), bump_sum_unbounded())
        .expect("register");
    let t2 = cm
        .register_decaying_tag("bop", ms(100), decay_fixed(5), bump_sum_unbounded())
        .expect("register");
    let t3 = cm
        .register_decaying_tag("foo", ms(50), decay_fixed(1), bump_sum_unbounded())
        .expect("register");
    for t in [t1, t2, t3] {
        cm.bump(p, t, 1000).expect("bump");
    }
    assert_eq!(value(&cm, p), Some(3000));
    assert_eq!(cm.poll_timeout(), Some(t0 + ms(50)), "next decay tick");

    // Only tag3 ticks.
    cm.handle_timeout(t0 + ms(50));
    assert_eq!(value(&cm, p), Some(2999));
    // tag3 ticks thrice more, tag2 twice.
    cm.handle_timeout(t0 + ms(200));
    assert_eq!(value(&cm, p), Some(2986));
    // tag3 once more, tag1 once.
    cm.handle_timeout(t0 + ms(250));
    assert_eq!(value(&cm, p), Some(2975));
}

#[test]
fn multiple_peers_many_ticks() {
    // go's TestMultiplePeers: a single late poll catches up on all 60 ticks.
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let ids = [peer(1), peer(2), peer(3)];
    let params = [(5u32, 10i32), (2, 5), (1, 1)];
    let tags: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, (ratio, v))| {
            cm.register_decaying_tag(
                &i.to_string(),
                RES * *ratio,
                decay_fixed(*v),
                bump_sum_unbounded(),
            )
            .expect("register")
        })
        .collect();
    let init = [1000, 500, 100];
    for (p, v) in ids.iter().zip(init) {
        for t in &tags {
            cm.bump(*p, *t, v).expect("bump");
        }
    }
    let ticks = 60;
    cm.handle_timeout(t0 + RES * ticks);
    for (p, v) in ids.iter().zip(init) {
        let mut expected = 3 * v;
        for (ratio, amount) in params {
            let t_value = (v - (ticks / ratio) as i32 * amount).max(0);
            expected -= v - t_value;
        }
        // Values reaching 0 are removed (decay_fixed), so they count 0.
        assert_eq!(value(&cm, *p), Some(expected), "peer {p}");
    }
}

#[test]
fn linear_decay_and_overwrite() {
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let p = peer(1);
    let tag = cm
        .register_decaying_tag("beep", ms(250), decay_linear(0.5), bump_overwrite())
        .expect("register");
    cm.bump(p, tag, 1000).expect("bump");
    assert_eq!(value(&cm, p), Some(1000));
    cm.handle_timeout(t0 + ms(250));
    assert_eq!(value(&cm, p), Some(500));
    cm.handle_timeout(t0 + ms(500));
    assert_eq!(value(&cm, p), Some(250));
    cm.bump(p, tag, 1000).expect("bump");
    assert_eq!(value(&cm, p), Some(1000));
}

#[test]
fn intervals_misaligned_with_resolution() {
    // go's TestResolutionMisaligned: intervals of 1.4 and 2.4 resolutions.
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let p = peer(1);
    let t1 = cm
        .register_decaying_tag("beep", ms(70), decay_fixed(1), bump_overwrite())
        .expect("register");
    let t2 = cm
        .register_decaying_tag("bop", ms(120), decay_fixed(1), bump_overwrite())
        .expect("register");
    cm.bump(p, t1, 1000).expect("bump");
    cm.bump(p, t2, 1000).expect("bump");

    cm.handle_timeout(t0 + RES);
    assert_eq!(
        (tag_value(&cm, p, "beep"), tag_value(&cm, p, "bop")),
        (Some(1000), Some(1000))
    );
    cm.handle_timeout(t0 + 2 * RES);
    assert_eq!(
        (tag_value(&cm, p, "beep"), tag_value(&cm, p, "bop")),
        (Some(999), Some(1000))
    );
    cm.handle_timeout(t0 + 3 * RES);
    assert_eq!(
        (tag_value(&cm, p, "beep"), tag_value(&cm, p, "bop")),
        (Some(998), Some(999))
    );
    assert_eq!(value(&cm, p), Some(1997));
}

#[test]
fn interval_below_resolution_is_raised() {
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let p = peer(1);
    let t = cm
        .register_decaying_tag("fast", ms(1), decay_fixed(1), bump_overwrite())
        .expect("register");
    cm.bump(p, t, 100).expect("bump");
    cm.handle_timeout(t0 + ms(49));
    assert_eq!(value(&cm, p), Some(100));
    cm.handle_timeout(t0 + ms(100));
    assert_eq!(value(&cm, p), Some(98), "one decay per resolution step");
}

#[test]
fn tag_removal() {
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let (p1, p2) = (peer(1), peer(2));
    let t1 = cm
        .register_decaying_tag("beep", RES, decay_fixed(1), bump_overwrite())
        .expect("register");
    let t2 = cm
        .register_decaying_tag("bop", RES, decay_fixed(1), bump_overwrite())
        .expect("register");
    cm.bump(p1, t1, 1000).expect("bump");
    cm.bump(p1, t2, 1000).expect("bump");
    cm.bump(p2, t1, 1000).expect("bump");

    cm.handle_timeout(t0 + RES);
    assert_eq!(value(&cm, p1), Some(1998));
    assert_eq!(value(&cm, p2), Some(999));

    cm.remove_decaying(p1, t1).expect("remove");
    cm.handle_timeout(t0 + 2 * RES);
    assert_eq!(tag_value(&cm, p1, "beep"), None);
    assert_eq!(tag_value(&cm, p1, "bop"), Some(998));
    assert_eq!(tag_value(&cm, p2, "beep"), Some(998));
    assert_eq!(value(&cm, p1), Some(998));
    assert_eq!(value(&cm, p2), Some(998));
    // Removing again, or from an unknown peer, is harmless.
    cm.remove_decaying(p1, t1).expect("remove again");
    cm.remove_decaying(peer(9), t1)
        .expect("remove from unknown peer");
    assert!(cm.get_tag_info(peer(9)).is_none());
}

#[test]
fn tag_closure() {
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let p = peer(1);
    let t1 = cm
        .register_decaying_tag("beep", RES, decay_fixed(1), bump_overwrite())
        .expect("register");
    let t2 = cm
        .register_decaying_tag("bop", RES, decay_fixed(1), bump_overwrite())
        .expect("register");
    cm.bump(p, t1, 1000).expect("bump");
    cm.bump(p, t2, 1000).expect("bump");
    cm.handle_timeout(t0 + 2 * RES);
    assert_eq!(value(&cm, p), Some(998 * 2));

    cm.close_decaying_tag(t1).expect("close");
    assert_eq!(value(&cm, p), Some(998));
    assert_eq!(tag_value(&cm, p, "beep"), None);
    cm.close_decaying_tag(t1)
        .expect("closing twice is harmless");
    assert_eq!(cm.bump(p, t1, 5), Err(ConnMgrError::DecayingTagClosed(t1)));
    assert_eq!(
        cm.remove_decaying(p, t1),
        Err(ConnMgrError::DecayingTagClosed(t1))
    );
    // The name can be registered again, under a new id.
    let t3 = cm
        .register_decaying_tag("beep", RES, decay_fixed(1), bump_overwrite())
        .expect("register");
    assert_ne!(t3, t1);
}

#[test]
fn registration_errors() {
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let t = cm
        .register_decaying_tag("x", RES, decay_none(), bump_overwrite())
        .expect("register");
    assert_eq!(
        cm.register_decaying_tag("x", RES, decay_none(), bump_overwrite()),
        Err(ConnMgrError::DuplicateDecayingTag("x".into()))
    );
    // `t` was never registered with this other manager.
    let mut fresh = tracker(t0);
    assert_eq!(
        fresh.bump(peer(1), t, 1),
        Err(ConnMgrError::UnknownDecayingTag(t))
    );
    assert_eq!(
        fresh.close_decaying_tag(t),
        Err(ConnMgrError::UnknownDecayingTag(t))
    );

    cm.close();
    assert_eq!(
        cm.register_decaying_tag("y", RES, decay_none(), bump_overwrite()),
        Err(ConnMgrError::Closed)
    );
    assert_eq!(cm.bump(peer(1), t, 1), Err(ConnMgrError::Closed));
}

#[test]
fn decaying_values_count_in_trim_order_and_are_applied_before_trims() {
    let t0 = Instant::now();
    let cfg = Config {
        low_water: 1,
        high_water: 2,
        grace_period: Duration::ZERO,
        decay_resolution: RES,
        ..Config::default()
    };
    let mut cm = BasicConnMgr::new(cfg, t0).expect("config");
    let (a, b) = (peer(1), peer(2));
    cm.notify_connected(a, ConnectionId::from_raw(1), Direction::Outbound, t0);
    cm.notify_connected(b, ConnectionId::from_raw(2), Direction::Outbound, t0);
    let tag = cm
        .register_decaying_tag("recent", RES, decay_fixed(10), bump_sum_unbounded())
        .expect("register");
    cm.tag_peer(a, "static", 25);
    cm.bump(b, tag, 50).expect("bump");
    // At t0, b (50) beats a (25); three ticks later b is down to 20 and loses.
    let out = cm.trim_open_conns(t0 + 3 * RES);
    assert_eq!(out, vec![(b, vec![ConnectionId::from_raw(2)])]);
}

#[test]
fn idle_schedules_catch_up_cheaply() {
    let t0 = Instant::now();
    let mut cm = tracker(t0);
    let p = peer(1);
    let tag = cm
        .register_decaying_tag("t", RES, decay_fixed(1), bump_overwrite())
        .expect("register");
    // Nobody holds a value for a simulated year: the schedule just moves on.
    let year = Duration::from_secs(365 * 24 * 3600);
    cm.handle_timeout(t0 + year);
    let wake = cm.poll_timeout().expect("open");
    assert!(wake > t0 + year && wake <= t0 + year + RES);
    cm.bump(p, tag, 10).expect("bump");
    cm.handle_timeout(t0 + year + 3 * RES);
    assert_eq!(value(&cm, p), Some(7));
}
