//! The session engine: one ordered, lossless message channel to a peer over any number of
//! paths (streams on relayed or direct connections), sans-IO.
//!
//! Messages are numbered from 0. The sender keeps each one until it is acknowledged
//! cumulatively; the receiver delivers in order, drops duplicates and buffers messages
//! that arrive ahead of a gap (at most the credit it granted,
//! [`SessionConfig::recv_window_bytes`]).
//!
//! **Credit** is in bytes, as QUIC's stream window: a message's *cost* is its length plus
//! [`MESSAGE_COST`], its *offset* the cost of every message before it. The receiver grants
//! `limit` = the cost of the messages the application consumed + its window; the sender
//! transmits a message only if its offset + cost is at most the limit, and the receiver
//! refuses (fails the session) a message that would make it hold more than its window.
//!
//! **Paths.** Either side may open a path (the driver opens a stream, [`SessionEngine::open_path`]
//! queues its `Hello`); the other side accepts it with [`SessionEngine::handle_hello`] (a
//! `Welcome`) or refuses it. A `Hello` and a `Welcome` carry the sender's receive state, so
//! both sides know exactly which messages the other still needs. Each side sends on one
//! path, the *current* one: the best usable path (direct over relayed; among equals, the one
//! already current, then the newest). When the current path changes, the unacknowledged
//! tail is sent again on the new path from the peer's cumulative acknowledgement; the
//! receiver drops what it already had. Order is never in doubt because it never depends on
//! the path: messages carry their number.
//!
//! **Fence and drain.** A path we switched away from stays ready for
//! [`SessionConfig::fallback_window`] (a failure of the new path moves the traffic back at
//! once). Then we write `Fence { next_seq }` on it, our last frame there. Once both sides
//! have fenced a path (or [`SessionConfig::drain_timeout`] passed), the engine emits
//! [`Transmit::Close`] and the driver closes it.
//!
//! **Fallback.** When the current path closes, the next best usable path becomes current
//! and the unacknowledged tail is sent again on it ([`SessionEvent::Switched`] with
//! `fallback: true`). With no usable path the engine reports [`SessionEvent::NoPath`] (the
//! driver opens one when it can) and fails after [`SessionConfig::path_timeout`].

mod batch;
mod config;
#[cfg(test)]
mod harness;
#[cfg(test)]
mod prop_tests;
mod recv;
mod send;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

pub use config::{SessionConfig, MESSAGE_COST};
use recv::{Received, RecvBuffer};
use send::SendBuffer;
pub use send::SendError;

use crate::wire::{Frame, RefuseReason};

/// How many forgotten path ids a session remembers.
const RETIRED: usize = 64;

/// A path's id within its session (even when opened by the session's initiator, odd by its
/// responder).
pub type PathId = u64;

/// Which side created the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We created the session (our path ids are even).
    Initiator,
    /// The peer created it (our path ids are odd).
    Responder,
}

/// What a path runs over; a direct path is preferred over a relayed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKind {
    /// A stream on a connection through a relay.
    Relayed,
    /// A stream on a direct connection.
    Direct,
}

/// What the session reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A path became usable: the peer welcomed ours (`handshake` is the time from
    /// [`SessionEngine::open_path`] to the `Welcome`, one round trip on that path) or we
    /// accepted the peer's.
    PathActive {
        /// The path.
        path: PathId,
        /// What it runs over.
        kind: PathKind,
        /// From `open_path` to the `Welcome` (zero for a path the peer opened).
        handshake: Duration,
    },
    /// The peer refused a path we opened.
    PathRefused {
        /// The path.
        path: PathId,
        /// The peer's reason.
        reason: RefuseReason,
    },
    /// A path we opened closed before the peer answered it.
    PathFailed {
        /// The path.
        path: PathId,
    },
    /// Our sending moved to another path.
    Switched {
        /// The previous current path (`None` if there was none).
        from: Option<PathId>,
        /// The new current path.
        to: PathId,
        /// What the new path runs over.
        kind: PathKind,
        /// Messages that will be sent again on the new path (sent before, not acknowledged).
        resent: u64,
        /// The previous path had failed (not merely been superseded).
        fallback: bool,
    },
    /// No usable path is left; open one when a connection allows it.
    NoPath,
    /// Messages became readable with [`SessionEngine::recv`] (reported when none were
    /// readable before).
    Readable,
    /// The peer ended the session and every message it sent has been delivered.
    Finished,
    /// The session failed; every path should be closed.
    Failed(SessionError),
}

