//! DCUtR (`/libp2p/dcutr`) between meshwire's `meshwire-holepunch` and rust-libp2p 0.57's
//! `libp2p-dcutr` 0.15, whole swarms on loopback QUIC: a relay (meshwire's or rust-libp2p's), a client reserving
//! on it (the *listener*: it accepts the relayed connection, so it is DCUtR's initiator) and
//! a client reaching it through the relay (the *dialer*: DCUtR's responder). Both clients
//! listen on loopback QUIC, so the hole punch dials go from their listening sockets; the
//! relayed connection must be upgraded to a direct one, reported by both implementations.
//!
//! | test | relay | initiator (listener) | responder (dialer) |
//! | --- | --- | --- | --- |
//! | `dcutr_meshwire_initiator_rust_libp2p_responder` | meshwire | meshwire | rust-libp2p |
//! | `dcutr_rust_libp2p_initiator_meshwire_responder` | meshwire | rust-libp2p | meshwire |
//! | `dcutr_meshwire_to_meshwire` | meshwire | meshwire | meshwire |
//! | `dcutr_through_rust_libp2p_relay_meshwire_initiator` | rust-libp2p | meshwire | rust-libp2p |
//! | `dcutr_through_rust_libp2p_relay_rust_libp2p_initiator` | rust-libp2p | rust-libp2p | meshwire |

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour as LpBehaviour, SwarmEvent as LpEvent};
use libp2p::{dcutr as lp_dcutr, identify as lp_identify, noise, relay as lp_relay, yamux};
use meshwire_core::{Keypair, PeerId};
use meshwire_holepunch as holepunch;
use meshwire_relay::{client, ServerConfig};
use meshwire_swarm::{DialOpts, NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr, Protocol, TransportExt};
use tokio::sync::mpsc;

const TEST_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Meshwire,
    RustLibp2p,
}

enum Cmd {
    Listen(Multiaddr),
    Dial(PeerId, Multiaddr),
}

#[derive(Debug)]
enum Obs {
    ListenAddr(Multiaddr),
    /// An external address candidate (rust-libp2p's dcutr sends only those).
    Candidate,
    Connected {
        peer: PeerId,
        relayed: bool,
    },
    /// The hole punching behaviour's verdict on `peer`.
    Upgrade {
        peer: PeerId,
        ok: bool,
        detail: String,
    },
}

struct Node {
    id: PeerId,
    cmd: mpsc::UnboundedSender<Cmd>,
    obs: mpsc::UnboundedReceiver<Obs>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Node {
    fn send(&self, cmd: Cmd) {
        self.cmd.send(cmd).expect("node task running");
    }

    async fn wait<T>(&mut self, mut pick: impl FnMut(&Obs) -> Option<T>) -> T {
        loop {
            let obs = self.obs.recv().await.expect("node task running");
            if let Some(t) = pick(&obs) {
                return t;
            }
        }
    }
}

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

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("address")
}

// ---------------------------------------------------------------------------------------------
// meshwire

#[derive(NetworkBehaviour)]
struct MwRelay {
    relay: meshwire_relay::Behaviour,
    identify: meshwire_identify::Behaviour,
}

#[derive(NetworkBehaviour)]
struct MwClient {
    relay_client: client::Behaviour,
    identify: meshwire_identify::Behaviour,
    holepunch: holepunch::Behaviour,
}

fn mw_identify(key: &Keypair) -> meshwire_identify::Behaviour {
    meshwire_identify::Behaviour::new(meshwire_identify::Config::new(
        "/meshwire-interop/1.0.0",
        key.public(),
    ))
}

