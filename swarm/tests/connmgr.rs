//! The connection manager drives a real swarm: trims, protection, tags from behaviours.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::Node;
use meshwire_connmgr::{BasicConnMgr, Config, ConnManagerHandle, ConnMgrMetrics};
use meshwire_swarm::{ConnManagerCommand, ConnectionCloseCause, SwarmConfig, SwarmEvent, ToSwarm};
use prometheus_client::registry::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_peers_are_trimmed_to_the_low_watermark_keeping_protected_ones() {
    let mut registry = Registry::default();
    let metrics = ConnMgrMetrics::register(&mut registry);
    let cm = ConnManagerHandle::new(
        BasicConnMgr::new(
            Config {
                low_water: 10,
                high_water: 20,
                grace_period: Duration::from_millis(100),
                silence_period: Duration::from_millis(200),
                ..Config::default()
            },
            Instant::now(),
        )
        .expect("config")
        .with_metrics(metrics.clone()),
    );
    let mut hub = Node::start_with(&[], SwarmConfig::default(), Some(cm.to_dyn())).await;
    let mut peers = Vec::new();
    for _ in 0..30 {
        peers.push(Node::start(&[], SwarmConfig::default()).await);
    }
    // While the 30 connect (however long that takes on a busy machine), a "setup" protection
    // keeps each of them out of trims; lifting it at once lets one trim see all of them.
    for p in peers.iter() {
        hub.cm.protect(p.peer, "setup");
    }
    for p in peers.iter() {
        p.dial(hub.full_addr()).await.expect("dial");
    }
    let mut connected = HashSet::new();
    while connected.len() < 30 {
        connected.insert(
            hub.wait_for(|e| match e {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => Some(*peer_id),
                _ => None,
            })
            .await,
        );
    }

    // Value peer i at i: the ten most valuable unprotected peers are 20..29.
    for (i, p) in peers.iter().enumerate() {
        hub.cm.tag_peer(p.peer, "value", i as i32);
    }
    // Peers 0 and 1 are relays, the least valuable of all but protected: one by the
    // application, one by a behaviour through the swarm.
    hub.cm.protect(peers[0].peer, "relay");
    hub.behaviour_command(ToSwarm::ConnManager(ConnManagerCommand::Protect {
        peer: peers[1].peer,
        tag: "relay".into(),
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hub.connections().await.len(),
        30,
        "nothing is trimmed while every peer is protected"
    );

    // Lift the setup protection: the next background check trims 18 connections.
    for (i, p) in peers.iter().enumerate() {
        let still = hub.cm.unprotect(p.peer, "setup");
        assert_eq!(
            still,
            i < 2,
            "only the relays stay protected (under \"relay\")"
        );
    }
    let mut trimmed = HashSet::new();
    while trimmed.len() < 18 {
        let peer = hub
            .wait_for(|e| match e {
                SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                    assert_eq!(*cause, ConnectionCloseCause::Trimmed);
                    Some(*peer_id)
                }
                _ => None,
            })
            .await;
        trimmed.insert(peer);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let remaining: HashSet<_> = hub
        .connections()
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    // go-libp2p's rule: low_water trimmable connections stay, protected peers on top.
    assert_eq!(remaining.len(), 12, "10 at the low watermark + 2 protected");
    assert!(remaining.contains(&peers[0].peer) && remaining.contains(&peers[1].peer));
    for p in &peers[20..] {
        assert!(remaining.contains(&p.peer), "a valuable peer was trimmed");
    }
    for p in &peers[2..20] {
        assert!(trimmed.contains(&p.peer), "a low-value peer survived");
    }
    // The trimmed side learns why.
    let reason = peers[5]
        .wait_for(|e| match e {
            SwarmEvent::ConnectionClosed { cause, .. } => Some(cause.clone()),
            _ => None,
        })
        .await;
    assert!(reason.to_string().contains("trimmed"), "{reason}");
    // The metrics saw it all.
    assert_eq!(hub.metrics.connections_trimmed.get(), 18);
    assert_eq!(hub.metrics.connections.get(), 12);
    assert_eq!(metrics.connections(), 12);
    assert_eq!(metrics.protected_peers(), 2);
    assert_eq!(metrics.connections_trimmed(), 18);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("connmgr_connections_trimmed_total 18"),
        "{text}"
    );
    // Unprotecting one tag of a peer protected once leaves it unprotected.
    assert!(!cm.unprotect(peers[0].peer, "relay"));
}

/// The flood rule through a real swarm: inbound newcomers past the high watermark are closed
/// as they arrive, in their grace period, while a peer that was there before stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fresh_peers_is_trimmed_in_its_grace_period() {
    let mut registry = Registry::default();
    let metrics = ConnMgrMetrics::register(&mut registry);
    let cm = ConnManagerHandle::new(
        BasicConnMgr::new(
            Config {
                low_water: 3,
                high_water: 5,
                grace_period: Duration::from_secs(60),
                ..Config::default()
            },
            Instant::now(),
        )
        .expect("config")
        .with_metrics(metrics.clone()),
    );
    let mut hub = Node::start_with(&[], SwarmConfig::default(), Some(cm.to_dyn())).await;
    let mut first = Node::start(&[], SwarmConfig::default()).await;
    first.connect(&mut hub).await;
    let mut flood = Vec::new();
    for _ in 0..12 {
        let p = Node::start(&[], SwarmConfig::default()).await;
        p.dial(hub.full_addr()).await.expect("dial");
        flood.push(p);
    }
    let mut trimmed = 0;
    while trimmed < 8 {
        hub.wait_for(|e| match e {
            SwarmEvent::ConnectionClosed { cause, .. } => {
                assert_eq!(*cause, ConnectionCloseCause::Trimmed);
                Some(())
            }
            _ => None,
        })
        .await;
        trimmed += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let remaining: HashSet<_> = hub
        .connections()
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        remaining.len(),
        5,
        "the count settles at the high watermark"
    );
    assert!(
        remaining.contains(&first.peer),
        "the peer from before the flood stays"
    );
    assert_eq!(metrics.connections_flood_trimmed(), 8);
    assert_eq!(hub.metrics.connections_trimmed.get(), 8);
}

