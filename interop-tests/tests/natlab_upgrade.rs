//! The relay → direct upgrade end to end in the NAT lab (`interop_tests::natlab`):
//!
//! - `natlab_upgrade_port_restricted_pair`: two meshwire peers (relay client, identify,
//!   holepunch, upgrade), each behind its own port-restricted cone NAT, meet through a
//!   meshwire relay on the public host (198.51.100.10). The dialer opens an upgrade session
//!   the moment its relayed connection is established, and both ends send numbered messages
//!   at [`RATE`] per second for [`TRAFFIC`]; meanwhile DCUtR punches a direct connection and
//!   the upgrade behaviour moves the session onto it by itself, then (after a short fallback
//!   window) closes the relayed connection. Checks every message arrived exactly once and in
//!   order both ways, the session runs direct on both ends, and prints the figures: time
//!   from the first message to the direct connection, the upgrade's duration, messages
//!   migrated (re-sent on the direct path), the longest delivery gap around the switch.
//! - `natlab_upgrade_port_restricted_pair_with_delay`: the same with [`ACCESS_DELAY`] added
//!   to every packet on each NAT's access link, each way (`Lab::set_delay`), so the direct
//!   path's round trip (two access links) is at least `4 × ACCESS_DELAY` = 40 ms — well above
//!   the loaded machine's scheduling noise, which hides it on loopback or in the plain lab.
//!   The relayed path crosses the same two access links, so both paths have the same latency
//!   and any delivery gap at the switch is the switch's own. Asserts the design's bound: in
//!   each direction the longest delivery gap around the switch, and the worst latency there
//!   above the median on the relay, are under 2 round trips of the direct path.
//!
//! Each node is a whole meshwire swarm on its own thread and tokio runtime inside its host's
//! namespace (as in `natlab_dcutr`); the sessions' application ends run on the test's
//! runtime. Needs root, iproute2 and nftables; skipped with the reason printed otherwise, a
//! failure under `MESHWIRE_REQUIRE_NETNS=1`. Run: `cargo test -p interop-tests --test
//! natlab_upgrade -- --nocapture`.

use std::net::Ipv4Addr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use interop_tests::natlab::{self, Lab, NatKind, PUBLIC_IP};
use meshwire_core::{Keypair, PeerId};
use meshwire_holepunch as holepunch;
use meshwire_relay::{client, ServerConfig};
use meshwire_swarm::{DialOpts, NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr, Protocol, TransportExt};
use meshwire_upgrade::{self as upgrade, PathKind};
use tokio::sync::mpsc;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const PORT: u16 = 4001;
/// Messages per second, each way.
const RATE: u64 = 2_000;
/// How long both ends send.
const TRAFFIC: Duration = Duration::from_secs(4);
/// Message size: its number and its send time.
const SIZE: usize = 16;
/// The relayed path stays on standby this long after the switch, then is fenced and the
/// relayed connection closed (10 s by default; short here so it happens under traffic).
const FALLBACK_WINDOW: Duration = Duration::from_secs(1);
/// The delayed variant's delay on each NAT's access link, each way: 20 ms each way between
/// the two peers (directly or through the relay), a round trip of at least 40 ms.
const ACCESS_DELAY: Duration = Duration::from_millis(10);

enum Cmd {
    Listen(Multiaddr),
    Dial(PeerId, Multiaddr),
    /// Dial `peer` at `addr` and open a session to it as soon as the connection is there.
    DialAndOpen(PeerId, Multiaddr),
}

/// What a node saw, stamped with when its swarm produced it.
enum Obs {
    ListenAddr(Multiaddr),
    /// Identify answered by `peer`.
    Identified(PeerId),
    Connected {
        peer: PeerId,
        relayed: bool,
        remote: Multiaddr,
    },
    /// The session we opened (on the relayed connection, the only one then).
    Opened(upgrade::Session),
    Inbound(upgrade::Session),
    Punched {
        ok: bool,
        detail: String,
    },
    Upgraded {
        duration: Duration,
        migrated: u64,
        rtt: Duration,
    },
    UpgradeFailed(String),
    RelayedClosed,
    FellBack,
    Other(String),
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
    upgrade: upgrade::Behaviour,
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

/// The clock of every node and of the test (one process): messages carry their send time.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

struct Node {
    id: PeerId,
    cmd: mpsc::UnboundedSender<Cmd>,
    obs: mpsc::UnboundedReceiver<(Instant, Obs)>,
}

impl Node {
    fn send(&self, cmd: Cmd) {
        self.cmd.send(cmd).expect("node running");
    }

