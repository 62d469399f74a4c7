//! An echo protocol written as a downstream crate would write a meshwire behaviour: no
//! connection handler, one struct that sees every peer, stream IO in futures it owns.
//!
//! `/meshwire-example/echo/1.0.0`: the dialer writes a message (at most
//! [`MAX_MESSAGE`] bytes) and closes its side; the listener writes the same bytes back and
//! closes.
//!
//! ```
//! use meshwire::core::Keypair;
//! use meshwire::swarm::{Swarm, SwarmConfig, SwarmEvent};
//! use meshwire::transport::quic::{QuicConfig, QuicTransport};
//! use meshwire_echo::{Echo, EchoEvent};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut a = Swarm::new(QuicTransport::new(Keypair::generate(), QuicConfig::default())?, Echo::default(), SwarmConfig::default());
//! let mut b = Swarm::new(QuicTransport::new(Keypair::generate(), QuicConfig::default())?, Echo::default(), SwarmConfig::default());
//! b.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
//! let addr = loop {
//!     if let SwarmEvent::NewListenAddr { address, .. } = b.next_event().await { break address; }
//! };
//! // Asking for an echo dials the peer at the address we know.
//! a.add_peer_address(b.local_peer_id(), addr);
//! a.behaviour_mut().send(b.local_peer_id(), b"hello".to_vec())?;
//! loop {
//!     tokio::select! {
//!         ev = a.next_event() => if let SwarmEvent::Behaviour(EchoEvent::Reply { data, .. }) = ev {
//!             assert_eq!(data, b"hello");
//!             break;
//!         },
//!         _ = b.next_event() => {}
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire::core::PeerId;
use meshwire::swarm::toolkit::{Outbox, QueueFull, Tasks, Timeout};
use meshwire::swarm::{
    InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult, Stream, StreamError,
    StreamProtocol, StreamRequestId, ToSwarm,
};

/// The protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/meshwire-example/echo/1.0.0");

/// Largest message echoed; longer ones are refused by both sides.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Echoes served at once; more inbound streams are reset.
pub const MAX_CONCURRENT_SERVED: usize = 64;

/// Our own echo requests in flight at once (queued, opening or exchanging); [`Echo::send`]
/// refuses more.
pub const MAX_IN_FLIGHT: usize = 64;

/// Time for one echo exchange.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an echo failed.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// The stream could not be opened, or failed.
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
    /// The reply is not what was sent.
    #[error("reply differs from the message")]
    Mismatch,
    /// The message or the reply is longer than [`MAX_MESSAGE`].
    #[error("message longer than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// The exchange took longer than [`TIMEOUT`].
    #[error(transparent)]
    Timeout(#[from] Timeout),
}

impl From<std::io::Error> for EchoError {
    fn from(e: std::io::Error) -> Self {
        EchoError::Stream(e.into())
    }
}

/// What the echo behaviour reports.
#[derive(Debug)]
pub enum EchoEvent {
    /// A peer echoed our message.
    Reply {
        /// The peer.
        peer: PeerId,
        /// The request.
        id: StreamRequestId,
        /// The echoed bytes.
        data: Vec<u8>,
        /// Time from asking for the stream to the full reply.
        rtt: Duration,
    },
    /// Our echo request failed.
    Failed {
        /// The peer.
        peer: PeerId,
        /// The request.
        id: StreamRequestId,
        /// Why.
        error: EchoError,
    },
    /// We echoed a peer's message back.
    Served {
        /// The peer.
        peer: PeerId,
        /// Bytes echoed.
        bytes: usize,
    },
    /// Serving a peer's request failed.
    ServeFailed {
        /// The peer.
        peer: PeerId,
        /// Why.
        error: EchoError,
    },
}

/// One request of ours: the peer, the request, when it was asked for.
type Request = (PeerId, StreamRequestId, Instant);

/// The echo behaviour: [`Echo::send`] asks a peer to echo; every peer's requests are served.
pub struct Echo {
    /// Stream requests (with the message each will carry) and events.
    outbox: Outbox<EchoEvent, (Vec<u8>, Instant)>,
    /// Our exchanges, yielding the reply.
    exchanges: Tasks<Request, Result<Vec<u8>, EchoError>>,
    /// Remotes' exchanges, yielding the bytes echoed.
    served: Tasks<PeerId, Result<usize, EchoError>>,
}

