//! Circuit relay v2 end to end between meshwire's relay behaviours and rust-libp2p 0.57's
//! (`libp2p-relay` 0.22), whole swarms on loopback QUIC. Every test runs a relay, a client
//! listening through it (a reservation) and a client dialing that one through it; the relayed
//! connection (Noise + Yamux over the circuit) must carry ping and identify both ways.
//!
//! | test | relay | listener | dialer |
//! | --- | --- | --- | --- |
//! | `relay_meshwire_client_reserves_on_rust_libp2p_relay` | rust-libp2p | meshwire | rust-libp2p |
//! | `relay_rust_libp2p_client_reserves_on_meshwire_relay` | meshwire | rust-libp2p | meshwire |
//! | `relay_three_meshwire_nodes` | meshwire | meshwire | meshwire |
//! | `relay_rust_libp2p_dials_meshwire_through_meshwire_relay` | meshwire | meshwire | rust-libp2p |
//! | `relay_meshwire_dials_rust_libp2p_through_rust_libp2p_relay` | rust-libp2p | rust-libp2p | meshwire |
//! | `relay_meshwire_clients_through_rust_libp2p_relay` | rust-libp2p | meshwire | meshwire |
//! | `relay_rust_libp2p_clients_through_meshwire_relay` | meshwire | rust-libp2p | rust-libp2p |
//!
//! Each side's swarm runs in its own task that reports what the test checks as [`Obs`]
//! (connections with whether they are relayed and through which relay, pings and identify
//! answers on relayed connections, reservations, circuits the relay accepted).

use std::collections::HashSet;
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour as LpBehaviour, SwarmEvent as LpEvent};
use libp2p::{identify as lp_identify, noise, ping as lp_ping, relay as lp_relay, yamux};
use meshwire_core::{Keypair, PeerId};
use meshwire_relay::{client, ServerConfig, ServerEvent};
use meshwire_swarm::{DialOpts, NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr, Protocol, TransportExt};
use tokio::sync::mpsc;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const PING_INTERVAL: Duration = Duration::from_millis(200);
const LP_AGENT: &str = "rust-libp2p-relay-interop/0.57";
const LP_PROTOCOL_VERSION: &str = "/libp2p-interop/1.0.0";
const MW_PROTOCOL_VERSION: &str = "/meshwire-interop/1.0.0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Meshwire,
    RustLibp2p,
}

/// What the test asks a node's task to do.
enum Cmd {
    Listen(Multiaddr),
    Dial(PeerId, Multiaddr),
}

/// What a node's task reports.
#[derive(Debug)]
enum Obs {
    ListenAddr(Multiaddr),
    /// Our reservation on `relay` was accepted.
    Reserved {
        relay: PeerId,
    },
    Connected {
        peer: PeerId,
        relayed: bool,
        relay: Option<PeerId>,
        dialer: bool,
    },
    /// A ping answered over a relayed connection.
    RelayedPing {
        peer: PeerId,
        rtt: Duration,
    },
    /// An identify answer over a relayed connection.
    RelayedIdentify {
        peer: PeerId,
        agent: String,
        protocol_version: String,
        protocols: Vec<String>,
    },
    /// The relay accepted a circuit from `src` to `dst`.
    CircuitAccepted {
        src: PeerId,
        dst: PeerId,
    },
    Failed(String),
}

struct Node {
    kind: Kind,
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

