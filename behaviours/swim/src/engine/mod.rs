//! [`SwimEngine`]: the sans-IO SWIM + Lifeguard state machine that a driver (the swarm
//! behaviour, a test, the simulator) runs. It has no IO or async dependency.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use meshwire_core::{Keypair, PeerId};
use thiserror::Error;

use crate::member::MemberState;
use crate::member::{Member, MetaError, NodeMeta};
use crate::realm::Realm;
use crate::record::{AliveVerifier, Ed25519Verifier};
use crate::rng::splitmix64;
use crate::wire::{Body, DecodeError, Limits, MemberRecord, Message};

mod config;
mod event;
mod membership;
mod output;
mod queue;
mod suspicion;
#[cfg(test)]
mod tests;

pub use self::config::{ConfigError, SwimConfig};
pub use self::event::{CoreStats, Stats, SwimEvent};
use self::membership::Membership;
use self::output::Outputs;
pub use self::output::{Transmit, TransmitKind};

/// The realm named in a call is not one of this engine's.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("this engine is not in realm {0}")]
pub struct UnknownRealm(pub Realm);

/// Why metadata could not be set.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SetMetaError {
    /// The metadata is refused.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The engine has left.
    #[error("the node has left")]
    Left,
}

/// The SWIM + Lifeguard membership engine of one node, for one or more realms.
///
/// A pure state machine: it never reads a clock, sleeps or does IO. The driver feeds it
/// time and inbound messages and carries out what it asks; see the crate docs for the
/// contract and an example.
pub struct SwimEngine {
    local: PeerId,
    config: SwimConfig,
    limits: Limits,
    realms: Vec<Membership>,
    out: Outputs,
    stats: CoreStats,
}

