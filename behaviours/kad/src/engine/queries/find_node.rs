//! FIND_NODE: the `k` peers closest to a key (also the refresh lookups of a bootstrap).

use meshwire_core::PeerId;

use super::step::{node_lookup_response, AfterLookup, Ctx, Handled, Outcome, QueryKind};
use crate::protocol::{KadPeer, KadRequest, KadResponse};
use crate::query::{ClosestPeersIter, FindNodeOk, QueryError, QueryResult, QueryStats};

/// A node lookup.
#[derive(Debug)]
pub(crate) struct FindNode {
    pub key: Vec<u8>,
    pub iter: ClosestPeersIter,
}

impl QueryKind for FindNode {
    fn iter_mut(&mut self) -> Option<&mut ClosestPeersIter> {
        Some(&mut self.iter)
    }

    fn lookup_request(&self, _local: &PeerId) -> Option<KadRequest> {
        Some(KadRequest::FindNode {
            key: self.key.clone(),
        })
    }

    fn on_response(
        &mut self,
        from: PeerId,
        response: KadResponse,
        local: &PeerId,
    ) -> Option<Handled> {
        node_lookup_response(&mut self.iter, from, response, local)
    }

    fn after_lookup(&mut self, _stats: &mut QueryStats, _ctx: &Ctx<'_>) -> AfterLookup {
        AfterLookup::Finish
    }

    fn outcome(&mut self, timed_out: bool, stats: &mut QueryStats, _ctx: &Ctx<'_>) -> Outcome {
        self.iter.finish();
        stats.hops = self.iter.hops();
        let result = self.iter.result();
        stats.closest_depth = result.first().map(|c| c.depth);
        let peers: Vec<KadPeer> = result
            .iter()
            .map(|c| KadPeer::new(c.peer, c.addrs.clone()))
            .collect();
        QueryResult::FindNode(Ok(FindNodeOk {
            key: std::mem::take(&mut self.key),
            peers,
            converged: !timed_out,
        }))
        .into()
    }

    fn failed(&self, error: QueryError) -> QueryResult {
        QueryResult::FindNode(Err(error))
    }
}
