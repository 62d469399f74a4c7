//! Relay → direct connection upgrade for meshwire: an ordered, lossless message channel to a
//! peer that moves between paths (streams on relayed and direct connections) by itself.
//!
//! The protocol is `/meshwire/upgrade/2.0.0` (`docs/upgrade.md`). This crate holds:
//!
//! - [`wire`]: the frames (`Hello`, `Welcome`, `Refuse`, `Data`, `Ack`, `Fence`, `Fin`),
//!   bounded, typed decode errors;
//! - [`engine`]: [`SessionEngine`], the sans-IO session — sequence numbers, cumulative
//!   acknowledgements, send and receive windows in bytes (credit, as QUIC's stream window),
//!   the path switch that
//!   re-sends the unacknowledged tail on the new path, duplicate drop, in-order delivery,
//!   fallback to the previous path and the fence that drains it;
//! - (feature `swarm`, default) [`Behaviour`]: sessions over relayed and direct connections
//!   ([`Behaviour::open`], [`Event::InboundSession`], [`Session`] with `send`/`recv`,
//!   `send_batch`/`recv_many` and backpressure), the automatic upgrade when a direct connection to a relayed peer
//!   appears, fallback, the seed's `register_relay` / `unregister_relay` /
//!   `upgrade_to_direct` / `upgrade_stats`, [`UpgradeMetrics`].
//!
//! Two engines wired back to back, the traffic moving from a relayed path to a direct one
//! mid-flight:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use meshwire_upgrade::{PathKind, SessionConfig, SessionEngine, SessionEvent, Transmit, wire::Frame};
//!
//! let now = Instant::now();
//! let mut a = SessionEngine::new_initiator(7, SessionConfig::default(), now);
//! let mut b = SessionEngine::new_responder(7, SessionConfig::default(), now);
//!
//! // Moves every queued frame of `from` to `to`; a Hello opens the path on the other side.
//! fn pump(now: Instant, from: &mut SessionEngine, to: &mut SessionEngine, kind: PathKind) {
//!     while let Some(transmit) = from.poll_transmit(now) {
//!         match transmit {
//!             Transmit::Frame { frame: Frame::Hello { path, recv_next, recv_limit, .. }, .. } => {
//!                 to.handle_hello(now, kind, path, recv_next, recv_limit).unwrap();
//!             }
//!             Transmit::Frame { path, frame } => to.handle_frame(now, path, frame).unwrap(),
//!             Transmit::Close { .. } => {}
//!         }
//!     }
//! }
//!
//! let relay = a.open_path(now, PathKind::Relayed);
//! for i in 0..10u8 {
//!     a.send(Bytes::from(vec![i])).unwrap();
//! }
//! pump(now, &mut a, &mut b, PathKind::Relayed); // Hello, then messages 0..10 on the relay
//! pump(now, &mut b, &mut a, PathKind::Relayed); // Welcome
//! pump(now, &mut a, &mut b, PathKind::Relayed);
//! assert_eq!(b.readable(), 10);
//!
//! // A direct connection appears: a new path; once welcomed, it carries the traffic.
//! let direct = a.open_path(now, PathKind::Direct);
//! pump(now, &mut a, &mut b, PathKind::Direct);
//! pump(now, &mut b, &mut a, PathKind::Direct);
//! assert_eq!(a.current_path(), Some(direct));
//! assert_ne!(relay, direct);
//! a.send(Bytes::from_static(b"after")).unwrap();
//! pump(now, &mut a, &mut b, PathKind::Direct);
//! let got: Vec<Bytes> = std::iter::from_fn(|| b.recv()).collect();
//! assert_eq!(got.len(), 11);
//! assert_eq!(&got[10][..], b"after");
//! assert!(std::iter::from_fn(|| a.poll_event())
//!     .any(|e| matches!(e, SessionEvent::Switched { kind: PathKind::Direct, .. })));
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "swarm")]
mod behaviour;
#[cfg(feature = "swarm")]
mod driver;
pub mod engine;
#[cfg(feature = "swarm")]
mod reader;
#[cfg(feature = "swarm")]
mod session;
#[cfg(feature = "swarm")]
mod shared;
#[cfg(feature = "swarm")]
pub mod stats;
pub mod wire;

#[cfg(feature = "swarm")]
pub use behaviour::{
    Behaviour, Config, Event, OpenError, RelayRegistration, UpgradeError, UpgradeFailure,
    PROTOCOL_NAME,
};
#[cfg(feature = "swarm")]
pub use session::{ChannelError, Session, SessionSender};
#[cfg(feature = "swarm")]
pub use stats::{UpgradeMetrics, UpgradeStats};

pub use engine::{
    Encoded, PathId, PathKind, Role, SendError, SessionConfig, SessionEngine, SessionError,
    SessionEvent, SessionStats, Transmit, MESSAGE_COST,
};
pub use wire::{encode_data_into, Frame, RefuseReason, WireError, PROTOCOL};