/// A trim the application runs through its own handle to the connection manager closes the
/// trimmed connections: the swarm and the manager agree afterwards, and a later trim from
/// the swarm has nothing left to close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_through_the_applications_handle_closes_what_it_trims() {
    let cm = ConnManagerHandle::new(
        BasicConnMgr::new(
            Config {
                low_water: 2,
                // Never reached: no automatic trim interferes with the application's.
                high_water: 100,
                grace_period: Duration::from_millis(50),
                silence_period: Duration::from_millis(100),
                flood_headroom: None,
                ..Config::default()
            },
            Instant::now(),
        )
        .expect("config"),
    );
    let mut hub = Node::start_with(&[], SwarmConfig::default(), Some(cm.to_dyn())).await;
    let mut peers = Vec::new();
    for _ in 0..6 {
        let p = Node::start(&[], SwarmConfig::default()).await;
        p.dial(hub.full_addr()).await.expect("dial");
        peers.push(p);
    }
    let mut connected = HashSet::new();
    while connected.len() < 6 {
        connected.insert(
            hub.wait_for(|e| match e {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => Some(*peer_id),
                _ => None,
            })
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // past the grace period

    // The application trims from another task, through its typed handle.
    let app = cm.clone();
    let trimmed = tokio::spawn(async move { app.trim_open_conns(Instant::now()) })
        .await
        .expect("task");
    let trimmed_peers: HashSet<_> = trimmed.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        trimmed_peers.len(),
        4,
        "6 connections trimmed to the low watermark of 2"
    );

    // The swarm closes exactly those, with cause Trimmed.
    let mut closed = HashSet::new();
    while closed.len() < 4 {
        let peer = hub
            .wait_for(|e| match e {
                SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                    assert_eq!(*cause, ConnectionCloseCause::Trimmed);
                    Some(*peer_id)
                }
                _ => None,
            })
            .await;
        closed.insert(peer);
    }
    assert_eq!(closed, trimmed_peers);
    let remaining = hub.connections().await;
    assert_eq!(remaining.len(), 2, "the swarm holds what the manager kept");
    assert_eq!(cm.lock().conn_count(), 2, "the manager agrees");
    // Nothing is left for a trim from the swarm to close.
    assert_eq!(hub.trim_now().await, 0);
    assert_eq!(hub.connections().await.len(), 2);
}
