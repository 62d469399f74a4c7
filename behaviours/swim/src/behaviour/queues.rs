//! Reaching members without a connection: datagrams queued per peer while it is dialed
//! (bounded, aged out), our dials in progress, the dial backoff of peers whose dials failed,
//! and the warm-up dials of newly learned members.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use meshwire_core::{ConnectionId, PeerId};
use tokio::time::Instant;

use super::config::{Config, IoStats};

/// Datagrams waiting for connections, dials in progress and dial backoffs.
#[derive(Default)]
pub(super) struct Dials {
    /// Datagrams per peer, with the time they were queued, oldest first.
    pub(super) queued: HashMap<PeerId, VecDeque<(Instant, Bytes)>>,
    /// Our dials in progress, by peer.
    pub(super) dialing: HashMap<PeerId, ConnectionId>,
    /// Dial backoff per peer: until when, and failures in a row.
    pub(super) backoff: HashMap<PeerId, (Instant, u32)>,
}

impl Dials {
    /// Whether dials of `peer` back off at `now`.
    pub(super) fn backing_off(&self, peer: &PeerId, now: Instant) -> bool {
        self.backoff
            .get(peer)
            .is_some_and(|(until, _)| *until > now)
    }

    /// Queues `bytes` for `to` within the bounds of `config` (the oldest of a full queue is
    /// dropped; a peer beyond `max_queued_peers` gets nothing queued). `true` if queued.
    pub(super) fn enqueue(
        &mut self,
        to: PeerId,
        bytes: Bytes,
        now: Instant,
        config: &Config,
        io: &mut IoStats,
    ) -> bool {
        let per_peer = config.max_queued_datagrams_per_peer;
        if per_peer == 0
            || (!self.queued.contains_key(&to) && self.queued.len() >= config.max_queued_peers)
        {
            io.datagrams_dropped += 1;
            return false;
        }
        let q = self.queued.entry(to).or_default();
        if q.len() >= per_peer {
            q.pop_front();
            io.datagrams_dropped += 1;
        }
        q.push_back((now, bytes));
        io.datagrams_queued += 1;
        true
    }

    /// What waited for `peer`, still within `ttl` at `now` (older ones are dropped and
    /// counted).
    pub(super) fn take_fresh(
        &mut self,
        peer: &PeerId,
        now: Instant,
        ttl: Duration,
        io: &mut IoStats,
    ) -> Vec<Bytes> {
        let Some(q) = self.queued.remove(peer) else {
            return Vec::new();
        };
        let mut fresh = Vec::with_capacity(q.len());
        for (at, bytes) in q {
            if now.saturating_duration_since(at) > ttl {
                io.datagrams_dropped += 1;
            } else {
                fresh.push(bytes);
            }
        }
        fresh
    }

    /// Drops what waited for `peer` (its dial failed).
    pub(super) fn drop_queue(&mut self, peer: &PeerId, io: &mut IoStats) {
        if let Some(q) = self.queued.remove(peer) {
            io.datagrams_dropped += q.len() as u64;
        }
    }

    /// Drops queued datagrams older than `ttl`.
    pub(super) fn sweep(&mut self, now: Instant, ttl: Duration, io: &mut IoStats) {
        let mut dropped = 0u64;
        self.queued.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > ttl)
            {
                q.pop_front();
                dropped += 1;
            }
            !q.is_empty()
        });
        io.datagrams_dropped += dropped;
    }

    /// A connection with `peer` came up: its dial and backoff are over.
    pub(super) fn connected(&mut self, peer: &PeerId) {
        self.dialing.remove(peer);
        self.backoff.remove(peer);
    }

    /// The dial `connection` of `peer` failed; `true` if it was ours (then no longer in
    /// progress).
    pub(super) fn dial_ended(&mut self, peer: &PeerId, connection: ConnectionId) -> bool {
        let ours = self.dialing.get(peer) == Some(&connection);
        if ours {
            self.dialing.remove(peer);
        }
        ours
    }

    /// Our dial of `peer` failed: back off its dials, doubling with each failure in a row up
    /// to `dial_backoff_max`. Returns the wait.
    pub(super) fn back_off(&mut self, peer: PeerId, now: Instant, config: &Config) -> Duration {
        let (_, failures) = self.backoff.get(&peer).copied().unwrap_or((now, 0));
        let failures = failures.saturating_add(1);
        let wait = config
            .dial_backoff
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(config.dial_backoff_max);
        self.backoff.insert(peer, (now + wait, failures));
        if self.backoff.len() > 4 * config.max_queued_peers.max(64) {
            self.backoff.retain(|_, (until, _)| *until > now);
        }
        wait
    }
}

/// Newly learned live members to dial ahead of their first probe, a few per protocol period.
#[derive(Default)]
pub(super) struct WarmDials {
    queue: VecDeque<PeerId>,
    next: Option<Instant>,
}

impl WarmDials {
    /// Queues `peer`; the first of a batch is due at a random point of the coming period
    /// (`jitter`), so the members that learn of a new node together do not all handshake
    /// with it at once.
    pub(super) fn push(&mut self, peer: PeerId, now: Instant, jitter: Duration) {
        if self.queue.contains(&peer) {
            return;
        }
        self.queue.push_back(peer);
        if self.next.is_none() {
            self.next = Some(now + jitter);
        }
    }

    /// When the next warm-up dial is due.
    pub(super) fn next(&mut self) -> Option<Instant> {
        if self.queue.is_empty() {
            self.next = None;
        }
        self.next
    }

    /// If a dial is due at `now`: the queued peers in order until `wanted` accepts one
    /// (the others are dropped); the next is then due `spacing` later.
    pub(super) fn take_due(
        &mut self,
        now: Instant,
        spacing: Duration,
        mut wanted: impl FnMut(&PeerId) -> bool,
    ) -> Option<PeerId> {
        if self.next.is_none_or(|w| w > now) {
            return None;
        }
        let mut chosen = None;
        while let Some(peer) = self.queue.pop_front() {
            if wanted(&peer) {
                chosen = Some(peer);
                break;
            }
        }
        self.next = (!self.queue.is_empty()).then(|| now + spacing);
        chosen
    }
}
