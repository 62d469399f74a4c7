//! Generic request-response: one request and one response per stream, behind a [`Codec`],
//! wire-compatible with rust-libp2p's `request-response` (0.57 / `libp2p-request-response`
//! 0.30) — its JSON and CBOR codecs byte for byte.
//!
//! Two swarms on the in-memory transport; `b` answers every name with a greeting:
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_request_response::{json, Config, Event, Message, ProtocolSupport};
//! use meshwire_swarm::{StreamProtocol, Swarm, SwarmConfig, SwarmEvent};
//! use meshwire_transport::memory::MemoryTransport;
//!
//! type Greeter = json::Behaviour<String, String>;
//!
//! fn node() -> Swarm<Greeter> {
//!     let protocols = [(StreamProtocol::new("/greet/1"), ProtocolSupport::Full)];
//!     let behaviour = Greeter::new(protocols, Config::default());
//!     let transport = MemoryTransport::new(Keypair::generate().peer_id());
//!     Swarm::new(transport, behaviour, SwarmConfig::default())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (mut a, mut b) = (node(), node());
//! b.listen_on("/memory/0".parse()?)?;
//! let addr = loop {
//!     if let SwarmEvent::NewListenAddr { address, .. } = b.next_event().await { break address; }
//! };
//! // The request dials `b` at the address the swarm knows.
//! a.add_peer_address(b.local_peer_id(), addr);
//! let id = a.behaviour_mut().send_request(b.local_peer_id(), "ada".to_string());
//! let greeting = loop {
//!     tokio::select! {
//!         ev = a.next_event() => match ev {
//!             SwarmEvent::Behaviour(Event::Message {
//!                 message: Message::Response { request_id, response, .. }, ..
//!             }) if request_id == id => break response,
//!             SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => return Err(error.into()),
//!             _ => {}
//!         },
//!         ev = b.next_event() => if let SwarmEvent::Behaviour(Event::Message {
//!             message: Message::Request { request, channel, .. }, ..
//!         }) = ev {
//!             let answer = format!("hello, {request}");
//!             b.behaviour_mut().send_response(channel, answer).expect("still waiting");
//!         },
//!     }
//! };
//! assert_eq!(greeting, "hello, ada");
//! # Ok(()) }
//! ```
//!
//! # Wire format
//!
//! For each request the requester opens a stream, negotiated by multistream-select with one
//! of its outbound protocols (several are proposed in order; one alone is proposed
//! optimistically, `OpenStream::optimistic`: the header and proposal are written with the
//! request, in one packet, and a refusal surfaces as [`OutboundFailure::UnsupportedProtocols`]
//! when the response is read), writes the request and closes its write side; the
//! responder reads the request, writes the response and closes. What a request or a
//! response looks like is the codec's: modules `json` and `cbor` (behind the features of
//! those names) write one serde value each and read to the end of the stream, exactly as
//! rust-libp2p's codecs of the same names; [`bytes`] writes raw bytes the same way. A responder that has
//! no answer (the [`ResponseChannel`] dropped, the timeout, a failure) resets the stream.
//!
//! # Events
//!
//! Every request of ours ends in exactly one event that hands back its user data `U` (see
//! [`Behaviour::send_request_with`]): [`Message::Response`] or [`Event::OutboundFailure`].
//! Every remote's request that was read is a [`Message::Request`] and ends in
//! [`Event::ResponseSent`] or [`Event::InboundFailure`]; one that could not be read (too
//! large, malformed, too slow) is an [`Event::InboundFailure`] alone.
//!
//! # Cancelling
//!
//! [`Behaviour::cancel_request`] ends one of our requests under way: its stream is reset
//! (the remote reads an error, so its [`Event::InboundFailure`] follows when it reads or
//! answers; a request still waiting for its stream is never sent), and its one final event
//! is [`Event::OutboundFailure`] with [`OutboundFailure::Cancelled`], with its user data.
//!
//! # Bounds
//!
//! [`Config`] bounds our requests under way (past it, [`OutboundFailure::QueueFull`]) and
//! the remotes' requests handled at once, in total and per peer (past them, the stream is
//! reset unread), and times every exchange. Codecs bound each message before buffering it
//! ([`read_to_end_bounded`]) and report bad bytes as typed errors ([`CodecError`]); a
//! property test feeds random bytes to every built-in codec.
//!
//! # Driver
//!
//! [`Behaviour`] is written on the swarm toolkit (`Outbox` for stream requests, `Tasks` for
//! the exchanges); each exchange races its deadline and its connection's closing, so a
//! request on a connection that goes away fails with `ConnectionClosed` at once. The one
//! piece of state with rules, the admission of remotes' requests, is a sans-IO counter
//! (`limits.rs`); everything else is one future per exchange.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod behaviour;
pub mod bytes;
#[cfg(feature = "cbor")]
pub mod cbor;
mod codec;
mod config;
mod error;
mod event;
mod exchange;
#[cfg(feature = "json")]
pub mod json;
mod limits;
#[cfg(any(feature = "json", feature = "cbor"))]
mod serde_codec;

pub use behaviour::{Behaviour, BehaviourEvent};
pub use codec::{read_to_end_bounded, Codec, CodecError};
pub use config::{Config, ProtocolSupport};
pub use error::{InboundFailure, OutboundFailure};
pub use event::{Event, InboundRequestId, Message, OutboundRequestId, ResponseChannel};
/// What [`Behaviour::try_send_request_with`] refuses with (the swarm toolkit's).
pub use meshwire_swarm::toolkit::QueueFull;
