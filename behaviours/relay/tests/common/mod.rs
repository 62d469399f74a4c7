//! Loopback QUIC nodes for the relay tests: a relay (server and ping) and clients (relay
//! client and ping) whose transport is QUIC or a circuit; swarms driven in their own tasks
//! ([`Node`]), raw QUIC peers for hand-made relay messages ([`raw_connect`], [`FakeRelay`]).

#![allow(dead_code)]

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_core::{ConnectionId, Keypair, PeerId};
use meshwire_relay::client::{self, CircuitError};
use meshwire_relay::protocol::io::{read_hop_response, write_hop_request};
use meshwire_relay::protocol::{HopRequest, HopResponse, Status, HOP_PROTOCOL};
use meshwire_relay::{BehaviourConfig, RelayMetrics, ServerConfig, ServerEvent};
use meshwire_swarm::connmgr::DynConnManager;
use meshwire_swarm::{DialError, DialOpts, NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{
    with_peer_id, Connection, ListenerId, Multiaddr, Transport, TransportError, TransportEvent,
    TransportExt,
};
use tokio::sync::mpsc;

/// Bound on every wait of a test step (generous: the machine may be loaded).
pub const T: Duration = Duration::from_secs(30);

/// Where nodes listen.
pub const LOOPBACK: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

/// A relay node.
#[derive(NetworkBehaviour)]
pub struct RelayNode {
    pub relay: meshwire_relay::Behaviour,
    pub ping: meshwire_ping::Behaviour,
}

/// A node behind the relay (or dialing through it).
#[derive(NetworkBehaviour)]
pub struct ClientNode {
    pub relay_client: client::Behaviour,
    pub ping: meshwire_ping::Behaviour,
}

pub fn ping() -> meshwire_ping::Behaviour {
    meshwire_ping::Behaviour::new(
        meshwire_ping::Config::new().with_interval(Duration::from_millis(200)),
    )
}

/// Swarm settings of the tests: idle connections stay a minute, so that only what a test
/// provokes closes them.
pub fn swarm_config() -> SwarmConfig {
    SwarmConfig {
        idle_connection_timeout: Some(Duration::from_secs(60)),
        ..SwarmConfig::default()
    }
}

/// A relay listening on loopback QUIC; returns it and its address with `/p2p/<relay>`.
pub async fn relay(config: ServerConfig) -> (Swarm<RelayNode>, Multiaddr) {
    relay_with(config, BehaviourConfig::default()).await
}

pub async fn relay_with(
    config: ServerConfig,
    io: BehaviourConfig,
) -> (Swarm<RelayNode>, Multiaddr) {
    relay_swarm(config, io, None).await
}

async fn relay_swarm(
    config: ServerConfig,
    io: BehaviourConfig,
    metrics: Option<RelayMetrics>,
) -> (Swarm<RelayNode>, Multiaddr) {
    let key = Keypair::generate();
    let mut relay =
        meshwire_relay::Behaviour::with_config(key.clone(), config, io).expect("config");
    if let Some(m) = metrics {
        relay = relay.with_metrics(m);
    }
    let behaviour = RelayNode {
        relay,
        ping: ping(),
    };
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, behaviour, swarm_config());
    let addr = listen(&mut swarm).await;
    let id = swarm.local_peer_id();
    (swarm, with_peer_id(&addr, id))
}

/// Listens on loopback QUIC and returns the address (without `/p2p`).
pub async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm.listen_on(LOOPBACK.parse().unwrap()).expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            return address;
        }
    }
}

/// A node with QUIC and the relay client.
pub fn client_node(config: client::Config) -> Swarm<ClientNode> {
    client_swarm(Keypair::generate(), config, swarm_config(), None)
}

/// A client node with its key, swarm settings and connection manager chosen.
pub fn client_swarm(
    key: Keypair,
    config: client::Config,
    swarm_config: SwarmConfig,
    cm: Option<DynConnManager>,
) -> Swarm<ClientNode> {
    let (relay_transport, relay_client) = client::new(key.clone(), config);
    let transport = QuicTransport::new(key, QuicConfig::default())
        .expect("quic")
        .or_transport(relay_transport);
    let behaviour = ClientNode {
        relay_client,
        ping: ping(),
    };
    match cm {
        Some(cm) => Swarm::with_conn_manager(transport, behaviour, swarm_config, cm),
        None => Swarm::new(transport, behaviour, swarm_config),
    }
}

/// `<relay addr>/p2p-circuit`.
pub fn circuit(relay_addr: &Multiaddr) -> Multiaddr {
    relay_addr
        .clone()
        .with(meshwire_transport::Protocol::P2pCircuit)
}

