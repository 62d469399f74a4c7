//! Swarms on real QUIC loopback, each run in its own task, for the integration tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Debug;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_core::Keypair;
use meshwire_ping as ping;
use meshwire_swarm::{
    InboundStream, Multiaddr, NetworkBehaviour, OpenStream, OutboundStreamResult, PeerId, Stream,
    StreamError, StreamProtocol, StreamRequestId, Swarm, SwarmConfig, SwarmEvent, ToSwarm,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A swarm running in its own task: events come out of a channel, dials go in.
pub struct Node<E> {
    pub peer: PeerId,
    /// The listen address, with `/p2p/<peer>`.
    pub addr: Multiaddr,
    pub events: mpsc::UnboundedReceiver<SwarmEvent<E>>,
    dials: mpsc::UnboundedSender<Multiaddr>,
    pub task: JoinHandle<()>,
}

impl<E> Node<E> {
    pub fn dial(&self, addr: &Multiaddr) {
        self.dials.send(addr.clone()).expect("node task alive");
    }

    /// The next swarm event within `within`; panics if the node's task ended (it panicked).
    pub async fn next(&mut self, within: Duration) -> Option<SwarmEvent<E>> {
        match tokio::time::timeout(within, self.events.recv()).await {
            Ok(Some(ev)) => Some(ev),
            Ok(None) => panic!("node task ended"),
            Err(_) => None,
        }
    }

    /// Dials `addr` and waits (at most 10 s) for the connection.
    pub async fn connect(&mut self, addr: &Multiaddr) {
        self.dial(addr);
        loop {
            let event = self.next(Duration::from_secs(10)).await;
            match event.expect("connection established") {
                SwarmEvent::ConnectionEstablished { .. } => return,
                _ => continue,
            }
        }
    }

    /// Stops the node: its swarm, transport and connections are dropped.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

impl Node<ping::Event> {
    /// The next ping event within `within`.
    pub async fn next_ping(&mut self, within: Duration) -> Option<ping::Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                SwarmEvent::Behaviour(ev) => return Some(ev),
                _ => continue,
            }
        }
    }
}

/// Logs to the test output, filtered by `RUST_LOG`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn ping_config(interval_ms: u64) -> ping::Config {
    ping::Config::default()
        .with_interval(Duration::from_millis(interval_ms))
        .with_timeout(Duration::from_secs(5))
}

/// Starts a swarm with `behaviour` listening on QUIC loopback.
pub async fn spawn_node<B>(behaviour: B) -> Node<B::Event>
where
    B: NetworkBehaviour,
    B::Event: Debug + Send,
{
    spawn_node_with(behaviour, SwarmConfig::default()).await
}

/// [`spawn_node`] with a swarm configuration.
pub async fn spawn_node_with<B>(behaviour: B, config: SwarmConfig) -> Node<B::Event>
where
    B: NetworkBehaviour,
    B::Event: Debug + Send,
{
    spawn_node_with_quic(behaviour, config, QuicConfig::default()).await
}

/// [`spawn_node`] with swarm and QUIC configurations.
pub async fn spawn_node_with_quic<B>(
    behaviour: B,
    config: SwarmConfig,
    quic: QuicConfig,
) -> Node<B::Event>
where
    B: NetworkBehaviour,
    B::Event: Debug + Send,
{
    init_tracing();
    let transport = QuicTransport::new(Keypair::generate(), quic).expect("quic transport");
    let mut swarm = Swarm::new(transport, behaviour, config);
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let peer = swarm.local_peer_id();
    let (ev_tx, events) = mpsc::unbounded_channel();
    let (dials, mut dial_rx) = mpsc::unbounded_channel::<Multiaddr>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = swarm.next_event() => {
                    // The test may have stopped listening; keep the swarm running regardless.
                    let _ = ev_tx.send(ev);
                }
                Some(addr) = dial_rx.recv() => {
                    swarm.dial(addr).expect("dial");
                }
            }
        }
    });
    Node {
        peer,
        addr: meshwire_transport::with_peer_id(&addr, peer),
        events,
        dials,
        task,
    }
}

type StreamReply = oneshot::Sender<Result<Stream, StreamError>>;

/// A test behaviour that hands raw ping streams to the test: outbound ones on request
/// ([`ProbeHandle::open`]), inbound ones (when it claims the protocol) through a channel. With
/// it a test plays a misbehaving remote: one that never answers, lies, or floods.
pub struct Prober {
    claim: bool,
    requests: mpsc::UnboundedReceiver<(PeerId, StreamReply)>,
    pending: HashMap<StreamRequestId, StreamReply>,
    inbound: mpsc::UnboundedSender<Stream>,
}

/// The test's side of a [`Prober`].
pub struct ProbeHandle {
    requests: mpsc::UnboundedSender<(PeerId, StreamReply)>,
    /// Inbound ping streams (only if the prober claims the protocol).
    pub inbound: mpsc::UnboundedReceiver<Stream>,
}

impl ProbeHandle {
    /// Asserts that `peer` echoes a ping on a fresh stream.
    pub async fn assert_answered(&self, peer: PeerId) {
        let mut s = self.open(peer).await.expect("stream");
        s.write_all(&[1u8; ping::PING_SIZE]).await.unwrap();
        let mut echo = [0u8; ping::PING_SIZE];
        s.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, [1u8; ping::PING_SIZE]);
    }

    /// Opens a ping stream to `peer` (on its existing connection).
    pub async fn open(&self, peer: PeerId) -> Result<Stream, StreamError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send((peer, tx)).expect("prober alive");
        rx.await.expect("prober answers")
    }
}

/// A prober; with `claim` it accepts `/ipfs/ping/1.0.0` streams (and never answers them
/// itself).
pub fn prober(claim: bool) -> (Prober, ProbeHandle) {
    let (req_tx, requests) = mpsc::unbounded_channel();
    let (in_tx, inbound) = mpsc::unbounded_channel();
    (
        Prober {
            claim,
            requests,
            pending: HashMap::new(),
            inbound: in_tx,
        },
        ProbeHandle {
            requests: req_tx,
            inbound,
        },
    )
}

impl NetworkBehaviour for Prober {
    type Event = ();

    fn protocols(&self) -> Vec<StreamProtocol> {
        if self.claim {
            vec![ping::PROTOCOL]
        } else {
            Vec::new()
        }
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        let _ = self.inbound.send(stream.stream);
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        if let Some(reply) = self.pending.remove(&result.id) {
            let _ = reply.send(result.result.map(|o| o.stream));
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
        match self.requests.poll_recv(cx) {
            Poll::Ready(Some((peer, reply))) => {
                let open = OpenStream::new(peer, ping::PROTOCOL).no_dial();
                self.pending.insert(open.id, reply);
                Poll::Ready(ToSwarm::OpenStream(open))
            }
            _ => Poll::Pending,
        }
    }
}