fn drive_mw<B>(mut swarm: Swarm<B>, upgrade: fn(&B::Event) -> Option<Obs>) -> Node
where
    B: NetworkBehaviour + Send + 'static,
{
    let id = swarm.local_peer_id();
    let (cmd, mut cmd_rx) = mpsc::unbounded_channel();
    let (tx, obs) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                ev = swarm.next_event() => ev,
                Some(c) = cmd_rx.recv() => {
                    match c {
                        Cmd::Listen(a) => { swarm.listen_on(a).expect("listen"); }
                        Cmd::Dial(p, a) => { swarm.dial(DialOpts::peer(p).address(a)).expect("dial"); }
                    }
                    continue;
                }
            };
            let o = match ev {
                SwarmEvent::NewListenAddr { address, .. } => Some(Obs::ListenAddr(address)),
                SwarmEvent::ConnectionEstablished {
                    peer_id, endpoint, ..
                } => Some(Obs::Connected {
                    peer: peer_id,
                    relayed: endpoint.is_relayed(),
                }),
                SwarmEvent::Behaviour(ev) => upgrade(&ev),
                _ => None,
            };
            if let Some(o) = o {
                if tx.send(o).is_err() {
                    break;
                }
            }
        }
    });
    Node { id, cmd, obs, task }
}

async fn mw_relay() -> (Node, Multiaddr) {
    let key = Keypair::generate();
    let behaviour = MwRelay {
        relay: meshwire_relay::Behaviour::new(key.clone(), ServerConfig::default())
            .expect("relay config"),
        identify: mw_identify(&key),
    };
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    swarm.listen_on(loopback()).expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break with_peer_id(&address, swarm.local_peer_id());
        }
    };
    (drive_mw(swarm, mw_relay_event), addr)
}

fn mw_upgrade(ev: &MwClientEvent) -> Option<Obs> {
    match ev {
        MwClientEvent::Holepunch(holepunch::Event::DirectConnectionUpgradeSucceeded {
            peer,
            attempts,
            role,
            ..
        }) => Some(Obs::Upgrade {
            peer: *peer,
            ok: true,
            detail: format!("{role:?} after {attempts} attempt(s)"),
        }),
        MwClientEvent::Holepunch(holepunch::Event::DirectConnectionUpgradeFailed {
            peer,
            error,
            ..
        }) => Some(Obs::Upgrade {
            peer: *peer,
            ok: false,
            detail: error.to_string(),
        }),
        MwClientEvent::Holepunch(_) => None,
        MwClientEvent::RelayClient(e) => {
            println!("relay client: {e:?}");
            None
        }
        MwClientEvent::Identify(e) => {
            println!("identify: {e:?}");
            None
        }
    }
}

fn mw_relay_event(ev: &MwRelayEvent) -> Option<Obs> {
    match ev {
        MwRelayEvent::Relay(e) => println!("relay: {e:?}"),
        MwRelayEvent::Identify(e) => println!("relay identify: {e:?}"),
    }
    None
}

async fn mw_client() -> Node {
    let key = Keypair::generate();
    let (relay_transport, relay_client) = client::new(key.clone(), client::Config::default());
    let transport = QuicTransport::new(key.clone(), QuicConfig::default())
        .expect("quic")
        .or_transport(relay_transport);
    let behaviour = MwClient {
        relay_client,
        identify: mw_identify(&key),
        holepunch: holepunch::Behaviour::new(holepunch::Config::default()),
    };
    let mut node = drive_mw(
        Swarm::new(transport, behaviour, SwarmConfig::default()),
        mw_upgrade,
    );
    node.send(Cmd::Listen(loopback()));
    node.wait(|o| matches!(o, Obs::ListenAddr(_)).then_some(()))
        .await;
    node
}

// ---------------------------------------------------------------------------------------------
// rust-libp2p

#[derive(LpBehaviour)]
struct LpRelay {
    relay: lp_relay::Behaviour,
    identify: lp_identify::Behaviour,
}

