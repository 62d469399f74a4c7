//! The receiving half: in-order delivery, duplicate drop and a reorder buffer bounded by the
//! credit granted to the peer. Delivered messages are kept as received (a payload may be a
//! slice of a read buffer: at most `window` of them are held); a message buffered ahead of a
//! gap is copied, so it pins no read buffer.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

/// What became of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// It (and possibly buffered ones after it) became deliverable.
    Delivered,
    /// It was received before: dropped.
    Duplicate,
    /// It waits for earlier ones.
    Buffered,
    /// It is past the credit granted: a protocol violation.
    BeyondLimit,
}

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    /// Every message below it is received (in `ready` or consumed).
    pub(crate) next: u64,
    /// Messages consumed by the application.
    consumed: u64,
    ready: VecDeque<Bytes>,
    pending: BTreeMap<u64, Bytes>,
    window: u64,
}

impl RecvBuffer {
    pub(crate) fn new(window: u64) -> Self {
        RecvBuffer {
            next: 0,
            consumed: 0,
            ready: VecDeque::new(),
            pending: BTreeMap::new(),
            window,
        }
    }

    /// The peer may send messages below it.
    pub(crate) fn limit(&self) -> u64 {
        self.consumed + self.window
    }

    pub(crate) fn handle_data(&mut self, seq: u64, payload: Bytes) -> Received {
        if seq < self.next || self.pending.contains_key(&seq) {
            return Received::Duplicate;
        }
        if seq >= self.limit() {
            return Received::BeyondLimit;
        }
        if seq > self.next {
            // A copy: a payload may be a slice of the reader's buffer, and a message waiting
            // for a gap may wait long; the copy pins only itself.
            self.pending.insert(seq, Bytes::copy_from_slice(&payload));
            return Received::Buffered;
        }
        self.ready.push_back(payload);
        self.next += 1;
        while let Some(payload) = self.pending.remove(&self.next) {
            self.ready.push_back(payload);
            self.next += 1;
        }
        Received::Delivered
    }

    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        let payload = self.ready.pop_front()?;
        self.consumed += 1;
        Some(payload)
    }

    pub(crate) fn readable(&self) -> usize {
        self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_ahead_of_a_gap_is_copied_a_delivered_one_kept_as_received() {
        let mut recv = RecvBuffer::new(8);
        let buffer = Bytes::from(vec![7u8; 64]);
        let (first, second) = (buffer.slice(0..8), buffer.slice(8..16));
        assert_eq!(recv.handle_data(1, second.clone()), Received::Buffered);
        assert_eq!(recv.handle_data(0, first.clone()), Received::Delivered);
        assert_eq!(recv.readable(), 2);
        let (a, b) = (recv.pop().unwrap(), recv.pop().unwrap());
        assert_eq!((&a, &b), (&first, &second));
        // The delivered one is the received slice; the buffered one a copy of its own.
        assert_eq!(a.as_ptr(), first.as_ptr());
        assert_ne!(b.as_ptr(), second.as_ptr());
        assert_eq!(recv.handle_data(1, second), Received::Duplicate);
        assert_eq!(recv.handle_data(10, first), Received::BeyondLimit);
    }
}
