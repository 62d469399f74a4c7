//! The connector on real swarms over loopback QUIC (the spray itself needs NATs: the lab's
//! `natlab_connector_matrix` in `interop-tests`): profiles exchanged over the relayed
//! connection pick the method on both sides, a hopeless pair stays relayed with its reason,
//! a peer without the connector gets plain DCUtR.

// The derived event enums' relay variants are not read here.
#![allow(dead_code)]

use std::time::Duration;

use meshwire_core::{Keypair, PeerId};
use meshwire_holepunch::{
    self as holepunch, ConnectOutcome, Connector, ConnectorConfig, ConnectorEvent,
    ConnectorMetrics, Method, SkipReason,
};
use meshwire_nat::{Filtering, Mapping, NatProfile, PortAllocation};
use meshwire_relay::{client, ServerConfig};
use meshwire_swarm::{DialOpts, NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr, Protocol, TransportExt};
use prometheus_client::registry::Registry;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
struct Relay {
    relay: meshwire_relay::Behaviour,
}

#[derive(NetworkBehaviour)]
struct Peer {
    relay_client: client::Behaviour,
    connector: Connector,
}

/// A peer with rust-libp2p's arrangement: DCUtR only, started by itself.
#[derive(NetworkBehaviour)]
struct Dcutr {
    relay_client: client::Behaviour,
    holepunch: holepunch::Behaviour,
}

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>, addr: Multiaddr) -> Multiaddr {
    swarm.listen_on(addr).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            return address;
        }
    }
}

fn profile(mapping: Mapping, filtering: Filtering) -> NatProfile {
    NatProfile {
        mapping,
        filtering,
        port_preserving: false,
    }
}

fn random_symmetric() -> NatProfile {
    profile(
        Mapping::AddressAndPortDependent(PortAllocation::Random),
        Filtering::AddressAndPortDependent,
    )
}

fn port_restricted() -> NatProfile {
    profile(
        Mapping::EndpointIndependent,
        Filtering::AddressAndPortDependent,
    )
}

fn peer(profile: Option<NatProfile>, metrics: Option<ConnectorMetrics>) -> Swarm<Peer> {
    let key = Keypair::generate();
    let (relay_transport, relay_client) = client::new(key.clone(), client::Config::default());
    let quic = QuicTransport::new(key.clone(), QuicConfig::default()).unwrap();
    let mut connector = Connector::new(ConnectorConfig::default(), quic.sockets());
    if let Some(m) = metrics {
        connector = connector.with_metrics(m);
    }
    connector.set_local_profile(profile);
    Swarm::new(
        quic.or_transport(relay_transport),
        Peer {
            relay_client,
            connector,
        },
        SwarmConfig::default(),
    )
}

fn dcutr_peer() -> Swarm<Dcutr> {
    let key = Keypair::generate();
    let (relay_transport, relay_client) = client::new(key.clone(), client::Config::default());
    let quic = QuicTransport::new(key.clone(), QuicConfig::default()).unwrap();
    Swarm::new(
        quic.or_transport(relay_transport),
        Dcutr {
            relay_client,
            holepunch: holepunch::Behaviour::new(holepunch::Config::default()),
        },
        SwarmConfig::default(),
    )
}

/// A relay, and `listener` reserving on it; returns the relay and the circuit address.
async fn relay_and_reservation<B: NetworkBehaviour>(
    listener: &mut Swarm<B>,
) -> (Swarm<Relay>, Multiaddr) {
    let key = Keypair::generate();
    let behaviour = Relay {
        relay: meshwire_relay::Behaviour::new(key.clone(), ServerConfig::default()).unwrap(),
    };
    let mut relay = Swarm::new(
        QuicTransport::new(key, QuicConfig::default()).unwrap(),
        behaviour,
        SwarmConfig::default(),
    );
    let relay_addr = with_peer_id(&listen(&mut relay, loopback()).await, relay.local_peer_id());
    listen(listener, loopback()).await;
    let circuit = relay_addr.with(Protocol::P2pCircuit);
    listener.listen_on(circuit.clone()).unwrap();
    loop {
        tokio::select! {
            ev = listener.next_event() => if let SwarmEvent::NewListenAddr { address, .. } = ev {
                if address.iter().any(|p| p == Protocol::P2pCircuit) {
                    break;
                }
            },
            _ = relay.next_event() => {}
        }
    }
    (relay, circuit)
}

