//! meshwire's shared vocabulary, used by every other crate without pulling in any IO:
//! node identities ([`identity::Keypair`], [`identity::PeerId`], and [`identity::KeyMessage`],
//! the one decoder of libp2p's protobuf key messages), [`ConnectionId`] and [`Direction`].
//!
//! ```
//! use meshwire_core::{ConnectionId, Direction, identity::Keypair};
//!
//! let me = Keypair::generate().peer_id();
//! let a = ConnectionId::next();
//! let b = ConnectionId::next();
//! assert_ne!(a, b);
//! assert!(Direction::Inbound.is_inbound());
//! println!("{me} has connections {a} and {b}");
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod identity;

pub use identity::{IdentityError, KeyMessage, KeyType, Keypair, PeerId, PublicKey};

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one connection for the whole life of the process. Unique across all swarms of a
/// process, so ids from different swarms never collide in logs or tests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnectionId(u64);

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

impl ConnectionId {
    /// A fresh id, never handed out before in this process.
    pub fn next() -> Self {
        ConnectionId(NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// An id with a chosen value, for tests and simulations that need exact ids.
    pub const fn from_raw(raw: u64) -> Self {
        ConnectionId(raw)
    }

    /// The number behind the id.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Which side opened a connection or stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// The remote opened it.
    Inbound,
    /// We opened it.
    Outbound,
}

impl Direction {
    /// `true` for [`Direction::Inbound`].
    pub fn is_inbound(self) -> bool {
        matches!(self, Direction::Inbound)
    }
}
