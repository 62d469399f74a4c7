//! Dissemination: piggybacking updates on every datagram, dissemination rounds, and the rules
//! that apply received updates (alive / suspect / dead / left, refutation).

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Instant;

use meshwire_core::PeerId;

use super::{random_members, Entry, Membership, Timer, Via};
use crate::engine::config::SwimConfig;
use crate::engine::event::SwimEvent;
use crate::engine::output::{Outputs, Transmit, TransmitKind};
use crate::engine::suspicion::Suspicion;
use crate::member::{Member, MemberState};
use crate::record::AliveRecord;
use crate::wire::{header_len, Body, Gossip, Message, Update, UpdateKind};

impl Membership {
    /// Fills `body` with piggybacked updates (`first` ahead of the queue) within the MTU,
    /// taking only updates transmitted fewer than `fresh` times.
    pub(super) fn fill(
        &mut self,
        cfg: &SwimConfig,
        mut body: Body,
        first: Option<Update>,
        fresh: u32,
    ) -> Body {
        // Header, the body's own fields, and two bytes for the update count (≤ 16,383).
        let fixed = header_len(&self.realm) + body.fixed_len() + 2;
        let mut budget = cfg.mtu.saturating_sub(fixed);
        let mut updates = Vec::new();
        let mut exclude = None;
        if let Some(u) = first {
            let len = u.encoded_len();
            if len <= budget {
                budget -= len;
                exclude = Some(u.peer);
                updates.push(u);
            }
        }
        let limit = cfg.retransmit_limit(self.live + 1);
        self.queue
            .take(budget, limit, fresh, exclude.as_ref(), &mut updates);
        self.stats.updates_sent += updates.len() as u64;
        body.set_updates(updates);
        body
    }

    pub(super) fn emit(&mut self, out: &mut Outputs, to: PeerId, body: Body) {
        self.stats.datagrams_sent += 1;
        out.transmit(Transmit {
            to,
            kind: TransmitKind::Datagram,
            message: Message {
                realm: self.realm.clone(),
                body,
            },
        });
    }

    pub(super) fn send(
        &mut self,
        out: &mut Outputs,
        cfg: &SwimConfig,
        to: PeerId,
        body: Body,
        first: Option<Update>,
    ) {
        let body = self.fill(cfg, body, first, u32::MAX);
        self.emit(out, to, body);
    }

    /// The buddy-system update for a probe of `target`: its suspicion, if we hold one.
    pub(super) fn buddy_update(&self, cfg: &SwimConfig, target: &PeerId) -> Option<Update> {
        if !cfg.buddy {
            return None;
        }
        let e = self.members.get(target)?;
        if e.state != MemberState::Suspect {
            return None;
        }
        let from = e.suspicion.as_ref().map_or(self.local, |s| s.from);
        Some(Update {
            peer: *target,
            incarnation: e.incarnation,
            kind: UpdateKind::Suspect { from },
        })
    }

    // ----- probing -----

    pub(super) fn gossip_round(&mut self, cfg: &SwimConfig, out: &mut Outputs) {
        let targets = random_members(
            &self.probe_order,
            &self.members,
            &mut self.rng,
            cfg.gossip_nodes,
            |_, e| e.state != MemberState::Left,
        );
        let mut sent = false;
        for t in targets {
            if !self.queue.has_fresh(cfg.gossip_fresh_transmits) {
                break;
            }
            let body = self.fill(
                cfg,
                Body::Gossip(Gossip {
                    updates: Vec::new(),
                }),
                None,
                cfg.gossip_fresh_transmits,
            );
            if body.updates().is_empty() {
                break;
            }
            sent = true;
            self.emit(out, t, body);
        }
        if sent {
            self.stats.gossip_rounds += 1;
        }
    }

