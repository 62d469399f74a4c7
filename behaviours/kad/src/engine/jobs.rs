//! Periodic work: bootstrap (the self lookup and the bucket refreshes it starts), the
//! periodic bootstrap, request and query timeouts, and the store jobs (expiry, republishing
//! originated records and provider announcements, replicating stored records).

use std::time::{Duration, Instant};

use super::commands::Ending;
use super::queries::{Bootstrap, FindNode, QueryState};
use super::KadEngine;
use crate::kbucket::NUM_BUCKETS;
use crate::protocol::KadPeer;
use crate::query::{QueryError, QueryId, QueryOrigin};

/// Draws allowed to find a refresh key in a bucket. Bucket `i` needs about `2^(256 - i)`, so
/// 4096 aims exactly down to bucket 244 — the closest occupied buckets of networks of a few
/// thousand peers; deeper buckets get the nearest draw, and the self lookup covers the
/// closest neighbourhood anyway. (rust-libp2p draws 16 random peer ids.)
const MAX_REFRESH_KEY_DRAWS: usize = 4096;

/// How often the record and provider stores are swept and their periodic jobs checked.
const JOB_TICK: Duration = Duration::from_secs(60);

impl KadEngine {
    /// Refreshes the routing table: a lookup of the local key, then one lookup of a random key
    /// in every bucket from the one holding the self lookup's `k`-th closest peer outwards
    /// (rust-libp2p starts at the closest non-empty bucket; the buckets in between hold only
    /// peers closer than the `k`-th closest, which the self lookup already found). Starts the
    /// periodic bootstrap ([`KadConfig::bootstrap_interval`](super::KadConfig)). If a
    /// bootstrap is running, returns its id.
    ///
    /// # Errors
    ///
    /// [`QueryError::NoKnownPeers`] if the routing table is empty.
    pub fn bootstrap(&mut self, now: Instant) -> Result<QueryId, QueryError> {
        if let Some(interval) = self.config.bootstrap_interval {
            self.next_bootstrap = Some(now + interval);
        }
        let id = self.start_bootstrap(QueryOrigin::User, now);
        self.drive(now);
        id
    }

    fn start_bootstrap(
        &mut self,
        origin: QueryOrigin,
        now: Instant,
    ) -> Result<QueryId, QueryError> {
        if let Some(id) = self.running_bootstrap {
            return Ok(id);
        }
        if self.table.is_empty() {
            return Err(QueryError::NoKnownPeers);
        }
        let iter = self.lookup(&self.local_key);
        let state = QueryState::Bootstrap(Bootstrap::new(iter));
        let id = self.new_query(origin, None, state, now);
        self.running_bootstrap = Some(id);
        Ok(id)
    }

    /// Bootstrap `id`'s self lookup ended: one refresh lookup per bucket from `first_bucket`
    /// outwards (none if `None`).
    pub(super) fn start_refresh(&mut self, id: QueryId, first_bucket: Option<usize>, now: Instant) {
        let buckets: Vec<usize> = (first_bucket.unwrap_or(NUM_BUCKETS)..NUM_BUCKETS).collect();
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        if let QueryState::Bootstrap(b) = &mut q.state {
            b.start_refresh(buckets.len());
        }
        // The refresh lookups have their own timeouts.
        self.queries.clear_deadline(&id);
        if buckets.is_empty() {
            self.end_query(id, Ending::Done, now);
            return;
        }
        for b in buckets {
            let (key, target) =
                self.local_key
                    .random_preimage_in_bucket(b, &mut self.rng, MAX_REFRESH_KEY_DRAWS);
            let iter = self.lookup(&target);
            let state = QueryState::FindNode(FindNode { key, iter });
            self.new_query(QueryOrigin::Bootstrap, Some(id), state, now);
        }
    }

    /// Starts the store jobs' clock: their first tick is [`JOB_TICK`] after `now`.
    pub(super) fn start_job_clock(&mut self, now: Instant) {
        self.next_job_tick = Some(now + JOB_TICK);
    }

    /// Runs the timers due at `now`.
    pub(super) fn run_timers(&mut self, now: Instant) {
        if self.next_job_tick.is_none() {
            self.start_job_clock(now);
        }
        while let Some((id, out)) = self.requests.pop_expired(now) {
            tracing::trace!(%id, peer = %out.peer, "request timed out");
            self.fail_request(out, true, now);
        }
        while let Some(id) = self.queries.pop_expired(now) {
            self.end_query(id, Ending::TimedOut, now);
        }
        if self.next_bootstrap.is_some_and(|t| t <= now) {
            self.next_bootstrap = self.config.bootstrap_interval.map(|i| now + i);
            if self.start_bootstrap(QueryOrigin::Bootstrap, now).is_err() {
                tracing::debug!("periodic bootstrap skipped: routing table empty");
            }
        }
        if self.next_job_tick.is_some_and(|t| t <= now) {
            self.start_job_clock(now);
            self.run_jobs(now);
        }
    }

    fn run_jobs(&mut self, now: Instant) {
        self.records.expire(now);
        self.providers.expire(now);
        for stored in self.records.take_due(now) {
            let origin = if stored.originated {
                QueryOrigin::Republish
            } else {
                QueryOrigin::Replicate
            };
            let record = stored.to_record(now);
            self.start_put(record, 1, origin, now);
        }
        for key in self.providers.take_due(now) {
            let me = KadPeer::new(self.local, self.external_addrs.clone());
            if let Err(e) = self.providers.add(key.clone(), me, now) {
                tracing::debug!(error = %e, "could not refresh local provider record");
            }
            self.start_add_provider(key, QueryOrigin::Republish, now);
        }
    }
}
