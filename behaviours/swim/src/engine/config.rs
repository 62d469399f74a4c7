//! Configuration, with memberlist's LAN defaults and Lifeguard switched on.

use std::time::Duration;

use thiserror::Error;

use crate::member::MetaError;
use crate::realm::Realm;
use crate::record::SIGNATURE_LEN;
use crate::wire::{header_len, Limits, MAX_PEER_ID_LEN};

/// Tunables of the protocol. `SwimConfig::default()` follows HashiCorp memberlist's LAN profile
/// (probe every second, 500 ms probe timeout, 3 indirect probes, suspicion multiplier 4,
/// retransmit multiplier 4) with every Lifeguard extension on.
#[derive(Clone, Debug, PartialEq)]
pub struct SwimConfig {
    /// The base protocol period: one member is probed per period. Scaled by the local health
    /// multiplier (`LHM + 1`). Default 1 s.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others to probe. Scaled by
    /// `LHM + 1`. Must be below `probe_interval`. Default 500 ms.
    pub probe_timeout: Duration,
    /// How many members are asked to probe indirectly (`k`). Default 3.
    pub indirect_checks: usize,
    /// Suspicion multiplier: the minimum suspicion timeout is
    /// `suspicion_mult × max(1, log10(N)) × probe_interval`. Default 4.
    pub suspicion_mult: u32,
    /// The maximum suspicion timeout (with no confirmation) is this times the minimum
    /// (Lifeguard). Default 6.
    pub suspicion_max_timeout_mult: u32,
    /// Each update is piggybacked at most `retransmit_mult × ⌈log10(N + 1)⌉` times (λ).
    /// Default 4.
    pub retransmit_mult: u32,
    /// How often a dissemination round sends fresh updates (only when there are some) to
    /// `gossip_nodes` random members, like memberlist's gossip. `None` disables rounds:
    /// updates then travel on probe traffic only. Default 200 ms.
    pub gossip_interval: Option<Duration>,
    /// Members per dissemination round. Default 3.
    pub gossip_nodes: usize,
    /// Dissemination rounds carry only updates transmitted fewer than this many times, so
    /// they give each piece of news a fast start (one round sends it to `gossip_nodes`
    /// members) and the remaining retransmissions ride on probe traffic for free, instead
    /// of one extra datagram per transmission. Default 3 (one round).
    pub gossip_fresh_transmits: u32,
    /// Period of the anti-entropy push-pull (full state exchange) with one random member.
    /// `None` disables it. Default 30 s.
    pub push_pull_interval: Option<Duration>,
    /// Scale the push-pull period up for groups above 32 members like memberlist
    /// (`× (⌈log2 N − 5⌉ + 1)`, ×6 at 1,000), trading repair speed for bandwidth in very
    /// large groups. Default off: at 1,000 members a push-pull moves about 60 KB each way,
    /// and anti-entropy is what repairs the few gaps gossip leaves after bursts of joins.
    pub push_pull_scale: bool,
    /// A push-pull whose answer has not come back within this time counts as failed.
    /// Default 10 s.
    pub push_pull_timeout: Duration,
    /// Dead and left members are forgotten this long after they were declared so.
    /// Default 30 s.
    pub dead_retention: Duration,
    /// The largest datagram the engine emits, in bytes (QUIC datagram payload). Piggybacked
    /// updates are limited to fit. Default 1,200.
    pub mtu: usize,
    /// The largest encoded member metadata (addresses + data) accepted or announced.
    /// Default 512.
    pub max_metadata_bytes: usize,
    /// The most members of one realm kept in memory. Default 65,536.
    pub max_members: usize,
    /// The most member records sent or accepted in one push-pull; above it a random subset
    /// is sent. Default 8,192.
    pub max_push_pull_members: usize,
    /// The largest push-pull message sent or accepted, in bytes. Default 4 MiB.
    pub max_push_pull_bytes: usize,
    /// The most indirect probes this node runs for others at once. Default 1,024.
    pub max_pending_relays: usize,
    /// Members told directly about a graceful leave. Default 4.
    pub leave_fanout: usize,
    /// The most events and transmits queued for the driver before new ones are dropped
    /// (and counted). Default 65,536.
    pub max_queued_outputs: usize,
    /// Re-send an unanswered ping once: the prober pings the target again when it sends
    /// the ping-reqs (memberlist makes an extra TCP probe at that point; over QUIC the
    /// datagram is simply repeated), and an indirect prober re-pings the target halfway
    /// through its nack timeout. On lossy paths this cuts false suspicions several-fold
    /// for two small datagrams per failed first attempt. Default on.
    pub ping_retry: bool,
    /// Lifeguard local health multiplier saturation: LHM counts 0..=`awareness_max`;
    /// 0 disables it. Default 8.
    pub awareness_max: u32,
    /// Lifeguard nacks: indirect probers report "could not reach it in time". Default on.
    pub nacks: bool,
    /// Nack deadline as a fraction of the time left in the requester's protocol period
    /// when it sends the ping-req. Default 0.8.
    pub nack_timeout_fraction: f64,
    /// Lifeguard buddy system: a ping to a member we hold as suspect carries that suspicion
    /// first so it can refute at once. Default on.
    pub buddy: bool,
    /// Lifeguard dynamic suspicion: the timeout starts at the maximum and shrinks
    /// logarithmically with independent confirmations. Off: a fixed timeout of the minimum.
    /// Default on.
    pub dynamic_suspicion: bool,
    /// Signatures of alive records checked per second at most, per realm (each costs about
    /// 50 µs of CPU in an optimised build); records beyond the budget are dropped and counted
    /// ([`Stats::signatures_unchecked`](crate::Stats::signatures_unchecked)) and come again
    /// through gossip or anti-entropy. Records that would change nothing are never checked.
    /// Default 2,000 (≤ 0.1 s of CPU per second).
    pub signature_checks_per_sec: u32,
    /// The burst of signature checks allowed at once (e.g. a join's push-pull answer), per
    /// realm. Default 8,192 (a full push-pull message).
    pub signature_check_burst: u32,
    /// Members learned second-hand (from gossip, or from the table of a push-pull partner
    /// other than a join's) wait *unconfirmed* until a message straight from them arrives
    /// (docs/swim.md section 3b): at most this many per realm. When full, a newcomer takes
    /// the place of the newest waiting entry of the introducer holding the most, if that one
    /// holds more than the newcomer's introducer; otherwise it is dropped. Default 1,024.
    pub max_unconfirmed: usize,
    /// Unconfirmed members announced by one introducer (the peer whose message announced
    /// them) waiting at once, per realm; beyond it its announcements of new members are
    /// dropped. Default 64.
    pub max_unconfirmed_per_introducer: usize,
    /// Confirmation pings to unconfirmed members started per second at most, per realm,
    /// shared round-robin among introducers (each entry gets up to 3 pings, one per
    /// `probe_interval`). Default 50.
    pub confirmations_per_sec: u32,
    /// An introducer whose announcements failed confirmation this many times, more often
    /// than they were confirmed, is penalised: its waiting entries are dropped and its
    /// announcements of new members ignored for [`SwimConfig::introducer_penalty`].
    /// Default 8.
    pub introducer_failures: u32,
    /// How long a penalised introducer's announcements of new members are ignored.
    /// Default 60 s.
    pub introducer_penalty: Duration,
}

