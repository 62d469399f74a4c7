//! Push-pull exchanges (joins, anti-entropy) on `/meshwire/swim/2.0.0` streams: the stream IO
//! of both sides, bounded by the engine's limits, a byte budget over all inbound requests and
//! a time limit per exchange.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWriteExt};
use meshwire_core::PeerId;
use meshwire_swarm::toolkit::{read_frame, read_frame_with, with_timeout, FrameError, Timeout};
use meshwire_swarm::{Stream, StreamError};
use thiserror::Error;

use crate::realm::Realm;
use crate::wire::Body;
use crate::wire::{DecodeError, Limits, Message};

/// Why a push-pull exchange failed (logged; the engine is told with
/// [`SwimEngine::handle_push_pull_failed`](crate::SwimEngine::handle_push_pull_failed)).
#[derive(Debug, Error)]
pub enum PushPullError {
    /// The stream could not be opened, or failed (including a remote that does not speak
    /// [`PROTOCOL`](super::PROTOCOL)).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The frame's length prefix is invalid or above the limit, or the stream ended inside
    /// the frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The message does not decode.
    #[error("bad message: {0}")]
    Decode(#[from] DecodeError),
    /// The exchange took longer than the engine's `push_pull_timeout`.
    #[error("push-pull {0}")]
    Timeout(#[from] Timeout),
    /// Too many inbound push-pull bytes buffered at once
    /// ([`Config::max_inbound_push_pull_bytes`](super::Config::max_inbound_push_pull_bytes)).
    #[error("inbound push-pull byte budget exhausted")]
    OverBudget,
    /// Too many push-pulls of ours in flight; this one was not started.
    #[error("too many push-pulls in flight")]
    Overloaded,
    /// The answer decoded but is not a push-pull answer for the realm asked about.
    #[error("unexpected answer: {0}")]
    UnexpectedAnswer(&'static str),
}

impl From<std::io::Error> for PushPullError {
    fn from(e: std::io::Error) -> Self {
        PushPullError::Stream(StreamError::from(e))
    }
}

/// A push-pull of ours waiting for its stream (the context kept by the outbox per stream
/// request).
pub(super) struct OutboundPushPull {
    pub(super) peer: PeerId,
    pub(super) realm: Realm,
    pub(super) frame: Vec<u8>,
    /// Which exchange with (realm, peer) this is.
    pub(super) id: u64,
    /// The engine's deadline: its `push_pull_timeout` runs from the transmit.
    pub(super) deadline: tokio::time::Instant,
}

/// The key of one of our exchanges in flight.
#[derive(Clone, Debug)]
pub(super) struct AnswerKey {
    pub(super) peer: PeerId,
    pub(super) realm: Realm,
    pub(super) id: u64,
}

/// A remote's request read from its stream, with the budget it holds.
pub(super) type Request = (Stream, Vec<u8>, Reservation);

/// Bytes of inbound push-pull requests buffered now, shared with the reading tasks.
#[derive(Clone, Default)]
pub(super) struct ByteBudget(Arc<AtomicUsize>);

/// Bytes taken from a [`ByteBudget`], given back when dropped.
pub(super) struct Reservation {
    budget: ByteBudget,
    bytes: usize,
}

impl ByteBudget {
    fn reserve(&self, bytes: usize, limit: usize) -> Option<Reservation> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|n| *n <= limit)
            })
            .ok()?;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.0.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Inbound push-pull streams being served, in all and per peer, and the bytes they buffer.
#[derive(Default)]
pub(super) struct Inbound {
    total: usize,
    per_peer: HashMap<PeerId, usize>,
    pub(super) bytes: ByteBudget,
}

impl Inbound {
    /// Counts a new stream of `peer` unless that exceeds `max_total` or `max_per_peer`.
    pub(super) fn admit(&mut self, peer: PeerId, max_total: usize, max_per_peer: usize) -> bool {
        let n = self.per_peer.get(&peer).copied().unwrap_or(0);
        if self.total >= max_total || n >= max_per_peer {
            return false;
        }
        self.total += 1;
        *self.per_peer.entry(peer).or_default() += 1;
        true
    }

    /// A stream of `peer` is done.
    pub(super) fn done(&mut self, peer: PeerId) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }
}

/// Reads one frame (varint length, message) of at most `max` bytes; the end of the stream
/// before it is a truncated frame.
pub(super) async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<Vec<u8>, PushPullError> {
    Ok(read_frame(stream, max)
        .await?
        .ok_or(FrameError::Truncated)?)
}

/// [`read_message`] that takes the frame's length from `budget` (up to `limit` bytes in use
/// over all readers) before buffering anything; the reservation lasts as long as the bytes.
pub(super) async fn read_frame_budgeted<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
    budget: &ByteBudget,
    limit: usize,
) -> Result<(Vec<u8>, Reservation), PushPullError> {
    let mut reservation = None;
    let bytes = read_frame_with(stream, max, |len| {
        reservation = Some(
            budget
                .reserve(len, limit)
                .ok_or(PushPullError::OverBudget)?,
        );
        Ok::<(), PushPullError>(())
    })
    .await?
    .ok_or(FrameError::Truncated)?;
    let reservation = reservation.ok_or(PushPullError::OverBudget)?;
    Ok((bytes, reservation))
}

/// A failed exchange resets its stream (the peer sees it at once, instead of a clean end).
fn reset_on_error<T>(
    stream: &mut Stream,
    result: Result<T, PushPullError>,
) -> Result<T, PushPullError> {
    if result.is_err() {
        stream.reset();
    }
    result
}

/// Our side of a push-pull: writes the framed request, finishes our side, reads the answer
/// (the message bytes, without frame prefix), all within `limit`.
pub(super) async fn exchange(
    mut stream: Stream,
    frame: Vec<u8>,
    max: usize,
    limit: Duration,
) -> Result<Vec<u8>, PushPullError> {
    let result = with_timeout(limit, async {
        stream.write_all(&frame).await?;
        stream.close().await?;
        read_message(&mut stream, max).await
    })
    .await;
    reset_on_error(&mut stream, result)
}

/// Reads a remote's request (its bytes held in `budget`, up to `budget_limit` over all
/// requests) within `limit`.
pub(super) async fn read_request(
    mut stream: Stream,
    max: usize,
    budget: ByteBudget,
    budget_limit: usize,
    limit: Duration,
) -> Result<Request, PushPullError> {
    let result = with_timeout(
        limit,
        read_frame_budgeted(&mut stream, max, &budget, budget_limit),
    )
    .await;
    let (bytes, reservation) = reset_on_error(&mut stream, result)?;
    Ok((stream, bytes, reservation))
}

/// Writes our answer to a remote's request and finishes, within `limit`.
pub(super) async fn serve(
    mut stream: Stream,
    frame: Vec<u8>,
    limit: Duration,
) -> Result<(), PushPullError> {
    let result = with_timeout(limit, async {
        stream.write_all(&frame).await?;
        stream.close().await?;
        Ok(())
    })
    .await;
    reset_on_error(&mut stream, result)
}

/// Decodes the answer to our push-pull in `realm`: it must be a push-pull answer for it.
pub(super) fn check_answer(
    bytes: &[u8],
    realm: &Realm,
    limits: &Limits,
) -> Result<Message, PushPullError> {
    let msg = Message::decode(bytes, limits)?;
    if msg.realm != *realm {
        return Err(PushPullError::UnexpectedAnswer("another realm"));
    }
    match &msg.body {
        Body::PushPull(pp) if pp.response => Ok(msg),
        _ => Err(PushPullError::UnexpectedAnswer("not a push-pull answer")),
    }
}
