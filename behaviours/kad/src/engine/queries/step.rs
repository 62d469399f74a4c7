//! What a query of any kind tells the engine after an input: the vocabulary shared by the
//! per-kind modules (a leaf: it uses none of them).

use meshwire_core::PeerId;
use multiaddr::Multiaddr;

use crate::engine::config::KadConfig;
use crate::kbucket::Key;
use crate::protocol::{KadRequest, KadResponse};
use crate::query::{ClosestPeersIter, QueryError, QueryProgress, QueryResult, QueryStats};

/// What the engine knows that a query needs to move on or to report its result.
pub(crate) struct Ctx<'a> {
    pub local: &'a PeerId,
    pub local_key: &'a Key,
    pub external_addrs: &'a [Multiaddr],
    pub config: &'a KadConfig,
    pub table_size: usize,
}

/// A request a query wants sent, to `peer` at `addrs`.
pub(crate) type Send = (PeerId, Vec<Multiaddr>, KadRequest);

/// What a response did to a query.
#[derive(Default)]
pub(crate) struct Handled {
    /// The response was a useful answer (counted as a success in the statistics).
    pub ok: bool,
    /// Progress to report.
    pub progress: Option<QueryProgress>,
    /// The query has what it needs: finish it now.
    pub finish: bool,
}

impl Handled {
    /// A response that only fed the lookup.
    pub fn lookup(ok: bool) -> Self {
        Handled {
            ok,
            ..Handled::default()
        }
    }
}

/// What a query does once its lookup has finished.
pub(crate) enum AfterLookup {
    /// Send these requests (one more round); then finish the query if `finish`, or when
    /// there is nothing to send.
    Send {
        /// The requests (all of the query).
        sends: Vec<Send>,
        /// Finish the query right after sending (the requests expect no response).
        finish: bool,
    },
    /// A bootstrap's self lookup ended: refresh the buckets from `first_bucket` outwards
    /// (`None`: nothing to refresh).
    Refresh {
        /// The first bucket to refresh.
        first_bucket: Option<usize>,
    },
    /// Finish the query with what it has.
    Finish,
    /// Nothing (the query is in a later phase already).
    Nothing,
}

/// A finished query's result, and a request to send on the way out (GET_VALUE's caching
/// store; its outcome is not awaited by the query).
pub(crate) struct Outcome {
    pub result: QueryResult,
    pub cache: Option<Send>,
}

impl From<QueryResult> for Outcome {
    fn from(result: QueryResult) -> Self {
        Outcome {
            result,
            cache: None,
        }
    }
}

/// A FIND_NODE answer for a node lookup (`None` for another type of response).
pub(crate) fn node_lookup_response(
    iter: &mut ClosestPeersIter,
    from: PeerId,
    response: KadResponse,
    local: &PeerId,
) -> Option<Handled> {
    match response {
        KadResponse::FindNode { closer_peers } => Some(Handled::lookup(iter.on_success(
            &from,
            closer_peers,
            Some(local),
        ))),
        _ => None,
    }
}

/// The peers a finished lookup found, with their addresses: the targets of a store round.
pub(crate) fn targets(iter: &ClosestPeersIter) -> Vec<(PeerId, Vec<Multiaddr>)> {
    iter.result()
        .iter()
        .map(|c| (c.peer, c.addrs.clone()))
        .collect()
}

/// The logic of one kind of query: how it looks up, what it makes of responses and failures,
/// what it does when its lookup ends, and its result.
pub(crate) trait QueryKind {
    /// The lookup's iterator, while the query is looking up.
    fn iter_mut(&mut self) -> Option<&mut ClosestPeersIter>;

    /// The request the lookup sends to each peer it contacts (`None`: not looking up).
    fn lookup_request(&self, local: &PeerId) -> Option<KadRequest>;

    /// A response from `from`; `None` if the query expects another type of response.
    fn on_response(
        &mut self,
        from: PeerId,
        response: KadResponse,
        local: &PeerId,
    ) -> Option<Handled>;

    /// A request to `peer` failed (or timed out); returns whether the query changed.
    fn on_failure(&mut self, peer: &PeerId, timed_out: bool) -> bool {
        self.iter_mut().is_some_and(|it| {
            if timed_out {
                it.on_timeout(peer)
            } else {
                it.on_failure(peer)
            }
        })
    }

    /// Whether the query's work is done without its lookup (a store round fully answered).
    fn is_done(&self) -> bool {
        false
    }

    /// The lookup ended.
    fn after_lookup(&mut self, stats: &mut QueryStats, ctx: &Ctx<'_>) -> AfterLookup;

    /// The query ends (timed out or not): its result.
    fn outcome(&mut self, timed_out: bool, stats: &mut QueryStats, ctx: &Ctx<'_>) -> Outcome;

    /// The result of the query failing with `error`.
    fn failed(&self, error: QueryError) -> QueryResult;
}
