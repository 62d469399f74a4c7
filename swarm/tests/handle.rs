//! `SwarmHandle` on spawned swarms: commands are served while the event receiver lags, and a
//! swarm nobody can command or hear from stops, and a connection closed with a reason tells
//! the remote that reason.

use std::time::Duration;

use meshwire_core::Keypair;
use meshwire_swarm::{
    ConnectionCloseCause, DummyBehaviour, Swarm, SwarmConfig, SwarmEvent, MAX_CLOSE_REASON,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::with_peer_id;
use meshwire_transport::CloseReason;

fn node() -> Swarm<DummyBehaviour> {
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let config = SwarmConfig {
        idle_connection_timeout: Some(Duration::from_secs(60)),
        ..SwarmConfig::default()
    };
    Swarm::new(transport, DummyBehaviour, config)
}

#[tokio::test]
async fn commands_are_served_while_the_event_receiver_lags() {
    let (a, _events) = node().spawn();
    // 300 listeners: 300 NewListenAddr events, more than the event queue holds, none read.
    for _ in 0..300 {
        a.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .await
            .expect("listen");
    }
    let listeners = tokio::time::timeout(Duration::from_secs(10), a.listeners())
        .await
        .expect("answered although nobody reads the events")
        .expect("swarm alive");
    // The swarm waits for the receiver with a full queue: the addresses it has reported so
    // far are those of the events queued and the one it is holding.
    assert!(listeners.len() > 256, "{}", listeners.len());
}

#[tokio::test]
async fn a_spawned_swarm_stops_once_its_handles_and_receiver_are_gone() {
    let (a, mut a_events) = node().spawn();
    a.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .await
        .unwrap();
    let addr = loop {
        if let Some(SwarmEvent::NewListenAddr { address, .. }) = a_events.recv().await {
            break with_peer_id(&address, a.local_peer_id());
        }
    };
    let (b, mut b_events) = node().spawn();
    b.dial(addr).await.unwrap();
    loop {
        if let Some(SwarmEvent::ConnectionEstablished { .. }) = b_events.recv().await {
            break;
        }
    }
    // Dropping only the receiver keeps the swarm running for its handle.
    drop(a_events);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.connections().await.expect("still running").len(), 1);
    // Dropping the last handle too stops it: b sees the connection close.
    drop(a);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(SwarmEvent::ConnectionClosed { .. }) = b_events.recv().await {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the dropped swarm closed its connection");
}

#[tokio::test]
async fn a_connection_closed_with_a_reason_tells_the_remote() {
    let (a, mut a_events) = node().spawn();
    a.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .await
        .unwrap();
    let addr = loop {
        if let Some(SwarmEvent::NewListenAddr { address, .. }) = a_events.recv().await {
            break with_peer_id(&address, a.local_peer_id());
        }
    };
    let (b, mut b_events) = node().spawn();
    b.dial(addr).await.unwrap();
    let id = loop {
        if let Some(SwarmEvent::ConnectionEstablished { connection_id, .. }) = b_events.recv().await
        {
            break connection_id;
        }
    };
    // b closes with a reason (too long: cut at MAX_CLOSE_REASON bytes); a sees it.
    let long = format!("node shutting down{}", "!".repeat(2 * MAX_CLOSE_REASON));
    assert!(b
        .close_connection_with_reason(id, long.clone())
        .await
        .unwrap());
    let cause = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(SwarmEvent::ConnectionClosed { cause, .. }) = a_events.recv().await {
                break cause;
            }
        }
    })
    .await
    .expect("a saw the close");
    match cause {
        ConnectionCloseCause::Transport(CloseReason::Remote { reason, .. }) => {
            assert_eq!(reason, long[..MAX_CLOSE_REASON]);
        }
        other => panic!("unexpected cause {other:?}"),
    }
    // Closing it again: no longer established.
    assert!(!b.close_connection_with_reason(id, "again").await.unwrap());
}
