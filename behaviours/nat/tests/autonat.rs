//! AutoNAT v2 between meshwire nodes on loopback: a server on 127.0.0.1, a client listening
//! on 127.0.0.1 and 127.0.0.2, both running identify (how the client learns who serves).

// The generated event enums carry identify's events, which these tests do not read.
#![allow(dead_code)]

use std::time::Duration;

use meshwire_core::Keypair;
use meshwire_nat::autonat::{
    AutonatMetrics, Client, ClientConfig, Reachability, Server, ServerConfig, ServerEvent,
    TestResult, Unreachable,
};
use meshwire_swarm::{ConnectedPoint, Multiaddr, NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use prometheus_client::registry::Registry;

#[derive(NetworkBehaviour)]
struct ServerNode {
    autonat: Server,
    identify: meshwire_identify::Behaviour,
}

#[derive(NetworkBehaviour)]
struct ClientNode {
    autonat: Client,
    identify: meshwire_identify::Behaviour,
}

fn identify(key: &Keypair) -> meshwire_identify::Behaviour {
    meshwire_identify::Behaviour::new(meshwire_identify::Config::new(
        "autonat-test/1",
        key.public(),
    ))
}

async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>, ip: &str) -> Multiaddr {
    swarm
        .listen_on(format!("/ip4/{ip}/udp/0/quic-v1").parse().unwrap())
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            return address;
        }
    }
}

struct Net {
    server: Swarm<ServerNode>,
    client: Swarm<ClientNode>,
    /// The client's listen addresses on 127.0.0.1 and 127.0.0.2.
    client_addrs: Vec<Multiaddr>,
    /// The address the server sees the client's connection come from.
    observed: Multiaddr,
    server_metrics: AutonatMetrics,
    client_metrics: AutonatMetrics,
    server_events: Vec<ServerEvent>,
}

