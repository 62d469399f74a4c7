//! AutoNAT v2 (`/libp2p/autonat/2/dial-request`, `/libp2p/autonat/2/dial-back`) between
//! meshwire's `meshwire_nat::autonat` and rust-libp2p 0.57's `libp2p::autonat::v2`, whole
//! swarms on loopback QUIC, each side running identify (how a client learns who serves):
//!
//! | test | client | server | addresses |
//! | --- | --- | --- | --- |
//! | `autonat_meshwire_client_rust_libp2p_server` | meshwire | rust-libp2p | both listen addresses reachable (the one the server did not observe costs dial data), a closed port unreachable |
//! | `autonat_rust_libp2p_client_meshwire_server` | rust-libp2p | meshwire | the observed address reachable and confirmed |
//! | `autonat_rust_libp2p_client_meshwire_server_dial_data_and_unreachable` | rust-libp2p | meshwire | an address of another IP reachable after dial data, a closed port unreachable |

// The generated event enums carry identify's events, which these tests do not read.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour as LpBehaviour, SwarmEvent as LpEvent};
use libp2p::{autonat::v2 as lp_autonat, identify as lp_identify};
use meshwire_core::{Keypair, PeerId};
use meshwire_nat::autonat::{
    Client, ClientConfig, Reachability, Server, ServerConfig, TestResult, Unreachable,
};
use meshwire_swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr};

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

fn mw_peer(p: &libp2p::PeerId) -> PeerId {
    PeerId::from_bytes(&p.to_bytes()).expect("peer id bytes")
}

fn mw_addr(a: &libp2p::Multiaddr) -> Multiaddr {
    a.to_string().parse().expect("address parses in meshwire")
}

fn lp_addr(a: &Multiaddr) -> libp2p::Multiaddr {
    a.to_string()
        .parse()
        .expect("address parses in rust-libp2p")
}

fn mw_identify(key: &Keypair) -> meshwire_identify::Behaviour {
    meshwire_identify::Behaviour::new(meshwire_identify::Config::new(
        "/libp2p-interop/1.0.0",
        key.public(),
    ))
}

async fn mw_listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>, ip: &str) -> Multiaddr {
    swarm
        .listen_on(format!("/ip4/{ip}/udp/0/quic-v1").parse().expect("addr"))
        .expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            return address;
        }
    }
}

#[derive(NetworkBehaviour)]
struct MwClient {
    autonat: Client,
    identify: meshwire_identify::Behaviour,
}

#[derive(NetworkBehaviour)]
struct MwServer {
    autonat: Server,
    identify: meshwire_identify::Behaviour,
}

#[derive(LpBehaviour)]
struct LpServer {
    autonat: lp_autonat::server::Behaviour,
    identify: lp_identify::Behaviour,
}

#[derive(LpBehaviour)]
struct LpClient {
    autonat: lp_autonat::client::Behaviour,
    identify: lp_identify::Behaviour,
}

/// Hands its addresses to the rust-libp2p swarm as external-address candidates (rust-libp2p's
/// AutoNAT client tests candidates only; identify gives just the observed address).
#[derive(Default)]
struct Candidates {
    queue: VecDeque<libp2p::Multiaddr>,
}

