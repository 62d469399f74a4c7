//! Three meshwire nodes on loopback QUIC: a relay, a node listening through it and a node
//! dialing that one through it. The circuit carries a Noise + Yamux connection on which ping
//! runs unchanged; both ends see a relayed connection through the relay.

mod common;

use std::time::Duration;

use common::*;
use meshwire_relay::client;
use meshwire_relay::ServerConfig;
use meshwire_relay::ServerEvent;
use meshwire_swarm::{DialOpts, SwarmEvent};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn relay_circuit_between_two_meshwire_nodes_carries_ping() {
    tokio::time::timeout(LIMIT, async {
        let (relay, relay_addr) = relay(ServerConfig::default()).await;
        let relay_id = relay.local_peer_id();
        let mut relay_events = spawn(relay);

        // The listener reserves a slot and learns its relayed address.
        let mut listener = client_node(client::Config::default());
        let listener_id = listener.local_peer_id();
        listener
            .listen_on(circuit(&relay_addr))
            .expect("listen through the relay");
        let mut reserved = false;
        let relayed_addr = loop {
            match listener.next_event().await {
                SwarmEvent::NewListenAddr { address, .. } => {
                    assert!(reserved, "the address comes with the reservation");
                    break address;
                }
                SwarmEvent::Behaviour(ClientNodeEvent::RelayClient(
                    client::Event::ReservationAccepted { relay, renewal, .. },
                )) => {
                    assert_eq!(relay, relay_id);
                    assert!(!renewal);
                    reserved = true;
                }
                _ => {}
            }
        };
        assert_eq!(relayed_addr, circuit(&relay_addr));
        println!("listener {listener_id} reachable at {relayed_addr}");
        let mut listener_events = spawn(listener);

        let mut dialer = client_node(client::Config::default());
        let dialer_id = dialer.local_peer_id();
        let target = circuit_to(&relay_addr, listener_id);
        dialer
            .dial(DialOpts::peer(listener_id).address(target))
            .expect("dial through the relay");
        let mut connected = false;
        let rtt = loop {
            match dialer.next_event().await {
                SwarmEvent::ConnectionEstablished {
                    peer_id, endpoint, ..
                } if peer_id == listener_id => {
                    assert!(endpoint.is_relayed(), "{endpoint:?}");
                    assert_eq!(endpoint.relay_peer_id(), Some(relay_id));
                    // The resource manager holds what the Yamux connection can buffer, not
                    // only a QUIC connection's window.
                    let window = meshwire_transport::upgrade::UpgradeConfig::default()
                        .yamux
                        .max_connection_receive_window as u64;
                    let held = dialer.resource_manager().peer_usage(&listener_id).memory;
                    assert!(
                        held >= window,
                        "{held} bytes reserved for a {window}-byte window"
                    );
                    connected = true;
                }
                SwarmEvent::Behaviour(ClientNodeEvent::Ping(meshwire_ping::Event {
                    peer,
                    result: Ok(rtt),
                    ..
                })) if peer == listener_id => break rtt,
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
                _ => {}
            }
        };
        assert!(connected);
        println!("dialer {dialer_id} pinged {listener_id} through {relay_id}: rtt {rtt:?}");

        // The listener saw the same connection come in relayed and pings back.
        let mut listener_saw = false;
        loop {
            match listener_events.recv().await.expect("listener runs") {
                SwarmEvent::ConnectionEstablished {
                    peer_id, endpoint, ..
                } if peer_id == dialer_id => {
                    assert!(endpoint.is_relayed());
                    assert!(!endpoint.is_dialer());
                    listener_saw = true;
                }
                SwarmEvent::Behaviour(ClientNodeEvent::Ping(meshwire_ping::Event {
                    peer,
                    result: Ok(_),
                    ..
                })) if peer == dialer_id => break,
                _ => {}
            }
        }
        assert!(listener_saw);

        // The relay admitted exactly this circuit.
        loop {
            if let SwarmEvent::Behaviour(RelayNodeEvent::Relay(ServerEvent::CircuitAccepted {
                src,
                dst,
                ..
            })) = relay_events.recv().await.expect("relay runs")
            {
                assert_eq!((src, dst), (dialer_id, listener_id));
                break;
            }
        }
    })
    .await
    .expect("within the time limit");
}