impl Default for Echo {
    fn default() -> Self {
        Echo {
            outbox: Outbox::new(MAX_IN_FLIGHT),
            exchanges: Tasks::new(MAX_IN_FLIGHT),
            served: Tasks::new(MAX_CONCURRENT_SERVED),
        }
    }
}

impl Echo {
    /// Asks `peer` to echo `data` (dialing it if needed). The answer is an
    /// [`EchoEvent::Reply`] or [`EchoEvent::Failed`] with the returned id.
    ///
    /// # Errors
    ///
    /// [`QueueFull`] while [`MAX_IN_FLIGHT`] requests are under way.
    pub fn send(&mut self, peer: PeerId, data: Vec<u8>) -> Result<StreamRequestId, QueueFull> {
        // Requests queued or opening plus exchanges running stay within one limit, so every
        // stream that comes back finds room in `exchanges`.
        if self.outbox.len() + self.exchanges.len() >= MAX_IN_FLIGHT {
            return Err(QueueFull {
                limit: MAX_IN_FLIGHT,
            });
        }
        let req = OpenStream::new(peer, PROTOCOL);
        if data.len() > MAX_MESSAGE {
            let id = req.id;
            let error = EchoError::TooLarge;
            self.outbox.event(EchoEvent::Failed { peer, id, error })?;
            return Ok(id);
        }
        self.outbox.open_stream(req, (data, Instant::now()))
    }
}

/// Reads the remote's whole message, refusing more than [`MAX_MESSAGE`] bytes.
async fn read_bounded(stream: &mut Stream) -> Result<Vec<u8>, EchoError> {
    let mut buf = Vec::new();
    let n = (&mut *stream)
        .take(MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut buf)
        .await?;
    if n > MAX_MESSAGE {
        stream.reset();
        return Err(EchoError::TooLarge);
    }
    Ok(buf)
}

impl NetworkBehaviour for Echo {
    type Event = EchoEvent;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL]
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let mut stream = inbound.stream;
        let serve = async move {
            let data = read_bounded(&mut stream).await?;
            stream.write_all(&data).await?;
            stream.close().await?;
            Ok(data.len())
        };
        // At the limit the future, and with it the stream, is dropped.
        let _ = self.served.try_push(inbound.peer, TIMEOUT, serve);
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some((data, started)) = self.outbox.take_stream(result.id) else {
            return;
        };
        let (peer, id) = (result.peer, result.id);
        let mut stream = match result.result {
            Ok(out) => out.stream,
            Err(e) => {
                let _ = self.outbox.event(EchoEvent::Failed {
                    peer,
                    id,
                    error: e.into(),
                });
                return;
            }
        };
        let exchange = async move {
            stream.write_all(&data).await?;
            stream.close().await?;
            let reply = read_bounded(&mut stream).await?;
            if reply != data {
                return Err(EchoError::Mismatch);
            }
            Ok(reply)
        };
        // `send` keeps room for every stream it asked for.
        let _ = self
            .exchanges
            .try_push((peer, id, started), TIMEOUT, exchange);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<EchoEvent>> {
        if let Poll::Ready(command) = self.outbox.poll(cx) {
            return Poll::Ready(command);
        }
        if let Poll::Ready(((peer, id, started), result)) = self.exchanges.poll_result(cx) {
            let event = match result {
                Ok(data) => EchoEvent::Reply {
                    peer,
                    id,
                    data,
                    rtt: started.elapsed(),
                },
                Err(error) => EchoEvent::Failed { peer, id, error },
            };
            return Poll::Ready(ToSwarm::GenerateEvent(event));
        }
        if let Poll::Ready((peer, result)) = self.served.poll_result(cx) {
            let event = match result {
                Ok(bytes) => EchoEvent::Served { peer, bytes },
                Err(error) => EchoEvent::ServeFailed { peer, error },
            };
            return Poll::Ready(ToSwarm::GenerateEvent(event));
        }
        Poll::Pending
    }
}
