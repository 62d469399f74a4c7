//! The facade's `SwarmBuilder`: the behaviour is built with the node's key, the relay
//! client's transport is composed in only when the behaviour takes the client, the
//! application's typed connection-manager handle is the swarm's manager, and failures are
//! typed.

// The derived event enum of `WithRelay` is not read here.
#![allow(dead_code)]

use std::time::Instant;

use meshwire::connmgr::{BasicConnMgr, ConnManagerHandle};
use meshwire::prelude::*;
use meshwire::relay::client;
use meshwire::swarm::DummyBehaviour;
use meshwire::transport::TransportError;

#[derive(NetworkBehaviour)]
struct WithRelay {
    relay_client: client::Behaviour,
    ping: ping::Behaviour,
}

fn circuit_addr() -> Multiaddr {
    let relay = Keypair::generate().peer_id();
    format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_relay_transport_is_composed_only_when_the_behaviour_takes_the_client() {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let mut seen = None;
    let mut with = SwarmBuilder::new(key)
        .build(|ctx| {
            seen = Some(ctx.peer_id());
            WithRelay {
                relay_client: ctx.relay_client(),
                ping: ping::Behaviour::default(),
            }
        })
        .unwrap();
    assert_eq!(
        seen,
        Some(peer),
        "the behaviour is built with the node's identity"
    );
    assert_eq!(with.local_peer_id(), peer);
    with.listen_on(circuit_addr())
        .expect("a circuit address is taken by the relay transport");

    let mut without = SwarmBuilder::with_new_identity()
        .build(|_| DummyBehaviour)
        .unwrap();
    assert!(matches!(
        without.listen_on(circuit_addr()),
        Err(TransportError::UnsupportedAddress { .. })
    ));
}

#[tokio::test]
async fn the_applications_typed_conn_manager_is_the_swarms() {
    let cm = ConnManagerHandle::new(
        BasicConnMgr::new(meshwire::connmgr::Config::default(), Instant::now()).unwrap(),
    );
    let swarm = SwarmBuilder::with_new_identity()
        .conn_manager(&cm)
        .build(|_| DummyBehaviour)
        .unwrap();
    let peer = Keypair::generate().peer_id();
    cm.protect(peer, "app");
    assert!(swarm.conn_manager().is_protected(peer, Some("app")));
    // The typed handle still reaches the manager's own methods.
    assert_eq!(cm.lock().conn_count(), 0);
}

#[tokio::test]
async fn failures_are_typed() {
    let bad: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    let err = SwarmBuilder::with_new_identity()
        .listen_on(bad.clone())
        .build(|_| DummyBehaviour)
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Listen { ref addr, .. } if *addr == bad),
        "{err}"
    );

    let err = SwarmBuilder::with_new_identity()
        .conn_manager_config(meshwire::connmgr::Config {
            low_water: 10,
            high_water: 5,
            ..Default::default()
        })
        .build(|_| DummyBehaviour)
        .unwrap_err();
    assert!(matches!(err, BuildError::ConnManager(_)), "{err}");

    let err = SwarmBuilder::with_new_identity()
        .try_build(|ctx| {
            meshwire::relay::Behaviour::new(
                ctx.key().clone(),
                meshwire::relay::ServerConfig {
                    max_circuit_bytes: Some(0),
                    ..Default::default()
                },
            )
        })
        .unwrap_err();
    assert!(matches!(err, BuildError::Behaviour(_)), "{err}");
}
