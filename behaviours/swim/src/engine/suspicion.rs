//! Lifeguard's dynamic suspicion timeout (memberlist's `suspicion.go` semantics).
//!
//! A suspicion starts with the maximum timeout and, as `k` independent confirmations arrive
//! (other members whose own probes also failed), shrinks logarithmically towards the minimum:
//! `timeout(n) = max − (ln(n + 1) / ln(k + 1)) × (max − min)`, never below `min`. The accuser
//! that started the suspicion never counts as a confirmation, and each confirmer counts once.
//! With `k == 0` (too few members to expect confirmations) the timeout is the minimum.
//!
//! A suspicion learned from a push-pull partner's table is **hearsay**: its accuser is not
//! known (records carry none), so it starts at the maximum, is not gossiped, and the first
//! accuser heard of later (in gossip, or our own failed probe) takes the accuser's place
//! instead of counting as a confirmation. Only accusations by members whose own probes
//! failed shrink the timeout (Lifeguard's independent confirmations).

use std::time::{Duration, Instant};

use meshwire_core::PeerId;

/// One member's suspicion timer.
#[derive(Clone, Debug)]
pub(crate) struct Suspicion {
    /// The member whose suspicion started the timer.
    pub(crate) from: PeerId,
    /// Learned from a push-pull partner's table: `from` is not a real accuser (docs above).
    hearsay: bool,
    confirmations: Vec<PeerId>,
    k: u32,
    min: Duration,
    max: Duration,
    /// When the suspicion started.
    pub(crate) start: Instant,
    /// When the member is declared dead if nothing changes.
    pub(crate) deadline: Instant,
}

/// The total timeout after `n` of `k` expected confirmations.
pub(crate) fn timeout_after(n: u32, k: u32, min: Duration, max: Duration) -> Duration {
    if k == 0 {
        return min;
    }
    let frac = (f64::from(n) + 1.0).ln() / (f64::from(k) + 1.0).ln();
    let raw = max.as_secs_f64() - frac * (max.as_secs_f64() - min.as_secs_f64());
    let timeout = Duration::from_millis((raw * 1000.0).floor().max(0.0) as u64);
    timeout.max(min)
}

impl Suspicion {
    pub(crate) fn new(from: PeerId, k: u32, min: Duration, max: Duration, now: Instant) -> Self {
        let timeout = timeout_after(0, k, min, max);
        Suspicion {
            from,
            hearsay: false,
            confirmations: Vec::new(),
            k,
            min,
            max,
            start: now,
            deadline: now + timeout,
        }
    }

    /// A suspicion learned from a push-pull partner's table (hearsay, docs above); `local`:
    /// this node, standing for the unknown accuser until one is heard of.
    pub(crate) fn hearsay(
        local: PeerId,
        k: u32,
        min: Duration,
        max: Duration,
        now: Instant,
    ) -> Self {
        Suspicion {
            hearsay: true,
            ..Suspicion::new(local, k, min, max, now)
        }
    }

    /// Whether the suspicion is hearsay with no accuser heard of yet.
    #[cfg(test)]
    pub(crate) fn is_hearsay(&self) -> bool {
        self.hearsay
    }

    /// A hearsay suspicion takes `from` as its accuser (the first one heard of: in gossip, or
    /// this node's own failed probe); the timeout does not change. Returns `false` if the
    /// suspicion is not hearsay (then `from` may be a confirmation: see [`Self::confirm`]).
    pub(crate) fn adopt_accuser(&mut self, from: PeerId) -> bool {
        if !self.hearsay {
            return false;
        }
        self.hearsay = false;
        self.from = from;
        true
    }

    /// Records an independent confirmation from `from`. Returns `true` if it was new (and so
    /// worth re-gossiping), `false` for the accuser, a repeat, or once `k` have been seen.
    pub(crate) fn confirm(&mut self, from: PeerId) -> bool {
        if self.confirmations.len() as u32 >= self.k
            || from == self.from
            || self.confirmations.contains(&from)
        {
            return false;
        }
        self.confirmations.push(from);
        let total = timeout_after(self.confirmations.len() as u32, self.k, self.min, self.max);
        self.deadline = self.start + total;
        true
    }

    /// Independent confirmations so far.
    pub(crate) fn confirmations(&self) -> u32 {
        self.confirmations.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

    #[test]
    fn timeout_shrinks_with_confirmations() {
        let p = |i| Keypair::from_seed_for_tests(i).peer_id();
        let now = Instant::now();
        let min = Duration::from_secs(12);
        let max = Duration::from_secs(72);
        let mut s = Suspicion::new(p(1), 2, min, max, now);
        assert_eq!(s.deadline, now + max);
        assert!(!s.confirm(p(1)), "the accuser is not a confirmation");
        assert!(s.confirm(p(2)));
        assert!(!s.confirm(p(2)), "one confirmation per member");
        let after_one = s.deadline - now;
        assert!(after_one < max && after_one > min, "{after_one:?}");
        // max - ln2/ln3 * 60 s = 34.15 s
        assert_eq!(after_one, Duration::from_millis(34_144));
        assert!(s.confirm(p(3)));
        assert_eq!(s.deadline, now + min);
        assert!(!s.confirm(p(4)), "no more than k");
        assert_eq!(s.confirmations(), 2);
        let s0 = Suspicion::new(p(1), 0, min, max, now);
        assert_eq!(s0.deadline, now + min);
    }

    #[test]
    fn hearsay_adopts_its_first_accuser_without_shrinking() {
        let p = |i| Keypair::from_seed_for_tests(i).peer_id();
        let now = Instant::now();
        let (min, max) = (Duration::from_secs(16), Duration::from_secs(96));
        let mut s = Suspicion::hearsay(p(0), 2, min, max, now);
        assert!(s.is_hearsay());
        assert_eq!(s.deadline, now + max);
        assert!(s.adopt_accuser(p(1)));
        assert!(!s.is_hearsay());
        assert_eq!(s.from, p(1));
        assert_eq!(s.deadline, now + max, "the accuser is no confirmation");
        assert!(!s.adopt_accuser(p(2)), "only once");
        assert!(
            !s.confirm(p(1)),
            "the adopted accuser is not a confirmation"
        );
        assert!(s.confirm(p(2)));
        assert_eq!(s.confirmations(), 1);
    }
}
