//! The upgrade on loopback QUIC through meshwire-relay: traffic both ways moves from the relay
//! to a direct connection mid-flight, falls back when the direct connection dies, survives
//! the relay dying mid-upgrade, and stays on the relay when the peer refuses.

mod common;

use std::time::{Duration, Instant};

use common::*;
use meshwire_swarm::SwarmEvent;
use meshwire_upgrade::{self as upgrade, PathKind};

fn rate() -> u64 {
    std::env::var("UPGRADE_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            10_000
        } else {
            50_000
        })
}

async fn open(pair: &mut Pair) -> (upgrade::Session, upgrade::Session) {
    let listener_id = pair.listener.id;
    let ours = pair
        .dialer
        .call(move |s| s.behaviour_mut().upgrade.open(listener_id))
        .await
        .expect("open a session");
    let theirs = pair
        .listener
        .wait(|e| match e {
            SwarmEvent::Behaviour(NodeEvent::Upgrade(upgrade::Event::InboundSession(s))) => Some(s),
            _ => None,
        })
        .await;
    (ours, theirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_to_a_direct_connection_mid_flight_without_loss() {
    let rate = rate();
    let before = Duration::from_millis(600);
    let after = Duration::from_millis(600);
    let count = rate * (before + after).as_millis() as u64 / 1000;
    let mut pair = pair(upgrade::Config::default(), upgrade::Config::default()).await;
    let (ours, theirs) = open(&mut pair).await;
    let started = Instant::now();
    let send_a = pace(ours.sender().unwrap(), count, 16, rate);
    let send_b = pace(theirs.sender().unwrap(), count, 16, rate);
    let recv_a = check(ours, count);
    let recv_b = check(theirs, count);

    tokio::time::sleep(before).await;
    let listener_id = pair.listener.id;
    dial_direct(&pair.dialer, listener_id, pair.direct_addr.clone()).await;
    let (rtt, duration, migrated) = pair
        .dialer
        .wait(|e| match e {
            SwarmEvent::Behaviour(NodeEvent::Upgrade(upgrade::Event::Upgraded {
                rtt,
                duration,
                migrated,
                ..
            })) => Some((rtt, duration, migrated)),
            SwarmEvent::Behaviour(NodeEvent::Upgrade(upgrade::Event::UpgradeFailed {
                error,
                ..
            })) => {
                panic!("upgrade failed: {error}")
            }
            _ => None,
        })
        .await;
    let switched = Instant::now();
    send_a.await.unwrap();
    send_b.await.unwrap();
    let (ours, arrivals_b) = recv_b.await.unwrap();
    let (theirs, arrivals_a) = recv_a.await.unwrap();
    assert_eq!(ours.path_kind(), Some(PathKind::Direct));
    assert_eq!(theirs.path_kind(), Some(PathKind::Direct));

    let window = (
        switched - duration - Duration::from_millis(50),
        switched + Duration::from_millis(100),
    );
    let baseline = (
        started + Duration::from_millis(100),
        started + before - Duration::from_millis(100),
    );
    let gaps = [
        longest_gap(&arrivals_a, window.0, window.1),
        longest_gap(&arrivals_b, window.0, window.1),
    ];
    let base = [
        longest_gap(&arrivals_a, baseline.0, baseline.1),
        longest_gap(&arrivals_b, baseline.0, baseline.1),
    ];
    let stats = pair
        .dialer
        .call(|s| s.behaviour().upgrade.upgrade_stats())
        .await;
    println!(
        "{count} messages each way at {rate}/s: 0 lost, 0 duplicated, 0 reordered; upgrade took {duration:?}, \
         direct RTT {rtt:?}, {migrated} messages migrated; longest delivery gap during the switch \
         {:?} / {:?} ({:.1} / {:.1} RTT), before the switch {:?} / {:?} ({:.1} / {:.1} RTT); stats {stats:?}",
        gaps[0], gaps[1],
        gaps[0].as_secs_f64() / rtt.as_secs_f64(),
        gaps[1].as_secs_f64() / rtt.as_secs_f64(),
        base[0], base[1],
        base[0].as_secs_f64() / rtt.as_secs_f64(),
        base[1].as_secs_f64() / rtt.as_secs_f64(),
    );
    assert_eq!((stats.attempts, stats.successes, stats.failures), (1, 1, 0));
    assert_eq!(stats.duration_buckets.iter().sum::<u64>(), 1);
    // The relayed connection is closed once drained (after the fallback window).
    drop((ours, theirs));
}
