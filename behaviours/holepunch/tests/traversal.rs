//! [`NatTraversal`] on loopback: a probe server (`meshwire_nat::NatProbeServer`) on two
//! ports of 127.0.0.1 and on 127.0.0.2; a node whose `NatTraversal` holds a detector asking
//! it. The detector's profile must become the connector's by itself, follow the node's
//! listen addresses (another network: none until detected again), and ignore a relay
//! reservation's address.

use std::time::Duration;

use meshwire_core::Keypair;
use meshwire_holepunch::{Connector, ConnectorConfig, NatTraversal, TraversalEvent};
use meshwire_nat::wire::DialBackFrom;
use meshwire_nat::{DetectorConfig, DetectorEvent, Mapping, NatDetector, NatProbeServer, Observer};
use meshwire_swarm::{
    FromSwarm, ListenerId, Multiaddr, NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::Transport;

fn quic() -> QuicTransport {
    QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap()
}

fn bound(ip: &str) -> QuicTransport {
    let mut t = quic();
    t.listen_on(format!("/ip4/{ip}/udp/0/quic-v1").parse().unwrap())
        .unwrap();
    t
}

async fn listen(swarm: &mut Swarm<impl NetworkBehaviour>, ip: &str) -> Multiaddr {
    swarm
        .listen_on(format!("/ip4/{ip}/udp/0/quic-v1").parse().unwrap())
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            return address;
        }
    }
}

/// Runs both swarms until the traversal reports a detection.
async fn detected(
    server: &mut Swarm<NatProbeServer>,
    node: &mut Swarm<NatTraversal>,
) -> DetectorEvent {
    let run = async {
        loop {
            tokio::select! {
                _ = server.next_event() => {}
                ev = node.next_event() => if let SwarmEvent::Behaviour(TraversalEvent::Nat(e)) = ev {
                    return e;
                },
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("a detection within 20 s")
}

#[tokio::test]
async fn the_detected_profile_becomes_the_connectors_and_follows_the_network() {
    let probe = NatProbeServer::default()
        .with_dial_back(DialBackFrom::OtherPort, bound("127.0.0.1"))
        .with_dial_back(DialBackFrom::OtherAddress, bound("127.0.0.2"));
    let mut server = Swarm::new(quic(), probe, SwarmConfig::default());
    let peer = server.local_peer_id();
    let mut observers = Vec::new();
    for ip in ["127.0.0.1", "127.0.0.1", "127.0.0.2"] {
        observers.push(Observer {
            peer,
            addr: listen(&mut server, ip).await,
        });
    }

    let transport = quic();
    let connector = Connector::new(ConnectorConfig::default(), transport.sockets());
    let detector = NatDetector::new(DetectorConfig {
        observers,
        ..DetectorConfig::default()
    });
    let mut node = Swarm::new(
        transport,
        NatTraversal::new(connector, Some(detector)),
        SwarmConfig::default(),
    );
    assert_eq!(node.behaviour().nat_profile(), None);
    assert_eq!(node.behaviour().connector().local_profile(), None);

    listen(&mut node, "127.0.0.1").await;
    let event = detected(&mut server, &mut node).await;
    let DetectorEvent::Detected { profile, .. } = event else {
        panic!("not detected: {event:?}");
    };
    assert_eq!(profile.mapping, Mapping::None, "loopback has no NAT");
    assert_eq!(node.behaviour().connector().local_profile(), Some(profile));
    assert_eq!(node.behaviour().nat_profile(), Some(profile));

    // A relay reservation's listen address is not another network: the profile stays.
    let circuit: Multiaddr = format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{peer}/p2p-circuit")
        .parse()
        .unwrap();
    node.behaviour_mut()
        .on_swarm_event(FromSwarm::NewListenAddr {
            listener: ListenerId::next(),
            addr: &circuit,
        });
    assert_eq!(node.behaviour().connector().local_profile(), Some(profile));

    // Another listen address is another network: no profile until it is detected.
    node.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let second = loop {
        if let SwarmEvent::NewListenAddr { listener_id, .. } = node.next_event().await {
            break listener_id;
        }
    };
    assert_eq!(node.behaviour().connector().local_profile(), None);
    let event = detected(&mut server, &mut node).await;
    assert!(
        matches!(event, DetectorEvent::Detected { profile: p, .. } if p == profile),
        "{event:?}"
    );
    assert_eq!(node.behaviour().connector().local_profile(), Some(profile));

    // Back on the first network (the second listener closed): its cached profile at once.
    let shared = node.behaviour().shared_profile().unwrap();
    assert!(node.remove_listener(second));
    let back = async {
        loop {
            if let SwarmEvent::ListenerClosed { .. } = node.next_event().await {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), back)
        .await
        .expect("the listener closes");
    assert_eq!(node.behaviour().connector().local_profile(), Some(profile));
    assert_eq!(shared.get(), Some(profile));
}

#[test]
fn without_a_detector_the_profile_is_set_by_hand() {
    let transport = quic();
    let mut t = NatTraversal::new(
        Connector::new(ConnectorConfig::default(), transport.sockets()),
        None,
    );
    let profile = meshwire_nat::NatProfile {
        mapping: Mapping::EndpointIndependent,
        filtering: meshwire_nat::Filtering::AddressAndPortDependent,
        port_preserving: true,
    };
    t.connector_mut().set_local_profile(Some(profile));
    let addr: Multiaddr = "/ip4/127.0.0.1/udp/1/quic-v1".parse().unwrap();
    t.on_swarm_event(FromSwarm::NewListenAddr {
        listener: ListenerId::next(),
        addr: &addr,
    });
    assert_eq!(
        t.nat_profile(),
        Some(profile),
        "no detector: nothing overrides it"
    );
    assert!(t.detector().is_none());
}
