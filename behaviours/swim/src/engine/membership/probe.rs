//! The probes of a protocol period: direct ping, indirect ping-reqs through other members,
//! nacks, and the verdict at the end of the period (SWIM failure detection with Lifeguard's
//! local health and nacks).

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use meshwire_core::PeerId;

use super::{random_members, Membership, Probe, Relay, Slot, Timer};
use crate::engine::config::SwimConfig;
use crate::engine::output::Outputs;
use crate::member::MemberState;
use crate::wire::{Ack, Body, Ping, PingReq};

impl Membership {
    /// Sends the ping `seq` to `target`, with the buddy update (its suspicion) first.
    pub(super) fn send_ping(
        &mut self,
        out: &mut Outputs,
        cfg: &SwimConfig,
        target: PeerId,
        seq: u32,
    ) {
        let buddy = self.buddy_update(cfg, &target);
        self.send(
            out,
            cfg,
            target,
            Body::Ping(Ping {
                seq,
                updates: Vec::new(),
            }),
            buddy,
        );
    }

    pub(super) fn next_probe_target(&mut self) -> Option<PeerId> {
        let mut rebuilt = false;
        loop {
            if self.probe_index >= self.probe_order.len() {
                if rebuilt {
                    return None;
                }
                rebuilt = true;
                self.probe_order.clear();
                self.members.release_quarantine();
                // Sorted by peer ID, then shuffled: the order depends on the seed and the
                // members only, not on where they sit in the table.
                let mut live: Vec<(PeerId, Slot)> = self
                    .members
                    .iter()
                    .filter(|(_, e)| e.state.is_live())
                    .map(|(s, e)| (*e.peer(), s))
                    .collect();
                live.sort_unstable_by_key(|m| m.0);
                self.probe_order.extend(live.into_iter().map(|(_, s)| s));
                self.rng.shuffle(&mut self.probe_order);
                self.probe_index = 0;
                if self.probe_order.is_empty() {
                    return None;
                }
            }
            let s = self.probe_order[self.probe_index];
            self.probe_index += 1;
            if let Some(e) = self.members.at(s).filter(|e| e.state.is_live()) {
                return Some(*e.peer());
            }
        }
    }

    /// The probe order was dropped (rebuilt at the next probe): the slots of members removed
    /// meanwhile can be reused.
    pub(super) fn clear_probe_order(&mut self) {
        self.probe_order.clear();
        self.probe_index = 0;
        self.members.release_quarantine();
    }

    /// Puts a new member at a random position among those not yet probed this round.
    pub(super) fn add_to_probe_order(&mut self, slot: Slot) {
        if self.probe_order.len() > 2 * self.members.len() + 16 {
            // Members that died and came back many times within one round left duplicates
            // behind: start a fresh round (rebuilt and shuffled at the next probe).
            self.clear_probe_order();
            return;
        }
        self.probe_order.push(slot);
        let last = self.probe_order.len() - 1;
        let lo = self.probe_index.min(last);
        let j = lo + self.rng.below(last - lo + 1);
        self.probe_order.swap(j, last);
    }

    pub(super) fn start_probe(&mut self, now: Instant, cfg: &SwimConfig, out: &mut Outputs) {
        if let Some(p) = self.probe.take() {
            if p.unsent && !p.acked {
                // The target could not even be sent the ping (no connection came up in
                // time): nothing was learned about it, so no suspicion. If it cannot be
                // reached at all the driver stops queueing for it, and probes fail again.
                self.stats.probes_unsent += 1;
            } else if !p.acked {
                self.probe_failed(p, now, cfg, out);
            }
        }
        let scale = self.awareness + 1;
        self.next_probe = now + cfg.probe_interval * scale;
        let Some(target) = self.next_probe_target() else {
            return;
        };
        let seq = self.next_seq();
        self.stats.probes_sent += 1;
        self.send_ping(out, cfg, target, seq);
        self.probe = Some(Probe {
            target,
            seq,
            indirect_at: now + cfg.probe_timeout * scale,
            deadline: self.next_probe,
            indirect_sent: false,
            acked: false,
            relays: Vec::new(),
            expected_nacks: 0,
            unsent: false,
        });
    }

