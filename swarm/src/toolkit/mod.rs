//! The behaviour toolkit: what every behaviour would otherwise write for itself.
//!
//! - [`frame`]: length-prefixed frames (`read_frame` / `write_frame`) with the size bound
//!   checked before anything is buffered, and a buffer that grows only with the bytes that
//!   actually arrive.
//! - [`FrameReaders`] and [`write_frames`]: the two halves of long-lived streams that carry
//!   a peer's messages as frames, bounded, with idle and write time limits.
//! - [`Tasks`]: a bounded, keyed set of stream futures, each with its own timeout, with the
//!   waker built in.
//! - [`Outbox`]: a bounded queue of [`ToSwarm`](crate::ToSwarm) commands that remembers the
//!   context of every stream it asked for, with the waker built in.
//! - [`Connections`]: which connections each peer has, kept from [`FromSwarm`](crate::FromSwarm).
//! - [`with_timeout`] and [`Timeout`]: one timeout error for every exchange;
//!   [`StreamError::is_unsupported`](crate::StreamError::is_unsupported) and
//!   `From<io::Error> for StreamError` classify stream errors.
//!
//! A complete behaviour on the toolkit (a protocol keeping one stream per peer open and
//! exchanging bounded lines with timeouts) is `swarm/examples/lines.rs`, walked through in
//! `docs/ARCHITECTURE.md`.

pub mod frame;
mod outbox;
mod peers;
mod readers;
mod tasks;

use std::future::Future;
use std::time::Duration;

pub use frame::{
    encode_frame, read_frame, read_frame_reserved, read_frame_with, write_frame, write_frames,
    FrameError,
};
pub use outbox::{Outbox, QueueFull};
pub use peers::{ConnectionChange, Connections};
pub use readers::FrameReaders;
pub use tasks::{Tasks, TasksFull};

/// An exchange took longer than its time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct Timeout(pub Duration);

/// Runs `fut` for at most `limit`; past it the result is `E::from(Timeout(limit))`.
///
/// ```
/// use std::time::Duration;
/// use meshwire_swarm::toolkit::{with_timeout, Timeout};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let slow = async {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     Ok::<_, Timeout>(())
/// };
/// let limit = Duration::from_millis(10);
/// assert_eq!(with_timeout(limit, slow).await, Err(Timeout(limit)));
/// # }
/// ```
pub async fn with_timeout<T, E>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<Timeout>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(Timeout(limit).into()),
    }
}
