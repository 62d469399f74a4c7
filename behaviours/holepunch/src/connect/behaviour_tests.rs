//! The connector's session bookkeeping, driven through its swarm hooks without a network.

use std::task::Context;

use futures::task::noop_waker;
use meshwire_swarm::{ConnectedPoint, ConnectionCloseCause, DialError};

use super::*;

fn relayed_point() -> ConnectedPoint {
    let relay = PeerId::random();
    ConnectedPoint::Dialer {
        address: format!("/ip4/198.51.100.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap(),
    }
}

/// The `Finished` outcomes the connector reports now.
fn finished(c: &mut Connector) -> Vec<(PeerId, ConnectOutcome)> {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    while let Poll::Ready(command) = c.poll(&mut cx) {
        if let ToSwarm::GenerateEvent(ConnectorEvent::Finished { peer, outcome }) = command {
            out.push((peer, outcome));
        }
    }
    out
}

fn failed(error: ConnectError, method: Method) -> ConnectOutcome {
    ConnectOutcome::Failed { method, error }
}

#[tokio::test]
async fn a_closed_relayed_connection_ends_the_session_and_frees_its_slot() {
    let config = ConnectorConfig {
        max_sessions: 1,
        ..ConnectorConfig::default()
    };
    let mut c = Connector::new(config, QuicSockets::default());
    let (peer, conn) = (PeerId::random(), ConnectionId::next());
    c.relayed.insert(conn);
    c.new_session(peer, conn, false).unwrap();
    c.run(peer, Method::Dcutr { prediction: false }, None);
    assert!(c.connection_keep_alive(peer, conn));
    assert!(c
        .new_session(PeerId::random(), ConnectionId::next(), false)
        .is_none());
    let point = relayed_point();
    c.on_swarm_event(FromSwarm::ConnectionClosed {
        peer,
        connection: conn,
        endpoint: &point,
        remaining_established: 0,
        cause: &ConnectionCloseCause::Requested,
    });
    assert!(!c.is_connecting(&peer));
    assert!(!c.connection_keep_alive(peer, conn));
    let method = Method::Dcutr { prediction: false };
    assert_eq!(
        finished(&mut c),
        vec![(peer, failed(ConnectError::RelayClosed, method))]
    );
    assert!(c
        .new_session(PeerId::random(), ConnectionId::next(), false)
        .is_some());
}

#[tokio::test]
async fn the_answerers_dcutr_phase_ends_at_its_deadline() {
    let mut c = Connector::new(ConnectorConfig::default(), QuicSockets::default());
    let (peer, conn) = (PeerId::random(), ConnectionId::next());
    c.relayed.insert(conn);
    c.new_session(peer, conn, false).unwrap();
    c.run(peer, Method::Dcutr { prediction: true }, None);
    let Some(Phase::Dcutr {
        deadline: Some(deadline),
    }) = c.sessions.get(&peer).map(|s| &s.phase)
    else {
        panic!("the answerer's DCUtR phase has a deadline");
    };
    let deadline = *deadline;
    c.dcutr_deadline(peer, deadline - Duration::from_secs(1));
    assert!(c.is_connecting(&peer), "not before the deadline");
    c.dcutr_deadline(peer, deadline);
    assert!(!c.is_connecting(&peer));
    let method = Method::Dcutr { prediction: true };
    assert_eq!(
        finished(&mut c),
        vec![(peer, failed(ConnectError::DcutrTimeout, method))]
    );
}

#[test]
fn the_spray_targets_only_ips_observed_for_the_peer() {
    let mut c = Connector::new(ConnectorConfig::default(), QuicSockets::default());
    let (peer, other) = (PeerId::random(), PeerId::random());
    let victim: SocketAddr = "203.0.113.9:443".parse().unwrap();
    let hello = Hello {
        nonce: 1,
        profile: None,
        params: SprayConfig::default().params(),
        addrs: vec![victim],
    };
    assert_eq!(
        c.spray_target(&peer, &hello),
        None,
        "HELLO alone is not enough"
    );
    c.add_peer_address(other, &"/ip4/203.0.113.9/udp/1/quic-v1".parse().unwrap());
    assert_eq!(c.spray_target(&peer, &hello), None, "another peer's IP");
    let relayed = relayed_point();
    c.add_peer_address(peer, relayed.remote_addr());
    assert_eq!(c.spray_target(&peer, &hello), None, "a relay's IP");
    c.add_peer_address(peer, &"/ip4/203.0.113.9/udp/4001/quic-v1".parse().unwrap());
    assert_eq!(c.spray_target(&peer, &hello), Some(victim));
    // A direct connection's remote address counts as observed.
    let direct_peer = PeerId::random();
    let seen = ConnectedPoint::Listener {
        local_addr: "/ip4/0.0.0.0/udp/4001/quic-v1".parse().unwrap(),
        send_back_addr: "/ip4/203.0.113.9/udp/5000/quic-v1".parse().unwrap(),
    };
    c.add_peer_address(direct_peer, seen.remote_addr());
    assert_eq!(c.spray_target(&direct_peer, &hello), Some(victim));
    let trusting = Connector::new(
        ConnectorConfig {
            trust_hello_addrs: true,
            ..ConnectorConfig::default()
        },
        QuicSockets::default(),
    );
    assert_eq!(trusting.spray_target(&peer, &hello), Some(victim));
}

#[test]
fn sprays_share_a_node_wide_socket_and_packet_budget() {
    let config = ConnectorConfig {
        max_spray_sockets_total: 512,
        max_spray_packets_per_minute: 1000,
        ..ConnectorConfig::default()
    };
    let mut c = Connector::new(config, QuicSockets::default());
    let mut stops = Vec::new();
    for _ in 0..2 {
        let peer = PeerId::random();
        c.new_session(peer, ConnectionId::next(), true).unwrap();
        let (tx, rx) = oneshot::channel();
        stops.push(rx);
        c.sessions.get_mut(&peer).unwrap().phase = Phase::Spraying {
            _stop: tx,
            sockets: 256,
        };
    }
    let now = Instant::now();
    assert_eq!(
        c.reserve_spray(now, 1, 1),
        Err(ConnectError::SocketBudget {
            in_use: 512,
            wanted: 1,
            limit: 512
        })
    );
    assert_eq!(c.reserve_spray(now, 0, 768), Ok(()));
    assert_eq!(
        c.reserve_spray(now, 0, 768),
        Err(ConnectError::PacketBudget(1000))
    );
    assert_eq!(c.reserve_spray(now + PACKET_WINDOW, 0, 768), Ok(()));
}

#[test]
fn a_dial_failing_before_quic_returns_the_adopted_socket() {
    let sockets = QuicSockets::new(1);
    let mut c = Connector::new(ConnectorConfig::default(), sockets.clone());
    let peer = PeerId::random();
    c.new_session(peer, ConnectionId::next(), true).unwrap();
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sockets.adopt_for_dial(from, socket).unwrap();
    let dial = ConnectionId::next();
    c.sessions.get_mut(&peer).unwrap().phase = Phase::Dialing { dial, from };
    c.on_swarm_event(FromSwarm::DialFailure {
        peer: Some(peer),
        connection: dial,
        error: &DialError::NoAddresses,
    });
    assert!(!c.is_connecting(&peer));
    assert!(
        sockets.take_adopted(from).is_none(),
        "no stale socket for a later dial"
    );
    let next = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(sockets.adopt_for_dial(from, next).is_ok(), "room again");
    // A session ended another way (cancel) gives its socket back too.
    c.new_session(peer, ConnectionId::next(), true).unwrap();
    c.sessions.get_mut(&peer).unwrap().phase = Phase::Dialing {
        dial: ConnectionId::next(),
        from,
    };
    assert!(c.cancel(&peer));
    assert!(sockets.take_adopted(from).is_none());
}

#[test]
fn prediction_from_the_first_attempt_only_when_both_profiles_call_for_it() {
    use meshwire_nat::{Filtering, Mapping, PortAllocation};
    let sequential = NatProfile {
        mapping: Mapping::AddressAndPortDependent(PortAllocation::Sequential { delta: 1 }),
        filtering: Filtering::AddressAndPortDependent,
        port_preserving: false,
    };
    let cone = NatProfile {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::AddressAndPortDependent,
        port_preserving: true,
    };
    let predict = Method::Dcutr { prediction: true };
    let mut c = Connector::new(ConnectorConfig::default(), QuicSockets::default());
    let (peer, conn) = (PeerId::random(), ConnectionId::next());
    c.relayed.insert(conn);
    // Our profile not known: the method is the same, but no hint (the retries predict).
    c.hint_prediction(peer, predict, Some(&sequential));
    assert_eq!(c.dcutr().port_window_hint(&peer), None);
    c.set_local_profile(Some(cone));
    c.hint_prediction(peer, predict, None);
    assert_eq!(c.dcutr().port_window_hint(&peer), None, "theirs not known");
    c.hint_prediction(peer, Method::Dcutr { prediction: false }, Some(&sequential));
    assert_eq!(
        c.dcutr().port_window_hint(&peer),
        None,
        "no prediction needed"
    );
    // Behind the sequential NAT ourselves: no hint (our extra dials would shift our ports).
    c.set_local_profile(Some(sequential));
    c.hint_prediction(peer, predict, Some(&cone));
    assert_eq!(
        c.dcutr().port_window_hint(&peer),
        None,
        "the sequential side"
    );
    // Facing the sequential NAT: the largest window of the config, from attempt 1.
    c.set_local_profile(Some(cone));
    c.new_session(peer, conn, true).unwrap();
    c.hint_prediction(peer, predict, Some(&sequential));
    assert_eq!(c.dcutr().port_window_hint(&peer), Some(5));
    // The session's end clears it.
    assert!(c.cancel(&peer));
    assert_eq!(c.dcutr().port_window_hint(&peer), None);
}
