//! What the engine reports to the application: membership events and counters.

use meshwire_core::PeerId;

use crate::member::Member;
use crate::realm::Realm;

/// A change in a realm's membership, as seen by this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwimEvent {
    /// A member became known (or came back after being dead or having left).
    MemberJoined {
        /// The realm.
        realm: Realm,
        /// The member, as now known.
        member: Member,
    },
    /// A member's metadata changed.
    MemberUpdated {
        /// The realm.
        realm: Realm,
        /// The member, as now known.
        member: Member,
    },
    /// A member became suspect.
    MemberSuspected {
        /// The realm.
        realm: Realm,
        /// The suspect.
        peer: PeerId,
        /// The incarnation suspected.
        incarnation: u64,
        /// Whose probe failed: this node's own id when its own probe failed; for a suspicion
        /// learned in a push-pull, the partner that held it.
        accuser: PeerId,
    },
    /// A member we held as suspect proved alive (refuted with a higher incarnation).
    MemberRefuted {
        /// The realm.
        realm: Realm,
        /// The member, as now known.
        member: Member,
    },
    /// A member was declared failed.
    MemberFailed {
        /// The realm.
        realm: Realm,
        /// The failed member.
        peer: PeerId,
        /// The incarnation declared failed.
        incarnation: u64,
    },
    /// A member left gracefully.
    MemberLeft {
        /// The realm.
        realm: Realm,
        /// The member.
        peer: PeerId,
        /// Its final incarnation.
        incarnation: u64,
    },
    /// A join push-pull with a seed failed (the driver reported it or it timed out).
    JoinFailed {
        /// The realm.
        realm: Realm,
        /// The seed.
        seed: PeerId,
    },
}

impl SwimEvent {
    /// The realm the event is about.
    pub fn realm(&self) -> &Realm {
        match self {
            SwimEvent::MemberJoined { realm, .. }
            | SwimEvent::MemberUpdated { realm, .. }
            | SwimEvent::MemberSuspected { realm, .. }
            | SwimEvent::MemberRefuted { realm, .. }
            | SwimEvent::MemberFailed { realm, .. }
            | SwimEvent::MemberLeft { realm, .. }
            | SwimEvent::JoinFailed { realm, .. } => realm,
        }
    }
}