/// What the driver writes: a frame on a path's stream, or the end of that stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Write `frame` on the stream of `path`.
    Frame {
        /// The path.
        path: PathId,
        /// The frame.
        frame: Frame,
    },
    /// Nothing more will be written on `path`: close its stream (after the frames before
    /// this). Both sides fenced it, its drain timed out, or we refused it.
    Close {
        /// The path.
        path: PathId,
    },
}

/// What [`SessionEngine::poll_transmit_framed`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoded {
    /// A frame for the stream of `path` was appended (or dropped: no buffer for it).
    Frame {
        /// The path.
        path: PathId,
    },
    /// As [`Transmit::Close`].
    Close {
        /// The path.
        path: PathId,
    },
}

/// The engine's next output, a message lent rather than cloned.
enum Output<'a> {
    Owned(Transmit),
    Data {
        path: PathId,
        seq: u64,
        payload: &'a Bytes,
    },
}

/// Why a session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// No usable path for [`SessionConfig::path_timeout`].
    #[error("no path for {0:?}")]
    NoPath(Duration),
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Messages accepted by [`SessionEngine::send`].
    pub messages_sent: u64,
    /// Messages delivered in order (readable or read).
    pub messages_delivered: u64,
    /// Changes of the current path.
    pub switches: u64,
    /// Changes of the current path because it failed.
    pub fallbacks: u64,
    /// Messages scheduled again on a new path (sent before, unacknowledged at the switch).
    pub messages_migrated: u64,
    /// Payload bytes transmitted again.
    pub bytes_resent: u64,
    /// Received messages dropped as duplicates.
    pub duplicates_dropped: u64,
    /// Times transmission stopped with messages queued because the peer's credit ran out
    /// (counted once per stop).
    pub credit_stalls: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathState {
    /// We sent `Hello`, no answer yet.
    Opening,
    Active,
    /// Closed by the driver or by us (`Transmit::Close` queued).
    Closed,
}

#[derive(Debug)]
struct PathEntry {
    kind: PathKind,
    state: PathState,
    opened_at: Instant,
    /// Order of activation (for "newest").
    activated: u64,
    standby_until: Option<Instant>,
    we_fenced: Option<Instant>,
    peer_fenced: bool,
}

impl PathEntry {
    fn usable(&self) -> bool {
        self.state == PathState::Active && self.we_fenced.is_none()
    }
}

/// One session's state machine (see the module docs).
#[derive(Debug)]
pub struct SessionEngine {
    config: SessionConfig,
    session: u64,
    role: Role,
    next_path: PathId,
    /// Above every path id the peer used (a frame for a lower, unknown id is a late frame of
    /// a path closed and forgotten).
    peer_next_path: PathId,
    /// Path ids forgotten recently (a `Hello` may not reuse them), at most [`RETIRED`].
    retired: VecDeque<PathId>,
    activations: u64,
    paths: BTreeMap<PathId, PathEntry>,
    current: Option<PathId>,
    send: SendBuffer,
    recv: RecvBuffer,
    control: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
    ack_sent: (u64, u64),
    /// The received bytes the last acknowledgement covered.
    ack_sent_bytes: u64,
    ack_due: Option<Instant>,
    ack_now: bool,
    /// Messages are queued but the peer's credit ran out (since the last transmission).
    credit_blocked: bool,
    no_path_since: Option<Instant>,
    closing: bool,
    fin_sent: bool,
    peer_fin: Option<u64>,
    finished: bool,
    failed: bool,
    stats: SessionStats,
    /// Inside [`SessionEngine::handle_frames`]: acknowledgements are scheduled once, after
    /// the batch.
    in_batch: bool,
    /// A message was delivered in the current batch.
    batch_delivered: bool,
}

impl SessionEngine {
    /// A session we create (`session` is its id, unique among our sessions with the peer).
    pub fn new_initiator(session: u64, config: SessionConfig, now: Instant) -> Self {
        Self::new(session, Role::Initiator, config, now)
    }