/// A rust-libp2p relay; its listen address confirmed as external (a rust-libp2p relay offers
/// only confirmed addresses in reservations).
async fn lp_relay() -> (Node, Multiaddr) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| LpRelay {
            relay: lp_relay::Behaviour::new(key.public().to_peer_id(), Default::default()),
            identify: lp_identify::Behaviour::new(lp_identify::Config::new(
                "/libp2p-interop/1.0.0".into(),
                key.public(),
            )),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.listen_on(lp_addr(&loopback())).expect("listen");
    let addr = loop {
        if let LpEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    swarm.add_external_address(addr.clone());
    let id = mw_peer(swarm.local_peer_id());
    let (cmd, _cmd_rx) = mpsc::unbounded_channel();
    let (_tx, obs) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            if let LpEvent::Behaviour(LpRelayEvent::Relay(e)) = swarm.select_next_some().await {
                println!("rust-libp2p relay: {e:?}");
            }
        }
    });
    (
        Node { id, cmd, obs, task },
        with_peer_id(&mw_addr(&addr), id),
    )
}

#[derive(LpBehaviour)]
struct LpClient {
    relay_client: lp_relay::client::Behaviour,
    identify: lp_identify::Behaviour,
    dcutr: lp_dcutr::Behaviour,
}

async fn lp_client() -> Node {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .expect("relay client")
        .with_behaviour(|key, relay_client| LpClient {
            relay_client,
            identify: lp_identify::Behaviour::new(lp_identify::Config::new(
                "/libp2p-interop/1.0.0".into(),
                key.public(),
            )),
            dcutr: lp_dcutr::Behaviour::new(key.public().to_peer_id()),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.listen_on(lp_addr(&loopback())).expect("listen");
    let id = mw_peer(swarm.local_peer_id());
    let (cmd, mut cmd_rx) = mpsc::unbounded_channel();
    let (tx, obs) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                ev = swarm.select_next_some() => ev,
                Some(c) = cmd_rx.recv() => {
                    match c {
                        Cmd::Listen(a) => { swarm.listen_on(lp_addr(&a)).expect("listen"); }
                        Cmd::Dial(p, a) => { swarm.dial(lp_addr(&with_peer_id(&a, p))).expect("dial"); }
                    }
                    continue;
                }
            };
            let o = match ev {
                LpEvent::NewListenAddr { address, .. } => Some(Obs::ListenAddr(mw_addr(&address))),
                LpEvent::NewExternalAddrCandidate { .. } => Some(Obs::Candidate),
                LpEvent::ConnectionEstablished {
                    peer_id, endpoint, ..
                } => Some(Obs::Connected {
                    peer: mw_peer(&peer_id),
                    relayed: endpoint.is_relayed(),
                }),
                LpEvent::Behaviour(LpClientEvent::Dcutr(lp_dcutr::Event {
                    remote_peer_id,
                    result,
                })) => Some(Obs::Upgrade {
                    peer: mw_peer(&remote_peer_id),
                    ok: result.is_ok(),
                    detail: format!("{result:?}"),
                }),
                _ => None,
            };
            if let Some(o) = o {
                if tx.send(o).is_err() {
                    break;
                }
            }
        }
    });
    let mut node = Node { id, cmd, obs, task };
    node.wait(|o| matches!(o, Obs::ListenAddr(_)).then_some(()))
        .await;
    node
}

