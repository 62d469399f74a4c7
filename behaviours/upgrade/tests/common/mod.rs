//! Loopback QUIC nodes for the upgrade tests: a relay (meshwire-relay's server, limits
//! lifted), and nodes with the relay client and the upgrade behaviour, each swarm driven in
//! its own task and reached through a [`Handle`].

#![allow(dead_code)]

use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};
use meshwire_relay::{client, ServerConfig};
use meshwire_swarm::{
    ConnectionId, DialOpts, NetworkBehaviour, PeerCondition, Swarm, SwarmConfig, SwarmEvent,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr, TransportExt};
use meshwire_upgrade as upgrade;
use tokio::sync::{mpsc, oneshot};

pub const T: Duration = Duration::from_secs(30);
const LOOPBACK: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

#[derive(NetworkBehaviour)]
pub struct RelayNode {
    pub relay: meshwire_relay::Behaviour,
}

#[derive(NetworkBehaviour)]
pub struct Node {
    pub relay_client: client::Behaviour,
    pub upgrade: upgrade::Behaviour,
}

fn swarm_config() -> SwarmConfig {
    SwarmConfig {
        idle_connection_timeout: Some(Duration::from_secs(60)),
        ..SwarmConfig::default()
    }
}

type Command<B> = Box<dyn FnOnce(&mut Swarm<B>) + Send>;

/// A swarm running in its own task.
pub struct Handle<B: NetworkBehaviour> {
    pub id: PeerId,
    commands: mpsc::UnboundedSender<Command<B>>,
    pub events: mpsc::UnboundedReceiver<SwarmEvent<B::Event>>,
    task: tokio::task::JoinHandle<()>,
}

