//! libp2p AutoNAT v2 (`/libp2p/autonat/2/dial-request`, `/libp2p/autonat/2/dial-back`):
//! the reachability of individual addresses, wire-compatible with rust-libp2p 0.57's
//! `libp2p::autonat::v2` (`docs/autonat.md`).
//!
//! A client asks a server to dial one of its addresses; the server dials it on a *new*
//! connection from a socket of its own and writes the request's nonce on a dial-back
//! stream; the client, having seen its nonce, knows the address is reachable. When the
//! address's IP is not the one the request came from, the server first asks for 30,000 to
//! 100,000 bytes of dial data, so the client pays more than the dial it causes.
//!
//! - [`wire`]: the messages and their bounded, typed codec.
//! - [`ServerEngine`] and [`ClientEngine`]: the sans-IO decisions (admission and limits;
//!   candidates, servers, nonces, verdicts).
//! - [`Server`] and [`Client`] (feature `swarm`): the behaviours.
//!
//! ```
//! use meshwire_nat::autonat::{
//!     ClientConfig, ClientEngine, ClientEvent, DialBackConnection, ProbeReply, Reachability,
//! };
//! use meshwire_nat::autonat::wire::{DialStatus, ResponseStatus};
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let mut client = ClientEngine::new(ClientConfig::default(), now, 7);
//! let server = meshwire_core::Keypair::generate().peer_id();
//! client.handle_server_protocols(server, true);
//! client.add_candidate("/ip4/198.51.100.7/udp/4001/quic-v1".parse().unwrap());
//! client.handle_timeout(now + client.config().probe_interval);
//! let probe = client.poll_transmit().unwrap();
//! assert_eq!(probe.server, server);
//! // The dial-back carried our nonce on a new, direct connection the server opened to us,
//! // then the server answered OK.
//! let connection = DialBackConnection {
//!     peer: server,
//!     inbound: true,
//!     relayed: false,
//!     after_request: true,
//!     local_addr: Some("/ip4/0.0.0.0/udp/4001/quic-v1".parse().unwrap()),
//! };
//! assert_eq!(client.handle_dial_back(probe.nonce, &connection), Ok(()));
//! let reply = ProbeReply { status: ResponseStatus::Ok, dial_status: DialStatus::Ok, bytes_sent: 0 };
//! client.handle_probe_result(now, probe.nonce, Ok(reply));
//! let ClientEvent::Tested(result) = client.poll_event().unwrap() else { panic!() };
//! assert_eq!(result.result, Ok(Reachability::Reachable));
//! assert_eq!(client.poll_event(), Some(ClientEvent::Confirmed(probe.addr)));
//! ```

#[cfg(feature = "swarm")]
mod client;
mod client_engine;
#[cfg(feature = "swarm")]
mod metrics;
#[cfg(feature = "swarm")]
mod server;
mod server_engine;
#[cfg(test)]
mod tests;
pub mod wire;

#[cfg(feature = "swarm")]
pub use client::Client;
pub use client_engine::{
    ClientConfig, ClientEngine, ClientEvent, DialBackConnection, DialBackRejected, ProbeError,
    ProbeReply, ProbeRequest, Reachability, TestResult, Unreachable,
};
#[cfg(feature = "swarm")]
pub use metrics::AutonatMetrics;
#[cfg(feature = "swarm")]
pub use server::{ServeError, Server, ServerEvent};
pub use server_engine::{Plan, Refusal, ServerConfig, ServerEngine};

/// The dial-request protocol (client → server).
#[cfg(feature = "swarm")]
pub const DIAL_REQUEST_PROTOCOL: meshwire_swarm::StreamProtocol =
    meshwire_swarm::StreamProtocol::new(wire::DIAL_REQUEST);
/// The dial-back protocol (server → client, on the new connection).
#[cfg(feature = "swarm")]
pub const DIAL_BACK_PROTOCOL: meshwire_swarm::StreamProtocol =
    meshwire_swarm::StreamProtocol::new(wire::DIAL_BACK);