    /// The next report that `pick` maps to `Some`; a failure report panics.
    async fn wait<T>(&mut self, what: &str, mut pick: impl FnMut(&Obs) -> Option<T>) -> T {
        loop {
            let obs = self.obs.recv().await.expect("node task running");
            if let Obs::Failed(e) = &obs {
                panic!("{:?} node failed while waiting for {what}: {e}", self.kind);
            }
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
// meshwire nodes

#[derive(NetworkBehaviour)]
struct MwRelay {
    relay: meshwire_relay::Behaviour,
    ping: meshwire_ping::Behaviour,
    identify: meshwire_identify::Behaviour,
}

#[derive(NetworkBehaviour)]
struct MwClient {
    relay_client: client::Behaviour,
    ping: meshwire_ping::Behaviour,
    identify: meshwire_identify::Behaviour,
}

fn mw_ping() -> meshwire_ping::Behaviour {
    meshwire_ping::Behaviour::new(meshwire_ping::Config::new().with_interval(PING_INTERVAL))
}

fn mw_identify(key: &Keypair) -> meshwire_identify::Behaviour {
    meshwire_identify::Behaviour::new(meshwire_identify::Config::new(
        MW_PROTOCOL_VERSION,
        key.public(),
    ))
}

/// What the meshwire driver needs to know about a node's behaviour events.
trait MwEvents {
    fn ping(&self) -> Option<&meshwire_ping::Event>;
    fn identify(&self) -> Option<&meshwire_identify::Event>;
    fn obs(&self) -> Option<Obs>;
}

impl MwEvents for MwRelayEvent {
    fn ping(&self) -> Option<&meshwire_ping::Event> {
        match self {
            MwRelayEvent::Ping(e) => Some(e),
            _ => None,
        }
    }
    fn identify(&self) -> Option<&meshwire_identify::Event> {
        match self {
            MwRelayEvent::Identify(e) => Some(e),
            _ => None,
        }
    }
    fn obs(&self) -> Option<Obs> {
        match self {
            MwRelayEvent::Relay(ServerEvent::CircuitAccepted { src, dst, .. }) => {
                Some(Obs::CircuitAccepted {
                    src: *src,
                    dst: *dst,
                })
            }
            _ => None,
        }
    }
}

impl MwEvents for MwClientEvent {
    fn ping(&self) -> Option<&meshwire_ping::Event> {
        match self {
            MwClientEvent::Ping(e) => Some(e),
            _ => None,
        }
    }
    fn identify(&self) -> Option<&meshwire_identify::Event> {
        match self {
            MwClientEvent::Identify(e) => Some(e),
            _ => None,
        }
    }
    fn obs(&self) -> Option<Obs> {
        match self {
            MwClientEvent::RelayClient(client::Event::ReservationAccepted { relay, .. }) => {
                Some(Obs::Reserved { relay: *relay })
            }
            MwClientEvent::RelayClient(client::Event::ReservationFailed { relay, error }) => {
                Some(Obs::Failed(format!("reservation on {relay}: {error}")))
            }
            MwClientEvent::RelayClient(client::Event::OutboundCircuitFailed {
                dst, error, ..
            }) => Some(Obs::Failed(format!("circuit to {dst}: {error}"))),
            _ => None,
        }
    }
}

/// Runs a meshwire swarm in a task: commands in, reports out.
fn drive_mw<B>(mut swarm: Swarm<B>, kind_name: &'static str) -> Node
where
    B: NetworkBehaviour + Send + 'static,
    B::Event: MwEvents + Send + Debug,
{
    let id = swarm.local_peer_id();
    let (cmd, mut cmd_rx) = mpsc::unbounded_channel();
    let (obs_tx, obs) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut relayed = HashSet::new();
        loop {
            let ev = tokio::select! {
                ev = swarm.next_event() => ev,
                Some(c) = cmd_rx.recv() => {
                    let result = match c {
                        Cmd::Listen(addr) => swarm.listen_on(addr).map(|_| ()).map_err(|e| e.to_string()),
                        Cmd::Dial(peer, addr) => swarm
                            .dial(DialOpts::peer(peer).address(addr))
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                    };
                    if let Err(e) = result {
                        let _ = obs_tx.send(Obs::Failed(e));
                    }
                    continue;
                }
            };
            let obs = match ev {
                SwarmEvent::NewListenAddr { address, .. } => Some(Obs::ListenAddr(address)),
                SwarmEvent::ConnectionEstablished {
                    peer_id,
                    connection_id,
                    endpoint,
                    ..
                } => {
                    if endpoint.is_relayed() {
                        relayed.insert(connection_id);
                    }
                    Some(Obs::Connected {
                        peer: peer_id,
                        relayed: endpoint.is_relayed(),
                        relay: endpoint.relay_peer_id(),
                        dialer: endpoint.is_dialer(),
                    })
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    Some(Obs::Failed(format!("{kind_name} dial: {error}")))
                }
                SwarmEvent::ListenerClosed {
                    reason: Err(e),
                    addresses,
                    ..
                } => Some(Obs::Failed(format!(
                    "{kind_name} listener {addresses:?} closed: {e}"
                ))),
                SwarmEvent::Behaviour(ev) => {
                    if let Some(p) = ev.ping() {
                        match &p.result {
                            Ok(rtt) if relayed.contains(&p.connection) => Some(Obs::RelayedPing {
                                peer: p.peer,
                                rtt: *rtt,
                            }),
                            _ => None,
                        }
                    } else if let Some(i) = ev.identify() {
                        match i {
                            meshwire_identify::Event::Received {
                                peer,
                                connection,
                                info,
                            } if relayed.contains(connection) => Some(Obs::RelayedIdentify {
                                peer: *peer,
                                agent: info.agent_version.clone(),
                                protocol_version: info.protocol_version.clone(),
                                protocols: info.protocols.iter().map(|p| p.to_string()).collect(),
                            }),
                            meshwire_identify::Event::Error {
                                peer,
                                connection,
                                error,
                            } if relayed.contains(connection) => Some(Obs::Failed(format!(
                                "{kind_name} identify with {peer}: {error}"
                            ))),
                            _ => None,
                        }
                    } else {
                        ev.obs()
                    }
                }
                _ => None,
            };
            if let Some(o) = obs {
                if obs_tx.send(o).is_err() {
                    break;
                }
            }
        }
    });
    Node {
        kind: Kind::Meshwire,
        id,
        cmd,
        obs,
        task,
    }
}

async fn mw_listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm.listen_on(loopback()).expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            return with_peer_id(&address, swarm.local_peer_id());
        }
    }
}

