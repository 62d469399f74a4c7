//! Loopback QUIC nodes for the relay tests: a relay (server + ping) and clients (relay client
//! + ping) whose transport is QUIC or a circuit.

#![allow(dead_code)]

use std::time::Duration;

use meshwire_core::{Keypair, PeerId};
use meshwire_relay::{client, BehaviourConfig, ServerConfig};
use meshwire_swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr, TransportExt};

/// A relay node.
#[derive(NetworkBehaviour)]
pub struct RelayNode {
    pub relay: meshwire_relay::Behaviour,
    pub ping: meshwire_ping::Behaviour,
}

/// A node behind the relay (or dialing through it).
#[derive(NetworkBehaviour)]
pub struct ClientNode {
    pub relay_client: client::Behaviour,
    pub ping: meshwire_ping::Behaviour,
}

pub fn ping() -> meshwire_ping::Behaviour {
    meshwire_ping::Behaviour::new(
        meshwire_ping::Config::new().with_interval(Duration::from_millis(200)),
    )
}

/// A relay listening on loopback QUIC; returns it and its address with `/p2p/<relay>`.
pub async fn relay(config: ServerConfig) -> (Swarm<RelayNode>, Multiaddr) {
    relay_with(config, BehaviourConfig::default()).await
}

pub async fn relay_with(
    config: ServerConfig,
    io: BehaviourConfig,
) -> (Swarm<RelayNode>, Multiaddr) {
    let key = Keypair::generate();
    let behaviour = RelayNode {
        relay: meshwire_relay::Behaviour::with_config(key.clone(), config, io).expect("config"),
        ping: ping(),
    };
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let id = swarm.local_peer_id();
    (swarm, with_peer_id(&addr, id))
}

/// A node with QUIC and the relay client.
pub fn client_node(config: client::Config) -> Swarm<ClientNode> {
    let key = Keypair::generate();
    let (relay_transport, relay_client) = client::new(key.clone(), config);
    let transport = QuicTransport::new(key, QuicConfig::default())
        .expect("quic")
        .or_transport(relay_transport);
    Swarm::new(
        transport,
        ClientNode {
            relay_client,
            ping: ping(),
        },
        SwarmConfig::default(),
    )
}

/// `<relay addr>/p2p-circuit`.
pub fn circuit(relay_addr: &Multiaddr) -> Multiaddr {
    relay_addr
        .clone()
        .with(meshwire_transport::Protocol::P2pCircuit)
}

/// `<relay addr>/p2p-circuit/p2p/<peer>`.
pub fn circuit_to(relay_addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    with_peer_id(&circuit(relay_addr), peer)
}

/// Drives `swarm` in a task for the rest of the test, forwarding its events.
pub fn spawn<B>(mut swarm: Swarm<B>) -> tokio::sync::mpsc::UnboundedReceiver<SwarmEvent<B::Event>>
where
    B: NetworkBehaviour,
    B::Event: Send + std::fmt::Debug,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = swarm.next_event().await;
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    rx
}
