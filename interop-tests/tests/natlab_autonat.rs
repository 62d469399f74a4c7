//! AutoNAT v2 in the NAT lab (`interop_tests::natlab`): a meshwire AutoNAT v2 server (with
//! identify) on the public host, `198.51.100.10:4001`; behind each of the five NATs a meshwire
//! client (with identify) listening on its private address, port 4001, dialing the server.
//! Identify reports the NAT's mapping as the client's observed address; the client tests it.
//! The server dials back from a fresh port of its IP, so the verdict follows the NAT's
//! filtering: endpoint-independent (full cone) and address-dependent (restricted cone: the
//! dial-back comes from the server's IP) let it in — reachable, confirmed; address-and-port-
//! dependent (port-restricted, both symmetric kinds) drop it — unreachable, not confirmed.
//!
//! Needs root, iproute2 and nftables; skipped with the reason printed otherwise, a failure
//! under `MESHWIRE_REQUIRE_NETNS=1`. Run: `cargo test -p interop-tests --test
//! natlab_autonat -- --nocapture`.

// The generated event enums carry identify's events, which this test does not read.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::time::Duration;

use interop_tests::natlab::{self, Lab, NatKind, PUBLIC_IP};
use meshwire_core::{Keypair, PeerId};
use meshwire_nat::autonat::{
    Client, ClientConfig, Reachability, Server, ServerConfig, TestResult, Unreachable,
};
use meshwire_swarm::{Multiaddr, NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::with_peer_id;

const TEST_TIMEOUT: Duration = Duration::from_secs(40);

fn quic(ip: Ipv4Addr, port: u16) -> Multiaddr {
    format!("/ip4/{ip}/udp/{port}/quic-v1")
        .parse()
        .expect("address")
}

fn identify(key: &Keypair) -> meshwire_identify::Behaviour {
    meshwire_identify::Behaviour::new(meshwire_identify::Config::new(
        "natlab-autonat/1",
        key.public(),
    ))
}

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

/// Starts the server in the public namespace; returns its peer id. It runs until `stop` is
/// dropped.
fn spawn_server(lab: &Lab, stop: tokio::sync::oneshot::Receiver<()>) -> PeerId {
    let (tx, rx) = std::sync::mpsc::channel();
    Lab::spawn_in(&lab.public_ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let key = Keypair::generate();
            // The lab's public addresses are documentation prefixes, not dialed by default.
            let config = ServerConfig {
                dial_private: true,
                ..ServerConfig::default()
            };
            let behaviour = ServerNode {
                autonat: Server::new(config, key.clone()).expect("server"),
                identify: identify(&key),
            };
            let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
            let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
            swarm.listen_on(quic(PUBLIC_IP, 4001)).expect("listen");
            let _ = tx.send(swarm.local_peer_id());
            let mut stop = stop;
            loop {
                tokio::select! {
                    ev = swarm.next_event() => if let SwarmEvent::Behaviour(ServerNodeEvent::Autonat(e)) = ev {
                        println!("server: {e:?}");
                    },
                    _ = &mut stop => return,
                }
            }
        });
    })
    .expect("server thread");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("server peer id")
}

/// A client behind site `site`: the first verdict on its observed address, and whether the
/// swarm confirmed it.
fn spawn_client(
    lab: &Lab,
    site: usize,
    server: PeerId,
) -> std::thread::JoinHandle<Result<Option<(TestResult, bool)>, String>> {
    let s = lab.sites[site].clone();
    Lab::spawn_in(&s.host_ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let key = Keypair::generate();
            let behaviour = ClientNode {
                autonat: Client::new(ClientConfig {
                    probe_interval: Duration::from_millis(200),
                    ..ClientConfig::default()
                }),
                identify: identify(&key),
            };
            let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
            let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
            swarm.listen_on(quic(s.host_ip, 4001)).expect("listen");
            swarm
                .dial(with_peer_id(&quic(PUBLIC_IP, 4001), server))
                .expect("dial");
            let mut confirmed = Vec::new();
            let run = async {
                loop {
                    match swarm.next_event().await {
                        SwarmEvent::ExternalAddrConfirmed { address } => confirmed.push(address),
                        SwarmEvent::Behaviour(ClientNodeEvent::Autonat(r)) => {
                            println!("{:?}: {} {:?}", s.kind, r.addr, r.result);
                            // Only a verdict (an error is retried).
                            if r.result.is_ok() {
                                // Let a confirmation queued right after the result arrive.
                                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                                    loop {
                                        if let SwarmEvent::ExternalAddrConfirmed { address } =
                                            swarm.next_event().await
                                        {
                                            confirmed.push(address);
                                        }
                                    }
                                })
                                .await;
                                return r;
                            }
                        }
                        _ => {}
                    }
                }
            };
            let result = tokio::time::timeout(TEST_TIMEOUT, run).await.ok();
            result.map(|r| {
                let c = confirmed.contains(&r.addr);
                (r, c)
            })
        })
    })
    .expect("client thread")
}

#[test]
fn natlab_autonat_reachability_follows_the_nat_filtering() {
    if let Some(reason) = natlab::missing_prerequisite() {
        natlab::skip(&reason);
        return;
    }
    let lab = Lab::new(&NatKind::ALL).expect("lab");
    let (_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = spawn_server(&lab, stop_rx);
    let clients: Vec<_> = (0..lab.sites.len())
        .map(|i| spawn_client(&lab, i, server))
        .collect();
    let mut wrong = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let site = &lab.sites[i];
        let outcome = c.join().expect("client thread").expect("client namespace");
        println!("{:?}: {outcome:?}", site.kind);
        let Some((result, confirmed)) = outcome else {
            wrong.push(format!("{:?}: no verdict", site.kind));
            continue;
        };
        // The tested address is the NAT's public side.
        let wan = result.addr.iter().next().map(|p| p.to_string());
        if wan != Some(format!("/ip4/{}", site.wan_ip)) {
            wrong.push(format!("{:?}: tested {}", site.kind, result.addr));
        }
        let want = match site.kind {
            NatKind::FullCone | NatKind::RestrictedCone => Reachability::Reachable,
            NatKind::PortRestrictedCone
            | NatKind::SymmetricSequential
            | NatKind::SymmetricRandom => Reachability::Unreachable(Unreachable::NoConnection),
        };
        if result.result != Ok(want) || confirmed != (want == Reachability::Reachable) {
            wrong.push(format!(
                "{:?}: {:?}, confirmed {confirmed}; want {want:?}",
                site.kind, result.result
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts: {wrong:#?}");
}