/// A meshwire relay (server + ping + identify); returns it and its address with `/p2p/..`.
async fn mw_relay(config: ServerConfig) -> (Node, Multiaddr) {
    let key = Keypair::generate();
    let behaviour = MwRelay {
        relay: meshwire_relay::Behaviour::new(key.clone(), config).expect("relay config"),
        ping: mw_ping(),
        identify: mw_identify(&key),
    };
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    let addr = mw_listen(&mut swarm).await;
    (drive_mw(swarm, "meshwire relay"), addr)
}

/// A meshwire client: QUIC or'ed with the relay transport, relay client + ping + identify.
fn mw_client() -> Node {
    let key = Keypair::generate();
    let (relay_transport, relay_client) = client::new(key.clone(), client::Config::default());
    let transport = QuicTransport::new(key.clone(), QuicConfig::default())
        .expect("quic")
        .or_transport(relay_transport);
    let behaviour = MwClient {
        relay_client,
        ping: mw_ping(),
        identify: mw_identify(&key),
    };
    drive_mw(
        Swarm::new(transport, behaviour, SwarmConfig::default()),
        "meshwire client",
    )
}

// ---------------------------------------------------------------------------------------------
// rust-libp2p nodes

#[derive(LpBehaviour)]
struct LpRelay {
    relay: lp_relay::Behaviour,
    ping: lp_ping::Behaviour,
    identify: lp_identify::Behaviour,
}

#[derive(LpBehaviour)]
struct LpClient {
    relay_client: lp_relay::client::Behaviour,
    ping: lp_ping::Behaviour,
    identify: lp_identify::Behaviour,
}

fn lp_ping() -> lp_ping::Behaviour {
    lp_ping::Behaviour::new(lp_ping::Config::new().with_interval(PING_INTERVAL))
}

fn lp_identify(key: &libp2p::identity::Keypair) -> lp_identify::Behaviour {
    lp_identify::Behaviour::new(
        lp_identify::Config::new(LP_PROTOCOL_VERSION.into(), key.public())
            .with_agent_version(LP_AGENT.into()),
    )
}

trait LpEvents {
    fn ping(&self) -> Option<&lp_ping::Event>;
    fn identify(&self) -> Option<&lp_identify::Event>;
    fn obs(&self) -> Option<Obs>;
}

impl LpEvents for LpRelayEvent {
    fn ping(&self) -> Option<&lp_ping::Event> {
        match self {
            LpRelayEvent::Ping(e) => Some(e),
            _ => None,
        }
    }
    fn identify(&self) -> Option<&lp_identify::Event> {
        match self {
            LpRelayEvent::Identify(e) => Some(e),
            _ => None,
        }
    }
    fn obs(&self) -> Option<Obs> {
        match self {
            LpRelayEvent::Relay(lp_relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            }) => Some(Obs::CircuitAccepted {
                src: mw_peer(src_peer_id),
                dst: mw_peer(dst_peer_id),
            }),
            _ => None,
        }
    }
}

impl LpEvents for LpClientEvent {
    fn ping(&self) -> Option<&lp_ping::Event> {
        match self {
            LpClientEvent::Ping(e) => Some(e),
            _ => None,
        }
    }
    fn identify(&self) -> Option<&lp_identify::Event> {
        match self {
            LpClientEvent::Identify(e) => Some(e),
            _ => None,
        }
    }
    fn obs(&self) -> Option<Obs> {
        match self {
            LpClientEvent::RelayClient(lp_relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            }) => Some(Obs::Reserved {
                relay: mw_peer(relay_peer_id),
            }),
            _ => None,
        }
    }
}

