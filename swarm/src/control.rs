//! [`StreamControl`]: streams opened and accepted from any task, without a round trip
//! through the swarm's task.
//!
//! A behaviour's [`OpenStream`](crate::OpenStream) travels to the swarm's task, is opened
//! there and comes back through
//! [`NetworkBehaviour::on_outbound_stream`](crate::NetworkBehaviour::on_outbound_stream); an
//! inbound stream reaches its behaviour through the swarm's task too. That suits protocols whose state lives
//! in the behaviour. Protocols that drive their streams from tasks of their own (a
//! request-response client, an RPC caller, a benchmark) pay two task hops per stream for it.
//! [`StreamControl`] is the direct path, the equivalent of rust-libp2p's `libp2p-stream`
//! `Control`, under the same rules as the swarm's own streams:
//!
//! - [`StreamControl::open_stream`] opens and negotiates a stream in the caller's task on the
//!   live connection to the peer the swarm would choose (a direct one over a relayed one,
//!   then the least busy). It is counted on that connection (keep-alive,
//!   [`ConnectionInfo::streams`](crate::ConnectionInfo)) and reserved in the resource
//!   manager, outbound, exactly as a behaviour's stream is; the negotiation has the swarm's
//!   [`SwarmConfig::negotiation_timeout`](crate::SwarmConfig::negotiation_timeout). It does
//!   not dial: without a live connection it fails with [`StreamError::NotConnected`] (dial
//!   through the swarm or its [`SwarmHandle`](crate::SwarmHandle) first).
//! - [`StreamControl::accept`] registers a protocol: the swarm announces it with the
//!   behaviours' protocols ([`FromSwarm::LocalProtocolsChanged`](crate::FromSwarm)), and
//!   inbound streams negotiated to it go to the returned [`IncomingStreams`] instead of a
//!   behaviour, after the same per-connection and resource-manager limits. At most
//!   [`SwarmConfig::incoming_stream_buffer`](crate::SwarmConfig::incoming_stream_buffer)
//!   streams wait to be taken; past that a new one is reset (an
//!   [`SwarmEvent::InboundStreamError`](crate::SwarmEvent::InboundStreamError) with
//!   [`StreamError::ReceiverFull`]). Dropping the [`IncomingStreams`] unregisters the
//!   protocol. A protocol registered here takes precedence over a behaviour claiming the
//!   same one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use meshwire_core::{ConnectionId, Direction, PeerId};
use meshwire_rcmgr::ResourceManager;
use meshwire_transport::Connection;
use tokio::sync::mpsc;

use crate::behaviour::InboundStream;
use crate::error::StreamError;
use crate::metrics::SwarmMetrics;
use crate::protocol::StreamProtocol;
use crate::stream::{Stream, StreamCounters, StreamGuard};

/// Opens and accepts streams from any task, without a round trip through the swarm's task.
/// Get one with [`Swarm::stream_control`](crate::Swarm::stream_control); clones share the
/// swarm. See the [module documentation](self) for the rules.
///
/// ```
/// # use meshwire_swarm::{DummyBehaviour, StreamProtocol, Swarm, SwarmConfig, SwarmEvent};
/// # use meshwire_transport::quic::{QuicConfig, QuicTransport};
/// # use meshwire_core::Keypair;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use futures::{AsyncReadExt, AsyncWriteExt};
/// const ECHO: StreamProtocol = StreamProtocol::new("/echo/1");
/// let quic = || QuicTransport::new(Keypair::generate(), QuicConfig::default());
/// let mut a = Swarm::new(quic()?, DummyBehaviour, SwarmConfig::default());
/// let mut b = Swarm::new(quic()?, DummyBehaviour, SwarmConfig::default());
/// // b serves the protocol from a task of its own.
/// let mut incoming = b.stream_control().accept(ECHO)?;
/// tokio::spawn(async move {
///     while let Some(mut s) = incoming.next().await {
///         let mut buf = Vec::new();
///         s.stream.read_to_end(&mut buf).await?;
///         s.stream.write_all(&buf).await?;
///         s.stream.close().await?;
///     }
///     Ok::<_, std::io::Error>(())
/// });
/// b.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
/// let addr = loop {
///     if let SwarmEvent::NewListenAddr { address, .. } = b.next_event().await { break address; }
/// };
/// let b_peer = b.local_peer_id();
/// tokio::spawn(async move { loop { b.next_event().await; } });
/// a.dial(meshwire_transport::with_peer_id(&addr, b_peer))?;
/// loop {
///     if let SwarmEvent::ConnectionEstablished { .. } = a.next_event().await { break; }
/// }
/// let control = a.stream_control();
/// tokio::spawn(async move { loop { a.next_event().await; } });
/// // a opens a stream in this task: no round trip through a's swarm task.
/// let mut s = control.open_stream(b_peer, ECHO).await?;
/// s.write_all(b"hello").await?;
/// s.close().await?;
/// let mut back = Vec::new();
/// s.read_to_end(&mut back).await?;
/// assert_eq!(back, b"hello");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct StreamControl {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StreamControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamControl").finish_non_exhaustive()
    }
}

