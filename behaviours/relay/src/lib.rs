//! meshwire-relay: libp2p circuit relay v2 (`relay/circuit-v2.md` in `libp2p/specs`), byte
//! for byte compatible with rust-libp2p 0.57 (`libp2p-relay` 0.22) and go-libp2p.
//!
//! This crate holds:
//!
//! - [`protocol`]: the hop and stop messages, typed and validated, their bounded codecs, the
//!   protocol ids, and (feature `swarm`) async helpers reading and writing them on streams.
//! - [`voucher`]: reservation vouchers in signed envelopes (RFC 0002): sign and verify.
//! - [`server`]: [`RelayServerEngine`], the sans-IO relay server: which reservations and
//!   circuits to admit under [`ServerConfig`]'s limits (rust-libp2p's defaults), when
//!   reservations end, events, and [`RelayMetrics`].
//! - [`circuit`]: circuit limits and ends, and (feature `swarm`, on by default)
//!   `circuit::bridge`, the bounded byte copier between the two halves of a circuit.
//! - (feature `swarm`) the relay server in a swarm, `Behaviour`, which answers hop streams
//!   as the engine admits them and bridges circuits; and `client`, a transport composed with
//!   QUIC and a behaviour that listen and dial through relays (reservations made, renewed and
//!   protected in the connection manager; stop streams answered within bounds).
//!
//! A relay's driver admits a reservation, answers it with a voucher and the circuit limits,
//! and later admits a circuit to the reserving peer:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use meshwire_core::{ConnectionId, Keypair};
//! use meshwire_relay::protocol::{
//!     decode_hop_request, decode_hop_response, encode_hop_request, encode_hop_response,
//!     HopRequest, HopResponse, ReservationInfo, Status,
//! };
//! use meshwire_relay::server::{Refusal, ServerConfig, ServerEvent};
//! use meshwire_relay::voucher::Voucher;
//! use meshwire_relay::RelayServerEngine;
//!
//! let relay_key = Keypair::generate();
//! let mut relay = RelayServerEngine::new(ServerConfig::default())?
//!     .with_unix_clock(|| 1_700_000_000);
//! let now = Instant::now();
//!
//! // A client behind a NAT reserves a slot on its connection to the relay.
//! let client = Keypair::generate().peer_id();
//! let (client_conn, ip) = (ConnectionId::next(), "192.0.2.1".parse().ok());
//! let request = decode_hop_request(&encode_hop_request(&HopRequest::Reserve))?;
//! assert_eq!(request, HopRequest::Reserve);
//! let accepted = relay.handle_reserve(now, client, client_conn, ip).map_err(|r| r.status());
//! let accepted = accepted.expect("the relay has room");
//! assert_eq!(accepted.expire_unix, 1_700_000_000 + 3600);
//!
//! let answer = HopResponse::reserved(
//!     ReservationInfo {
//!         expire: accepted.expire_unix,
//!         addrs: vec![format!("/ip4/198.51.100.1/udp/4001/quic-v1/p2p/{}", relay_key.peer_id()).parse()?],
//!         voucher: Some(Voucher::sign(&relay_key, client, accepted.expire_unix)),
//!     },
//!     relay.circuit_limit(),
//! );
//! // The client reads the answer and checks the voucher.
//! let read = decode_hop_response(&encode_hop_response(&answer))?;
//! assert_eq!(read.status, Status::Ok);
//! let voucher = read.reservation.and_then(|r| r.voucher).expect("a voucher");
//! Voucher::verify(&voucher, relay_key.peer_id(), client)?;
//! assert_eq!(read.limit.and_then(|l| l.duration_limit()), Some(Duration::from_secs(120)));
//! assert!(matches!(relay.poll_event(), Some(ServerEvent::ReservationAccepted { .. })));
//!
//! // Another peer may now connect to the client through the relay; not to a stranger.
//! let src = Keypair::generate().peer_id();
//! let circuit = relay.handle_connect(now, src, ConnectionId::next(), None, client);
//! assert_eq!(circuit.map(|c| c.dst_connection), Ok(client_conn));
//! let stranger = Keypair::generate().peer_id();
//! let refused = relay.handle_connect(now, src, ConnectionId::next(), None, stranger);
//! assert_eq!(refused.map_err(|r| r.status()), Err(Status::NoReservation));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod circuit;
#[cfg(feature = "swarm")]
pub mod client;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod voucher;

pub use metrics::RelayMetrics;
#[cfg(feature = "swarm")]
pub use server::{Behaviour, BehaviourConfig};
pub use server::{RelayServerEngine, ServerConfig, ServerEvent};
