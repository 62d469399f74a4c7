//! One realm's SWIM + Lifeguard state machine. [`crate::Swim`] multiplexes several.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwire_core::PeerId;

use crate::config::Config;
use crate::core::{Outbox, Transmit, TransmitKind};
use crate::event::{Event, Stats};
use crate::hash::{keyed_map, KeyedMap};
use crate::member::{Member, MemberState, NodeMeta};
use crate::queue::BroadcastQueue;
use crate::realm::Realm;
use crate::rng::SwimRng;
use crate::suspicion::Suspicion;
use crate::wire::{
    header_len, Ack, Body, Gossip, MemberRecord, Message, Nack, Ping, PingReq, PushPull, Update,
    UpdateKind,
};

/// Push-pulls in flight at most (joins and anti-entropy together).
const MAX_PENDING_PUSH_PULLS: usize = 64;

/// Former members (declared failed, then forgotten) remembered per realm as fallback rejoin
/// targets.
pub(crate) const MAX_FORMER_MEMBERS: usize = 32;

#[derive(Debug)]
struct Entry {
    state: MemberState,
    incarnation: u64,
    meta: Arc<NodeMeta>,
    suspicion: Option<Box<Suspicion>>,
    state_change: Instant,
    /// Dead by a verdict of this node that it kept to itself (it had heard from nobody):
    /// the member was never told, so it cannot refute; any sign of life revives it.
    local_only: bool,
}

/// The probe of the current protocol period.
#[derive(Debug)]
struct Probe {
    target: PeerId,
    seq: u32,
    indirect_at: Instant,
    deadline: Instant,
    indirect_sent: bool,
    acked: bool,
    /// Indirect probers asked, and whether each sent its nack.
    relays: Vec<(PeerId, bool)>,
    expected_nacks: u32,
    /// The driver could not send the ping yet (it is connecting to the target): unless the
    /// ping goes out, the probe does not count as failed.
    unsent: bool,
}

/// An indirect probe run for another member.
#[derive(Debug)]
struct Relay {
    origin: PeerId,
    origin_seq: u32,
    target: PeerId,
    nack: bool,
}

#[derive(Debug)]
struct Pending {
    join: bool,
    expires: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Timer {
    Suspicion(PeerId),
    Reap(PeerId),
    Relay(u32),
    RelayRetry(u32),
    PushPull(PeerId),
}

pub(crate) struct Membership {
    realm: Realm,
    local: PeerId,
    incarnation: u64,
    meta: Arc<NodeMeta>,
    left: bool,
    rng: SwimRng,
    members: KeyedMap<PeerId, Entry>,
    /// Members in `Alive` or `Suspect` state (not counting us).
    live: usize,
    probe_order: Vec<PeerId>,
    probe_index: usize,
    probe: Option<Probe>,
    next_probe: Instant,
    next_gossip: Option<Instant>,
    /// `Config::gossip_fresh_transmits`, for `poll_timeout`.
    gossip_fresh: u32,
    next_push_pull: Option<Instant>,
    seq: u32,
    relays: KeyedMap<u32, Relay>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    queue: BroadcastQueue,
    awareness: u32,
    pending: KeyedMap<PeerId, Pending>,
    /// When a message from another member last arrived (any datagram or push-pull).
    last_heard: Option<Instant>,
    /// Members declared failed and then forgotten (reaped, or dropped on a rejoin), newest
    /// last, at most [`MAX_FORMER_MEMBERS`]: whom to try when no seed answers a rejoin.
    former: VecDeque<(PeerId, Arc<NodeMeta>)>,
    /// Set by a join with no live member: the members held dead are forgotten when the next
    /// push-pull message arrives (not before: if nobody answers, they are the rejoin targets).
    forget_dead_on_push_pull: bool,
    stats: Stats,
}

/// Up to `k` distinct members from `order` that pass `filter`, chosen at random.
fn random_members(
    order: &[PeerId],
    members: &KeyedMap<PeerId, Entry>,
    rng: &mut SwimRng,
    k: usize,
    filter: impl Fn(&PeerId, &Entry) -> bool,
) -> Vec<PeerId> {
    let mut chosen: Vec<PeerId> = Vec::with_capacity(k);
    let n = order.len();
    if k == 0 || n == 0 {
        return chosen;
    }
    let ok = |p: &PeerId| members.get(p).is_some_and(|e| filter(p, e));
    if n <= 64 {
        let mut all: Vec<PeerId> = Vec::with_capacity(n);
        for p in order {
            if ok(p) && !all.contains(p) {
                all.push(*p);
            }
        }
        rng.shuffle(&mut all);
        all.truncate(k);
        return all;
    }
    for _ in 0..3 * n {
        if chosen.len() >= k {
            break;
        }
        let p = order[rng.below(n)];
        if ok(&p) && !chosen.contains(&p) {
            chosen.push(p);
        }
    }
    chosen
}

impl Membership {
    pub(crate) fn new(
        realm: Realm,
        local: PeerId,
        meta: Arc<NodeMeta>,
        cfg: &Config,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut rng = SwimRng::seed_from_u64(seed);
        let hash_key = rng.next_u64();
        // Random phases, as memberlist staggers its tickers, so that nodes started together
        // do not probe in lockstep.
        let next_probe = now + cfg.probe_interval.mul_f64(rng.unit_f64());
        let next_gossip = match cfg.gossip_interval {
            Some(d) if cfg.gossip_nodes > 0 => Some(now + d.mul_f64(rng.unit_f64())),
            _ => None,
        };
        let next_push_pull = cfg
            .push_pull_interval
            .map(|d| now + d.mul_f64(rng.unit_f64()));
        let mut m = Membership {
            realm,
            local,
            incarnation: 0,
            meta,
            left: false,
            rng,
            members: keyed_map(hash_key),
            live: 0,
            probe_order: Vec::new(),
            probe_index: 0,
            probe: None,
            next_probe,
            next_gossip,
            gossip_fresh: cfg.gossip_fresh_transmits,
            next_push_pull,
            seq: 0,
            relays: keyed_map(hash_key ^ 1),
            timers: BinaryHeap::new(),
            queue: BroadcastQueue::new(hash_key ^ 2),
            awareness: 0,
            pending: keyed_map(hash_key ^ 3),
            last_heard: None,
            former: VecDeque::new(),
            forget_dead_on_push_pull: false,
            stats: Stats::default(),
        };
        m.queue.push(m.self_alive());
        m
    }