/// [`StreamControl::accept`] was given a protocol already registered there.
#[derive(Debug, Clone, thiserror::Error)]
#[error("protocol {0} is already accepted through a stream control")]
pub struct AlreadyRegistered(pub StreamProtocol);

impl StreamControl {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        StreamControl { shared }
    }

    /// Opens a stream to `peer` negotiated to `protocol`, in the calling task, on the least
    /// busy live connection to it.
    ///
    /// # Errors
    ///
    /// [`StreamError::NotConnected`] without a live connection (this does not dial), a
    /// resource-manager refusal, or the opening or negotiation's failure. With a single
    /// protocol the negotiation is lazy: a refusal by the remote shows on the stream's first
    /// read ([`Stream::is_protocol_refused`]).
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<Stream, StreamError> {
        let result = self.open(peer, protocol).await;
        let metrics = self.shared.metrics();
        match &result {
            Ok(_) => metrics.outbound_streams.inc(),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "outbound stream failed (stream control)");
                metrics.outbound_stream_failures.inc()
            }
        };
        result
    }

    async fn open(&self, peer: PeerId, protocol: StreamProtocol) -> Result<Stream, StreamError> {
        let Some((conn, counters)) = self.shared.least_busy(&peer) else {
            return Err(StreamError::NotConnected);
        };
        let scope = self
            .shared
            .resources
            .open_stream(peer, Direction::Outbound)?;
        let mut guard = StreamGuard::new(counters, false, scope);
        let opened = conn
            .open_negotiated([protocol.as_str()], self.shared.negotiation_timeout)
            .await
            .map_err(StreamError::from_connection);
        // A failure on a connection that closed meanwhile is the close.
        let (name, io) = opened.map_err(|e| match conn.close_reason() {
            Some(reason) => StreamError::ConnectionClosed(reason),
            None => e,
        })?;
        guard.set_protocol(&name)?;
        Ok(Stream::new(io, guard))
    }

    /// Registers `protocol`: inbound streams negotiated to it arrive on the returned
    /// [`IncomingStreams`] (dropping it unregisters the protocol). The swarm announces the
    /// protocol the next time it runs.
    ///
    /// Each stream's multistream-select confirmation is written by its first read, write,
    /// flush or close (or its drop), so it leaves in one packet with the first answer: a
    /// dialer that waits for the confirmation before it writes (a non-lazy rust-libp2p
    /// dialer, a confirmed `OpenStream`) waits until the stream is first used — read it, or
    /// write to it, rather than hold it unused.
    ///
    /// # Errors
    ///
    /// [`AlreadyRegistered`] if a live [`IncomingStreams`] has it.
    pub fn accept(&self, protocol: StreamProtocol) -> Result<IncomingStreams, AlreadyRegistered> {
        let (tx, rx) = mpsc::channel(self.shared.incoming_buffer.max(1));
        {
            let mut incoming = self
                .shared
                .incoming
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if incoming.get(&protocol).is_some_and(|s| !s.is_closed()) {
                return Err(AlreadyRegistered(protocol));
            }
            incoming.insert(protocol.clone(), tx);
        }
        self.shared.protocols_changed();
        Ok(IncomingStreams {
            protocol,
            rx,
            shared: self.shared.clone(),
        })
    }
}

/// Inbound streams of one protocol registered with [`StreamControl::accept`]. Dropping it
/// unregisters the protocol; streams still waiting are reset.
pub struct IncomingStreams {
    protocol: StreamProtocol,
    rx: mpsc::Receiver<InboundStream>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IncomingStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingStreams")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl IncomingStreams {
    /// The protocol.
    pub fn protocol(&self) -> &StreamProtocol {
        &self.protocol
    }

    /// The next inbound stream; `None` once the swarm is gone.
    pub async fn next(&mut self) -> Option<InboundStream> {
        self.rx.recv().await
    }
}

