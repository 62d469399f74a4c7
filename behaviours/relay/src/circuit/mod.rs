//! Relayed connections ("circuits"): their limits, how they end, and (feature `swarm`) the
//! byte copier `bridge` that relays between the source's hop stream and the destination's
//! stop stream.
//!
//! # Limits, as rust-libp2p applies them
//!
//! A circuit ends when it has lived [`CircuitLimits::duration`], or when the bytes relayed in
//! **both directions together** would pass [`CircuitLimits::bytes`] (rust-libp2p's
//! `CopyFuture` sums both directions; the spec's text and go-libp2p apply the data limit to
//! each direction separately, so a go-libp2p client may expect twice as much). Either way the
//! relay resets both streams, as the spec asks, so that neither end mistakes a cut circuit for
//! a finished one. Unlike rust-libp2p, which checks the sum after forwarding a buffer (and so
//! may pass the limit by up to one buffer), `bridge` never forwards a byte past the limit.

use std::io;
use std::time::Duration;

use crate::protocol::Status;

#[cfg(feature = "swarm")]
mod bridge;
#[cfg(all(test, feature = "swarm"))]
mod tests;

#[cfg(feature = "swarm")]
pub use self::bridge::{bridge, Reset, DEFAULT_BUFFER_SIZE};

/// The limits of one circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CircuitLimits {
    /// Longest life, from the start of relaying; `None` means unlimited.
    pub duration: Option<Duration>,
    /// Most bytes relayed, both directions together; `None` means unlimited.
    pub bytes: Option<u64>,
}

/// How a circuit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitEndReason {
    /// Both sides closed their writing half and everything was relayed.
    Finished,
    /// The circuit reached [`CircuitLimits::duration`]; both streams were reset.
    DurationLimit,
    /// More than [`CircuitLimits::bytes`] would have been relayed; both streams were reset.
    DataLimit,
    /// A stream failed (the error's kind); both streams were reset.
    Error(io::ErrorKind),
    /// The circuit never started: the destination refused the stop `CONNECT`, or the stop
    /// exchange failed. The status is what the source is told (`CONNECTION_FAILED` for a
    /// failed exchange, as rust-libp2p and go-libp2p answer).
    StopRefused(Status),
}

impl CircuitEndReason {
    /// A short name for logs and metrics labels: `finished`, `duration_limit`, `data_limit`,
    /// `error`, `stop_refused`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CircuitEndReason::Finished => "finished",
            CircuitEndReason::DurationLimit => "duration_limit",
            CircuitEndReason::DataLimit => "data_limit",
            CircuitEndReason::Error(_) => "error",
            CircuitEndReason::StopRefused(_) => "stop_refused",
        }
    }
}

/// The end of a circuit: what it relayed and why it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitEnd {
    /// Bytes written to `b` that were read from `a` (for the relay: source to destination,
    /// when `a` is the hop stream).
    pub bytes_a_to_b: u64,
    /// Bytes written to `a` that were read from `b`.
    pub bytes_b_to_a: u64,
    /// Why it ended.
    pub reason: CircuitEndReason,
}

impl CircuitEnd {
    /// The end of a circuit that never started because the stop exchange gave `status`.
    pub fn stop_refused(status: Status) -> Self {
        CircuitEnd {
            bytes_a_to_b: 0,
            bytes_b_to_a: 0,
            reason: CircuitEndReason::StopRefused(status),
        }
    }

    /// Bytes relayed in both directions.
    pub fn total_bytes(&self) -> u64 {
        self.bytes_a_to_b.saturating_add(self.bytes_b_to_a)
    }
}