    pub(crate) fn realm(&self) -> &Realm {
        &self.realm
    }

    pub(crate) fn has_left(&self) -> bool {
        self.left
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub(crate) fn local_health(&self) -> u32 {
        self.awareness
    }

    pub(crate) fn live_count(&self) -> usize {
        self.live
    }

    pub(crate) fn count_unexpected(&mut self) {
        self.stats.unexpected_messages += 1;
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            local_health: self.awareness,
            live_members: self.live,
            queued_updates: self.queue.len(),
            ..self.stats.clone()
        }
    }

    fn self_alive(&self) -> Update {
        Update {
            peer: self.local,
            incarnation: self.incarnation,
            kind: UpdateKind::Alive(self.meta.clone()),
        }
    }

    pub(crate) fn local_member(&self) -> Member {
        Member {
            peer: self.local,
            state: if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            incarnation: self.incarnation,
            meta: self.meta.clone(),
        }
    }

    pub(crate) fn member(&self, peer: &PeerId) -> Option<Member> {
        self.members.get(peer).map(|e| Member {
            peer: *peer,
            state: e.state,
            incarnation: e.incarnation,
            meta: e.meta.clone(),
        })
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        let mut v: Vec<Member> = self
            .members
            .iter()
            .map(|(p, e)| Member {
                peer: *p,
                state: e.state,
                incarnation: e.incarnation,
                meta: e.meta.clone(),
            })
            .collect();
        v.sort_unstable_by_key(|m| m.peer);
        v
    }

