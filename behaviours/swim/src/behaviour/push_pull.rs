//! Push-pull exchanges (joins, anti-entropy) on `/meshwire/swim/2.0.0` streams: the stream IO
//! of both sides, bounded by the engine's limits, a byte budget over all inbound requests and
//! a time limit per exchange.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWriteExt};
use meshwire_core::PeerId;
use meshwire_swarm::toolkit::{read_frame, read_frame_with, with_timeout, FrameError, Timeout};
use meshwire_swarm::{InboundStream, OpenStream, OutboundStreamResult, Stream, StreamError};
use thiserror::Error;

use super::{now, Behaviour, PROTOCOL, TASK_GRACE};
use crate::realm::Realm;
use crate::wire::{encode_frame, Body};
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

/// The push-pull part of the behaviour: asking for exchanges, serving remotes' requests, and
/// their outcomes.
impl Behaviour {
    /// Asks the swarm for a stream to `to` for the push-pull `message`.
    pub(super) fn open_push_pull(&mut self, to: PeerId, message: &Message) {
        let realm = message.realm.clone();
        let open = OpenStream::new(to, PROTOCOL);
        self.next_exchange += 1;
        let id = self.next_exchange;
        let pp = OutboundPushPull {
            peer: to,
            realm: realm.clone(),
            frame: encode_frame(message),
            id,
            // The engine's timer started when it made the transmit, just now.
            deadline: now() + self.config.swim.push_pull_timeout,
        };
        if self.outbox.open_stream(open, pp).is_err() {
            self.io.push_pulls_failed += 1;
            self.engine
                .handle_push_pull_failed(now().into_std(), to, &realm);
            return;
        }
        tracing::debug!(peer = %to, %realm, "swim: push-pull");
        self.push_pulls_in_flight.insert((realm, to), id);
    }

    /// The outcome of our push-pull `key`.
    pub(super) fn on_answer(&mut self, key: AnswerKey, result: Result<Vec<u8>, PushPullError>) {
        let AnswerKey { peer, realm, id } = key;
        if !self.end_exchange(&realm, peer, id) {
            // An older exchange with the peer that the engine gave up on already.
            tracing::debug!(%peer, %realm, "swim: late outcome of an old push-pull ignored");
            return;
        }
        let t = now().into_std();
        let checked = result.and_then(|bytes| check_answer(&bytes, &realm, self.engine.limits()));
        match checked {
            Ok(msg) => {
                self.io.push_pulls_completed += 1;
                self.engine.handle_push_pull(t, peer, msg);
            }
            Err(e) => {
                self.io.push_pulls_failed += 1;
                tracing::debug!(%peer, %realm, error = %e, "swim: push-pull failed");
                self.engine.handle_push_pull_failed(t, peer, &realm);
            }
        }
        self.drain();
    }

