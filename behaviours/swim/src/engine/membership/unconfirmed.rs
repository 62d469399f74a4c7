//! Members learned second-hand wait *unconfirmed* (docs/swim.md section 3b).
//!
//! A signed alive record proves that its key holder made it, not that anyone runs the
//! member: an attacker can sign records for any number of fresh keys at unreachable (or a
//! victim's) addresses. So a member that a node hears of only from someone else — gossip, or
//! the table of a push-pull partner other than a join's — is kept apart from the membership
//! until a message straight from it (over a connection whose handshake proved its key)
//! arrives: typically the ack to a confirmation ping. Until then it is not a member: not
//! counted, not probed, not a ping-req helper or gossip target, not in push-pull answers,
//! not disseminated, reported to nobody.
//!
//! The waiting entries are bounded in all and per introducer (the peer whose message
//! announced them), pinged at a bounded rate shared round-robin among introducers, dropped
//! after three unanswered pings or the suspicion timeout, and an introducer whose
//! announcements keep failing is ignored for a while.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use meshwire_core::PeerId;

use super::{Membership, Timer};
use crate::engine::config::SwimConfig;
use crate::engine::output::Outputs;
use crate::hash::{keyed_map, KeyedMap};
use crate::member::{Member, MemberState};
use crate::record::AliveRecord;
use crate::wire::{Body, Ping};

/// Confirmation pings per unconfirmed member, one per protocol period.
pub(super) const CONFIRMATION_PINGS: u8 = 3;

/// How an alive record reached us.
#[derive(Clone, Copy, Debug)]
pub(super) enum Via {
    /// In a datagram from this (authenticated) sender.
    Datagram(PeerId),
    /// In a push-pull message from this partner. `trusted`: the answer to a join this node
    /// asked for (a seed or former member it chose), whose table is taken as it is.
    PushPull { partner: PeerId, trusted: bool },
}

impl Via {
    /// Who announced `peer` if the record is second-hand and must wait for confirmation;
    /// `None` if it comes from the member itself or from a trusted partner.
    fn introducer(self, peer: &PeerId) -> Option<PeerId> {
        match self {
            Via::Datagram(from) if from != *peer => Some(from),
            Via::PushPull {
                partner,
                trusted: false,
            } if partner != *peer => Some(partner),
            _ => None,
        }
    }

    /// Whether a member new to us is gossiped on when it enters: unless it comes from a
    /// push-pull partner's table (the group knows it already).
    pub(super) fn gossip_new(self, peer: &PeerId) -> bool {
        match self {
            Via::Datagram(_) => true,
            Via::PushPull { partner, .. } => partner == *peer,
        }
    }
}

/// An unconfirmed member: its signed alive record and where it came from.
#[derive(Debug)]
struct Waiting {
    introducer: PeerId,
    /// Its signed alive record (shared).
    record: Arc<AliveRecord>,
    expires: Instant,
    pings: u8,
}

#[derive(Debug, Default)]
struct Introducer {
    /// Its entries waiting (pinged or not).
    count: usize,
    /// Its entries not pinged yet, oldest first.
    queue: VecDeque<PeerId>,
    failed: u32,
    confirmed: u32,
    penalised_until: Option<Instant>,
    /// It has a place in the rotation.
    in_rotation: bool,
}

impl Introducer {
    fn penalised(&self, now: Instant) -> bool {
        self.penalised_until.is_some_and(|t| t > now)
    }
}

/// The unconfirmed members of one realm.
#[derive(Debug)]
pub(super) struct Unconfirmed {
    entries: KeyedMap<PeerId, Waiting>,
    introducers: KeyedMap<PeerId, Introducer>,
    /// Introducers with entries not pinged yet, served round-robin.
    rotation: VecDeque<PeerId>,
    tokens: f64,
    at: Instant,
    /// `SwimConfig::confirmations_per_sec`.
    rate: f64,
}