    /// A session the peer created, on receipt of a `Hello` with `recv_next == 0` for an
    /// unknown session id; pass that `Hello` to [`SessionEngine::handle_hello`] next.
    pub fn new_responder(session: u64, config: SessionConfig, now: Instant) -> Self {
        Self::new(session, Role::Responder, config, now)
    }

    fn new(session: u64, role: Role, config: SessionConfig, now: Instant) -> Self {
        SessionEngine {
            send: SendBuffer::new(config.send_window_bytes),
            recv: RecvBuffer::new(config.effective_recv_window()),
            session,
            role,
            next_path: match role {
                Role::Initiator => 0,
                Role::Responder => 1,
            },
            peer_next_path: match role {
                Role::Initiator => 1,
                Role::Responder => 0,
            },
            retired: VecDeque::new(),
            activations: 0,
            paths: BTreeMap::new(),
            current: None,
            control: VecDeque::new(),
            events: VecDeque::new(),
            ack_sent: (0, 0),
            ack_sent_bytes: 0,
            ack_due: None,
            ack_now: false,
            credit_blocked: false,
            no_path_since: Some(now),
            closing: false,
            fin_sent: false,
            peer_fin: None,
            finished: false,
            failed: false,
            stats: SessionStats::default(),
            in_batch: false,
            batch_delivered: false,
            config,
        }
    }

    /// The session's id.
    pub fn session_id(&self) -> u64 {
        self.session
    }

    /// Which side created the session.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The path we currently send on.
    pub fn current_path(&self) -> Option<PathId> {
        self.current
    }

    /// What `path` runs over, if it is known and not closed.
    pub fn path_kind(&self, path: PathId) -> Option<PathKind> {
        self.paths
            .get(&path)
            .filter(|p| p.state != PathState::Closed)
            .map(|p| p.kind)
    }

    /// Paths opening, active or draining.
    pub fn open_paths(&self) -> usize {
        self.paths
            .values()
            .filter(|p| p.state != PathState::Closed)
            .count()
    }

