//! One realm's SWIM + Lifeguard state machine. [`crate::SwimEngine`] multiplexes several.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use meshwire_core::{Keypair, PeerId};

use super::config::SwimConfig;
use super::event::Stats;
use super::output::Outputs;
use super::queue::BroadcastQueue;
use crate::hash::{keyed_map, KeyedMap};
use crate::member::{Member, MemberState, NodeMeta};
use crate::realm::Realm;
use crate::record::{AliveRecord, AliveVerifier};
use crate::rng::SwimRng;
mod anti_entropy;
mod dissemination;
mod probe;
mod table;
mod unconfirmed;

use self::table::{Entry, MemberTable, Slot};
use self::unconfirmed::Unconfirmed;
use self::unconfirmed::Via;

use crate::wire::{Body, Gossip, Nack, Update, UpdateKind};

/// Push-pulls in flight at most (joins and anti-entropy together).
const MAX_PENDING_PUSH_PULLS: usize = 64;

/// Former members (declared failed, then forgotten) remembered per realm as fallback rejoin
/// targets.
pub(crate) const MAX_FORMER_MEMBERS: usize = 32;

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
    /// ping goes out, the probe does not count as failed (once per member; a failed dial
    /// ends the grace).
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
    /// Forget a dead or left member, unless it changed state since the declaration of this
    /// stamp (`Entry::declared`).
    Reap(PeerId, u32),
    Relay(u32),
    RelayRetry(u32),
    PushPull(PeerId),
    /// The next step (ping again, or give up) of an unconfirmed member's confirmation.
    Confirm(PeerId),
    /// An unconfirmed member's time is up.
    Expire(PeerId),
}

/// The signature-check budget: a token bucket refilled at
/// `SwimConfig::signature_checks_per_sec` up to `SwimConfig::signature_check_burst`.
#[derive(Debug)]
struct CheckBudget {
    tokens: f64,
    at: Instant,
}

impl CheckBudget {
    fn take(&mut self, now: Instant, cfg: &SwimConfig) -> bool {
        let burst = f64::from(cfg.signature_check_burst);
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * f64::from(cfg.signature_checks_per_sec)).min(burst);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(crate) struct Membership {
    realm: Realm,
    local: PeerId,
    /// Signs our own alive records.
    key: Keypair,
    incarnation: u64,
    meta: Arc<NodeMeta>,
    /// Our signed alive record at `incarnation` with `meta` (behind after a leave).
    own: Arc<AliveRecord>,
    verifier: Arc<dyn AliveVerifier>,
    budget: CheckBudget,
    left: bool,
    rng: SwimRng,
    members: MemberTable,
    /// The stamp of the latest declaration of a member as dead or left (see
    /// `Entry::declared`).
    declarations: u32,
    /// Members in `Alive` or `Suspect` state (not counting us).
    live: usize,
    /// The members' slots in the order of this round of probes (a slot freed meanwhile is
    /// not reused before the order is rebuilt).
    probe_order: Vec<Slot>,
    probe_index: usize,
    probe: Option<Probe>,
    next_probe: Instant,
    next_gossip: Option<Instant>,
    /// `SwimConfig::gossip_fresh_transmits`, for `poll_timeout`.
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
    /// Members heard of second-hand, waiting for a message straight from them.
    unconfirmed: Unconfirmed,
    stats: Stats,
}

/// Up to `k` distinct members from `order` that pass `filter`, chosen at random.
fn random_members(
    order: &[Slot],
    members: &MemberTable,
    rng: &mut SwimRng,
    k: usize,
    filter: impl Fn(&PeerId, &Entry) -> bool,
) -> Vec<PeerId> {
    let mut chosen: Vec<PeerId> = Vec::with_capacity(k);
    let n = order.len();
    if k == 0 || n == 0 {
        return chosen;
    }
    let ok = |s: Slot| {
        members
            .at(s)
            .filter(|e| filter(e.peer(), e))
            .map(|e| *e.peer())
    };
    if n <= 64 {
        let mut all: Vec<PeerId> = Vec::with_capacity(n);
        for &s in order {
            if let Some(p) = ok(s) {
                if !all.contains(&p) {
                    all.push(p);
                }
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
        if let Some(p) = ok(order[rng.below(n)]) {
            if !chosen.contains(&p) {
                chosen.push(p);
            }
        }
    }
    chosen
}

impl Membership {
    pub(crate) fn new(
        realm: Realm,
        key: &Keypair,
        meta: Arc<NodeMeta>,
        verifier: Arc<dyn AliveVerifier>,
        cfg: &SwimConfig,
        seed: u64,
        now: Instant,
    ) -> Self {
        let own = AliveRecord::sign(key, &realm, 0, meta.clone());
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
            local: key.peer_id(),
            key: key.clone(),
            incarnation: 0,
            meta,
            own,
            verifier,
            budget: CheckBudget {
                tokens: f64::from(cfg.signature_check_burst),
                at: now,
            },
            left: false,
            rng,
            members: MemberTable::new(hash_key),
            declarations: 0,
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
            unconfirmed: Unconfirmed::new(hash_key ^ 4, cfg, now),
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
            unconfirmed_members: self.unconfirmed.len(),
            ..self.stats.clone()
        }
    }

    fn self_alive(&self) -> Update {
        Update::alive(self.own.clone())
    }

    /// Re-signs our alive record after a change of incarnation or metadata.
    fn resign(&mut self) {
        self.own = AliveRecord::sign(&self.key, &self.realm, self.incarnation, self.meta.clone());
    }

    /// Our incarnation and signed alive record.
    pub(crate) fn own_record(&self) -> (u64, Arc<AliveRecord>) {
        (self.incarnation, self.own.clone())
    }

    /// Replaces the signature checker.
    pub(crate) fn set_verifier(&mut self, verifier: Arc<dyn AliveVerifier>) {
        self.verifier = verifier;
    }

    /// Whether `record` carries its member's own signature, within the check budget; counts
    /// what it drops.
    fn check_signature(&mut self, record: &AliveRecord, now: Instant, cfg: &SwimConfig) -> bool {
        if !self.budget.take(now, cfg) {
            self.stats.signatures_unchecked += 1;
            return false;
        }
        self.stats.signatures_checked += 1;
        let ok = record.verify(&*self.verifier, &self.realm);
        if !ok {
            self.stats.signatures_rejected += 1;
        }
        ok
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
            meta: e.record.meta.clone(),
        })
    }

