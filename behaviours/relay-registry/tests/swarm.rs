//! The registry in real swarms on loopback QUIC: who may register, discovery through the DHT,
//! auto relay reserving, protecting and listening through the relays it chose.

mod common;

use common::*;
use std::time::Duration;

use meshwire_core::Keypair;
use meshwire_relay_registry::{
    AutoRelayError, ConfigError, FindOpts, RegisterError, RegisterOpts, RegistryConfig,
};
use meshwire_swarm::SwarmEvent;
use meshwire_transport::Protocol;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_swarm_register_needs_reachability_and_a_relay_server() {
    let relay = start(NodeOpts {
        server: Some(server(10)),
        ..NodeOpts::default()
    })
    .await;
    let addr = relay.addr.clone();
    let a = addr.clone();
    assert_eq!(
        relay
            .registry(move |r| r.register(a, RegisterOpts::default()))
            .await,
        Err(RegisterError::NotReachable),
        "no confirmed external address: refused, not announced"
    );
    assert_eq!(relay.metrics.published(), 0);
    relay
        .handle
        .add_external_address(addr.clone())
        .await
        .unwrap();
    let other: meshwire_transport::Multiaddr = "/ip4/127.0.0.1/udp/9/quic-v1".parse().unwrap();
    let o = other.clone();
    assert_eq!(
        relay
            .registry(move |r| r.register(o, RegisterOpts::default()))
            .await,
        Err(RegisterError::EndpointNotConfirmed(other))
    );
    // The capacity announced is at most the server's `max_reservations`.
    let a = addr.clone();
    relay
        .registry(move |r| r.register(a, RegisterOpts { capacity: 100 }))
        .await
        .unwrap();
    let me = relay.peer;
    let info = relay.registry(move |r| r.relay(&me)).await.unwrap();
    assert_eq!((info.capacity, info.current_load), (10, 0));
    assert!(relay.registry(move |r| r.is_relay(&me)).await);
    assert!(relay.metrics.published() >= 1);

    // A TTL that a refresh cannot cover through the DHT is refused.
    let short = RegistryConfig {
        record_ttl: Duration::from_secs(2),
        ..fast_config()
    };
    let kad = meshwire_kad::Behaviour::new(relay.peer, meshwire_kad::Config::default());
    assert!(matches!(
        meshwire_relay_registry::Behaviour::new(Keypair::generate(), short, kad),
        Err(ConfigError::TtlTooShortForDht { .. })
    ));

    let plain = start(NodeOpts::default()).await;
    plain
        .handle
        .add_external_address(plain.addr.clone())
        .await
        .unwrap();
    let a = plain.addr.clone();
    assert_eq!(
        plain
            .registry(move |r| r.register(a, RegisterOpts::default()))
            .await,
        Err(RegisterError::NoRelayServer)
    );
    assert_eq!(
        plain.registry(|r| r.set_auto_relay(Some(auto(2)))).await,
        Err(AutoRelayError::NoRelayClient)
    );
}

/// The NAT detector's profile, shared with the registry: a closed NAT refuses and, once
/// registered, unregisters; no NAT lets the confirmed address decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_swarm_nat_profile_decides_who_may_register() {
    use meshwire_nat::{Filtering, Mapping, NatProfile, SharedNatProfile};
    use meshwire_relay_registry::{RegistryEvent, UnregisterReason};
    let nat = SharedNatProfile::default();
    let port_restricted = NatProfile {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::AddressAndPortDependent,
        port_preserving: true,
    };
    nat.set(Some(port_restricted));
    let mut relay = start(NodeOpts {
        server: Some(server(10)),
        nat: Some(nat.clone()),
        ..NodeOpts::default()
    })
    .await;
    relay
        .handle
        .add_external_address(relay.addr.clone())
        .await
        .unwrap();
    let a = relay.addr.clone();
    assert_eq!(
        relay
            .registry(move |r| r.register(a, RegisterOpts::default()))
            .await,
        Err(RegisterError::NatClosed(port_restricted)),
        "a confirmed address behind a port-restricted NAT is not a relay's"
    );
    nat.set(Some(NatProfile {
        mapping: Mapping::None,
        filtering: Filtering::EndpointIndependent,
        port_preserving: true,
    }));
    let a = relay.addr.clone();
    relay
        .registry(move |r| r.register(a, RegisterOpts::default()))
        .await
        .unwrap();
    // The detector changes its mind: the registry follows by itself.
    nat.set(Some(port_restricted));
    relay
        .wait_for("unregistered", |ev| {
            matches!(
                registry_event(ev),
                Some(RegistryEvent::Unregistered {
                    reason: UnregisterReason::NatClosed
                })
            )
            .then_some(())
        })
        .await;
    assert!(!relay.registry(|r| r.engine().is_registered()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_swarm_clients_discover_relays_and_auto_reserve() {
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(
            start(NodeOpts {
                server: Some(server(10)),
                ..NodeOpts::default()
            })
            .await,
        );
    }
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(
            start(NodeOpts {
                client: true,
                registry: RegistryConfig {
                    auto_relay: Some(auto(2)),
                    ..fast_config()
                },
                ..NodeOpts::default()
            })
            .await,
        );
    }
    for n in relays.iter().skip(1).chain(clients.iter()) {
        n.join(&relays[0]).await;
    }
    for r in &relays {
        r.handle.add_external_address(r.addr.clone()).await.unwrap();
        let a = r.addr.clone();
        r.registry(move |reg| reg.register(a, RegisterOpts { capacity: 10 }))
            .await
            .unwrap();
    }
    let relay_ids: Vec<_> = relays.iter().map(|r| r.peer).collect();
    for c in &clients {
        eventually("clients know the three relays", || async {
            c.registry(|r| r.relay_count()).await == 3
        })
        .await;
    }
    let c0 = &clients[0];
    let target = clients[1].peer;
    let best = c0.registry(move |r| r.find_relay(&target)).await.unwrap();
    assert!(relay_ids.contains(&best.node_id));
    let all = relay_ids.clone();
    let none = c0
        .registry(move |r| {
            r.find_relay_with(
                &target,
                FindOpts {
                    exclude: all,
                    ..FindOpts::default()
                },
            )
        })
        .await;
    assert!(none.is_err());

    // Each client reserves on two relays, listens through them, and protects them.
    for c in clients.iter_mut() {
        eventually("two reservations", || async {
            c.registry(|r| r.reserved_relays().len()).await == 2
        })
        .await;
        let held = c.registry(|r| r.reserved_relays()).await;
        for relay in &held {
            assert!(relay_ids.contains(relay));
            assert!(
                c.handle.conn_manager().is_protected(*relay, Some("relay")),
                "a relay in use is protected"
            );
        }
        let mut circuits = Vec::new();
        while circuits.len() < 2 {
            let a = c
                .wait_for("a relayed listen address", |ev| match ev {
                    SwarmEvent::NewListenAddr { address, .. }
                        if address.iter().any(|p| p == Protocol::P2pCircuit) =>
                    {
                        Some(address.clone())
                    }
                    _ => None,
                })
                .await;
            circuits.push(a);
        }
        assert_eq!(c.metrics.reservations(), 2);
        assert!(c.metrics.selections("auto") >= 2);
        assert_eq!(c.metrics.known_relays(), 3);
    }
    // The relays publish their load: the four reservations show in everyone's index.
    eventually("loads published", || async {
        let infos = clients[0].registry(|r| r.relays()).await;
        infos.iter().map(|i| i.current_load).sum::<u32>() == 4
    })
    .await;
}
