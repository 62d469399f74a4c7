//! Lifeguard's dynamic suspicion timeout (memberlist's `suspicion.go` semantics).
//!
//! A suspicion starts with the maximum timeout and, as `k` independent confirmations arrive
//! (other members whose own probes also failed), shrinks logarithmically towards the minimum:
//! `timeout(n) = max − (ln(n + 1) / ln(k + 1)) × (max − min)`, never below `min`. The accuser
//! that started the suspicion never counts as a confirmation, and each confirmer counts once.
//! With `k == 0` (too few members to expect confirmations) the timeout is the minimum.

use std::time::{Duration, Instant};

use meshwire_core::PeerId;

/// One member's suspicion timer.
#[derive(Clone, Debug)]
pub(crate) struct Suspicion {
    /// The member whose suspicion started the timer.
    pub(crate) from: PeerId,
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
            confirmations: Vec::new(),
            k,
            min,
            max,
            start: now,
            deadline: now + timeout,
        }
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
}
