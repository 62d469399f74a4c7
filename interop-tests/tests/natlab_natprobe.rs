//! NAT type detection on the wire in the NAT lab (`interop_tests::natlab`): a meshwire
//! `NatProbeServer` on the public host answers `/meshwire/natprobe/1.0.0` on three
//! observer addresses — `198.51.100.10:4001`, `198.51.100.10:4002` (same IP, other port),
//! `203.0.113.10:4001` (other IP) — and dials back from `198.51.100.10:4003` (other port)
//! and `203.0.113.10:4003` (other IP). Behind each of the five NATs a meshwire node with a
//! `NatDetector`, listening on its private address, port 4001, must detect its NAT's
//! profile (the table in `tests/natlab.rs`); the test asserts each.
//!
//! Needs root, iproute2 and nftables; skipped with the reason printed otherwise, a failure
//! under `MESHWIRE_REQUIRE_NETNS=1`. Run: `cargo test -p interop-tests --test
//! natlab_natprobe -- --nocapture`.

use std::net::Ipv4Addr;
use std::time::Duration;

use interop_tests::natlab::{self, Lab, NatKind, PUBLIC_IP, PUBLIC_IP2};
use meshwire_core::{Keypair, PeerId};
use meshwire_nat::wire::DialBackFrom;
use meshwire_nat::{
    DetectorConfig, DetectorEvent, Filtering, Mapping, NatDetector, NatProbeServer, Observer,
    PortAllocation, ServerConfig,
};
use meshwire_swarm::{Multiaddr, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::Transport;

const DETECT_TIMEOUT: Duration = Duration::from_secs(40);

fn quic(ip: Ipv4Addr, port: u16) -> Multiaddr {
    format!("/ip4/{ip}/udp/{port}/quic-v1")
        .parse()
        .expect("address")
}

fn transport() -> QuicTransport {
    QuicTransport::new(Keypair::generate(), QuicConfig::default()).expect("transport")
}

/// What the detector must make of each kind.
fn expected(kind: NatKind) -> (Mapping, Filtering) {
    match kind {
        NatKind::FullCone => (Mapping::EndpointIndependent, Filtering::EndpointIndependent),
        NatKind::RestrictedCone => (Mapping::EndpointIndependent, Filtering::AddressDependent),
        NatKind::PortRestrictedCone => (
            Mapping::EndpointIndependent,
            Filtering::AddressAndPortDependent,
        ),
        NatKind::SymmetricSequential => (
            Mapping::AddressAndPortDependent(PortAllocation::Sequential { delta: 1 }),
            Filtering::AddressAndPortDependent,
        ),
        NatKind::SymmetricRandom => (
            Mapping::AddressAndPortDependent(PortAllocation::Random),
            Filtering::AddressAndPortDependent,
        ),
    }
}

/// Starts the probe server in the public namespace; returns its peer id. It runs until
/// `stop` is dropped.
fn spawn_server(lab: &Lab, stop: tokio::sync::oneshot::Receiver<()>) -> PeerId {
    let (tx, rx) = std::sync::mpsc::channel();
    Lab::spawn_in(&lab.public_ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut other_port = transport();
            other_port
                .listen_on(quic(PUBLIC_IP, 4003))
                .expect("listen 4003");
            let mut other_ip = transport();
            other_ip
                .listen_on(quic(PUBLIC_IP2, 4003))
                .expect("listen other ip");
            // Five clients ask for two dial-backs each at about the same time: above the
            // default of 8 per second, which would refuse some (filtering `Unknown`).
            let config = ServerConfig {
                dial_backs_per_second: 16,
                ..ServerConfig::default()
            };
            let server = NatProbeServer::new(config)
                .with_dial_back(DialBackFrom::OtherPort, other_port)
                .with_dial_back(DialBackFrom::OtherAddress, other_ip);
            let mut swarm = Swarm::new(transport(), server, SwarmConfig::default());
            for a in [
                quic(PUBLIC_IP, 4001),
                quic(PUBLIC_IP, 4002),
                quic(PUBLIC_IP2, 4001),
            ] {
                swarm.listen_on(a).expect("listen");
            }
            let _ = tx.send(swarm.local_peer_id());
            let mut stop = stop;
            loop {
                tokio::select! {
                    ev = swarm.next_event() => if let SwarmEvent::Behaviour(e) = ev {
                        println!("server: {} {:?}", e.peer, e.outcome);
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

/// Runs a detector behind site `site` until it reports.
fn spawn_client(
    lab: &Lab,
    site: usize,
    server: PeerId,
) -> std::thread::JoinHandle<Result<Option<DetectorEvent>, String>> {
    let s = lab.sites[site].clone();
    Lab::spawn_in(&s.host_ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let observers = [
                quic(PUBLIC_IP, 4001),
                quic(PUBLIC_IP, 4002),
                quic(PUBLIC_IP2, 4001),
            ]
            .into_iter()
            .map(|addr| Observer { peer: server, addr })
            .collect();
            let config = DetectorConfig {
                observers,
                ..DetectorConfig::default()
            };
            let mut swarm = Swarm::new(
                transport(),
                NatDetector::new(config),
                SwarmConfig::default(),
            );
            swarm.listen_on(quic(s.host_ip, 4001)).expect("listen");
            let run = async {
                loop {
                    if let SwarmEvent::Behaviour(e) = swarm.next_event().await {
                        return e;
                    }
                }
            };
            let event = tokio::time::timeout(DETECT_TIMEOUT, run).await.ok();
            if let Some(DetectorEvent::Detected { profile, .. }) = &event {
                assert_eq!(swarm.behaviour().nat_profile(), Some(*profile));
            }
            event
        })
    })
    .expect("client thread")
}

#[test]
fn natlab_natprobe_detects_each_nat_kind() {
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
        let kind = lab.sites[i].kind;
        let event = c.join().expect("client thread").expect("client namespace");
        println!("{kind:?}: {event:?}");
        let got = match event {
            Some(DetectorEvent::Detected { profile, .. }) => {
                Some((profile.mapping, profile.filtering))
            }
            _ => None,
        };
        if got != Some(expected(kind)) {
            wrong.push(format!("{kind:?}: got {got:?}, want {:?}", expected(kind)));
        }
    }
    assert!(wrong.is_empty(), "misclassified: {wrong:#?}");
}