    /// Current suspicion of `peer`: (confirmations, deadline).
    pub(crate) fn suspicion_of(&self, peer: &PeerId) -> Option<(u32, Instant)> {
        self.members
            .get(peer)?
            .suspicion
            .as_ref()
            .map(|s| (s.confirmations(), s.deadline))
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn adjust_awareness(&mut self, delta: i64, cfg: &Config) {
        if cfg.awareness_max == 0 {
            return;
        }
        let v = (i64::from(self.awareness) + delta).clamp(0, i64::from(cfg.awareness_max));
        self.awareness = v as u32;
    }

    // ----- timers -----

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        let mut t = self.next_probe;
        if let Some(p) = &self.probe {
            if !p.acked && !p.indirect_sent {
                t = t.min(p.indirect_at);
            }
        }
        if let Some(g) = self.next_gossip {
            if self.live > 0 && self.queue.has_fresh(self.gossip_fresh) {
                t = t.min(g);
            }
        }
        if let Some(pp) = self.next_push_pull {
            t = t.min(pp);
        }
        if let Some(Reverse((at, _))) = self.timers.peek() {
            t = t.min(*at);
        }
        Some(t)
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, cfg: &Config, out: &mut Outbox) {
        if self.left {
            return;
        }
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.fire(timer, now, cfg, out);
        }
        let indirect_due = self
            .probe
            .as_ref()
            .is_some_and(|p| !p.acked && !p.indirect_sent && p.indirect_at <= now);
        if indirect_due && now < self.next_probe {
            self.send_indirect(now, cfg, out);
        }
        if self.next_probe <= now {
            self.start_probe(now, cfg, out);
        }
        if let (Some(g), Some(interval)) = (self.next_gossip, cfg.gossip_interval) {
            if g <= now {
                self.next_gossip = Some(now + interval);
                if self.live > 0 && self.queue.has_fresh(cfg.gossip_fresh_transmits) {
                    self.gossip_round(cfg, out);
                }
            }
        }
        if let Some(pp) = self.next_push_pull {
            if pp <= now {
                self.next_push_pull = cfg.push_pull_period(self.live + 1).map(|d| now + d);
                self.periodic_push_pull(now, cfg, out);
            }
        }
    }

