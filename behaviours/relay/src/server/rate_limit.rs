//! Token-bucket rate limiters keyed by peer or IP, bounded in the ids they track.
//!
//! The algorithm of rust-libp2p's `GenericRateLimiter`: a missing bucket is a full one, so
//! only ids that took a token recently cost memory; a bucket earns one token per `interval`
//! and is forgotten once full again. Unlike rust-libp2p's, refills keep the fraction of an
//! interval already earned, and the number of tracked ids is bounded.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::config::RateLimit;

/// Why a limiter refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limited {
    /// The id's bucket is empty.
    Empty,
    /// The limiter tracks as many ids as it may; new ids wait.
    Full,
}

/// A bucket that is not full.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    /// When it earns its next token.
    next_refill: Instant,
}

/// One token bucket per id.
#[derive(Debug)]
pub(crate) struct RateLimiter<Id> {
    limit: u32,
    interval: Duration,
    max_tracked: usize,
    buckets: HashMap<Id, Bucket>,
    /// `(next_refill, id)` of every bucket, earliest first.
    refills: BTreeSet<(Instant, Id)>,
}

impl<Id: Clone + Eq + Hash + Ord> RateLimiter<Id> {
    /// A limiter of `rate` (non-zero limit and interval, checked by the config) tracking at
    /// most `max_tracked` ids.
    pub(crate) fn new(rate: RateLimit, max_tracked: usize) -> Self {
        RateLimiter {
            limit: rate.limit.max(1),
            interval: rate.interval.max(Duration::from_nanos(1)),
            max_tracked,
            buckets: HashMap::new(),
            refills: BTreeSet::new(),
        }
    }

    /// Takes a token of `id`'s bucket at `now`.
    pub(crate) fn try_take(&mut self, id: &Id, now: Instant) -> Result<(), Limited> {
        self.refill(now);
        if let Some(bucket) = self.buckets.get_mut(id) {
            return match bucket.tokens.checked_sub(1) {
                Some(left) => {
                    bucket.tokens = left;
                    Ok(())
                }
                None => Err(Limited::Empty),
            };
        }
        if self.buckets.len() >= self.max_tracked {
            return Err(Limited::Full);
        }
        let next_refill = now + self.interval;
        self.buckets.insert(
            id.clone(),
            Bucket {
                tokens: self.limit - 1,
                next_refill,
            },
        );
        self.refills.insert((next_refill, id.clone()));
        Ok(())
    }

    /// Credits every bucket whose next token is due at `now`, forgetting full ones.
    pub(crate) fn refill(&mut self, now: Instant) {
        while let Some((due, _)) = self.refills.first() {
            if *due > now {
                break;
            }
            let Some((due, id)) = self.refills.pop_first() else {
                break;
            };
            let Some(bucket) = self.buckets.get_mut(&id) else {
                continue;
            };
            let periods = now.duration_since(due).as_nanos() / self.interval.as_nanos() + 1;
            let earned = u32::try_from(periods).unwrap_or(u32::MAX);
            bucket.tokens = bucket.tokens.saturating_add(earned);
            if bucket.tokens >= self.limit {
                self.buckets.remove(&id);
                continue;
            }
            // Less than `limit` periods passed, so this fits.
            let next = due + self.interval * earned;
            bucket.next_refill = next;
            self.refills.insert((next, id));
        }
    }

    /// Ids tracked (buckets not full).
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The key an IP address is limited under: IPv4 addresses (including IPv4-mapped IPv6 ones)
/// by address, IPv6 addresses by their /64 prefix, the usual allocation of one subscriber.
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u32, secs: u64, max: usize) -> RateLimiter<u32> {
        RateLimiter::new(
            RateLimit {
                limit,
                interval: Duration::from_secs(secs),
            },
            max,
        )
    }

    #[test]
    fn burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut l = limiter(3, 10, 100);
        for _ in 0..3 {
            assert_eq!(l.try_take(&1, t0), Ok(()));
        }
        assert_eq!(l.try_take(&1, t0), Err(Limited::Empty));
        // Another id has its own bucket.
        assert_eq!(l.try_take(&2, t0), Ok(()));
        assert_eq!(
            l.try_take(&1, t0 + Duration::from_secs(9)),
            Err(Limited::Empty)
        );
        assert_eq!(l.try_take(&1, t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(
            l.try_take(&1, t0 + Duration::from_secs(10)),
            Err(Limited::Empty)
        );
    }

    #[test]
    fn partial_intervals_are_kept() {
        // rust-libp2p restarts the interval at each refill; here 15 s + 5 s earn two tokens.
        let t0 = Instant::now();
        let mut l = limiter(5, 10, 100);
        for _ in 0..5 {
            l.try_take(&1, t0).unwrap();
        }
        l.try_take(&1, t0 + Duration::from_secs(15)).unwrap();
        assert_eq!(
            l.try_take(&1, t0 + Duration::from_secs(15)),
            Err(Limited::Empty)
        );
        l.try_take(&1, t0 + Duration::from_secs(20)).unwrap();
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let t0 = Instant::now();
        let mut l = limiter(2, 1, 100);
        l.try_take(&1, t0).unwrap();
        l.try_take(&2, t0).unwrap();
        assert_eq!(l.tracked(), 2);
        l.refill(t0 + Duration::from_secs(1));
        assert_eq!(l.tracked(), 0);
        assert!(l.refills.is_empty());
    }

    #[test]
    fn tracked_ids_are_bounded() {
        let t0 = Instant::now();
        let mut l = limiter(2, 60, 3);
        for id in 0..3 {
            l.try_take(&id, t0).unwrap();
        }
        assert_eq!(l.try_take(&99, t0), Err(Limited::Full));
        // Known ids still get their tokens.
        assert_eq!(l.try_take(&0, t0), Ok(()));
        // Once buckets refill, room comes back.
        assert_eq!(l.try_take(&99, t0 + Duration::from_secs(120)), Ok(()));
    }

    #[test]
    fn ipv6_counts_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