impl futures::Stream for IncomingStreams {
    type Item = InboundStream;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<InboundStream>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

impl Drop for IncomingStreams {
    fn drop(&mut self) {
        // Closed first: our sender then reads as closed, and a stream delivered meanwhile is
        // refused rather than left in a receiver nobody reads.
        self.rx.close();
        let mut incoming = self
            .shared
            .incoming
            .write()
            .unwrap_or_else(|e| e.into_inner());
        // Only ours: a later registration of the same protocol has its own, open sender.
        if incoming.get(&self.protocol).is_some_and(|s| s.is_closed()) {
            incoming.remove(&self.protocol);
        }
        drop(incoming);
        self.shared.protocols_changed();
    }
}

/// A live connection the control may open streams on.
struct LiveConn {
    id: ConnectionId,
    conn: Connection,
    counters: Arc<StreamCounters>,
}

/// What the swarm shares with its [`StreamControl`]s.
pub(crate) struct Shared {
    /// Live (established, not closing) connections per peer; kept by the swarm's pool.
    live: RwLock<HashMap<PeerId, Vec<LiveConn>>>,
    /// Protocols registered with [`StreamControl::accept`].
    incoming: RwLock<HashMap<StreamProtocol, mpsc::Sender<InboundStream>>>,
    /// Set when `incoming` changed and the swarm has not looked yet.
    changed: AtomicBool,
    /// Wakes the swarm for `changed`.
    waker: AtomicWaker,
    resources: ResourceManager,
    negotiation_timeout: Duration,
    incoming_buffer: usize,
    metrics: RwLock<Arc<SwarmMetrics>>,
}

/// What [`Shared::deliver`] did with an inbound stream. (Returned and matched at once, never
/// stored: the size difference costs nothing, boxing the stream would cost an allocation.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Delivery {
    /// No control registered the protocol: the stream is given back.
    NotRegistered(InboundStream),
    /// Handed to the protocol's [`IncomingStreams`].
    Delivered,
    /// Reset: the receiver's buffer is full ([`StreamError::ReceiverFull`]) or it is gone
    /// ([`StreamError::UnsupportedProtocols`]).
    Refused(StreamError),
}

impl Shared {
    pub(crate) fn new(
        resources: ResourceManager,
        negotiation_timeout: Duration,
        incoming_buffer: usize,
    ) -> Arc<Self> {
        Arc::new(Shared {
            live: RwLock::new(HashMap::new()),
            incoming: RwLock::new(HashMap::new()),
            changed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            resources,
            negotiation_timeout,
            incoming_buffer,
            metrics: RwLock::new(Arc::new(SwarmMetrics::default())),
        })
    }

    fn metrics(&self) -> Arc<SwarmMetrics> {
        self.metrics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_metrics(&self, metrics: SwarmMetrics) {
        *self.metrics.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(metrics);
    }

    /// Counts an inbound stream refused without an event (a connection's acceptor, when the
    /// swarm's task has too many reports waiting).
    pub(crate) fn count_inbound_error(&self) {
        self.metrics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .inbound_stream_errors
            .inc();
    }

    /// Counts an inbound stream handed to an [`IncomingStreams`] (by a connection's acceptor).
    pub(crate) fn count_inbound(&self) {
        self.metrics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .inbound_streams
            .inc();
    }

    fn protocols_changed(&self) {
        self.changed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the registered protocols changed since the last call (registers the swarm's
    /// waker for the next change).
    pub(crate) fn poll_changed(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.changed.swap(false, Ordering::AcqRel)
    }

    /// The protocols registered (with a live receiver).
    pub(crate) fn protocols(&self) -> Vec<StreamProtocol> {
        self.incoming
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Hands `stream` to the [`IncomingStreams`] of its protocol, if one is registered.
    pub(crate) fn deliver(&self, stream: InboundStream) -> Delivery {
        let incoming = self.incoming.read().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = incoming.get(&stream.protocol) else {
            return Delivery::NotRegistered(stream);
        };
        match tx.try_send(stream) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(mut s)) => {
                s.stream.reset();
                Delivery::Refused(StreamError::ReceiverFull {
                    capacity: self.incoming_buffer.max(1),
                })
            }
            Err(mpsc::error::TrySendError::Closed(mut s)) => {
                s.stream.reset();
                Delivery::Refused(StreamError::UnsupportedProtocols)
            }
        }
    }

    /// A connection is established.
    pub(crate) fn add_connection(
        &self,
        id: ConnectionId,
        conn: &Connection,
        counters: &Arc<StreamCounters>,
    ) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        live.entry(conn.peer_id()).or_default().push(LiveConn {
            id,
            conn: conn.clone(),
            counters: counters.clone(),
        });
    }

    /// A connection is closing or gone.
    pub(crate) fn remove_connection(&self, peer: &PeerId, id: ConnectionId) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = live.get_mut(peer) {
            list.retain(|c| c.id != id);
            if list.is_empty() {
                live.remove(peer);
            }
        }
    }

    /// The live connection to `peer` new streams go on, by the swarm's rule: a direct one
    /// over a relayed one, then the one with the fewest open streams.
    fn least_busy(&self, peer: &PeerId) -> Option<(Connection, Arc<StreamCounters>)> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.get(peer)?
            .iter()
            .filter(|c| c.conn.close_reason().is_none())
            .min_by_key(|c| (c.conn.is_relayed(), c.counters.open()))
            .map(|c| (c.conn.clone(), c.counters.clone()))
    }
}
