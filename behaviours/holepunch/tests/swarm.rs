//! The behaviour on real swarms over loopback QUIC: a meshwire relay, a peer reserving on it
//! (DCUtR's initiator) and a peer reaching it through the relay (the responder). The
//! rust-libp2p interop and the NAT lab runs are in `interop-tests` (`dcutr.rs`,
//! `natlab_dcutr.rs`).

// The derived event enums' relay variants are not read here.
#![allow(dead_code)]

use std::time::Duration;

use meshwire_core::{Keypair, PeerId};
use meshwire_holepunch::{self as holepunch, AttemptOutcome, HolepunchMetrics, Role, UpgradeError};
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
    holepunch: holepunch::Behaviour,
}

/// A peer without DCUtR.
#[derive(NetworkBehaviour)]
struct Plain {
    relay_client: client::Behaviour,
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

fn transport(key: &Keypair) -> (impl meshwire_transport::Transport, client::Behaviour) {
    let (relay_transport, relay_client) = client::new(key.clone(), client::Config::default());
    let quic = QuicTransport::new(key.clone(), QuicConfig::default()).unwrap();
    (quic.or_transport(relay_transport), relay_client)
}

fn peer(metrics: Option<HolepunchMetrics>) -> Swarm<Peer> {
    let key = Keypair::generate();
    let (transport, relay_client) = transport(&key);
    let mut holepunch = holepunch::Behaviour::new(holepunch::Config::default());
    if let Some(m) = metrics {
        holepunch = holepunch.with_metrics(m);
    }
    Swarm::new(
        transport,
        Peer {
            relay_client,
            holepunch,
        },
        SwarmConfig::default(),
    )
}

fn plain() -> Swarm<Plain> {
    let key = Keypair::generate();
    let (transport, relay_client) = transport(&key);
    Swarm::new(transport, Plain { relay_client }, SwarmConfig::default())
}

/// A relay, and `listener` reserving on it; returns the relay (to keep driving) and the
/// circuit address.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_reports_events_and_metrics() {
    let mut registry = Registry::default();
    let metrics = HolepunchMetrics::register(&mut registry);
    let mut l = peer(Some(metrics));
    let mut d = peer(None);
    let (mut relay, circuit) = relay_and_reservation(&mut l).await;
    listen(&mut d, loopback()).await;
    let (l_id, d_id) = (l.local_peer_id(), d.local_peer_id());
    d.dial(DialOpts::peer(l_id).address(circuit)).unwrap();

    let run = async {
        let (mut at_l, mut at_d) = (Vec::new(), Vec::new());
        let finished = |v: &Vec<holepunch::Event>| {
            v.iter()
                .any(|e| !matches!(e, holepunch::Event::AttemptFinished { .. }))
        };
        while !(finished(&at_l) && finished(&at_d)) {
            tokio::select! {
                ev = l.next_event() => if let SwarmEvent::Behaviour(PeerEvent::Holepunch(e)) = ev { at_l.push(e) },
                ev = d.next_event() => if let SwarmEvent::Behaviour(PeerEvent::Holepunch(e)) = ev { at_d.push(e) },
                _ = relay.next_event() => {}
            }
        }
        (at_l, at_d)
    };
    let (at_l, at_d) = tokio::time::timeout(TIMEOUT, run).await.expect("timed out");
    assert!(
        matches!(
            &at_l[..],
            [
                holepunch::Event::AttemptFinished { peer, role: Role::Initiator, attempt: 1, outcome: AttemptOutcome::Succeeded, .. },
                holepunch::Event::DirectConnectionUpgradeSucceeded { peer: p2, role: Role::Initiator, attempts: 1, .. },
            ] if *peer == d_id && *p2 == d_id
        ),
        "{at_l:?}"
    );
    assert!(
        matches!(
            at_d.last(),
            Some(holepunch::Event::DirectConnectionUpgradeSucceeded { peer, role: Role::Responder, .. }) if *peer == l_id
        ),
        "{at_d:?}"
    );
    assert!(!l.behaviour().holepunch.is_punching(&d_id));

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"holepunch_upgrades_total{role="initiator",result="succeeded"} 1"#,
        r#"holepunch_attempts_total{role="initiator",outcome="succeeded"} 1"#,
        "holepunch_rtt_seconds_count 1",
        r#"holepunch_attempt_duration_seconds_count{role="initiator"} 1"#,
    ] {
        assert!(text.contains(line), "metrics lack {line}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_without_dcutr_ends_the_session_as_unsupported() {
    let mut l = peer(None);
    let mut d = plain();
    let (mut relay, circuit) = relay_and_reservation(&mut l).await;
    let d_id: PeerId = d.local_peer_id();
    d.dial(DialOpts::peer(l.local_peer_id()).address(circuit))
        .unwrap();
    let run = async {
        loop {
            tokio::select! {
                ev = l.next_event() => if let SwarmEvent::Behaviour(PeerEvent::Holepunch(e @ holepunch::Event::DirectConnectionUpgradeFailed { .. })) = ev {
                    return e;
                },
                _ = d.next_event() => {}
                _ = relay.next_event() => {}
            }
        }
    };
    let event = tokio::time::timeout(TIMEOUT, run).await.expect("timed out");
    assert!(
        matches!(
            &event,
            holepunch::Event::DirectConnectionUpgradeFailed {
                peer,
                role: Role::Initiator,
                attempts: 1,
                error: UpgradeError::Aborted(AttemptOutcome::Unsupported),
                ..
            } if *peer == d_id
        ),
        "{event:?}"
    );
}
