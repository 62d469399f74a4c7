//! Provider queries: ADD_PROVIDER (a lookup of the key's closest peers, then an
//! announcement to each) and GET_PROVIDERS (a lookup collecting providers).

use meshwire_core::PeerId;

use super::step::{node_lookup_response, targets, AfterLookup, Ctx, Handled, Outcome, QueryKind};
use crate::protocol::{KadPeer, KadRequest, KadResponse, RecordKey};
use crate::query::{
    AddProviderOk, ClosestPeersIter, GetProvidersOk, QueryError, QueryProgress, QueryResult,
    QueryStats,
};

/// An announcement of the local node as a provider of `key`.
#[derive(Debug)]
pub(crate) struct AddProvider {
    pub key: RecordKey,
    pub iter: ClosestPeersIter,
}

impl QueryKind for AddProvider {
    fn iter_mut(&mut self) -> Option<&mut ClosestPeersIter> {
        Some(&mut self.iter)
    }

    fn lookup_request(&self, _local: &PeerId) -> Option<KadRequest> {
        Some(KadRequest::FindNode {
            key: self.key.to_vec(),
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

    fn after_lookup(&mut self, stats: &mut QueryStats, ctx: &Ctx<'_>) -> AfterLookup {
        let targets = targets(&self.iter);
        stats.requests += targets.len() as u32;
        let provider = KadPeer::new(*ctx.local, ctx.external_addrs.to_vec());
        let sends = targets
            .into_iter()
            .map(|(peer, addrs)| {
                let request = KadRequest::AddProvider {
                    key: self.key.clone(),
                    provider: provider.clone(),
                };
                (peer, addrs, request)
            })
            .collect();
        // ADD_PROVIDER has no response: the query is done once the requests are out.
        AfterLookup::Send {
            sends,
            finish: true,
        }
    }

    fn outcome(&mut self, timed_out: bool, stats: &mut QueryStats, _ctx: &Ctx<'_>) -> Outcome {
        stats.hops = self.iter.hops();
        stats.closest_depth = self.iter.result().first().map(|c| c.depth);
        let result = if timed_out {
            Err(QueryError::Timeout)
        } else {
            Ok(AddProviderOk {
                key: self.key.clone(),
                peers: self.iter.result().len(),
            })
        };
        QueryResult::StartProviding(result).into()
    }

    fn failed(&self, error: QueryError) -> QueryResult {
        QueryResult::StartProviding(Err(error))
    }
}

/// A lookup of the providers of `key`, stopping early at `limit`.
#[derive(Debug)]
pub(crate) struct GetProviders {
    key: RecordKey,
    limit: Option<usize>,
    iter: ClosestPeersIter,
    providers: Vec<KadPeer>,
}

impl GetProviders {
    /// A lookup starting with the providers known locally.
    pub fn new(
        key: RecordKey,
        limit: Option<usize>,
        iter: ClosestPeersIter,
        providers: Vec<KadPeer>,
    ) -> Self {
        GetProviders {
            key,
            limit,
            iter,
            providers,
        }
    }

    /// Whether the limit of providers is reached.
    pub fn satisfied(&self) -> bool {
        self.limit.is_some_and(|l| self.providers.len() >= l)
    }
}

impl QueryKind for GetProviders {
    fn iter_mut(&mut self) -> Option<&mut ClosestPeersIter> {
        Some(&mut self.iter)
    }

    fn lookup_request(&self, _local: &PeerId) -> Option<KadRequest> {
        Some(KadRequest::GetProviders {
            key: self.key.clone(),
        })
    }

    fn on_response(
        &mut self,
        from: PeerId,
        response: KadResponse,
        local: &PeerId,
    ) -> Option<Handled> {
        let KadResponse::GetProviders {
            closer_peers,
            provider_peers,
        } = response
        else {
            return None;
        };
        let mut handled = Handled::lookup(self.iter.on_success(&from, closer_peers, Some(local)));
        let mut new = Vec::new();
        for p in provider_peers {
            if !self.providers.iter().any(|q| q.id == p.id) {
                self.providers.push(p.clone());
                new.push(p);
            }
        }
        if !new.is_empty() {
            handled.progress = Some(QueryProgress::FoundProviders(new));
        }
        handled.finish = self.satisfied();
        Some(handled)
    }

    fn after_lookup(&mut self, _stats: &mut QueryStats, _ctx: &Ctx<'_>) -> AfterLookup {
        AfterLookup::Finish
    }

    fn outcome(&mut self, timed_out: bool, stats: &mut QueryStats, _ctx: &Ctx<'_>) -> Outcome {
        stats.hops = self.iter.hops();
        stats.closest_depth = self.iter.result().first().map(|c| c.depth);
        let result = if timed_out && !self.satisfied() && self.providers.is_empty() {
            Err(QueryError::Timeout)
        } else {
            Ok(GetProvidersOk {
                key: self.key.clone(),
                providers: std::mem::take(&mut self.providers),
            })
        };
        QueryResult::GetProviders(result).into()
    }

    fn failed(&self, error: QueryError) -> QueryResult {
        QueryResult::GetProviders(Err(error))
    }
}