    /// The driver could only now send what waited for `peer` (it had to connect first): if
    /// `peer` is the target of the current probe, its timers run from now, so that a
    /// connection's setup does not count against the probe timeout. Only ever extends.
    pub(crate) fn handle_probe_sent(&mut self, now: Instant, peer: &PeerId, cfg: &SwimConfig) {
        let scale = self.awareness + 1;
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        if p.target != *peer || p.acked {
            return;
        }
        p.unsent = false;
        let end = if p.indirect_sent {
            now + cfg.probe_timeout * scale
        } else {
            p.indirect_at = p.indirect_at.max(now + cfg.probe_timeout * scale);
            now + cfg.probe_interval * scale
        };
        if end > p.deadline {
            p.deadline = end;
            self.next_probe = self.next_probe.max(end);
        }
    }

    /// The driver could not send the ping `seq` to `peer` yet: it waits for a connection.
    /// Granted once per member (the first connection with it); later probes that cannot be
    /// sent fail as usual.
    pub(crate) fn handle_probe_unsent(&mut self, peer: &PeerId, seq: u32) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        if p.target != *peer || p.seq != seq || p.acked {
            return;
        }
        let Some(e) = self.members.get_mut(peer) else {
            return;
        };
        if e.probe_grace_used {
            self.stats.probes_grace_refused += 1;
            return;
        }
        e.probe_grace_used = true;
        p.unsent = true;
    }

    /// The driver cannot reach `peer`: its dial failed, or there is no connection and no
    /// address to dial. The current probe of it loses its grace and fails at the end of its
    /// period unless an ack (through a helper) comes; no later probe gets the grace either.
    pub(crate) fn handle_probe_unreachable(
        &mut self,
        now: Instant,
        peer: &PeerId,
        cfg: &SwimConfig,
    ) {
        self.unconfirmed_unreachable(peer, now, cfg);
        if let Some(e) = self.members.get_mut(peer) {
            e.probe_grace_used = true;
        }
        if let Some(p) = self.probe.as_mut() {
            if p.target == *peer && !p.acked && p.unsent {
                p.unsent = false;
                self.stats.probes_unreachable += 1;
            }
        }
    }

    pub(super) fn send_indirect(&mut self, now: Instant, cfg: &SwimConfig, out: &mut Outputs) {
        let Some(p) = self.probe.as_ref() else {
            return;
        };
        let (target, seq, deadline) = (p.target, p.seq, p.deadline);
        let relays = random_members(
            &self.probe_order,
            &self.members,
            &mut self.rng,
            cfg.indirect_checks,
            |peer, e| *peer != target && e.state == MemberState::Alive,
        );
        let nack_timeout_ms = if cfg.nacks {
            let left = deadline
                .saturating_duration_since(now)
                .mul_f64(cfg.nack_timeout_fraction);
            (left.as_millis().min(u128::from(u32::MAX)) as u32).max(1)
        } else {
            0
        };
        if cfg.ping_retry {
            self.send_ping(out, cfg, target, seq);
        }
        for r in &relays {
            self.stats.ping_reqs_sent += 1;
            self.send(
                out,
                cfg,
                *r,
                Body::PingReq(PingReq {
                    seq,
                    target,
                    nack_timeout_ms,
                    updates: Vec::new(),
                }),
                None,
            );
        }
        if let Some(p) = self.probe.as_mut() {
            p.indirect_sent = true;
            p.expected_nacks = if cfg.nacks { relays.len() as u32 } else { 0 };
            p.relays = relays.into_iter().map(|r| (r, false)).collect();
        }
    }

    pub(super) fn probe_failed(
        &mut self,
        p: Probe,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        self.stats.probes_failed += 1;
        // Lifeguard: with nacks expected, only missed nacks count against our own health (if
        // every helper answered "could not reach it", the target is the likely problem);
        // without helpers to vouch, any failed probe counts.
        let delta = if p.expected_nacks > 0 {
            let got = p.relays.iter().filter(|r| r.1).count() as u32;
            let missed = p.expected_nacks.saturating_sub(got);
            self.stats.nacks_missed += u64::from(missed);
            missed
        } else {
            1
        };
        self.adjust_awareness(i64::from(delta), cfg);
        let inc = match self.members.get(&p.target) {
            Some(e) if e.state.is_live() => e.incarnation,
            _ => return,
        };
        let local = self.local;
        self.apply_suspect(p.target, inc, local, None, now, cfg, out);
    }

    // ----- inbound datagrams -----

    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: PeerId,
        body: Body,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        if self.left {
            return;
        }
        self.last_heard = Some(now);
        self.stats.datagrams_received += 1;
        // A message straight from a member we hold dead on a verdict we never spread: it is
        // alive and reaches us, and it cannot refute what it was never told.
        self.revive_local_verdict(from, out);
        // A message straight from a member we only heard of: it is real and reaches us.
        let confirmed = self.confirm(&from, now, cfg, out);
        match body {
            Body::Ping(p) => {
                self.apply_updates(from, p.updates, now, cfg, out);
                self.send(
                    out,
                    cfg,
                    from,
                    Body::Ack(Ack {
                        seq: p.seq,
                        updates: Vec::new(),
                    }),
                    None,
                );
            }
            Body::Ack(a) => {
                self.apply_updates(from, a.updates, now, cfg, out);
                // The ack to a confirmation ping has done its work.
                if !confirmed {
                    self.on_ack(from, a.seq, cfg, out);
                }
            }
            Body::PingReq(r) => {
                self.apply_updates(from, r.updates, now, cfg, out);
                self.on_ping_req(from, r.seq, r.target, r.nack_timeout_ms, now, cfg, out);
            }
            Body::Nack(n) => {
                self.apply_updates(from, n.updates, now, cfg, out);
                self.on_nack(from, n.seq);
            }
            Body::Gossip(g) => self.apply_updates(from, g.updates, now, cfg, out),
            Body::PushPull(_) => self.stats.unexpected_messages += 1,
        }
    }

    pub(super) fn on_ack(&mut self, from: PeerId, seq: u32, cfg: &SwimConfig, out: &mut Outputs) {
        if let Some(p) = self.probe.as_mut() {
            if p.seq == seq && !p.acked {
                let direct = from == p.target;
                if direct || p.relays.iter().any(|r| r.0 == from) {
                    p.acked = true;
                    if direct {
                        self.stats.probes_acked_direct += 1;
                    } else {
                        self.stats.probes_acked_indirect += 1;
                    }
                    self.adjust_awareness(-1, cfg);
                    return;
                }
            }
        }
        if self.relays.get(&seq).is_some_and(|r| r.target == from) {
            if let Some(r) = self.relays.remove(&seq) {
                self.stats.acks_relayed += 1;
                self.send(
                    out,
                    cfg,
                    r.origin,
                    Body::Ack(Ack {
                        seq: r.origin_seq,
                        updates: Vec::new(),
                    }),
                    None,
                );
            }
            return;
        }
        self.stats.unexpected_messages += 1;
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_ping_req(
        &mut self,
        from: PeerId,
        seq: u32,
        target: PeerId,
        nack_timeout_ms: u32,
        now: Instant,
        cfg: &SwimConfig,
        out: &mut Outputs,
    ) {
        if target == self.local {
            self.send(
                out,
                cfg,
                from,
                Body::Ack(Ack {
                    seq,
                    updates: Vec::new(),
                }),
                None,
            );
            return;
        }
        // Only members we hold live are probed for others: a ping-req must not make us reach
        // out to arbitrary peers (or to members we hold dead or gone).
        let live_target = self.members.get(&target).is_some_and(|e| e.state.is_live());
        if !live_target || self.relays.len() >= cfg.max_pending_relays {
            self.stats.ping_reqs_dropped += 1;
            return;
        }
        self.stats.ping_reqs_served += 1;
        let relay_seq = self.next_seq();
        self.send_ping(out, cfg, target, relay_seq);
        let cap = cfg.probe_interval * (cfg.awareness_max + 1);
        let wait = if nack_timeout_ms > 0 {
            Duration::from_millis(u64::from(nack_timeout_ms)).min(cap)
        } else {
            cfg.probe_timeout
        };
        self.relays.insert(
            relay_seq,
            Relay {
                origin: from,
                origin_seq: seq,
                target,
                nack: nack_timeout_ms > 0,
            },
        );
        self.timers
            .push(Reverse((now + wait, Timer::Relay(relay_seq))));
        if cfg.ping_retry {
            self.timers
                .push(Reverse((now + wait / 2, Timer::RelayRetry(relay_seq))));
        }
    }

    pub(super) fn on_nack(&mut self, from: PeerId, seq: u32) {
        if let Some(p) = self.probe.as_mut() {
            if p.seq == seq && !p.acked {
                if let Some(r) = p.relays.iter_mut().find(|r| r.0 == from && !r.1) {
                    r.1 = true;
                    self.stats.nacks_received += 1;
                    return;
                }
            }
        }
        self.stats.unexpected_messages += 1;
    }

    // ----- dissemination -----
}