#[derive(Debug, Default)]
struct Seen {
    chosen: Option<Method>,
    finished: Option<ConnectOutcome>,
    direct: bool,
    relayed: bool,
}

impl Seen {
    fn take(&mut self, ev: SwarmEvent<PeerEvent>, other: PeerId) {
        match ev {
            SwarmEvent::Behaviour(PeerEvent::Connector(ConnectorEvent::Chosen {
                peer,
                method,
                ..
            })) if peer == other => self.chosen = Some(method),
            SwarmEvent::Behaviour(PeerEvent::Connector(ConnectorEvent::Finished {
                peer,
                outcome,
            })) if peer == other => self.finished = Some(outcome),
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } if peer_id == other => {
                if endpoint.is_relayed() {
                    self.relayed = true;
                } else {
                    self.direct = true;
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hopeless_pair_is_skipped_on_both_sides_and_stays_relayed() {
    let mut registry = Registry::default();
    let metrics = ConnectorMetrics::register(&mut registry);
    let mut l = peer(Some(random_symmetric()), Some(metrics));
    let mut d = peer(Some(random_symmetric()), None);
    let (mut relay, circuit) = relay_and_reservation(&mut l).await;
    listen(&mut d, loopback()).await;
    let (l_id, d_id) = (l.local_peer_id(), d.local_peer_id());
    d.dial(DialOpts::peer(l_id).address(circuit)).unwrap();
    let (mut at_l, mut at_d) = (Seen::default(), Seen::default());
    let run = async {
        while at_l.finished.is_none() || at_d.finished.is_none() {
            tokio::select! {
                ev = l.next_event() => at_l.take(ev, d_id),
                ev = d.next_event() => at_d.take(ev, l_id),
                _ = relay.next_event() => {}
            }
        }
        // A second later: still only the relayed connection, nobody punching.
        let quiet = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                ev = l.next_event() => at_l.take(ev, d_id),
                ev = d.next_event() => at_d.take(ev, l_id),
                _ = relay.next_event() => {}
                _ = &mut quiet => break,
            }
        }
    };
    tokio::time::timeout(TIMEOUT, run).await.expect("timed out");
    let skip = Method::Skip(SkipReason::BothSymmetric);
    for (who, seen) in [("opener", &at_l), ("answerer", &at_d)] {
        assert_eq!(seen.chosen, Some(skip), "{who}: {seen:?}");
        assert_eq!(
            seen.finished,
            Some(ConnectOutcome::Skipped(SkipReason::BothSymmetric)),
            "{who}"
        );
        assert!(
            seen.relayed && !seen.direct,
            "{who}: relayed only: {seen:?}"
        );
    }
    assert!(!l.behaviour().connector.dcutr().is_punching(&d_id));
    assert!(l.is_connected(&d_id), "the relayed connection stays");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"holepunch_connector_sessions_total{method="skip",result="skipped"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_open_profiles_use_dcutr_and_report_the_time_to_direct() {
    let mut registry = Registry::default();
    let metrics = ConnectorMetrics::register(&mut registry);
    let mut l = peer(Some(port_restricted()), Some(metrics.clone()));
    let mut d = peer(Some(port_restricted()), None);
    let (mut relay, circuit) = relay_and_reservation(&mut l).await;
    listen(&mut d, loopback()).await;
    let (l_id, d_id) = (l.local_peer_id(), d.local_peer_id());
    d.dial(DialOpts::peer(l_id).address(circuit)).unwrap();
    let (mut at_l, mut at_d) = (Seen::default(), Seen::default());
    let run = async {
        while at_l.finished.is_none() || at_d.finished.is_none() {
            tokio::select! {
                ev = l.next_event() => at_l.take(ev, d_id),
                ev = d.next_event() => at_d.take(ev, l_id),
                _ = relay.next_event() => {}
            }
        }
    };
    tokio::time::timeout(TIMEOUT, run).await.expect("timed out");
    let dcutr = Method::Dcutr { prediction: false };
    for (who, seen) in [("opener", &at_l), ("answerer", &at_d)] {
        assert_eq!(seen.chosen, Some(dcutr), "{who}");
        assert!(
            matches!(seen.finished, Some(ConnectOutcome::Direct { method, .. }) if method == dcutr),
            "{who}: {seen:?}"
        );
        assert!(seen.direct, "{who}");
    }
    assert_eq!(metrics.sessions("dcutr", "direct"), 1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"holepunch_connector_time_to_direct_seconds_count{method="dcutr"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_connector_gets_plain_dcutr() {
    // The connector accepts the relayed connection (it opens the spray stream, which the
    // remote refuses, and is DCUtR's initiator); the remote runs DCUtR alone, as a
    // rust-libp2p peer would.
    let mut l = peer(Some(random_symmetric()), None);
    let mut d = dcutr_peer();
    let (mut relay, circuit) = relay_and_reservation(&mut l).await;
    listen(&mut d, loopback()).await;
    let (l_id, d_id) = (l.local_peer_id(), d.local_peer_id());
    d.dial(DialOpts::peer(l_id).address(circuit)).unwrap();
    let mut at_l = Seen::default();
    let (mut d_upgraded, mut cancel_checked) = (false, false);
    let run = async {
        while at_l.finished.is_none() || !d_upgraded {
            tokio::select! {
                ev = l.next_event() => at_l.take(ev, d_id),
                ev = d.next_event() => if let SwarmEvent::Behaviour(DcutrEvent::Holepunch(
                    holepunch::Event::DirectConnectionUpgradeSucceeded { peer, .. })) = ev {
                    d_upgraded = peer == l_id;
                },
                _ = relay.next_event() => {}
            }
        }
        // Nothing left to cancel once the session ended.
        cancel_checked = !l.behaviour_mut().connector.cancel(&d_id);
    };
    tokio::time::timeout(TIMEOUT, run).await.expect("timed out");
    assert_eq!(at_l.chosen, None, "no HELLO came back: {at_l:?}");
    assert!(
        matches!(
            at_l.finished,
            Some(ConnectOutcome::Direct {
                method: Method::Dcutr { prediction: true },
                ..
            })
        ),
        "{at_l:?}"
    );
    assert!(at_l.direct && d_upgraded && cancel_checked);
}

/// A spray stream over a direct connection is refused: no DCUtR would ever follow it, and
/// the session it started would hold a slot and keep the connection alive for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_stream_on_a_direct_connection_is_refused() {
    use meshwire_holepunch::connect::spray::SprayConfig;
    use meshwire_holepunch::connect::wire::{self, Hello, Message};
    use meshwire_swarm::toolkit::{read_frame, write_frame};

    let mut a = peer(Some(port_restricted()), None);
    let a_addr = listen(&mut a, loopback()).await;
    let a_peer = a.local_peer_id();
    let quic = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let mut b = Swarm::new(quic, meshwire_swarm::DummyBehaviour, SwarmConfig::default());
    let b_peer = b.local_peer_id();
    b.dial(with_peer_id(&a_addr, a_peer)).unwrap();
    tokio::time::timeout(TIMEOUT, async {
        loop {
            tokio::select! {
                ev = b.next_event() => {
                    if let SwarmEvent::ConnectionEstablished { .. } = ev {
                        break;
                    }
                }
                _ = a.next_event() => {}
            }
        }
    })
    .await
    .expect("a direct connection");
    let control = b.stream_control();
    tokio::spawn(async move {
        loop {
            b.next_event().await;
        }
    });
    let client = tokio::spawn(async move {
        let mut s = control
            .open_stream(a_peer, holepunch::SPRAY_PROTOCOL)
            .await
            .unwrap();
        let hello = Hello {
            nonce: 7,
            profile: Some(random_symmetric()),
            params: SprayConfig::default().params(),
            addrs: vec!["203.0.113.9:4001".parse().unwrap()],
        };
        write_frame(&mut s, &wire::encode(&Message::Hello(hello)))
            .await
            .unwrap();
        matches!(read_frame(&mut s, 4096).await, Ok(Some(_)))
    });
    let answered = tokio::time::timeout(TIMEOUT, async {
        tokio::pin!(client);
        loop {
            tokio::select! {
                r = &mut client => break r.unwrap(),
                _ = a.next_event() => {}
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(
        !answered,
        "no HELLO answers a spray stream on a direct connection"
    );
    assert!(!a.behaviour().connector.is_connecting(&b_peer));
}