impl Unconfirmed {
    pub(super) fn new(hash_key: u64, cfg: &SwimConfig, now: Instant) -> Self {
        Unconfirmed {
            entries: keyed_map(hash_key),
            introducers: keyed_map(hash_key ^ 0x55),
            rotation: VecDeque::new(),
            tokens: f64::from(cfg.confirmations_per_sec),
            at: now,
            rate: f64::from(cfg.confirmations_per_sec),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn incarnation(&self, peer: &PeerId) -> Option<u64> {
        self.entries.get(peer).map(|w| w.record.incarnation)
    }

    fn refill(&mut self, now: Instant) {
        let rate = self.rate;
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(rate);
        self.at = self.at.max(now);
    }

    /// When the next confirmation ping may start, if some entry waits for one.
    pub(super) fn next_ping_at(&self) -> Option<Instant> {
        if self.rotation.is_empty() {
            return None;
        }
        if self.tokens >= 1.0 {
            return Some(self.at);
        }
        // One microsecond more than the exact wait: the conversion to nanoseconds rounds
        // down, and a wake-up a hair early would find no token and ask again at once.
        let wait = (1.0 - self.tokens) / self.rate;
        Some(
            self.at
                + std::time::Duration::from_secs_f64(wait)
                + std::time::Duration::from_micros(1),
        )
    }

    /// Whether an announcement of a new member by `introducer` may be taken (checked before
    /// its signature, so that refused ones cost nothing).
    fn admissible(&self, introducer: &PeerId, now: Instant, cfg: &SwimConfig) -> bool {
        let count = match self.introducers.get(introducer) {
            Some(i) if i.penalised(now) => return false,
            Some(i) => i.count,
            None => 0,
        };
        if count >= cfg.max_unconfirmed_per_introducer {
            return false;
        }
        self.entries.len() < cfg.max_unconfirmed || self.eviction_victim(count).is_some()
    }

    /// The introducer to take a place from for a newcomer whose introducer holds `count`:
    /// the one holding the most, if it holds more than `count + 1` and has an entry not
    /// pinged yet. An introducer can thus only push out entries of those holding more than
    /// itself.
    fn eviction_victim(&self, count: usize) -> Option<PeerId> {
        self.introducers
            .iter()
            .filter(|(_, i)| !i.queue.is_empty())
            .max_by_key(|(p, i)| (i.count, **p))
            .filter(|(_, i)| i.count > count + 1)
            .map(|(p, _)| *p)
    }

    /// Removes `peer`'s entry and its place in its introducer's queue.
    fn remove(&mut self, peer: &PeerId) -> Option<Waiting> {
        let w = self.entries.remove(peer)?;
        if let Some(i) = self.introducers.get_mut(&w.introducer) {
            i.count = i.count.saturating_sub(1);
            i.queue.retain(|p| p != peer);
        }
        Some(w)
    }

    /// Forgets introducers with nothing waiting, no penalty and no failure on record; when
    /// the table is large, also those with failures.
    fn tidy(&mut self, introducer: &PeerId, now: Instant, cfg: &SwimConfig) {
        if self
            .introducers
            .get(introducer)
            .is_some_and(|i| i.count == 0 && !i.penalised(now) && i.failed == 0)
        {
            self.introducers.remove(introducer);
        }
        if self.introducers.len() > 2 * cfg.max_unconfirmed {
            self.introducers
                .retain(|_, i| i.count > 0 || i.penalised(now));
        }
    }
}

impl Membership {
    /// An alive record of a member not in our table, that reached us `via`: `true` if it
    /// was handled here (taken unconfirmed, refused, or an update of an unconfirmed entry);
    /// `false` if it is to enter the membership at once (first-hand or trusted), in which case
    /// any unconfirmed entry of it is gone.
    pub(super) fn handle_unknown_alive(
        &mut self,
        record: &Arc<AliveRecord>,
        via: Via,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) -> bool {
        let (peer, inc) = (record.peer, record.incarnation);
        let introducer = via.introducer(&peer);
        if let Some(known) = self.unconfirmed.incarnation(&peer) {
            if inc <= known {
                if introducer.is_none() {
                    self.confirm(&peer, now, cfg, out);
                }
                return true;
            }
            if !self.check_signature(record, now, cfg) {
                return true;
            }
            if let Some(w) = self.unconfirmed.entries.get_mut(&peer) {
                w.record = record.clone();
            }
            if introducer.is_none() {
                // First-hand or trusted: it enters with the record just received.
                self.confirm(&peer, now, cfg, out);
            }
            return true;
        }
        let Some(introducer) = introducer else {
            return false;
        };
        if !self.unconfirmed.admissible(&introducer, now, cfg) {
            self.stats.unconfirmed_dropped += 1;
            return true;
        }
        if !self.check_signature(record, now, cfg) {
            return true;
        }
        let u = &mut self.unconfirmed;
        if u.entries.len() >= cfg.max_unconfirmed {
            let count = u.introducers.get(&introducer).map_or(0, |i| i.count);
            let Some(victim) = u.eviction_victim(count) else {
                self.stats.unconfirmed_dropped += 1;
                return true;
            };
            let newest = u
                .introducers
                .get_mut(&victim)
                .and_then(|i| i.queue.pop_back());
            if let Some(p) = newest {
                u.remove(&p);
                self.stats.unconfirmed_dropped += 1;
            }
        }
        let expires = now + cfg.suspicion_min_timeout(self.live + 1);
        u.entries.insert(
            peer,
            Waiting {
                introducer,
                record: record.clone(),
                expires,
                pings: 0,
            },
        );
        let i = u.introducers.entry(introducer).or_default();
        i.count += 1;
        i.queue.push_back(peer);
        if !i.in_rotation {
            i.in_rotation = true;
            u.rotation.push_back(introducer);
        }
        self.stats.unconfirmed_added += 1;
        self.timers.push(Reverse((expires, Timer::Expire(peer))));
        self.start_confirmations(now, cfg, out);
        true
    }

    /// Starts confirmation pings within the budget, one introducer at a time.
    pub(super) fn start_confirmations(
        &mut self,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        self.unconfirmed.refill(now);
        while self.unconfirmed.tokens >= 1.0 {
            let Some(intro) = self.unconfirmed.rotation.pop_front() else {
                break;
            };
            let Some(i) = self.unconfirmed.introducers.get_mut(&intro) else {
                continue;
            };
            let Some(peer) = i.queue.pop_front() else {
                i.in_rotation = false;
                continue;
            };
            if i.queue.is_empty() {
                i.in_rotation = false;
            } else {
                self.unconfirmed.rotation.push_back(intro);
            }
            self.unconfirmed.tokens -= 1.0;
            self.confirmation_ping(peer, now, cfg, out);
        }
    }

    /// Sends `peer` a confirmation ping (without piggybacked updates: an entry that may be
    /// made up must not use up the retransmissions of real news) and arms its next step.
    fn confirmation_ping(
        &mut self,
        peer: PeerId,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        let Some(w) = self.unconfirmed.entries.get_mut(&peer) else {
            return;
        };
        w.pings += 1;
        self.stats.confirmation_pings += 1;
        let seq = self.next_seq();
        self.emit(
            out,
            peer,
            Body::Ping(Ping {
                seq,
                updates: Vec::new(),
            }),
        );
        self.timers
            .push(Reverse((now + cfg.probe_interval, Timer::Confirm(peer))));
    }

    /// A confirmation ping of `peer` went unanswered for a period: ping again, or give up.
    pub(super) fn confirmation_due(
        &mut self,
        peer: PeerId,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        let Some(pings) = self.unconfirmed.entries.get(&peer).map(|w| w.pings) else {
            return;
        };
        if pings == 0 {
            return;
        }
        if pings < CONFIRMATION_PINGS {
            self.confirmation_ping(peer, now, cfg, out);
        } else {
            self.stats.unconfirmed_failed += 1;
            self.unconfirmed_gone(&peer, true, now, cfg);
        }
    }

    /// The expiry timer of `peer`'s entry fired.
    pub(super) fn unconfirmed_expired(&mut self, peer: PeerId, now: Instant, cfg: &SwimConfig) {
        if self
            .unconfirmed
            .entries
            .get(&peer)
            .is_some_and(|w| w.expires <= now)
        {
            self.stats.unconfirmed_expired += 1;
            // Never pinged in time: our own budget ran short, not the introducer's fault
            // (an entry that was pinged fails after three periods, before it expires).
            self.unconfirmed_gone(&peer, false, now, cfg);
        }
    }

    /// The driver cannot reach `peer`: if it is unconfirmed and pinged, it failed.
    pub(super) fn unconfirmed_unreachable(
        &mut self,
        peer: &PeerId,
        now: Instant,
        cfg: &SwimConfig,
    ) {
        if self
            .unconfirmed
            .entries
            .get(peer)
            .is_some_and(|w| w.pings > 0)
        {
            self.stats.unconfirmed_failed += 1;
            self.unconfirmed_gone(peer, true, now, cfg);
        }
    }

    /// Drops `peer`'s entry; if it `failed` (its pings went unanswered), that counts against
    /// its introducer, which is penalised when its failures reach the threshold and
    /// outnumber its confirmations.
    fn unconfirmed_gone(&mut self, peer: &PeerId, failed: bool, now: Instant, cfg: &SwimConfig) {
        let Some(w) = self.unconfirmed.remove(peer) else {
            return;
        };
        let intro = w.introducer;
        let penalise = failed
            && self
                .unconfirmed
                .introducers
                .get_mut(&intro)
                .is_some_and(|i| {
                    i.failed = i.failed.saturating_add(1);
                    i.failed >= cfg.introducer_failures && i.failed > i.confirmed
                });
        if penalise {
            self.stats.introducers_penalised += 1;
            let dropped: Vec<PeerId> = self
                .unconfirmed
                .entries
                .iter()
                .filter(|(_, w)| w.introducer == intro)
                .map(|(p, _)| *p)
                .collect();
            for p in &dropped {
                self.unconfirmed.remove(p);
            }
            self.stats.unconfirmed_dropped += dropped.len() as u64;
            if let Some(i) = self.unconfirmed.introducers.get_mut(&intro) {
                i.penalised_until = Some(now + cfg.introducer_penalty);
                i.failed = 0;
                i.confirmed = 0;
            }
        }
        self.unconfirmed.tidy(&intro, now, cfg);
    }

    /// A message straight from `peer` arrived: if it waits unconfirmed, it becomes a member
    /// (and is gossiped on). Returns whether it did.
    pub(super) fn confirm(
        &mut self,
        peer: &PeerId,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) -> bool {
        let Some(w) = self.unconfirmed.remove(peer) else {
            return false;
        };
        if let Some(i) = self.unconfirmed.introducers.get_mut(&w.introducer) {
            i.confirmed = i.confirmed.saturating_add(1);
        }
        self.unconfirmed.tidy(&w.introducer, now, cfg);
        self.stats.unconfirmed_confirmed += 1;
        if self.members.contains_key(peer) {
            return true;
        }
        if self.members.len() >= cfg.max_members {
            self.stats.updates_rejected += 1;
            return true;
        }
        self.insert_member(w.record, true, out);
        true
    }

    /// `peer` as it waits unconfirmed (state `Alive`), e.g. for a driver to dial it at the
    /// addresses of its signed record for the confirmation ping.
    pub(crate) fn unconfirmed_member(&self, peer: &PeerId) -> Option<Member> {
        self.unconfirmed.entries.get(peer).map(|w| Member {
            peer: *peer,
            state: MemberState::Alive,
            incarnation: w.record.incarnation,
            meta: w.record.meta.clone(),
        })
    }
}
