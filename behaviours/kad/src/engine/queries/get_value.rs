//! GET_VALUE: the record under a key, until a quorum of copies; caches the record at the
//! closest peer that answered without it.

use std::collections::HashSet;

use meshwire_core::PeerId;

use super::step::{AfterLookup, Ctx, Handled, Outcome, QueryKind};
use crate::protocol::{KadRequest, KadResponse, RecordKey};
use crate::query::{
    ClosestPeersIter, GetValueOk, PeerRecord, QueryError, QueryProgress, QueryResult, QueryStats,
};

/// A record lookup.
#[derive(Debug)]
pub(crate) struct GetValue {
    key: RecordKey,
    quorum: usize,
    iter: ClosestPeersIter,
    records: Vec<PeerRecord>,
    /// Peers that answered without the record.
    without: HashSet<PeerId>,
    /// Largest round among the peers that returned a record.
    record_hops: u32,
}

impl GetValue {
    /// A lookup of `key` until `quorum` (at least 1) records, counting `local` (the local
    /// store's copy) as one.
    pub fn new(
        key: RecordKey,
        quorum: usize,
        iter: ClosestPeersIter,
        local: Option<PeerRecord>,
    ) -> Self {
        GetValue {
            key,
            quorum: quorum.max(1),
            iter,
            records: local.into_iter().collect(),
            without: HashSet::new(),
            record_hops: 0,
        }
    }

    /// Whether the quorum is reached.
    pub fn satisfied(&self) -> bool {
        self.records.len() >= self.quorum
    }
}

impl QueryKind for GetValue {
    fn iter_mut(&mut self) -> Option<&mut ClosestPeersIter> {
        Some(&mut self.iter)
    }

    fn lookup_request(&self, _local: &PeerId) -> Option<KadRequest> {
        Some(KadRequest::GetValue {
            key: self.key.clone(),
        })
    }

    fn on_response(
        &mut self,
        from: PeerId,
        response: KadResponse,
        local: &PeerId,
    ) -> Option<Handled> {
        let KadResponse::GetValue {
            record,
            closer_peers,
        } = response
        else {
            return None;
        };
        let depth = self.iter.candidate(&from).map(|c| c.depth).unwrap_or(0);
        let mut handled = Handled::lookup(self.iter.on_success(&from, closer_peers, Some(local)));
        match record {
            Some(record) if record.key == self.key => {
                let pr = PeerRecord {
                    peer: Some(from),
                    record,
                };
                self.records.push(pr.clone());
                self.record_hops = self.record_hops.max(depth + 1);
                handled.progress = Some(QueryProgress::FoundRecord(pr));
                handled.finish = self.satisfied();
            }
            Some(_) => tracing::debug!(%from, "GET_VALUE answered with a record of another key"),
            None => {
                self.without.insert(from);
            }
        }
        Some(handled)
    }

    fn after_lookup(&mut self, _stats: &mut QueryStats, _ctx: &Ctx<'_>) -> AfterLookup {
        AfterLookup::Finish
    }

    fn outcome(&mut self, timed_out: bool, stats: &mut QueryStats, ctx: &Ctx<'_>) -> Outcome {
        let result = self.iter.result();
        stats.hops = if self.satisfied() {
            self.record_hops
        } else {
            self.iter.hops().max(self.record_hops)
        };
        stats.closest_depth = result.first().map(|c| c.depth);
        if self.records.is_empty() {
            let error = if timed_out {
                QueryError::Timeout
            } else {
                QueryError::NotFound
            };
            return QueryResult::GetValue(Err(error)).into();
        }
        // Cache at the closest peer that answered without the record.
        let mut cache = None;
        if ctx.config.caching {
            let candidate = self
                .iter
                .candidates()
                .find(|c| self.without.contains(&c.peer))
                .map(|c| (c.peer, c.addrs.clone()));
            if let (Some((peer, addrs)), Some(pr)) = (candidate, self.records.first()) {
                let mut record = pr.record.clone();
                record.ttl = record.ttl.or(Some(ctx.config.store.record_ttl));
                if record.max_message_len() <= ctx.config.max_message_size {
                    cache = Some((peer, addrs, KadRequest::PutValue { record }));
                }
            }
        }
        let cached_at = cache.as_ref().map(|(peer, _, _)| *peer);
        Outcome {
            result: QueryResult::GetValue(Ok(GetValueOk {
                key: self.key.clone(),
                records: std::mem::take(&mut self.records),
                cached_at,
            })),
            cache,
        }
    }

    fn failed(&self, error: QueryError) -> QueryResult {
        QueryResult::GetValue(Err(error))
    }
}