    pub(super) fn apply_updates(
        &mut self,
        from: PeerId,
        updates: Vec<Update>,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        for u in updates {
            self.stats.updates_received += 1;
            match u.kind {
                UpdateKind::Alive { record } => {
                    self.apply_alive(record, Via::Datagram(from), now, cfg, out)
                }
                UpdateKind::Suspect { from } => {
                    self.apply_suspect(u.peer, u.incarnation, from, None, now, cfg, out)
                }
                UpdateKind::Dead { from } => {
                    self.apply_dead(u.peer, u.incarnation, from, false, now, cfg, out)
                }
                UpdateKind::Left => {
                    self.apply_dead(u.peer, u.incarnation, u.peer, true, now, cfg, out)
                }
            }
        }
    }

    /// Refutes an accusation of ourselves at incarnation `accused`: bump above it and
    /// broadcast alive (Lifeguard: also a sign of our own trouble, so LHM + 1).
    pub(super) fn refute(&mut self, accused: u64, cfg: &SwimConfig) {
        let mut inc = self.incarnation.saturating_add(1);
        if accused >= inc {
            inc = accused.saturating_add(1);
        }
        self.incarnation = inc;
        self.resign();
        self.stats.refutations += 1;
        self.adjust_awareness(1, cfg);
        self.queue.push(self.self_alive());
    }

    /// Someone says we are suspect, dead or gone at incarnation `inc`. At or above our
    /// incarnation: refute. Below it: the accuser missed our earlier refutation, so announce
    /// our current incarnation again (no bump), unless that announcement is still fresh in
    /// the queue; it then rides on our next messages, starting with the ack to the probe that
    /// carried the accusation (buddy system).
    pub(super) fn accused(&mut self, inc: u64, cfg: &SwimConfig) {
        if self.left {
            return;
        }
        if inc >= self.incarnation {
            self.refute(inc, cfg);
        } else if !self
            .queue
            .is_fresh(&self.local, cfg.gossip_fresh_transmits.max(1))
        {
            self.stats.reannouncements += 1;
            self.queue.push(self.self_alive());
        }
    }

    /// `via`: how the record reached us. A member unknown until now enters at once only if
    /// the record comes from the member itself or from the answer to a join; otherwise it
    /// waits unconfirmed (docs/swim.md section 3b). One that enters from a push-pull
    /// partner's table is not gossiped on unless it is the partner itself (third parties
    /// discovered through the partner's table are already known to the group).
    ///
    /// The record must carry the member's own signature (checked only when the update
    /// would change something): a member enters, comes back or changes its metadata only
    /// through its own signed alive record. The record is kept as it is (shared, not
    /// copied).
    pub(super) fn apply_alive(
        &mut self,
        record: Arc<AliveRecord>,
        via: Via,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        let (peer, inc) = (record.peer, record.incarnation);
        let meta = &record.meta;
        // Fast path first: most alive updates received repeat what we know (we are never in
        // our own table, so this needs no comparison with our id).
        if let Some(e) = self.members.get(&peer) {
            if inc <= e.incarnation {
                // Alive at the incarnation of a verdict we kept to ourselves: someone heard
                // from it after we last could. Take it back.
                if inc == e.incarnation && e.local_only {
                    self.revive_local_verdict(peer, out);
                }
                return;
            }
        }
        if meta.encoded_len() > cfg.max_metadata_bytes {
            self.stats.updates_rejected += 1;
            return;
        }
        if peer == self.local
            && (inc < self.incarnation || (inc == self.incarnation && **meta == *self.meta))
        {
            return;
        }
        let unknown = peer != self.local && !self.members.contains_key(&peer);
        if unknown && self.members.len() >= cfg.max_members {
            self.stats.updates_rejected += 1;
            return;
        }
        if unknown && self.handle_unknown_alive(&record, via, now, cfg, out) {
            return;
        }
        if !self.check_signature(&record, now, cfg) {
            return;
        }
        if peer == self.local {
            if inc < self.incarnation || (inc == self.incarnation && **meta == *self.meta) {
                return;
            }
            // Someone announces us at our incarnation with other metadata, or at a higher
            // one (a previous life of this node): take over with a higher incarnation.
            self.refute(inc, cfg);
            return;
        }
        if unknown {
            let gossip = via.gossip_new(&peer);
            self.insert_member(record, gossip, out);
            return;
        }
        let realm = &self.realm;
        match self.members.get_mut(&peer) {
            None => return,
            Some(e) => {
                if inc <= e.incarnation {
                    return;
                }
                let old = e.state;
                let meta_changed = !Arc::ptr_eq(&e.record.meta, meta) && *e.record.meta != **meta;
                e.incarnation = inc;
                e.record = record.clone();
                e.state = MemberState::Alive;
                e.suspicion = None;
                e.local_only = false;
                let member = Member {
                    peer,
                    state: MemberState::Alive,
                    incarnation: inc,
                    meta: meta.clone(),
                };
                match old {
                    MemberState::Suspect => {
                        self.stats.false_suspicions += 1;
                        out.event(SwimEvent::MemberRefuted {
                            realm: realm.clone(),
                            member: member.clone(),
                        });
                        if meta_changed {
                            out.event(SwimEvent::MemberUpdated {
                                realm: realm.clone(),
                                member,
                            });
                        }
                    }
                    MemberState::Dead | MemberState::Left => {
                        self.live += 1;
                        out.event(SwimEvent::MemberJoined {
                            realm: realm.clone(),
                            member,
                        });
                        if let Some(slot) = self.members.slot_of(&peer) {
                            self.add_to_probe_order(slot);
                        }
                    }
                    MemberState::Alive => {
                        if meta_changed {
                            out.event(SwimEvent::MemberUpdated {
                                realm: realm.clone(),
                                member,
                            });
                        }
                    }
                }
            }
        }
        self.queue.push(Update::alive(record));
    }

