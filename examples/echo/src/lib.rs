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
//! a.behaviour_mut().send(b.local_peer_id(), b"hello".to_vec());
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

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use meshwire::core::PeerId;
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

/// Time for one echo exchange.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an echo failed.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// The stream could not be opened.
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
    /// Reading or writing failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The reply is not what was sent.
    #[error("reply differs from the message")]
    Mismatch,
    /// The message or the reply is longer than [`MAX_MESSAGE`].
    #[error("message longer than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// The exchange took longer than [`TIMEOUT`].
    #[error("timed out")]
    Timeout,
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

type Pending = BoxFuture<'static, EchoEvent>;

/// The echo behaviour: [`Echo::send`] asks a peer to echo; every peer's requests are served.
#[derive(Default)]
pub struct Echo {
    outgoing: VecDeque<ToSwarm<EchoEvent>>,
    /// Messages waiting for their stream, by request.
    waiting: Vec<(StreamRequestId, Vec<u8>, Instant)>,
    exchanges: FuturesUnordered<Pending>,
    served: FuturesUnordered<Pending>,
    waker: Option<Waker>,
}

impl Echo {
    /// Asks `peer` to echo `data` (dialing it if needed). The answer is an
    /// [`EchoEvent::Reply`] or [`EchoEvent::Failed`] with the returned id.
    pub fn send(&mut self, peer: PeerId, data: Vec<u8>) -> StreamRequestId {
        let req = OpenStream::new(peer, PROTOCOL);
        let id = req.id;
        if data.len() > MAX_MESSAGE {
            self.outgoing
                .push_back(ToSwarm::GenerateEvent(EchoEvent::Failed {
                    peer,
                    id,
                    error: EchoError::TooLarge,
                }));
        } else {
            self.waiting.push((id, data, Instant::now()));
            self.outgoing.push_back(ToSwarm::OpenStream(req));
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        id
    }
}

/// Reads the remote's whole message, refusing more than [`MAX_MESSAGE`] bytes.
async fn read_bounded(stream: &mut Stream) -> Result<Vec<u8>, EchoError> {
    let mut buf = Vec::new();
    let n = (&mut *stream)
        .take(MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| EchoError::Stream(StreamError::from_io(e)))?;
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

    fn on_inbound_stream(&mut self, mut inbound: InboundStream) {
        if self.served.len() >= MAX_CONCURRENT_SERVED {
            inbound.stream.reset();
            return;
        }
        let peer = inbound.peer;
        let mut stream = inbound.stream;
        self.served.push(
            async move {
                let work = async {
                    let data = read_bounded(&mut stream).await?;
                    stream.write_all(&data).await?;
                    stream.close().await?;
                    Ok::<_, EchoError>(data.len())
                };
                match tokio::time::timeout(TIMEOUT, work).await {
                    Ok(Ok(bytes)) => EchoEvent::Served { peer, bytes },
                    Ok(Err(error)) => EchoEvent::ServeFailed { peer, error },
                    Err(_) => EchoEvent::ServeFailed {
                        peer,
                        error: EchoError::Timeout,
                    },
                }
            }
            .boxed(),
        );
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some(pos) = self.waiting.iter().position(|(id, ..)| *id == result.id) else {
            return;
        };
        let (id, data, started) = self.waiting.swap_remove(pos);
        let peer = result.peer;
        let mut out = match result.result {
            Ok(out) => out,
            Err(e) => {
                self.outgoing
                    .push_back(ToSwarm::GenerateEvent(EchoEvent::Failed {
                        peer,
                        id,
                        error: e.into(),
                    }));
                return;
            }
        };
        self.exchanges.push(
            async move {
                let work = async {
                    out.stream.write_all(&data).await?;
                    out.stream.close().await?;
                    let reply = read_bounded(&mut out.stream).await?;
                    if reply != data {
                        return Err(EchoError::Mismatch);
                    }
                    Ok(reply)
                };
                match tokio::time::timeout(TIMEOUT, work).await {
                    Ok(Ok(data)) => EchoEvent::Reply {
                        peer,
                        id,
                        data,
                        rtt: started.elapsed(),
                    },
                    Ok(Err(error)) => EchoEvent::Failed { peer, id, error },
                    Err(_) => EchoEvent::Failed {
                        peer,
                        id,
                        error: EchoError::Timeout,
                    },
                }
            }
            .boxed(),
        );
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<EchoEvent>> {
        if let Some(cmd) = self.outgoing.pop_front() {
            return Poll::Ready(cmd);
        }
        if let Poll::Ready(Some(ev)) = self.exchanges.poll_next_unpin(cx) {
            return Poll::Ready(ToSwarm::GenerateEvent(ev));
        }
        if let Poll::Ready(Some(ev)) = self.served.poll_next_unpin(cx) {
            return Poll::Ready(ToSwarm::GenerateEvent(ev));
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
