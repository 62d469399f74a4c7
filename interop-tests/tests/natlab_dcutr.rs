//! Hole punching in the NAT lab (`interop_tests::natlab`):
//!
//! - `natlab_dcutr_port_restricted_pair`: two meshwire peers, each behind its own
//!   port-restricted cone NAT (Linux `masquerade`, routers dropping unsolicited inbound), meet
//!   through a meshwire relay on the public host (198.51.100.10) and DCUtR upgrades their
//!   relayed connection to a direct QUIC connection between the NATs' public addresses.
//! - `natlab_dcutr_matrix`: every pair of the five NAT kinds at once; prints the table of
//!   verdicts and checks each against what DCUtR with meshwire's retries (the second
//!   attempt adds a predicted port window) can do ([`expect_direct`]).
//!
//! Each node is a whole meshwire swarm (relay client, identify, holepunch) on its own thread
//! and tokio runtime inside its host's namespace, listening on its private address, port
//! 4001. Needs root, iproute2 and nftables; skipped with the reason printed otherwise, a
//! failure under `MESHWIRE_REQUIRE_NETNS=1`. Run: `cargo test -p interop-tests --test
//! natlab_dcutr -- --nocapture`.

use std::net::Ipv4Addr;
use std::time::Duration;

use interop_tests::natlab::{self, Lab, NatKind, PUBLIC_IP};
use meshwire_core::{Keypair, PeerId};
use meshwire_holepunch as holepunch;
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
            loop {
                let ev = tokio::select! {
                    ev = swarm.next_event() => ev,
                    c = cmd_rx.recv() => {
                        match c {
                            Some(Cmd::Listen(a)) => { swarm.listen_on(a).expect("listen"); }
                            Some(Cmd::Dial(p, a)) => { swarm.dial(DialOpts::peer(p).address(a)).expect("dial"); }
                            None => return,
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
                        remote: endpoint.remote_addr().clone(),
                    }),
                    SwarmEvent::Behaviour(ev) => observe(&ev),
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

/// Whether DCUtR with meshwire's retries can connect a peer behind `a` with one behind `b`:
/// always with a full or restricted cone on either side (the cone accepts the other's
/// packets from any port of an address it sent to, or from anywhere); a port-restricted
/// cone with a sequential symmetric NAT thanks to the predicted port window of the second
/// attempt (the cone's side dials the next ports of the announced one, among them the
/// mapping the symmetric NAT made towards it); never otherwise when both NATs filter by
/// address and port and one of them maps per destination (random ports cannot be predicted;
/// two sequential NATs would each have to guess the other's next port).
fn expect_direct(a: NatKind, b: NatKind) -> bool {
    use NatKind::*;
    let apdf = |k| {
        matches!(
            k,
            PortRestrictedCone | SymmetricSequential | SymmetricRandom
        )
    };
    let apdm = |k| matches!(k, SymmetricSequential | SymmetricRandom);
    let predictable = matches!(
        (a, b),
        (PortRestrictedCone, SymmetricSequential) | (SymmetricSequential, PortRestrictedCone)
    );
    predictable || !(apdf(a) && apdf(b) && (apdm(a) || apdm(b)))
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

async fn matrix(loss: u8) {
    let pairs: Vec<(NatKind, NatKind)> = NatKind::ALL
        .iter()
        .enumerate()
        .flat_map(|(i, a)| NatKind::ALL[i..].iter().map(move |b| (*a, *b)))
        .collect();
    let kinds: Vec<NatKind> = pairs.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let lab = Lab::new(&kinds).expect("lab");
    lab.set_loss(loss).expect("loss");
    let (_relay, relay_addr) = start_relay(&lab).await;
    // Short attempts: a pair that cannot punch gives up after 3 × 3 s.
    let config = holepunch::Config {
        attempt_timeout: Duration::from_secs(3),
        responder_wait: Duration::from_secs(5),
        exchange_timeout: Duration::from_secs(5),
        ..holepunch::Config::default()
    };
    let results = futures::future::join_all(
        (0..pairs.len()).map(|p| run_pair(&lab, (2 * p, 2 * p + 1), &relay_addr, config.clone())),
    )
    .await;
    let dropped = lab.loss_dropped().expect("loss counter");
    println!(
        "DCUtR in the NAT lab, {loss} % UDP loss ({dropped} packets dropped): initiator (rows) \
         × responder (columns), the initiator's verdict"
    );
    assert_eq!(dropped > 0, loss > 0, "the loss is applied");
    print!("{:>12} |", "");
    for k in NatKind::ALL {
        print!(" {:>22} |", short(k));
    }
    println!();
    for a in NatKind::ALL {
        print!("{:>12} |", short(a));
        for b in NatKind::ALL {
            let cell = pairs
                .iter()
                .position(|p| *p == (a, b))
                .map(|i| match &results[i].0.upgrade {
                    Some((true, d)) => {
                        format!("direct: {}", d.split(',').nth(1).unwrap_or("").trim())
                    }
                    Some((false, _)) => "relayed (3 attempts)".to_string(),
                    None => "?".to_string(),
                })
                .unwrap_or_default();
            print!(" {cell:>22} |");
        }
        println!();
    }
    for (i, (a, b)) in pairs.iter().enumerate() {
        let (at_l, at_d) = &results[i];
        let ok = at_l.upgrade.as_ref().is_some_and(|(ok, _)| *ok);
        assert_eq!(
            ok,
            expect_direct(*a, *b),
            "{a:?} (initiator) × {b:?} (responder): initiator {at_l:?}, responder {at_d:?}"
        );
        if ok {
            assert!(
                at_l.direct.is_some() && at_d.direct.is_some(),
                "{a:?} × {b:?}: both see the direct connection"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natlab_dcutr_matrix() {
    if let Some(reason) = natlab::missing_prerequisite() {
        if natlab::skip(&reason) {
            return;
        }
    }
    tokio::time::timeout(Duration::from_secs(90), matrix(0))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natlab_dcutr_matrix_with_loss() {
    if let Some(reason) = natlab::missing_prerequisite() {
        if natlab::skip(&reason) {
            return;
        }
    }
    tokio::time::timeout(Duration::from_secs(90), matrix(5))
        .await
        .expect("test timed out");
}
