//! The receiving half: in-order delivery, duplicate drop and a reorder buffer bounded by the
//! credit granted to the peer, in bytes (each message its length plus
//! [`MESSAGE_COST`](super::config::MESSAGE_COST)). Delivered messages are kept as received (a
//! payload may be a slice of a read buffer; the reader bounds the chunks so pinned); a
//! message buffered ahead of a gap is copied, so it pins no read buffer.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::config::MESSAGE_COST;
use super::send::cost;

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
    /// The credit offset of the first unconsumed message: the cost of every message the
    /// application consumed.
    consumed_bytes: u64,
    /// What `ready` and `pending` count against the window.
    held: u64,
    /// Bytes received in order (the credit offset of message `next`).
    received_bytes: u64,
    ready: VecDeque<Bytes>,
    pending: BTreeMap<u64, Bytes>,
    window: u64,
}

impl RecvBuffer {
    /// A receive buffer granting `window` bytes of credit.
    pub(crate) fn new(window: u64) -> Self {
        RecvBuffer {
            next: 0,
            consumed_bytes: 0,
            held: 0,
            received_bytes: 0,
            ready: VecDeque::new(),
            pending: BTreeMap::new(),
            window,
        }
    }

    /// The credit: the peer may send messages that end at or below this offset (the cost of
    /// every message before and including them).
    pub(crate) fn limit(&self) -> u64 {
        self.consumed_bytes + self.window
    }

    /// Bytes (costs) of messages received in order.
    pub(crate) fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// A message arrived. A sender within the credit never makes us hold more than the
    /// window: message `seq` ends at or below the limit it was granted, so the messages from
    /// the first unconsumed one to `seq` — those we hold, this one, and those not received
    /// yet, at least [`MESSAGE_COST`] each — cost at most the window. Past that the message
    /// is refused.
    pub(crate) fn handle_data(&mut self, seq: u64, payload: Bytes) -> Received {
        if seq < self.next || self.pending.contains_key(&seq) {
            return Received::Duplicate;
        }
        let c = cost(payload.len());
        // Messages between `next` and `seq` not held cost at least MESSAGE_COST each.
        let gaps = (seq - self.next).saturating_sub(self.pending.len() as u64);
        let least = self
            .held
            .saturating_add(c)
            .saturating_add(gaps.saturating_mul(MESSAGE_COST));
        if least > self.window {
            return Received::BeyondLimit;
        }
        self.held += c;
        if seq > self.next {
            // A copy: a payload may be a slice of the reader's buffer, and a message waiting
            // for a gap may wait long; the copy pins only itself.
            self.pending.insert(seq, Bytes::copy_from_slice(&payload));
            return Received::Buffered;
        }
        self.ready.push_back(payload);
        self.next += 1;
        self.received_bytes += c;
        while let Some(payload) = self.pending.remove(&self.next) {
            self.received_bytes += cost(payload.len());
            self.ready.push_back(payload);
            self.next += 1;
        }
        Received::Delivered
    }

