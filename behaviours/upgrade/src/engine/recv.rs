//! The receiving half: in-order delivery, duplicate drop and a reorder buffer bounded by the
//! credit granted to the peer.

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
            self.pending.insert(seq, payload);
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