/// `<relay addr>/p2p-circuit/p2p/<peer>`.
pub fn circuit_to(relay_addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    with_peer_id(&circuit(relay_addr), peer)
}

/// Drives `swarm` in a task for the rest of the test, forwarding its events.
pub fn spawn<B>(mut swarm: Swarm<B>) -> mpsc::UnboundedReceiver<SwarmEvent<B::Event>>
where
    B: NetworkBehaviour,
    B::Event: Send + std::fmt::Debug,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = swarm.next_event().await;
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    rx
}

type Cmd<B> = Box<dyn FnOnce(&mut Swarm<B>) + Send>;

/// A swarm driven by its own task: the test reaches it with [`Node::call`] and reads its
/// events with [`Node::wait_for`]. Aborted when dropped.
pub struct Node<B: NetworkBehaviour> {
    pub peer: PeerId,
    cmds: mpsc::UnboundedSender<Cmd<B>>,
    events: mpsc::UnboundedReceiver<SwarmEvent<B::Event>>,
    /// Every event read so far, in order (those [`Node::wait_for`] picked included).
    pub log: Vec<SwarmEvent<B::Event>>,
    task: tokio::task::JoinHandle<()>,
}

impl<B> Node<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::Event: Send + Debug + 'static,
{
    pub fn spawn(swarm: Swarm<B>) -> Self {
        Self::spawn_with(swarm, |_, _| {})
    }

    /// Like [`Node::spawn`]; `hook` sees the swarm after each event, in the swarm's task.
    pub fn spawn_with(
        mut swarm: Swarm<B>,
        mut hook: impl FnMut(&Swarm<B>, &SwarmEvent<B::Event>) + Send + 'static,
    ) -> Self {
        let peer = swarm.local_peer_id();
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Cmd<B>>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    cmd = cmd_rx.recv() => match cmd {
                        Some(f) => f(&mut swarm),
                        None => break,
                    },
                    ev = swarm.next_event() => {
                        hook(&swarm, &ev);
                        if ev_tx.send(ev).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Node {
            peer,
            cmds: cmd_tx,
            events: ev_rx,
            log: Vec::new(),
            task,
        }
    }

    /// Runs `f` on the swarm, in its task.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<B>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.cmds
            .send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .expect("node alive");
        tokio::time::timeout(T, rx)
            .await
            .expect("node answers in time")
            .expect("node replied")
    }

    /// Reads events until `f` picks one (within [`T`]); every event read goes to the log.
    pub async fn wait_for<R>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&SwarmEvent<B::Event>) -> Option<R>,
    ) -> R {
        let events = &mut self.events;
        let log = &mut self.log;
        let peer = self.peer;
        tokio::time::timeout(T, async {
            loop {
                let ev = events.recv().await.expect("node alive");
                let picked = f(&ev);
                log.push(ev);
                if let Some(r) = picked {
                    return r;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{peer}: timed out waiting for {what}"))
    }

    /// The first event of the log `f` picks, or else the next one read.
    pub async fn find_or_wait<R>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&SwarmEvent<B::Event>) -> Option<R>,
    ) -> R {
        if let Some(r) = self.log.iter().find_map(&mut f) {
            return r;
        }
        self.wait_for(what, f).await
    }

    /// Whether any event read so far satisfies `f`.
    pub fn seen(&self, f: impl Fn(&SwarmEvent<B::Event>) -> bool) -> bool {
        self.log.iter().any(f)
    }
}

impl<B: NetworkBehaviour> Drop for Node<B> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A relay in its task, with the most reservations and circuits it ever held (sampled after
/// each of its events: every admission is followed by one).
pub struct Relay {
    pub node: Node<RelayNode>,
    /// Its address with `/p2p/<relay>`.
    pub addr: Multiaddr,
    pub peer: PeerId,
    pub max_reservations: Arc<AtomicUsize>,
    pub max_circuits: Arc<AtomicUsize>,
}

pub async fn start_relay(config: ServerConfig) -> Relay {
    start_relay_with(config, BehaviourConfig::default(), None).await
}

pub async fn start_relay_with(
    config: ServerConfig,
    io: BehaviourConfig,
    metrics: Option<RelayMetrics>,
) -> Relay {
    let (swarm, addr) = relay_swarm(config, io, metrics).await;
    let max_reservations = Arc::new(AtomicUsize::new(0));
    let max_circuits = Arc::new(AtomicUsize::new(0));
    let (r, c) = (max_reservations.clone(), max_circuits.clone());
    let node = Node::spawn_with(swarm, move |swarm, _| {
        let engine = swarm.behaviour().relay.engine();
        r.fetch_max(engine.reservation_count(), Ordering::SeqCst);
        c.fetch_max(engine.circuit_count(), Ordering::SeqCst);
    });
    Relay {
        peer: node.peer,
        node,
        addr,
        max_reservations,
        max_circuits,
    }
}

impl Relay {
    /// Waits for a server event `f` picks.
    pub async fn wait_event<R>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&ServerEvent) -> Option<R>,
    ) -> R {
        self.node
            .wait_for(what, |e| match e {
                SwarmEvent::Behaviour(RelayNodeEvent::Relay(ev)) => f(ev),
                _ => None,
            })
            .await
    }

    /// Server events read so far.
    pub fn events(&self) -> impl Iterator<Item = &ServerEvent> {
        self.node.log.iter().filter_map(|e| match e {
            SwarmEvent::Behaviour(RelayNodeEvent::Relay(ev)) => Some(ev),
            _ => None,
        })
    }

    /// (reservations, circuits) the relay holds now.
    pub async fn counts(&self) -> (usize, usize) {
        self.node
            .call(|s| {
                let e = s.behaviour().relay.engine();
                (e.reservation_count(), e.circuit_count())
            })
            .await
    }
}