    fn fire(&mut self, timer: Timer, now: Instant, cfg: &Config, out: &mut Outbox) {
        match timer {
            Timer::Suspicion(peer) => {
                let (inc, start) = match self.members.get(&peer) {
                    Some(Entry {
                        state: MemberState::Suspect,
                        incarnation,
                        suspicion: Some(s),
                        ..
                    }) if s.deadline <= now => (*incarnation, s.start),
                    _ => return,
                };
                let local = self.local;
                self.apply_dead(peer, inc, local, false, now, cfg, out);
                // Heard from nobody since the suspicion began: this node is most likely the
                // one cut off. It keeps the verdict to itself; spread, the declaration could
                // reach the group late (packets queued while the link was down) and make it
                // declare a live member failed.
                if self.last_heard.is_none_or(|t| t < start) {
                    self.stats.failures_kept_local += 1;
                    self.queue
                        .retain(|u| !(u.peer == peer && matches!(u.kind, UpdateKind::Dead { .. })));
                    if let Some(e) = self.members.get_mut(&peer) {
                        e.local_only = true;
                    }
                }
            }
            Timer::Reap(peer) => {
                let expired = self.members.get(&peer).is_some_and(|e| {
                    matches!(e.state, MemberState::Dead | MemberState::Left)
                        && e.state_change + cfg.dead_retention <= now
                });
                if expired {
                    if let Some(e) = self.members.remove(&peer) {
                        if e.state == MemberState::Dead {
                            self.remember_former(peer, e.meta);
                        }
                    }
                }
            }
            Timer::Relay(seq) => {
                if let Some(r) = self.relays.remove(&seq) {
                    if r.nack {
                        self.stats.nacks_sent += 1;
                        self.send(
                            out,
                            cfg,
                            r.origin,
                            Body::Nack(Nack {
                                seq: r.origin_seq,
                                updates: Vec::new(),
                            }),
                            None,
                        );
                    }
                }
            }
            Timer::RelayRetry(seq) => {
                if let Some(target) = self.relays.get(&seq).map(|r| r.target) {
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
            }
            Timer::PushPull(peer) => {
                if self.pending.get(&peer).is_some_and(|p| p.expires <= now) {
                    self.push_pull_failed(peer, out);
                }
            }
        }
    }

    // ----- sending -----

    /// Fills `body` with piggybacked updates (`first` ahead of the queue) within the MTU,
    /// taking only updates transmitted fewer than `fresh` times.
    fn fill(&mut self, cfg: &Config, mut body: Body, first: Option<Update>, fresh: u32) -> Body {
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

    fn emit(&mut self, out: &mut Outbox, to: PeerId, body: Body) {
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

    fn send(
        &mut self,
        out: &mut Outbox,
        cfg: &Config,
        to: PeerId,
        body: Body,
        first: Option<Update>,
    ) {
        let body = self.fill(cfg, body, first, u32::MAX);
        self.emit(out, to, body);
    }

    /// The buddy-system update for a probe of `target`: its suspicion, if we hold one.
    fn buddy_update(&self, cfg: &Config, target: &PeerId) -> Option<Update> {
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

    fn next_probe_target(&mut self) -> Option<PeerId> {
        let mut rebuilt = false;
        loop {
            if self.probe_index >= self.probe_order.len() {
                if rebuilt {
                    return None;
                }
                rebuilt = true;
                self.probe_order.clear();
                self.probe_order.extend(
                    self.members
                        .iter()
                        .filter(|(_, e)| e.state.is_live())
                        .map(|(p, _)| *p),
                );
                self.probe_order.sort_unstable();
                self.rng.shuffle(&mut self.probe_order);
                self.probe_index = 0;
                if self.probe_order.is_empty() {
                    return None;
                }
            }
            let p = self.probe_order[self.probe_index];
            self.probe_index += 1;
            if self.members.get(&p).is_some_and(|e| e.state.is_live()) {
                return Some(p);
            }
        }
    }

    /// Puts a new member at a random position among those not yet probed this round.
    fn add_to_probe_order(&mut self, peer: PeerId) {
        if self.probe_order.len() > 2 * self.members.len() + 16 {
            // Members that died and came back many times within one round left duplicates
            // behind: start a fresh round (rebuilt and shuffled at the next probe).
            self.probe_order.clear();
            self.probe_index = 0;
            return;
        }
        self.probe_order.push(peer);
        let last = self.probe_order.len() - 1;
        let lo = self.probe_index.min(last);
        let j = lo + self.rng.below(last - lo + 1);
        self.probe_order.swap(j, last);
    }

    fn start_probe(&mut self, now: Instant, cfg: &Config, out: &mut Outbox) {
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
        let buddy = self.buddy_update(cfg, &target);
        self.stats.probes_sent += 1;
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
    pub(crate) fn probe_sendable(&mut self, now: Instant, peer: &PeerId, cfg: &Config) {
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
    pub(crate) fn probe_unsent(&mut self, peer: &PeerId, seq: u32) {
        if let Some(p) = self.probe.as_mut() {
            if p.target == *peer && p.seq == seq && !p.acked {
                p.unsent = true;
            }
        }
    }

    fn send_indirect(&mut self, now: Instant, cfg: &Config, out: &mut Outbox) {
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

    fn probe_failed(&mut self, p: Probe, now: Instant, cfg: &Config, out: &mut Outbox) {
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
        self.apply_suspect(p.target, inc, local, local, now, cfg, out);
    }

    // ----- inbound datagrams -----

    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: PeerId,
        body: Body,
        cfg: &Config,
        out: &mut Outbox,
    ) {
        if self.left {
            return;
        }
        self.last_heard = Some(now);
        self.stats.datagrams_received += 1;
        // A message straight from a member we hold dead on a verdict we never spread: it is
        // alive and reaches us, and it cannot refute what it was never told.
        self.revive_local_verdict(from, now, out);
        match body {
            Body::Ping(p) => {
                self.apply_updates(p.updates, now, cfg, out);
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
                self.apply_updates(a.updates, now, cfg, out);
                self.on_ack(from, a.seq, cfg, out);
            }
            Body::PingReq(r) => {
                self.apply_updates(r.updates, now, cfg, out);
                self.on_ping_req(from, r.seq, r.target, r.nack_timeout_ms, now, cfg, out);
            }
            Body::Nack(n) => {
                self.apply_updates(n.updates, now, cfg, out);
                self.on_nack(from, n.seq);
            }
            Body::Gossip(g) => self.apply_updates(g.updates, now, cfg, out),
            Body::PushPull(_) => self.stats.unexpected_messages += 1,
        }
    }

    fn on_ack(&mut self, from: PeerId, seq: u32, cfg: &Config, out: &mut Outbox) {
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
    fn on_ping_req(
        &mut self,
        from: PeerId,
        seq: u32,
        target: PeerId,
        nack_timeout_ms: u32,
        now: Instant,
        cfg: &Config,
        out: &mut Outbox,
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
        let buddy = self.buddy_update(cfg, &target);
        self.send(
            out,
            cfg,
            target,
            Body::Ping(Ping {
                seq: relay_seq,
                updates: Vec::new(),
            }),
            buddy,
        );
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

    fn on_nack(&mut self, from: PeerId, seq: u32) {
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

    fn gossip_round(&mut self, cfg: &Config, out: &mut Outbox) {
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

    fn apply_updates(
        &mut self,
        updates: Vec<Update>,
        now: Instant,
        cfg: &Config,
        out: &mut Outbox,
    ) {
        for u in updates {
            self.stats.updates_received += 1;
            match u.kind {
                UpdateKind::Alive(meta) => {
                    self.apply_alive(u.peer, u.incarnation, meta, None, now, cfg, out)
                }
                UpdateKind::Suspect { from } => {
                    self.apply_suspect(u.peer, u.incarnation, from, from, now, cfg, out)
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
    fn refute(&mut self, accused: u64, cfg: &Config) {
        let mut inc = self.incarnation.saturating_add(1);
        if accused >= inc {
            inc = accused.saturating_add(1);
        }
        self.incarnation = inc;
        self.stats.refutations += 1;
        self.adjust_awareness(1, cfg);
        self.queue.push(self.self_alive());
    }

    /// Someone says we are suspect, dead or gone at incarnation `inc`. At or above our
    /// incarnation: refute. Below it: the accuser missed our earlier refutation, so announce
    /// our current incarnation again (no bump), unless that announcement is still fresh in
    /// the queue; it then rides on our next messages, starting with the ack to the probe that
    /// carried the accusation (buddy system).
    fn accused(&mut self, inc: u64, cfg: &Config) {
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

    /// `partner`: set when merging a push-pull with that peer; a member unknown until now is
    /// then gossiped on only if it is the partner itself (third parties discovered through
    /// the partner's table are already known to the group).
    #[allow(clippy::too_many_arguments)]
    fn apply_alive(
        &mut self,
        peer: PeerId,
        inc: u64,
        meta: Arc<NodeMeta>,
        partner: Option<&PeerId>,
        now: Instant,
        cfg: &Config,
        out: &mut Outbox,
    ) {
        // Fast path first: most alive updates received repeat what we know (we are never in
        // our own table, so this needs no comparison with our id).
        if let Some(e) = self.members.get(&peer) {
            if inc <= e.incarnation {
                // Alive at the incarnation of a verdict we kept to ourselves: someone heard
                // from it after we last could. Take it back.
                if inc == e.incarnation && e.local_only {
                    self.revive_local_verdict(peer, now, out);
                }
                return;
            }
        }
        if meta.encoded_len() > cfg.max_metadata_bytes {
            self.stats.updates_rejected += 1;
            return;
        }
        if peer == self.local {
            if inc < self.incarnation || (inc == self.incarnation && *meta == *self.meta) {
                return;
            }
            // Someone announces us at our incarnation with other metadata, or at a higher
            // one (a previous life of this node): take over with a higher incarnation.
            self.refute(inc, cfg);
            return;
        }
        let realm = &self.realm;
        match self.members.get_mut(&peer) {
            None => {
                if self.members.len() >= cfg.max_members {
                    self.stats.updates_rejected += 1;
                    return;
                }
                self.members.insert(
                    peer,
                    Entry {
                        state: MemberState::Alive,
                        incarnation: inc,
                        meta: meta.clone(),
                        suspicion: None,
                        state_change: now,
                        local_only: false,
                    },
                );
                self.former.retain(|(p, _)| *p != peer);
                self.live += 1;
                out.event(Event::MemberJoined {
                    realm: realm.clone(),
                    member: Member {
                        peer,
                        state: MemberState::Alive,
                        incarnation: inc,
                        meta: meta.clone(),
                    },
                });
                self.add_to_probe_order(peer);
                if partner.is_some_and(|p| *p != peer) {
                    return;
                }
            }
            Some(e) => {
                if inc <= e.incarnation {
                    return;
                }
                let old = e.state;
                let meta_changed = !Arc::ptr_eq(&e.meta, &meta) && *e.meta != *meta;
                e.incarnation = inc;
                e.meta = meta.clone();
                e.state = MemberState::Alive;
                e.suspicion = None;
                e.state_change = now;
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
                        out.event(Event::MemberRefuted {
                            realm: realm.clone(),
                            member: member.clone(),
                        });
                        if meta_changed {
                            out.event(Event::MemberUpdated {
                                realm: realm.clone(),
                                member,
                            });
                        }
                    }
                    MemberState::Dead | MemberState::Left => {
                        self.live += 1;
                        out.event(Event::MemberJoined {
                            realm: realm.clone(),
                            member,
                        });
                        self.add_to_probe_order(peer);
                    }
                    MemberState::Alive => {
                        if meta_changed {
                            out.event(Event::MemberUpdated {
                                realm: realm.clone(),
                                member,
                            });
                        }
                    }
                }
            }
        }
        self.queue.push(Update {
            peer,
            incarnation: inc,
            kind: UpdateKind::Alive(meta),
        });
    }

    /// `from` counts as the (confirming) accuser and is what we gossip on; `accuser` is who
    /// told us, for the event (they differ only for push-pull merges, where we take the
    /// accusation over as our own, like memberlist).
    #[allow(clippy::too_many_arguments)]
    fn apply_suspect(
        &mut self,
        peer: PeerId,
        inc: u64,
        from: PeerId,
        accuser: PeerId,
        now: Instant,
        cfg: &Config,
        out: &mut Outbox,
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
        let s = Suspicion::new(from, k, min, max, now);
        self.timers
            .push(Reverse((s.deadline, Timer::Suspicion(peer))));
        e.state = MemberState::Suspect;
        e.incarnation = inc;
        e.state_change = now;
        e.suspicion = Some(Box::new(s));
        if accuser == self.local {
            self.stats.suspicions_raised += 1;
        }
        out.event(Event::MemberSuspected {
            realm: self.realm.clone(),
            peer,
            incarnation: inc,
            accuser,
        });
        self.queue.push(Update {
            peer,
            incarnation: inc,
            kind: UpdateKind::Suspect { from },
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_dead(
        &mut self,
        peer: PeerId,
        inc: u64,
        from: PeerId,
        left: bool,
        now: Instant,
        cfg: &Config,
        out: &mut Outbox,
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
        e.state_change = now;
        e.local_only = false;
        self.live = self.live.saturating_sub(1);
        self.timers
            .push(Reverse((now + cfg.dead_retention, Timer::Reap(peer))));
        if left {
            out.event(Event::MemberLeft {
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
            out.event(Event::MemberFailed {
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

    fn local_state(&mut self, cfg: &Config) -> Vec<MemberRecord> {
        let me = MemberRecord {
            peer: self.local,
            incarnation: self.incarnation,
            state: MemberState::Alive,
            meta: self.meta.clone(),
        };
        // Header, flags, a generous count varint.
        let mut bytes = header_len(&self.realm) + 1 + 10 + me.encoded_len();
        let mut records =
            Vec::with_capacity((self.members.len() + 1).min(cfg.max_push_pull_members));
        records.push(me);
        let record_max = cfg.max_alive_update_len();
        let all_fit = self.members.len() < cfg.max_push_pull_members
            && bytes + self.members.len() * record_max <= cfg.max_push_pull_bytes;
        let to_record = |(p, e): (&PeerId, &Entry)| MemberRecord {
            peer: *p,
            incarnation: e.incarnation,
            state: e.state,
            meta: e.meta.clone(),
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

    fn start_push_pull(
        &mut self,
        peer: PeerId,
        join: bool,
        now: Instant,
        cfg: &Config,
        out: &mut Outbox,
    ) {
        if peer == self.local {
            return;
        }
        if self.pending.len() >= MAX_PENDING_PUSH_PULLS && !self.pending.contains_key(&peer) {
            if join {
                out.event(Event::JoinFailed {
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

    fn periodic_push_pull(&mut self, now: Instant, cfg: &Config, out: &mut Outbox) {
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

    pub(crate) fn join(&mut self, now: Instant, seeds: &[PeerId], cfg: &Config, out: &mut Outbox) {
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
    fn drop_own_accusations(&mut self) {
        self.queue
            .retain(|u| !matches!(u.kind, UpdateKind::Dead { .. } | UpdateKind::Suspect { .. }));
        self.forget_dead_on_push_pull = true;
    }

    /// Forgets the members held dead (they become former members).
    fn forget_dead(&mut self) {
        self.forget_dead_on_push_pull = false;
        let dead: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, e)| e.state == MemberState::Dead)
            .map(|(p, _)| *p)
            .collect();
        if dead.is_empty() {
            return;
        }
        for p in dead {
            if let Some(e) = self.members.remove(&p) {
                self.remember_former(p, e.meta);
            }
        }
        self.probe_order.clear();
        self.probe_index = 0;
    }

    fn remember_former(&mut self, peer: PeerId, meta: Arc<NodeMeta>) {
        self.former.retain(|(p, _)| *p != peer);
        if self.former.len() >= MAX_FORMER_MEMBERS {
            self.former.pop_front();
        }
        self.former.push_back((peer, meta));
    }

    /// A member held dead on a verdict this node kept to itself shows it is alive: it is
    /// alive again (at the same incarnation; nobody else held it dead).
    fn revive_local_verdict(&mut self, peer: PeerId, now: Instant, out: &mut Outbox) {
        let Some(e) = self.members.get_mut(&peer) else {
            return;
        };
        if !(e.local_only && e.state == MemberState::Dead) {
            return;
        }
        e.state = MemberState::Alive;
        e.local_only = false;
        e.state_change = now;
        let member = Member {
            peer,
            state: MemberState::Alive,
            incarnation: e.incarnation,
            meta: e.meta.clone(),
        };
        self.live += 1;
        self.stats.failures_revoked += 1;
        out.event(Event::MemberJoined {
            realm: self.realm.clone(),
            member,
        });
        self.add_to_probe_order(peer);
    }

    /// Up to `k` peers to push-pull with when rejoining without (answering) seeds: members
    /// held dead and former members, at random, none with a push-pull in flight.
    pub(crate) fn rejoin_candidates(&mut self, k: usize) -> Vec<PeerId> {
        let mut all: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, e)| e.state == MemberState::Dead)
            .map(|(p, _)| *p)
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
        cfg: &Config,
        out: &mut Outbox,
    ) -> Option<PushPull> {
        if self.left {
            return None;
        }
        self.last_heard = Some(now);
        if pp.response {
            if self.pending.remove(&from).is_none() {
                self.stats.unexpected_messages += 1;
                return None;
            }
            if self.forget_dead_on_push_pull {
                self.forget_dead();
            }
            self.stats.push_pulls_completed += 1;
            self.merge(from, pp.members, now, cfg, out);
            None
        } else {
            self.stats.push_pulls_served += 1;
            let reply = PushPull {
                join: pp.join,
                response: true,
                members: self.local_state(cfg),
            };
            self.merge(from, pp.members, now, cfg, out);
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
    fn merge(
        &mut self,
        from: PeerId,
        records: Vec<MemberRecord>,
        now: Instant,
        cfg: &Config,
        out: &mut Outbox,
    ) {
        for r in records.into_iter().take(cfg.max_push_pull_members) {
            match r.state {
                MemberState::Alive => {
                    self.apply_alive(r.peer, r.incarnation, r.meta, Some(&from), now, cfg, out)
                }
                MemberState::Left => {
                    self.apply_dead(r.peer, r.incarnation, r.peer, true, now, cfg, out)
                }
                // As memberlist: we become the accuser (so hearsay counts at most once
                // towards a suspicion's confirmations, as our own).
                MemberState::Suspect | MemberState::Dead => {
                    let local = self.local;
                    self.apply_suspect(r.peer, r.incarnation, local, from, now, cfg, out)
                }
            }
        }
    }

    pub(crate) fn push_pull_failed(&mut self, peer: PeerId, out: &mut Outbox) {
        if let Some(p) = self.pending.remove(&peer) {
            self.stats.push_pulls_failed += 1;
            if p.join {
                out.event(Event::JoinFailed {
                    realm: self.realm.clone(),
                    seed: peer,
                });
            }
        }
    }

    pub(crate) fn leave(&mut self, cfg: &Config, out: &mut Outbox) {
        if self.left {
            return;
        }
        self.incarnation = self.incarnation.saturating_add(1);
        let update = Update {
            peer: self.local,
            incarnation: self.incarnation,
            kind: UpdateKind::Left,
        };
        let targets = random_members(
            &self.probe_order,
            &self.members,
            &mut self.rng,
            cfg.leave_fanout,
            |_, e| e.state.is_live(),
        );
        for t in targets {
            self.emit(
                out,
                t,
                Body::Gossip(Gossip {
                    updates: vec![update.clone()],
                }),
            );
        }
        self.left = true;
        self.probe = None;
        self.relays.clear();
        self.pending.clear();
        self.timers.clear();
    }

    pub(crate) fn set_meta(&mut self, meta: Arc<NodeMeta>) {
        if self.left {
            return;
        }
        self.meta = meta;
        self.incarnation = self.incarnation.saturating_add(1);
        self.queue.push(self.self_alive());
    }

    #[cfg(test)]
    pub(crate) fn queue_transmits(&self, peer: &PeerId) -> Option<u32> {
        self.queue.transmits(peer)
    }
}