impl Default for SwimConfig {
    fn default() -> Self {
        SwimConfig {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            retransmit_mult: 4,
            gossip_interval: Some(Duration::from_millis(200)),
            gossip_nodes: 3,
            gossip_fresh_transmits: 3,
            push_pull_interval: Some(Duration::from_secs(30)),
            push_pull_scale: false,
            push_pull_timeout: Duration::from_secs(10),
            dead_retention: Duration::from_secs(30),
            mtu: 1200,
            max_metadata_bytes: 512,
            max_members: 65_536,
            max_push_pull_members: 8192,
            max_push_pull_bytes: 4 * 1024 * 1024,
            max_pending_relays: 1024,
            leave_fanout: 4,
            ping_retry: true,
            max_queued_outputs: 65_536,
            awareness_max: 8,
            nacks: true,
            nack_timeout_fraction: 0.8,
            buddy: true,
            dynamic_suspicion: true,
            signature_checks_per_sec: 2_000,
            signature_check_burst: 8_192,
            max_unconfirmed: 1024,
            max_unconfirmed_per_introducer: 64,
            confirmations_per_sec: 50,
            introducer_failures: 8,
            introducer_penalty: Duration::from_secs(60),
        }
    }
}

/// Why a configuration (or the local metadata) was refused.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("{0} must be positive")]
    ZeroDuration(&'static str),
    /// `probe_timeout` is not below `probe_interval`.
    #[error("probe_timeout must be below probe_interval")]
    TimeoutNotBelowInterval,
    /// A count is out of its range.
    #[error("{what} = {value} is out of range ({range})")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The allowed range.
        range: &'static str,
    },
    /// The MTU cannot hold the largest probe header plus the largest alive update.
    #[error("mtu {mtu} is below the {needed} bytes needed for realm {realm}")]
    MtuTooSmall {
        /// The configured MTU.
        mtu: usize,
        /// What is needed.
        needed: usize,
        /// The realm with the longest name.
        realm: String,
    },
    /// `nack_timeout_fraction` is not in `(0, 1]`.
    #[error("nack_timeout_fraction must be in (0, 1]")]
    BadNackFraction,
    /// No realm was given.
    #[error("a engine needs at least one realm")]
    NoRealm,
    /// The same realm was given twice.
    #[error("realm {0} given twice")]
    DuplicateRealm(String),
    /// The local metadata is refused.
    #[error("local metadata: {0}")]
    Meta(#[from] MetaError),
}