    async fn wait<T>(&mut self, what: &str, mut pick: impl FnMut(Instant, Obs) -> Option<T>) -> T {
        loop {
            let (at, obs) = self
                .obs
                .recv()
                .await
                .unwrap_or_else(|| panic!("node stopped while waiting for {what}"));
            if let Some(t) = pick(at, obs) {
                return t;
            }
        }
    }
}

/// What the swarm loop needs to know of a behaviour beyond its events.
trait Opens: NetworkBehaviour {
    fn open(&mut self, peer: PeerId) -> Option<upgrade::Session>;
}

impl Opens for Relay {
    fn open(&mut self, _: PeerId) -> Option<upgrade::Session> {
        None
    }
}

impl Opens for Peer {
    fn open(&mut self, peer: PeerId) -> Option<upgrade::Session> {
        Some(self.upgrade.open(peer).expect("open a session"))
    }
}

/// Runs the swarm `make` builds on a thread inside `ns`; it stops when the [`Node`] is
/// dropped (its command channel closes).
fn spawn<B>(
    ns: &str,
    key: Keypair,
    make: impl FnOnce(Keypair) -> Swarm<B> + Send + 'static,
    observe: fn(B::Event) -> Option<Obs>,
) -> Node
where
    B: Opens,
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
            let mut open_to = None;
            loop {
                let ev = tokio::select! {
                    ev = swarm.next_event() => ev,
                    c = cmd_rx.recv() => {
                        match c {
                            Some(Cmd::Listen(a)) => { swarm.listen_on(a).expect("listen"); }
                            Some(Cmd::Dial(p, a)) => { swarm.dial(DialOpts::peer(p).address(a)).expect("dial"); }
                            Some(Cmd::DialAndOpen(p, a)) => {
                                open_to = Some(p);
                                swarm.dial(DialOpts::peer(p).address(a)).expect("dial");
                            }
                            None => return,
                        }
                        continue;
                    }
                };
                let o = match ev {
                    SwarmEvent::NewListenAddr { address, .. } => Some(Obs::ListenAddr(address)),
                    SwarmEvent::ConnectionEstablished {
                        peer_id, endpoint, ..
                    } => {
                        let _ = tx.send((Instant::now(), Obs::Connected {
                            peer: peer_id,
                            relayed: endpoint.is_relayed(),
                            remote: endpoint.remote_addr().clone(),
                        }));
                        if open_to == Some(peer_id) {
                            // Before the swarm runs again: the session starts on this
                            // (relayed) connection, not on a direct one punched meanwhile.
                            open_to = None;
                            if let Some(s) = swarm.behaviour_mut().open(peer_id) {
                                let _ = tx.send((Instant::now(), Obs::Opened(s)));
                            }
                        }
                        None
                    }
                    SwarmEvent::Behaviour(ev) => observe(ev),
                    _ => None,
                };
                if let Some(o) = o {
                    let _ = tx.send((Instant::now(), o));
                }
            }
        });
    })
    .expect("node thread");
    Node { id, cmd, obs }
}

fn relay_event(ev: RelayEvent) -> Option<Obs> {
    match ev {
        RelayEvent::Relay(e) => println!("relay: {e:?}"),
        RelayEvent::Identify(e) => drop(e),
    }
    None
}

