//! meshwire's swarm with ping and identify against a real rust-libp2p 0.57 swarm with ping
//! and identify, in both dial directions: peer ids, RTTs, identify fields, observed addresses.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent as LpSwarmEvent;
use libp2p::{identify as lp_identify, ping as lp_ping, SwarmBuilder};
use meshwire_core::{Keypair, PeerId};
use meshwire_swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr};
use tokio::sync::mpsc;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const LP_AGENT: &str = "rust-libp2p-interop/0.57";
const MW_PROTOCOL_VERSION: &str = "/meshwire-interop/1.0.0";

#[derive(NetworkBehaviour)]
struct Mw {
    ping: meshwire_ping::Behaviour,
    identify: meshwire_identify::Behaviour,
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Lp {
    ping: lp_ping::Behaviour,
    identify: lp_identify::Behaviour,
}

fn lp_peer(p: &PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(p.as_bytes()).expect("peer id bytes")
}

fn mw_addr(a: &libp2p::Multiaddr) -> Multiaddr {
    a.to_string()
        .parse()
        .expect("libp2p address parses in meshwire")
}

async fn meshwire_node() -> (Swarm<Mw>, Multiaddr) {
    let key = Keypair::generate();
    let behaviour = Mw {
        ping: meshwire_ping::Behaviour::new(
            meshwire_ping::Config::new().with_interval(Duration::from_millis(200)),
        ),
        identify: meshwire_identify::Behaviour::new(meshwire_identify::Config::new(
            MW_PROTOCOL_VERSION,
            key.public(),
        )),
    };
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("transport");
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    (swarm, addr)
}

/// A libp2p node listening on loopback QUIC, driven in a task; returns its id, address and
/// its events.
async fn libp2p_node() -> (
    libp2p::PeerId,
    libp2p::Multiaddr,
    mpsc::UnboundedSender<libp2p::Multiaddr>,
    mpsc::UnboundedReceiver<LpSwarmEvent<LpEvent>>,
    tokio::task::JoinHandle<()>,
) {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| Lp {
            ping: lp_ping::Behaviour::new(
                lp_ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
            identify: lp_identify::Behaviour::new(
                lp_identify::Config::new("/libp2p-interop/1.0.0".into(), key.public())
                    .with_agent_version(LP_AGENT.into()),
            ),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let id = *swarm.local_peer_id();
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let LpSwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (dial_tx, mut dial_rx) = mpsc::unbounded_channel::<libp2p::Multiaddr>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => { let _ = tx.send(ev); }
                Some(addr) = dial_rx.recv() => { swarm.dial(addr).expect("libp2p dial"); }
            }
        }
    });
    (id, addr, dial_tx, rx, task)
}

/// What each side has learnt.
#[derive(Default)]
struct Seen {
    mw_rtt: bool,
    mw_info: Option<meshwire_identify::Info>,
    lp_rtt: bool,
    lp_info: Option<lp_identify::Info>,
    lp_observed_mw_at: Option<libp2p::Multiaddr>,
    mw_saw_lp_at: Option<Multiaddr>,
    mw_candidate: Option<Multiaddr>,
}

impl Seen {
    fn done(&self) -> bool {
        self.mw_rtt
            && self.mw_info.is_some()
            && self.lp_rtt
            && self.lp_info.is_some()
            && self.mw_candidate.is_some()
    }
}

/// Drives both sides until each has pinged and identified the other.
async fn exchange(
    mw: &mut Swarm<Mw>,
    lp_events: &mut mpsc::UnboundedReceiver<LpSwarmEvent<LpEvent>>,
    lp_id: libp2p::PeerId,
) -> Seen {
    let mw_id = mw.local_peer_id();
    let mut seen = Seen::default();
    tokio::time::timeout(TEST_TIMEOUT, async {
        while !seen.done() {
            tokio::select! {
                ev = mw.next_event() => match ev {
                    SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                        assert_eq!(lp_peer(&peer_id), lp_id, "meshwire reached the libp2p node");
                        seen.mw_saw_lp_at = Some(endpoint.remote_addr().clone());
                    }
                    SwarmEvent::Behaviour(MwEvent::Ping(meshwire_ping::Event { peer, result, .. })) => {
                        assert_eq!(lp_peer(&peer), lp_id);
                        let rtt = result.expect("meshwire pings libp2p");
                        assert!(rtt < Duration::from_secs(5));
                        seen.mw_rtt = true;
                    }
                    SwarmEvent::Behaviour(MwEvent::Identify(meshwire_identify::Event::Received { peer, info, .. })) => {
                        assert_eq!(lp_peer(&peer), lp_id);
                        seen.mw_info = Some(info);
                    }
                    SwarmEvent::Behaviour(MwEvent::Identify(meshwire_identify::Event::Error { error, .. })) => {
                        panic!("meshwire identify failed: {error}");
                    }
                    SwarmEvent::NewExternalAddrCandidate { address } => {
                        seen.mw_candidate = Some(address);
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => panic!("meshwire dial: {error}"),
                    _ => {}
                },
                ev = lp_events.recv() => match ev.expect("libp2p node alive") {
                    LpSwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        assert_eq!(peer_id, lp_peer(&mw_id), "libp2p reached meshwire");
                    }
                    LpSwarmEvent::Behaviour(LpEvent::Ping(lp_ping::Event { peer, result, .. })) => {
                        assert_eq!(peer, lp_peer(&mw_id));
                        result.expect("libp2p pings meshwire");
                        seen.lp_rtt = true;
                    }
                    LpSwarmEvent::Behaviour(LpEvent::Identify(lp_identify::Event::Received { peer_id, info, .. })) => {
                        assert_eq!(peer_id, lp_peer(&mw_id));
                        seen.lp_observed_mw_at = Some(info.observed_addr.clone());
                        seen.lp_info = Some(info);
                    }
                    LpSwarmEvent::Behaviour(LpEvent::Identify(lp_identify::Event::Error { error, .. })) => {
                        panic!("libp2p identify failed: {error}");
                    }
                    LpSwarmEvent::OutgoingConnectionError { error, .. } => panic!("libp2p dial: {error}"),
                    _ => {}
                },
            }
        }
    })
    .await
    .expect("interop exchange timed out");
    seen
}