/// Counters of one realm's membership. All monotonic except the gauges noted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Direct probes (pings) sent as prober.
    pub probes_sent: u64,
    /// Probes answered directly by the target.
    pub probes_acked_direct: u64,
    /// Probes answered through an indirect prober.
    pub probes_acked_indirect: u64,
    /// Probes with no ack by the end of the protocol period.
    pub probes_failed: u64,
    /// Probes whose ping the driver could never send (no connection to the target came up
    /// within the period; see `SwimEngine::handle_probe_unsent`): neither failed nor acked.
    pub probes_unsent: u64,
    /// Probes whose grace for a first connection was refused: the member had it already.
    pub probes_grace_refused: u64,
    /// Probes that lost their grace because the driver reported the target unreachable
    /// (its dial failed, or no address).
    pub probes_unreachable: u64,
    /// Ping-reqs sent as prober.
    pub ping_reqs_sent: u64,
    /// Ping-reqs served for others (indirect probes run).
    pub ping_reqs_served: u64,
    /// Ping-reqs refused: too many in progress, or the target is not a live member here.
    pub ping_reqs_dropped: u64,
    /// Acks relayed to a requester.
    pub acks_relayed: u64,
    /// Nacks sent as indirect prober.
    pub nacks_sent: u64,
    /// Nacks received as prober.
    pub nacks_received: u64,
    /// Nacks expected but not received by the end of a failed probe's period.
    pub nacks_missed: u64,
    /// Suspicions raised by this node's own failed probes.
    pub suspicions_raised: u64,
    /// Independent confirmations of suspicions recorded.
    pub suspicion_confirmations: u64,
    /// Suspicions started from a push-pull partner's table (hearsay: not gossiped, no
    /// confirmation; docs/swim.md section 4).
    pub hearsay_suspicions: u64,
    /// Members held as suspect here that then refuted: false suspicions seen locally.
    pub false_suspicions: u64,
    /// Members declared failed by this node's own suspicion timers.
    pub failures_declared: u64,
    /// Of those, declarations not spread because no member had been heard from since the
    /// suspicion began (this node was likely cut off itself).
    pub failures_kept_local: u64,
    /// Of those, verdicts taken back because the member showed it was alive (a message from
    /// it, or alive news at the same incarnation); it is reported joined again.
    pub failures_revoked: u64,
    /// Times this node refuted a suspicion (or death) of itself.
    pub refutations: u64,
    /// Times this node re-announced its current incarnation because someone still accused
    /// an older one.
    pub reannouncements: u64,
    /// Datagrams handed to the driver.
    pub datagrams_sent: u64,
    /// Datagrams received for this realm.
    pub datagrams_received: u64,
    /// Dissemination rounds that sent something.
    pub gossip_rounds: u64,
    /// Updates piggybacked on outgoing datagrams.
    pub updates_sent: u64,
    /// Updates received.
    pub updates_received: u64,
    /// Updates refused (metadata too large, member table full).
    pub updates_rejected: u64,
    /// Alive records (updates or push-pull records) dropped for a missing or invalid
    /// signature by the member.
    pub signatures_rejected: u64,
    /// Alive records dropped unchecked because the signature-check budget
    /// ([`SwimConfig::signature_checks_per_sec`](crate::SwimConfig::signature_checks_per_sec))
    /// was spent.
    pub signatures_unchecked: u64,
    /// Signatures of alive records checked.
    pub signatures_checked: u64,
    /// Members learned second-hand that entered the unconfirmed state (docs/swim.md
    /// section 3b).
    pub unconfirmed_added: u64,
    /// Unconfirmed members confirmed (a message straight from them arrived) and so taken in
    /// as members.
    pub unconfirmed_confirmed: u64,
    /// Unconfirmed members dropped after their confirmation pings went unanswered (or the
    /// driver reported them unreachable).
    pub unconfirmed_failed: u64,
    /// Unconfirmed members dropped because the suspicion timeout passed before they were
    /// confirmed.
    pub unconfirmed_expired: u64,
    /// Announcements of new members refused or dropped before confirmation: the per-realm or
    /// per-introducer bound was reached, the introducer was penalised, or the entry was
    /// evicted to make room.
    pub unconfirmed_dropped: u64,
    /// Confirmation pings sent to unconfirmed members.
    pub confirmation_pings: u64,
    /// Times an introducer was penalised (too many of its announcements failed confirmation).
    pub introducers_penalised: u64,
    /// Push-pulls started (joins and anti-entropy).
    pub push_pulls_started: u64,
    /// Push-pull answers merged.
    pub push_pulls_completed: u64,
    /// Push-pulls that failed or timed out.
    pub push_pulls_failed: u64,
    /// Push-pull requests answered.
    pub push_pulls_served: u64,
    /// Messages ignored as unexpected (stale acks, unsolicited answers, wrong kind).
    pub unexpected_messages: u64,
    /// Gauge: the local health multiplier (LHM) now.
    pub local_health: u32,
    /// Gauge: alive and suspect members now (not counting this node).
    pub live_members: usize,
    /// Gauge: updates waiting to be disseminated.
    pub queued_updates: usize,
    /// Gauge: unconfirmed members waiting now.
    pub unconfirmed_members: usize,
}

/// Counters of the engine as a whole (not per realm).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Inbound bytes that failed to decode.
    pub decode_errors: u64,
    /// Messages for realms this engine is not in (ignored).
    pub foreign_realm_messages: u64,
    /// Messages sent by this node's own id (ignored).
    pub self_messages: u64,
    /// Events dropped because the driver did not drain them.
    pub dropped_events: u64,
    /// Transmits dropped because the driver did not drain them.
    pub dropped_transmits: u64,
}