async fn client(kind: Kind) -> Node {
    match kind {
        Kind::Meshwire => mw_client().await,
        Kind::RustLibp2p => lp_client().await,
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario

#[derive(Default, Debug)]
struct Seen {
    relayed: bool,
    direct: bool,
    upgrade: Option<(bool, String)>,
}

impl Seen {
    fn take(&mut self, obs: Obs, other: PeerId) {
        match obs {
            Obs::Connected { peer, relayed } if peer == other => {
                if relayed {
                    self.relayed = true;
                } else {
                    self.direct = true;
                }
            }
            Obs::Upgrade { peer, ok, detail } if peer == other => {
                self.upgrade.get_or_insert((ok, detail));
            }
            _ => {}
        }
    }

    fn done(&self) -> bool {
        self.direct && self.upgrade.is_some()
    }
}

/// `listener` reserves on a meshwire relay, `dialer` reaches it through the relay; DCUtR
/// must upgrade the relayed connection: both see a direct connection and report success.
async fn upgrade(relay_kind: Kind, listener_kind: Kind, dialer_kind: Kind) {
    let case =
        format!("relay {relay_kind:?}, initiator {listener_kind:?}, responder {dialer_kind:?}");
    let (_relay, relay_addr) = match relay_kind {
        Kind::Meshwire => mw_relay().await,
        Kind::RustLibp2p => lp_relay().await,
    };
    let relay_id = meshwire_transport::split_peer_id(&relay_addr, None)
        .expect("relay address")
        .1
        .expect("relay id");

    let mut listener = client(listener_kind).await;
    let listener_id = listener.id;
    listener.send(Cmd::Listen(relay_addr.clone().with(Protocol::P2pCircuit)));
    // rust-libp2p's dcutr announces only external address candidates (identify's): wait
    // for one too, in whatever order the two come.
    let (mut circuit_up, mut candidate) = (false, listener_kind == Kind::Meshwire);
    while !(circuit_up && candidate) {
        match listener
            .wait(|o| match o {
                Obs::ListenAddr(a) if a.iter().any(|p| p == Protocol::P2pCircuit) => Some(true),
                Obs::Candidate => Some(false),
                _ => None,
            })
            .await
        {
            true => circuit_up = true,
            false => candidate = true,
        }
    }

    let mut dialer = client(dialer_kind).await;
    let dialer_id = dialer.id;
    dialer.send(Cmd::Dial(relay_id, relay_addr.clone()));
    let (mut connected, mut candidate) = (false, dialer_kind == Kind::Meshwire);
    while !(connected && candidate) {
        match dialer
            .wait(|o| match o {
                Obs::Connected { peer, .. } if *peer == relay_id => Some(true),
                Obs::Candidate => Some(false),
                _ => None,
            })
            .await
        {
            true => connected = true,
            false => candidate = true,
        }
    }
    let circuit = relay_addr.with(Protocol::P2pCircuit);
    dialer.send(Cmd::Dial(listener_id, circuit));

    let (mut at_listener, mut at_dialer) = (Seen::default(), Seen::default());
    while !(at_listener.done() && at_dialer.done()) {
        tokio::select! {
            Some(o) = listener.obs.recv() => {
                println!("[{case}] listener: {o:?}");
                at_listener.take(o, dialer_id)
            }
            Some(o) = dialer.obs.recv() => {
                println!("[{case}] dialer: {o:?}");
                at_dialer.take(o, listener_id)
            }
        }
    }
    println!("[{case}] listener: {at_listener:?}");
    println!("[{case}] dialer: {at_dialer:?}");
    for (who, seen) in [("listener", &at_listener), ("dialer", &at_dialer)] {
        assert!(seen.relayed, "[{case}] {who}: relayed first");
        assert!(seen.direct, "[{case}] {who}: a direct connection");
        let (ok, detail) = seen.upgrade.clone().unwrap_or_default();
        assert!(ok, "[{case}] {who}: upgrade reported as success: {detail}");
    }
}

async fn run(relay: Kind, listener: Kind, dialer: Kind) {
    tokio::time::timeout(TEST_TIMEOUT, upgrade(relay, listener, dialer))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcutr_meshwire_initiator_rust_libp2p_responder() {
    run(Kind::Meshwire, Kind::Meshwire, Kind::RustLibp2p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcutr_rust_libp2p_initiator_meshwire_responder() {
    run(Kind::Meshwire, Kind::RustLibp2p, Kind::Meshwire).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcutr_meshwire_to_meshwire() {
    run(Kind::Meshwire, Kind::Meshwire, Kind::Meshwire).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcutr_through_rust_libp2p_relay_meshwire_initiator() {
    run(Kind::RustLibp2p, Kind::Meshwire, Kind::RustLibp2p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcutr_through_rust_libp2p_relay_rust_libp2p_initiator() {
    run(Kind::RustLibp2p, Kind::RustLibp2p, Kind::Meshwire).await;
}