impl std::fmt::Debug for SwimEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwimEngine")
            .field("local", &self.local)
            .field(
                "realms",
                &self
                    .realms
                    .iter()
                    .map(|m| m.realm().clone())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SwimEngine {
    /// An engine for the node of `key` in `realms`, announcing `meta`, with a seeded RNG (use
    /// a random seed in production; a fixed one makes runs reproducible). `now` is the
    /// driver's current time; every later call passes a time not before it.
    ///
    /// The engine signs its own alive records with `key` (pure computation, no IO) and
    /// checks members' signatures with an [`Ed25519Verifier`] (see
    /// [`SwimEngine::set_verifier`]).
    pub fn new(
        key: &Keypair,
        realms: impl IntoIterator<Item = Realm>,
        meta: NodeMeta,
        config: SwimConfig,
        seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let realms: Vec<Realm> = realms.into_iter().collect();
        config.validate(&realms)?;
        let len = meta.encoded_len();
        if len > config.max_metadata_bytes {
            return Err(ConfigError::Meta(MetaError::TooLarge {
                len,
                limit: config.max_metadata_bytes,
            }));
        }
        let meta = Arc::new(meta);
        let local = key.peer_id();
        let verifier: Arc<dyn AliveVerifier> = Arc::new(Ed25519Verifier);
        let memberships = realms
            .into_iter()
            .map(|realm| {
                // Each realm gets its own RNG stream derived from the seed and its name.
                let mut s = seed;
                for b in realm.as_str().bytes() {
                    s = splitmix64(&mut s) ^ u64::from(b);
                }
                Membership::new(
                    realm,
                    key,
                    meta.clone(),
                    verifier.clone(),
                    &config,
                    splitmix64(&mut s),
                    now,
                )
            })
            .collect();
        Ok(SwimEngine {
            local,
            limits: config.limits(),
            out: Outputs {
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                cap: config.max_queued_outputs,
                dropped_events: 0,
                dropped_transmits: 0,
            },
            config,
            realms: memberships,
            stats: CoreStats::default(),
        })
    }

    /// This node's identity.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Replaces the checker of members' signatures (by default an [`Ed25519Verifier`]), e.g.
    /// with one that caches results shared by many engines of a simulation.
    pub fn set_verifier(&mut self, verifier: Arc<dyn AliveVerifier>) {
        for m in &mut self.realms {
            m.set_verifier(verifier.clone());
        }
    }

    /// This node's own signed alive record in `realm`, as it appears first in its push-pull
    /// messages.
    pub fn local_record(&self, realm: &Realm) -> Option<MemberRecord> {
        let (incarnation, record) = self.realms[self.index(realm)?].own_record();
        Some(MemberRecord {
            incarnation,
            state: MemberState::Alive,
            record,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SwimConfig {
        &self.config
    }

    /// The decoding limits in force (derived from the configuration).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The realms this engine serves.
    pub fn realms(&self) -> impl Iterator<Item = &Realm> {
        self.realms.iter().map(|m| m.realm())
    }

    fn index(&self, realm: &Realm) -> Option<usize> {
        self.realms.iter().position(|m| m.realm().same(realm))
    }

    fn realm_mut(&mut self, realm: &Realm) -> Result<usize, UnknownRealm> {
        self.index(realm).ok_or_else(|| UnknownRealm(realm.clone()))
    }

    /// Joins `realm` through `seeds`: a push-pull (full state exchange) with each. Seeds that
    /// fail are reported as [`SwimEvent::JoinFailed`]; calling again retries.
    pub fn join(
        &mut self,
        now: Instant,
        realm: &Realm,
        seeds: &[PeerId],
    ) -> Result<(), UnknownRealm> {
        let i = self.realm_mut(realm)?;
        self.realms[i].join(now, seeds, &self.config, &mut self.out);
        Ok(())
    }

    /// Rejoins `realm` if this node holds no live member in it: a join (push-pull) through
    /// `seeds` and through up to `fallback` of [`SwimEngine::rejoin_candidates`] (members it holds
    /// dead, former members), so that a node whose seeds are gone, or that has no seeds (a
    /// seed itself), finds its way back. Returns the number of push-pulls asked for (0 when
    /// some member is live).
    pub fn rejoin(
        &mut self,
        now: Instant,
        realm: &Realm,
        seeds: &[PeerId],
        fallback: usize,
    ) -> Result<usize, UnknownRealm> {
        let i = self.realm_mut(realm)?;
        if self.realms[i].live_count() > 0 || self.realms[i].has_left() {
            return Ok(0);
        }
        let mut peers: Vec<PeerId> = seeds
            .iter()
            .copied()
            .filter(|p| !self.realms[i].push_pull_pending(p))
            .collect();
        for p in self.realms[i].rejoin_candidates(fallback) {
            if !peers.contains(&p) {
                peers.push(p);
            }
        }
        if peers.is_empty() {
            return Ok(0);
        }
        let n = peers.len();
        self.realms[i].join(now, &peers, &self.config, &mut self.out);
        Ok(n)
    }

    /// Leaves every realm gracefully: bumps the incarnation, tells
    /// [`SwimConfig::leave_fanout`] members per realm (they spread it), and stops: afterwards
    /// the engine ignores input and has no timer. Drain [`SwimEngine::poll_transmit`] once more.
    pub fn leave(&mut self, _now: Instant) {
        for m in &mut self.realms {
            m.leave(&self.config, &mut self.out);
        }
    }

    /// Whether [`SwimEngine::leave`] was called.
    pub fn has_left(&self) -> bool {
        self.realms.iter().all(Membership::has_left)
    }

    /// Changes this node's metadata in every realm (bumps the incarnation and disseminates).
    pub fn set_metadata(&mut self, _now: Instant, meta: NodeMeta) -> Result<(), SetMetaError> {
        if self.has_left() {
            return Err(SetMetaError::Left);
        }
        let len = meta.encoded_len();
        if len > self.config.max_metadata_bytes {
            return Err(MetaError::TooLarge {
                len,
                limit: self.config.max_metadata_bytes,
            }
            .into());
        }
        let meta = Arc::new(meta);
        for m in &mut self.realms {
            m.set_meta(meta.clone());
        }
        Ok(())
    }

    /// When [`SwimEngine::handle_timeout`] should be called next (`None`: never, after leaving).
    /// Changes after every call into the engine.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.realms
            .iter()
            .filter_map(Membership::poll_timeout)
            .min()
    }

    /// Runs every timer due at `now`: protocol periods, indirect probes, suspicion timeouts,
    /// dissemination rounds, push-pulls, nacks, reaping.
    pub fn handle_timeout(&mut self, now: Instant) {
        for m in &mut self.realms {
            m.handle_timeout(now, &self.config, &mut self.out);
        }
    }

    /// Handles one inbound datagram from `from` (the authenticated sender of the QUIC
    /// connection it came on). Bad bytes are counted and returned as an error; they change
    /// nothing.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: PeerId,
        bytes: &[u8],
    ) -> Result<(), DecodeError> {
        match Message::decode(bytes, &self.limits) {
            Ok(msg) => {
                self.handle_message(now, from, msg);
                Ok(())
            }
            Err(e) => {
                self.stats.decode_errors += 1;
                Err(e)
            }
        }
    }

    /// Handles one already-decoded datagram message (what [`SwimEngine::handle_datagram`] does
    /// after decoding; simulations use it to skip the codec).
    pub fn handle_message(&mut self, now: Instant, from: PeerId, msg: Message) {
        if from == self.local {
            self.stats.self_messages += 1;
            return;
        }
        let Some(i) = self.index(&msg.realm) else {
            self.stats.foreign_realm_messages += 1;
            return;
        };
        self.realms[i].handle_datagram(now, from, msg.body, &self.config, &mut self.out);
    }

    /// Handles a push-pull message read from a stream with `from`: a request (on a stream
    /// `from` opened) returns the answer to write back on it; an answer (to a request this
    /// engine asked for) returns `None`.
    pub fn handle_push_pull(
        &mut self,
        now: Instant,
        from: PeerId,
        msg: Message,
    ) -> Option<Message> {
        if from == self.local {
            self.stats.self_messages += 1;
            return None;
        }
        let Some(i) = self.index(&msg.realm) else {
            self.stats.foreign_realm_messages += 1;
            return None;
        };
        let Body::PushPull(pp) = msg.body else {
            self.realms[i].count_unexpected();
            return None;
        };
        let reply = self.realms[i].handle_push_pull(now, from, pp, &self.config, &mut self.out)?;
        Some(Message {
            realm: msg.realm,
            body: Body::PushPull(reply),
        })
    }

    /// [`SwimEngine::handle_push_pull`] on bytes (one message, without its frame prefix); returns
    /// the encoded answer (without frame prefix) for requests.
    pub fn handle_push_pull_bytes(
        &mut self,
        now: Instant,
        from: PeerId,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, DecodeError> {
        match Message::decode(bytes, &self.limits) {
            Ok(msg) => Ok(self.handle_push_pull(now, from, msg).map(|m| m.encode())),
            Err(e) => {
                self.stats.decode_errors += 1;
                Err(e)
            }
        }
    }

    /// Reports that a push-pull asked for by a [`TransmitKind::PushPull`] transmit to `peer`
    /// in `realm` failed (could not dial, stream reset, bad answer, timeout).
    pub fn handle_push_pull_failed(&mut self, _now: Instant, peer: PeerId, realm: &Realm) {
        if let Some(i) = self.index(realm) {
            self.realms[i].handle_push_pull_failed(peer, &mut self.out);
        }
    }

    /// Tells the engine that datagrams for `peer` could only be sent now (the driver had to
    /// connect first and queued them meanwhile). If `peer` is the target of a realm's current
    /// probe, that probe's timers (indirect probe, end of period) restart from now, so that
    /// connection setup does not count against the probe timeout.
    pub fn handle_probe_sent(&mut self, now: Instant, peer: &PeerId) {
        for m in &mut self.realms {
            m.handle_probe_sent(now, peer, &self.config);
        }
    }

    /// Tells the engine that the ping `seq` to `peer` could not be sent yet: the driver queued
    /// it while it connects. If that is the ping of a realm's current probe, the probe does
    /// not count as failed at the end of its period unless [`SwimEngine::handle_probe_sent`] reports
    /// the ping sent first: a member is not suspected because a connection to it was slow to
    /// come up. The grace is given once per member, and
    /// [`SwimEngine::handle_probe_unreachable`] takes it back: a member that cannot be reached
    /// at all is suspected.
    pub fn handle_probe_unsent(&mut self, _now: Instant, peer: &PeerId, seq: u32) {
        for m in &mut self.realms {
            m.handle_probe_unsent(peer, seq);
        }
    }

    /// Tells the engine that `peer` cannot be reached now: a dial of it failed, or there is
    /// no connection with it and no address to dial. A probe of it that waits for the first
    /// connection ([`SwimEngine::handle_probe_unsent`]) then counts as failed at the end of
    /// its period as usual (unless an ack comes through a helper), and no later probe of it
    /// gets that grace: a member that can never be reached is suspected, then declared
    /// failed.
    ///
    /// A member that waits unconfirmed (docs/swim.md section 3b) and was sent a
    /// confirmation ping is dropped at once.
    pub fn handle_probe_unreachable(&mut self, now: Instant, peer: &PeerId) {
        for m in &mut self.realms {
            m.handle_probe_unreachable(now, peer, &self.config);
        }
    }

    /// A member of `realm` heard of second-hand that waits unconfirmed (docs/swim.md
    /// section 3b): not a member yet, but the engine sends it confirmation pings, which a
    /// driver delivers like any datagram (dialing it at the addresses of this signed record
    /// if needed). `None` if `peer` is not waiting.
    pub fn unconfirmed_member(&self, realm: &Realm, peer: &PeerId) -> Option<Member> {
        self.realms[self.index(realm)?].unconfirmed_member(peer)
    }

    /// The number of members of `realm` waiting unconfirmed.
    pub fn unconfirmed_count(&self, realm: &Realm) -> usize {
        self.index(realm)
            .map_or(0, |i| self.realms[i].unconfirmed_count())
    }

    /// The next message to send, if any. Drain after every call into the engine.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_transmit()
    }

    /// The next membership event, if any. Drain after every call into the engine.
    pub fn poll_event(&mut self) -> Option<SwimEvent> {
        self.out.pop_event()
    }

    /// Every member of `realm` known now (alive, suspect, and dead or left ones not yet
    /// forgotten), sorted by peer ID; this node is not included (see
    /// [`SwimEngine::local_member`]). Empty for an unknown realm.
    pub fn members(&self, realm: &Realm) -> Vec<Member> {
        self.index(realm)
            .map(|i| self.realms[i].members())
            .unwrap_or_default()
    }

    /// One member of `realm`, if known.
    pub fn member(&self, realm: &Realm, peer: &PeerId) -> Option<Member> {
        self.realms[self.index(realm)?].member(peer)
    }

    /// This node as a member of `realm`.
    pub fn local_member(&self, realm: &Realm) -> Option<Member> {
        Some(self.realms[self.index(realm)?].local_member())
    }

    /// Members of `realm` that were declared failed and then forgotten (after
    /// [`SwimConfig::dead_retention`](crate::SwimConfig::dead_retention), or when a rejoin's first
    /// push-pull answer arrived), oldest first, at most 32, with their last metadata (state
    /// `Dead`, incarnation 0). A driver can dial them at those addresses for a rejoin.
    pub fn former_members(&self, realm: &Realm) -> Vec<Member> {
        self.index(realm)
            .map(|i| self.realms[i].former_members())
            .unwrap_or_default()
    }

    /// One former member of `realm` (see [`SwimEngine::former_members`]).
    pub fn former_member(&self, realm: &Realm, peer: &PeerId) -> Option<Member> {
        let meta = self.realms[self.index(realm)?].former_meta(peer)?.clone();
        Some(Member {
            peer: *peer,
            state: crate::MemberState::Dead,
            incarnation: 0,
            meta,
        })
    }

    /// Up to `k` peers of `realm` to rejoin through when the seeds do not answer (or there
    /// are none): members held dead and former members, chosen at random, none with a
    /// push-pull in flight. Give them to [`SwimEngine::join`].
    pub fn rejoin_candidates(&mut self, realm: &Realm, k: usize) -> Vec<PeerId> {
        match self.index(realm) {
            Some(i) => self.realms[i].rejoin_candidates(k),
            None => Vec::new(),
        }
    }

    /// The number of alive and suspect members of `realm`, not counting this node.
    pub fn live_member_count(&self, realm: &Realm) -> usize {
        self.index(realm).map_or(0, |i| self.realms[i].live_count())
    }

    /// This node's incarnation number in `realm`.
    pub fn incarnation(&self, realm: &Realm) -> Option<u64> {
        Some(self.realms[self.index(realm)?].incarnation())
    }

    /// The Lifeguard local health multiplier in `realm` (0 = healthy).
    pub fn local_health(&self, realm: &Realm) -> Option<u32> {
        Some(self.realms[self.index(realm)?].local_health())
    }

    /// The counters of `realm`.
    pub fn stats(&self, realm: &Realm) -> Option<Stats> {
        Some(self.realms[self.index(realm)?].stats())
    }

    /// The engine-wide counters.
    pub fn core_stats(&self) -> CoreStats {
        CoreStats {
            dropped_events: self.out.dropped_events,
            dropped_transmits: self.out.dropped_transmits,
            ..self.stats.clone()
        }
    }

    /// The suspicion of `peer` in `realm`, if it is suspect: independent confirmations so
    /// far and the time it will be declared failed if nothing changes.
    pub fn suspicion(&self, realm: &Realm, peer: &PeerId) -> Option<(u32, Instant)> {
        self.realms[self.index(realm)?].suspicion_of(peer)
    }

    #[cfg(test)]
    pub(crate) fn membership(&self, realm: &Realm) -> &Membership {
        &self.realms[self.index(realm).unwrap_or(0)]
    }
}
