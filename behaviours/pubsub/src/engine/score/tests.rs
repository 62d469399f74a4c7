//! The score function component by component, decay and retention.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};

use super::params::{PeerScoreParams, TopicScoreParams};
use super::*;

fn peer(i: u64) -> PeerId {
    Keypair::from_seed_for_tests(i).peer_id()
}

fn topic() -> TopicHash {
    TopicHash::from("scored")
}

/// Every weight 0; each test turns on what it checks.
fn quiet_topic() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        time_in_mesh_quantum: Duration::from_secs(1),
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: 0.0,
        ..TopicScoreParams::default()
    }
}

fn scorer(t: TopicScoreParams) -> PeerScore {
    let mut params = PeerScoreParams {
        app_specific_weight: 0.0,
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: 0.0,
        slow_peer_weight: 0.0,
        ..PeerScoreParams::default()
    };
    params.topics.insert(topic(), t);
    params.validate().unwrap();
    PeerScore::new(params, 1000)
}

fn id(i: u32) -> MessageId {
    MessageId(i.to_be_bytes().to_vec())
}

#[test]
fn p1_time_in_mesh_grows_per_quantum_up_to_its_cap() {
    let mut s = scorer(TopicScoreParams {
        time_in_mesh_weight: 2.0,
        time_in_mesh_cap: 10.0,
        ..quiet_topic()
    });
    let (p, t0) = (peer(1), Instant::now());
    s.add_peer(p);
    s.graft(t0, &p, &topic());
    s.refresh(t0);
    s.refresh(t0 + Duration::from_secs(3));
    assert_eq!(s.score(&p), 3.0 * 2.0);
    s.refresh(t0 + Duration::from_secs(60));
    assert_eq!(s.score(&p), 10.0 * 2.0, "capped");
    s.prune(&p, &topic());
    assert_eq!(s.score(&p), 0.0, "only while in the mesh");
}

#[test]
fn p2_first_deliveries_count_capped_and_decay() {
    let mut s = scorer(TopicScoreParams {
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_cap: 5.0,
        first_message_deliveries_decay: 0.5,
        ..quiet_topic()
    });
    let (p, now) = (peer(1), Instant::now());
    s.add_peer(p);
    for i in 0..8 {
        s.validate_message(now, &id(i));
        s.deliver_message(now, &p, &id(i), &topic());
    }
    assert_eq!(s.score(&p), 5.0);
    s.refresh(now);
    s.refresh(now + Duration::from_secs(1));
    assert_eq!(s.score(&p), 2.5);
}

#[test]
fn p3_mesh_delivery_deficit_counts_after_activation_and_p3b_sticks() {
    let mut s = scorer(TopicScoreParams {
        mesh_message_deliveries_weight: -1.0,
        mesh_message_deliveries_threshold: 4.0,
        mesh_message_deliveries_activation: Duration::from_secs(2),
        mesh_message_deliveries_decay: 0.9,
        mesh_failure_penalty_weight: -1.0,
        mesh_failure_penalty_decay: 0.5,
        ..quiet_topic()
    });
    let (p, t0) = (peer(1), Instant::now());
    s.add_peer(p);
    s.graft(t0, &p, &topic());
    s.refresh(t0);
    s.refresh(t0 + Duration::from_secs(1));
    assert_eq!(s.score(&p), 0.0, "not active yet");
    // One delivery in the mesh (first) and one duplicate within the window.
    let t = t0 + Duration::from_secs(1);
    s.validate_message(t, &id(1));
    s.deliver_message(t, &p, &id(1), &topic());
    let q = peer(2);
    s.add_peer(q);
    s.graft(t, &q, &topic());
    s.duplicated_message(t, &q, &id(1), &topic());
    s.refresh(t0 + Duration::from_secs(3));
    // One delivery in the mesh (q's copy counts for q), decayed once: deficit 4 - 0.9.
    let deficit: f64 = 4.0 - 0.9;
    assert!(
        (s.score(&p) + deficit * deficit).abs() < 1e-9,
        "{}",
        s.score(&p)
    );
    // Pruned with a deficit: the sticky penalty replaces P3, then decays.
    s.prune(&p, &topic());
    assert!((s.score(&p) + deficit * deficit).abs() < 1e-9);
    s.refresh(t0 + Duration::from_secs(4));
    assert!((s.score(&p) + deficit * deficit * 0.5).abs() < 1e-9);
}