async fn net() -> Net {
    let mut registry = Registry::default();
    let server_metrics = AutonatMetrics::register(&mut registry);
    let client_metrics = AutonatMetrics::register(&mut Registry::default());
    let skey = Keypair::generate();
    let config = ServerConfig {
        dial_private: true,
        dial_back_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server_b = ServerNode {
        autonat: Server::new(config, skey.clone())
            .unwrap()
            .with_metrics(server_metrics.clone()),
        identify: identify(&skey),
    };
    let mut server = Swarm::new(
        QuicTransport::new(skey.clone(), QuicConfig::default()).unwrap(),
        server_b,
        SwarmConfig::default(),
    );
    let server_addr = listen(&mut server, "127.0.0.1").await;

    let ckey = Keypair::generate();
    let client_b = ClientNode {
        autonat: Client::new(ClientConfig {
            probe_interval: Duration::from_millis(100),
            ..ClientConfig::default()
        })
        .with_metrics(client_metrics.clone()),
        identify: identify(&ckey),
    };
    let mut client = Swarm::new(
        QuicTransport::new(ckey, QuicConfig::default()).unwrap(),
        client_b,
        SwarmConfig::default(),
    );
    let client_addrs = vec![
        listen(&mut client, "127.0.0.1").await,
        listen(&mut client, "127.0.0.2").await,
    ];
    let server_peer = server.local_peer_id();
    client
        .dial(meshwire_transport::with_peer_id(&server_addr, server_peer))
        .unwrap();
    // Until the server saw the connection and the client knows the server serves.
    let mut observed = None;
    let ready = async {
        loop {
            tokio::select! {
                ev = server.next_event() => {
                    if let SwarmEvent::ConnectionEstablished { endpoint: ConnectedPoint::Listener { send_back_addr, .. }, .. } = ev {
                        observed = Some(send_back_addr);
                    }
                }
                _ = client.next_event() => {}
            }
            if observed.is_some() && client.behaviour().autonat.servers().contains(&server_peer) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .expect("connected and identified within 10 s");
    Net {
        server,
        client,
        client_addrs,
        observed: observed.unwrap(),
        server_metrics,
        client_metrics,
        server_events: Vec::new(),
    }
}

impl Net {
    /// Tests `addr`; runs both swarms until its result, returned with whether the client's
    /// swarm confirmed it as an external address.
    async fn test(&mut self, addr: &Multiaddr) -> (TestResult, bool) {
        self.client
            .behaviour_mut()
            .autonat
            .test_address(addr.clone());
        let mut result = None;
        let mut confirmed = false;
        let run = async {
            loop {
                tokio::select! {
                    ev = self.server.next_event() => {
                        if let SwarmEvent::Behaviour(ServerNodeEvent::Autonat(e)) = ev {
                            self.server_events.push(e);
                        }
                    }
                    ev = self.client.next_event() => match ev {
                        SwarmEvent::Behaviour(ClientNodeEvent::Autonat(r)) if &r.addr == addr => {
                            let reachable = r.result == Ok(Reachability::Reachable);
                            result = Some(r);
                            if !reachable { return; }
                        }
                        SwarmEvent::ExternalAddrConfirmed { address } if &address == addr => {
                            confirmed = true;
                        }
                        _ => {}
                    },
                }
                if result.is_some() && confirmed {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), run)
            .await
            .expect("a result within 15 s");
        (result.unwrap(), confirmed)
    }
}

fn ip(addr: &Multiaddr) -> String {
    addr.iter().next().unwrap().to_string()
}

#[tokio::test]
async fn reachable_address_is_confirmed_without_dial_data() {
    let mut net = net().await;
    // The address with the IP the server sees: no dial data needed.
    let addr = net
        .client_addrs
        .iter()
        .find(|a| ip(a) == ip(&net.observed))
        .unwrap()
        .clone();
    let (result, confirmed) = net.test(&addr).await;
    assert_eq!(result.result, Ok(Reachability::Reachable));
    assert_eq!(result.server, net.server.local_peer_id());
    assert_eq!(result.bytes_sent, 0);
    assert!(confirmed, "confirmed to the swarm as an external address");
    assert!(net.client.external_addresses().any(|a| a == &addr));
    assert!(net
        .client
        .behaviour()
        .autonat
        .reachable_addresses()
        .contains(&addr));
    let served = net
        .server_events
        .iter()
        .find(|e| e.tested.as_ref() == Some(&addr))
        .expect("the server reported the request");
    assert_eq!(served.data_received, 0);
    assert_eq!(
        served.result,
        Ok(meshwire_nat::autonat::wire::DialStatus::Ok)
    );
    assert_eq!(net.client_metrics.probes_total("reachable"), 1);
    assert_eq!(net.server_metrics.requests_total("ok"), 1);
}

#[tokio::test]
async fn address_of_another_ip_costs_dial_data() {
    let mut net = net().await;
    let addr = net
        .client_addrs
        .iter()
        .find(|a| ip(a) != ip(&net.observed))
        .unwrap()
        .clone();
    let (result, confirmed) = net.test(&addr).await;
    assert_eq!(result.result, Ok(Reachability::Reachable));
    assert!(confirmed);
    assert!(
        (30_000..=100_000).contains(&result.bytes_sent),
        "{} bytes of dial data",
        result.bytes_sent
    );
    let served = net
        .server_events
        .iter()
        .find(|e| e.tested.as_ref() == Some(&addr))
        .expect("the server reported the request");
    assert_eq!(served.data_received, result.bytes_sent);
    assert_eq!(net.server_metrics.dial_data_received(), result.bytes_sent);
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let mut net = net().await;
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .unwrap();
    let (result, confirmed) = net.test(&addr).await;
    assert_eq!(
        result.result,
        Ok(Reachability::Unreachable(Unreachable::NoConnection))
    );
    assert!(!confirmed);
    assert!(!net.client.external_addresses().any(|a| a == &addr));
    assert_eq!(net.client_metrics.probes_total("unreachable"), 1);
}
