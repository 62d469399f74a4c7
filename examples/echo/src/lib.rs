//! An echo protocol written as a downstream crate would write a meshwire behaviour: on
//! meshwire's request-response building block (`meshwire::request_response`), composed by
//! `#[derive(NetworkBehaviour)]`; a responder answers each request with its own bytes, and a
//! `From` conversion turns the building block's events into the crate's own. No stream, queue, limit
//! or timeout is handled here: the building block does all of it. The behaviour is what lies
//! between the markers in `src/lib.rs` (the public constants, the error and event types are
//! above them): 39 lines of code, half of them the event conversion, one line per outcome.
//!
//! `/meshwire-example/echo/1.0.0`, request-response with the raw bytes codec: the dialer
//! writes a message (at most [`MAX_MESSAGE`] bytes) and closes its side; the listener
//! writes the same bytes back and closes. (The same bytes on the wire as the hand-written
//! echo this crate had before.)
//!
//! ```
//! use meshwire::core::Keypair;
//! use meshwire::swarm::{Swarm, SwarmConfig, SwarmEvent};
//! use meshwire::transport::quic::{QuicConfig, QuicTransport};
//! use meshwire_echo::{Echo, EchoEvent, MAX_MESSAGE};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut a = Swarm::new(QuicTransport::new(Keypair::generate(), QuicConfig::default())?, Echo::new(MAX_MESSAGE), SwarmConfig::default());
//! let mut b = Swarm::new(QuicTransport::new(Keypair::generate(), QuicConfig::default())?, Echo::new(MAX_MESSAGE), SwarmConfig::default());
//! b.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
//! let addr = loop {
//!     if let SwarmEvent::NewListenAddr { address, .. } = b.next_event().await { break address; }
//! };
//! // Asking for an echo dials the peer at the address we know.
//! a.add_peer_address(b.local_peer_id(), addr);
//! a.behaviour_mut().send(b.local_peer_id(), b"hello".to_vec())?;
//! loop {
//!     tokio::select! {
//!         ev = a.next_event() => if let SwarmEvent::Behaviour(EchoEvent::Reply { result, .. }) = ev {
//!             let (data, _rtt) = result?;
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

use std::time::{Duration, Instant};

use meshwire::core::PeerId;
use meshwire::request_response::Message::{Request, Response};
use meshwire::request_response::{self as rr, Config, Event, ProtocolSupport};
use meshwire::request_response::{InboundFailure, OutboundFailure, QueueFull};
use meshwire::swarm::{NetworkBehaviour, StreamProtocol};

pub use meshwire::request_response::OutboundRequestId;

/// The protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/meshwire-example/echo/1.0.0");

/// Largest message echoed; longer ones are refused by both sides.
pub const MAX_MESSAGE: u64 = 64 * 1024;

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
    /// Our request failed (dial, stream, timeout, ...).
    #[error("echo request: {0}")]
    Outbound(OutboundFailure),
    /// Serving a peer's request failed.
    #[error("serving an echo: {0}")]
    Inbound(InboundFailure),
    /// The reply is not what was sent.
    #[error("reply differs from the message")]
    Mismatch,
    /// The message or the reply is longer than [`MAX_MESSAGE`].
    #[error("message longer than {MAX_MESSAGE} bytes")]
    TooLarge,
}

impl From<OutboundFailure> for EchoError {
    fn from(e: OutboundFailure) -> Self {
        match e {
            OutboundFailure::TooLarge { .. } => EchoError::TooLarge,
            e => EchoError::Outbound(e),
        }
    }
}

impl From<InboundFailure> for EchoError {
    fn from(e: InboundFailure) -> Self {
        match e {
            InboundFailure::TooLarge { .. } => EchoError::TooLarge,
            e => EchoError::Inbound(e),
        }
    }
}

/// What the echo behaviour reports.
#[derive(Debug)]
pub enum EchoEvent {
    /// How our request `id` to `peer` ended: the echoed bytes (checked equal to the message)
    /// and the time from the request to the full reply, or why not.
    Reply {
        /// The peer asked.
        peer: PeerId,
        /// The id [`Echo::send`] returned.
        id: OutboundRequestId,
        /// The echoed bytes and the round trip, or the failure.
        result: Result<(Vec<u8>, Duration), EchoError>,
    },
    /// A peer's request was echoed back (written, and the stream closed), or serving it
    /// failed.
    Served {
        /// The peer served.
        peer: PeerId,
        /// `Ok` once the echo is written.
        result: Result<(), EchoError>,
    },
}

/// What the building block reports: its user data is each request's message and start.
type RrEvent = rr::Event<Vec<u8>, Vec<u8>, (Vec<u8>, Instant)>;

// ---- The behaviour, to the end of the event conversion. ----
/// The echo behaviour: every peer's request is answered with its own bytes; [`Echo::send`]
/// asks a peer to echo.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "EchoEvent")]
pub struct Echo {
    rr: rr::bytes::Behaviour<(Vec<u8>, Instant)>, // user data: the message, when it was sent
}

impl Echo {
    /// An echo behaviour for messages of at most `max_message` bytes (the examples use
    /// [`MAX_MESSAGE`]): longer ones are refused by this side, asking or answering.
    pub fn new(max_message: u64) -> Self {
        let config = Config::default().with_request_timeout(TIMEOUT);
        let config = config.with_max_inbound_streams(MAX_CONCURRENT_SERVED);
        let config = config.with_max_outbound_in_flight(MAX_IN_FLIGHT);
        let codec = rr::bytes::Codec::new(max_message, max_message);
        let rr = rr::Behaviour::with_codec(codec, [(PROTOCOL, ProtocolSupport::Full)], config);
        let rr = rr.with_responder(|_, request| request); // each request is its own answer
        Echo { rr }
    }

    /// Asks `peer` to echo `data` (dialing it if needed): an [`EchoEvent::Reply`] with the
    /// returned id follows. [`QueueFull`] while [`MAX_IN_FLIGHT`] requests are under way.
    pub fn send(&mut self, peer: PeerId, data: Vec<u8>) -> Result<OutboundRequestId, QueueFull> {
        (self.rr).try_send_request_with(peer, data.clone(), (data, Instant::now()))
    }
}

/// Checks each reply against the message sent. (A table, kept one outcome a line.)
#[rustfmt::skip]
impl From<RrEvent> for EchoEvent {
    fn from(event: RrEvent) -> Self {
        use {EchoError::Mismatch, EchoEvent::{Reply, Served}};
        match event {
            Event::Message { peer, message, .. } => match message {
                Response { request_id: id, response: r, user_data: (sent, at) } if r == sent => {
                    Reply { peer, id, result: Ok((r, at.elapsed())) }
                }
                Response { request_id: id, .. } => Reply { peer, id, result: Err(Mismatch) },
                Request { .. } => Served { peer, result: Ok(()) }, // answered by the responder
            },
            Event::OutboundFailure { peer, request_id: id, error, .. } => {
                Reply { peer, id, result: Err(error.into()) }
            }
            Event::InboundFailure { peer, error, .. } => Served { peer, result: Err(error.into()) },
            Event::ResponseSent { peer, .. } => Served { peer, result: Ok(()) },
        }
    }
}
// ---- End of the behaviour. ----