#[test]
fn late_duplicates_do_not_count_for_p3() {
    let mut s = scorer(TopicScoreParams {
        mesh_message_deliveries_weight: -1.0,
        mesh_message_deliveries_threshold: 1.0,
        mesh_message_deliveries_window: Duration::from_millis(10),
        mesh_message_deliveries_activation: Duration::from_secs(1),
        ..quiet_topic()
    });
    let (first, late, now) = (peer(1), peer(2), Instant::now());
    for p in [first, late] {
        s.add_peer(p);
        s.graft(now, &p, &topic());
    }
    s.validate_message(now, &id(1));
    s.deliver_message(now, &first, &id(1), &topic());
    s.duplicated_message(now + Duration::from_millis(50), &late, &id(1), &topic());
    s.refresh(now);
    s.refresh(now + Duration::from_secs(2));
    // First: 1 delivery decayed once to 0.5, deficit 0.5. Late: its copy came after the
    // window and did not count, deficit 1.
    assert_eq!(s.score(&first), -0.25);
    assert_eq!(s.score(&late), -1.0);
}

#[test]
fn p4_invalid_deliveries_square_and_reach_forwarders_of_rejected_messages() {
    let mut s = scorer(TopicScoreParams {
        invalid_message_deliveries_weight: -1.0,
        ..quiet_topic()
    });
    let (a, b, now) = (peer(1), peer(2), Instant::now());
    s.add_peer(a);
    s.add_peer(b);
    // Awaiting validation: a first, b's copy meanwhile; then rejected.
    s.validate_message(now, &id(1));
    s.duplicated_message(now, &b, &id(1), &topic());
    s.reject_message(now, &a, &id(1), &topic(), false);
    assert_eq!(s.score(&a), -1.0);
    assert_eq!(s.score(&b), -1.0);
    // A copy after the rejection costs too; bad signatures cost directly.
    let c = peer(3);
    s.add_peer(c);
    s.duplicated_message(now, &c, &id(1), &topic());
    s.reject_invalid_message(&c, &topic());
    assert_eq!(s.score(&c), -4.0, "two invalid deliveries, squared");
    // Ignored messages cost nothing.
    s.validate_message(now, &id(2));
    s.reject_message(now, &a, &id(2), &topic(), true);
    s.duplicated_message(now, &b, &id(2), &topic());
    assert_eq!((s.score(&a), s.score(&b)), (-1.0, -1.0));
}

#[test]
fn p5_p6_p7_and_slow_peer() {
    let mut params = PeerScoreParams::default();
    params.topics.insert(topic(), quiet_topic());
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let mut s = PeerScore::new(params.clone(), 100);
    // P5.
    let p = peer(1);
    s.add_peer(p);
    assert!(s.set_application_score(&p, 1.5));
    assert_eq!(s.score(&p), 15.0);
    assert!(!s.set_application_score(&peer(99), 1.0), "unknown peer");
    // P6: 12 peers on one IP, threshold 10: (12 - 10)^2 × -5 each.
    let sybils: Vec<PeerId> = (100..112).map(peer).collect();
    for q in &sybils {
        s.add_peer(*q);
        s.add_ip(*q, ip);
    }
    assert_eq!(s.score(&sybils[0]), -20.0);
    s.remove_ip(&sybils[11], &ip);
    assert_eq!(s.score(&sybils[0]), -5.0);
    // An IP for a peer the score does not track creates no entry (nothing would expire it)
    // and does not count against the others.
    let stranger = peer(200);
    s.add_ip(stranger, ip);
    assert_eq!(s.score(&sybils[0]), -5.0);
    assert_eq!(s.score(&stranger), 0.0);
    assert!(!s.set_application_score(&stranger, 1.0), "still unknown");
    // Whitelisted IPs are exempt.
    params.ip_colocation_factor_whitelist.insert(ip);
    let mut w = PeerScore::new(params, 100);
    for q in &sybils {
        w.add_peer(*q);
        w.add_ip(*q, ip);
    }
    assert_eq!(w.score(&sybils[0]), 0.0);
    // P7: 3 penalties over threshold 0: 9 × -10; decays by 0.2.
    let q = peer(2);
    s.add_peer(q);
    s.add_penalty(&q, 3);
    assert_eq!(s.score(&q), -90.0);
    let now = Instant::now();
    s.refresh(now);
    s.refresh(now + Duration::from_secs(1));
    assert!((s.score(&q) + 0.36 * 10.0).abs() < 1e-9);
    // Slow peer: linear, -0.2 per drop.
    let r = peer(3);
    s.add_peer(r);
    for _ in 0..5 {
        s.slow_peer(&r);
    }
    assert!((s.score(&r) + 1.0).abs() < 1e-9);
}