fn peer_event(ev: PeerEvent) -> Option<Obs> {
    Some(match ev {
        PeerEvent::Holepunch(holepunch::Event::DirectConnectionUpgradeSucceeded {
            attempts,
            role,
            elapsed,
            ..
        }) => Obs::Punched {
            ok: true,
            detail: format!("{role:?}, {attempts} attempt(s), {elapsed:?}"),
        },
        PeerEvent::Holepunch(holepunch::Event::DirectConnectionUpgradeFailed { error, .. }) => {
            Obs::Punched {
                ok: false,
                detail: error.to_string(),
            }
        }
        PeerEvent::Holepunch(e) => Obs::Other(format!("holepunch: {e:?}")),
        PeerEvent::Identify(meshwire_identify::Event::Received { peer, .. }) => {
            Obs::Identified(peer)
        }
        PeerEvent::Identify(_) => return None,
        PeerEvent::RelayClient(e) => Obs::Other(format!("relay client: {e:?}")),
        PeerEvent::Upgrade(e) => match e {
            upgrade::Event::InboundSession(s) => Obs::Inbound(s),
            upgrade::Event::Upgraded {
                duration,
                migrated,
                rtt,
                ..
            } => Obs::Upgraded {
                duration,
                migrated,
                rtt,
            },
            upgrade::Event::UpgradeFailed { error, .. } => Obs::UpgradeFailed(error.to_string()),
            upgrade::Event::RelayedConnectionClosed { .. } => Obs::RelayedClosed,
            upgrade::Event::FellBack { .. } => Obs::FellBack,
            e => Obs::Other(format!("upgrade: {e:?}")),
        },
    })
}

fn spawn_relay(ns: &str) -> Node {
    spawn(
        ns,
        Keypair::generate(),
        |key| {
            // The sessions' traffic runs through the circuit until the upgrade: no limits.
            let config = ServerConfig {
                max_circuit_duration: None,
                max_circuit_bytes: None,
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
    )
}

fn spawn_peer(ns: &str) -> Node {
    spawn(
        ns,
        Keypair::generate(),
        move |key| {
            let (relay_transport, relay_client) =
                client::new(key.clone(), client::Config::default());
            let transport = QuicTransport::new(key.clone(), QuicConfig::default())
                .expect("quic")
                .or_transport(relay_transport);
            let session = upgrade::SessionConfig::default().with_fallback_window(FALLBACK_WINDOW);
            let behaviour = Peer {
                relay_client,
                identify: identify(&key),
                holepunch: holepunch::Behaviour::new(holepunch::Config::default()),
                upgrade: upgrade::Behaviour::new(upgrade::Config::default().with_session(session)),
            };
            Swarm::new(transport, behaviour, SwarmConfig::default())
        },
        peer_event,
    )
}

/// A peer on `ip` connected to the relay and identified by it (so it knows the address its
/// NAT gives it).
async fn join(ns: &str, ip: Ipv4Addr, relay: PeerId, relay_addr: &Multiaddr) -> Node {
    let mut node = spawn_peer(ns);
    node.send(Cmd::Listen(quic(ip)));
    node.wait("listening", |_, o| {
        matches!(o, Obs::ListenAddr(_)).then_some(())
    })
    .await;
    node.send(Cmd::Dial(relay, relay_addr.clone()));
    node.wait("identify from the relay", |_, o| match o {
        Obs::Identified(p) if p == relay => Some(()),
        _ => None,
    })
    .await;
    node
}

/// Sends `count` numbered messages at [`RATE`] (in 1 ms batches), each carrying its number
/// and its send time.
fn pace(sender: upgrade::SessionSender, count: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut i = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while i < count {
            tick.tick().await;
            // The clock, not the ticks, sets the rate.
            let due = (start.elapsed().as_micros() as u64 * RATE / 1_000_000 + 1).min(count);
            while i < due {
                let mut m = vec![0u8; SIZE];
                m[..8].copy_from_slice(&i.to_be_bytes());
                let sent = epoch().elapsed().as_nanos() as u64;
                m[8..16].copy_from_slice(&sent.to_be_bytes());
                sender.send(m).await.expect("send");
                i += 1;
            }
        }
    })
}