    /// Takes message `seq` if it is the next one in order with nothing buffered after a gap
    /// and it fits the window — what [`RecvBuffer::handle_data`] would deliver at once, in
    /// fewer steps; otherwise gives it back for `handle_data` to decide.
    pub(crate) fn take_in_order(&mut self, seq: u64, payload: Bytes) -> Result<(), Bytes> {
        let c = cost(payload.len());
        if seq != self.next || !self.pending.is_empty() || self.held + c > self.window {
            return Err(payload);
        }
        self.held += c;
        self.received_bytes += c;
        self.next += 1;
        self.ready.push_back(payload);
        Ok(())
    }

    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        let payload = self.ready.pop_front()?;
        let c = cost(payload.len());
        self.consumed_bytes += c;
        self.held -= c;
        Some(payload)
    }

    /// Up to `max` delivered messages handed to `push` in order, their cost released once
    /// for all of them; how many.
    pub(crate) fn pop_many(&mut self, max: usize, mut push: impl FnMut(Bytes)) -> usize {
        let n = max.min(self.ready.len());
        let mut released = 0;
        for payload in self.ready.drain(..n) {
            released += cost(payload.len());
            push(payload);
        }
        self.consumed_bytes += released;
        self.held -= released;
        n
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
        let mut recv = RecvBuffer::new(8 * (MESSAGE_COST + 8));
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
        // Messages 2 to 10 (at least MESSAGE_COST each) and message 11 (40) would be more
        // than the window (320 bytes); up to message 9 they fit.
        assert_eq!(recv.handle_data(11, first.clone()), Received::BeyondLimit);
        assert_eq!(recv.handle_data(9, first), Received::Buffered);
    }

    #[test]
    fn only_the_next_message_with_no_gap_behind_it_takes_the_short_way() {
        let mut recv = RecvBuffer::new(4 * (MESSAGE_COST + 8));
        let m = |i: u8| Bytes::from(vec![i; 8]);
        assert_eq!(recv.take_in_order(0, m(0)), Ok(()));
        // Ahead of a gap, or a duplicate: given back (`handle_data` buffers or drops it).
        assert_eq!(recv.take_in_order(2, m(2)), Err(m(2)));
        assert_eq!(recv.take_in_order(0, m(0)), Err(m(0)));
        assert_eq!(recv.handle_data(2, m(2)), Received::Buffered);
        // The next one while a later one is buffered: `handle_data` must deliver both.
        assert_eq!(recv.take_in_order(1, m(1)), Err(m(1)));
        assert_eq!(recv.handle_data(1, m(1)), Received::Delivered);
        assert_eq!(recv.readable(), 3);
        // Past the window: given back (`handle_data` refuses it).
        assert_eq!(recv.take_in_order(3, m(3)), Ok(()));
        assert_eq!(recv.take_in_order(4, m(4)), Err(m(4)));
        assert_eq!(recv.handle_data(4, m(4)), Received::BeyondLimit);
        let read: Vec<u8> = std::iter::from_fn(|| recv.pop()).map(|p| p[0]).collect();
        assert_eq!(read, [0, 1, 2, 3]);
    }

    #[test]
    fn the_receiver_holds_at_most_its_window_in_bytes() {
        let window = 4 * (MESSAGE_COST + 8);
        let mut recv = RecvBuffer::new(window);
        let m = Bytes::from_static(b"12345678");
        for seq in 0..4 {
            assert_eq!(recv.handle_data(seq, m.clone()), Received::Delivered);
        }
        assert_eq!(recv.limit(), window);
        assert_eq!(recv.received_bytes(), window);
        // A fifth before any is read is past the credit, even an empty one.
        assert_eq!(recv.handle_data(4, m.clone()), Received::BeyondLimit);
        assert_eq!(recv.handle_data(4, Bytes::new()), Received::BeyondLimit);
        // Reading one grants its cost again.
        assert_eq!(recv.pop(), Some(m.clone()));
        assert_eq!(recv.limit(), window + MESSAGE_COST + 8);
        assert_eq!(recv.handle_data(4, m.clone()), Received::Delivered);
        assert_eq!(recv.handle_data(5, Bytes::new()), Received::BeyondLimit);
        // Taken in a batch: in order, at most `max`, the cost of each granted again.
        let mut taken = Vec::new();
        assert_eq!(recv.pop_many(2, |p| taken.push(p)), 2);
        assert_eq!(taken, [m.clone(), m.clone()]);
        assert_eq!(recv.limit(), window + 3 * (MESSAGE_COST + 8));
        assert_eq!(recv.pop_many(8, |p| taken.push(p)), 2);
        assert_eq!(recv.pop_many(8, |p| taken.push(p)), 0);
        assert_eq!(recv.limit(), window + 5 * (MESSAGE_COST + 8));
        for seq in 5..9 {
            assert_eq!(recv.handle_data(seq, m.clone()), Received::Delivered);
        }
        assert_eq!(recv.handle_data(9, Bytes::new()), Received::BeyondLimit);
    }
}
