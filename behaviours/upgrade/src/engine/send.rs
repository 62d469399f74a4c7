//! The sending half: numbered messages kept until acknowledged, the transmit cursor of the
//! current path and the peer's credit.

use std::collections::VecDeque;

use bytes::Bytes;

/// Why a message was not accepted by [`super::SessionEngine::send`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The send window is full (messages or bytes); retry once acknowledgements free it.
    #[error("send window full")]
    WindowFull,
    /// The message is larger than [`super::SessionConfig::max_message`].
    #[error("message of {len} bytes over the bound of {max}")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The session is closing or has ended.
    #[error("session closed")]
    Closed,
}

/// What a message of `len` bytes counts against the windows.
pub(crate) fn cost(len: usize) -> u64 {
    len as u64 + super::config::MESSAGE_COST
}

#[derive(Debug)]
pub(crate) struct SendBuffer {
    /// Messages `acked..next_seq`, in order.
    unacked: VecDeque<Bytes>,
    /// What `unacked` counts against the send window ([`cost`] of each message).
    bytes: u64,
    /// Every message below it is acknowledged.
    pub(crate) acked: u64,
    /// The credit offset of message `acked`: the cost of every message before it.
    acked_offset: u64,
    /// The next message transmitted on the current path.
    next_tx: u64,
    /// The credit offset of message `next_tx`.
    tx_offset: u64,
    /// Every message below it was transmitted at least once.
    high_tx: u64,
    /// The peer accepts messages that end at or below this credit offset.
    pub(crate) peer_limit: u64,
    max_bytes: u64,
}

impl SendBuffer {
    pub(crate) fn new(max_bytes: usize) -> Self {
        SendBuffer {
            unacked: VecDeque::new(),
            bytes: 0,
            acked: 0,
            acked_offset: 0,
            next_tx: 0,
            tx_offset: 0,
            high_tx: 0,
            peer_limit: 0,
            max_bytes: max_bytes as u64,
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.acked + self.unacked.len() as u64
    }

    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.unacked.is_empty() || self.bytes + cost(len) <= self.max_bytes
    }

    pub(crate) fn push(&mut self, payload: Bytes) -> Result<u64, SendError> {
        if !self.has_room(payload.len()) {
            return Err(SendError::WindowFull);
        }
        let seq = self.next_seq();
        self.bytes += cost(payload.len());
        self.unacked.push_back(payload);
        Ok(seq)
    }

    /// Applies a cumulative acknowledgement and the peer's credit (a credit offset); `false`
    /// if it acknowledges a message never sent.
    pub(crate) fn ack(&mut self, next: u64, limit: u64) -> bool {
        if next > self.high_tx {
            return false;
        }
        while self.acked < next {
            if let Some(front) = self.unacked.pop_front() {
                let c = cost(front.len());
                self.bytes -= c;
                self.acked_offset += c;
            }
            self.acked += 1;
        }
        if self.next_tx < self.acked {
            self.next_tx = self.acked;
            self.tx_offset = self.acked_offset;
        }
        self.peer_limit = self.peer_limit.max(limit);
        true
    }

    /// Moves the transmit cursor back to the first unacknowledged message (a new path); the
    /// number of messages that will be sent again.
    pub(crate) fn rewind(&mut self) -> u64 {
        self.next_tx = self.acked;
        self.tx_offset = self.acked_offset;
        self.high_tx - self.acked
    }

    /// The message at the transmit cursor, if one is queued.
    fn at_cursor(&self) -> Option<&Bytes> {
        let index = usize::try_from(self.next_tx - self.acked).ok()?;
        self.unacked.get(index)
    }

    /// Whether a message is queued for transmission within the peer's credit.
    pub(crate) fn can_transmit(&self) -> bool {
        self.at_cursor()
            .is_some_and(|m| self.tx_offset + cost(m.len()) <= self.peer_limit)
    }

    /// The next message to transmit (lent: the buffer keeps it until acknowledged), if one is
    /// queued and within the peer's credit, and whether it is a re-send.
    pub(crate) fn next_transmit(&mut self) -> Option<(u64, &Bytes, bool)> {
        let index = usize::try_from(self.next_tx - self.acked).ok()?;
        let len = self.unacked.get(index)?.len();
        if self.tx_offset + cost(len) > self.peer_limit {
            return None;
        }
        let seq = self.next_tx;
        let resent = seq < self.high_tx;
        self.next_tx += 1;
        self.tx_offset += cost(len);
        self.high_tx = self.high_tx.max(self.next_tx);
        let payload = self.unacked.get(index)?;
        Some((seq, payload, resent))
    }

    /// Every queued message has been transmitted on the current path.
    pub(crate) fn all_transmitted(&self) -> bool {
        self.next_tx >= self.next_seq()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }
}