impl<B> Handle<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::Event: Send + std::fmt::Debug + 'static,
{
    pub fn spawn(mut swarm: Swarm<B>) -> Self {
        let id = swarm.local_peer_id();
        let (commands, mut rx) = mpsc::unbounded_channel::<Command<B>>();
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = rx.recv() => match command {
                        Some(command) => command(&mut swarm),
                        None => return,
                    },
                    event = swarm.next_event() => { let _ = tx.send(event); }
                }
            }
        });
        Handle {
            id,
            commands,
            events,
            task,
        }
    }

    /// Runs `f` on the swarm in its task.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<B>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let _ = self.commands.send(Box::new(move |s| {
            let _ = tx.send(f(s));
        }));
        rx.await.expect("swarm task runs")
    }

    /// The first event `f` maps to `Some`, within [`T`].
    pub async fn wait<R>(&mut self, mut f: impl FnMut(SwarmEvent<B::Event>) -> Option<R>) -> R {
        tokio::time::timeout(T, async {
            loop {
                let event = self.events.recv().await.expect("swarm task runs");
                if let Some(r) = f(event) {
                    return r;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{}: event within the time limit", self.id))
    }

    /// Stops the swarm (its connections close with it).
    pub fn kill(self) {
        self.task.abort();
    }
}

/// A relay without circuit limits, its address with `/p2p/<relay>`.
pub async fn relay() -> (Handle<RelayNode>, Multiaddr) {
    let key = Keypair::generate();
    let config = ServerConfig {
        max_circuit_duration: None,
        max_circuit_bytes: None,
        ..ServerConfig::default()
    };
    let relay = meshwire_relay::Behaviour::new(key.clone(), config).expect("config");
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, RelayNode { relay }, swarm_config());
    swarm.listen_on(LOOPBACK.parse().unwrap()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let id = swarm.local_peer_id();
    (Handle::spawn(swarm), with_peer_id(&addr, id))
}

pub fn node(config: upgrade::Config) -> Swarm<Node> {
    let key = Keypair::generate();
    let (relay_transport, relay_client) = client::new(key.clone(), client::Config::default());
    let transport = QuicTransport::new(key, QuicConfig::default())
        .expect("quic")
        .or_transport(relay_transport);
    let behaviour = Node {
        relay_client,
        upgrade: upgrade::Behaviour::new(config),
    };
    Swarm::new(transport, behaviour, swarm_config())
}

pub fn circuit(relay_addr: &Multiaddr) -> Multiaddr {
    relay_addr
        .clone()
        .with(meshwire_transport::Protocol::P2pCircuit)
}

/// The listener (reachable through the relay and directly) and the dialer, connected through
/// the relay; the listener's direct address and the dialer's relayed connection.
pub struct Pair {
    pub relay: Handle<RelayNode>,
    pub listener: Handle<Node>,
    pub dialer: Handle<Node>,
    pub direct_addr: Multiaddr,
    pub relayed: ConnectionId,
}

pub async fn pair(listener_config: upgrade::Config, dialer_config: upgrade::Config) -> Pair {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (relay, relay_addr) = relay().await;
    let mut listener = node(listener_config);
    listener.listen_on(circuit(&relay_addr)).unwrap();
    listener.listen_on(LOOPBACK.parse().unwrap()).unwrap();
    let (mut direct_addr, mut relayed) = (None, false);
    tokio::time::timeout(T, async {
        while direct_addr.is_none() || !relayed {
            if let SwarmEvent::NewListenAddr { address, .. } = listener.next_event().await {
                if address == circuit(&relay_addr) {
                    relayed = true;
                } else {
                    direct_addr = Some(address);
                }
            }
        }
    })
    .await
    .expect("listening");
    let listener_id = listener.local_peer_id();
    let listener = Handle::spawn(listener);
    let mut dialer = Handle::spawn(node(dialer_config));
    let target = with_peer_id(&circuit(&relay_addr), listener_id);
    dialer
        .call(move |s| s.dial(DialOpts::peer(listener_id).address(target)))
        .await
        .expect("dial through the relay");
    let relayed = dialer
        .wait(|e| match e {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } if peer_id == listener_id => {
                assert!(endpoint.is_relayed());
                Some(connection_id)
            }
            _ => None,
        })
        .await;
    Pair {
        relay,
        listener,
        dialer,
        direct_addr: direct_addr.unwrap(),
        relayed,
    }
}

/// Dials `peer` directly at `addr` (next to the relayed connection).
pub async fn dial_direct(node: &Handle<Node>, peer: PeerId, addr: Multiaddr) {
    node.call(move |s| {
        s.dial(
            DialOpts::peer(peer)
                .address(addr)
                // Only this address: the address book also knows the relayed one.
                .extend_addresses_through_behaviour(false)
                .condition(PeerCondition::Always),
        )
    })
    .await
    .expect("direct dial");
}

/// The clock both ends of a test share (one process): messages carry their send time.
pub fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Sends `count` numbered messages of `size` bytes at `rate` per second (in 1 ms batches).
pub fn pace(
    sender: upgrade::SessionSender,
    count: u64,
    size: usize,
    rate: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let per_ms = (rate / 1000).max(1);
        let mut i = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while i < count {
            tick.tick().await;
            // Catch up with the schedule (the clock, not the ticks, sets the rate).
            let due = ((start.elapsed().as_micros() as u64 * rate) / 1_000_000 + per_ms).min(count);
            while i < due {
                let mut m = vec![0u8; size.max(16)];
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
/// reordered); the arrival time of each.
pub fn check(
    mut session: upgrade::Session,
    count: u64,
) -> tokio::task::JoinHandle<(upgrade::Session, Vec<(Instant, Duration)>)> {
    tokio::spawn(async move {
        let mut arrivals = Vec::with_capacity(count as usize);
        for expected in 0..count {
            let m = tokio::time::timeout(T, session.recv())
                .await
                .unwrap_or_else(|_| panic!("message {expected} within the time limit"))
                .unwrap_or_else(|| {
                    panic!(
                        "session ended before message {expected}: {:?}",
                        session.error()
                    )
                });
            let n = u64::from_be_bytes(m[..8].try_into().unwrap());
            assert_eq!(n, expected, "lost, duplicated or reordered");
            let sent = Duration::from_nanos(u64::from_be_bytes(m[8..16].try_into().unwrap()));
            let now = Instant::now();
            arrivals.push((now, (now - epoch()).saturating_sub(sent)));
        }
        (session, arrivals)
    })
}

/// The longest delivery latency of a message arriving within `[from, to]`, and the median.
pub fn latency(
    arrivals: &[(Instant, Duration)],
    from: Instant,
    to: Instant,
) -> (Duration, Duration) {
    let mut l: Vec<Duration> = arrivals
        .iter()
        .filter(|(at, _)| *at >= from && *at <= to)
        .map(|(_, l)| *l)
        .collect();
    l.sort();
    (
        l.last().copied().unwrap_or_default(),
        l.get(l.len() / 2).copied().unwrap_or_default(),
    )
}

/// The same statistic as a switch's delivery gap (worst latency minus `median`) over
/// consecutive windows of `span` within `[from, to]`: the least and the greatest (the
/// machine's own jitter when nothing switches).
pub fn jitter(
    arrivals: &[(Instant, Duration)],
    from: Instant,
    to: Instant,
    span: Duration,
    median: Duration,
) -> (Duration, Duration) {
    let mut at = from;
    let (mut least, mut most) = (Duration::MAX, Duration::ZERO);
    while at + span <= to {
        let (worst, _) = latency(arrivals, at, at + span);
        let gap = worst.saturating_sub(median);
        least = least.min(gap);
        most = most.max(gap);
        at += span;
    }
    (least.min(most), most)
}