impl LpBehaviour for Candidates {
    type ConnectionHandler = libp2p::swarm::dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: libp2p::swarm::ConnectionId,
        _: libp2p::PeerId,
        _: &libp2p::Multiaddr,
        _: &libp2p::Multiaddr,
    ) -> Result<libp2p::swarm::THandler<Self>, libp2p::swarm::ConnectionDenied> {
        Ok(libp2p::swarm::dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: libp2p::swarm::ConnectionId,
        _: libp2p::PeerId,
        _: &libp2p::Multiaddr,
        _: libp2p::core::Endpoint,
        _: libp2p::core::transport::PortUse,
    ) -> Result<libp2p::swarm::THandler<Self>, libp2p::swarm::ConnectionDenied> {
        Ok(libp2p::swarm::dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: libp2p::swarm::FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: libp2p::PeerId,
        _: libp2p::swarm::ConnectionId,
        event: libp2p::swarm::THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<libp2p::swarm::ToSwarm<Self::ToSwarm, libp2p::swarm::THandlerInEvent<Self>>> {
        match self.queue.pop_front() {
            Some(a) => Poll::Ready(libp2p::swarm::ToSwarm::NewExternalAddrCandidate(a)),
            None => Poll::Pending,
        }
    }
}

#[derive(LpBehaviour)]
struct LpClientWithCandidates {
    autonat: lp_autonat::client::Behaviour,
    identify: lp_identify::Behaviour,
    candidates: Candidates,
}

fn lp_identify(key: &libp2p::identity::Keypair) -> lp_identify::Behaviour {
    lp_identify::Behaviour::new(lp_identify::Config::new(
        "/libp2p-interop/1.0.0".into(),
        key.public(),
    ))
}

#[tokio::test]
async fn autonat_meshwire_client_rust_libp2p_server() {
    // rust-libp2p's server on 127.0.0.1.
    let mut server = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| LpServer {
            autonat: lp_autonat::server::Behaviour::default(),
            identify: lp_identify(key),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    server
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let server_addr = loop {
        if let LpEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break mw_addr(&address);
        }
    };
    let server_id = mw_peer(server.local_peer_id());

    // meshwire's client, listening on 127.0.0.1 and 127.0.0.2.
    let key = Keypair::generate();
    let behaviour = MwClient {
        autonat: Client::new(ClientConfig {
            probe_interval: Duration::from_millis(100),
            ..ClientConfig::default()
        }),
        identify: mw_identify(&key),
    };
    let mut client = Swarm::new(
        QuicTransport::new(key, QuicConfig::default()).expect("quic"),
        behaviour,
        SwarmConfig::default(),
    );
    let listen = [
        mw_listen(&mut client, "127.0.0.1").await,
        mw_listen(&mut client, "127.0.0.2").await,
    ];
    let closed: Multiaddr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        format!(
            "/ip4/127.0.0.1/udp/{}/quic-v1",
            s.local_addr().expect("addr").port()
        )
        .parse()
        .expect("addr")
    };
    client
        .dial(with_peer_id(&server_addr, server_id))
        .expect("dial");

    let mut results: Vec<TestResult> = Vec::new();
    let mut confirmed: Vec<Multiaddr> = Vec::new();
    let mut served: Vec<(Multiaddr, usize, bool)> = Vec::new();
    let mut asked = false;
    let run = async {
        loop {
            tokio::select! {
                ev = server.select_next_some() => {
                    if let LpEvent::Behaviour(LpServerEvent::Autonat(e)) = ev {
                        println!("rust-libp2p server: {e:?}");
                        served.push((mw_addr(&e.tested_addr), e.data_amount, e.result.is_ok()));
                    }
                }
                ev = client.next_event() => match ev {
                    SwarmEvent::Behaviour(MwClientEvent::Autonat(r)) => {
                        println!("meshwire client: {} {:?} ({} bytes)", r.addr, r.result, r.bytes_sent);
                        if r.result.is_ok() { results.push(r); }
                    }
                    SwarmEvent::ExternalAddrConfirmed { address } => confirmed.push(address),
                    _ => {}
                },
            }
            if !asked && client.behaviour().autonat.servers().contains(&server_id) {
                asked = true;
                for a in listen.iter().chain([&closed]) {
                    client.behaviour_mut().autonat.test_address(a.clone());
                }
            }
            let verdicts = |a: &Multiaddr| results.iter().any(|r| &r.addr == a);
            if listen.iter().all(|a| verdicts(a) && confirmed.contains(a)) && verdicts(&closed) {
                return;
            }
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, run)
        .await
        .expect("every address tested within the time limit");

    let mut with_data = 0;
    for a in &listen {
        let r = results.iter().find(|r| &r.addr == a).expect("result");
        assert_eq!(r.result, Ok(Reachability::Reachable), "{a}");
        assert_eq!(r.server, server_id);
        if r.bytes_sent > 0 {
            // rust-libp2p asks for dial data when the address is not the observed one.
            assert!(
                (30_000..=100_000).contains(&r.bytes_sent),
                "{}",
                r.bytes_sent
            );
            let (_, amount, ok) = served
                .iter()
                .find(|(t, _, _)| t == a)
                .expect("the server reported it");
            assert_eq!(*amount as u64, r.bytes_sent);
            assert!(ok);
            with_data += 1;
        }
    }
    assert_eq!(
        with_data, 1,
        "exactly the address the server did not observe costs dial data"
    );
    let r = results.iter().find(|r| r.addr == closed).expect("result");
    assert_eq!(
        r.result,
        Ok(Reachability::Unreachable(Unreachable::NoConnection))
    );
    assert!(!confirmed.contains(&closed));
    assert!(listen
        .iter()
        .all(|a| client.external_addresses().any(|e| e == a)));
}

#[tokio::test]
async fn autonat_rust_libp2p_client_meshwire_server() {
    // meshwire's server on 127.0.0.1.
    let key = Keypair::generate();
    let behaviour = MwServer {
        autonat: Server::new(
            ServerConfig {
                dial_private: true,
                ..ServerConfig::default()
            },
            key.clone(),
        )
        .expect("server"),
        identify: mw_identify(&key),
    };
    let mut server = Swarm::new(
        QuicTransport::new(key, QuicConfig::default()).expect("quic"),
        behaviour,
        SwarmConfig::default(),
    );
    let server_addr = mw_listen(&mut server, "127.0.0.1").await;
    let server_id = server.local_peer_id();

    // rust-libp2p's client on 127.0.0.1; it tests what identify reports as observed.
    let mut client = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| LpClient {
            // rust-libp2p's defaults: a probe every 5 s.
            autonat: lp_autonat::client::Behaviour::default(),
            identify: lp_identify(key),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    client
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let client_addr = loop {
        if let LpEvent::NewListenAddr { address, .. } = client.select_next_some().await {
            break address;
        }
    };
    client
        .dial(lp_addr(&with_peer_id(&server_addr, server_id)))
        .expect("dial");

    let mut reachable = None;
    let mut confirmed = false;
    let mut served = Vec::new();
    let run = async {
        loop {
            tokio::select! {
                ev = server.next_event() => {
                    if let SwarmEvent::Behaviour(MwServerEvent::Autonat(e)) = ev {
                        println!("meshwire server: {e:?}");
                        served.push(e);
                    }
                }
                ev = client.select_next_some() => match ev {
                    LpEvent::Behaviour(LpClientEvent::Autonat(e)) => {
                        println!("rust-libp2p client: {e:?}");
                        assert_eq!(mw_peer(&e.server), server_id);
                        if e.result.is_ok() {
                            reachable = Some(e.tested_addr);
                        }
                    }
                    LpEvent::ExternalAddrConfirmed { address } if address == client_addr => {
                        confirmed = true;
                    }
                    _ => {}
                },
            }
            if reachable.is_some() && confirmed {
                return;
            }
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, run)
        .await
        .expect("the rust-libp2p client finds its address reachable within the time limit");
    assert_eq!(reachable, Some(client_addr.clone()));
    let e = served
        .iter()
        .find(|e| e.tested.as_ref() == Some(&mw_addr(&client_addr)))
        .expect("the meshwire server reported the request");
    assert_eq!(e.result, Ok(meshwire_nat::autonat::wire::DialStatus::Ok));
    assert_eq!(
        e.data_received, 0,
        "the observed address costs no dial data"
    );
}

#[tokio::test]
async fn autonat_rust_libp2p_client_meshwire_server_dial_data_and_unreachable() {
    // meshwire's server on 127.0.0.1.
    let key = Keypair::generate();
    let behaviour = MwServer {
        autonat: Server::new(
            ServerConfig {
                dial_private: true,
                dial_back_timeout: Duration::from_secs(1),
                ..ServerConfig::default()
            },
            key.clone(),
        )
        .expect("server"),
        identify: mw_identify(&key),
    };
    let mut server = Swarm::new(
        QuicTransport::new(key, QuicConfig::default()).expect("quic"),
        behaviour,
        SwarmConfig::default(),
    );
    let server_addr = mw_listen(&mut server, "127.0.0.1").await;
    let server_id = server.local_peer_id();

    // rust-libp2p's client on every interface: it reaches the server from 127.0.0.1, and
    // is reachable on 127.0.0.2 at the same port.
    let mut client = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| LpClientWithCandidates {
            autonat: lp_autonat::client::Behaviour::default(),
            identify: lp_identify(key),
            candidates: Candidates::default(),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    client
        .listen_on("/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let port = loop {
        if let LpEvent::NewListenAddr { address, .. } = client.select_next_some().await {
            let port = address.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::Udp(port) => Some(port),
                _ => None,
            });
            break port.expect("udp port");
        }
    };
    let other_ip: libp2p::Multiaddr = format!("/ip4/127.0.0.2/udp/{port}/quic-v1")
        .parse()
        .expect("addr");
    let closed: libp2p::Multiaddr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        format!(
            "/ip4/127.0.0.1/udp/{}/quic-v1",
            s.local_addr().expect("addr").port()
        )
        .parse()
        .expect("addr")
    };
    let queue = &mut client.behaviour_mut().candidates.queue;
    queue.push_back(other_ip.clone());
    queue.push_back(closed.clone());
    client
        .dial(lp_addr(&with_peer_id(&server_addr, server_id)))
        .expect("dial");

    let mut results: Vec<(libp2p::Multiaddr, usize, bool)> = Vec::new();
    let mut confirmed = Vec::new();
    let mut served = Vec::new();
    let run = async {
        loop {
            tokio::select! {
                ev = server.next_event() => {
                    if let SwarmEvent::Behaviour(MwServerEvent::Autonat(e)) = ev {
                        println!("meshwire server: {e:?}");
                        served.push(e);
                    }
                }
                ev = client.select_next_some() => match ev {
                    LpEvent::Behaviour(LpClientWithCandidatesEvent::Autonat(e)) => {
                        println!("rust-libp2p client: {e:?}");
                        results.push((e.tested_addr, e.bytes_sent, e.result.is_ok()));
                    }
                    LpEvent::ExternalAddrConfirmed { address } => confirmed.push(address),
                    _ => {}
                },
            }
            let done = |a: &libp2p::Multiaddr| results.iter().any(|(t, _, _)| t == a);
            if done(&other_ip) && done(&closed) && confirmed.contains(&other_ip) {
                return;
            }
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, run)
        .await
        .expect("both candidates tested within the time limit");

    let (_, bytes, ok) = results
        .iter()
        .find(|(t, _, _)| t == &other_ip)
        .expect("result");
    assert!(ok, "the address of the other IP is reachable");
    assert!(
        (30_000..=100_000).contains(bytes),
        "{bytes} bytes of dial data"
    );
    let e = served
        .iter()
        .find(|e| e.tested.as_ref() == Some(&mw_addr(&other_ip)))
        .expect("the meshwire server reported it");
    assert_eq!(e.data_received, *bytes as u64);
    assert_eq!(e.result, Ok(meshwire_nat::autonat::wire::DialStatus::Ok));

    let (_, _, ok) = results
        .iter()
        .find(|(t, _, _)| t == &closed)
        .expect("result");
    assert!(!ok, "the closed port is not reachable");
    assert!(!confirmed.contains(&closed));
    let e = served
        .iter()
        .find(|e| e.tested.as_ref() == Some(&mw_addr(&closed)))
        .expect("the meshwire server reported it");
    assert_eq!(
        e.result,
        Ok(meshwire_nat::autonat::wire::DialStatus::DialError)
    );
}
