//! The engine's batch entry points, used by the driver: the frames of one read handled
//! together (in-order messages the short way, one acknowledgement decision per batch) and
//! delivered messages taken in batches.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{PathId, PathState, SessionEngine, SessionError, SessionEvent};
use crate::wire::Frame;

impl SessionEngine {
    /// The frames of as many messages as can go now, appended to `out`, the buffer of the
    /// current path, while it holds less than `limit` bytes; how many. Only when nothing
    /// else is due first (a handshake, fence or close, an acknowledgement, a path to
    /// choose): then it appends nothing and [`SessionEngine::poll_transmit_framed`], which
    /// handles everything in order, is the way. What it appends is what that would append.
    pub fn poll_data_framed(&mut self, now: Instant, out: &mut BytesMut, limit: usize) -> usize {
        if self.failed
            || self.current.is_none()
            || !self.control.is_empty()
            || self.ack_now
            || self.ack_due.is_some_and(|due| due <= now)
        {
            return 0;
        }
        let mut sent = 0;
        while out.len() < limit {
            let Some((seq, payload)) = self.next_data() else {
                break;
            };
            crate::wire::encode_data_framed(seq, payload, out);
            sent += 1;
        }
        if sent > 0 {
            self.credit_blocked = false;
        }
        if out.len() < limit {
            // Stopped by the peer's credit (or out of messages), not by the buffer.
            self.note_credit_stall();
        }
        sent
    }

    /// As [`SessionEngine::recv`] for up to `max` messages, handed to `push` in order (the
    /// acknowledgement they make due is decided once); how many.
    pub fn recv_many(&mut self, max: usize, push: impl FnMut(Bytes)) -> usize {
        let taken = self.recv.pop_many(max, push);
        if taken > 0 {
            self.schedule_ack(None);
        }
        taken
    }

    /// Frames (other than `Hello`) read together on `path`, as [`SessionEngine::handle_frame`]
    /// each (the acknowledgement the messages among them make due is decided once, after the
    /// last); a violation fails the session and the frames after it are ignored.
    pub fn handle_frames(
        &mut self,
        now: Instant,
        path: PathId,
        frames: impl IntoIterator<Item = Frame>,
    ) -> Result<(), SessionError> {
        self.in_batch = true;
        let mut result = Ok(());
        // In-order messages on an active path take the short way while nothing changes the
        // path's state (re-checked after every other frame).
        let mut fast = self.in_order_data_allowed(path);
        for frame in frames {
            let frame = match frame {
                Frame::Data { seq, payload }
                    if fast && payload.len() <= self.config.max_message =>
                {
                    let was_readable = self.recv.readable() > 0;
                    match self.recv.take_in_order(seq, payload) {
                        Ok(()) => {
                            if !was_readable {
                                self.events.push_back(SessionEvent::Readable);
                            }
                            self.batch_delivered = true;
                            continue;
                        }
                        Err(payload) => Frame::Data { seq, payload },
                    }
                }
                frame => frame,
            };
            if let Err(error) = self.handle_frame(now, path, frame) {
                result = Err(error);
                break;
            }
            fast = self.in_order_data_allowed(path);
        }
        self.stats.messages_delivered = self.recv.next;
        self.in_batch = false;
        if std::mem::take(&mut self.batch_delivered) {
            self.schedule_ack(Some(now));
        }
        result
    }

    /// Whether a `Data` frame on `path` passes every check of [`SessionEngine::handle_frame`]
    /// but the receive buffer's (an active path the peer has not fenced, no `Fin` from the
    /// peer, a session not failed).
    fn in_order_data_allowed(&self, path: PathId) -> bool {
        !self.failed
            && self.peer_fin.is_none()
            && self
                .paths
                .get(&path)
                .is_some_and(|entry| entry.state == PathState::Active && !entry.peer_fenced)
    }
}
