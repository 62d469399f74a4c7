//! Other behaviours over relayed connections: identify (info both ways, and the circuit
//! address a peer observes is no external-address candidate), kademlia between two peers that
//! reach each other only through the relay, and QUIC datagrams (which a circuit cannot carry).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use meshwire_core::{Keypair, PeerId};
use meshwire_kad::{self as kad, QueryResult, Record};
use meshwire_relay::{client, ServerConfig, ServerEvent};
use meshwire_swarm::{ConnectionId, NetworkBehaviour, Swarm, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, ConnectionError, Multiaddr, Protocol, TransportExt};

fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// A relay that also runs identify, so that its direct connections yield address candidates.
#[derive(NetworkBehaviour)]
struct IdRelay {
    relay: meshwire_relay::Behaviour,
    identify: meshwire_identify::Behaviour,
}

#[derive(NetworkBehaviour)]
struct IdNode {
    relay_client: client::Behaviour,
    identify: meshwire_identify::Behaviour,
    ping: meshwire_ping::Behaviour,
}

impl WithRelayClient for IdNode {
    fn relay_event(event: &IdNodeEvent) -> Option<&client::Event> {
        match event {
            IdNodeEvent::RelayClient(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(NetworkBehaviour)]
struct KadNode {
    relay_client: client::Behaviour,
    kad: kad::Behaviour,
}

impl WithRelayClient for KadNode {
    fn relay_event(event: &KadNodeEvent) -> Option<&client::Event> {
        match event {
            KadNodeEvent::RelayClient(e) => Some(e),
            _ => None,
        }
    }
}

fn identify(key: &Keypair, name: &str) -> meshwire_identify::Behaviour {
    meshwire_identify::Behaviour::new(
        meshwire_identify::Config::new("ipfs/0.1.0", key.public())
            .with_agent_version(format!("relay-test/{name}")),
    )
}

/// A swarm over QUIC and the relay client, with `make` building the rest of its behaviour.
fn relayed_swarm<B: NetworkBehaviour>(
    make: impl FnOnce(&Keypair, client::Behaviour) -> B,
) -> Swarm<B> {
    let key = Keypair::generate();
    let (transport, relay_client) = client::new(key.clone(), client::Config::default());
    let transport = QuicTransport::new(key.clone(), QuicConfig::default())
        .expect("quic")
        .or_transport(transport);
    Swarm::new(transport, make(&key, relay_client), swarm_config())
}

async fn start_id_relay() -> (Node<IdRelay>, Multiaddr) {
    let key = Keypair::generate();
    let behaviour = IdRelay {
        relay: meshwire_relay::Behaviour::new(key.clone(), ServerConfig::default())
            .expect("config"),
        identify: identify(&key, "relay"),
    };
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, behaviour, swarm_config());
    let addr = listen(&mut swarm).await;
    let addr = with_peer_id(&addr, swarm.local_peer_id());
    (Node::spawn(swarm), addr)
}

/// Waits for `node` to receive identify info from `peer` over `connection`.
async fn identified(
    node: &mut Node<IdNode>,
    peer: PeerId,
    connection: ConnectionId,
) -> meshwire_identify::Info {
    node.find_or_wait("identify info over the circuit", |e| match e {
        SwarmEvent::Behaviour(IdNodeEvent::Identify(meshwire_identify::Event::Received {
            peer: p,
            connection: c,
            info,
        })) if *p == peer && *c == connection => Some(info.clone()),
        _ => None,
    })
    .await
}

/// Waits for two more pings over `connection`: by then whatever followed an earlier event
/// of the node has been reported.
async fn two_pings(node: &mut Node<IdNode>, connection: ConnectionId) {
    for _ in 0..2 {
        node.wait_for("a ping over the circuit", |e| match e {
            SwarmEvent::Behaviour(IdNodeEvent::Ping(meshwire_ping::Event {
                connection: c,
                result: Ok(_),
                ..
            })) if *c == connection => Some(()),
            _ => None,
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_over_a_circuit_reports_no_circuit_address_candidate() {
    let (mut relay, relay_addr) = start_id_relay().await;
    let node = |name: &'static str| {
        relayed_swarm(move |key, relay_client| IdNode {
            relay_client,
            identify: identify(key, name),
            ping: ping(),
        })
    };
    let mut listener = Node::spawn(node("listener"));
    listener.reserve(&relay_addr).await;
    let mut dialer = Node::spawn(node("dialer"));
    let conn = dialer
        .dial_circuit(&relay_addr, listener.peer)
        .await
        .expect("relayed connection");
    let listener_conn = listener
        .find_or_wait("the relayed connection", |e| match e {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } if *peer_id == dialer.peer => {
                assert!(endpoint.is_relayed());
                Some(*connection_id)
            }
            _ => None,
        })
        .await;

    // Info both ways, over the relayed connection; each observed the other at a circuit.
    let from_listener = identified(&mut dialer, listener.peer, conn).await;
    assert_eq!(from_listener.agent_version, "relay-test/listener");
    assert!(
        is_circuit(&from_listener.observed_addr),
        "{}",
        from_listener.observed_addr
    );
    let from_dialer = identified(&mut listener, dialer.peer, listener_conn).await;
    assert_eq!(from_dialer.agent_version, "relay-test/dialer");
    assert!(
        is_circuit(&from_dialer.observed_addr),
        "{}",
        from_dialer.observed_addr
    );
    assert!(
        from_dialer
            .protocols
            .iter()
            .any(|p| p.as_ref() == meshwire_relay::protocol::STOP_PROTOCOL),
        "the client announces the stop protocol: {:?}",
        from_dialer.protocols
    );

    // The relay relayed it, and identified both ends on their direct connections.
    let circuit = relay
        .find_or_wait("the circuit", |e| match e {
            SwarmEvent::Behaviour(IdRelayEvent::Relay(ServerEvent::CircuitAccepted {
                src,
                dst,
                ..
            })) => Some((*src, *dst)),
            _ => None,
        })
        .await;
    assert_eq!(circuit, (dialer.peer, listener.peer));
    for peer in [dialer.peer, listener.peer] {
        let observed = relay
            .find_or_wait("identify info from a client", |e| match e {
                SwarmEvent::Behaviour(IdRelayEvent::Identify(
                    meshwire_identify::Event::Received { peer: p, info, .. },
                )) if *p == peer => Some(info.observed_addr.clone()),
                _ => None,
            })
            .await;
        assert!(!is_circuit(&observed), "{observed}");
    }

    two_pings(&mut dialer, conn).await;
    two_pings(&mut listener, listener_conn).await;
    for node in [&dialer, &listener] {
        let candidates: Vec<&Multiaddr> = node
            .log
            .iter()
            .filter_map(|e| match e {
                SwarmEvent::NewExternalAddrCandidate { address } => Some(address),
                _ => None,
            })
            .collect();
        assert!(
            !candidates.iter().any(|a| is_circuit(a)),
            "a circuit address became a candidate: {candidates:?}"
        );
        // The relay, reached directly, did report an observed address: candidates flow.
        assert!(
            !candidates.is_empty(),
            "no candidate from the relay's identify"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kademlia_works_between_peers_reachable_only_through_the_relay() {
    let relay = start_relay(ServerConfig::default()).await;
    let node = || {
        relayed_swarm(|key, relay_client| KadNode {
            relay_client,
            kad: kad::Behaviour::new(key.peer_id(), kad::Config::default()),
        })
    };
    let mut listener = Node::spawn(node());
    listener.reserve(&relay.addr).await;
    let mut dialer = Node::spawn(node());
    let (target, listener_peer) = (circuit_to(&relay.addr, listener.peer), listener.peer);
    // The dialer knows the listener only by its relayed address.
    dialer
        .call(move |s| s.behaviour_mut().kad.add_address(listener_peer, target))
        .await;
    let query = dialer
        .call(move |s| s.behaviour_mut().kad.find_peer(listener_peer))
        .await;
    let result = kad_result(&mut dialer, query).await;
    let QueryResult::FindNode(Ok(found)) = result else {
        panic!("FIND_NODE failed: {result:?}")
    };
    assert_eq!(found.peers.first().map(|p| p.id), Some(listener.peer));

    // A record stored at the listener through the circuit, and read back from it.
    let record = Record::new("relayed-key", b"through the relay".to_vec());
    let query = dialer
        .call(move |s| s.behaviour_mut().kad.put_value(record, 1).expect("stored"))
        .await;
    let result = kad_result(&mut dialer, query).await;
    let QueryResult::PutValue(Ok(put)) = result else {
        panic!("PUT_VALUE failed: {result:?}")
    };
    assert_eq!(put.successes, 1);
    let stored = listener
        .find_or_wait("the listener stores the record", |e| match e {
            SwarmEvent::Behaviour(KadNodeEvent::Kad(kad::Event::InboundRequest {
                from,
                request: kad::InboundRequest::PutValue { result, .. },
            })) => Some((*from, result.is_ok())),
            _ => None,
        })
        .await;
    assert_eq!(stored, (dialer.peer, true));
    let query = dialer
        .call(|s| s.behaviour_mut().kad.get_value("relayed-key".into(), 2))
        .await;
    let result = kad_result(&mut dialer, query).await;
    let QueryResult::GetValue(Ok(got)) = result else {
        panic!("GET_VALUE failed: {result:?}")
    };
    let remote = got
        .records
        .iter()
        .find(|r| r.peer == Some(listener.peer))
        .expect("the listener's copy");
    assert_eq!(remote.record.value, b"through the relay");

    // All of it went over the relay: the two never connected directly.
    let connections = dialer
        .call(move |s| {
            s.connections()
                .filter(|c| c.peer == listener_peer)
                .map(|c| c.endpoint.is_relayed())
                .collect::<Vec<_>>()
        })
        .await;
    assert!(!connections.is_empty() && connections.iter().all(|r| *r));
}

async fn kad_result(node: &mut Node<KadNode>, query: kad::QueryId) -> QueryResult {
    node.wait_for("the query to finish", |e| match e {
        SwarmEvent::Behaviour(KadNodeEvent::Kad(kad::Event::QueryFinished {
            id, result, ..
        })) if *id == query => Some(result.clone()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_are_unsupported_on_a_relayed_connection() {
    let relay = start_relay(ServerConfig::default()).await;
    let mut listener = start_client(client::Config::default());
    listener.reserve(&relay.addr).await;
    let mut dialer = start_client(client::Config::default());
    let conn = dialer
        .dial_circuit(&relay.addr, listener.peer)
        .await
        .expect("relayed connection");
    let relay_peer = relay.peer;
    let (relayed, direct) = dialer
        .call(move |s| {
            let direct = s
                .connections()
                .find(|c| c.peer == relay_peer)
                .map(|c| c.id)
                .expect("a direct connection to the relay");
            (
                s.connection(conn).cloned().expect("relayed"),
                s.connection(direct).cloned().expect("direct"),
            )
        })
        .await;
    assert!(relayed.is_relayed());
    assert_eq!(relayed.relay_peer_id(), Some(relay.peer));
    assert_eq!(relayed.max_datagram_size(), None);
    let sent = relayed.send_datagram(Bytes::from_static(b"hello"));
    assert!(
        matches!(sent, Err(ConnectionError::DatagramsUnsupported)),
        "{sent:?}"
    );
    let read = tokio::time::timeout(Duration::from_secs(5), relayed.read_datagram())
        .await
        .expect("fails at once");
    assert!(matches!(read, Err(ConnectionError::DatagramsUnsupported)));
    // The direct QUIC connection to the relay carries them.
    assert!(!direct.is_relayed());
    assert!(direct.max_datagram_size().is_some());
    direct
        .send_datagram(Bytes::from_static(b"hello"))
        .expect("QUIC datagrams");
}
