//! What the engine hands to its driver: [`Transmit`]s, and the bounded queues that hold them
//! and the events until the driver takes them.

use std::collections::VecDeque;

use meshwire_core::PeerId;

use super::event::SwimEvent;
use crate::wire::Message;

/// How a [`Transmit`] must be sent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TransmitKind {
    /// As one unreliable datagram (a QUIC datagram): encode with [`Message::encode`]; the
    /// result is never larger than [`SwimConfig::mtu`](crate::SwimConfig::mtu). Losing it is fine.
    Datagram,
    /// As a push-pull request on a new stream negotiated as
    /// [`PROTOCOL_NAME`](crate::PROTOCOL_NAME): write it framed
    /// ([`encode_frame`](crate::wire::encode_frame)), read one framed answer, and give that
    /// to [`SwimEngine::handle_push_pull`](crate::SwimEngine::handle_push_pull) (or [`SwimEngine::handle_push_pull_bytes`](crate::SwimEngine::handle_push_pull_bytes)). If the stream
    /// cannot be opened or the answer does not come, call [`SwimEngine::handle_push_pull_failed`](crate::SwimEngine::handle_push_pull_failed).
    PushPull,
}

/// A message the engine wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination. Its addresses, when the driver needs to dial, are in
    /// [`SwimEngine::member`](crate::SwimEngine::member)`(..).meta.addresses()`.
    pub to: PeerId,
    /// Datagram or push-pull stream.
    pub kind: TransmitKind,
    /// The message.
    pub message: Message,
}

/// The capacity an output queue keeps once drained: enough for ordinary traffic, while a
/// burst's memory (every node of a large group holds one engine) is given back.
const KEPT_CAPACITY: usize = 64;

/// Output queues shared by the realms of a engine.
#[derive(Debug)]
pub(crate) struct Outputs {
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<SwimEvent>,
    pub(super) cap: usize,
    pub(super) dropped_events: u64,
    pub(super) dropped_transmits: u64,
}

impl Outputs {
    pub(crate) fn transmit(&mut self, t: Transmit) {
        if self.transmits.len() >= self.cap {
            self.dropped_transmits += 1;
        } else {
            self.transmits.push_back(t);
        }
    }

    pub(crate) fn event(&mut self, e: SwimEvent) {
        if self.events.len() >= self.cap {
            self.dropped_events += 1;
        } else {
            self.events.push_back(e);
        }
    }

    /// The next transmit; the queue gives back the memory of a burst once drained.
    pub(crate) fn pop_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_none() && self.transmits.capacity() > KEPT_CAPACITY {
            self.transmits.shrink_to(KEPT_CAPACITY);
        }
        t
    }

    /// The next event; the queue gives back the memory of a burst (a join's thousands of
    /// `MemberJoined`) once drained.
    pub(crate) fn pop_event(&mut self) -> Option<SwimEvent> {
        let e = self.events.pop_front();
        if e.is_none() && self.events.capacity() > KEPT_CAPACITY {
            self.events.shrink_to(KEPT_CAPACITY);
        }
        e
    }
}
