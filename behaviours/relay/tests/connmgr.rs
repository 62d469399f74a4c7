//! The relay client and the connection manager: the relay a client holds a reservation on is
//! protected (tag `relay`) and survives every trim, however many peers crowd the client; once
//! the reservation is released it is trimmed like any other peer.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use meshwire_core::{Keypair, PeerId};
use meshwire_relay::client;
use meshwire_relay::ServerConfig;
use meshwire_swarm::connmgr::{BasicConnMgr, Config, ConnManagerHandle};
use meshwire_swarm::{ConnectionCloseCause, SwarmEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_relay_survives_trims_until_the_reservation_is_released() {
    let relay = start_relay(ServerConfig::default()).await;
    let cm = ConnManagerHandle::new(
        BasicConnMgr::new(
            Config {
                low_water: 2,
                high_water: 4,
                grace_period: Duration::ZERO,
                silence_period: Duration::from_millis(100),
                ..Config::default()
            },
            Instant::now(),
        )
        .expect("connection manager config"),
    );
    let mut node = Node::spawn(client_swarm(
        Keypair::generate(),
        client::Config::default(),
        swarm_config(),
        Some(cm.to_dyn()),
    ));
    let (listener, _) = node.reserve(&relay.addr).await;
    // The protection is in place by the time the reservation is reported.
    assert!(cm.is_protected(relay.peer, Some("relay")));

    // Crowd the client: 2 × 4 peers, each round past the high watermark, each followed by
    // an explicit trim on top of the automatic ones.
    let mut pingers = Vec::new();
    let mut trimmed: HashSet<PeerId> = HashSet::new();
    for round in 0..2 {
        let mut dialed = HashSet::new();
        for _ in 0..4 {
            let (pinger, addr) = start_pinger().await;
            let id = node.call(move |s| s.dial(addr)).await.expect("dial");
            dialed.insert(id);
            pingers.push(pinger);
        }
        while !dialed.is_empty() {
            node.wait_for("the peers to connect", |e| match e {
                SwarmEvent::ConnectionEstablished { connection_id, .. }
                | SwarmEvent::OutgoingConnectionError { connection_id, .. } => {
                    Some(dialed.remove(connection_id))
                }
                _ => None,
            })
            .await;
        }
        node.call(|s| s.trim_open_conns()).await;
        // The trimmed connections close (after their close is reported by the transport).
        let connected = tokio::time::timeout(T, async {
            loop {
                let connected = node
                    .call(|s| s.connected_peers().copied().collect::<HashSet<_>>())
                    .await;
                if connected.len() <= 3 {
                    return connected;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the trim closes connections");
        assert!(
            connected.contains(&relay.peer),
            "round {round}: the relay is connected"
        );
        assert!(
            connected.len() >= 3,
            "round {round}: the low watermark plus the protected relay: {connected:?}"
        );
        assert!(cm.is_protected(relay.peer, Some("relay")));
    }
    // Every close so far (and until the 6 trimmed are reported) is a trim of another peer.
    let closed = |e: &SwarmEvent<ClientNodeEvent>| match e {
        SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
            assert_ne!(
                *peer_id, relay.peer,
                "the relay's connection closed: {cause}"
            );
            assert_eq!(*cause, ConnectionCloseCause::Trimmed);
            Some(*peer_id)
        }
        _ => None,
    };
    trimmed.extend(node.log.iter().filter_map(closed));
    while trimmed.len() < 6 {
        let peer = node.wait_for("the trims to be reported", closed).await;
        trimmed.insert(peer);
    }
    assert_eq!(
        node.call(|s| s.behaviour().relay_client.reservations().len())
            .await,
        1,
        "the reservation lives"
    );

    // The peers left are worth more than the relay from now on.
    let others: Vec<PeerId> = node.call(|s| s.connected_peers().copied().collect()).await;
    for peer in others.iter().filter(|p| **p != relay.peer) {
        cm.tag_peer(*peer, "valuable", 100);
    }
    // Releasing the reservation lifts the protection...
    assert!(node.call(move |s| s.remove_listener(listener)).await);
    eventually("the relay's protection to be lifted", || {
        !cm.is_protected(relay.peer, Some("relay"))
    })
    .await;
    assert!(!cm.is_protected(relay.peer, None));
    assert!(
        node.call(|s| s.behaviour().relay_client.reservations().is_empty())
            .await
    );
    // ... and the next trim closes the relay's connection.
    let closed = node.call(|s| s.trim_open_conns()).await;
    assert_eq!(closed, 1);
    let relay_peer = relay.peer;
    let cause = node
        .wait_for("the relay's connection to close", |e| match e {
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } if *peer_id == relay_peer => {
                Some(cause.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(cause, ConnectionCloseCause::Trimmed);
}