/// Runs a rust-libp2p swarm in a task: commands in, reports out.
fn drive_lp<B>(mut swarm: libp2p::Swarm<B>, kind_name: &'static str) -> Node
where
    B: LpBehaviour + Send + 'static,
    B::ToSwarm: LpEvents + Send + Debug,
{
    let id = mw_peer(swarm.local_peer_id());
    let (cmd, mut cmd_rx) = mpsc::unbounded_channel();
    let (obs_tx, obs) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut relayed = HashSet::new();
        loop {
            let ev = tokio::select! {
                ev = swarm.select_next_some() => ev,
                Some(c) = cmd_rx.recv() => {
                    let result = match c {
                        Cmd::Listen(addr) => swarm.listen_on(lp_addr(&addr)).map(|_| ()).map_err(|e| e.to_string()),
                        Cmd::Dial(peer, addr) => swarm
                            .dial(lp_addr(&with_peer_id(&addr, peer)))
                            .map_err(|e| e.to_string()),
                    };
                    if let Err(e) = result {
                        let _ = obs_tx.send(Obs::Failed(e));
                    }
                    continue;
                }
            };
            let obs = match ev {
                LpEvent::NewListenAddr { address, .. } => Some(Obs::ListenAddr(mw_addr(&address))),
                LpEvent::ConnectionEstablished {
                    peer_id,
                    connection_id,
                    endpoint,
                    ..
                } => {
                    if endpoint.is_relayed() {
                        relayed.insert(connection_id);
                    }
                    // rust-libp2p puts the circuit address in `local_addr` on the listening
                    // side (`send_back_addr` is then `/p2p/<src>`).
                    let circuit = match &endpoint {
                        libp2p::core::ConnectedPoint::Dialer { address, .. } => address,
                        libp2p::core::ConnectedPoint::Listener { local_addr, .. } => local_addr,
                    };
                    let relay = meshwire_swarm::ConnectedPoint::Dialer {
                        address: mw_addr(circuit),
                    }
                    .relay_peer_id();
                    Some(Obs::Connected {
                        peer: mw_peer(&peer_id),
                        relayed: endpoint.is_relayed(),
                        relay,
                        dialer: endpoint.is_dialer(),
                    })
                }
                LpEvent::OutgoingConnectionError { error, .. } => {
                    Some(Obs::Failed(format!("{kind_name} dial: {error}")))
                }
                LpEvent::ListenerClosed {
                    reason: Err(e),
                    addresses,
                    ..
                } => Some(Obs::Failed(format!(
                    "{kind_name} listener {addresses:?} closed: {e}"
                ))),
                LpEvent::Behaviour(ev) => {
                    if let Some(p) = ev.ping() {
                        match &p.result {
                            Ok(rtt) if relayed.contains(&p.connection) => Some(Obs::RelayedPing {
                                peer: mw_peer(&p.peer),
                                rtt: *rtt,
                            }),
                            _ => None,
                        }
                    } else if let Some(i) = ev.identify() {
                        match i {
                            lp_identify::Event::Received {
                                peer_id,
                                connection_id,
                                info,
                            } if relayed.contains(connection_id) => Some(Obs::RelayedIdentify {
                                peer: mw_peer(peer_id),
                                agent: info.agent_version.clone(),
                                protocol_version: info.protocol_version.clone(),
                                protocols: info.protocols.iter().map(|p| p.to_string()).collect(),
                            }),
                            lp_identify::Event::Error {
                                peer_id,
                                connection_id,
                                error,
                            } if relayed.contains(connection_id) => Some(Obs::Failed(format!(
                                "{kind_name} identify with {peer_id}: {error}"
                            ))),
                            _ => None,
                        }
                    } else {
                        ev.obs()
                    }
                }
                _ => None,
            };
            if let Some(o) = obs {
                if obs_tx.send(o).is_err() {
                    break;
                }
            }
        }
    });
    Node {
        kind: Kind::RustLibp2p,
        id,
        cmd,
        obs,
        task,
    }
}