#[test]
fn topic_score_cap_bounds_the_positive_part() {
    let mut params = PeerScoreParams {
        topic_score_cap: 3.0,
        ..PeerScoreParams::default()
    };
    params.topics.insert(
        topic(),
        TopicScoreParams {
            first_message_deliveries_weight: 1.0,
            ..quiet_topic()
        },
    );
    let mut s = PeerScore::new(params, 100);
    let (p, now) = (peer(1), Instant::now());
    s.add_peer(p);
    for i in 0..10 {
        s.validate_message(now, &id(i));
        s.deliver_message(now, &p, &id(i), &topic());
    }
    assert_eq!(s.score(&p), 3.0);
    s.set_application_score(&p, 1.0);
    assert_eq!(s.score(&p), 13.0, "P5 is outside the cap");
}

#[test]
fn a_bad_score_survives_reconnection_until_retain_score() {
    let mut s = scorer(TopicScoreParams {
        invalid_message_deliveries_weight: -1.0,
        invalid_message_deliveries_decay: 0.5,
        ..quiet_topic()
    });
    let (bad, good, now) = (peer(1), peer(2), Instant::now());
    s.add_peer(bad);
    s.reject_invalid_message(&bad, &topic());
    s.reject_invalid_message(&bad, &topic());
    s.remove_peer(now, &bad);
    // Retained scores do not decay.
    s.refresh(now);
    s.refresh(now + Duration::from_secs(10));
    s.add_peer(bad);
    assert_eq!(s.score(&bad), -4.0);
    // A positive score is not retained.
    let mut s2 = scorer(TopicScoreParams {
        first_message_deliveries_weight: 1.0,
        ..quiet_topic()
    });
    s2.add_peer(good);
    s2.validate_message(now, &id(1));
    s2.deliver_message(now, &good, &id(1), &topic());
    s2.remove_peer(now, &good);
    assert_eq!(s2.tracked(), 0);
    // After retain_score (1 h) the retained score is dropped.
    s.remove_peer(now, &bad);
    s.refresh(now + Duration::from_secs(3601 + 20));
    s.refresh(now + Duration::from_secs(3602 + 20));
    assert_eq!(s.tracked(), 0);
}

#[test]
fn broken_promises_are_counted_per_peer() {
    let mut g = GossipPromises::default();
    let now = Instant::now();
    let (a, b) = (peer(1), peer(2));
    g.add(
        a,
        &[b"x".to_vec(), b"y".to_vec()],
        now + Duration::from_secs(3),
    );
    g.add(b, &[b"x".to_vec()], now + Duration::from_secs(3));
    g.delivered(&MessageId(b"x".to_vec()));
    assert!(g.broken(now + Duration::from_secs(1)).is_empty());
    let broken = g.broken(now + Duration::from_secs(4));
    assert_eq!(broken.get(&a), Some(&1));
    assert_eq!(broken.get(&b), None);
    assert_eq!(g.len(), 0);
}

#[test]
fn parameters_and_thresholds_are_validated() {
    use super::params::PeerScoreThresholds;
    assert!(PeerScoreParams::default().validate().is_ok());
    assert!(PeerScoreThresholds::default().validate().is_ok());
    let bad = TopicScoreParams {
        invalid_message_deliveries_weight: 1.0,
        ..TopicScoreParams::default()
    };
    assert!(bad.validate().is_err());
    let bad = PeerScoreThresholds {
        publish_threshold: -5.0,
        ..PeerScoreThresholds::default()
    };
    assert!(bad.validate().is_err(), "publish above gossip");
}
