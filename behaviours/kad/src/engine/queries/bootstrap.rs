//! Bootstrap: a lookup of the local key, then refresh lookups (FIND_NODE queries of their
//! own, reporting to the bootstrap) of a random key in every bucket from the one holding the
//! self lookup's `k`-th closest peer outwards.

use meshwire_core::PeerId;

use super::step::{node_lookup_response, AfterLookup, Ctx, Handled, Outcome, QueryKind};
use crate::kbucket::Key;
use crate::protocol::{KadRequest, KadResponse};
use crate::query::{BootstrapOk, ClosestPeersIter, QueryError, QueryResult, QueryStats};

/// Where a bootstrap is.
#[derive(Debug)]
enum Phase {
    /// Looking up the local key.
    SelfLookup(ClosestPeersIter),
    /// Waiting for the refresh lookups.
    Refresh { remaining: usize },
}

/// A routing-table refresh.
#[derive(Debug)]
pub(crate) struct Bootstrap {
    phase: Phase,
    /// Lookups run, the self lookup included.
    lookups: usize,
}

impl Bootstrap {
    /// A bootstrap starting with the self lookup `iter`.
    pub fn new(iter: ClosestPeersIter) -> Self {
        Bootstrap {
            phase: Phase::SelfLookup(iter),
            lookups: 1,
        }
    }

    /// The self lookup ended: `refreshes` refresh lookups are starting.
    pub fn start_refresh(&mut self, refreshes: usize) {
        self.lookups += refreshes;
        self.phase = Phase::Refresh {
            remaining: refreshes,
        };
    }

    /// A refresh lookup finished; returns whether it was the last one.
    pub fn refresh_finished(&mut self) -> bool {
        match &mut self.phase {
            Phase::Refresh { remaining } => {
                *remaining = remaining.saturating_sub(1);
                *remaining == 0
            }
            Phase::SelfLookup(_) => false,
        }
    }
}

impl QueryKind for Bootstrap {
    fn iter_mut(&mut self) -> Option<&mut ClosestPeersIter> {
        match &mut self.phase {
            Phase::SelfLookup(iter) => Some(iter),
            Phase::Refresh { .. } => None,
        }
    }

    fn lookup_request(&self, local: &PeerId) -> Option<KadRequest> {
        matches!(self.phase, Phase::SelfLookup(_)).then(|| KadRequest::FindNode {
            key: local.to_bytes(),
        })
    }

    fn on_response(
        &mut self,
        from: PeerId,
        response: KadResponse,
        local: &PeerId,
    ) -> Option<Handled> {
        match &mut self.phase {
            Phase::SelfLookup(iter) => node_lookup_response(iter, from, response, local),
            Phase::Refresh { .. } => None,
        }
    }

    fn after_lookup(&mut self, stats: &mut QueryStats, ctx: &Ctx<'_>) -> AfterLookup {
        let Phase::SelfLookup(iter) = &self.phase else {
            return AfterLookup::Nothing;
        };
        let result = iter.result();
        stats.hops = iter.hops();
        stats.closest_depth = result.first().map(|c| c.depth);
        // Every peer in a bucket closer than the k-th closest peer is closer than it, so the
        // self lookup already found them all: refresh from that bucket outwards. If it found
        // fewer than k peers it exhausted the network: nothing to refresh.
        let first_bucket = (result.len() >= ctx.config.k)
            .then(|| {
                result.last().and_then(|c| {
                    ctx.local_key
                        .distance(&Key::from_peer(&c.peer))
                        .bucket_index()
                })
            })
            .flatten();
        AfterLookup::Refresh { first_bucket }
    }

    fn outcome(&mut self, timed_out: bool, _stats: &mut QueryStats, ctx: &Ctx<'_>) -> Outcome {
        let result = if timed_out && matches!(self.phase, Phase::SelfLookup(_)) {
            Err(QueryError::Timeout)
        } else {
            Ok(BootstrapOk {
                lookups: self.lookups,
                table_size: ctx.table_size,
            })
        };
        QueryResult::Bootstrap(result).into()
    }

    fn failed(&self, error: QueryError) -> QueryResult {
        QueryResult::Bootstrap(Err(error))
    }
}