impl SwimConfig {
    /// The default configuration with every Lifeguard extension off (plain SWIM with
    /// memberlist's timing): no local health multiplier, no nacks, no buddy system, a fixed
    /// suspicion timeout. For comparisons.
    pub fn without_lifeguard() -> Self {
        SwimConfig {
            awareness_max: 0,
            nacks: false,
            buddy: false,
            dynamic_suspicion: false,
            ..SwimConfig::default()
        }
    }

    /// The largest encoded alive update this configuration lets through.
    pub(crate) fn max_alive_update_len(&self) -> usize {
        1 + 1 + MAX_PEER_ID_LEN + 10 + self.max_metadata_bytes + SIGNATURE_LEN
    }

    /// The largest push-pull record (an alive update's fields plus the signed incarnation).
    pub(crate) fn max_record_len(&self) -> usize {
        self.max_alive_update_len() + 10
    }

    /// The decoding limits derived from this configuration.
    pub fn limits(&self) -> Limits {
        Limits {
            max_datagram_bytes: Limits::default().max_datagram_bytes.max(self.mtu),
            max_push_pull_bytes: self.max_push_pull_bytes,
            max_push_pull_members: self.max_push_pull_members,
            max_updates: Limits::default().max_updates,
        }
    }

    /// Checks the configuration for a engine serving `realms`.
    pub fn validate(&self, realms: &[Realm]) -> Result<(), ConfigError> {
        if self.probe_interval.is_zero() {
            return Err(ConfigError::ZeroDuration("probe_interval"));
        }
        if self.probe_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("probe_timeout"));
        }
        if self.probe_timeout >= self.probe_interval {
            return Err(ConfigError::TimeoutNotBelowInterval);
        }
        if self.push_pull_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("push_pull_timeout"));
        }
        if matches!(self.gossip_interval, Some(d) if d.is_zero()) {
            return Err(ConfigError::ZeroDuration("gossip_interval"));
        }
        if matches!(self.push_pull_interval, Some(d) if d.is_zero()) {
            return Err(ConfigError::ZeroDuration("push_pull_interval"));
        }
        let ranges: [(&'static str, u64, u64, u64, &'static str); 15] = [
            (
                "max_unconfirmed",
                self.max_unconfirmed as u64,
                1,
                u64::MAX,
                "1..",
            ),
            (
                "max_unconfirmed_per_introducer",
                self.max_unconfirmed_per_introducer as u64,
                1,
                u64::MAX,
                "1..",
            ),
            (
                "confirmations_per_sec",
                u64::from(self.confirmations_per_sec),
                1,
                u64::MAX,
                "1..",
            ),
            (
                "introducer_failures",
                u64::from(self.introducer_failures),
                1,
                u64::MAX,
                "1..",
            ),
            (
                "indirect_checks",
                self.indirect_checks as u64,
                0,
                16,
                "0..=16",
            ),
            (
                "suspicion_mult",
                u64::from(self.suspicion_mult),
                1,
                100,
                "1..=100",
            ),
            (
                "suspicion_max_timeout_mult",
                u64::from(self.suspicion_max_timeout_mult),
                1,
                100,
                "1..=100",
            ),
            (
                "retransmit_mult",
                u64::from(self.retransmit_mult),
                1,
                100,
                "1..=100",
            ),
            ("gossip_nodes", self.gossip_nodes as u64, 0, 64, "0..=64"),
            (
                "awareness_max",
                u64::from(self.awareness_max),
                0,
                64,
                "0..=64",
            ),
            ("max_members", self.max_members as u64, 1, u64::MAX, "1.."),
            (
                "signature_checks_per_sec",
                u64::from(self.signature_checks_per_sec),
                1,
                u64::MAX,
                "1..",
            ),
            (
                "signature_check_burst",
                u64::from(self.signature_check_burst),
                1,
                u64::MAX,
                "1..",
            ),
            (
                "max_push_pull_members",
                self.max_push_pull_members as u64,
                1,
                u64::MAX,
                "1..",
            ),
            (
                "max_queued_outputs",
                self.max_queued_outputs as u64,
                16,
                u64::MAX,
                "16..",
            ),
        ];
        for (what, value, lo, hi, range) in ranges {
            if value < lo || value > hi {
                return Err(ConfigError::OutOfRange { what, value, range });
            }
        }
        if !(self.nack_timeout_fraction > 0.0 && self.nack_timeout_fraction <= 1.0) {
            return Err(ConfigError::BadNackFraction);
        }
        if realms.is_empty() {
            return Err(ConfigError::NoRealm);
        }
        for (i, r) in realms.iter().enumerate() {
            if realms[..i].iter().any(|o| o.same(r)) {
                return Err(ConfigError::DuplicateRealm(r.to_string()));
            }
        }
        // The largest datagram header is a ping-req's: header, seq, target, nack timeout,
        // update count.
        if let Some(longest) = realms.iter().max_by_key(|r| r.len()) {
            let needed =
                header_len(longest) + 5 + 1 + MAX_PEER_ID_LEN + 5 + 2 + self.max_alive_update_len();
            if self.mtu < needed {
                return Err(ConfigError::MtuTooSmall {
                    mtu: self.mtu,
                    needed,
                    realm: longest.to_string(),
                });
            }
        }
        if self.max_push_pull_bytes < 1024 {
            return Err(ConfigError::OutOfRange {
                what: "max_push_pull_bytes",
                value: self.max_push_pull_bytes as u64,
                range: "1024..",
            });
        }
        Ok(())
    }

    /// The minimum suspicion timeout for a group of `n` members (memberlist's formula):
    /// `suspicion_mult × max(1, log10(max(1, n))) × probe_interval`.
    pub fn suspicion_min_timeout(&self, n: usize) -> Duration {
        let scale = (n.max(1) as f64).log10().max(1.0);
        let ms =
            f64::from(self.suspicion_mult) * scale * self.probe_interval.as_secs_f64() * 1000.0;
        Duration::from_millis(ms.floor() as u64)
    }

    /// The retransmit limit for a group of `n` members: `λ × ⌈log10(n + 1)⌉`.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let scale = ((n as f64) + 1.0).log10().ceil().max(1.0) as u32;
        self.retransmit_mult.saturating_mul(scale)
    }

    /// The push-pull period for a group of `n` members (with
    /// [`SwimConfig::push_pull_scale`], memberlist's scaling above 32).
    pub fn push_pull_period(&self, n: usize) -> Option<Duration> {
        let base = self.push_pull_interval?;
        if n <= 32 || !self.push_pull_scale {
            return Some(base);
        }
        let mult = ((n as f64).log2() - 32f64.log2()).ceil() + 1.0;
        Some(base.mul_f64(mult))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_formulas() {
        let c = SwimConfig::default();
        let realm = Realm::new("org.example.mesh").unwrap();
        assert_eq!(c.validate(std::slice::from_ref(&realm)), Ok(()));
        assert_eq!(c.validate(&[]), Err(ConfigError::NoRealm));
        assert!(matches!(
            c.validate(&[realm.clone(), realm.clone()]),
            Err(ConfigError::DuplicateRealm(_))
        ));
        assert_eq!(c.suspicion_min_timeout(1000), Duration::from_secs(12));
        assert_eq!(c.suspicion_min_timeout(3), Duration::from_secs(4));
        assert_eq!(c.retransmit_limit(1000), 16);
        assert_eq!(c.retransmit_limit(9), 4);
        assert_eq!(c.retransmit_limit(10), 8);
        assert_eq!(c.push_pull_period(10), Some(Duration::from_secs(30)));
        assert_eq!(c.push_pull_period(1000), Some(Duration::from_secs(30)));
        let scaled = SwimConfig {
            push_pull_scale: true,
            ..SwimConfig::default()
        };
        assert_eq!(
            scaled.push_pull_period(1000),
            Some(Duration::from_secs(180))
        );
        let small = SwimConfig {
            mtu: 300,
            ..SwimConfig::default()
        };
        assert!(matches!(
            small.validate(std::slice::from_ref(&realm)),
            Err(ConfigError::MtuTooSmall { .. })
        ));
        let bad = SwimConfig {
            probe_timeout: Duration::from_secs(2),
            ..SwimConfig::default()
        };
        assert_eq!(
            bad.validate(&[realm]),
            Err(ConfigError::TimeoutNotBelowInterval)
        );
    }
}