#[tokio::test]
async fn relay_listen_via_opens_a_listener_from_the_behaviour() {
    tokio::time::timeout(LIMIT, async {
        let (relay, relay_addr) = relay(ServerConfig::default()).await;
        let _relay_events = spawn(relay);

        // The behaviour (not the swarm) opens the listener; the swarm learns of it from the
        // client's transport like of any other listener.
        let mut listener = client_node(client::Config::default());
        let listener_id = listener.local_peer_id();
        let id = listener
            .behaviour_mut()
            .relay_client
            .listen_via(&relay_addr)
            .expect("listen through the relay");
        let address = loop {
            if let SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } = listener.next_event().await
            {
                assert_eq!(listener_id, id);
                break address;
            }
        };
        assert_eq!(address, circuit(&relay_addr));
        assert!(listener.listeners().any(|a| *a == address));
        assert_eq!(
            listener.behaviour().relay_client.reservations().len(),
            1,
            "the reservation is held"
        );
        // Not through ourselves, not through a circuit destination.
        let own = meshwire_transport::with_peer_id(&relay_addr, listener_id);
        assert!(matches!(
            listener.behaviour_mut().relay_client.listen_via(&own),
            Err(client::ListenViaError::NotARelayAddress(_))
        ));

        // Reachable through the relay: a dialer connects.
        let mut dialer = client_node(client::Config::default());
        dialer
            .dial(DialOpts::peer(listener_id).address(circuit_to(&relay_addr, listener_id)))
            .expect("dial through the relay");
        let _listener_events = spawn(listener);
        loop {
            match dialer.next_event().await {
                SwarmEvent::ConnectionEstablished {
                    peer_id, endpoint, ..
                } if peer_id == listener_id => {
                    assert!(endpoint.is_relayed());
                    break;
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("{error}"),
                _ => {}
            }
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn relay_stop_listening_closes_the_listener() {
    tokio::time::timeout(LIMIT, async {
        let (relay, relay_addr) = relay(ServerConfig::default()).await;
        let _relay_events = spawn(relay);
        let mut listener = client_node(client::Config::default());
        let id = listener
            .behaviour_mut()
            .relay_client
            .listen_via(&circuit(&relay_addr))
            .expect("listen through the relay");
        loop {
            if let SwarmEvent::NewListenAddr { .. } = listener.next_event().await {
                break;
            }
        }
        assert!(listener.behaviour_mut().relay_client.stop_listening(id));
        assert!(!listener.behaviour_mut().relay_client.stop_listening(id));
        loop {
            if let SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } = listener.next_event().await
            {
                assert_eq!(listener_id, id);
                assert!(reason.is_ok(), "{reason:?}");
                break;
            }
        }
        assert!(listener.behaviour().relay_client.reservations().is_empty());
        assert_eq!(listener.listeners().count(), 0);
    })
    .await
    .expect("test timed out");
}

/// A peer reached through the relay and then dialed directly: new streams go on the direct
/// connection, however busy, not on the relayed one.
#[tokio::test]
async fn new_streams_prefer_a_direct_connection_over_the_relayed_one() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    const PROTO: meshwire_swarm::StreamProtocol =
        meshwire_swarm::StreamProtocol::new("/test/which-connection/1");
    tokio::time::timeout(LIMIT, async {
        let (relay, relay_addr) = relay(ServerConfig::default()).await;
        let relay_id = relay.local_peer_id();
        let _relay_events = spawn(relay);

        let mut listener = client_node(client::Config::default());
        let listener_id = listener.local_peer_id();
        let mut incoming = listener.stream_control().accept(PROTO).unwrap();
        listener.listen_on(circuit(&relay_addr)).unwrap();
        listener
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .unwrap();
        let mut direct_addr = None;
        let mut relayed = false;
        while direct_addr.is_none() || !relayed {
            if let SwarmEvent::NewListenAddr { address, .. } = listener.next_event().await {
                if address == circuit(&relay_addr) {
                    relayed = true;
                } else {
                    direct_addr = Some(address);
                }
            }
        }
        let mut listener_events = spawn(listener);

        let mut dialer = client_node(client::Config::default());
        let control = dialer.stream_control();
        dialer
            .dial(DialOpts::peer(listener_id).address(circuit_to(&relay_addr, listener_id)))
            .unwrap();
        let relayed_conn = loop {
            if let SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } = dialer.next_event().await
            {
                if peer_id == listener_id {
                    assert!(endpoint.is_relayed());
                    break connection_id;
                }
            }
        };
        dialer
            .dial(
                DialOpts::peer(listener_id)
                    .address(direct_addr.unwrap())
                    .condition(meshwire_swarm::PeerCondition::Always),
            )
            .unwrap();
        let direct_conn = loop {
            if let SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } = dialer.next_event().await
            {
                if peer_id == listener_id {
                    assert!(!endpoint.is_relayed());
                    break connection_id;
                }
            }
        };
        assert_ne!(relayed_conn, direct_conn);
        let _dialer_events = spawn(dialer);

        // Which of the listener's connections is direct.
        let mut direct_on_listener = None;
        while direct_on_listener.is_none() {
            if let SwarmEvent::ConnectionEstablished {
                connection_id,
                endpoint,
                peer_id,
                ..
            } = listener_events.recv().await.unwrap()
            {
                if !endpoint.is_relayed() && peer_id != relay_id {
                    direct_on_listener = Some(connection_id);
                }
            }
        }
        // Five streams held open at once: all on the direct connection, though the relayed
        // one carries fewer.
        let mut held = Vec::new();
        for i in 0..5u8 {
            let mut s = control.open_stream(listener_id, PROTO).await.unwrap();
            s.write_all(&[i]).await.unwrap();
            s.flush().await.unwrap();
            let mut inbound = incoming.next().await.unwrap();
            assert_eq!(
                inbound.connection,
                direct_on_listener.unwrap(),
                "stream {i}"
            );
            let mut b = [0u8; 1];
            inbound.stream.read_exact(&mut b).await.unwrap();
            assert_eq!(b[0], i);
            held.push((s, inbound));
        }
    })
    .await
    .expect("within the time limit");
}
