//! PUT_VALUE: a lookup of the record key's closest peers, then a store round at them.

use meshwire_core::PeerId;

use super::step::{node_lookup_response, targets, AfterLookup, Ctx, Handled, Outcome, QueryKind};
use crate::protocol::{KadRequest, KadResponse, Record};
use crate::query::{ClosestPeersIter, PutValueOk, QueryError, QueryResult, QueryStats};

/// Where a store is.
#[derive(Debug)]
enum Phase {
    /// Looking up the closest peers.
    FindPeers(ClosestPeersIter),
    /// Storing at them.
    Store { pending: usize, successes: usize },
}

/// A record store.
#[derive(Debug)]
pub(crate) struct PutValue {
    record: Record,
    quorum: usize,
    phase: Phase,
}

impl PutValue {
    /// Stores `record` at the peers `iter` finds; succeeds with `quorum` (at least 1)
    /// confirmations.
    pub fn new(record: Record, quorum: usize, iter: ClosestPeersIter) -> Self {
        PutValue {
            record,
            quorum: quorum.max(1),
            phase: Phase::FindPeers(iter),
        }
    }
}

impl QueryKind for PutValue {
    fn iter_mut(&mut self) -> Option<&mut ClosestPeersIter> {
        match &mut self.phase {
            Phase::FindPeers(iter) => Some(iter),
            Phase::Store { .. } => None,
        }
    }

    fn lookup_request(&self, _local: &PeerId) -> Option<KadRequest> {
        matches!(self.phase, Phase::FindPeers(_)).then(|| KadRequest::FindNode {
            key: self.record.key.to_vec(),
        })
    }

    fn on_response(
        &mut self,
        from: PeerId,
        response: KadResponse,
        local: &PeerId,
    ) -> Option<Handled> {
        match (&mut self.phase, response) {
            (Phase::FindPeers(iter), response) => node_lookup_response(iter, from, response, local),
            (Phase::Store { pending, successes }, response) => {
                *pending = pending.saturating_sub(1);
                let ok = match response {
                    KadResponse::PutValue { record: echo }
                        if echo.key == self.record.key && echo.value == self.record.value =>
                    {
                        *successes += 1;
                        true
                    }
                    _ => false,
                };
                Some(Handled::lookup(ok))
            }
        }
    }

    fn on_failure(&mut self, peer: &PeerId, timed_out: bool) -> bool {
        match &mut self.phase {
            Phase::Store { pending, .. } => {
                *pending = pending.saturating_sub(1);
                true
            }
            Phase::FindPeers(iter) if timed_out => iter.on_timeout(peer),
            Phase::FindPeers(iter) => iter.on_failure(peer),
        }
    }

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Store { pending: 0, .. })
    }

    fn after_lookup(&mut self, stats: &mut QueryStats, _ctx: &Ctx<'_>) -> AfterLookup {
        let Phase::FindPeers(iter) = &self.phase else {
            return AfterLookup::Nothing;
        };
        let targets = targets(iter);
        // The store round is one more sequential round.
        stats.hops = iter.hops() + 1;
        stats.closest_depth = iter.result().first().map(|c| c.depth);
        stats.requests += targets.len() as u32;
        self.phase = Phase::Store {
            pending: targets.len(),
            successes: 0,
        };
        let sends = targets
            .into_iter()
            .map(|(peer, addrs)| {
                let request = KadRequest::PutValue {
                    record: self.record.clone(),
                };
                (peer, addrs, request)
            })
            .collect();
        AfterLookup::Send {
            sends,
            finish: false,
        }
    }

    fn outcome(&mut self, timed_out: bool, _stats: &mut QueryStats, _ctx: &Ctx<'_>) -> Outcome {
        let successes = match self.phase {
            Phase::Store { successes, .. } => successes,
            Phase::FindPeers(_) => 0,
        };
        let quorum = self.quorum;
        let result = if successes >= quorum {
            Ok(PutValueOk {
                key: self.record.key.clone(),
                successes,
            })
        } else if timed_out {
            Err(QueryError::Timeout)
        } else {
            Err(QueryError::QuorumFailed { successes, quorum })
        };
        QueryResult::PutValue(result).into()
    }

    fn failed(&self, error: QueryError) -> QueryResult {
        QueryResult::PutValue(Err(error))
    }
}
