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

    // The delivery gap a switch causes: the worst latency of a message delivered around the
    // switch beyond the median latency before it (on the relay), in direct-path RTTs. The
    // same statistic over windows of the same length without a switch (on the relay before,
    // on the direct path after) is the machine's own jitter, printed next to it.
    let window = (
        switched - duration - Duration::from_millis(20),
        switched + Duration::from_millis(20),
    );
    let span = window.1 - window.0;
    let baseline = (
        started + Duration::from_millis(100),
        started + before - Duration::from_millis(50),
    );
    let stats = pair
        .dialer
        .call(|s| s.behaviour().upgrade.upgrade_stats())
        .await;
    println!(
        "{count} messages each way at {rate}/s: 0 lost, 0 duplicated, 0 reordered; upgrade took \
         {duration:?}, direct RTT {rtt:?}, {migrated} messages migrated; stats {stats:?}"
    );
    let end = Instant::now();
    let rtts = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64().max(1e-9);
    for (name, arrivals) in [
        ("dialer -> listener", &arrivals_b),
        ("listener -> dialer", &arrivals_a),
    ] {
        let (worst, _) = latency(arrivals, window.0, window.1);
        let (base_worst, base_median) = latency(arrivals, baseline.0, baseline.1);
        let (_, direct_median) = latency(arrivals, switched + Duration::from_millis(100), end);
        let gap = worst.saturating_sub(base_median);
        if std::env::var("UPGRADE_TRACE").is_ok() {
            let mut worst5: Vec<&(Instant, Duration)> = arrivals
                .iter()
                .filter(|(at, _)| *at >= window.0 && *at <= window.1)
                .collect();
            worst5.sort_by_key(|(_, l)| std::cmp::Reverse(*l));
            for (at, l) in worst5.iter().take(5) {
                let rel = at.duration_since(window.0).as_secs_f64() * 1e3
                    - 20.0
                    - duration.as_secs_f64() * 1e3;
                println!(
                    "  {name}: latency {l:?}, delivered {rel:.2} ms after the upgrade started"
                );
            }
        }
        let on_relay = jitter(arrivals, baseline.0, baseline.1, span, base_median);
        let on_direct = jitter(
            arrivals,
            switched + Duration::from_millis(100),
            end,
            span,
            direct_median,
        );
        println!(
            "{name}: latency median on the relay {base_median:?} (worst {base_worst:?}), on the \
             direct path {direct_median:?}; worst during the switch {worst:?}: delivery gap \
             {gap:?} = {:.1} RTT of the direct path; without a switch, in {span:?} windows: \
             {:.1}-{:.1} RTT on the relay, {:.1}-{:.1} RTT on the direct path",
            rtts(gap),
            rtts(on_relay.0),
            rtts(on_relay.1),
            rtts(on_direct.0),
            rtts(on_direct.1),
        );
    }
    assert_eq!((stats.attempts, stats.successes, stats.failures), (1, 1, 0));
    assert_eq!(stats.duration_buckets.iter().sum::<u64>(), 1);
    // The same figures as Prometheus metrics.
    let metrics = pair
        .dialer
        .call(|s| s.behaviour().upgrade.metrics().clone())
        .await;
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "upgrade_attempts_total 1",
        "upgrade_successes_total 1",
        "upgrade_failures_total 0",
        "upgrade_duration_seconds_count 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(text.contains(&format!(
        "upgrade_messages_migrated_total {}",
        stats.messages_migrated
    )));
}

fn upgrade_event(e: SwarmEvent<NodeEvent>) -> Option<upgrade::Event> {
    match e {
        SwarmEvent::Behaviour(NodeEvent::Upgrade(e)) => Some(e),
        _ => None,
    }
}