/// Receives `count` messages, checking each is the next number (0 lost, 0 duplicated, 0
/// reordered); the arrival time and latency of each.
fn check(
    mut session: upgrade::Session,
    count: u64,
) -> tokio::task::JoinHandle<(upgrade::Session, Vec<(Instant, Duration)>)> {
    tokio::spawn(async move {
        let mut arrivals = Vec::with_capacity(count as usize);
        for expected in 0..count {
            let m = tokio::time::timeout(Duration::from_secs(10), session.recv())
                .await
                .unwrap_or_else(|_| panic!("message {expected} within 10 s"))
                .unwrap_or_else(|| {
                    panic!(
                        "session ended before message {expected}: {:?}",
                        session.error()
                    )
                });
            assert_eq!(m.len(), SIZE, "message {expected}: its size");
            let n = u64::from_be_bytes(m[..8].try_into().expect("8 bytes"));
            assert_eq!(n, expected, "lost, duplicated or reordered");
            let sent = Duration::from_nanos(u64::from_be_bytes(m[8..16].try_into().expect("8")));
            let now = Instant::now();
            arrivals.push((now, (now - epoch()).saturating_sub(sent)));
        }
        (session, arrivals)
    })
}

/// Over the arrivals within `[from, to]`: the longest time between two consecutive
/// arrivals, the worst latency and the median latency.
fn gaps(arrivals: &[(Instant, Duration)], from: Instant, to: Instant) -> [Duration; 3] {
    let within: Vec<&(Instant, Duration)> = arrivals
        .iter()
        .filter(|(at, _)| *at >= from && *at <= to)
        .collect();
    let gap = within
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    let mut l: Vec<Duration> = within.iter().map(|(_, l)| *l).collect();
    l.sort();
    [
        gap,
        l.last().copied().unwrap_or_default(),
        l.get(l.len() / 2).copied().unwrap_or_default(),
    ]
}

/// What the session's initiator saw, with when.
#[derive(Default, Debug)]
struct Seen {
    relayed: Option<Instant>,
    direct: Option<(Instant, Multiaddr)>,
    punched: Option<(bool, String)>,
    upgraded: Option<(Instant, Duration, u64, Duration)>,
    upgrade_failed: Option<String>,
    relayed_closed: Option<Instant>,
    fell_back: bool,
}

impl Seen {
    fn take(&mut self, at: Instant, obs: Obs, other: PeerId) {
        match obs {
            Obs::Connected {
                peer,
                relayed,
                remote,
            } if peer == other => {
                if relayed {
                    self.relayed.get_or_insert(at);
                } else {
                    self.direct.get_or_insert((at, remote));
                }
            }
            Obs::Punched { ok, detail } => {
                self.punched.get_or_insert((ok, detail));
            }
            Obs::Upgraded {
                duration,
                migrated,
                rtt,
            } => {
                self.upgraded.get_or_insert((at, duration, migrated, rtt));
            }
            Obs::UpgradeFailed(e) => self.upgrade_failed = Some(e),
            Obs::RelayedClosed => {
                self.relayed_closed.get_or_insert(at);
            }
            Obs::FellBack => self.fell_back = true,
            Obs::Other(s) => println!("{s}"),
            _ => {}
        }
    }
}

/// One direction's figures around the switch.
#[derive(Debug)]
struct SwitchGap {
    /// "A -> B" or "B -> A".
    name: &'static str,
    /// The longest time between two consecutive deliveries around the switch.
    gap: Duration,
    /// The worst latency of a message delivered around the switch above the median latency
    /// on the relay before it.
    extra_latency: Duration,
}

/// What a run measured: the direct path's round trip as the upgrade measured it
/// (`Hello`→`Welcome`) and both directions' figures around the switch.
#[derive(Debug)]
struct Run {
    rtt: Duration,
    directions: Vec<SwitchGap>,
}