    /// A remote's push-pull request was read (or not): answer it.
    pub(super) fn on_request(&mut self, peer: PeerId, result: Result<Request, PushPullError>) {
        let (mut stream, bytes, reservation) = match result {
            Ok(r) => r,
            Err(e) => {
                self.io.push_pulls_refused += 1;
                tracing::debug!(%peer, error = %e, "swim: inbound push-pull failed");
                self.inbound.done(peer);
                return;
            }
        };
        let answer = match Message::decode(&bytes, self.engine.limits()) {
            Ok(_) if self.engine.has_left() => None,
            Ok(msg) => self.engine.handle_push_pull(now().into_std(), peer, msg),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "swim: bad push-pull request");
                None
            }
        };
        drop(reservation);
        self.drain();
        let Some(answer) = answer else {
            self.io.push_pulls_refused += 1;
            stream.reset();
            self.inbound.done(peer);
            return;
        };
        let limit = self.config.swim.push_pull_timeout;
        let serve = serve(stream, encode_frame(&answer), limit);
        if self
            .serving
            .try_push(peer, limit + TASK_GRACE, serve)
            .is_err()
        {
            // Never: as many answers as requests are admitted.
            self.io.push_pulls_refused += 1;
            self.inbound.done(peer);
        }
    }

    /// Our answer to a remote's request was written (or not).
    pub(super) fn on_served(&mut self, peer: PeerId, result: Result<(), PushPullError>) {
        match result {
            Ok(()) => self.io.push_pulls_served += 1,
            Err(e) => {
                self.io.push_pulls_refused += 1;
                tracing::debug!(%peer, error = %e, "swim: push-pull answer not delivered");
            }
        }
        self.inbound.done(peer);
    }

    /// Ends our push-pull exchange `id` with `peer`; `false` if a newer one replaced it.
    pub(super) fn end_exchange(&mut self, realm: &Realm, peer: PeerId, id: u64) -> bool {
        let key = (realm.clone(), peer);
        if self.push_pulls_in_flight.get(&key) == Some(&id) {
            self.push_pulls_in_flight.remove(&key);
            true
        } else {
            false
        }
    }

    /// Polls the push-pull tasks once each; `true` if one finished.
    pub(super) fn poll_tasks(&mut self, cx: &mut Context<'_>) -> bool {
        let mut busy = false;
        if let Poll::Ready((key, result)) = self.answers.poll_next(cx) {
            self.on_answer(key, result.map_err(PushPullError::from).and_then(|r| r));
            busy = true;
        }
        if let Poll::Ready((peer, result)) = self.requests.poll_next(cx) {
            self.on_request(peer, result.map_err(PushPullError::from).and_then(|r| r));
            busy = true;
        }
        if let Poll::Ready((peer, result)) = self.serving.poll_next(cx) {
            self.on_served(peer, result.map_err(PushPullError::from).and_then(|r| r));
            busy = true;
        }
        busy
    }

    /// A remote's push-pull stream: read its request within the limits.
    pub(super) fn accept_push_pull(&mut self, inbound: InboundStream) {
        let InboundStream {
            peer, mut stream, ..
        } = inbound;
        if self.engine.has_left()
            || !self.inbound.admit(
                peer,
                self.config.max_inbound_push_pulls,
                self.config.max_inbound_push_pulls_per_peer,
            )
        {
            self.io.push_pulls_refused += 1;
            tracing::debug!(%peer, "swim: inbound push-pull refused (limit or left)");
            stream.reset();
            return;
        }
        let limit = self.config.swim.push_pull_timeout;
        let read = read_request(
            stream,
            self.engine.limits().max_push_pull_bytes,
            self.inbound.bytes.clone(),
            self.config.max_inbound_push_pull_bytes,
            limit,
        );
        if self
            .requests
            .try_push(peer, limit + TASK_GRACE, read)
            .is_err()
        {
            // Never: the set holds as many as `admit` lets in.
            self.io.push_pulls_refused += 1;
            self.inbound.done(peer);
        }
    }

    /// The stream for one of our push-pulls (or a stale answer to a request of ours).
    pub(super) fn on_push_pull_stream(&mut self, result: OutboundStreamResult) {
        let Some(pp) = self.outbox.take_stream(result.id) else {
            if let Ok(mut out) = result.result {
                out.stream.reset();
            }
            return;
        };
        let OutboundPushPull {
            peer,
            realm,
            frame,
            id,
            deadline,
        } = pp;
        let stream = match result.result {
            Ok(out) => out.stream,
            Err(e) => {
                self.io.push_pulls_failed += 1;
                tracing::debug!(%peer, %realm, error = %e, "swim: push-pull stream not opened");
                if self.end_exchange(&realm, peer, id) {
                    self.engine
                        .handle_push_pull_failed(now().into_std(), peer, &realm);
                    self.drain();
                }
                return;
            }
        };
        let limit = deadline.saturating_duration_since(now());
        let max = self.engine.limits().max_push_pull_bytes;
        let exchange = exchange(stream, frame, max, limit);
        let key = AnswerKey { peer, realm, id };
        if let Err(full) = self.answers.try_push(key, limit + TASK_GRACE, exchange) {
            self.on_answer(full.key, Err(PushPullError::Overloaded));
        }
    }
}
