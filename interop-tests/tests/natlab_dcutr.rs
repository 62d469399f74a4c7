//! Hole punching in the NAT lab (`interop_tests::natlab`):
//!
//! - `natlab_dcutr_port_restricted_pair`: two meshwire peers, each behind its own
//!   port-restricted cone NAT (Linux `masquerade`, routers dropping unsolicited inbound), meet
//!   through a meshwire relay on the public host (198.51.100.10) and DCUtR upgrades their
//!   relayed connection to a direct QUIC connection between the NATs' public addresses.
//! - `natlab_connector_matrix` (and `_with_delay_and_loss`: 50 ms each way and 5 % of UDP
//!   dropped on every access link):
//!   every pair of the five NAT kinds, `MESHWIRE_MATRIX_ATTEMPTS` attempts each (default
//!   20; each side opens half of them), through `holepunch::Connector`: DCUtR, DCUtR with
//!   port prediction, the birthday spray or skip, chosen from both NAT profiles. Prints the
//!   success rate and median time to the direct connection per pair and asserts the
//!   targets ([`target`]): 100 % for DCUtR pairs and port-restricted ↔ sequential, ≥ 50 %
//!   within 10 s for port-restricted ↔ random (the spray), symmetric ↔ symmetric skipped.
//! - `natlab_connector_spray_cancel`: a running spray cancelled on both sides ends at once.
//!
//! Each node is a whole meshwire swarm (relay client, identify, holepunch or the connector) on its own thread
//! and tokio runtime inside its host's namespace, listening on its private address, port
//! 4001. Needs root, iproute2 and nftables; skipped with the reason printed otherwise, a
//! failure under `MESHWIRE_REQUIRE_NETNS=1`. Run: `cargo test -p interop-tests --test
//! natlab_dcutr -- --nocapture`.

use std::net::Ipv4Addr;
use std::time::Duration;

use interop_tests::natlab::{self, Lab, NatKind, PUBLIC_IP};
use meshwire_core::{Keypair, PeerId};
use meshwire_holepunch as holepunch;
use meshwire_nat::{Filtering, Mapping, NatProfile, PortAllocation};
use meshwire_relay::{client, ServerConfig};
use meshwire_swarm::{DialOpts, NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr, Protocol, TransportExt};
use tokio::sync::mpsc;

const TEST_TIMEOUT: Duration = Duration::from_secs(40);
const PORT: u16 = 4001;

enum Cmd {
    Listen(Multiaddr),
    Dial(PeerId, Multiaddr),
    /// Cancel the hole punch with the peer (the node's `cancel` function).
    Cancel(PeerId),
}

#[derive(Debug)]
enum Obs {
    ListenAddr(Multiaddr),
    /// Identify answered by `peer`.
    Identified(PeerId),
    Connected {
        peer: PeerId,
        relayed: bool,
        remote: Multiaddr,
    },
    Upgrade {
        peer: PeerId,
        ok: bool,
        detail: String,
    },
    /// The connector's session with `peer` ended.
    Finished {
        peer: PeerId,
        outcome: holepunch::ConnectOutcome,
    },
}

#[derive(NetworkBehaviour)]
struct Relay {
    relay: meshwire_relay::Behaviour,
    identify: meshwire_identify::Behaviour,
}

#[derive(NetworkBehaviour)]
struct Peer {
    relay_client: client::Behaviour,
    identify: meshwire_identify::Behaviour,
    holepunch: holepunch::Behaviour,
}

fn identify(key: &Keypair) -> meshwire_identify::Behaviour {
    meshwire_identify::Behaviour::new(meshwire_identify::Config::new(
        "/meshwire-natlab/1.0.0",
        key.public(),
    ))
}

fn quic(ip: Ipv4Addr) -> Multiaddr {
    format!("/ip4/{ip}/udp/{PORT}/quic-v1")
        .parse()
        .expect("address")
}

struct Node {
    id: PeerId,
    cmd: mpsc::UnboundedSender<Cmd>,
    obs: mpsc::UnboundedReceiver<Obs>,
}

impl Node {
    fn send(&self, cmd: Cmd) {
        self.cmd.send(cmd).expect("node running");
    }

    async fn wait<T>(&mut self, what: &str, mut pick: impl FnMut(&Obs) -> Option<T>) -> T {
        loop {
            let obs = self
                .obs
                .recv()
                .await
                .unwrap_or_else(|| panic!("node stopped while waiting for {what}"));
            if let Some(t) = pick(&obs) {
                return t;
            }
        }
    }
}