/// A behaviour that contains the relay client, for the helpers of [`Node`].
pub trait WithRelayClient: NetworkBehaviour {
    fn relay_event(event: &Self::Event) -> Option<&client::Event>;
}

impl WithRelayClient for ClientNode {
    fn relay_event(event: &ClientNodeEvent) -> Option<&client::Event> {
        match event {
            ClientNodeEvent::RelayClient(e) => Some(e),
            _ => None,
        }
    }
}

impl WithRelayClient for client::Behaviour {
    fn relay_event(event: &client::Event) -> Option<&client::Event> {
        Some(event)
    }
}

/// The relay client's event in a swarm event, if it is one.
pub fn client_event<B: WithRelayClient>(e: &SwarmEvent<B::Event>) -> Option<&client::Event> {
    match e {
        SwarmEvent::Behaviour(b) => B::relay_event(b),
        _ => None,
    }
}

/// The circuit error a transport error carries, if it is one.
pub fn circuit_error(e: &TransportError) -> Option<&CircuitError> {
    match e {
        TransportError::Other(inner) => inner.downcast_ref::<CircuitError>(),
        _ => None,
    }
}

/// The relay's refusal status in a failed circuit dial, if that is why it failed.
pub fn refused_status(e: &DialError) -> Option<Status> {
    let DialError::Transport(errors) = e else {
        return None;
    };
    errors.iter().find_map(|(_, e)| match circuit_error(e) {
        Some(CircuitError::Refused { status, .. }) => Some(*status),
        _ => None,
    })
}

impl<B> Node<B>
where
    B: WithRelayClient + Send + 'static,
    B::Event: Send + Debug + 'static,
{
    /// Listens through the relay at `relay_addr`: the listener and its relayed address once
    /// the reservation is accepted, or the reservation's error (its listener then closed with
    /// that error).
    pub async fn try_reserve(
        &mut self,
        relay_addr: &Multiaddr,
    ) -> Result<(ListenerId, Multiaddr), CircuitError> {
        let addr = circuit(relay_addr);
        let id = self
            .call(move |s| s.listen_on(addr))
            .await
            .expect("listen through the relay");
        let outcome = self
            .wait_for("the reservation's outcome", |e| match e {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } if *listener_id == id => Some(Ok(address.clone())),
                e => match client_event::<B>(e) {
                    Some(client::Event::ReservationFailed { error, .. }) => {
                        Some(Err(error.clone()))
                    }
                    _ => None,
                },
            })
            .await;
        match outcome {
            Ok(address) => Ok((id, address)),
            Err(error) => {
                // The listener closes with the same error.
                let reason = self
                    .wait_for("the listener to close", |e| match e {
                        SwarmEvent::ListenerClosed {
                            listener_id,
                            reason,
                            ..
                        } if *listener_id == id => Some(match reason {
                            Err(e) => circuit_error(e).map(|c| c.to_string()),
                            Ok(()) => None,
                        }),
                        _ => None,
                    })
                    .await;
                assert_eq!(reason, Some(error.to_string()), "listener closed with it");
                Err(error)
            }
        }
    }

    /// [`Node::try_reserve`] that must succeed.
    pub async fn reserve(&mut self, relay_addr: &Multiaddr) -> (ListenerId, Multiaddr) {
        match self.try_reserve(relay_addr).await {
            Ok(r) => r,
            Err(e) => panic!("reservation failed: {e}"),
        }
    }

    /// Dials `dst` through the relay at `relay_addr`: the relayed connection, or the dial's
    /// error.
    pub async fn dial_circuit(
        &mut self,
        relay_addr: &Multiaddr,
        dst: PeerId,
    ) -> Result<ConnectionId, Arc<DialError>> {
        let target = circuit_to(relay_addr, dst);
        let id = self
            .call(move |s| s.dial(DialOpts::peer(dst).address(target)))
            .await?;
        self.wait_for("the circuit dial's outcome", |e| match e {
            SwarmEvent::ConnectionEstablished {
                connection_id,
                endpoint,
                ..
            } if *connection_id == id => {
                assert!(endpoint.is_relayed(), "{endpoint:?}");
                Some(Ok(id))
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } if *connection_id == id => Some(Err(error.clone())),
            _ => None,
        })
        .await
    }
}

