//! A peer that opens sessions and goes quiet cannot hold them: a session whose application
//! dropped its `Session` ends within `linger`, and one peer gets at most
//! `max_sessions_per_peer` sessions.

mod common;

use std::time::Duration;

use common::*;
use meshwire_core::Keypair;
use meshwire_swarm::{DummyBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_upgrade as upgrade;
use tokio::time::timeout;

#[tokio::test]
async fn a_quiet_peer_cannot_hold_sessions() {
    let config = upgrade::Config {
        linger: Duration::from_millis(300),
        max_sessions_per_peer: 2,
        ..upgrade::Config::default()
    };
    let mut b = node(config);
    b.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let b_addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.next_event().await {
            break meshwire_transport::with_peer_id(&address, b.local_peer_id());
        }
    };
    let b_peer = b.local_peer_id();
    let mut b = Handle::spawn(b);

    // The attacker: a bare swarm writing Hellos on raw streams, then nothing.
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let mut a = Swarm::new(transport, DummyBehaviour, SwarmConfig::default());
    let control = a.stream_control();
    a.dial(b_addr).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = a.next_event().await {
            break;
        }
    }
    tokio::spawn(async move {
        loop {
            a.next_event().await;
        }
    });
    let mut held = Vec::new();
    for session in 1..=3u64 {
        let mut s = control
            .open_stream(b_peer, upgrade::PROTOCOL_NAME)
            .await
            .unwrap();
        let hello = upgrade::Frame::Hello {
            session,
            path: 0,
            recv_next: 0,
            recv_limit: 1024,
        };
        meshwire_swarm::toolkit::write_frame(&mut s, &hello.encode())
            .await
            .unwrap();
        held.push(s);
    }
    // Two sessions accepted (the third is over the per-peer limit); the application drops
    // both at once.
    let mut accepted = 0;
    let mut ended = 0;
    timeout(Duration::from_secs(10), async {
        while ended < 2 {
            match b.events.recv().await.unwrap() {
                SwarmEvent::Behaviour(NodeEvent::Upgrade(upgrade::Event::InboundSession(s))) => {
                    accepted += 1;
                    drop(s);
                }
                SwarmEvent::Behaviour(NodeEvent::Upgrade(upgrade::Event::SessionEnded {
                    ..
                })) => ended += 1,
                _ => {}
            }
        }
    })
    .await
    .expect("sessions the application dropped end within their linger");
    assert_eq!(accepted, 2, "one peer holds at most max_sessions_per_peer");
    // Their slots are free again: a new Hello is accepted.
    let mut s = control
        .open_stream(b_peer, upgrade::PROTOCOL_NAME)
        .await
        .unwrap();
    let hello = upgrade::Frame::Hello {
        session: 99,
        path: 0,
        recv_next: 0,
        recv_limit: 1024,
    };
    meshwire_swarm::toolkit::write_frame(&mut s, &hello.encode())
        .await
        .unwrap();
    b.wait(|e| match e {
        SwarmEvent::Behaviour(NodeEvent::Upgrade(upgrade::Event::InboundSession(_))) => Some(()),
        _ => None,
    })
    .await;
    drop(held);
}