    pub(crate) fn unconfirmed_count(&self) -> usize {
        self.unconfirmed.len()
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        let mut v: Vec<Member> = self
            .members
            .iter()
            .map(|(_, e)| Member {
                peer: *e.peer(),
                state: e.state,
                incarnation: e.incarnation,
                meta: e.record.meta.clone(),
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

    fn adjust_awareness(&mut self, delta: i64, cfg: &SwimConfig) {
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
        if let Some(at) = self.unconfirmed.next_ping_at() {
            t = t.min(at);
        }
        Some(t)
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, cfg: &SwimConfig, out: &mut Outputs) {
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
        self.start_confirmations(now, cfg, out);
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

    fn fire(&mut self, timer: Timer, now: Instant, cfg: &SwimConfig, out: &mut Outputs) {
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
            Timer::Reap(peer, stamp) => {
                // Reaped only if it stayed dead (or gone) since the declaration that set
                // this timer, `dead_retention` ago.
                let expired = self.members.get(&peer).is_some_and(|e| {
                    matches!(e.state, MemberState::Dead | MemberState::Left) && e.declared == stamp
                });
                if expired {
                    if let Some(e) = self.members.remove(&peer) {
                        if e.state == MemberState::Dead {
                            self.remember_former(peer, e.record.meta.clone());
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
                    self.send_ping(out, cfg, target, seq);
                }
            }
            Timer::PushPull(peer) => {
                if self.pending.get(&peer).is_some_and(|p| p.expires <= now) {
                    self.handle_push_pull_failed(peer, out);
                }
            }
            Timer::Confirm(peer) => self.confirmation_due(peer, now, cfg, out),
            Timer::Expire(peer) => self.unconfirmed_expired(peer, now, cfg),
        }
    }

    // ----- sending -----

    pub(crate) fn leave(&mut self, cfg: &SwimConfig, out: &mut Outputs) {
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
        self.resign();
        self.queue.push(self.self_alive());
    }

    #[cfg(test)]
    pub(crate) fn queue_transmits(&self, peer: &PeerId) -> Option<u32> {
        self.queue.transmits(peer)
    }
}