/// Runs the swarm `make` builds on a thread inside `ns`; it stops when the [`Node`] is
/// dropped (its command channel closes).
fn spawn<B>(
    ns: &str,
    key: Keypair,
    make: impl FnOnce(Keypair) -> Swarm<B> + Send + 'static,
    observe: fn(&B::Event) -> Option<Obs>,
    cancel: fn(&mut B, &PeerId),
) -> Node
where
    B: NetworkBehaviour,
{
    let id = key.peer_id();
    let (cmd, mut cmd_rx) = mpsc::unbounded_channel();
    let (tx, obs) = mpsc::unbounded_channel();
    Lab::spawn_in(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut swarm = make(key);
            let mut peers = std::collections::HashSet::new();
            loop {
                let ev = tokio::select! {
                    ev = swarm.next_event() => ev,
                    c = cmd_rx.recv() => {
                        match c {
                            Some(Cmd::Listen(a)) => { swarm.listen_on(a).expect("listen"); }
                            Some(Cmd::Dial(p, a)) => { swarm.dial(DialOpts::peer(p).address(a)).expect("dial"); }
                            Some(Cmd::Cancel(p)) => cancel(swarm.behaviour_mut(), &p),
                            None => {
                                // Close our connections and let the close frames out, so
                                // the relay does not hold them until their idle timeout.
                                for p in peers.drain() {
                                    swarm.disconnect_peer_id(p);
                                }
                                let flush = async { loop { swarm.next_event().await; } };
                                let _ = tokio::time::timeout(Duration::from_millis(100), flush).await;
                                return;
                            }
                        }
                        continue;
                    }
                };
                let o = match ev {
                    SwarmEvent::NewListenAddr { address, .. } => Some(Obs::ListenAddr(address)),
                    SwarmEvent::ConnectionEstablished {
                        peer_id, endpoint, ..
                    } => Some(Obs::Connected {
                        peer: {
                            peers.insert(peer_id);
                            peer_id
                        },
                        relayed: endpoint.is_relayed(),
                        remote: endpoint.remote_addr().clone(),
                    }),
                    SwarmEvent::Behaviour(ev) => observe(&ev),
                    SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                        println!("dial of {peer_id:?} failed: {error}");
                        None
                    }
                    SwarmEvent::IncomingConnectionError { error, .. } => {
                        println!("incoming connection failed: {error}");
                        None
                    }
                    _ => None,
                };
                if let Some(o) = o {
                    let _ = tx.send(o);
                }
            }
        });
    })
    .expect("node thread");
    Node { id, cmd, obs }
}

fn relay_event(ev: &RelayEvent) -> Option<Obs> {
    match ev {
        RelayEvent::Relay(e) => println!("relay: {e:?}"),
        RelayEvent::Identify(e) => println!("relay identify: {e:?}"),
    }
    None
}

fn peer_event(ev: &PeerEvent) -> Option<Obs> {
    match ev {
        PeerEvent::Holepunch(holepunch::Event::DirectConnectionUpgradeSucceeded {
            peer,
            attempts,
            role,
            elapsed,
            ..
        }) => Some(Obs::Upgrade {
            peer: *peer,
            ok: true,
            detail: format!("{role:?}, {attempts} attempt(s), {elapsed:?}"),
        }),
        PeerEvent::Holepunch(holepunch::Event::DirectConnectionUpgradeFailed {
            peer,
            error,
            ..
        }) => Some(Obs::Upgrade {
            peer: *peer,
            ok: false,
            detail: error.to_string(),
        }),
        PeerEvent::Holepunch(e) => {
            println!("holepunch: {e:?}");
            None
        }
        PeerEvent::Identify(meshwire_identify::Event::Received { peer, .. }) => {
            Some(Obs::Identified(*peer))
        }
        PeerEvent::Identify(_) => None,
        PeerEvent::RelayClient(e) => {
            println!("relay client: {e:?}");
            None
        }
    }
}

fn spawn_relay(ns: &str) -> Node {
    spawn(
        ns,
        Keypair::generate(),
        |key| {
            let behaviour = Relay {
                relay: meshwire_relay::Behaviour::new(key.clone(), ServerConfig::default())
                    .expect("relay config"),
                identify: identify(&key),
            };
            let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
            Swarm::new(transport, behaviour, SwarmConfig::default())
        },
        relay_event,
        |_, _| {},
    )
}