fn check(
    seen: &Seen,
    mw: &Swarm<Mw>,
    mw_listen: &Multiaddr,
    lp_id: libp2p::PeerId,
    lp_listen: &libp2p::Multiaddr,
) {
    // What meshwire learnt about libp2p.
    let info = seen.mw_info.as_ref().unwrap();
    assert_eq!(lp_peer(&info.peer_id()), lp_id);
    assert_eq!(info.agent_version, LP_AGENT);
    assert_eq!(info.protocol_version, "/libp2p-interop/1.0.0");
    let protos: Vec<&str> = info.protocols.iter().map(|p| p.as_str()).collect();
    for p in ["/ipfs/ping/1.0.0", "/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0"] {
        assert!(protos.contains(&p), "libp2p advertises {p}: {protos:?}");
    }
    assert!(
        info.listen_addrs.contains(&mw_addr(lp_listen)),
        "{:?}",
        info.listen_addrs
    );
    // libp2p observed us at our listening socket (QUIC dials reuse it).
    assert_eq!(info.observed_addr, *mw_listen);
    // ... and that observation became an external address candidate of the swarm.
    assert_eq!(seen.mw_candidate.as_ref(), Some(mw_listen));

    // What libp2p learnt about meshwire.
    let info = seen.lp_info.as_ref().unwrap();
    assert_eq!(info.public_key.to_peer_id(), lp_peer(&mw.local_peer_id()));
    assert!(
        info.agent_version.starts_with("meshwire/"),
        "{}",
        info.agent_version
    );
    assert_eq!(info.protocol_version, MW_PROTOCOL_VERSION);
    let protos: Vec<String> = info.protocols.iter().map(|p| p.to_string()).collect();
    for p in ["/ipfs/ping/1.0.0", "/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0"] {
        assert!(
            protos.iter().any(|x| x == p),
            "meshwire advertises {p}: {protos:?}"
        );
    }
    let listen: Vec<String> = info.listen_addrs.iter().map(|a| a.to_string()).collect();
    assert!(listen.contains(&mw_listen.to_string()), "{listen:?}");
    // meshwire told libp2p where it saw it: the libp2p node's listening socket.
    assert_eq!(info.observed_addr, *lp_listen);
    assert_eq!(
        seen.mw_saw_lp_at.as_ref().map(|a| a.to_string()),
        Some(lp_listen.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshwire_dials_libp2p_ping_and_identify() {
    let (mut mw, mw_listen) = meshwire_node().await;
    let (lp_id, lp_listen, _dial, mut lp_events, task) = libp2p_node().await;
    let lp_as_mw: PeerId = lp_id.to_string().parse().unwrap();
    mw.dial(with_peer_id(&mw_addr(&lp_listen), lp_as_mw))
        .expect("dial");
    let seen = exchange(&mut mw, &mut lp_events, lp_id).await;
    check(&seen, &mw, &mw_listen, lp_id, &lp_listen);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_dials_meshwire_ping_and_identify() {
    let (mut mw, mw_listen) = meshwire_node().await;
    let (lp_id, lp_listen, dial, mut lp_events, task) = libp2p_node().await;
    let target: libp2p::Multiaddr = with_peer_id(&mw_listen, mw.local_peer_id())
        .to_string()
        .parse()
        .unwrap();
    dial.send(target).unwrap();
    let seen = exchange(&mut mw, &mut lp_events, lp_id).await;
    check(&seen, &mw, &mw_listen, lp_id, &lp_listen);
    task.abort();
}