async fn port_restricted_pair(lab: &Lab) -> Run {
    // The public relay.
    let mut relay = spawn_relay(&lab.public_ns);
    relay.send(Cmd::Listen(quic(PUBLIC_IP)));
    relay
        .wait("the relay listening", |_, o| {
            matches!(o, Obs::ListenAddr(_)).then_some(())
        })
        .await;
    let relay_addr = with_peer_id(&quic(PUBLIC_IP), relay.id);
    let circuit = relay_addr.clone().with(Protocol::P2pCircuit);
    let (site_b, site_a) = (&lab.sites[0], &lab.sites[1]);

    // B reserves on the relay (it accepts the relayed connection: DCUtR's initiator); A
    // reaches it through the relay and opens the session.
    let mut b = join(&site_b.host_ns, site_b.host_ip, relay.id, &relay_addr).await;
    b.send(Cmd::Listen(circuit.clone()));
    b.wait("the relayed listen address", |_, o| match o {
        Obs::ListenAddr(a) if a.iter().any(|p| p == Protocol::P2pCircuit) => Some(()),
        _ => None,
    })
    .await;
    let mut a = join(&site_a.host_ns, site_a.host_ip, relay.id, &relay_addr).await;
    a.send(Cmd::DialAndOpen(b.id, circuit));
    let mut at_a = Seen::default();
    let (opened, ours) = loop {
        let (at, o) = a.obs.recv().await.expect("node running");
        match o {
            Obs::Opened(s) => break (at, s),
            o => at_a.take(at, o, b.id),
        }
    };
    let theirs = b
        .wait("the inbound session", |_, o| match o {
            Obs::Inbound(s) => Some(s),
            _ => None,
        })
        .await;
    assert!(
        at_a.relayed.is_some() && at_a.direct.is_none(),
        "the session opens on the relayed connection"
    );
    let count = RATE * TRAFFIC.as_millis() as u64 / 1000;
    let send_a = pace(ours.sender().expect("a sender"), count);
    let send_b = pace(theirs.sender().expect("a sender"), count);
    let recv_a = check(ours, count);
    let recv_b = check(theirs, count);

    // Meanwhile: the punch, the upgrade, the drain of the relayed path.
    let mut at_b = Seen::default();
    let traffic = async {
        let (sa, sb) = tokio::join!(send_a, send_b);
        sa.expect("A sends");
        sb.expect("B sends");
        let (rb, ra) = tokio::join!(recv_b, recv_a);
        let (theirs, arrivals_b) = rb.expect("B receives");
        let (ours, arrivals_a) = ra.expect("A receives");
        (theirs, arrivals_b, ours, arrivals_a)
    };
    tokio::pin!(traffic);
    let ((theirs, arrivals_at_b, ours, arrivals_at_a), ended) = loop {
        tokio::select! {
            r = &mut traffic => break (r, Instant::now()),
            Some((at, o)) = a.obs.recv() => at_a.take(at, o, b.id),
            Some((at, o)) = b.obs.recv() => at_b.take(at, o, a.id),
        }
    };
    // Anything already reported.
    while let Ok((at, o)) = a.obs.try_recv() {
        at_a.take(at, o, b.id);
    }
    let hint = format!("A saw {at_a:?}; B saw {at_b:?}");
    let (ok, detail) = at_a.punched.clone().unwrap_or_default();
    assert!(ok, "the hole punch succeeded: {detail}; {hint}");
    let (direct_at, direct) = at_a
        .direct
        .clone()
        .unwrap_or_else(|| panic!("a direct connection; {hint}"));
    assert_eq!(
        direct.iter().next(),
        Some(Protocol::Ip4(site_b.wan_ip)),
        "the direct connection goes to B's NAT's public address ({direct})"
    );
    assert_eq!(at_a.upgrade_failed, None, "no failed upgrade; {hint}");
    assert!(!at_a.fell_back, "no fallback to the relay");
    let (switched, duration, migrated, rtt) = at_a
        .upgraded
        .unwrap_or_else(|| panic!("Event::Upgraded at A; {hint}"));
    assert_eq!(ours.path_kind(), Some(PathKind::Direct), "A sends direct");
    assert_eq!(theirs.path_kind(), Some(PathKind::Direct), "B sends direct");
    let closed = at_a
        .relayed_closed
        .unwrap_or_else(|| panic!("the relayed connection closed after the window; {hint}"));
    assert!(closed > switched);

    let (sa, sb) = (ours.stats(), theirs.stats());
    println!(
        "{count} messages of {SIZE} bytes each way at {RATE}/s over {TRAFFIC:?}: 0 lost, 0 \
         duplicated, 0 reordered (A {sa:?}; B {sb:?})"
    );
    println!(
        "first message to direct connection {:?} (holepunch: {detail}); upgrade took {duration:?} \
         (direct RTT {rtt:?}), switched {:?} after the first message; {migrated} messages \
         migrated by A, {} by B; relayed connection closed {:?} after the switch; traffic ended \
         {:?} after the first message",
        direct_at - opened,
        switched - opened,
        sb.messages_migrated,
        closed - switched,
        ended - opened,
    );
    let window = (
        switched - duration - Duration::from_millis(50),
        switched + Duration::from_millis(200),
    );
    let before = (opened, switched);
    let after = (switched + Duration::from_millis(200), ended);
    let mut directions = Vec::new();
    for (name, arrivals) in [("A -> B", &arrivals_at_b), ("B -> A", &arrivals_at_a)] {
        let [gap, worst, median] = gaps(arrivals, window.0, window.1);
        let [relay_gap, relay_worst, relay_median] = gaps(arrivals, before.0, before.1);
        let [direct_gap, direct_worst, direct_median] = gaps(arrivals, after.0, after.1);
        let on_relay = arrivals.iter().filter(|(at, _)| *at < switched).count();
        let rtts = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64().max(1e-9);
        println!(
            "{name}: {on_relay} messages delivered before the switch (gap {relay_gap:?}, \
             latency worst {relay_worst:?} median {relay_median:?}); around the switch longest \
             delivery gap {gap:?} = {:.1} RTT of the direct path, latency worst {worst:?} median \
             {median:?}; direct afterwards longest gap {direct_gap:?} = {:.1} RTT, latency worst \
             {direct_worst:?} median {direct_median:?}",
            rtts(gap),
            rtts(direct_gap),
        );
        let extra_latency = worst.saturating_sub(relay_median);
        println!(
            "{name}: worst latency around the switch above the median on the relay: \
             {extra_latency:?} = {:.1} RTT of the direct path",
            rtts(extra_latency)
        );
        directions.push(SwitchGap {
            name,
            gap,
            extra_latency,
        });
    }
    drop(relay);
    Run { rtt, directions }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natlab_upgrade_port_restricted_pair() {
    if let Some(reason) = natlab::missing_prerequisite() {
        if natlab::skip(&reason) {
            return;
        }
    }
    epoch();
    let lab = Lab::new(&[NatKind::PortRestrictedCone, NatKind::PortRestrictedCone]).expect("lab");
    tokio::time::timeout(TEST_TIMEOUT, port_restricted_pair(&lab))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natlab_upgrade_port_restricted_pair_with_delay() {
    if let Some(reason) = natlab::missing_prerequisite() {
        if natlab::skip(&reason) {
            return;
        }
    }
    epoch();
    let lab = Lab::new(&[NatKind::PortRestrictedCone, NatKind::PortRestrictedCone]).expect("lab");
    lab.set_delay(ACCESS_DELAY)
        .expect("the access links' delay");
    let run = tokio::time::timeout(TEST_TIMEOUT, port_restricted_pair(&lab))
        .await
        .expect("test timed out");
    // The direct path's round trip crosses the two access links twice: at least the delay
    // four times. The bound uses the smaller of that and the measured one (which adds the
    // hosts' scheduling), so it is not loosened by a slow handshake.
    let nominal = 4 * ACCESS_DELAY;
    let rtt = run.rtt.min(nominal);
    println!(
        "access links delayed {ACCESS_DELAY:?} each way ({} packets delayed): direct RTT measured \
         {:?}, at least {nominal:?}",
        lab.delayed_packets(),
        run.rtt
    );
    for d in &run.directions {
        let (gap, extra) = (
            d.gap.as_secs_f64() / rtt.as_secs_f64(),
            d.extra_latency.as_secs_f64() / rtt.as_secs_f64(),
        );
        println!(
            "{}: switch delivery gap {:?} = {gap:.2} RTT, worst latency above the relay's median \
             {:?} = {extra:.2} RTT (bound: 2 RTT = {:?})",
            d.name,
            d.gap,
            d.extra_latency,
            2 * rtt
        );
        assert!(
            d.gap < 2 * rtt,
            "{}: delivery gap of the switch {:?} is not under 2 RTT ({rtt:?})",
            d.name,
            d.gap
        );
        assert!(
            d.extra_latency < 2 * rtt,
            "{}: latency added around the switch {:?} is not under 2 RTT ({rtt:?})",
            d.name,
            d.extra_latency
        );
    }
}