fn spawn_peer(ns: &str, config: holepunch::Config) -> Node {
    spawn(
        ns,
        Keypair::generate(),
        move |key| {
            let (relay_transport, relay_client) =
                client::new(key.clone(), client::Config::default());
            let transport = QuicTransport::new(key.clone(), QuicConfig::default())
                .expect("quic")
                .or_transport(relay_transport);
            let behaviour = Peer {
                relay_client,
                identify: identify(&key),
                holepunch: holepunch::Behaviour::new(config),
            };
            Swarm::new(transport, behaviour, SwarmConfig::default())
        },
        peer_event,
        |b, p| {
            b.holepunch.cancel(p);
        },
    )
}

/// A peer on `ip` connected to the relay and identified by it (so it knows the address its
/// NAT gives it).
async fn join(
    ns: &str,
    ip: Ipv4Addr,
    relay: PeerId,
    relay_addr: &Multiaddr,
    config: holepunch::Config,
) -> Node {
    let mut node = spawn_peer(ns, config);
    node.send(Cmd::Listen(quic(ip)));
    node.wait("listening", |o| {
        matches!(o, Obs::ListenAddr(_)).then_some(())
    })
    .await;
    node.send(Cmd::Dial(relay, relay_addr.clone()));
    node.wait("identify from the relay", |o| match o {
        Obs::Identified(p) if *p == relay => Some(()),
        _ => None,
    })
    .await;
    node
}

#[derive(Default, Debug)]
struct Seen {
    relayed: bool,
    direct: Option<Multiaddr>,
    upgrade: Option<(bool, String)>,
}

impl Seen {
    fn take(&mut self, obs: Obs, other: PeerId) {
        match obs {
            Obs::Connected {
                peer,
                relayed,
                remote,
            } if peer == other => {
                if relayed {
                    self.relayed = true;
                } else {
                    self.direct.get_or_insert(remote);
                }
            }
            Obs::Upgrade { peer, ok, detail } if peer == other => {
                self.upgrade.get_or_insert((ok, detail));
            }
            _ => {}
        }
    }

    fn done(&self) -> bool {
        self.upgrade.as_ref().is_some_and(|(ok, _)| !ok)
            || (self.direct.is_some() && self.upgrade.is_some())
    }
}

/// The public relay; returns it (keep it alive) and its address.
async fn start_relay(lab: &Lab) -> (Node, Multiaddr) {
    let mut relay = spawn_relay(&lab.public_ns);
    relay.send(Cmd::Listen(quic(PUBLIC_IP)));
    relay
        .wait("the relay listening", |o| {
            matches!(o, Obs::ListenAddr(_)).then_some(())
        })
        .await;
    let addr = with_peer_id(&quic(PUBLIC_IP), relay.id);
    (relay, addr)
}

/// The peer of site `l` reserves on the relay (it accepts the relayed connection, so it is
/// DCUtR's initiator), the peer of site `d` reaches it through the relay; returns what each
/// saw of the other once the initiator's session ended (and, on success, both saw the
/// direct connection).
async fn run_pair(
    lab: &Lab,
    (l, d): (usize, usize),
    relay_addr: &Multiaddr,
    config: holepunch::Config,
) -> (Seen, Seen) {
    let relay_id = meshwire_transport::split_peer_id(relay_addr, None)
        .expect("relay address")
        .1
        .expect("relay id");
    let (site_l, site_d) = (&lab.sites[l], &lab.sites[d]);
    let circuit = relay_addr.clone().with(Protocol::P2pCircuit);
    let mut listener = join(
        &site_l.host_ns,
        site_l.host_ip,
        relay_id,
        relay_addr,
        config.clone(),
    )
    .await;
    listener.send(Cmd::Listen(circuit.clone()));
    listener
        .wait("the relayed listen address", |o| match o {
            Obs::ListenAddr(a) if a.iter().any(|p| p == Protocol::P2pCircuit) => Some(()),
            _ => None,
        })
        .await;
    let mut dialer = join(
        &site_d.host_ns,
        site_d.host_ip,
        relay_id,
        relay_addr,
        config,
    )
    .await;
    dialer.send(Cmd::Dial(listener.id, circuit));
    let (mut at_l, mut at_d) = (Seen::default(), Seen::default());
    while !(at_l.done() && at_d.done()) {
        tokio::select! {
            Some(o) = listener.obs.recv() => at_l.take(o, dialer.id),
            Some(o) = dialer.obs.recv() => at_d.take(o, listener.id),
        }
    }
    (at_l, at_d)
}

