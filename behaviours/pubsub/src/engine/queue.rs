//! A peer's outbound queue: control RPCs (subscriptions, GRAFT, PRUNE, IHAVE, IWANT) and data
//! RPCs (messages) in two bounded queues, control always taken first. A full queue refuses
//! what comes next and counts it, so a peer that reads slowly loses its own messages and
//! never holds up anyone else's. Each data RPC carries one message, kept with its id's hash, so
//! a copy still waiting can be dropped when the peer says IDONTWANT.

use std::collections::VecDeque;

use crate::wire::Rpc;

/// What a peer has been dropped, counted since it connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Control RPCs dropped because its control queue was full.
    pub dropped_control: u64,
    /// Data RPCs dropped because its data queue was full.
    pub dropped_messages: u64,
    /// Control RPCs waiting now.
    pub queued_control: usize,
    /// Data RPCs waiting now.
    pub queued_messages: usize,
}

pub(crate) struct PeerQueue {
    control: VecDeque<Rpc>,
    /// Data RPCs with the hash of their message's id ([`super::idontwant::id_hash`]).
    data: VecDeque<(u64, Rpc)>,
    max_control: usize,
    max_data: usize,
    dropped_control: u64,
    dropped_data: u64,
}

impl PeerQueue {
    pub(crate) fn new(max_control: usize, max_data: usize) -> Self {
        PeerQueue {
            control: VecDeque::new(),
            data: VecDeque::new(),
            max_control,
            max_data,
            dropped_control: 0,
            dropped_data: 0,
        }
    }

    /// Queues a control RPC; `false` (and counted) if the control queue is full.
    pub(crate) fn push_control(&mut self, rpc: Rpc) -> bool {
        if self.control.len() >= self.max_control {
            self.dropped_control += 1;
            return false;
        }
        self.control.push_back(rpc);
        true
    }

    /// Queues a data RPC carrying the message whose id hashes to `id_hash`; `false` (and
    /// counted) if the data queue is full.
    pub(crate) fn push_data(&mut self, id_hash: u64, rpc: Rpc) -> bool {
        if self.data.len() >= self.max_data {
            self.dropped_data += 1;
            return false;
        }
        self.data.push_back((id_hash, rpc));
        true
    }

    /// Drops the data RPCs whose message id hashes to one of `hashes`; how many.
    pub(crate) fn remove_data(&mut self, hashes: &[u64]) -> usize {
        if hashes.is_empty() || self.data.is_empty() {
            return 0;
        }
        let before = self.data.len();
        self.data.retain(|(h, _)| !hashes.contains(h));
        before - self.data.len()
    }

    /// The next RPC to send: control first.
    pub(crate) fn pop(&mut self) -> Option<Rpc> {
        self.control
            .pop_front()
            .or_else(|| self.data.pop_front().map(|(_, rpc)| rpc))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.control.is_empty() && self.data.is_empty()
    }

    pub(crate) fn stats(&self) -> QueueStats {
        QueueStats {
            dropped_control: self.dropped_control,
            dropped_messages: self.dropped_data,
            queued_control: self.control.len(),
            queued_messages: self.data.len(),
        }
    }
}
