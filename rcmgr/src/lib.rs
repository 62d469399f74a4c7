//! A resource manager a hostile peer cannot get around: scoped limits on connections,
//! streams and memory, after go-libp2p's `rcmgr` (which rust-libp2p lacks beyond connection
//! counts).
//!
//! Every connection, stream and buffer is charged to a hierarchy of scopes — the system,
//! the transient scope (not yet authenticated or negotiated), each peer, each protocol, each
//! peer on each protocol, each service, each connection and stream — and refused with a
//! typed [`ResourceError`] when any of them is full. Grants are guards
//! ([`ConnectionScope`], [`StreamScope`], [`Reservation`]) that give their share back when
//! dropped, so nothing leaks on an error path. [`Limits::from_machine`] derives every limit
//! from the machine's memory (the formula is on [`Limits::for_memory`]); every field can be
//! overridden; [`ResourceManager::unlimited`] only counts.
//!
//! ```
//! use meshwire_core::{Direction, Keypair};
//! use meshwire_rcmgr::{Limits, ResourceManager, Resource};
//!
//! let mut limits = Limits::for_memory(512 << 20);
//! limits.stream_memory = 64 * 1024;
//! let rm = ResourceManager::new(limits);
//! let peer = Keypair::generate().peer_id();
//!
//! // A peer's stream negotiated /ipfs/kad/1.0.0 and announces a 100 KiB frame.
//! let mut stream = rm.open_stream(peer, Direction::Inbound)?;
//! stream.set_protocol("/ipfs/kad/1.0.0")?;
//! let refused = stream.reserve_memory(100 * 1024).unwrap_err();
//! assert_eq!(refused.resource, Resource::Memory);
//! let held = stream.reserve_memory(16 * 1024)?; // a frame that fits
//! assert_eq!(rm.protocol_usage("/ipfs/kad/1.0.0").memory, 16 * 1024);
//! drop((held, stream));
//! assert!(rm.system_usage().is_empty());
//! # Ok::<(), meshwire_rcmgr::ResourceError>(())
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod limits;
mod manager;
pub mod metrics;
pub mod scope;

pub use limits::{Limits, ScopeLimits, CONNECTION_OVERHEAD, DEFAULT_CONNECTION_WINDOW};
pub use manager::{ConnectionScope, Reservation, ResourceManager, StreamScope};
pub use metrics::RcmgrMetrics;
pub use scope::{Resource, ResourceError, ScopeKind, Usage};