async fn port_restricted_pair(lab: &Lab) {
    let (_relay, relay_addr) = start_relay(lab).await;
    let (at_l, at_d) = run_pair(lab, (0, 1), &relay_addr, holepunch::Config::default()).await;
    let (site_l, site_d) = (&lab.sites[0], &lab.sites[1]);
    println!(
        "listener ({:?} NAT {}): {at_l:?}",
        site_l.kind, site_l.wan_ip
    );
    println!("dialer ({:?} NAT {}): {at_d:?}", site_d.kind, site_d.wan_ip);
    for (who, seen, other_wan) in [
        ("listener", &at_l, site_d.wan_ip),
        ("dialer", &at_d, site_l.wan_ip),
    ] {
        assert!(seen.relayed, "{who}: relayed first");
        let (ok, detail) = seen.upgrade.clone().unwrap_or_default();
        assert!(ok, "{who}: the upgrade succeeded: {detail}");
        let direct = seen.direct.clone().unwrap_or_else(Multiaddr::empty);
        assert_eq!(
            direct.iter().next(),
            Some(Protocol::Ip4(other_wan)),
            "{who}: the direct connection goes to the other NAT's public address ({direct})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natlab_dcutr_port_restricted_pair() {
    if let Some(reason) = natlab::missing_prerequisite() {
        if natlab::skip(&reason) {
            return;
        }
    }
    let lab = Lab::new(&[NatKind::PortRestrictedCone, NatKind::PortRestrictedCone]).expect("lab");
    tokio::time::timeout(TEST_TIMEOUT, port_restricted_pair(&lab))
        .await
        .expect("test timed out");
}

// ---------------------------------------------------------------------------------------
// The matrix: the connector (DCUtR, DCUtR + prediction, birthday spray or skip, chosen from
// both NAT profiles) on every pair of NAT kinds, many attempts each.

#[derive(NetworkBehaviour)]
struct ConnPeer {
    relay_client: client::Behaviour,
    identify: meshwire_identify::Behaviour,
    connector: holepunch::Connector,
}

/// What the lab's NAT kinds are, as `meshwire_nat`'s detector classifies them
/// (`natlab_natprobe` checks the detector against the same lab).
fn profile(kind: NatKind) -> NatProfile {
    let (mapping, filtering) = match kind {
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
    };
    NatProfile {
        mapping,
        filtering,
        port_preserving: !matches!(
            kind,
            NatKind::SymmetricSequential | NatKind::SymmetricRandom
        ),
    }
}

fn conn_event(ev: &ConnPeerEvent) -> Option<Obs> {
    match ev {
        ConnPeerEvent::Connector(holepunch::ConnectorEvent::Finished { peer, outcome }) => {
            Some(Obs::Finished {
                peer: *peer,
                outcome: outcome.clone(),
            })
        }
        ConnPeerEvent::Identify(meshwire_identify::Event::Received { peer, .. }) => {
            Some(Obs::Identified(*peer))
        }
        ConnPeerEvent::RelayClient(e) => {
            println!("relay client: {e:?}");
            None
        }
        _ => None,
    }
}

fn connector_config() -> holepunch::ConnectorConfig {
    holepunch::ConnectorConfig {
        // Short DCUtR attempts: a pair that cannot punch gives up after 3 × 3 s.
        holepunch: holepunch::Config {
            attempt_timeout: Duration::from_secs(3),
            responder_wait: Duration::from_secs(5),
            exchange_timeout: Duration::from_secs(5),
            ..holepunch::Config::default()
        },
        hello_timeout: Duration::from_secs(5),
        // The peers' addresses are not fed to the connector (`add_peer_address`); the lab
        // is a closed network, so HELLO's addresses are trusted here.
        trust_hello_addrs: true,
        ..holepunch::ConnectorConfig::default()
    }
}

fn spawn_conn_peer(ns: &str, kind: NatKind, config: holepunch::ConnectorConfig) -> Node {
    spawn(
        ns,
        Keypair::generate(),
        move |key| {
            let (relay_transport, relay_client) =
                client::new(key.clone(), client::Config::default());
            let quic = QuicTransport::new(key.clone(), QuicConfig::default()).expect("quic");
            let mut connector = holepunch::Connector::new(config, quic.sockets());
            connector.set_local_profile(Some(profile(kind)));
            let behaviour = ConnPeer {
                relay_client,
                identify: identify(&key),
                connector,
            };
            Swarm::new(
                quic.or_transport(relay_transport),
                behaviour,
                SwarmConfig::default(),
            )
        },
        conn_event,
        |b, p| {
            b.connector.cancel(p);
        },
    )
}

/// A relay for many attempts from few addresses: no rate limits, room for every circuit.
fn spawn_matrix_relay(ns: &str) -> Node {
    spawn(
        ns,
        Keypair::generate(),
        |key| {
            let config = ServerConfig {
                max_reservations_per_ip: None,
                reservation_rate_per_peer: None,
                reservation_rate_per_ip: None,
                circuit_rate_per_peer: None,
                circuit_rate_per_ip: None,
                max_circuits: 512,
                max_reservations: 512,
                ..ServerConfig::default()
            };
            let behaviour = Relay {
                relay: meshwire_relay::Behaviour::new(key.clone(), config).expect("relay config"),
                identify: identify(&key),
            };
            let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
            Swarm::new(transport, behaviour, SwarmConfig::default())
        },
        relay_event,
        |_, _| {},
    )
}

/// One attempt's result, on the side that accepted the relayed connection (the opener).
#[derive(Clone, Debug)]
enum Verdict {
    /// Direct, both sides saw the direct connection; time from the relayed connection.
    Direct(holepunch::Method, Duration),
    Failed(String),
    Skipped(holepunch::SkipReason),
    TimedOut,
}

/// A peer behind `site` on `port`, connected to the relay and identified by it.
async fn join_conn(
    site: &natlab::Site,
    port: u16,
    relay: PeerId,
    relay_addr: &Multiaddr,
    config: holepunch::ConnectorConfig,
) -> Node {
    let mut node = spawn_conn_peer(&site.host_ns, site.kind, config);
    let addr: Multiaddr = format!("/ip4/{}/udp/{port}/quic-v1", site.host_ip)
        .parse()
        .expect("address");
    node.send(Cmd::Listen(addr));
    node.wait("listening", |o| {
        matches!(o, Obs::ListenAddr(_)).then_some(())
    })
    .await;
    node.send(Cmd::Dial(relay, relay_addr.clone()));
    node.wait("identify from the relay", |o| match o {
        Obs::Identified(p) if *p == relay => Some(()),
        _ => None,
    })
    .await;
    node
}

/// The relayed connection between the peers of `sites` (the first reserves and accepts
/// it), both listening on `port` (a new port per attempt: no NAT state is shared with
/// earlier attempts); `None` when it took over 15 s (a reservation or circuit lost to
/// the lab's loss: retried, not counted as an attempt).
async fn setup(
    sites: (&natlab::Site, &natlab::Site),
    port: u16,
    relay_addr: &Multiaddr,
    config: &holepunch::ConnectorConfig,
) -> Option<(Node, Node)> {
    let relay_id = meshwire_transport::split_peer_id(relay_addr, None)
        .expect("relay address")
        .1
        .expect("relay id");
    let circuit = relay_addr.clone().with(Protocol::P2pCircuit);
    let stage = std::cell::Cell::new("the opener joining the relay");
    let run = async {
        let mut listener = join_conn(sites.0, port, relay_id, relay_addr, config.clone()).await;
        stage.set("the opener's reservation");
        listener.send(Cmd::Listen(circuit.clone()));
        listener
            .wait("the relayed listen address", |o| match o {
                Obs::ListenAddr(a) if a.iter().any(|p| p == Protocol::P2pCircuit) => Some(()),
                _ => None,
            })
            .await;
        stage.set("the answerer joining the relay");
        let dialer = join_conn(sites.1, port, relay_id, relay_addr, config.clone()).await;
        dialer.send(Cmd::Dial(listener.id, circuit));
        (listener, dialer)
    };
    let nodes = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .ok();
    if nodes.is_none() {
        println!(
            "setup of {:?} ↔ {:?} on port {port} timed out at {}",
            sites.0.kind,
            sites.1.kind,
            stage.get()
        );
    }
    nodes
}

/// One attempt, from the dial through the relay to the opener's verdict.
async fn attempt(mut listener: Node, mut dialer: Node) -> Verdict {
    let (l_id, d_id) = (listener.id, dialer.id);
    let run = async {
        let (mut outcome, mut l_direct, mut d_direct) = (None, false, false);
        loop {
            tokio::select! {
                Some(o) = listener.obs.recv() => match o {
                    Obs::Finished { peer, outcome: out } if peer == d_id => outcome = Some(out),
                    Obs::Connected { peer, relayed: false, .. } if peer == d_id => l_direct = true,
                    _ => {}
                },
                Some(o) = dialer.obs.recv() => match o {
                    Obs::Connected { peer, relayed: false, .. } if peer == l_id => d_direct = true,
                    _ => {}
                },
            }
            match &outcome {
                Some(holepunch::ConnectOutcome::Direct { method, elapsed })
                    if l_direct && d_direct =>
                {
                    return Verdict::Direct(*method, *elapsed)
                }
                Some(holepunch::ConnectOutcome::Failed { error, .. }) => {
                    return Verdict::Failed(error.to_string())
                }
                Some(holepunch::ConnectOutcome::Skipped(r)) => return Verdict::Skipped(*r),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or(Verdict::TimedOut)
}

/// What is done to the lab's links for one run of the matrix (`access_loss`: % of UDP
/// packets dropped on every access link; `access_delay`: added to every packet on every
/// access link, each way).
#[derive(Clone, Copy, Debug, Default)]
struct Impairment {
    access_loss: u8,
    access_delay: Duration,
}

impl Impairment {
    fn apply(&self, lab: &Lab) {
        lab.set_access_loss(self.access_loss).expect("loss");
        lab.set_delay(self.access_delay).expect("delay");
    }

    fn describe(&self, lab: &Lab) -> String {
        format!(
            "{} % UDP loss on each access link ({} packets dropped), {:?} delay each way on each access link ({} packets delayed)",
            self.access_loss,
            lab.access_loss_dropped().expect("loss counter"),
            self.access_delay,
            lab.delayed_packets()
        )
    }
}

/// Attempts per pair: `MESHWIRE_MATRIX_ATTEMPTS` (default 20).
fn attempts() -> u16 {
    std::env::var("MESHWIRE_MATRIX_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(20)
}

/// The targets: the method the connector picks for a pair and the share of attempts that
/// must end direct (within `within` for the spray).
fn target(a: NatKind, b: NatKind) -> (&'static str, f64) {
    match holepunch::choose(Some(&profile(a)), Some(&profile(b))) {
        holepunch::Method::Dcutr { prediction: false } => ("dcutr", 1.0),
        holepunch::Method::Dcutr { prediction: true } => ("dcutr_predict", 1.0),
        holepunch::Method::Spray { .. } => ("spray", 0.5),
        holepunch::Method::Skip(_) => ("skip", 0.0),
    }
}

/// The spray's direct connections count only within this time.
const SPRAY_WITHIN: Duration = Duration::from_secs(10);

struct Row {
    pair: (NatKind, NatKind),
    verdicts: Vec<Verdict>,
    /// Relayed connections that could not be set up (retried).
    setups_lost: u16,
}

impl Row {
    fn direct_times(&self, within: Option<Duration>) -> Vec<Duration> {
        let mut t: Vec<Duration> = self
            .verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Direct(_, d) if within.is_none_or(|w| *d <= w) => Some(*d),
                _ => None,
            })
            .collect();
        t.sort();
        t
    }
}

async fn run_matrix(impairment: Impairment) {
    let pairs: Vec<(NatKind, NatKind)> = NatKind::ALL
        .iter()
        .enumerate()
        .flat_map(|(i, a)| NatKind::ALL[i..].iter().map(move |b| (*a, *b)))
        .collect();
    let kinds: Vec<NatKind> = pairs.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let lab = Lab::new(&kinds).expect("lab");
    impairment.apply(&lab);
    let mut relay = spawn_matrix_relay(&lab.public_ns);
    relay.send(Cmd::Listen(quic(PUBLIC_IP)));
    relay
        .wait("the relay listening", |o| {
            matches!(o, Obs::ListenAddr(_)).then_some(())
        })
        .await;
    let relay_addr = with_peer_id(&quic(PUBLIC_IP), relay.id);
    let n = attempts();
    let started = std::time::Instant::now();
    // Every pair at once, its attempts one after the other.
    let rows: Vec<Row> = futures::future::join_all(pairs.iter().enumerate().map(|(p, pair)| {
        let (lab, relay_addr) = (&lab, &relay_addr);
        async move {
            let (mut verdicts, mut setups_lost, mut port) = (Vec::new(), 0, 5000);
            for i in 0..n {
                // Odd attempts swap the roles: each side opens the stream half the time.
                let (x, y) = (&lab.sites[2 * p], &lab.sites[2 * p + 1]);
                let sites = if i % 2 == 0 { (x, y) } else { (y, x) };
                let nodes = loop {
                    port += 1;
                    match setup(sites, port, relay_addr, &connector_config()).await {
                        Some(nodes) => break nodes,
                        None => setups_lost += 1,
                    }
                    assert!(setups_lost <= n, "{pair:?}: the relay cannot be reached");
                };
                verdicts.push(attempt(nodes.0, nodes.1).await);
            }
            Row {
                pair: *pair,
                verdicts,
                setups_lost,
            }
        }
    }))
    .await;
    println!(
        "\nThe connector in the NAT lab: {n} attempts per pair, {}, {:.0?} in all",
        impairment.describe(&lab),
        started.elapsed()
    );
    println!(
        "| {:<26} | {:<13} | {:>8} | {:>10} | other outcomes |",
        "pair (each opens half)", "method", "direct", "median"
    );
    println!("| --- | --- | ---: | ---: | --- |");
    let mut failures = Vec::new();
    for row in &rows {
        let (a, b) = row.pair;
        let (method, share) = target(a, b);
        let within = (method == "spray").then_some(SPRAY_WITHIN);
        let times = row.direct_times(within);
        let median = times
            .get(times.len() / 2)
            .map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
        let mut others: Vec<String> = row
            .verdicts
            .iter()
            .filter(|v| !matches!(v, Verdict::Direct(..)))
            .map(|v| match v {
                Verdict::Failed(e) => format!("failed ({e})"),
                Verdict::Skipped(r) => format!("skipped: {r}"),
                Verdict::TimedOut => "timed out".into(),
                Verdict::Direct(..) => unreachable!(),
            })
            .collect();
        others.sort();
        others.dedup();
        if row.setups_lost > 0 {
            others.push(format!("{} relay setup(s) lost, retried", row.setups_lost));
        }
        println!(
            "| {:<26} | {:<13} | {:>3}/{:<4} | {:>10} | {} |",
            format!("{} ↔ {}", short(a), short(b)),
            method,
            times.len(),
            n,
            median,
            others.join("; ")
        );
        let ok = times.len() as f64 >= share * f64::from(n) - 1e-9;
        if !ok {
            failures.push(format!(
                "{a:?} ↔ {b:?} ({method}): {}/{n} direct, target {:.0} %",
                times.len(),
                share * 100.0
            ));
        }
        if method == "skip" {
            // Left on the relay with the reason, never punched.
            if !row
                .verdicts
                .iter()
                .all(|v| matches!(v, Verdict::Skipped(_)))
            {
                failures.push(format!("{a:?} ↔ {b:?}: not skipped: {:?}", row.verdicts));
            }
        } else if row
            .verdicts
            .iter()
            .any(|v| matches!(v, Verdict::Direct(m, _) if m.label() != method))
        {
            failures.push(format!("{a:?} ↔ {b:?}: another method than {method}"));
        }
    }
    if impairment.access_loss > 0 {
        assert!(
            lab.access_loss_dropped().expect("counter") > 0,
            "the loss is applied"
        );
    }
    if !impairment.access_delay.is_zero() {
        assert!(lab.delayed_packets() > 0, "the delay is applied");
    }
    assert!(
        failures.is_empty(),
        "targets missed:\n{}",
        failures.join("\n")
    );
}

fn short(k: NatKind) -> &'static str {
    match k {
        NatKind::FullCone => "full cone",
        NatKind::RestrictedCone => "restricted",
        NatKind::PortRestrictedCone => "port-restr.",
        NatKind::SymmetricSequential => "sym. seq.",
        NatKind::SymmetricRandom => "sym. random",
    }
}

/// Generous: 20 attempts of the slowest pair (a spray that misses waits out its 8 s window)
/// fit; CI lowers `MESHWIRE_MATRIX_ATTEMPTS`.
fn matrix_timeout() -> Duration {
    Duration::from_secs(60 + 25 * u64::from(attempts()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natlab_connector_matrix() {
    if let Some(reason) = natlab::missing_prerequisite() {
        if natlab::skip(&reason) {
            return;
        }
    }
    tokio::time::timeout(matrix_timeout(), run_matrix(Impairment::default()))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natlab_connector_matrix_with_delay_and_loss() {
    if let Some(reason) = natlab::missing_prerequisite() {
        if natlab::skip(&reason) {
            return;
        }
    }
    let impairment = Impairment {
        access_loss: 5,
        access_delay: natlab::DEFAULT_ACCESS_DELAY,
    };
    tokio::time::timeout(matrix_timeout(), run_matrix(impairment))
        .await
        .expect("test timed out");
}

/// A spray cancelled on both sides while it runs (numbers chosen so that a hit before the
/// cancel is unlikely: 8 mappings, 20 probes a second) ends at once as `Cancelled` on both
/// sides, and no direct connection follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natlab_connector_spray_cancel() {
    if let Some(reason) = natlab::missing_prerequisite() {
        if natlab::skip(&reason) {
            return;
        }
    }
    let run = async {
        let lab = Lab::new(&[NatKind::PortRestrictedCone, NatKind::SymmetricRandom]).expect("lab");
        let mut relay = spawn_matrix_relay(&lab.public_ns);
        relay.send(Cmd::Listen(quic(PUBLIC_IP)));
        relay
            .wait("the relay listening", |o| {
                matches!(o, Obs::ListenAddr(_)).then_some(())
            })
            .await;
        let relay_addr = with_peer_id(&quic(PUBLIC_IP), relay.id);
        let config = holepunch::ConnectorConfig {
            spray: holepunch::SprayConfig {
                sockets: 8,
                probes: 600,
                rate: 20,
                window: Duration::from_secs(30),
                ..holepunch::SprayConfig::default()
            },
            ..connector_config()
        };
        // A hit before the cancel is unlikely (8 mappings × 40 probes in the first 2 s:
        // p ≈ 0.5 %) but possible: such a session ends before it can be cancelled, which
        // this test cannot judge, so it runs again on a new port (at most 3 times).
        let mut tries = 0;
        let (mut prober, mut sprayer) = loop {
            tries += 1;
            let port = 4100 + tries;
            let (mut prober, mut sprayer) =
                setup((&lab.sites[0], &lab.sites[1]), port, &relay_addr, &config)
                    .await
                    .expect("relayed connection");
            // The spray runs once the relayed connection is up and the HELLOs are through;
            // any session end in these 2 s comes before the cancel.
            let early = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    let (who, obs) = tokio::select! {
                        Some(o) = prober.obs.recv() => ("prober", o),
                        Some(o) = sprayer.obs.recv() => ("sprayer", o),
                    };
                    if let Obs::Finished { outcome, .. } = obs {
                        return (who, outcome);
                    }
                }
            })
            .await;
            match early {
                Err(_) => break (prober, sprayer),
                // Only an early hit is tolerated; any other early end is a failure.
                Ok((
                    who,
                    outcome @ holepunch::ConnectOutcome::Direct {
                        method: holepunch::Method::Spray { .. },
                        ..
                    },
                )) => {
                    println!("try {tries}: the {who}'s spray hit before the cancel: {outcome:?}");
                    assert!(tries < 3, "3 sprays hit before their cancel");
                }
                Ok((who, outcome)) => {
                    panic!("the {who}'s session ended before the cancel: {outcome:?}")
                }
            }
        };
        let cancelled_at = std::time::Instant::now();
        prober.send(Cmd::Cancel(sprayer.id));
        sprayer.send(Cmd::Cancel(prober.id));
        let (p_id, s_id) = (prober.id, sprayer.id);
        let (mut at_p, mut at_s) = (None, None);
        let mut direct = false;
        let quiet = tokio::time::sleep(Duration::from_secs(4));
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                Some(o) = prober.obs.recv() => match o {
                    Obs::Finished { peer, outcome } if peer == s_id => at_p = Some((outcome, cancelled_at.elapsed())),
                    Obs::Connected { peer, relayed: false, .. } if peer == s_id => direct = true,
                    _ => {}
                },
                Some(o) = sprayer.obs.recv() => match o {
                    Obs::Finished { peer, outcome } if peer == p_id => at_s = Some((outcome, cancelled_at.elapsed())),
                    Obs::Connected { peer, relayed: false, .. } if peer == p_id => direct = true,
                    _ => {}
                },
                _ = &mut quiet => break,
            }
        }
        for (who, seen) in [("prober", at_p), ("sprayer", at_s)] {
            let (outcome, after) = seen.unwrap_or_else(|| panic!("{who}: no outcome"));
            assert_eq!(
                outcome,
                holepunch::ConnectOutcome::Failed {
                    method: holepunch::Method::Spray {
                        we_spray: who == "sprayer"
                    },
                    error: holepunch::ConnectError::Cancelled,
                },
                "{who}"
            );
            assert!(
                after < Duration::from_secs(1),
                "{who}: ended {after:?} after the cancel"
            );
        }
        assert!(!direct, "no direct connection after the cancel");
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("test timed out");
}