/// The direct connection of the dialer to `peer`, once established.
async fn direct_connection(
    node: &mut Handle<Node>,
    peer: meshwire_core::PeerId,
) -> meshwire_swarm::ConnectionId {
    node.wait(|e| match e {
        SwarmEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            endpoint,
            ..
        } if peer_id == peer && !endpoint.is_relayed() => Some(connection_id),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_connection_killed_after_the_switch_falls_back_to_the_relay() {
    let rate = rate();
    let count = rate; // one second each way
    let mut pair = pair(upgrade::Config::default(), upgrade::Config::default()).await;
    let (ours, theirs) = open(&mut pair).await;
    let send_a = pace(ours.sender().unwrap(), count, 16, rate);
    let send_b = pace(theirs.sender().unwrap(), count, 16, rate);
    let recv_a = check(ours, count);
    let recv_b = check(theirs, count);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener_id = pair.listener.id;
    dial_direct(&pair.dialer, listener_id, pair.direct_addr.clone()).await;
    let direct = direct_connection(&mut pair.dialer, listener_id).await;
    pair.dialer
        .wait(|e| matches!(upgrade_event(e), Some(upgrade::Event::Upgraded { .. })).then_some(()))
        .await;
    // Right after the switch the direct connection dies.
    assert!(pair.dialer.call(move |s| s.close_connection(direct)).await);
    pair.dialer
        .wait(|e| matches!(upgrade_event(e), Some(upgrade::Event::FellBack { .. })).then_some(()))
        .await;
    send_a.await.unwrap();
    send_b.await.unwrap();
    let (ours, _) = recv_b.await.unwrap();
    let (theirs, _) = recv_a.await.unwrap();
    assert_eq!(ours.path_kind(), Some(PathKind::Relayed));
    assert_eq!(theirs.path_kind(), Some(PathKind::Relayed));
    let stats = pair
        .dialer
        .call(|s| s.behaviour().upgrade.upgrade_stats())
        .await;
    assert_eq!((stats.successes, stats.fallbacks), (1, 1));
    println!("fallback: {count} messages each way, 0 lost; {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_dying_mid_upgrade_loses_nothing() {
    let rate = rate();
    let count = rate;
    let mut pair = pair(upgrade::Config::default(), upgrade::Config::default()).await;
    let (ours, theirs) = open(&mut pair).await;
    let send_a = pace(ours.sender().unwrap(), count, 16, rate);
    let send_b = pace(theirs.sender().unwrap(), count, 16, rate);
    let recv_a = check(ours, count);
    let recv_b = check(theirs, count);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener_id = pair.listener.id;
    dial_direct(&pair.dialer, listener_id, pair.direct_addr.clone()).await;
    pair.dialer
        .wait(|e| {
            matches!(
                upgrade_event(e),
                Some(upgrade::Event::UpgradeStarted { .. })
            )
            .then_some(())
        })
        .await;
    // The relay dies while the direct path is being opened, with messages in flight on it.
    pair.relay.kill();
    send_a.await.unwrap();
    send_b.await.unwrap();
    let (ours, _) = recv_b.await.unwrap();
    let (theirs, _) = recv_a.await.unwrap();
    assert_eq!(ours.path_kind(), Some(PathKind::Direct));
    assert_eq!(theirs.path_kind(), Some(PathKind::Direct));
    println!(
        "relay killed mid-upgrade: {count} messages each way, 0 lost; {:?}",
        ours.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_leaves_the_traffic_on_the_relay_with_a_typed_error() {
    // The listener takes one path per session: the direct path is refused.
    let one_path = upgrade::Config::default()
        .with_session(upgrade::SessionConfig::default().with_max_paths(1));
    let mut pair = pair(one_path, upgrade::Config::default()).await;
    let (ours, theirs) = open(&mut pair).await;
    let count = 2000;
    let send_a = pace(ours.sender().unwrap(), count, 16, 4000);
    let recv_b = check(theirs, count);
    let listener_id = pair.listener.id;
    // The manual API's typed errors first.
    let relayed = pair.relayed;
    let wrong = pair
        .dialer
        .call(move |s| {
            s.behaviour_mut()
                .upgrade
                .upgrade_to_direct(listener_id, relayed, relayed)
        })
        .await;
    assert_eq!(
        wrong,
        Err(upgrade::UpgradeError::UpgradeFailed(
            upgrade::UpgradeFailure::NoDirectConnection
        ))
    );
    dial_direct(&pair.dialer, listener_id, pair.direct_addr.clone()).await;
    let error = pair
        .dialer
        .wait(|e| match upgrade_event(e) {
            Some(upgrade::Event::UpgradeFailed { error, .. }) => Some(error),
            Some(upgrade::Event::Upgraded { .. }) => panic!("the upgrade was refused"),
            _ => None,
        })
        .await;
    assert_eq!(
        error,
        upgrade::UpgradeError::UpgradeFailed(upgrade::UpgradeFailure::Refused)
    );
    send_a.await.unwrap();
    let (theirs, _) = recv_b.await.unwrap();
    assert_eq!(ours.path_kind(), Some(PathKind::Relayed));
    assert_eq!(theirs.path_kind(), Some(PathKind::Relayed));
    let stats = pair
        .dialer
        .call(|s| s.behaviour().upgrade.upgrade_stats())
        .await;
    assert_eq!((stats.attempts, stats.successes, stats.failures), (1, 0, 1));
    let other = meshwire_core::Keypair::generate().peer_id();
    let none = pair
        .dialer
        .call(move |s| {
            s.behaviour_mut()
                .upgrade
                .upgrade_to_direct(other, relayed, relayed)
        })
        .await;
    assert_eq!(none, Err(upgrade::UpgradeError::NoRelay));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relayed_connection_is_closed_after_the_drain() {
    let short = upgrade::Config::default().with_session(
        upgrade::SessionConfig::default().with_fallback_window(Duration::from_millis(300)),
    );
    let mut pair = pair(short.clone(), short).await;
    let (ours, mut theirs) = open(&mut pair).await;
    ours.send(&b"before"[..]).await.unwrap();
    assert_eq!(&theirs.recv().await.unwrap()[..], b"before");
    let listener_id = pair.listener.id;
    dial_direct(&pair.dialer, listener_id, pair.direct_addr.clone()).await;
    let relayed = pair.relayed;
    let closed = pair
        .dialer
        .wait(|e| match upgrade_event(e) {
            Some(upgrade::Event::RelayedConnectionClosed { connection, .. }) => Some(connection),
            _ => None,
        })
        .await;
    assert_eq!(closed, relayed);
    assert!(
        pair.dialer
            .call(move |s| s.behaviour().upgrade.relay_of(&listener_id).is_none())
            .await
    );
    ours.send(&b"after"[..]).await.unwrap();
    assert_eq!(&theirs.recv().await.unwrap()[..], b"after");
    assert_eq!(ours.path_kind(), Some(PathKind::Direct));
}