    /// Takes the member of `record` in as a new alive member; `gossip`: spread its alive
    /// record on.
    pub(super) fn insert_member(
        &mut self,
        record: Arc<AliveRecord>,
        gossip: bool,
        out: &mut Outputs,
    ) {
        let (peer, inc) = (record.peer, record.incarnation);
        let meta = record.meta.clone();
        let slot = self.members.insert(Entry::alive(record.clone()));
        self.former.retain(|(p, _)| *p != peer);
        self.live += 1;
        out.event(SwimEvent::MemberJoined {
            realm: self.realm.clone(),
            member: Member {
                peer,
                state: MemberState::Alive,
                incarnation: inc,
                meta,
            },
        });
        self.add_to_probe_order(slot);
        if gossip {
            self.queue.push(Update::alive(record));
        }
    }

    /// `from` counts as the (confirming) accuser and is what we gossip on. `hearsay`: the
    /// suspicion comes from this push-pull partner's table (`from` is then this node): it
    /// is taken for the event's accuser, starts a suspicion if we hold the member alive, but
    /// neither confirms one nor is gossiped — its accuser is unknown, so it is no
    /// independent confirmation (Lifeguard); memberlist takes it over as its own accusation,
    /// which at 10,000 members (a push-pull every 3 ms in the group) gave every false
    /// suspicion its confirmations within seconds (docs/swim.md section 8).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_suspect(
        &mut self,
        peer: PeerId,
        inc: u64,
        from: PeerId,
        hearsay: Option<PeerId>,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        if peer == self.local {
            self.accused(inc, cfg);
            return;
        }
        let n = self.live + 1;
        let Some(e) = self.members.get_mut(&peer) else {
            return;
        };
        match e.state {
            MemberState::Dead | MemberState::Left => return,
            _ if inc < e.incarnation => return,
            MemberState::Suspect if inc == e.incarnation => {
                if hearsay.is_some() {
                    return;
                }
                if e.suspicion.as_mut().is_some_and(|s| s.adopt_accuser(from)) {
                    // Our hearsay suspicion now has an accuser: spread it as the
                    // accusation it is (no confirmation, the timeout stays).
                    self.queue.push(Update {
                        peer,
                        incarnation: inc,
                        kind: UpdateKind::Suspect { from },
                    });
                    return;
                }
                let confirmed = e.suspicion.as_mut().is_some_and(|s| s.confirm(from));
                if confirmed {
                    let deadline = e.suspicion.as_ref().map_or(now, |s| s.deadline);
                    self.stats.suspicion_confirmations += 1;
                    self.timers
                        .push(Reverse((deadline, Timer::Suspicion(peer))));
                    // Re-gossip, so that confirmations reach others too.
                    self.queue.push(Update {
                        peer,
                        incarnation: inc,
                        kind: UpdateKind::Suspect { from },
                    });
                }
                return;
            }
            // Alive at an incarnation ≤ inc, or suspect at a lower one: a new suspicion
            // (suspect(j) overrides suspect(i) for j > i, with a fresh timer).
            _ => {}
        }
        // Lifeguard: expect k = suspicion_mult − 2 independent confirmations, if the group
        // is large enough to provide them (minus us and the suspect).
        let mut k = if cfg.dynamic_suspicion {
            cfg.suspicion_mult.saturating_sub(2)
        } else {
            0
        };
        if n.saturating_sub(2) < k as usize {
            k = 0;
        }
        let min = cfg.suspicion_min_timeout(n);
        let max = if cfg.dynamic_suspicion {
            min * cfg.suspicion_max_timeout_mult
        } else {
            min
        };
        let s = if hearsay.is_some() {
            self.stats.hearsay_suspicions += 1;
            Suspicion::hearsay(from, k, min, max, now)
        } else {
            Suspicion::new(from, k, min, max, now)
        };
        self.timers
            .push(Reverse((s.deadline, Timer::Suspicion(peer))));
        e.state = MemberState::Suspect;
        e.incarnation = inc;
        e.suspicion = Some(Box::new(s));
        let accuser = hearsay.unwrap_or(from);
        if accuser == self.local {
            self.stats.suspicions_raised += 1;
        }
        out.event(SwimEvent::MemberSuspected {
            realm: self.realm.clone(),
            peer,
            incarnation: inc,
            accuser,
        });
        if hearsay.is_none() {
            self.queue.push(Update {
                peer,
                incarnation: inc,
                kind: UpdateKind::Suspect { from },
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_dead(
        &mut self,
        peer: PeerId,
        inc: u64,
        from: PeerId,
        left: bool,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        if peer == self.local {
            self.accused(inc, cfg);
            return;
        }
        let Some(e) = self.members.get_mut(&peer) else {
            return;
        };
        if inc < e.incarnation || matches!(e.state, MemberState::Dead | MemberState::Left) {
            return;
        }
        e.state = if left {
            MemberState::Left
        } else {
            MemberState::Dead
        };
        e.incarnation = inc;
        e.suspicion = None;
        e.local_only = false;
        self.declarations = self.declarations.wrapping_add(1).max(1);
        e.declared = self.declarations;
        self.live = self.live.saturating_sub(1);
        self.timers.push(Reverse((
            now + cfg.dead_retention,
            Timer::Reap(peer, self.declarations),
        )));
        if left {
            out.event(SwimEvent::MemberLeft {
                realm: self.realm.clone(),
                peer,
                incarnation: inc,
            });
            self.queue.push(Update {
                peer,
                incarnation: inc,
                kind: UpdateKind::Left,
            });
        } else {
            if from == self.local {
                self.stats.failures_declared += 1;
            }
            out.event(SwimEvent::MemberFailed {
                realm: self.realm.clone(),
                peer,
                incarnation: inc,
            });
            self.queue.push(Update {
                peer,
                incarnation: inc,
                kind: UpdateKind::Dead { from },
            });
        }
    }

    // ----- push-pull, join, leave -----
}
