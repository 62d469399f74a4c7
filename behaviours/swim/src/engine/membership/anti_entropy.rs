//! Anti-entropy and joins: push-pull full state exchanges, forgetting and remembering failed
//! members, rejoin candidates.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Instant;

use meshwire_core::PeerId;

use super::{
    random_members, Entry, Membership, Pending, Slot, Timer, Via, MAX_FORMER_MEMBERS,
    MAX_PENDING_PUSH_PULLS,
};
use crate::engine::config::SwimConfig;
use crate::engine::event::SwimEvent;
use crate::engine::output::{Outputs, Transmit, TransmitKind};
use crate::member::{Member, MemberState, NodeMeta};
use crate::wire::{header_len, Body, MemberRecord, Message, PushPull, UpdateKind};

impl Membership {
    pub(super) fn local_state(&mut self, cfg: &SwimConfig) -> Vec<MemberRecord> {
        let me = MemberRecord {
            incarnation: self.incarnation,
            state: MemberState::Alive,
            record: self.own.clone(),
        };
        // Header, flags, a generous count varint.
        let mut bytes = header_len(&self.realm) + 1 + 10 + me.encoded_len();
        let mut records =
            Vec::with_capacity((self.members.len() + 1).min(cfg.max_push_pull_members));
        records.push(me);
        let record_max = cfg.max_record_len();
        let all_fit = self.members.len() < cfg.max_push_pull_members
            && bytes + self.members.len() * record_max <= cfg.max_push_pull_bytes;
        let to_record = |(_, e): (Slot, &Entry)| MemberRecord {
            incarnation: e.incarnation,
            state: e.state,
            record: e.record.clone(),
        };
        if all_fit {
            // Everything fits whatever the metadata sizes: no need to measure.
            records.extend(self.members.iter().map(to_record));
            return records;
        }
        // Too much to send all: a random subset, so repeated exchanges cover everyone.
        let mut others: Vec<MemberRecord> = self.members.iter().map(to_record).collect();
        self.rng.shuffle(&mut others);
        for r in others {
            if records.len() >= cfg.max_push_pull_members {
                break;
            }
            let len = r.encoded_len();
            if bytes + len > cfg.max_push_pull_bytes {
                continue;
            }
            bytes += len;
            records.push(r);
        }
        records
    }

    pub(super) fn start_push_pull(
        &mut self,
        peer: PeerId,
        join: bool,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        if peer == self.local {
            return;
        }
        if self.pending.len() >= MAX_PENDING_PUSH_PULLS && !self.pending.contains_key(&peer) {
            if join {
                out.event(SwimEvent::JoinFailed {
                    realm: self.realm.clone(),
                    seed: peer,
                });
            }
            return;
        }
        let expires = now + cfg.push_pull_timeout;
        self.pending.insert(peer, Pending { join, expires });
        self.timers.push(Reverse((expires, Timer::PushPull(peer))));
        self.stats.push_pulls_started += 1;
        let members = self.local_state(cfg);
        out.transmit(Transmit {
            to: peer,
            kind: TransmitKind::PushPull,
            message: Message {
                realm: self.realm.clone(),
                body: Body::PushPull(PushPull {
                    join,
                    response: false,
                    members,
                }),
            },
        });
    }

    pub(super) fn periodic_push_pull(&mut self, now: Instant, cfg: &SwimConfig, out: &mut Outputs) {
        let pending = &self.pending;
        let target = random_members(
            &self.probe_order,
            &self.members,
            &mut self.rng,
            1,
            |p, e| e.state == MemberState::Alive && !pending.contains_key(p),
        );
        for t in target {
            self.start_push_pull(t, false, now, cfg, out);
        }
    }

    pub(crate) fn join(
        &mut self,
        now: Instant,
        seeds: &[PeerId],
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        if self.left {
            return;
        }
        if self.live == 0 {
            self.drop_own_accusations();
        }
        let mut seen: Vec<PeerId> = Vec::new();
        for s in seeds.iter().take(MAX_PENDING_PUSH_PULLS) {
            if *s != self.local && !seen.contains(s) {
                seen.push(*s);
                self.start_push_pull(*s, true, now, cfg, out);
            }
        }
    }

    /// Joining with no live member left: this node declared everyone it knew failed, so it
    /// is far more likely the one that was cut off than the only survivor. Its failure
    /// declarations are not spread (after a partition heals they would make the group
    /// declare live members failed), and once a push-pull answer arrives the members it
    /// holds dead are forgotten, so the partner's table brings them back as alive at any
    /// incarnation. Until then they stay: they are where to rejoin when no seed answers.
    pub(super) fn drop_own_accusations(&mut self) {
        self.queue
            .retain(|u| !matches!(u.kind, UpdateKind::Dead { .. } | UpdateKind::Suspect { .. }));
        self.forget_dead_on_push_pull = true;
    }