async fn lp_listen<B: LpBehaviour>(swarm: &mut libp2p::Swarm<B>) -> libp2p::Multiaddr {
    swarm.listen_on(lp_addr(&loopback())).expect("listen");
    loop {
        if let LpEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// A rust-libp2p relay (relay + ping + identify) with its default limits; its listen address
/// is confirmed as external, since a rust-libp2p relay offers only confirmed external
/// addresses in reservations (and rust-libp2p clients refuse a reservation without any).
async fn lp_relay() -> (Node, Multiaddr) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| LpRelay {
            relay: lp_relay::Behaviour::new(key.public().to_peer_id(), Default::default()),
            ping: lp_ping(),
            identify: lp_identify(key),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let addr = lp_listen(&mut swarm).await;
    swarm.add_external_address(addr.clone());
    let id = mw_peer(swarm.local_peer_id());
    (
        drive_lp(swarm, "rust-libp2p relay"),
        with_peer_id(&mw_addr(&addr), id),
    )
}

/// A rust-libp2p client: QUIC, the relay transport with Noise + Yamux, relay client + ping +
/// identify, listening on loopback QUIC.
async fn lp_client() -> Node {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .expect("relay client")
        .with_behaviour(|key, relay_client| LpClient {
            relay_client,
            ping: lp_ping(),
            identify: lp_identify(key),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    lp_listen(&mut swarm).await;
    drive_lp(swarm, "rust-libp2p client")
}

async fn client(kind: Kind) -> Node {
    match kind {
        Kind::Meshwire => mw_client(),
        Kind::RustLibp2p => lp_client().await,
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario

/// What one end of the relayed connection saw of the other.
#[derive(Default, Debug)]
struct Seen {
    connected: Option<(bool, Option<PeerId>, bool)>,
    rtt: Option<Duration>,
    identify: Option<(String, String, Vec<String>)>,
}

impl Seen {
    fn done(&self) -> bool {
        self.connected.is_some() && self.rtt.is_some() && self.identify.is_some()
    }

    fn take(&mut self, obs: Obs, other: PeerId) {
        match obs {
            Obs::Connected {
                peer,
                relayed,
                relay,
                dialer,
            } if peer == other => self.connected = Some((relayed, relay, dialer)),
            Obs::RelayedPing { peer, rtt } if peer == other => {
                self.rtt.get_or_insert(rtt);
            }
            Obs::RelayedIdentify {
                peer,
                agent,
                protocol_version,
                protocols,
            } if peer == other => self.identify = Some((agent, protocol_version, protocols)),
            Obs::Failed(e) => panic!("failed: {e}"),
            _ => {}
        }
    }

    /// Checks what this end saw of `other` (of kind `kind`) through `relay`.
    fn check(&self, me: &str, kind: Kind, relay: PeerId, dialer: bool) {
        let (relayed, via, is_dialer) = self.connected.expect("connected");
        assert!(relayed, "{me}: the connection is relayed");
        assert_eq!(via, Some(relay), "{me}: through the relay");
        assert_eq!(is_dialer, dialer, "{me}: direction");
        let (agent, version, protocols) = self.identify.clone().expect("identified");
        match kind {
            Kind::Meshwire => {
                assert!(agent.starts_with("meshwire/"), "{me}: agent {agent}");
                assert_eq!(version, MW_PROTOCOL_VERSION);
            }
            Kind::RustLibp2p => {
                assert_eq!(agent, LP_AGENT, "{me}");
                assert_eq!(version, LP_PROTOCOL_VERSION);
            }
        }
        for p in ["/ipfs/ping/1.0.0", "/ipfs/id/1.0.0"] {
            assert!(
                protocols.iter().any(|x| x == p),
                "{me}: the other end advertises {p}: {protocols:?}"
            );
        }
    }
}

/// A relay of kind `relay_kind`, a `listener` reserving on it and a `dialer` reaching the
/// listener through it: both ends see a relayed connection through the relay, ping each
/// other over it and identify each other over it; the relay reports the circuit.
async fn relayed_exchange(relay_kind: Kind, listener_kind: Kind, dialer_kind: Kind) {
    let case = format!("relay {relay_kind:?}, listener {listener_kind:?}, dialer {dialer_kind:?}");
    let (mut relay, relay_addr) = match relay_kind {
        Kind::Meshwire => mw_relay(ServerConfig::default()).await,
        Kind::RustLibp2p => lp_relay().await,
    };
    let relay_id = relay.id;
    println!("[{case}] relay {relay_id} at {relay_addr}");

    // The listener reserves a slot and learns its relayed address.
    let mut listener = client(listener_kind).await;
    let listener_id = listener.id;
    let circuit = relay_addr.clone().with(Protocol::P2pCircuit);
    listener.send(Cmd::Listen(circuit.clone()));
    // Both come, in an order that differs between implementations.
    let (mut reserved, mut relayed_addr) = (false, None);
    while !reserved || relayed_addr.is_none() {
        match listener
            .wait("the reservation and the relayed address", |o| match o {
                Obs::Reserved { relay } if *relay == relay_id => Some(None),
                Obs::ListenAddr(a) if a.iter().any(|p| p == Protocol::P2pCircuit) => {
                    Some(Some(a.clone()))
                }
                _ => None,
            })
            .await
        {
            None => reserved = true,
            Some(a) => relayed_addr = Some(a),
        }
    }
    let relayed_addr = relayed_addr.unwrap_or_else(Multiaddr::empty);
    // meshwire reports `<relay>/p2p-circuit`, rust-libp2p appends its own `/p2p/<id>`.
    assert!(
        relayed_addr == circuit || relayed_addr == with_peer_id(&circuit, listener_id),
        "[{case}] the relayed listen address {relayed_addr}"
    );
    println!("[{case}] listener {listener_id} reachable at {relayed_addr}");

    // The dialer reaches it through the relay (a rust-libp2p dialer once connected to the
    // relay: its relay transport needs that connection).
    let mut dialer = client(dialer_kind).await;
    let dialer_id = dialer.id;
    if dialer_kind == Kind::RustLibp2p {
        dialer.send(Cmd::Dial(relay_id, relay_addr.clone()));
        dialer
            .wait("the connection to the relay", |o| match o {
                Obs::Connected { peer, .. } if *peer == relay_id => Some(()),
                _ => None,
            })
            .await;
    }
    dialer.send(Cmd::Dial(listener_id, relayed_addr.clone()));

    let (mut at_dialer, mut at_listener) = (Seen::default(), Seen::default());
    let mut circuit_seen = false;
    while !(at_dialer.done() && at_listener.done() && circuit_seen) {
        tokio::select! {
            Some(o) = dialer.obs.recv() => at_dialer.take(o, listener_id),
            Some(o) = listener.obs.recv() => at_listener.take(o, dialer_id),
            Some(o) = relay.obs.recv() => match o {
                Obs::CircuitAccepted { src, dst } => {
                    assert_eq!((src, dst), (dialer_id, listener_id), "[{case}] the circuit");
                    circuit_seen = true;
                }
                Obs::Failed(e) => panic!("[{case}] relay: {e}"),
                _ => {}
            },
        }
    }
    at_dialer.check(&format!("[{case}] dialer"), listener_kind, relay_id, true);
    at_listener.check(&format!("[{case}] listener"), dialer_kind, relay_id, false);
    let (d_rtt, l_rtt) = (
        at_dialer.rtt.unwrap_or_default(),
        at_listener.rtt.unwrap_or_default(),
    );
    assert!(d_rtt < Duration::from_secs(5) && l_rtt < Duration::from_secs(5));
    println!(
        "[{case}] relayed ping: dialer {dialer_id} -> listener {listener_id} rtt {d_rtt:?}, \
         listener -> dialer rtt {l_rtt:?}"
    );
    println!(
        "[{case}] identify: dialer saw agent {:?}, listener saw agent {:?}",
        at_dialer.identify.as_ref().map(|i| &i.0),
        at_listener.identify.as_ref().map(|i| &i.0)
    );
}

async fn run(relay: Kind, listener: Kind, dialer: Kind) {
    tokio::time::timeout(TEST_TIMEOUT, relayed_exchange(relay, listener, dialer))
        .await
        .expect("test timed out");
}

use Kind::{Meshwire as MW, RustLibp2p as LP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_meshwire_client_reserves_on_rust_libp2p_relay() {
    run(LP, MW, LP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_rust_libp2p_client_reserves_on_meshwire_relay() {
    run(MW, LP, MW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_three_meshwire_nodes() {
    run(MW, MW, MW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_rust_libp2p_dials_meshwire_through_meshwire_relay() {
    run(MW, MW, LP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_meshwire_dials_rust_libp2p_through_rust_libp2p_relay() {
    run(LP, LP, MW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_meshwire_clients_through_rust_libp2p_relay() {
    run(LP, MW, MW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_rust_libp2p_clients_through_meshwire_relay() {
    run(MW, LP, LP).await;
}