    /// Whether a path of `kind` is opening or usable (the driver need not open another).
    pub fn has_path(&self, kind: PathKind) -> bool {
        self.paths.values().any(|p| {
            p.kind == kind
                && p.we_fenced.is_none()
                && matches!(p.state, PathState::Opening | PathState::Active)
        })
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Whether the session failed or finished both ways.
    pub fn is_terminated(&self) -> bool {
        self.failed || (self.finished && self.closing && self.send.is_empty())
    }

    /// Whether [`SessionEngine::send`] would take a message of `len` bytes now.
    pub fn can_send(&self, len: usize) -> bool {
        !self.closing && !self.failed && len <= self.config.max_message && self.send.has_room(len)
    }

    /// Queues a message; its sequence number, or why it was refused (a full window is the
    /// backpressure: retry after acknowledgements arrive).
    pub fn send(&mut self, payload: Bytes) -> Result<u64, SendError> {
        if self.closing || self.failed {
            return Err(SendError::Closed);
        }
        if payload.len() > self.config.max_message {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: self.config.max_message,
            });
        }
        let seq = self.send.push(payload)?;
        self.stats.messages_sent += 1;
        Ok(seq)
    }

    /// The next message in order, if one was received; reading grants the peer credit.
    pub fn recv(&mut self) -> Option<Bytes> {
        let payload = self.recv.pop()?;
        self.schedule_ack(None);
        Some(payload)
    }

    /// Messages readable now.
    pub fn readable(&self) -> usize {
        self.recv.readable()
    }

    /// Ends our sending: no more `send`; once every message is transmitted a `Fin` follows.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Whether the peer ended the session and all its messages were delivered.
    pub fn peer_finished(&self) -> bool {
        self.finished
    }

    /// Whether our `Fin` went out on the current path (after [`SessionEngine::close`]).
    pub fn fin_sent(&self) -> bool {
        self.fin_sent
    }

    /// Whether every message we sent has been acknowledged.
    pub fn all_acknowledged(&self) -> bool {
        self.send.is_empty()
    }

    /// Starts a path on a stream the driver opened: queues its `Hello` and returns its id.
    pub fn open_path(&mut self, now: Instant, kind: PathKind) -> PathId {
        let path = self.next_path;
        self.next_path += 2;
        self.paths.insert(
            path,
            PathEntry {
                kind,
                state: PathState::Opening,
                opened_at: now,
                activated: 0,
                standby_until: None,
                we_fenced: None,
                peer_fenced: false,
            },
        );
        self.control.push_back(Transmit::Frame {
            path,
            frame: Frame::Hello {
                session: self.session,
                path,
                recv_next: self.recv.next,
                recv_limit: self.recv.limit(),
            },
        });
        path
    }

    /// A `Hello` for this session arrived on a new stream of `kind`. Accepts it (queues a
    /// `Welcome`, `Ok(true)`) or refuses it (queues a `Refuse` and a
    /// [`Transmit::Close`], `Ok(false)`); an invalid `Hello` fails the session.
    pub fn handle_hello(
        &mut self,
        now: Instant,
        kind: PathKind,
        path: PathId,
        recv_next: u64,
        recv_limit: u64,
    ) -> Result<bool, SessionError> {
        if self.failed {
            return Err(SessionError::Protocol("session failed"));
        }
        if path % 2 != self.peer_next_path % 2
            || self.paths.contains_key(&path)
            || self.retired.contains(&path)
        {
            return Err(self.fail(SessionError::Protocol("bad path id in Hello")));
        }
        self.peer_next_path = self.peer_next_path.max(path.saturating_add(2));
        if self.open_paths() >= self.config.max_paths {
            self.control.push_back(Transmit::Frame {
                path,
                frame: Frame::Refuse {
                    path,
                    reason: RefuseReason::TooManyPaths,
                },
            });
            self.control.push_back(Transmit::Close { path });
            return Ok(false);
        }
        if !self.send.ack(recv_next, recv_limit) {
            return Err(self.fail(SessionError::Protocol("Hello acknowledges unsent data")));
        }
        self.activations += 1;
        self.paths.insert(
            path,
            PathEntry {
                kind,
                state: PathState::Active,
                opened_at: now,
                activated: self.activations,
                standby_until: None,
                we_fenced: None,
                peer_fenced: false,
            },
        );
        self.control.push_back(Transmit::Frame {
            path,
            frame: Frame::Welcome {
                path,
                recv_next: self.recv.next,
                recv_limit: self.recv.limit(),
            },
        });
        // The Welcome's receive state is not an acknowledgement sent on the current path: if
        // this path dies before the Welcome arrives, the current path still owes it.
        self.events.push_back(SessionEvent::PathActive {
            path,
            kind,
            handshake: Duration::ZERO,
        });
        self.reselect(now, false);
        Ok(true)
    }

    /// A frame (other than `Hello`) arrived on `path`. A violation fails the session (the
    /// error is returned and [`SessionEvent::Failed`] emitted).
    pub fn handle_frame(
        &mut self,
        now: Instant,
        path: PathId,
        frame: Frame,
    ) -> Result<(), SessionError> {
        if self.failed {
            return Err(SessionError::Protocol("session failed"));
        }
        let Some(entry) = self.paths.get_mut(&path) else {
            let stale = if path % 2 == self.next_path % 2 {
                path < self.next_path
            } else {
                path < self.peer_next_path
            };
            if stale {
                // A late frame of a path closed and forgotten; anything in it is sent again.
                return Ok(());
            }
            return Err(self.fail(SessionError::Protocol("frame on an unknown path")));
        };
        if entry.state == PathState::Closed {
            // Written before the peer learned we closed it; anything in it is sent again.
            return Ok(());
        }
        match frame {
            Frame::Hello { .. } => Err(self.fail(SessionError::Protocol("Hello on an open path"))),
            Frame::Welcome {
                recv_next,
                recv_limit,
                ..
            } => {
                if entry.state != PathState::Opening {
                    return Err(self.fail(SessionError::Protocol("unexpected Welcome")));
                }
                self.activations += 1;
                entry.state = PathState::Active;
                entry.activated = self.activations;
                let (kind, handshake) =
                    (entry.kind, now.saturating_duration_since(entry.opened_at));
                if !self.send.ack(recv_next, recv_limit) {
                    return Err(
                        self.fail(SessionError::Protocol("Welcome acknowledges unsent data"))
                    );
                }
                self.events.push_back(SessionEvent::PathActive {
                    path,
                    kind,
                    handshake,
                });
                self.reselect(now, false);
                Ok(())
            }
            Frame::Refuse { reason, .. } => {
                if entry.state != PathState::Opening {
                    return Err(self.fail(SessionError::Protocol("unexpected Refuse")));
                }
                entry.state = PathState::Closed;
                self.events
                    .push_back(SessionEvent::PathRefused { path, reason });
                self.control.push_back(Transmit::Close { path });
                Ok(())
            }
            Frame::Data { seq, payload } => {
                if entry.state != PathState::Active || entry.peer_fenced {
                    return Err(self.fail(SessionError::Protocol("Data outside an active path")));
                }
                if payload.len() > self.config.max_message {
                    return Err(self.fail(SessionError::Protocol("message over the bound")));
                }
                if self.peer_fin.is_some_and(|fin| seq >= fin) {
                    return Err(self.fail(SessionError::Protocol("Data after Fin")));
                }
                let was_readable = self.recv.readable() > 0;
                match self.recv.handle_data(seq, payload) {
                    Received::Delivered => {
                        self.stats.messages_delivered = self.recv.next;
                        if !was_readable {
                            self.events.push_back(SessionEvent::Readable);
                        }
                        if self.in_batch {
                            self.batch_delivered = true;
                        } else {
                            self.schedule_ack(Some(now));
                        }
                        self.check_finished();
                    }
                    Received::Buffered => {}
                    Received::Duplicate => self.stats.duplicates_dropped += 1,
                    Received::BeyondLimit => {
                        return Err(self.fail(SessionError::Protocol("Data beyond the credit")))
                    }
                }
                Ok(())
            }
            Frame::Ack { next, limit } => {
                if entry.state != PathState::Active {
                    return Err(self.fail(SessionError::Protocol("Ack outside an active path")));
                }
                if !self.send.ack(next, limit) {
                    return Err(self.fail(SessionError::Protocol("Ack of unsent data")));
                }
                Ok(())
            }
            Frame::Fence { .. } => {
                if entry.state != PathState::Active || entry.peer_fenced {
                    return Err(self.fail(SessionError::Protocol("unexpected Fence")));
                }
                entry.peer_fenced = true;
                self.check_drained(now, path);
                Ok(())
            }
            Frame::Fin { next_seq } => {
                if entry.state != PathState::Active
                    || next_seq < self.recv.next
                    || self.peer_fin.is_some_and(|fin| fin != next_seq)
                {
                    return Err(self.fail(SessionError::Protocol("bad Fin")));
                }
                self.peer_fin = Some(next_seq);
                self.check_finished();
                Ok(())
            }
        }
    }

    /// The stream of `path` ended (closed, reset, or its connection went away).
    pub fn handle_path_closed(&mut self, now: Instant, path: PathId) {
        let Some(entry) = self.paths.get_mut(&path) else {
            return;
        };
        let was = entry.state;
        entry.state = PathState::Closed;
        self.control.retain(|t| match t {
            Transmit::Frame { path: p, .. } | Transmit::Close { path: p } => *p != path,
        });
        if was == PathState::Opening {
            self.events.push_back(SessionEvent::PathFailed { path });
        }
        if self.current == Some(path) {
            self.reselect(now, true);
        }
    }

    /// The next frame to write and the path to write it on: handshakes, fences and
    /// acknowledgements first, then messages (within the peer's credit), then `Fin`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        Some(match self.next_output(now)? {
            Output::Owned(transmit) => transmit,
            Output::Data { path, seq, payload } => Transmit::Frame {
                path,
                frame: Frame::Data {
                    seq,
                    payload: payload.clone(),
                },
            },
        })
    }

    /// As [`SessionEngine::poll_transmit`], with the whole frame (length prefix and body)
    /// appended to the buffer `buffer_of` gives for its path — a message is encoded from the
    /// engine's own copy, which it keeps for re-sending, without cloning it or passing
    /// through a scratch buffer. When `buffer_of` gives none the frame is dropped (a path
    /// without a writer: what it carried is sent again on the next path). Returns the path
    /// the frame was for, or a [`Encoded::Close`] (nothing appended).
    pub fn poll_transmit_framed<'b>(
        &mut self,
        now: Instant,
        buffer_of: impl FnOnce(PathId) -> Option<&'b mut BytesMut>,
    ) -> Option<Encoded> {
        Some(match self.next_output(now)? {
            Output::Owned(Transmit::Frame { path, frame }) => {
                if let Some(out) = buffer_of(path) {
                    frame.encode_framed_into(out);
                }
                Encoded::Frame { path }
            }
            Output::Owned(Transmit::Close { path }) => Encoded::Close { path },
            Output::Data { path, seq, payload } => {
                if let Some(out) = buffer_of(path) {
                    crate::wire::encode_data_framed(seq, payload, out);
                }
                Encoded::Frame { path }
            }
        })
    }

    fn next_output(&mut self, now: Instant) -> Option<Output<'_>> {
        if self.failed {
            return None;
        }
        if let Some(out) = self.control.pop_front() {
            return Some(Output::Owned(out));
        }
        let current = self.current?;
        if self.ack_now || self.ack_due.is_some_and(|due| due <= now) {
            self.ack_now = false;
            self.ack_due = None;
            let (next, limit) = (self.recv.next, self.recv.limit());
            if (next, limit) != self.ack_sent {
                self.ack_sent = (next, limit);
                self.ack_sent_bytes = self.recv.received_bytes();
                return Some(Output::Owned(Transmit::Frame {
                    path: current,
                    frame: Frame::Ack { next, limit },
                }));
            }
        }
        if self.send.can_transmit() {
            self.credit_blocked = false;
            let (seq, payload) = self.next_data()?;
            return Some(Output::Data {
                path: current,
                seq,
                payload,
            });
        }
        self.note_credit_stall();
        if self.closing && !self.fin_sent && self.send.all_transmitted() {
            self.fin_sent = true;
            return Some(Output::Owned(Transmit::Frame {
                path: current,
                frame: Frame::Fin {
                    next_seq: self.send.next_seq(),
                },
            }));
        }
        None
    }

    /// The next message to send, if the peer's credit lets it go, its bytes counted as
    /// re-sent when it goes again.
    fn next_data(&mut self) -> Option<(u64, &Bytes)> {
        let (seq, payload, resent) = self.send.next_transmit()?;
        if resent {
            self.stats.bytes_resent += payload.len() as u64;
        }
        Some((seq, payload))
    }

    /// Messages wait for the peer's credit: counted once per stall.
    fn note_credit_stall(&mut self) {
        if !self.send.all_transmitted() && !self.credit_blocked {
            self.credit_blocked = true;
            self.stats.credit_stalls += 1;
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        let event = self.events.pop_front()?;
        if !matches!(event, SessionEvent::Readable) {
            self.forget_closed_paths();
        }
        Some(event)
    }

    fn forget_closed_paths(&mut self) {
        let retired = &mut self.retired;
        self.paths.retain(|id, p| {
            if p.state != PathState::Closed {
                return true;
            }
            if retired.len() == RETIRED {
                retired.pop_front();
            }
            retired.push_back(*id);
            false
        });
    }

    /// When [`SessionEngine::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        let paths = self.paths.iter().filter_map(|(id, p)| {
            if p.state != PathState::Active || Some(*id) == self.current {
                return None;
            }
            match p.we_fenced {
                Some(at) => Some(at + self.config.drain_timeout),
                None => p.standby_until,
            }
        });
        let no_path = self.no_path_since.map(|at| at + self.config.path_timeout);
        paths.chain(self.ack_due).chain(no_path).min()
    }

    /// Runs the timers due at `now`: delayed acknowledgements, the end of the fallback window
    /// (fence), drain timeouts, the no-path timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        if self.ack_due.is_some_and(|due| due <= now) {
            self.ack_now = true;
        }
        let ids: Vec<PathId> = self.paths.keys().copied().collect();
        for path in ids {
            let Some(entry) = self.paths.get_mut(&path) else {
                continue;
            };
            if entry.state != PathState::Active || Some(path) == self.current {
                continue;
            }
            if entry.we_fenced.is_none() && entry.standby_until.is_some_and(|t| t <= now) {
                self.fence(now, path);
            } else if entry
                .we_fenced
                .is_some_and(|at| at + self.config.drain_timeout <= now)
            {
                entry.state = PathState::Closed;
                self.control.push_back(Transmit::Close { path });
            }
        }
        if let Some(since) = self.no_path_since {
            let waited = now.saturating_duration_since(since);
            if waited >= self.config.path_timeout {
                self.fail(SessionError::NoPath(waited));
            }
        }
    }

    fn fence(&mut self, now: Instant, path: PathId) {
        if let Some(entry) = self.paths.get_mut(&path) {
            entry.we_fenced = Some(now);
            entry.standby_until = None;
            self.control.push_back(Transmit::Frame {
                path,
                frame: Frame::Fence {
                    next_seq: self.send.next_seq(),
                },
            });
            self.check_drained(now, path);
        }
    }

    fn check_drained(&mut self, _now: Instant, path: PathId) {
        if let Some(entry) = self.paths.get_mut(&path) {
            if entry.we_fenced.is_some() && entry.peer_fenced && entry.state == PathState::Active {
                entry.state = PathState::Closed;
                self.control.push_back(Transmit::Close { path });
            }
        }
    }

    fn check_finished(&mut self) {
        if !self.finished && self.peer_fin == Some(self.recv.next) {
            self.finished = true;
            // The peer waits for this acknowledgement to end its side.
            self.ack_now = true;
            self.events.push_back(SessionEvent::Finished);
        }
    }

    /// Acknowledges at once past a threshold (an eighth of the window) of new messages or
    /// new credit, in bytes, else within [`SessionConfig::ack_delay`] of a delivery (`now`).
    fn schedule_ack(&mut self, now: Option<Instant>) {
        let threshold = (self.config.effective_recv_window() / 8).max(1);
        let credit = self.recv.limit() - self.ack_sent.1.min(self.recv.limit());
        let received = self.recv.received_bytes();
        let fresh = received - self.ack_sent_bytes.min(received);
        if credit >= threshold || fresh >= threshold {
            self.ack_now = true;
        } else if let Some(now) = now {
            if self.ack_due.is_none() {
                self.ack_due = Some(now + self.config.ack_delay);
            }
        }
    }

    fn reselect(&mut self, now: Instant, current_failed: bool) {
        let current_usable = self
            .current
            .and_then(|c| self.paths.get(&c))
            .is_some_and(|p| p.usable());
        let best = self
            .paths
            .iter()
            .filter(|(_, p)| p.usable())
            .max_by_key(|(id, p)| {
                let is_current = current_usable && Some(**id) == self.current;
                (p.kind, is_current, p.activated)
            })
            .map(|(id, p)| (*id, p.kind));
        let Some((to, kind)) = best else {
            if self.current.take().is_some() || current_failed {
                self.events.push_back(SessionEvent::NoPath);
            }
            if self.no_path_since.is_none() {
                self.no_path_since = Some(now);
            }
            return;
        };
        self.no_path_since = None;
        if Some(to) == self.current {
            return;
        }
        let from = self.current.replace(to);
        if let Some(new) = self.paths.get_mut(&to) {
            new.standby_until = None;
        }
        if let Some(old) = from.and_then(|f| self.paths.get_mut(&f)) {
            if old.usable() {
                old.standby_until = Some(now + self.config.fallback_window);
            }
        }
        let resent = self.send.rewind();
        self.fin_sent = false;
        self.ack_now = true;
        self.ack_sent = (u64::MAX, u64::MAX);
        self.stats.switches += 1;
        self.stats.messages_migrated += resent;
        let fallback = current_failed && from.is_some();
        if fallback {
            self.stats.fallbacks += 1;
        }
        self.events.push_back(SessionEvent::Switched {
            from,
            to,
            kind,
            resent,
            fallback,
        });
    }

    fn fail(&mut self, error: SessionError) -> SessionError {
        if !self.failed {
            self.failed = true;
            self.events.push_back(SessionEvent::Failed(error.clone()));
        }
        error
    }
}