    /// Forgets the members held dead (they become former members).
    pub(super) fn forget_dead(&mut self) {
        self.forget_dead_on_push_pull = false;
        let dead: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, e)| e.state == MemberState::Dead)
            .map(|(_, e)| *e.peer())
            .collect();
        if dead.is_empty() {
            return;
        }
        for p in dead {
            if let Some(e) = self.members.remove(&p) {
                self.remember_former(p, e.record.meta.clone());
            }
        }
        self.clear_probe_order();
    }

    pub(super) fn remember_former(&mut self, peer: PeerId, meta: Arc<NodeMeta>) {
        self.former.retain(|(p, _)| *p != peer);
        if self.former.len() >= MAX_FORMER_MEMBERS {
            self.former.pop_front();
        }
        self.former.push_back((peer, meta));
    }

    /// A member held dead on a verdict this node kept to itself shows it is alive: it is
    /// alive again (at the same incarnation; nobody else held it dead).
    pub(super) fn revive_local_verdict(&mut self, peer: PeerId, out: &mut Outputs) {
        let Some(e) = self.members.get_mut(&peer) else {
            return;
        };
        if !(e.local_only && e.state == MemberState::Dead) {
            return;
        }
        e.state = MemberState::Alive;
        e.local_only = false;
        let member = Member {
            peer,
            state: MemberState::Alive,
            incarnation: e.incarnation,
            meta: e.record.meta.clone(),
        };
        self.live += 1;
        self.stats.failures_revoked += 1;
        out.event(SwimEvent::MemberJoined {
            realm: self.realm.clone(),
            member,
        });
        if let Some(slot) = self.members.slot_of(&peer) {
            self.add_to_probe_order(slot);
        }
    }

    /// Up to `k` peers to push-pull with when rejoining without (answering) seeds: members
    /// held dead and former members, at random, none with a push-pull in flight.
    pub(crate) fn rejoin_candidates(&mut self, k: usize) -> Vec<PeerId> {
        let mut all: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, e)| e.state == MemberState::Dead)
            .map(|(_, e)| *e.peer())
            .chain(self.former.iter().map(|(p, _)| *p))
            .filter(|p| !self.pending.contains_key(p))
            .collect();
        all.sort_unstable();
        all.dedup();
        self.rng.shuffle(&mut all);
        all.truncate(k);
        all
    }

    pub(crate) fn push_pull_pending(&self, peer: &PeerId) -> bool {
        self.pending.contains_key(peer)
    }

    /// The former members (forgotten after being declared failed), oldest first.
    pub(crate) fn former_members(&self) -> Vec<Member> {
        self.former
            .iter()
            .map(|(p, meta)| Member {
                peer: *p,
                state: MemberState::Dead,
                incarnation: 0,
                meta: meta.clone(),
            })
            .collect()
    }

    pub(crate) fn former_meta(&self, peer: &PeerId) -> Option<&Arc<NodeMeta>> {
        self.former.iter().find(|(p, _)| p == peer).map(|(_, m)| m)
    }

    pub(crate) fn handle_push_pull(
        &mut self,
        now: Instant,
        from: PeerId,
        pp: PushPull,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) -> Option<PushPull> {
        if self.left {
            return None;
        }
        self.last_heard = Some(now);
        // The partner answered (or asked) over a connection that proved its key.
        self.confirm(&from, now, cfg, out);
        if pp.response {
            let Some(pending) = self.pending.remove(&from) else {
                self.stats.unexpected_messages += 1;
                return None;
            };
            if self.forget_dead_on_push_pull {
                self.forget_dead();
            }
            self.stats.push_pulls_completed += 1;
            // A join's answer comes from a partner this node chose (a seed, a former
            // member): its table is taken as it is. Others' tables wait for confirmation.
            self.merge(from, pending.join, pp.members, now, cfg, out);
            None
        } else {
            self.stats.push_pulls_served += 1;
            let reply = PushPull {
                join: pp.join,
                response: true,
                members: self.local_state(cfg),
            };
            self.merge(from, false, pp.members, now, cfg, out);
            Some(reply)
        }
    }

    /// Merges a remote state (memberlist's rules: a remote "dead" only makes us suspect).
    /// `from` is the partner.
    ///
    /// Changes to members we knew are gossiped on as usual (they may be news to others:
    /// anti-entropy repairs missed refutations), and so is the partner itself; members we
    /// discover only through the partner's table are not: the partner, and so the group,
    /// already knows them, and re-announcing a whole table floods every joiner's
    /// dissemination queue with old news (measured in the 1,000-member join simulation: a
    /// third more datagrams, and full convergence 48 instead of 31 periods after the last
    /// join).
    pub(super) fn merge(
        &mut self,
        from: PeerId,
        trusted: bool,
        records: Vec<MemberRecord>,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        for r in records.into_iter().take(cfg.max_push_pull_members) {
            match r.state {
                // The member's own signed record (at its signed incarnation) is what makes it
                // alive; an unsigned or forged one is dropped.
                MemberState::Alive => self.apply_alive(
                    r.record,
                    Via::PushPull {
                        partner: from,
                        trusted,
                    },
                    now,
                    cfg,
                    out,
                ),
                MemberState::Left => {
                    let peer = r.record.peer;
                    self.apply_dead(peer, r.incarnation, peer, true, now, cfg, out)
                }
                // Hearsay: a suspicion of our own at the maximum timeout, neither a
                // confirmation nor gossiped (its accuser is unknown; see apply_suspect).
                MemberState::Suspect | MemberState::Dead => {
                    let local = self.local;
                    let peer = r.record.peer;
                    self.apply_suspect(peer, r.incarnation, local, Some(from), now, cfg, out)
                }
            }
        }
    }

    pub(crate) fn handle_push_pull_failed(&mut self, peer: PeerId, out: &mut Outputs) {
        if let Some(p) = self.pending.remove(&peer) {
            self.stats.push_pulls_failed += 1;
            if p.join {
                out.event(SwimEvent::JoinFailed {
                    realm: self.realm.clone(),
                    seed: peer,
                });
            }
        }
    }
}