/// A client node in its task.
pub fn start_client(config: client::Config) -> Node<ClientNode> {
    Node::spawn(client_node(config))
}

/// A node of ping alone listening on loopback QUIC, in its task; with its address.
pub async fn start_pinger() -> (Node<meshwire_ping::Behaviour>, Multiaddr) {
    let key = Keypair::generate();
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, ping(), swarm_config());
    let addr = listen(&mut swarm).await;
    let addr = with_peer_id(&addr, swarm.local_peer_id());
    (Node::spawn(swarm), addr)
}

/// A raw QUIC connection to `addr` (with `/p2p/<peer>`), made by a new identity outside any
/// swarm: streams on it carry whatever bytes the test writes.
pub async fn raw_connect(addr: &Multiaddr) -> Connection {
    let mut transport =
        QuicTransport::new(Keypair::generate(), QuicConfig::default()).expect("quic");
    let dial = transport.dial(addr, None).expect("dial");
    tokio::time::timeout(T, dial)
        .await
        .expect("handshake in time")
        .expect("raw connection")
}

/// Opens a hop stream on `conn`.
pub async fn hop_stream(
    conn: &Connection,
) -> meshwire_transport::multistream::Negotiated<meshwire_transport::Stream> {
    conn.open_negotiated([HOP_PROTOCOL], T)
        .await
        .expect("hop stream")
        .1
}

/// Writes `bytes` on a fresh hop stream and reads the relay's answer.
pub async fn raw_hop_exchange(conn: &Connection, bytes: &[u8]) -> HopResponse {
    let mut stream = hop_stream(conn).await;
    stream.write_all(bytes).await.expect("write");
    stream.flush().await.expect("flush");
    let response = tokio::time::timeout(T, read_hop_response(&mut stream))
        .await
        .expect("answer in time")
        .expect("a hop response");
    // The relay closes the stream after its answer.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(T, stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "nothing follows a refusal");
    response
}

/// Sends a hop request on a fresh stream of `conn` and reads the answer; returns the stream
/// too (after `OK` to a CONNECT it is the circuit).
pub async fn raw_hop_request(
    conn: &Connection,
    request: HopRequest,
) -> (
    HopResponse,
    meshwire_transport::multistream::Negotiated<meshwire_transport::Stream>,
) {
    let mut stream = hop_stream(conn).await;
    write_hop_request(&mut stream, &request)
        .await
        .expect("write");
    let response = tokio::time::timeout(T, read_hop_response(&mut stream))
        .await
        .expect("answer in time")
        .expect("a hop response");
    (response, stream)
}

/// A QUIC peer that hands every connection to the test, for hand-made relay behaviour.
pub struct FakeRelay {
    pub key: Keypair,
    pub peer: PeerId,
    /// Its address with `/p2p/<peer>`.
    pub addr: Multiaddr,
    conns: mpsc::UnboundedReceiver<Connection>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRelay {
    pub async fn start() -> FakeRelay {
        let key = Keypair::generate();
        let peer = key.peer_id();
        let mut transport = QuicTransport::new(key.clone(), QuicConfig::default()).expect("quic");
        transport
            .listen_on(LOOPBACK.parse().unwrap())
            .expect("listen");
        let TransportEvent::NewListenAddr { addr, .. } = transport.next_event().await else {
            panic!("no listen address")
        };
        let (tx, conns) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                if let TransportEvent::Incoming { upgrade, .. } = transport.next_event().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Ok(c) = upgrade.await {
                            let _ = tx.send(c);
                        }
                    });
                }
            }
        });
        FakeRelay {
            key,
            peer,
            addr: with_peer_id(&addr, peer),
            conns,
            task,
        }
    }

    /// The next connection made to it.
    pub async fn connection(&mut self) -> Connection {
        tokio::time::timeout(T, self.conns.recv())
            .await
            .expect("a connection in time")
            .expect("listener alive")
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits (bounded by [`T`]) until `f` holds, checking every 10 ms: for state with no event
/// of its own (a connection manager's protection, ...).
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    tokio::time::timeout(T, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
